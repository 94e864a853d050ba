"""Nash-MTL, FairGrad, Aligned-MTL, GradVac and STCH: torchjd comparisons, pinned values, edge cases.

torchjd 0.18 is the numerical reference where it implements the method (imported lazily, tests
skip without it). Every pinned value is derived by hand in the comment next to it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor, nn

from multitask.engine import Engine
from multitask.weighting.aligned_mtl import AlignedMTL
from multitask.weighting.fairgrad import FairGrad
from multitask.weighting.gradvac import GradVac
from multitask.weighting.nash_mtl import NashMTL
from multitask.weighting.stch import STCH

F64 = torch.float64


def t64(*values: float) -> Tensor:
    return torch.tensor(values, dtype=F64)


def close(actual: Tensor, expected: Tensor, tol: float = 1e-6) -> None:
    torch.testing.assert_close(actual.detach().to(F64), expected.to(F64), rtol=tol, atol=tol)


def cosine(a: Tensor, b: Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def ones(t: int) -> Tensor:
    return torch.ones(t, dtype=F64)


def jacobians(num_tasks: int = 4, dim: int = 20, seed: int = 0) -> dict[str, Tensor]:
    """Random, rank-deficient, opposed and badly scaled Jacobians (float64)."""
    gen = torch.Generator().manual_seed(seed)
    random = torch.randn(num_tasks, dim, generator=gen, dtype=F64)
    # rank 2, all gradients in a common half-space (b1 ⟂ b2 and positive coefficients on b1),
    # so the bargaining solution exists
    basis = torch.linalg.qr(torch.randn(dim, 2, generator=gen, dtype=F64))[0].T
    coef = torch.rand(num_tasks, 2, generator=gen, dtype=F64) + torch.tensor([0.5, -0.5], dtype=F64)
    rankdef = coef @ basis
    g = torch.randn(dim, generator=gen, dtype=F64)
    opposed = torch.stack([g, -g])
    scales = torch.logspace(-4, 4, num_tasks, dtype=F64).unsqueeze(1)
    scaled = torch.randn(num_tasks, dim, generator=gen, dtype=F64) * scales
    mild = torch.randn(num_tasks, dim, generator=gen, dtype=F64) * torch.logspace(-1, 1, num_tasks, dtype=F64)[:, None]
    return {"random": random, "rankdef": rankdef, "opposed": opposed, "scaled": scaled, "mildly_scaled": mild}


def bargaining_reference(gramian: Tensor) -> Tensor:
    """High-precision solution of (G α)_t = 1/α_t: undamped-at-the-end Newton on the unit-diagonal Gramian."""
    d = gramian.diagonal().sqrt()
    c = gramian / d[:, None] / d[None, :]
    u = torch.ones(gramian.shape[0], dtype=F64)
    for _ in range(200):
        r = c @ u - 1 / u
        du = torch.linalg.solve(c + torch.diag(1 / u**2), r)
        lam = float(r @ du) ** 0.5
        u = u - (du / (1 + lam) if lam > 0.25 else du)
    return u / d


def bargaining_residual(gramian: Tensor, alpha: Tensor) -> float:
    """max_t |α_t (G α)_t - 1|: zero exactly at the bargaining solution, scale-free."""
    return float((alpha * (gramian @ alpha) - 1).abs().max())


# ============================================================================================
# Nash-MTL
# ============================================================================================


@pytest.mark.parametrize("case", ["random", "rankdef", "mildly_scaled"])
def test_nash_matches_torchjd(case: str) -> None:
    torchjd = pytest.importorskip("torchjd.aggregation")
    jac = jacobians()[case]
    t = jac.shape[0]
    for max_norm in (0.0, 1.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = torchjd.NashMTL(n_tasks=t, max_norm=max_norm)(jac).to(F64)
        weights = NashMTL(t, max_norm=max_norm)(ones(t), jac @ jac.T)
        ours = weights @ jac
        assert cosine(ours, expected) >= 0.9999
        # same scale: ‖Jᵀα‖ = sqrt(T) unclipped, 1 clipped
        close(ours.norm(), torch.tensor(math.sqrt(t) if max_norm == 0 else 1.0, dtype=F64), tol=1e-6)
        close(expected.norm(), ours.norm(), tol=1e-3)


def test_nash_badly_scaled_matches_a_high_precision_solve_where_torchjd_does_not() -> None:
    # Rows scaled by 1e-4..1e4: the bargaining direction does not depend on the row scales (α_t ∝
    # 1/‖g_t‖), and our solver works on the unit-diagonal Gramian, so it is exact here. torchjd's
    # cvxpy/ECOS solve of the same problem is far off (its residual max|α(Gα) - 1| is > 1).
    torchjd = pytest.importorskip("torchjd.aggregation")
    jac = jacobians()["scaled"]
    gram = jac @ jac.T
    weights = NashMTL(4, max_norm=0.0)(ones(4), gram)
    reference = bargaining_reference(gram)
    assert bargaining_residual(gram, weights) < 1e-6
    assert bargaining_residual(gram, reference) < 1e-12
    assert cosine(weights @ jac, reference @ jac) >= 0.9999
    close(weights, reference, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agg = torchjd.NashMTL(n_tasks=4, max_norm=0.0)
        agg(jac)
    alpha_jd = torch.as_tensor(agg.weighting.prvs_alpha, dtype=F64)
    assert bargaining_residual(gram, alpha_jd) > 1.0  # documents torchjd's inaccuracy here


def test_nash_opposed_gradients_give_a_zero_update() -> None:
    # g2 = -g1: 0 is in the convex hull, no bargaining solution exists. The ridge keeps the
    # weights finite and equal, so the update is (numerically) zero; torchjd's cvxpy problem is
    # infeasible and it returns its initial weights (ones), also a zero update.
    torchjd = pytest.importorskip("torchjd.aggregation")
    jac = jacobians()["opposed"]
    weights = NashMTL(2, max_norm=0.0)(ones(2), jac @ jac.T)
    assert torch.isfinite(weights).all() and (weights > 0).all()
    close(weights[0], weights[1], tol=1e-9)
    assert float((weights @ jac).norm()) <= 1e-6 * float(weights.max() * jac.norm(dim=1).max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torchjd.NashMTL(n_tasks=2, max_norm=0.0)(jac)
    assert float(expected.norm()) <= 1e-6


def test_nash_pinned_values() -> None:
    # Orthogonal gradients of norms 2 and 4: G = diag(4, 16), (Gα)_t = 1/α_t gives α_t = 1/‖g_t‖
    # = (1/2, 1/4); the update (1, 1)-combination of unit vectors has norm sqrt(2).
    close(NashMTL(2, max_norm=0.0)(ones(2), torch.diag(t64(4.0, 16.0))), t64(0.5, 0.25))
    # ... clipped to max_norm = 1: divided by sqrt(2).
    close(NashMTL(2)(ones(2), torch.diag(t64(4.0, 16.0))), t64(0.5, 0.25) / math.sqrt(2))
    # Unit gradients with cosine 1/2: by symmetry α = (s, s) with s·(1 + 1/2)·s = 1, s = sqrt(2/3).
    g = t64(1.0, 0.5, 0.5, 1.0).view(2, 2)
    close(NashMTL(2, max_norm=0.0)(ones(2), g), t64(1.0, 1.0) * math.sqrt(2 / 3))
    # Identical gradients g1 = g2 with ‖g‖ = 3: G = 9·ones, α = (s, s) with 9·2s·s = 1, s = 1/(3 sqrt 2).
    close(NashMTL(2, max_norm=0.0)(ones(2), torch.full((2, 2), 9.0, dtype=F64)), t64(1, 1) / (3 * math.sqrt(2)))
    # Three orthogonal unit gradients: α = (1, 1, 1), ‖Jᵀα‖ = sqrt(3) clipped to 1: α = 1/sqrt(3).
    close(NashMTL(3)(ones(3), torch.eye(3, dtype=F64)), ones(3) / math.sqrt(3))


def test_nash_edge_cases() -> None:
    # T = 1: G = [[4]], α = 1/‖g‖ = 1/2 (‖Jᵀα‖ = 1: not clipped by max_norm = 1).
    close(NashMTL(1)(ones(1), t64(4.0).view(1, 1)), t64(0.5))
    # A zero gradient row takes no part in the bargaining and gets the mean of the others' weights.
    close(NashMTL(2, max_norm=0.0)(ones(2), torch.diag(t64(4.0, 0.0))), t64(0.5, 0.5))
    g3 = torch.diag(t64(4.0, 0.0, 16.0))
    close(NashMTL(3, max_norm=0.0)(ones(3), g3), t64(0.5, 0.375, 0.25))
    # A zero Gramian: every task is absent from the bargaining, weights stay ones.
    close(NashMTL(2)(ones(2), torch.zeros(2, 2, dtype=F64)), ones(2))
    # A slightly indefinite float32 Gramian (rounding of nearly opposed gradients) stays finite.
    bad = torch.tensor([[1.0, -1.0 - 1e-6], [-1.0 - 1e-6, 1.0]])
    assert torch.isfinite(NashMTL(2)(torch.ones(2), bad)).all()
    # extreme scales of the Gramian: finite, same direction (α ∝ c^{-1/2})
    base = jacobians()["random"]
    gram = base @ base.T
    w = NashMTL(4, max_norm=0.0)(ones(4), gram)
    for c in (1e-20, 1e20):
        close(NashMTL(4, max_norm=0.0)(ones(4), c * gram), w / math.sqrt(c), tol=1e-6)


def test_nash_is_non_conflicting_and_direction_invariant_to_task_scales() -> None:
    jac = jacobians()["random"]
    gram = jac @ jac.T
    w = NashMTL(4, max_norm=0.0)(ones(4), gram)
    assert ((gram @ w) > 0).all()
    d = torch.diag(t64(1e-3, 1.0, 10.0, 1e3))  # g_t -> d_t g_t: α_t -> α_t / d_t, same update
    w_scaled = NashMTL(4, max_norm=0.0)(ones(4), d @ gram @ d)
    close(w_scaled * d.diagonal(), w, tol=1e-6)


def test_nash_update_weights_every_skips_the_gramian() -> None:
    nash = NashMTL(2, update_weights_every=3)
    g = torch.diag(t64(4.0, 16.0))
    pattern = []
    for step in range(7):
        pattern.append(nash.needs_gramian())
        w = nash(ones(2), g if nash.needs_gramian() else None)
        close(w, t64(0.5, 0.25) / math.sqrt(2))
        assert int(nash.step) == step + 1
    assert pattern == [True, False, False, True, False, False, True]
    with pytest.raises(ValueError, match="Gramian"):
        NashMTL(2, update_weights_every=3)(ones(2))  # the first call computes the weights
    # Through the engine: the Gramian (per-task backward passes) is computed on calls 0, 3, 6 only.
    seen: list[bool] = []

    class Spy(NashMTL):
        def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
            seen.append(gramian is not None)
            return super().forward(losses, gramian)

    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    trunk, heads = nn.Linear(3, 4), nn.Linear(4, 2)
    engine = Engine(Spy(2, update_weights_every=3))
    for _ in range(7):
        out = heads(trunk(x))
        engine.backward(((out - y) ** 2).mean(dim=0), list(trunk.parameters()))
    assert seen == [True, False, False, True, False, False, True]


def test_nash_state_and_validation() -> None:
    nash = NashMTL(3)
    assert set(nash.state_dict()) == {"step", "solution", "weights"}
    for kwargs, fragment in [
        ({"max_norm": -1.0}, "max_norm=-1.0"),
        ({"max_norm": math.inf}, "max_norm=inf"),
        ({"update_weights_every": 0}, "update_weights_every=0"),
        ({"optim_niter": 0}, "optim_niter=0"),
        ({"optim_niter": 2.5}, "optim_niter=2.5"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            NashMTL(3, **kwargs)  # type: ignore[arg-type]


# ============================================================================================
# FairGrad
# ============================================================================================


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("case", ["random", "rankdef", "mildly_scaled"])
def test_fairgrad_matches_torchjd(alpha: float, case: str) -> None:
    torchjd = pytest.importorskip("torchjd.aggregation")
    jac = jacobians()[case]
    gram = jac @ jac.T
    expected = torchjd.FairGradWeighting(alpha=alpha)(gram).to(F64)
    weights = FairGrad(4, alpha=alpha)(ones(4), gram)
    assert cosine(weights @ jac, expected @ jac) >= 0.9999
    close(weights, expected, tol=1e-5)  # same scale: both solve the equation for the raw Gramian


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_fairgrad_badly_scaled_solves_the_equation_where_torchjd_does_not(alpha: float) -> None:
    # Rows scaled by 1e-4..1e4 (Gramian diagonal over 16 orders of magnitude): SciPy's least
    # squares (torchjd) stops far from the solution; ours satisfies (G w)_t = w_t^{-1/α} to 1e-6.
    torchjd = pytest.importorskip("torchjd.aggregation")
    jac = jacobians()["scaled"]
    gram = jac @ jac.T
    w = FairGrad(4, alpha=alpha)(ones(4), gram)
    residual = float(((gram @ w) * w.pow(1 / alpha) - 1).abs().max())
    assert residual < 1e-6
    expected = torchjd.FairGradWeighting(alpha=alpha)(gram).to(F64)
    assert float(((gram @ expected) * expected.pow(1 / alpha) - 1).abs().max()) > 1.0
    if alpha == 1.0:  # α = 1 is the bargaining equation: compare with the high-precision solve
        reference = bargaining_reference(gram)
        assert cosine(w @ jac, reference @ jac) >= 0.9999
        close(w, reference, tol=1e-6)


def test_fairgrad_opposed_gradients() -> None:
    # No solution (w → ∞ along (1, 1)); both we and torchjd return large equal weights, zero update.
    jac = jacobians()["opposed"]
    w = FairGrad(2)(ones(2), jac @ jac.T)
    assert torch.isfinite(w).all()
    close(w[0], w[1], tol=1e-9)
    assert float((w @ jac).norm()) <= 1e-6 * float(w.max() * jac.norm(dim=1).max())


def test_fairgrad_pinned_values() -> None:
    # Orthogonal gradients: G = diag(a², b²), a² w_1 = w_1^{-1/α}, so w_1 = a^{-2α/(α+1)}.
    # α = 1, a = 2, b = 4: w = (1/2, 1/4). α = 2: w = (2^{-4/3}, 4^{-4/3}).
    g = torch.diag(t64(4.0, 16.0))
    close(FairGrad(2, alpha=1.0)(ones(2), g), t64(0.5, 0.25))
    close(FairGrad(2, alpha=2.0)(ones(2), g), t64(2 ** (-4 / 3), 4 ** (-4 / 3)))
    # Identical unit gradients: G = ones, w = (s, s) with 2s = s^{-1/α}: s = 2^{-α/(α+1)};
    # α = 3: s = 2^{-3/4}.
    close(FairGrad(2, alpha=3.0)(ones(2), torch.ones(2, 2, dtype=F64)), ones(2) * 2 ** (-0.75))
    # T = 1: w = ‖g‖^{-2α/(α+1)}; ‖g‖ = 3, α = 0.5: 3^{-2/3}.
    close(FairGrad(1, alpha=0.5)(ones(1), t64(9.0).view(1, 1)), t64(3 ** (-2 / 3)))


def test_fairgrad_laws() -> None:
    jac = jacobians()["random"]
    gram = jac @ jac.T
    # α = 1 is Nash-MTL's bargaining solution (before Nash-MTL's clipping).
    close(FairGrad(4, alpha=1.0)(ones(4), gram), NashMTL(4, max_norm=0.0)(ones(4), gram), tol=1e-8)
    for alpha in (0.25, 0.5, 2.0, 4.0):
        w = FairGrad(4, alpha=alpha)(ones(4), gram)
        assert float(((gram @ w) * w.pow(1 / alpha) - 1).abs().max()) < 1e-6
        assert ((gram @ w) > 0).all()  # non-conflicting
        # scaling law: w(cG) = c^{-α/(1+α)} w(G)
        for c in (1e-12, 1e12):
            close(FairGrad(4, alpha=alpha)(ones(4), c * gram), w * c ** (-alpha / (1 + alpha)), tol=1e-6)
    # a zero row gets the mean weight of the others: α = 2, ‖g‖ = (2, 0, 4): w = (2^{-4/3}, mean, 4^{-4/3})
    w1, w3 = 2 ** (-4 / 3), 4 ** (-4 / 3)
    close(FairGrad(3, alpha=2.0)(ones(3), torch.diag(t64(4.0, 0.0, 16.0))), t64(w1, (w1 + w3) / 2, w3))


def test_fairgrad_validation() -> None:
    for kwargs, fragment in [
        ({"alpha": 0.0}, "alpha=0.0"),
        ({"alpha": -1.0}, "alpha=-1.0"),
        ({"max_iter": 0}, "max_iter=0"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            FairGrad(3, **kwargs)  # type: ignore[arg-type]
    assert len(FairGrad(3).state_dict()) == 0


# ============================================================================================
# Aligned-MTL
# ============================================================================================


@pytest.mark.parametrize("scale_mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("case", ["random", "rankdef", "scaled", "opposed"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_aligned_matches_torchjd(scale_mode: str, case: str, dtype: torch.dtype) -> None:
    torchjd = pytest.importorskip("torchjd.aggregation")
    jac = jacobians()[case]
    t = jac.shape[0]
    gram = (jac @ jac.T).to(dtype)
    # torchjd's default preference is 1/T, ours is ones (the paper's sum): T times its weights
    expected = t * torchjd.AlignedMTLWeighting(scale_mode=scale_mode)(gram).to(F64)
    weights = AlignedMTL(t, scale_mode=scale_mode)(torch.ones(t, dtype=dtype), gram).to(F64)
    assert weights.dtype == F64
    if case == "opposed":  # rank 1: the aligned update is zero, weights = ((1, 1)·v) v = 0
        close(weights, expected, tol=1e-6)
        assert float((weights @ jac).norm()) <= 1e-6 * float(jac.norm())
        return
    assert cosine(weights @ jac, expected @ jac) >= 0.9999
    close(weights / expected.abs().max(), expected / expected.abs().max(), tol=1e-5)


def test_aligned_pinned_values() -> None:
    # G = diag(4, 1): V = I, λ = (4, 1), σ_min = 1, B = diag(sqrt(1/4), sqrt(1/1)): w = (0.5, 1);
    # the aligned gradients 0.5·g1 and g2 both have norm 1.
    g = torch.diag(t64(4.0, 1.0))
    close(AlignedMTL(2)(ones(2), g), t64(0.5, 1.0))
    # median of (1, 4) is the lower one (1), as torch.median: same as "min".
    close(AlignedMTL(2, scale_mode="median")(ones(2), g), t64(0.5, 1.0))
    # "rmse": σ = mean(λ) = 2.5, B = diag(sqrt(2.5/4), sqrt(2.5)).
    close(AlignedMTL(2, scale_mode="rmse")(ones(2), g), t64(math.sqrt(2.5 / 4), math.sqrt(2.5)))
    # G = [[2, 1], [1, 2]]: λ = 3 on (1, 1)/√2 and 1 on (1, -1)/√2, σ = 1:
    # B·(1, 1) = (1, 1)/√3.
    close(AlignedMTL(2)(ones(2), t64(2.0, 1.0, 1.0, 2.0).view(2, 2)), ones(2) / math.sqrt(3))
    # preferences: B·(2, 0) for G = diag(4, 1) is (1, 0).
    close(AlignedMTL(2, pref_vector=(2.0, 0.0))(ones(2), g), t64(1.0, 0.0))


def test_aligned_edge_cases() -> None:
    # zero Gramian: B = I, w = ω
    close(AlignedMTL(2, pref_vector=(1.0, 3.0))(ones(2), torch.zeros(2, 2, dtype=F64)), t64(1.0, 3.0))
    # T = 1: B = sqrt(λ)/sqrt(λ) = 1
    close(AlignedMTL(1)(ones(1), t64(4.0).view(1, 1)), t64(1.0))
    # zero row: G = diag(4, 0, 1) has rank 2; the zero task is outside the range: weight 0
    close(AlignedMTL(3)(ones(3), torch.diag(t64(4.0, 0.0, 1.0))), t64(0.5, 0.0, 1.0))
    # identical gradients: rank 1, B = vvᵀ (σ = λ), w = (1, 1) projected on (1, 1)/√2 = (1, 1)
    close(AlignedMTL(2)(ones(2), torch.full((2, 2), 9.0, dtype=F64)), t64(1.0, 1.0))
    # the aligned gradients have equal norms and are orthogonal: B G B = σ·I on the range
    jac = jacobians()["random"]
    gram = jac @ jac.T
    eye = torch.eye(4, dtype=F64)
    b = torch.stack([AlignedMTL(4, pref_vector=tuple(eye[i].tolist()))(ones(4), gram) for i in range(4)])
    aligned = b @ gram @ b.T
    close(aligned / aligned[0, 0], eye, tol=1e-8)


def test_aligned_validation() -> None:
    for kwargs, fragment in [
        ({"pref_vector": (1.0, 2.0)}, "2 entries"),
        ({"pref_vector": (1.0, -1.0, 1.0)}, ">= 0"),
        ({"pref_vector": (0.0, 0.0, 0.0)}, "not all zero"),
        ({"pref_vector": (1.0, math.nan, 1.0)}, "finite"),
        ({"scale_mode": "max"}, "scale_mode='max'"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            AlignedMTL(3, **kwargs)  # type: ignore[arg-type]


# ============================================================================================
# GradVac
# ============================================================================================


@contextmanager
def torchjd_orders(orders: list[Tensor]) -> Iterator[None]:
    """Make torchjd's GradVac (torch.randperm per task) visit the tasks in our orders."""
    original = torch.randperm
    queue: list[Tensor] = []
    for order in orders:  # order: [T, T-1]; torchjd permutes `others` = [j for j != i]
        for i, row in enumerate(order.tolist()):
            queue.append(torch.tensor([j if j < i else j - 1 for j in row]))

    def fake(n: int, *args: object, **kwargs: object) -> Tensor:
        out = queue.pop(0)
        assert out.numel() == n
        return out

    torch.randperm = fake  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.randperm = original


