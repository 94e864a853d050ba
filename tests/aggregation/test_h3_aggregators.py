"""GradDrop, ConFIG, MoCo and DB-MTL: torchjd comparisons, hand-derived reference values, edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from multitask.aggregation import DBMTL, ConFIG, GradDrop, MoCo
from multitask.aggregation.graddrop import graddrop_combine
from multitask.weighting import create_weighting
from multitask.weighting.base import stream_seed

D = torch.float64


def t(*rows: tuple[float, ...] | float) -> Tensor:
    return torch.tensor(rows, dtype=D)


def close(actual: Tensor, expected: Tensor, tol: float = 1e-12) -> None:
    torch.testing.assert_close(actual.to(D), expected.to(D), rtol=tol, atol=tol * float(expected.abs().max() + 1e-300))


def cosine(a: Tensor, b: Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def jacobians(seed: int = 0, p: int = 20) -> dict[str, Tensor]:
    """The comparison cases: random, rank-deficient, opposed and badly scaled Jacobians (float64)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randn(5, p, generator=gen, dtype=D)
    return {
        "random_2": r[:2].clone(),
        "random_3": r[:3].clone(),
        "random_5": r.clone(),
        "rank_deficient": torch.stack([r[0], r[1], r[0] + 2 * r[1], r[1] - r[0]]),
        "opposed": torch.stack([r[0], -r[0], r[2]]),
        "badly_scaled": r[:4] * t(1e-4, 1e-1, 1e2, 1e4)[:, None],
    }


CASES = sorted(jacobians())


# ============================================================================================
# GradDrop
# ============================================================================================


def _draws(seed: int, call: int, p: int, dtype: torch.dtype = D) -> Tensor:
    """The uniform draws GradDrop(seed=seed) makes at call number ``call`` (CPU)."""
    gen = torch.Generator().manual_seed(stream_seed(seed, call))
    return torch.rand(p, generator=gen, dtype=dtype)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("leak", [0.0, 0.3, "per_task"])
def test_graddrop_equals_torchjd_fed_the_same_draws(monkeypatch: pytest.MonkeyPatch, case: str, leak: object) -> None:
    # torchjd's GradDrop draws U with the global torch.rand; we make that call return the draws our
    # GradDrop(seed=7) makes at the same call number, so both are deterministic and must agree.
    tj = pytest.importorskip("torchjd.aggregation")
    jac = jacobians()[case]
    n = jac.shape[0]
    leak_values = [0.1 * (i + 1) for i in range(n)] if leak == "per_task" else [float(leak)] * n  # type: ignore[arg-type]
    ours = GradDrop(n, leak=tuple(leak_values) if leak == "per_task" else leak, seed=7)  # type: ignore[arg-type]
    reference = tj.GradDrop(leak=torch.tensor(leak_values, dtype=D))
    for call in range(3):
        u = _draws(7, call, jac.shape[1])
        monkeypatch.setattr(torch, "rand", lambda *args, _u=u, **kwargs: _u.clone())
        expected = reference(jac)
        monkeypatch.undo()
        close(ours(jac, torch.ones(n, dtype=D)), expected)


def test_graddrop_reference_values() -> None:
    # J = [[1, -1, 2], [3, 1, 0]]. Column 0: both positive, purity 1 > U: keep all -> 1 + 3 = 4.
    # Column 1: -1 and 1, purity ½(1 + 0/2) = ½: U = 0.3 < ½ keeps the positive entry (+1),
    # U = 0.7 > ½ keeps the negative one (-1). Column 2: 2 and 0, purity ½(1 + 2/2) = 1 -> 2.
    jac = t((1.0, -1.0, 2.0), (3.0, 1.0, 0.0))
    no_leak = torch.zeros(2, dtype=D)
    close(graddrop_combine(jac, t(0.9, 0.3, 0.99), no_leak), t(4.0, 1.0, 2.0))
    close(graddrop_combine(jac, t(0.1, 0.7, 0.5), no_leak), t(4.0, -1.0, 2.0))
    # leak = (0.5, 0): with U = 0.3 in column 1 task 0's -1 is dropped but leaks half: -0.5 + 1 = 0.5;
    # with U = 0.7 task 1's +1 is dropped without leak: -1 + 0 = -1.
    leak = t(0.5, 0.0)
    close(graddrop_combine(jac, t(0.9, 0.3, 0.99), leak), t(4.0, 0.5, 2.0))
    close(graddrop_combine(jac, t(0.1, 0.7, 0.5), leak), t(4.0, -1.0, 2.0))


