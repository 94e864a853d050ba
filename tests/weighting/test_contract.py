"""Contract suite run over every registered weighting, plus checks of the properties each declares.

Registry-driven: a newly registered method is tested here without touching this file. Every
method must be constructible as ``cls(num_tasks)`` (all hyperparameters have defaults).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from multitask.engine import Engine
from multitask.registry import UnknownNameError, signature_params
from multitask.weighting import PROPERTIES, WEIGHTINGS, Weighting, create_weighting

NAMES = [n for n in WEIGHTINGS.names() if issubclass(WEIGHTINGS.get(n), Weighting)]  # aggregators: tests/aggregation
T = 3

HYPOTHESIS = settings(max_examples=15, deadline=None, derandomize=True)


def make(name: str, num_tasks: int = T) -> Weighting:
    return WEIGHTINGS.get(name)(num_tasks)


def random_gramian(num_tasks: int, seed: int, scale: float = 1.0, dim: int = 7) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(num_tasks, dim, generator=gen, dtype=torch.float64)
    return (scale * (jac @ jac.T)).to(torch.float32)


def random_losses(num_tasks: int, seed: int, scale: float = 1.0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * (0.5 + torch.rand(num_tasks, generator=gen))


def call(w: Weighting, losses: Tensor, gramian: Tensor | None) -> Tensor:
    out: Tensor = w(losses, gramian if w.requires_gramian else None)
    return out


def drive(w: Weighting, steps: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Feed a sequence of (losses, gramian); every step is also an epoch (so DWA adapts)."""
    outs = []
    for losses, gramian in steps:
        outs.append(call(w, losses, gramian).detach().clone())
        w.on_epoch_end()
    return outs


def sequence(
    num_tasks: int, n: int, seed: int, loss_scale: float = 1.0, gram_scale: float = 1.0
) -> list[tuple[Tensor, Tensor]]:
    return [
        (random_losses(num_tasks, seed + 100 * k, loss_scale), random_gramian(num_tasks, seed + 100 * k, gram_scale))
        for k in range(n)
    ]


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


def test_registry_is_populated() -> None:
    for expected in ("equal", "static", "uncertainty", "dwa", "gls", "rlw", "gradnorm", "famo"):
        assert expected in WEIGHTINGS


@pytest.mark.parametrize("name", NAMES)
def test_class_declarations(name: str) -> None:
    cls = WEIGHTINGS.get(name)
    assert cls.name == name
    assert isinstance(cls.requires_gramian, bool)
    assert cls.properties <= PROPERTIES
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    for p in params:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY
        assert p.annotation is not inspect.Parameter.empty, f"{name}: {p.name} has no type annotation"
        assert p.default is not inspect.Parameter.empty, f"{name}: {p.name} needs a default"
    w = make(name)
    for key, value in w.hyperparameters().items():
        assert value == inspect.signature(cls.__init__).parameters[key].default


@pytest.mark.parametrize("name", NAMES)
def test_docstring_cites_a_paper(name: str) -> None:
    doc = inspect.getdoc(WEIGHTINGS.get(name)) or ""
    first = doc.splitlines()[0] if doc else ""
    assert first and len(first) < 120, f"{name}: needs a one-line summary"
    assert re.search(r"\b(19|20)\d\d\b", doc), f"{name}: docstring cites no year"
    assert "https://" in doc, f"{name}: docstring has no link to the paper"


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_device(name: str) -> None:
    for dtype in (torch.float32, torch.float64):
        w = make(name)
        losses = random_losses(T, 0).to(dtype)
        out = call(w, losses, random_gramian(T, 0).to(dtype))
        assert out.shape == (T,)
        assert out.dtype == dtype
        assert out.device == losses.device


SCALES = [
    (name, loss_scale, gram_scale)
    for name in NAMES
    for loss_scale in (1e-10, 1e-5, 1.0, 1e5, 1e10)
    for gram_scale in ((1e-10, 1.0, 1e10) if WEIGHTINGS.get(name).requires_gramian else (1.0,))
]


