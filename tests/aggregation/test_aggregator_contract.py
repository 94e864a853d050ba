"""Contract suite run over every registered aggregator, plus checks of the properties each declares.

Registry-driven: every class in :data:`multitask.weighting.WEIGHTINGS` that subclasses
:class:`multitask.aggregation.Aggregator` is tested here without touching this file. Every
aggregator must be constructible as ``cls(num_tasks)`` (all hyperparameters have defaults).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import multitask.aggregation  # noqa: F401  (registers the aggregators)
from multitask.aggregation import Aggregator
from multitask.engine import Engine
from multitask.registry import UnknownNameError, signature_params
from multitask.weighting import PROPERTIES, WEIGHTINGS, create_weighting

NAMES = [n for n in WEIGHTINGS.names() if issubclass(WEIGHTINGS.get(n), Aggregator)]
T = 3
P = 11


def make(name: str, num_tasks: int = T) -> Aggregator:
    cls = WEIGHTINGS.get(name)
    assert issubclass(cls, Aggregator)
    return cls(num_tasks)


def random_jacobian(num_tasks: int, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(num_tasks, P, generator=gen, dtype=torch.float64)).to(dtype)


def random_losses(num_tasks: int, seed: int, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> Tensor:
    gen = torch.Generator().manual_seed(seed + 7)
    return (scale * (0.5 + torch.rand(num_tasks, generator=gen, dtype=torch.float64))).to(dtype)


def sequence(
    num_tasks: int, n: int, seed: int, jac_scale: float = 1.0, loss_scale: float = 1.0
) -> list[tuple[Tensor, Tensor]]:
    return [
        (random_jacobian(num_tasks, seed + 100 * k, jac_scale), random_losses(num_tasks, seed + 100 * k, loss_scale))
        for k in range(n)
    ]


def drive(agg: Aggregator, steps: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Feed a sequence of (jacobian, losses); every step is also an epoch."""
    outs = []
    for jac, losses in steps:
        outs.append(agg(jac, losses).detach().clone())
        agg.on_epoch_end()
    return outs


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


def test_registry_has_the_aggregators() -> None:
    for expected in ("graddrop", "config", "moco", "db_mtl"):
        assert expected in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_class_declarations(name: str) -> None:
    cls = WEIGHTINGS.get(name)
    assert cls.name == name
    assert cls.requires_gramian is False
    assert cls.properties <= PROPERTIES
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    for p in params:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {p.name} must be keyword-only"
        assert p.annotation is not inspect.Parameter.empty, f"{name}: {p.name} has no type annotation"
        assert p.default is not inspect.Parameter.empty, f"{name}: {p.name} needs a default"
    agg = make(name)
    for key, value in agg.hyperparameters().items():
        assert value == inspect.signature(cls.__init__).parameters[key].default


@pytest.mark.parametrize("name", NAMES)
def test_docstring_cites_a_paper(name: str) -> None:
    doc = inspect.getdoc(WEIGHTINGS.get(name)) or ""
    first = doc.splitlines()[0] if doc else ""
    assert first and len(first) < 120, f"{name}: needs a one-line summary"
    assert re.search(r"\b(19|20)\d\d\b", doc), f"{name}: docstring cites no year"
    assert "https://" in doc, f"{name}: docstring has no link to the paper"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype(name: str, dtype: torch.dtype) -> None:
    agg = make(name)
    jac = random_jacobian(T, 0, dtype=dtype)
    out = agg(jac, random_losses(T, 0, dtype=dtype))
    assert out.shape == (P,)
    assert out.dtype == dtype
    assert out.device == jac.device


SCALES = [
    (name, jac_scale, loss_scale)
    for name in NAMES
    for jac_scale in (1e-10, 1e-5, 1.0, 1e5, 1e10)
    for loss_scale in (1e-10, 1.0, 1e10)
]