@pytest.mark.parametrize("case", ["random", "rankdef", "scaled", "opposed"])
def test_gradvac_matches_torchjd_with_the_same_orders(case: str) -> None:
    torchjd = pytest.importorskip("torchjd.aggregation")
    base = jacobians()[case]
    t = base.shape[0]
    ours, theirs = GradVac(t, beta=0.5, seed=3), torchjd.GradVacWeighting(beta=0.5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):  # a drifting sequence, so the EMA targets matter
        jac = base + 0.5 * torch.randn(base.shape, generator=gen, dtype=F64) * base.norm(dim=1, keepdim=True) / 4.5
        gram = jac @ jac.T
        orders = ours.orders()
        with torchjd_orders([orders]):
            expected = theirs(gram).to(F64)
        weights = ours(ones(t), gram)
        assert cosine(weights @ jac, expected @ jac) >= 0.9999
        # torchjd adds an absolute eps = 1e-8 to ‖g_j‖·sqrt(1 - φ̂²): with ‖g_0‖ ≈ 5e-4 in the
        # badly scaled case that moves its weights by ~1e-8 / 5e-4 = 2e-5 (relative); ours is exact.
        tol = 1e-4 if case == "scaled" else 1e-6
        close(weights, expected, tol=tol)
        close(ours.targets, theirs._phi_t.to(F64), tol=tol)