@pytest.mark.parametrize(("name", "loss_scale", "gram_scale"), SCALES)
def test_finite_at_all_scales(name: str, loss_scale: float, gram_scale: float) -> None:
    w = make(name)
    for out in drive(w, sequence(T, 4, seed=1, loss_scale=loss_scale, gram_scale=gram_scale)):
        assert torch.isfinite(out).all(), f"{name}: {out} at loss scale {loss_scale}, Gramian scale {gram_scale}"


@pytest.mark.parametrize("name", NAMES)
def test_inputs_not_mutated(name: str) -> None:
    w = make(name)
    for losses, gramian in sequence(T, 3, seed=2):
        l0, g0 = losses.clone(), gramian.clone()
        w(losses, gramian)
        w.on_epoch_end()
        assert torch.equal(losses, l0)
        assert torch.equal(gramian, g0)


@pytest.mark.parametrize("name", NAMES)
def test_gramian_requirement(name: str) -> None:
    w = make(name)
    losses = random_losses(T, 3)
    if w.requires_gramian:
        with pytest.raises(ValueError, match="Gramian"):
            w(losses)
        with pytest.raises(ValueError, match="shape"):
            w(losses, torch.eye(T + 1))
    else:
        assert w(losses).shape == (T,)
        assert w(losses, None).shape == (T,)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_loss_shape(name: str) -> None:
    w = make(name)
    g = random_gramian(T, 0)
    for bad in (torch.ones(T + 1), torch.ones(T, 1), torch.ones(())):
        with pytest.raises(ValueError, match=re.escape(str(tuple(bad.shape)))):
            w(bad, g)


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
def test_deterministic(name: str) -> None:
    steps = sequence(T, 4, seed=5)
    torch.manual_seed(0)
    first = drive(make(name), steps)
    torch.manual_seed(123)  # the global RNG must not matter
    second = drive(make(name), steps)
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x, y)


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
    weighting = make(name)
    engine = Engine(weighting)
    params = [*trunk.parameters(), *heads.parameters(), *weighting.parameters()]
    opt = torch.optim.Adam(params, lr=0.02)

    def task_losses() -> Tensor:
        feats = trunk(x)
        return torch.stack([((h(feats).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(heads)])

    with torch.no_grad():
        initial = float(task_losses().sum())
    for step in range(150):
        opt.zero_grad()
        engine.backward(task_losses(), list(trunk.parameters()))
        opt.step()
        if step % 10 == 9:
            weighting.on_epoch_end()
    with torch.no_grad():
        final = float(task_losses().sum())
    assert final < 0.5 * initial, f"{name}: summed loss {initial:.3f} -> {final:.3f}"


# --------------------------------------------------------------------------------------------
# Declared properties
# --------------------------------------------------------------------------------------------

loss_rows = st.lists(st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False), min_size=T, max_size=T)
loss_sequences = st.lists(loss_rows, min_size=1, max_size=4)


def _steps(rows: list[list[float]], seed: int) -> list[tuple[Tensor, Tensor]]:
    return [(torch.tensor(r, dtype=torch.float32), random_gramian(T, seed + k)) for k, r in enumerate(rows)]


def check_nonnegative(name: str, rows: list[list[float]], seed: int) -> None:
    for out in drive(make(name), _steps(rows, seed)):
        assert (out >= 0).all(), out


def check_sums_to_num_tasks(name: str, rows: list[list[float]], seed: int) -> None:
    for out in drive(make(name), _steps(rows, seed)):
        torch.testing.assert_close(out.sum(), torch.tensor(float(T)), rtol=1e-5, atol=1e-5)


def check_on_simplex(name: str, rows: list[list[float]], seed: int) -> None:
    for out in drive(make(name), _steps(rows, seed)):
        assert (out >= 0).all(), out
        torch.testing.assert_close(out.sum(), torch.tensor(1.0), rtol=1e-5, atol=1e-5)


def check_permutation_equivariant(name: str, rows: list[list[float]], seed: int) -> None:
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(seed))
    steps = _steps(rows, seed)
    permuted = [(losses[perm], g[perm][:, perm]) for losses, g in steps]
    for out, out_p in zip(drive(make(name), steps), drive(make(name), permuted), strict=True):
        torch.testing.assert_close(out_p, out[perm], rtol=1e-4, atol=1e-6)