@pytest.mark.parametrize(("name", "jac_scale", "loss_scale"), SCALES)
def test_finite_at_all_scales(name: str, jac_scale: float, loss_scale: float) -> None:
    agg = make(name)
    for out in drive(agg, sequence(T, 4, seed=1, jac_scale=jac_scale, loss_scale=loss_scale)):
        assert torch.isfinite(out).all(), f"{name}: {out} at Jacobian scale {jac_scale}, loss scale {loss_scale}"


@pytest.mark.parametrize("name", NAMES)
def test_zero_jacobian_gives_a_finite_update(name: str) -> None:
    agg = make(name)
    for _ in range(2):
        out = agg(torch.zeros(T, P), random_losses(T, 0))
        assert torch.isfinite(out).all()
        assert out.abs().max() == 0


@pytest.mark.parametrize("name", NAMES)
def test_inputs_not_mutated(name: str) -> None:
    agg = make(name)
    for jac, losses in sequence(T, 3, seed=2):
        j0, l0 = jac.clone(), losses.clone()
        agg(jac, losses)
        agg.on_epoch_end()
        assert torch.equal(jac, j0)
        assert torch.equal(losses, l0)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    steps = sequence(T, 6, seed=4)
    a = make(name)
    drive(a, steps[:3])
    state = {k: v.clone() for k, v in a.state_dict().items()}
    b = make(name)
    b.load_state_dict(state)
    for out_a, out_b in zip(drive(a, steps[3:]), drive(b, steps[3:]), strict=True):
        assert torch.equal(out_a, out_b), f"{name}: a reloaded method diverged ({out_a} vs {out_b})"


@pytest.mark.parametrize("name", NAMES)
def test_fresh_state_dict_resets_a_used_instance(name: str) -> None:
    steps = sequence(T, 4, seed=6)
    used = make(name)
    drive(used, steps[:2])
    used.load_state_dict(make(name).state_dict())
    for x, y in zip(drive(used, steps[2:]), drive(make(name), steps[2:]), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str) -> None:
    steps = sequence(T, 4, seed=5)
    torch.manual_seed(0)
    first = drive(make(name), steps)
    torch.manual_seed(123)  # the global RNG must not matter ...
    state = torch.random.get_rng_state()
    second = drive(make(name), steps)
    assert torch.equal(state, torch.random.get_rng_state())  # ... nor be used
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_shapes_name_the_shape(name: str) -> None:
    agg = make(name)
    jac, losses = random_jacobian(T, 0), random_losses(T, 0)
    for bad in (torch.ones(T + 1, P), torch.ones(P), torch.ones(T, P, 1)):
        with pytest.raises(ValueError, match=re.escape(str(tuple(bad.shape)))):
            agg(bad, losses)
    for bad in (torch.ones(T + 1), torch.ones(T, 1), torch.ones(())):
        with pytest.raises(ValueError, match=re.escape(str(tuple(bad.shape)))):
            agg(jac, bad)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_hyperparameter_names_the_closest(name: str) -> None:
    params = [p.name for p in signature_params(WEIGHTINGS.get(name)) if p.name != "num_tasks"]
    if params:
        typo = params[0][:-1] + params[0][-1].upper() + "x"
        with pytest.raises(UnknownNameError, match=re.escape(repr(params[0]))):
            create_weighting(name, T, **{typo: 1})
    else:
        with pytest.raises(UnknownNameError, match="bogus"):
            create_weighting(name, T, bogus=1)
    assert isinstance(create_weighting(name, T), Aggregator)


@pytest.mark.parametrize("name", NAMES)
def test_bad_num_tasks(name: str) -> None:
    with pytest.raises(ValueError, match="num_tasks"):
        WEIGHTINGS.get(name)(0)


def _toy_problem(seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 6, generator=gen)
    mix = torch.randn(6, T, generator=gen)
    y = torch.tanh(x @ mix) * torch.tensor([1.0, 3.0, 0.5]) + 0.3 * torch.sin(x[:, :T])
    return x, y