def test_graddrop_uses_its_seeded_draws() -> None:
    jac = jacobians()["random_3"]
    gd = GradDrop(3, seed=11)
    for call in range(3):
        close(gd(jac, torch.ones(3, dtype=D)), graddrop_combine(jac, _draws(11, call, jac.shape[1]), torch.zeros(3)))
    assert int(gd.step) == 3


def _expected_graddrop(column: Tensor) -> tuple[float, float]:
    """(purity, E[update]) of one column: positives kept with probability purity, negatives otherwise."""
    pos, neg = float(column.clamp_min(0).sum()), float(column.clamp_max(0).sum())
    purity = 0.5 * (1 + (pos + neg) / (pos - neg))
    return purity, purity * pos + (1 - purity) * neg


@pytest.mark.parametrize("column", [(1.0, -3.0), (2.0, -1.0, 0.5), (0.2, -0.2, 0.4, -1.0)])
def test_graddrop_distribution_matches_the_paper_and_torchjd(column: tuple[float, ...]) -> None:
    # The same mixed-sign column repeated n times gives n independent draws in one call. The
    # positive entries must be kept with probability equal to the sign purity (and the negative
    # ones otherwise): check the keep frequency and the mean update against their exact values,
    # within 5 standard errors, for our GradDrop and for torchjd's (seeded global RNG).
    n = 40_000
    col = t(*column)
    jac = col[:, None].expand(-1, n).contiguous()
    purity, mean = _expected_graddrop(col)
    pos, neg = float(col.clamp_min(0).sum()), float(col.clamp_max(0).sum())
    outputs = [GradDrop(len(column), seed=3)(jac, torch.ones(len(column), dtype=D))]
    tj = pytest.importorskip("torchjd.aggregation")
    torch.manual_seed(0)
    outputs.append(tj.GradDrop()(jac))
    for out in outputs:
        # every draw keeps exactly one sign: the update is either the positive or the negative sum
        kept = (out - pos).abs() < 1e-12
        assert bool(kept.logical_or((out - neg).abs() < 1e-12).all())
        kept_positive = float(kept.double().mean())
        assert abs(kept_positive - purity) < 5 * math.sqrt(purity * (1 - purity) / n)
        spread = float(out.std())
        assert abs(float(out.mean()) - mean) < 5 * spread / math.sqrt(n)


def test_graddrop_keeps_agreeing_columns_and_full_leak() -> None:
    gen = torch.Generator().manual_seed(1)
    same_sign = torch.rand(3, 50, generator=gen, dtype=D) * torch.sign(torch.randn(1, 50, generator=gen, dtype=D))
    close(GradDrop(3)(same_sign, torch.ones(3, dtype=D)), same_sign.sum(0))  # agreeing signs: plain sum
    mixed = torch.randn(3, 50, generator=gen, dtype=D)
    close(GradDrop(3, leak=1.0)(mixed, torch.ones(3, dtype=D)), mixed.sum(0))  # full leak: plain sum
    g = torch.randn(1, 50, generator=gen, dtype=D)
    close(GradDrop(1)(g, torch.ones(1, dtype=D)), g[0])  # T = 1: the gradient itself
    zero_column = mixed.clone()
    zero_column[:, 0] = 0
    out = GradDrop(3)(zero_column, torch.ones(3, dtype=D))
    assert torch.isfinite(out).all() and out[0] == 0


