"""The engine's grad modes against direct per-task autograd references."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from multitask.aggregation import Aggregator
from multitask.architectures import HardSharing
from multitask.engine import Engine, jacobian, parse_grad_mode
from multitask.weighting import Weighting


class InverseNorm(Weighting):
    """Test method: w_t = 1 / ||g_t|| (a stateless Gramian weighting). Test-only, 2024, https://example.org"""

    name: ClassVar[str] = "inverse_norm_test"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset({"stateless"})

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.calls: list[int] = []

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        assert gramian is not None
        self.calls.append(gramian.shape[0])
        return 1.0 / gramian.diagonal().clamp_min(1e-12).sqrt().to(losses.dtype)


class RowMean(Aggregator):
    """Test aggregator: the mean of the Jacobian rows. Test-only, 2024, https://example.org"""

    name: ClassVar[str] = "row_mean_test"

    def forward(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        return jacobian.mean(dim=0)


def make_model(t: int = 3, seed: int = 0) -> HardSharing:
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh())
    heads = {f"t{i}": nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 1)) for i in range(t)}
    return HardSharing(trunk, heads)


def losses_of(model: HardSharing, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    losses, z = list_losses_of(model, x, y)
    return torch.stack(losses), z


def list_losses_of(model: HardSharing, x: Tensor, y: Tensor) -> tuple[list[Tensor], Tensor]:
    """Per-task losses as a list: the engine's fast path walks each task's sub-graph alone."""
    out, z = model.forward_features(x)
    assert z is not None
    return [((out[n][:, 0] - y[:, i]) ** 2).mean() for i, n in enumerate(model.task_names)], z


def per_task_grads(model: HardSharing, x: Tensor, y: Tensor) -> list[list[Tensor]]:
    grads = []
    for i in range(len(model.task_names)):
        model.zero_grad()
        losses_of(model, x, y)[0][i].backward()
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])
    model.zero_grad()
    return grads


def data(t: int = 3) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 5, generator=g), torch.randn(16, t, generator=g)


def shared_and_other(model: HardSharing) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    shared = list(model.shared_parameters())
    ids = {id(p) for p in shared}
    return shared, [p for p in model.parameters() if id(p) not in ids]


@pytest.mark.parametrize("as_list", [True, False])
@pytest.mark.parametrize("use_features", [True, False])
@pytest.mark.parametrize("use_other", [True, False])
@pytest.mark.parametrize("chunk", [None, 2])
def test_exact_mode_equals_weighted_sum_of_task_gradients(
    as_list: bool, use_features: bool, use_other: bool, chunk: int | None
) -> None:
    model = make_model()
    x, y = data()
    ref = per_task_grads(model, x, y)
    shared, other = shared_and_other(model)
    n_shared = len(shared)
    g = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            g[i, j] = sum(float((a * b).sum()) for a, b in zip(ref[i][:n_shared], ref[j][:n_shared], strict=True))
    w = 1.0 / g.diagonal().sqrt()
    losses, z = list_losses_of(model, x, y) if as_list else losses_of(model, x, y)
    info = Engine(InverseNorm(3), chunk_size=chunk).backward(
        losses, shared, other_params=other if use_other else None, features=z if use_features else None
    )
    assert info.gramian is not None
    torch.testing.assert_close(info.gramian.double(), g, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(info.weights.double(), w, rtol=1e-5, atol=1e-7)
    for k, p in enumerate(model.parameters()):
        expected = sum(float(w[i]) * ref[i][k] for i in range(3))
        assert p.grad is not None
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)
    cos = info.cosines
    assert cos is not None
    torch.testing.assert_close(cos.diagonal(), torch.ones(3, dtype=cos.dtype), rtol=1e-5, atol=1e-5)