def test_gradvac_pinned_values() -> None:
    # g1 = (1, 0), g2 = (-1, 1): cos φ = -1/√2 < 0 = the initial target, so each gradient is
    # projected like PCGrad: c_12 = -φ‖g1‖/‖g2‖ = 1/2, c_21 = -φ‖g2‖/‖g1‖ = 1;
    # g1' = g1 + g2/2, g2' = g2 + g1, weights = column sums of [[1, 1/2], [1, 1]] = (2, 3/2).
    jac = t64(1.0, 0.0, -1.0, 1.0).view(2, 2)
    gv = GradVac(2)
    close(gv(ones(2), jac @ jac.T), t64(2.0, 1.5))
    # targets: 0.5·0 + 0.5·φ = -1/(2√2)
    close(gv.targets, t64(0.0, -1, -1, 0.0).view(2, 2) / (2 * math.sqrt(2)))
    # second call, same gradients: φ = -1/√2 < φ̂ = -1/(2√2); with sin φ = 1/√2, sin φ̂ = sqrt(7/8):
    # c_12 = ‖g1‖(φ̂ sin φ - φ sin φ̂)/(‖g2‖ sin φ̂) = (-1/4 + sqrt(7/16)) / (√2·sqrt(7/8)),
    # c_21 = √2·(same numerator) / (1·sqrt(7/8)).
    num = -0.25 + math.sqrt(7 / 16)
    c12, c21 = num / (math.sqrt(2) * math.sqrt(7 / 8)), math.sqrt(2) * num / math.sqrt(7 / 8)
    close(gv(ones(2), jac @ jac.T), t64(1 + c21, 1 + c12))