def check_loss_scale_invariant(name: str, rows: list[list[float]], seed: int) -> None:
    # Powers of two keep loss ratios exact in floating point.
    scale = 2.0 ** (-12 + seed % 25)
    steps = _steps(rows, seed)
    scaled = [(scale * losses, g) for losses, g in steps]
    for out, out_s in zip(drive(make(name), steps), drive(make(name), scaled), strict=True):
        torch.testing.assert_close(out_s, out, rtol=1e-4, atol=1e-6)


def check_stateless(name: str, rows: list[list[float]], seed: int) -> None:
    w = make(name)
    assert len(w.state_dict()) == 0, f"{name} is declared stateless but has state {list(w.state_dict())}"
    steps = _steps(rows, seed)
    drive(w, steps)
    last_l, last_g = steps[-1]
    torch.testing.assert_close(call(w, last_l, last_g), call(make(name), last_l, last_g), rtol=0, atol=0)


def check_stochastic(name: str, rows: list[list[float]], seed: int) -> None:
    cls = WEIGHTINGS.get(name)
    assert "seed" in {p.name for p in signature_params(cls)}, f"{name}: a stochastic method needs a `seed`"
    steps = _steps(rows, seed)
    a = drive(cls(T, seed=seed), steps)  # type: ignore[call-arg]
    b = drive(cls(T, seed=seed), steps)  # type: ignore[call-arg]
    c = drive(cls(T, seed=seed + 1), steps)  # type: ignore[call-arg]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x, z) for x, z in zip(a, c, strict=True))


def check_non_conflicting(name: str, rows: list[list[float]], seed: int) -> None:
    # the update Jᵀw must not conflict with any task gradient: (G w)_t >= 0 for every t
    for (_, g), out in zip(_steps(rows, seed), drive(make(name), _steps(rows, seed)), strict=True):
        gw = g.double() @ out.double()
        assert (gw >= -1e-5 * g.diagonal().double().max()).all(), gw


def check_gramian_scale_invariant(name: str, rows: list[list[float]], seed: int) -> None:
    scale = 2.0 ** (-12 + seed % 25)
    steps = _steps(rows, seed)
    scaled = [(losses, scale * g) for losses, g in steps]
    for out, out_s in zip(drive(make(name), steps), drive(make(name), scaled), strict=True):
        torch.testing.assert_close(out_s, out, rtol=1e-4, atol=1e-6)


CHECKS: dict[str, Callable[[str, list[list[float]], int], None]] = {
    "non_conflicting": check_non_conflicting,
    "gramian_scale_invariant": check_gramian_scale_invariant,
    "nonnegative": check_nonnegative,
    "sums_to_num_tasks": check_sums_to_num_tasks,
    "on_simplex": check_on_simplex,
    "permutation_equivariant": check_permutation_equivariant,
    "loss_scale_invariant": check_loss_scale_invariant,
    "stateless": check_stateless,
    "stochastic": check_stochastic,
}

DECLARED = [(n, p) for n in NAMES for p in sorted(WEIGHTINGS.get(n).properties)]


def test_every_property_has_a_check() -> None:
    assert set(CHECKS) == set(PROPERTIES)


@pytest.mark.parametrize(("name", "prop"), DECLARED)
@HYPOTHESIS
@given(rows=loss_sequences, seed=st.integers(0, 10_000))
def test_declared_property(name: str, prop: str, rows: list[list[float]], seed: int) -> None:
    CHECKS[prop](name, rows, seed)
