"""Pinned reference values for the loss-based weightings, each derived by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from multitask.engine import Engine
from multitask.weighting import (
    FAMO,
    DynamicWeightAverage,
    EqualWeighting,
    GeometricLossStrategy,
    GradNorm,
    RandomLossWeighting,
    StaticWeighting,
    UncertaintyWeighting,
    create_weighting,
)
from multitask.weighting.base import stream_seed


def t(*values: float) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


def close(actual: Tensor, expected: Tensor, tol: float = 1e-6) -> None:
    torch.testing.assert_close(actual.detach().to(torch.float64), expected, rtol=tol, atol=tol)


# --- equal / static ------------------------------------------------------------------------


def test_equal_is_all_ones() -> None:
    close(EqualWeighting(3)(t(0.1, 5.0, 300.0)), t(1, 1, 1))


def test_static_returns_the_given_weights() -> None:
    close(StaticWeighting(2, weights=(0.2, 0.8))(t(1.0, 2.0)), t(0.2, 0.8))
    close(StaticWeighting(2)(t(1.0, 2.0)), t(1, 1))


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [((1.0,), "1 entries"), ((1.0, -1.0), ">= 0"), ((1.0, math.nan), "finite"), ((0.0, 0.0), "all zero")],
)
def test_static_validation(weights: tuple[float, ...], fragment: str) -> None:
    with pytest.raises(ValueError, match="weights=") as err:
        StaticWeighting(2, weights=weights)
    assert fragment in str(err.value)


# --- uncertainty ---------------------------------------------------------------------------


def test_uncertainty_weights_and_regularizer() -> None:
    # s = log 4 for both tasks: w = 0.5 * exp(-log 4) = 0.125; regularizer = 0.5 * 2 * log 4 = log 4.
    uw = UncertaintyWeighting(2, init=math.log(4.0))
    close(uw(t(1.0, 3.0)), t(0.125, 0.125))
    close(uw.regularizer(), torch.tensor(math.log(4.0), dtype=torch.float64))


def test_uncertainty_gradient_through_the_engine() -> None:
    # Objective Σ 0.5 e^{-s_t} L_t + 0.5 s_t; d/ds_t = 0.5 - 0.5 e^{-s_t} L_t. At s = 0, L = [1, 3]:
    # d/ds = [0.5 - 0.5, 0.5 - 1.5] = [0, -1]; d/dL_t = w_t = 0.5.
    uw = UncertaintyWeighting(2)
    losses = torch.tensor([1.0, 3.0], requires_grad=True)
    Engine(uw).backward(losses, [losses])
    assert uw.log_vars.grad is not None and losses.grad is not None
    close(uw.log_vars.grad, t(0.0, -1.0))
    close(losses.grad, t(0.5, 0.5))


def test_uncertainty_optimum_is_exp_s_equals_loss() -> None:
    # With fixed losses, gradient descent on s converges to s_t = log L_t (weight 1 / (2 L_t)).
    uw = UncertaintyWeighting(2)
    opt = torch.optim.SGD(uw.parameters(), lr=0.5)
    fixed = t(2.0, 0.5).float()
    for _ in range(300):
        opt.zero_grad()
        ((uw(fixed) * fixed).sum() + uw.regularizer()).backward()
        opt.step()
    close(uw.log_vars, t(math.log(2.0), math.log(0.5)), tol=1e-4)


# --- DWA -----------------------------------------------------------------------------------


def test_dwa_after_two_epochs() -> None:
    # T = 2, temperature 2. Epoch 1 steps [1, 2], [3, 2] -> means [2, 2]; epoch 2 steps [1, 1],
    # [1, 3] -> means [1, 2]. Ones throughout both epochs. In epoch 3: r = [1/2, 2/2] = [0.5, 1],
    # w = 2 * softmax([0.25, 0.5]) = [2 / (1 + e^0.25), 2 / (1 + e^-0.25)] = [0.875647, 1.124353].
    dwa = DynamicWeightAverage(2, temperature=2.0)
    for epoch in ([(1.0, 2.0), (3.0, 2.0)], [(1.0, 1.0), (1.0, 3.0)]):
        for losses in epoch:
            close(dwa(t(*losses)), t(1, 1))
        dwa.on_epoch_end()
    expected = t(2 / (1 + math.exp(0.25)), 2 / (1 + math.exp(-0.25)))
    close(expected, t(0.8756469982, 1.1243530018), tol=1e-9)
    close(dwa(t(5.0, 5.0)), expected)
    close(dwa(t(0.1, 9.0)), expected)  # constant within the epoch


def test_dwa_skips_empty_epochs() -> None:
    dwa = DynamicWeightAverage(2)
    dwa.on_epoch_end()
    assert int(dwa.epochs_done) == 0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_dwa_validation(bad: float) -> None:
    with pytest.raises(ValueError, match=f"temperature={bad!r}"):
        DynamicWeightAverage(2, temperature=bad)


# --- GLS -----------------------------------------------------------------------------------


def test_gls_weights() -> None:
    # L = [1, 4]: GM = sqrt(4) = 2, w = GM / (T L) = [2 / 2, 2 / 8] = [1, 0.25].
    close(GeometricLossStrategy(2)(t(1.0, 4.0)), t(1.0, 0.25))
    # L = [1, 8, 27]: GM = 6, w = 6 / (3 L) = [2, 1/4, 2/27].
    close(GeometricLossStrategy(3)(t(1.0, 8.0, 27.0)), t(2.0, 0.25, 2 / 27))


def test_gls_matches_the_gradient_of_the_geometric_mean() -> None:
    losses = torch.tensor([0.3, 2.0, 7.5], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(losses.prod().pow(1 / 3), losses)
    close(GeometricLossStrategy(3)(losses.detach()), grad)


def test_gls_floors_nonpositive_losses() -> None:
    out = GeometricLossStrategy(2)(torch.tensor([0.0, 1.0]))
    assert torch.isfinite(out).all() and (out > 0).all()


# --- RLW -----------------------------------------------------------------------------------


def test_rlw_draw_recipe_is_pinned() -> None:
    # Draw k of stream `seed` is T * softmax(randn(T)) from a CPU generator seeded with
    # stream_seed(seed, k): pinning this keeps old runs reproducible.
    rlw = RandomLossWeighting(3, seed=7)
    for k in range(3):
        gen = torch.Generator().manual_seed(stream_seed(7, k))
        expected = 3 * torch.softmax(torch.randn(3, generator=gen, dtype=torch.float64), dim=0)
        close(rlw(t(1.0, 1.0, 1.0)), expected)


def test_rlw_seeds_and_resume() -> None:
    a, b, c = RandomLossWeighting(3, seed=1), RandomLossWeighting(3, seed=1), RandomLossWeighting(3, seed=2)
    losses = t(1.0, 2.0, 3.0)
    seq_a = [a(losses) for _ in range(5)]
    seq_b = [b(losses) for _ in range(5)]
    seq_c = [c(losses) for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(seq_a, seq_b, strict=True))
    assert not any(torch.equal(x, z) for x, z in zip(seq_a, seq_c, strict=True))
    assert len({tuple(x.tolist()) for x in seq_a}) == 5  # a fresh draw each step
    resumed = RandomLossWeighting(3, seed=1)
    resumed.load_state_dict({"step": torch.tensor(3)})
    assert torch.equal(resumed(losses), seq_a[3])


@pytest.mark.parametrize("distribution", ["normal", "uniform", "dirichlet"])
def test_rlw_distributions_sum_to_t(distribution: str) -> None:
    rlw = create_weighting("rlw", 4, distribution=distribution)
    for _ in range(20):
        w = rlw(torch.ones(4))
        assert (w > 0).all()
        close(w.sum(), torch.tensor(4.0, dtype=torch.float64))


def test_rlw_validation() -> None:
    with pytest.raises(ValueError, match="distribution='gauss'"):
        RandomLossWeighting(2, distribution="gauss")
    with pytest.raises(ValueError, match="seed=-1"):
        RandomLossWeighting(2, seed=-1)


# --- GradNorm ------------------------------------------------------------------------------


def test_gradnorm_one_update_by_hand() -> None:
    # T = 2, alpha = 1.5, lr = 0.1. Call 1: L = L(0) = [2, 4], G = diag(4, 1), w = [1, 1] (returned).
    # norms n = w * sqrt(diag G) = [2, 1]; r = [1, 1]; target = mean(n) * r^1.5 = [1.5, 1.5];
    # dL_grad/dw = sign(n - target) * sqrt(G_tt) = [+2, -1]; normalised by mean sqrt(G_tt) = 1.5:
    # [4/3, -2/3]; w' = [1 - 0.1*4/3, 1 + 0.1*2/3] = [13/15, 16/15], sum 29/15, renormalised to
    # sum 2: [26/29, 32/29], returned by call 2.
    gn = GradNorm(2, alpha=1.5, lr=0.1)
    g = torch.diag(t(4.0, 1.0))
    close(gn(t(2.0, 4.0), g), t(1.0, 1.0))
    close(gn(t(1.0, 4.0), g), t(26 / 29, 32 / 29))
    # Call 2 (L = [1, 4]): L/L(0) = [0.5, 1], r = [2/3, 4/3]; n = [52/29, 32/29], mean(n) = 42/29;
    # target = 42/29 * r^1.5 = [0.788, 2.230]; sign(n - target) = [+, -]: the same step again,
    # w'' = [26/29 - 2/15, 32/29 + 1/15] renormalised = [664/841, 1018/841], returned by call 3.
    close(gn(t(1.0, 4.0), g), t(664 / 841, 1018 / 841))


def test_gradnorm_upweights_the_slow_task() -> None:
    # L(0) = [1, 1], G = I: call 1 has n = target = [1, 1], no change. Call 2: L = [1, 0.25],
    # L/L(0) = [1, 0.25], r = [1.6, 0.4], target = 1 * r^1.5 = [2.024, 0.253] vs n = [1, 1]:
    # sign = [-, +], step [-1, +1], w = [1.1, 0.9] (sum already 2), returned by call 3.
    gn = GradNorm(2, alpha=1.5, lr=0.1)
    g = torch.eye(2, dtype=torch.float64)
    close(gn(t(1.0, 1.0), g), t(1.0, 1.0))
    close(gn(t(1.0, 0.25), g), t(1.0, 1.0))
    close(gn(t(1.0, 0.25), g), t(1.1, 0.9))


def test_gradnorm_is_gramian_scale_free() -> None:
    a, b = GradNorm(3), GradNorm(3)
    g = torch.tensor([[4.0, 1.0, 0.0], [1.0, 1.0, 0.5], [0.0, 0.5, 9.0]])
    for losses in (t(1.0, 2.0, 3.0), t(0.9, 1.0, 2.9), t(0.5, 0.9, 2.0)):
        close(a(losses, g), b(losses, 1e-8 * g))


# --- FAMO ----------------------------------------------------------------------------------


def test_famo_updates_by_hand() -> None:
    # T = 2, lr = 0.1, weight_decay = 0. Call 1: L = [1, 1], ξ = 0, z = [.5, .5], w = 2 * (z/L) /
    # Σ(z/L) = [1, 1]. Call 2: L = [0.5, 1]: δ = log(L_prev / L) = [ln 2, 0]; the gradient of
    # z·δ in ξ is z ⊙ (δ - z·δ) = [ln2/4, -ln2/4]. First Adam step: m̂ = g, v̂ = g², so
    # ξ = -0.1 * g / |g| = [-0.1, 0.1]. w ∝ z / L ∝ [e^-0.1 / 0.5, e^0.1 / 1], i.e.
    # w_0 = 2 / (1 + e^0.2 / 2) = 1.241695, w_1 = 2 - w_0.
    famo = FAMO(2, lr=0.1, weight_decay=0.0)
    close(famo(t(1.0, 1.0)), t(1.0, 1.0))
    w0 = 2 / (1 + math.exp(0.2) / 2)
    close(t(w0), t(1.2416950938), tol=1e-9)
    close(famo(t(0.5, 1.0)), t(w0, 2 - w0))
    close(famo.logits, t(-0.1, 0.1))
    # Call 3: L = [0.5, 1] again, δ = 0, gradient 0, but Adam's momentum moves on:
    # m = 0.9 * 0.1 g = 0.09 g, m̂ = 0.09 g / (1 - 0.81) = 0.473684 g; v = 0.999 * 0.001 g²,
    # v̂ = v / (1 - 0.999²) = 0.499750 g²; step = 0.1 * 0.473684 / sqrt(0.499750) = 0.0670058.
    # ξ = ±(0.1 + 0.0670058); w_0 = 2 / (1 + e^{2 * 0.1670058} / 2) = 1.177662.
    close(famo(t(0.5, 1.0)), t(1.1776623082, 2 - 1.1776623082))


def test_famo_weight_decay_pulls_logits_to_zero() -> None:
    # After a move, constant losses (δ = 0) leave only the decay term γξ in the gradient.
    famo = FAMO(2, lr=0.05, weight_decay=1.0)
    famo(t(1.0, 1.0))
    famo(t(0.5, 1.0))
    moved = famo.logits.abs().max().item()
    for _ in range(200):
        famo(t(0.5, 1.0))
    assert famo.logits.abs().max().item() < 0.1 * moved


@pytest.mark.parametrize(("param", "bad"), [("lr", 0.0), ("weight_decay", -1.0), ("min_loss", math.nan)])
def test_famo_validation(param: str, bad: float) -> None:
    with pytest.raises(ValueError, match=f"{param}={bad!r}"):
        FAMO(2, **{param: bad})