@pytest.mark.parametrize("name", NAMES)
def test_trains_a_toy_problem(name: str) -> None:
    torch.manual_seed(0)
    x, y = _toy_problem()
    trunk = nn.Sequential(nn.Linear(6, 24), nn.Tanh())
    heads = nn.ModuleList(nn.Linear(24, 1) for _ in range(T))
    method = make(name)
    engine = Engine(method)
    head_params = [*heads.parameters(), *method.parameters()]
    opt = torch.optim.Adam([*trunk.parameters(), *head_params], lr=0.02)

    def task_losses() -> Tensor:
        feats = trunk(x)
        return torch.stack([((h(feats).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])

    with torch.no_grad():
        initial = float(task_losses().sum())
    for step in range(150):
        opt.zero_grad()
        engine.backward(task_losses(), list(trunk.parameters()), other_params=head_params)
        opt.step()
        if step % 10 == 9:
            method.on_epoch_end()
    with torch.no_grad():
        final = float(task_losses().sum())
    assert final < 0.5 * initial, f"{name}: summed loss {initial:.3f} -> {final:.3f}"


# --------------------------------------------------------------------------------------------
# Declared properties (those that make sense for an update vector rather than task weights)
# --------------------------------------------------------------------------------------------

SEEDS = range(6)


def check_stateless(name: str, seed: int) -> None:
    agg = make(name)
    assert len(agg.state_dict()) == 0, f"{name} is declared stateless but has state {list(agg.state_dict())}"
    steps = sequence(T, 3, seed)
    drive(agg, steps)
    jac, losses = steps[-1]
    assert torch.equal(agg(jac, losses), make(name)(jac, losses))


def check_stochastic(name: str, seed: int) -> None:
    cls = WEIGHTINGS.get(name)
    assert "seed" in {p.name for p in signature_params(cls)}, f"{name}: a stochastic method needs a `seed`"
    steps = sequence(T, 3, seed)
    a = drive(cls(T, seed=seed), steps)  # type: ignore[call-arg]
    b = drive(cls(T, seed=seed), steps)  # type: ignore[call-arg]
    c = drive(cls(T, seed=seed + 1), steps)  # type: ignore[call-arg]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x, z) for x, z in zip(a, c, strict=True))


def check_permutation_equivariant(name: str, seed: int) -> None:
    # permuting the tasks (rows of J and the losses, consistently at every step) leaves the update unchanged
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed))
    steps = [(j.double(), losses.double()) for j, losses in sequence(T, 3, seed)]
    permuted = [(j[perm], losses[perm]) for j, losses in steps]
    for out, out_p in zip(drive(make(name), steps), drive(make(name), permuted), strict=True):
        torch.testing.assert_close(out_p, out, rtol=1e-9, atol=1e-9 * float(out.abs().max()))


def check_non_conflicting(name: str, seed: int) -> None:
    steps = sequence(T, 3, seed)
    for (jac, _), out in zip(steps, drive(make(name), steps), strict=True):
        dots = jac.double() @ out.double()
        assert (dots >= -1e-5 * float(jac.double().norm(dim=1).max() * out.double().norm())).all(), dots


AGGREGATOR_CHECKS: dict[str, Callable[[str, int], None]] = {
    "stateless": check_stateless,
    "stochastic": check_stochastic,
    "permutation_equivariant": check_permutation_equivariant,
    "non_conflicting": check_non_conflicting,
}

DECLARED = [(n, p) for n in NAMES for p in sorted(WEIGHTINGS.get(n).properties)]


@pytest.mark.parametrize(("name", "prop"), DECLARED)
def test_declared_property(name: str, prop: str) -> None:
    assert prop in AGGREGATOR_CHECKS, (
        f"{name} declares {prop!r}, a claim about task weights that has no meaning (and no check) for an aggregator"
    )
    for seed in SEEDS:
        AGGREGATOR_CHECKS[prop](name, seed)