def test_gradvac_edge_cases() -> None:
    # identical gradients: φ = 1 is never below a target, no correction
    close(GradVac(2)(ones(2), torch.full((2, 2), 4.0, dtype=F64)), ones(2))
    close(GradVac(1)(ones(1), t64(4.0).view(1, 1)), ones(1))
    # a zero gradient is skipped (no huge weight on it), its targets stay 0
    gv = GradVac(3)
    g = torch.diag(t64(4.0, 0.0, 1.0))
    g[0, 2] = g[2, 0] = -1.0
    w = gv(ones(3), g)
    assert float(w[1]) == 1.0 and torch.isfinite(w).all()
    assert float(gv.targets[1].abs().sum() + gv.targets[:, 1].abs().sum()) == 0.0
    # beta = 0 keeps the targets at 0 (PCGrad's projections at every step)
    jac = t64(1.0, 0.0, -1.0, 1.0).view(2, 2)
    pc = GradVac(2, beta=0.0)
    for _ in range(3):
        close(pc(ones(2), jac @ jac.T), t64(2.0, 1.5))
    # scale-invariant and non-negative (every correction is positive)
    base = jacobians()["random"]
    gram = base @ base.T
    a, b = GradVac(4, seed=1), GradVac(4, seed=1)
    for _ in range(3):
        wa, wb = a(ones(4), gram), b(ones(4), 1e-12 * gram)
        close(wa, wb, tol=1e-8)
        assert (wa >= 1).all()