def test_jacobian_via_features_equals_direct_and_chunks_agree() -> None:
    model = make_model(4)
    x, y = data(4)
    losses, z = losses_of(model, x, y)
    shared = list(model.shared_parameters())
    direct = jacobian(losses, shared)
    for two_step in (jacobian(losses, shared, features=z), jacobian(losses, shared, features=z, chunk_size=3)):
        for a, b in zip(direct, two_step, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_features_mode_uses_the_representation_gramian() -> None:
    model = make_model()
    x, y = data()
    losses, z = losses_of(model, x, y)
    dz = torch.stack([torch.autograd.grad(losses[i], z, retain_graph=True)[0].flatten() for i in range(3)])
    shared, other = shared_and_other(model)
    ref = per_task_grads(model, x, y)
    for as_list in (False, True):
        model.zero_grad()
        losses, z = list_losses_of(model, x, y) if as_list else losses_of(model, x, y)
        info = Engine(InverseNorm(3), grad_mode="features").backward(losses, shared, other_params=other, features=z)
        assert info.gramian is not None
        torch.testing.assert_close(info.gramian, dz @ dz.T, rtol=1e-5, atol=1e-7)
        w = info.weights
        for k, p in enumerate(model.parameters()):  # the update is still Σ w_t g_t, exactly
            assert p.grad is not None
            torch.testing.assert_close(p.grad, sum(float(w[i]) * ref[i][k] for i in range(3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs the model's shared features"):
        Engine(InverseNorm(3), grad_mode="features").backward(losses_of(model, x, y)[0], shared)


def test_amortised_mode_recomputes_every_k_steps() -> None:
    model = make_model()
    x, y = data()
    method = InverseNorm(3)
    engine = Engine(method, grad_mode="every:3")
    shared, other = shared_and_other(model)
    computed = []
    weights = []
    for _ in range(7):
        losses, z = losses_of(model, x, y)
        info = engine.backward(losses, shared, other_params=other, features=z)
        computed.append(info.gramian is not None)
        weights.append(info.weights)
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.05 * p.grad  # type: ignore[operator]
        model.zero_grad()
    assert computed == [True, False, False, True, False, False, True]
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])
    assert not torch.equal(weights[2], weights[3])
    state = engine.state_dict()
    again = Engine(InverseNorm(3), grad_mode="every:3")
    again.load_state_dict(state)
    assert again.steps_since_refresh == engine.steps_since_refresh and again.has_cache


def test_aggregator_writes_the_update_and_heads_get_their_own_loss() -> None:
    model = make_model()
    x, y = data()
    ref = per_task_grads(model, x, y)
    shared, other = shared_and_other(model)
    for mode, as_list in (("exact", False), ("exact", True), ("features", False), ("features", True)):
        model.zero_grad()
        losses, z = list_losses_of(model, x, y) if as_list else losses_of(model, x, y)
        Engine(RowMean(3), grad_mode=mode).backward(losses, shared, other_params=other, features=z)
        params = list(model.parameters())
        for k, p in enumerate(params):
            assert p.grad is not None
            if k < len(shared) and mode == "exact":
                torch.testing.assert_close(p.grad, sum(ref[i][k] for i in range(3)) / 3, rtol=1e-5, atol=1e-6)
            elif k >= len(shared):  # each head: its own task's gradient
                torch.testing.assert_close(p.grad, sum(ref[i][k] for i in range(3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="other_params"):
        Engine(RowMean(3)).backward(losses_of(model, x, y)[0], shared)
    with pytest.raises(ValueError, match="no weights to reuse"):
        Engine(RowMean(3), grad_mode="every:2")


def test_stateless_gradient_method_sees_only_present_tasks() -> None:
    model = make_model()
    x, y = data()
    shared, other = shared_and_other(model)
    losses, z = losses_of(model, x, y)
    losses = torch.stack([losses[0], losses[1] * 0.0, losses[2]])  # task 1 absent: exact zero loss
    method = InverseNorm(3)
    info = Engine(method).backward(
        losses, shared, other_params=other, features=z, present=torch.tensor([True, False, True])
    )
    assert float(info.weights[1]) == 0.0
    assert torch.isfinite(info.weights).all()
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("exact", ("exact", 1)),
        ("features", ("features", 1)),
        ("every:10", ("exact", 10)),
        ("features+every:4", ("features", 4)),
    ],
)
def test_parse_grad_mode(spec: str, parsed: tuple[str, int]) -> None:
    assert parse_grad_mode(spec) == parsed


@pytest.mark.parametrize("bad", ["exakt", "every:", "every:0", "features+every:x", ""])
def test_parse_grad_mode_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="grad_mode="):
        parse_grad_mode(bad)


def test_features_mode_refuses_aggregators_with_jacobian_state() -> None:
    from multitask.weighting import create_weighting

    with pytest.raises(ValueError, match="use grad_mode='exact'"):
        Engine(create_weighting("moco", 3), grad_mode="features")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["exact", "features"])
@pytest.mark.parametrize("method_name", ["inverse_norm", "row_mean"])
def test_per_task_feature_views_give_the_same_gradients(mode: str, method_name: str) -> None:
    """HardSharing's per-task aliases of Z: one backward through the heads, same result."""
    model = make_model()
    x, y = data()
    shared, other = shared_and_other(model)
    grads = []
    for use_views in (False, True):
        model.zero_grad()
        out, z, views = model.forward_task_features(x)
        assert z is not None and views is not None
        losses = [((out[n][:, 0] - y[:, i]) ** 2).mean() for i, n in enumerate(model.task_names)]
        method = InverseNorm(3) if method_name == "inverse_norm" else RowMean(3)
        Engine(method, grad_mode=mode).backward(
            losses,
            shared,
            other_params=other,
            features=z,
            task_features=[views[n] for n in model.task_names] if use_views else None,
            present=torch.tensor([True, False, True]),
        )
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