def test_graddrop_validation() -> None:
    for bad, fragment in [(1.5, r"\[0, 1\]"), (-0.1, r"\[0, 1\]"), ((0.1, 0.2), "2 entries"), ("x", "one per task")]:
        with pytest.raises(ValueError, match=fragment):
            GradDrop(3, leak=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed=-1"):
        GradDrop(3, seed=-1)
    assert GradDrop(3, leak=[0.0, 0.5, 1.0]).leak == (0.0, 0.5, 1.0)  # type: ignore[arg-type]
    assert isinstance(create_weighting("graddrop", 2, leak=0.2), GradDrop)


# ============================================================================================
# ConFIG
# ============================================================================================


@pytest.mark.parametrize("case", CASES)
def test_config_matches_torchjd(case: str) -> None:
    # Same direction (cosine >= 0.9999) and the same length (the sum of the projections).
    tj = pytest.importorskip("torchjd.aggregation")
    jac = jacobians()[case]
    ours = ConFIG(jac.shape[0])(jac, torch.ones(jac.shape[0], dtype=D))
    expected = tj.ConFIG()(jac)
    assert cosine(ours, expected) >= 0.9999
    close(ours, expected, tol=1e-8)


def test_config_reference_values() -> None:
    # Orthogonal gradients (2, 0) and (0, 1): unit rows I, d = (1, 1)/√2, projections 2/√2 + 1/√2,
    # update = (3/√2)·(1, 1)/√2 = (1.5, 1.5).
    close(ConFIG(2)(t((2.0, 0.0), (0.0, 1.0)), t(1.0, 1.0)), t(1.5, 1.5))
    # g1 = (1, 0), g2 = (1, 1): U d = 1 gives d = (1, √2 - 1), ‖d‖² = 4 - 2√2; the projections sum
    # to (1 + √2)/‖d‖, so the update is (1 + √2)/(4 - 2√2)·(1, √2 - 1).
    r2 = math.sqrt(2.0)
    c = (1 + r2) / (4 - 2 * r2)
    close(ConFIG(2)(t((1.0, 0.0), (1.0, 1.0)), t(1.0, 1.0)), t(c, c * (r2 - 1)))


def test_config_has_equal_cosines_and_scales_linearly() -> None:
    jac = jacobians()["random_3"] * t(0.01, 1.0, 100.0)[:, None]
    out = ConFIG(3)(jac, torch.ones(3, dtype=D))
    cosines = [cosine(out, g) for g in jac]
    assert max(cosines) - min(cosines) < 1e-10 and min(cosines) > 0
    close(ConFIG(3)(1e6 * jac, torch.ones(3, dtype=D)), 1e6 * out, tol=1e-9)
    j32 = jac.float()
    assert cosine(ConFIG(3)(j32, torch.ones(3)).double(), out) > 0.99999


def test_config_edge_cases() -> None:
    r = jacobians()["random_3"]
    ones = torch.ones(3, dtype=D)
    # a zero gradient row changes nothing
    with_zero = torch.stack([r[0], torch.zeros_like(r[0]), r[1]])
    close(ConFIG(3)(with_zero, ones), ConFIG(2)(r[:2], ones[:2]))
    # identical gradients: the sum; T = 1: the gradient
    close(ConFIG(2)(torch.stack([r[0], r[0]]), ones[:2]), 2 * r[0])
    close(ConFIG(1)(r[:1], ones[:1]), r[0])
    # exactly opposed gradients cancel: U⁺1 = 0, the update is zero (torchjd agrees)
    assert ConFIG(2)(torch.stack([r[0], -r[0]]), ones[:2]).abs().max() == 0
    assert ConFIG(3)(torch.zeros(3, 5), torch.ones(3)).abs().max() == 0


# ============================================================================================
# MoCo
# ============================================================================================


def _project(v: list[float]) -> list[float]:
    """Projection onto the simplex for 2 entries: shift both by the same θ, clip at 0."""
    a, b = v
    theta = (a + b - 1) / 2
    x, y = a - theta, b - theta
    return [1.0, 0.0] if y < 0 else [0.0, 1.0] if x < 0 else [x, y]


def test_moco_reference_values() -> None:
    # Constant J = diag(1, 2) (T = 2, P = 2), defaults beta = 0.5, gamma = 0.1, sigmas 0.5, rho 0.
    # Call k: β_k = 0.5/√k, γ_k = 0.1/√k; Y is diagonal with entries y, λ ← Π(λ - γ_k·diag(y²)λ),
    # update = (y1·λ1, y2·λ2). Call 1: Y = diag(0.5, 1), λ = Π(0.5 - 0.1·(0.125, 0.5))
    # = Π(0.4875, 0.45) = (0.51875, 0.48125), update = (0.259375, 0.48125).
    moco = MoCo(2)
    jac = t((1.0, 0.0), (0.0, 2.0))
    close(moco(jac, t(1.0, 1.0)), t(0.259375, 0.48125))
    y, lam = [0.5, 1.0], [0.51875, 0.48125]
    target = [1.0, 2.0]
    for k in range(2, 6):
        beta, gamma = 0.5 / math.sqrt(k), 0.1 / math.sqrt(k)
        y = [yi - beta * (yi - ti) for yi, ti in zip(y, target, strict=True)]
        lam = _project([li - gamma * yi * yi * li for li, yi in zip(lam, y, strict=True)])
        close(moco(jac, t(1.0, 1.0)), t(y[0] * lam[0], y[1] * lam[1]))


def test_moco_tracks_the_gradients_and_reaches_mgda_weights() -> None:
    # With a constant J, Y -> J (Π(1 - β_k) -> 0) and λ approaches MGDA's min-norm weights:
    # for g1 = (1, 0), g2 = (0, 2), λ1·1 = λ2·4 gives λ = (0.8, 0.2).
    moco = MoCo(2, gamma=1.0)
    jac = t((1.0, 0.0), (0.0, 2.0))
    for _ in range(400):
        moco(jac, t(1.0, 1.0))
    close(moco.tracked, jac, tol=1e-6)
    close(moco.task_weights, t(0.8, 0.2), tol=1e-3)


def test_moco_edge_cases() -> None:
    g = jacobians()["random_2"]
    # T = 1: λ = 1 and the update is the tracked gradient (half of it after one call)
    close(MoCo(1)(g[:1], t(1.0)), 0.5 * g[0])
    # identical gradients: λ stays uniform, the update is the tracked gradient
    moco = MoCo(2)
    for _ in range(3):
        out = moco(torch.stack([g[0], g[0]]), t(1.0, 1.0))
    close(moco.task_weights, t(0.5, 0.5))
    close(out, moco.tracked[0])
    # a zero gradient is MGDA's min-norm point: its task's weight grows to 1, the update to 0
    moco = MoCo(2, gamma=0.01)
    previous = 0.5
    for _ in range(3):
        moco(torch.stack([g[0], torch.zeros_like(g[0])]), t(1.0, 1.0))
        assert float(moco.task_weights[1]) > previous
        previous = float(moco.task_weights[1])
    moco = MoCo(2, gamma=1.0)
    for _ in range(20):
        out = moco(torch.stack([g[0], torch.zeros_like(g[0])]), t(1.0, 1.0))
    assert float(moco.task_weights[1]) == 1.0 and out.abs().max() == 0
    # the tracked coordinates must not change
    with pytest.raises(ValueError, match="grad_mode='exact'"):
        moco(torch.zeros(2, g.shape[1] + 1, dtype=D), t(1.0, 1.0))


def test_moco_validation() -> None:
    with pytest.raises(ValueError, match="beta=1.5"):
        MoCo(2, beta=1.5)
    for name in ("beta_sigma", "gamma_sigma", "rho"):
        with pytest.raises(ValueError, match=f"{name}=-1"):
            MoCo(2, **{name: -1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma=0"):
        MoCo(2, gamma=0.0)


def test_moco_state_dict_resizes_the_tracked_buffer() -> None:
    a = MoCo(2)
    a(jacobians()["random_2"], t(1.0, 1.0))
    b = MoCo(2)
    assert b.tracked.shape == (0,)
    b.load_state_dict(a.state_dict())
    assert b.tracked.shape == (2, 20)
    close(b.tracked, a.tracked)


# ============================================================================================
# DB-MTL
# ============================================================================================


def test_db_mtl_reference_values() -> None:
    # J = diag(2, 1), losses (2, 0.5): log-gradients g_t/L_t = (1, 0) and (0, 2) (the 1e-8 is
    # negligible at tol 1e-7). Call 1: β_1 = 0.9, ĝ = 0.1·(log-gradients): norms 0.1 and 0.2, so
    # task 0 is scaled by 2: update = (0.2, 0.2). Call 2: β_2 = 0.9/√2, ĝ_0 = (β_2·0.1 + 1 - β_2)·(1, 0),
    # ĝ_1 = 2·ĝ_0 (same factor), and both are rescaled to the larger norm 2·a: update = (2a, 2a).
    db = DBMTL(2)
    jac, losses = t((2.0, 0.0), (0.0, 1.0)), t(2.0, 0.5)
    close(db(jac, losses), t(0.2, 0.2), tol=1e-7)
    b2 = 0.9 / math.sqrt(2)
    a = b2 * 0.1 + 1 - b2
    close(db(jac, losses), t(2 * a, 2 * a), tol=1e-7)


def test_db_mtl_balances_loss_and_gradient_scales() -> None:
    g = jacobians()["random_3"]
    losses = t(0.5, 1.0, 2.0)
    reference = DBMTL(3)
    scaled = DBMTL(3)
    c = t(0.1, 1.0, 1e3)  # rescaling a loss rescales its gradient: the log-gradient is unchanged
    for _ in range(3):
        out = reference(g, losses)
        close(scaled(g * c[:, None], losses * c), out, tol=1e-6)
    # every task contributes with the same norm (the largest)
    norms = reference.averaged.norm(dim=1)
    close(out, (norms.max() / norms) @ reference.averaged)


def test_db_mtl_edge_cases() -> None:
    g = jacobians()["random_2"]
    # T = 1: the moving average of the log-gradient (0.1·g/L after one call)
    close(DBMTL(1)(g[:1], t(2.0)), 0.1 * g[0] / (2.0 + 1e-8))
    # a zero gradient contributes nothing (no NaN)
    out = DBMTL(2)(torch.stack([g[0], torch.zeros_like(g[0])]), t(1.0, 1.0))
    close(out, 0.1 * g[0] / (1 + 1e-8))
    # identical gradients and losses: twice the averaged log-gradient
    close(DBMTL(2)(torch.stack([g[0], g[0]]), t(1.0, 1.0)), 0.2 * g[0] / (1 + 1e-8))
    with pytest.raises(ValueError, match="log"):
        DBMTL(2)(g, t(1.0, -0.5))
    db = DBMTL(2)
    db(g, t(1.0, 1.0))
    with pytest.raises(ValueError, match="grad_mode='exact'"):
        db(torch.zeros(2, 3, dtype=D), t(1.0, 1.0))


def test_db_mtl_validation() -> None:
    for bad in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match="beta="):
            DBMTL(2, beta=bad)
    with pytest.raises(ValueError, match="beta_sigma=-1"):
        DBMTL(2, beta_sigma=-1.0)