def test_gradvac_seeded_orders() -> None:
    a, b, c = GradVac(5, seed=0), GradVac(5, seed=0), GradVac(5, seed=1)
    orders_a = [a.orders()]
    for m in (a, b, c):
        m.step.add_(1)
    assert torch.equal(a.orders(), b.orders())
    assert not torch.equal(a.orders(), c.orders())
    assert not torch.equal(orders_a[0], a.orders())  # a new order at every call
    for row_i, row in enumerate(orders_a[0].tolist()):
        assert sorted(row) == [j for j in range(5) if j != row_i]


def test_gradvac_validation() -> None:
    for kwargs, fragment in [({"beta": -0.1}, "beta=-0.1"), ({"beta": 1.5}, "beta=1.5"), ({"seed": -1}, "seed=-1")]:
        with pytest.raises(ValueError, match=fragment):
            GradVac(3, **kwargs)  # type: ignore[arg-type]


# ============================================================================================
# STCH
# ============================================================================================


def test_stch_matches_torchjd_scalarizer() -> None:
    # After the warm-up our objective is T·STCH_μ(log(L/ℓ̄)) with λ = 1 and z = 0; its gradient
    # with respect to L is the weight vector.
    scalarization = pytest.importorskip("torchjd.scalarization")
    for mu in (0.1, 1.0):
        stch = STCH(3, mu=mu, warmup_epochs=1)
        stch(t64(1.0, 2.0, 4.0))
        stch(t64(3.0, 2.0, 2.0))  # nadir = (2, 2, 3)
        stch.on_epoch_end()
        losses = t64(1.0, 1.5, 2.5).requires_grad_(True)
        weights = stch(losses.detach())
        values = torch.log(losses / t64(2.0, 2.0, 3.0) + 1e-20)
        objective = 3 * scalarization.STCH(mu, weights=torch.ones(3, dtype=F64))(values)
        (expected,) = torch.autograd.grad(objective, losses)
        close(weights, expected, tol=1e-10)


def test_stch_pinned_values() -> None:
    # warm-up: the gradient of Σ log L: w = 1/L
    stch = STCH(2, mu=1.0, warmup_epochs=1)
    close(stch(t64(1.0, 4.0)), t64(1.0, 0.25))
    stch(t64(3.0, 2.0))  # nadir = mean over the (last) warm-up epoch = (2, 3)
    stch.on_epoch_end()
    # L = (1, 3): f = log(L/ℓ̄) = (log 1/2, 0), softmax(f) = (1/3, 2/3), w = 2·softmax/L = (2/3, 4/9)
    close(stch(t64(1.0, 3.0)), t64(2 / 3, 4 / 9))
    close(stch.nadir, t64(2.0, 3.0))
    # warmup_epochs = 0: the nadir is the first call's losses, f = 0, softmax uniform: w = 1/L
    close(STCH(2, warmup_epochs=0)(t64(2.0, 5.0)), t64(0.5, 0.2))


def test_stch_small_mu_approaches_the_max() -> None:
    stch = STCH(3, mu=1e-3, warmup_epochs=0)
    stch(t64(1.0, 1.0, 1.0))  # nadir = 1
    w = stch(t64(0.5, 2.0, 1.0))  # the second task is the worst relative to its nadir
    close(w, t64(0.0, 3.0 / 2.0, 0.0), tol=1e-9)


def test_stch_edge_cases_and_validation() -> None:
    stch = STCH(2, warmup_epochs=0)
    w = stch(t64(0.0, 1.0))
    assert torch.isfinite(w).all() and float(w[0]) > 1e10  # 1/(0 + 1e-20): huge but finite
    w = stch(torch.tensor([1e-30, 1e30]))
    assert torch.isfinite(w).all()
    close(STCH(1, warmup_epochs=0)(t64(4.0)), t64(0.25))
    for kwargs, fragment in [({"mu": 0.0}, "mu=0.0"), ({"warmup_epochs": -1}, "warmup_epochs=-1")]:
        with pytest.raises(ValueError, match=fragment):
            STCH(3, **kwargs)  # type: ignore[arg-type]


def test_stch_warmup_counts_epochs_and_reloads() -> None:
    stch = STCH(2, warmup_epochs=2)
    for _ in range(2):
        stch(t64(2.0, 4.0))
        assert not bool(stch.has_nadir)
        stch.on_epoch_end()
    fresh = STCH(2, warmup_epochs=2)
    fresh.load_state_dict(stch.state_dict())
    close(fresh(t64(2.0, 4.0)), stch(t64(2.0, 4.0)))
    close(stch.nadir, t64(2.0, 4.0))
