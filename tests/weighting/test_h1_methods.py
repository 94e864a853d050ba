"""MGDA, gradient normalisation, UPGrad, DualProj, PCGrad, CAGrad, IMTL-G and IMTL.

Three kinds of tests: comparisons with torchjd 0.18 (update directions ``Jᵀw`` on random,
rank-deficient, opposed and badly scaled Jacobians), pinned values derived by hand in the
comments, and edge cases (zero gradients, identical gradients, one task, validation).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor

from multitask.engine import Engine
from multitask.weighting import create_weighting
from multitask.weighting.cagrad import CAGrad, cagrad_weights
from multitask.weighting.chain import chain
from multitask.weighting.dualproj import DualProj
from multitask.weighting.imtl import IMTL, IMTLG, imtlg_weights
from multitask.weighting.mgda import MGDA
from multitask.weighting.normalize import NormalizeGradients
from multitask.weighting.pcgrad import PCGrad, pcgrad_weights
from multitask.weighting.upgrad import UPGrad

F64 = torch.float64


def t(*values: float) -> Tensor:
    return torch.tensor(values, dtype=F64)


def close(actual: Tensor, expected: Tensor, tol: float = 1e-9) -> None:
    torch.testing.assert_close(actual.detach().to(F64), expected.to(F64), rtol=tol, atol=tol)


def weights(method: torch.nn.Module, jac: Tensor, losses: Tensor | None = None) -> Tensor:
    """The method's weights for the Jacobian ``jac`` (the Gramian in the Jacobian's dtype)."""
    out: Tensor = method(torch.ones(jac.shape[0], dtype=jac.dtype) if losses is None else losses, jac @ jac.T)
    return out


def cosine(a: Tensor, b: Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    return float(a @ b) / (na * nb)


def jacobians(num_tasks: int, seed: int, dim: int = 20) -> dict[str, Tensor]:
    """The four families of the torchjd comparisons (float64)."""
    gen = torch.Generator().manual_seed(seed)
    out = {"random": torch.randn(num_tasks, dim, generator=gen, dtype=F64)}
    rank = max(1, num_tasks - 2)
    out["rank_deficient"] = torch.randn(num_tasks, rank, generator=gen, dtype=F64) @ torch.randn(
        rank, dim, generator=gen, dtype=F64
    )
    opposed = torch.randn(num_tasks, dim, generator=gen, dtype=F64)
    opposed[1] = -opposed[0]
    out["opposed"] = opposed
    scales = torch.logspace(-4, 4, num_tasks, dtype=F64)[torch.randperm(num_tasks, generator=gen)]
    out["badly_scaled"] = torch.randn(num_tasks, dim, generator=gen, dtype=F64) * scales.unsqueeze(1)
    return out


CASES = [(n, seed) for n in (2, 3, 5) for seed in range(3)]
KINDS = ("random", "rank_deficient", "opposed", "badly_scaled")


def same_direction(ours: Tensor, ref: Tensor, jac: Tensor, min_cos: float = 0.9999) -> None:
    """Updates agree in direction (or are both ~0 relative to the gradients)."""
    tiny = 1e-9 * float(jac.norm(dim=1).max())
    if float(ours.norm()) <= tiny and float(ref.norm()) <= tiny:
        return
    assert cosine(ours, ref) >= min_cos, (ours, ref)


@pytest.fixture(scope="module")
def tjd():  # type: ignore[no-untyped-def]
    agg = pytest.importorskip("torchjd.aggregation")
    warnings.filterwarnings("ignore", module="cvxpy")
    return agg


# =============================================================================================
# Comparisons with torchjd
# =============================================================================================


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_upgrad_and_dualproj_match_torchjd(tjd, n: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    for kind, jac in jacobians(n, seed).items():
        for ours_cls, ref_cls in ((UPGrad, tjd.UPGrad), (DualProj, tjd.DualProj)):
            ref = ref_cls()(jac)
            # with torchjd's safeguards (trace normalisation, reg_eps = norm_eps = 1e-4): the same QP
            matched = ours_cls(n, norm_eps=1e-4, reg_eps=1e-4)
            same_direction(weights(matched, jac) @ jac, ref, jac, min_cos=1 - 1e-9)
            close(weights(matched, jac) @ jac, ref, tol=1e-7 * float(ref.norm()) + 1e-12)
            if kind in ("random", "opposed"):
                # the exact projection (our default) differs from torchjd's only by its O(1e-4) ridge
                same_direction(weights(ours_cls(n), jac) @ jac, ref, jac)
            # rank-deficient / badly scaled: torchjd's ridge dominates the small eigenvalues and the
            # small rows, so its projection is that of a different matrix; exactness is checked below


def test_upgrad_pref_vector_matches_torchjd(tjd) -> None:  # type: ignore[no-untyped-def]
    jac = jacobians(3, 7)["random"]
    pref = (0.2, 0.3, 0.5)
    for ours_cls, ref_cls in ((UPGrad, tjd.UPGrad), (DualProj, tjd.DualProj)):
        ref = ref_cls(pref_vector=torch.tensor(pref, dtype=F64))(jac)
        ours = weights(ours_cls(3, pref_vector=pref, norm_eps=1e-4, reg_eps=1e-4), jac) @ jac
        close(ours, ref, tol=1e-7)


@pytest.mark.parametrize("kind", ["rank_deficient", "badly_scaled"])
@pytest.mark.parametrize("cls", [UPGrad, DualProj])
def test_dual_cone_methods_are_exact_where_torchjd_is_regularised(cls: type, kind: str) -> None:
    # KKT conditions of min_{v >= u} vᵀGv for the exact default: G w >= 0 relative to every task
    # (however small its gradient), and the update is the projection (checked via w >= p).
    for n in (3, 5):
        jac = jacobians(n, 11)[kind]
        w = weights(cls(n), jac)
        update = w @ jac
        norms = jac.norm(dim=1)
        assert bool((w >= 1 / n - 1e-12).all())
        if float(update.norm()) <= 1e-12 * float(norms.max()):
            continue  # the dual cone is orthogonal to all gradients: the projection is 0
        rel = (jac @ update) / (norms * float(update.norm()))
        assert float(rel.min()) >= -1e-8, rel


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_mgda_matches_torchjd(tjd, n: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    # torchjd's MGDA is Frank-Wolfe (stops at a step < 1e-3), an approximation of the exact
    # min-norm point computed here: our norm is never larger, and for T = 2 (closed form in both)
    # and tightly converged Frank-Wolfe on random gradients the directions agree.
    for kind, jac in jacobians(n, seed).items():
        ours = weights(MGDA(n), jac) @ jac
        fw = tjd.MGDA()(jac)
        assert float(ours.norm()) <= float(fw.norm()) * (1 + 1e-9) + 1e-12
        if kind == "random":
            tight = tjd.MGDA(epsilon=1e-12, max_iters=5000)(jac)
            same_direction(ours, tight, jac, min_cos=0.9999)
        if n == 2:
            same_direction(ours, fw, jac, min_cos=0.9999)


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_mgda_is_the_exact_min_norm_point(n: int, seed: int) -> None:
    # optimality on the simplex: <g_t, d> >= ||d||² for every task, with equality on the support
    for jac in jacobians(n, seed).values():
        w = weights(MGDA(n), jac)
        d = w @ jac
        inner = jac @ d
        sq = float(d @ d)
        top = float(jac.norm(dim=1).max())
        tol = 1e-9 * top * float(d.norm()) + 1e-13 * top**2  # d = 0 at a Pareto-stationary point
        assert bool((inner >= sq - tol).all())
        support = w > 1e-9
        assert bool(((inner[support] - sq).abs() <= 10 * tol).all())


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_pcgrad_matches_torchjd_exactly_with_the_same_orders(tjd, n: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    # torchjd draws, for task i = 0..T-1 in turn, torch.randperm(T) from the global RNG
    for jac in jacobians(n, seed).values():
        torch.manual_seed(1000 + seed)
        orders = torch.stack([torch.randperm(n) for _ in range(n)])
        torch.manual_seed(1000 + seed)
        ref = tjd.PCGrad()(jac)
        close(pcgrad_weights(jac @ jac.T, orders) @ jac, ref, tol=1e-9 * float(jac.norm()))
        if n == 2:  # no randomness for two tasks
            same_direction(weights(PCGrad(2), jac) @ jac, ref, jac, min_cos=1 - 1e-12)


@pytest.mark.parametrize(("n", "seed"), CASES)
@pytest.mark.parametrize("c", [0.4, 0.9])
def test_cagrad_matches_torchjd(tjd, n: int, seed: int, c: float) -> None:  # type: ignore[no-untyped-def]
    # torchjd solves the dual with cvxpy (CLARABEL); same scale (no rescaling) and norm_eps
    for jac in jacobians(n, seed).values():
        ref = tjd.CAGrad(c=c)(jac)
        ours = weights(CAGrad(n, c=c), jac) @ jac
        same_direction(ours, ref, jac)
        close(ours.norm(), ref.norm(), tol=1e-4 * float(ref.norm()) + 1e-9)


def test_cagrad_float32_rank_deficient_matches_torchjd(tjd) -> None:  # type: ignore[no-untyped-def]
    # float32 Gramians of dependent gradients are slightly indefinite; the solver must stay exact
    for seed in range(4):
        jac = jacobians(8, seed)["rank_deficient"]
        ours = weights(CAGrad(8), jac.float()).double() @ jac
        same_direction(ours, tjd.CAGrad(c=0.4)(jac), jac, min_cos=0.9999)


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_imtlg_matches_torchjd(tjd, n: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    for kind, jac in jacobians(n, seed).items():
        ours = weights(IMTLG(n), jac) @ jac
        if kind == "badly_scaled":
            # torchjd's pinv(G) truncates the eigenvalues of rows 1e8 times smaller (relative 1e-16):
            # compare on milder scales, where its pseudo-inverse is accurate; exactness is checked below
            jac = jac / jac.norm(dim=1, keepdim=True) * torch.logspace(-2, 2, n, dtype=F64).unsqueeze(1)
            ours = weights(IMTLG(n), jac) @ jac
        ref = tjd.IMTLG()(jac)
        same_direction(ours, ref, jac)
        close(ours.norm(), ref.norm(), tol=1e-6 * float(ref.norm()) + 1e-12)


def test_imtlg_equal_projections_with_badly_scaled_gradients() -> None:
    # ⟨d, g_t / ||g_t||⟩ is the same for every task, even with norms from 1e-4 to 1e4
    for n in (3, 5, 8):
        jac = jacobians(n, 5)["badly_scaled"]
        w = weights(IMTLG(n), jac)
        proj = (jac @ (w @ jac)) / jac.norm(dim=1)
        close(proj, proj.mean().expand(n), tol=1e-8 * float(proj.abs().max()))
        close(w.sum(), torch.tensor(1.0, dtype=F64))


def test_normalize_then_mgda_is_mgda_on_normalised_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    jac = torch.randn(4, 9, generator=gen, dtype=F64) * t(0.01, 1.0, 30.0, 5.0).unsqueeze(1)
    losses = t(0.5, 2.0, 8.0, 1.5)
    for mode, factors in (
        ("none", torch.ones(4, dtype=F64)),
        ("l2", 1 / jac.norm(dim=1)),
        ("loss", 1 / losses),
        ("loss+", 1 / (losses * jac.norm(dim=1))),
    ):
        chained = create_weighting("normalize_gradients+mgda", 4, normalize_gradients={"mode": mode})
        w_chain = chained(losses, jac @ jac.T)
        scaled = factors.unsqueeze(1) * jac
        w_mgda = MGDA(4)(losses, scaled @ scaled.T)
        close(w_chain @ jac, w_mgda @ scaled)  # the same update
        close(w_chain, factors * w_mgda)
        also = chain(NormalizeGradients(4, mode=mode), MGDA(4))
        close(also(losses, jac @ jac.T), w_chain)


# =============================================================================================
# Pinned values, derived by hand
# =============================================================================================


def test_mgda_pinned() -> None:
    # g1 = (1, 0), g2 = (0, 1): the min-norm point of the segment is its midpoint -> (1/2, 1/2).
    close(MGDA(2)(t(1, 1), t(1, 0, 0, 1).view(2, 2)), t(0.5, 0.5))
    # g1 = (1, 0), g2 = (1, 1): ||(1, 1 - w_1)||² is smallest at the vertex w = (1, 0).
    close(MGDA(2)(t(1, 1), t(1, 1, 1, 2).view(2, 2)), t(1, 0))
    # g1 = (1, 0), g2 = (0, 2): w_1 = <g2 - g1, g2> / ||g1 - g2||² = 4 / 5 -> d = (4/5, 2/5).
    close(MGDA(2)(t(1, 1), t(1, 0, 0, 4).view(2, 2)), t(0.8, 0.2))
    # e1, e2, e3 and e1 + e2 + e3 (T = 4, active-set path): the centroid of e1..e3 has norm² 1/3,
    # the fourth vertex (norm² 3) lies beyond it -> (1/3, 1/3, 1/3, 0).
    jac = torch.cat([torch.eye(3, dtype=F64), torch.ones(1, 3, dtype=F64)])
    close(weights(MGDA(4), jac), t(1 / 3, 1 / 3, 1 / 3, 0))


def test_upgrad_and_dualproj_pinned() -> None:
    # g1 = (1, 0), g2 = (-1, 1); dual cone {x : x1 >= 0, x2 >= x1}.
    # π(g1) = (1/2, 1/2) (onto the ray x2 = x1), π(g2) = (0, 1) (onto x1 = 0); UPGrad = their mean
    # (1/4, 3/4) = w1 g1 + w2 g2 with w2 = 3/4, w1 - w2 = 1/4 -> w = (1, 3/4).
    jac = t(1, 0, -1, 1).view(2, 2)
    close(weights(UPGrad(2), jac), t(1.0, 0.75))
    # DualProj: the mean (0, 1/2) is in the cone -> w = (1/2, 1/2).
    close(weights(DualProj(2), jac), t(0.5, 0.5))
    # g1 = (1, 0), g2 = (-2, 1): the mean (-1/2, 1/2) projects onto x1 = 0: (0, 1/2) (and
    # -2·0 + 1/2 >= 0) = w1 g1 + w2 g2 with w2 = 1/2, w1 = 2 w2 = 1 -> w = (1, 1/2).
    close(weights(DualProj(2), t(1, 0, -2, 1).view(2, 2)), t(1.0, 0.5))
    # pref_vector = (1, 0): UPGrad projects g1 only -> (1/2, 1/2) = 1·g1 + 1/2·g2.
    close(weights(UPGrad(2, pref_vector=(1.0, 0.0)), jac), t(1.0, 0.5))


def test_pcgrad_pinned() -> None:
    # g1 = (1, 0), g2 = (-1, 1), <g1, g2> = -1: g1^PC = g1 + 1/2 g2 = (1/2, 1/2), g2^PC = g2 + g1
    # = (0, 1). Sum = 2 g1 + 3/2 g2 -> w = (2, 3/2).
    close(weights(PCGrad(2), t(1, 0, -1, 1).view(2, 2)), t(2.0, 1.5))
    # T = 3, g1 = (1, 0), g2 = (-1, 1), g3 = (0, -1), orders fixed to (0, 1, 2) for everybody:
    # g1: vs g2 <(1,0),(-1,1)> = -1 -> + 1/2 g2 = (1/2, 1/2); vs g3: -1/2 -> + 1/2 g3 = (1/2, 0).
    #     coefficients (1, 1/2, 1/2).
    # g2: vs g1: -1 -> + g1 = (0, 1); vs g3: -1 -> + g3 = (0, 0). coefficients (1, 1, 1).
    # g3: vs g1: 0 -> no change; vs g2: -1 -> + 1/2 g2 = (-1/2, -1/2). coefficients (0, 1/2, 1).
    # weights = column sums = (2, 2, 5/2).
    jac = t(1, 0, -1, 1, 0, -1).view(3, 2)
    orders = torch.tensor([[0, 1, 2]] * 3)
    close(pcgrad_weights(jac @ jac.T, orders), t(2.0, 2.0, 2.5))


def test_cagrad_pinned() -> None:
    # Orthonormal g1, g2: g0 = (1/2, 1/2), ||g0|| = 1/√2, ρ = c/√2. The dual g_wᵀg0 + ρ||g_w|| has
    # g_wᵀg0 = 1/2 on the simplex and ||g_w|| smallest at w = (1/2, 1/2), ||g_w|| = 1/√2, so
    # weights = 1/2 + (ρ / ||g_w||)·1/2 = (1 + c)/2: the update is (1 + c) g0. c = 0.4 -> 0.7 each.
    eye = torch.eye(2, dtype=F64)
    close(CAGrad(2)(t(1, 1), eye), t(0.7, 0.7))
    close(CAGrad(2, rescale=1)(t(1, 1), eye), t(0.7, 0.7) / 1.16)
    close(CAGrad(2, rescale=2)(t(1, 1), eye), t(0.5, 0.5))
    close(CAGrad(2, c=0.0)(t(1, 1), eye), t(0.5, 0.5))  # c = 0: the mean gradient
    # T = 1: g_w = g0, update (1 + c) g0.
    close(CAGrad(1, c=0.5)(t(1), t(4).view(1, 1)), t(1.5))
    # g1 = (1, 0), g2 = (-1, 0.1) (nearly opposed), c = 0.4: g0 = (0, 0.05), ρ = 0.02. The
    # dual's minimiser is the vertex w = (0, 1)? Check: on the segment g_w = (1 - 2a, 0.1a)
    # (a = w2), F(a) = 0.005 a + 0.02 sqrt((1 - 2a)² + 0.01 a²); F is smallest where g_w is
    # nearly 0 (a ≈ 1/2): F(1/2) = 0.0025 + 0.02·0.05 = 0.0035 < F(0) = 0.02, F(1) = 0.025.
    # Stationarity: 0.005 + 0.02 (-2(1 - 2a)·2 + 0.01 a·2... ) solved numerically below and
    # compared with the primal optimality of the update instead (max-min of ⟨g_i, d⟩).
    jac = t(1, 0, -1, 0.1).view(2, 2)
    d = weights(CAGrad(2), jac) @ jac
    g0 = jac.mean(dim=0)
    rho = 0.4 * float(g0.norm())
    assert float((d - g0).norm()) == pytest.approx(rho, rel=1e-9)
    # primal: d maximises min_i <g_i, d> on the ball ||d - g0|| <= ρ (check against a fine grid)
    angles = torch.linspace(0, 2 * math.pi, 20001, dtype=F64)
    ring = g0 + rho * torch.stack([angles.cos(), angles.sin()], dim=1)
    best = float((ring @ jac.T).min(dim=1).values.max())
    assert float((jac @ d).min()) >= best - 1e-9


def test_cagrad_enumeration_and_newton_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    # for T <= 8 every face is checked at once; the general path is the safeguarded Newton iteration
    from multitask.weighting import cagrad as cagrad_module

    for n, seed in [(3, 0), (5, 2), (7, 1)]:
        for jac in jacobians(n, seed).values():
            g = jac @ jac.T
            fast = cagrad_weights(g, 0.4)
            monkeypatch.setattr(cagrad_module, "_ENUMERATE_MAX_TASKS", 0)
            slow = cagrad_weights(g, 0.4)
            monkeypatch.undo()
            close(fast @ jac, slow @ jac, tol=1e-7 * float(jac.norm()))


def test_imtlg_pinned() -> None:
    # g1 = (1, 0), g2 = (0, 2): α ∝ G⁻¹d = diag(1, 4)⁻¹ (1, 2) = (1, 1/2) -> α = (2/3, 1/3);
    # d = (2/3, 2/3) projects 2/3 on both unit gradients.
    close(IMTLG(2)(t(1, 1), t(1, 0, 0, 4).view(2, 2)), t(2 / 3, 1 / 3))
    # g1 = (1, 0), g2 = (1, 1): G = [[1, 1], [1, 2]], G⁻¹ = [[2, -1], [-1, 1]], d = (1, √2):
    # G⁻¹d = (2 - √2, √2 - 1), which already sums to 1; d = (1, √2 - 1) projects 1 on both.
    r2 = math.sqrt(2)
    close(IMTLG(2)(t(1, 1), t(1, 1, 1, 2).view(2, 2)), t(2 - r2, r2 - 1))


def test_imtl_hybrid_gradients_by_hand() -> None:
    # Shared θ ∈ R², L_1 = 3 + θ_1, L_2 = 0.25 + θ_2 at θ = 0: gradients e1, e2, G = I.
    # s = (0, ln 2): scaled-loss gradients e^s ⊙ g = (e1, 2 e2), Gramian diag(1, 4); IMTL-G on it:
    # α ∝ diag(1, 4)⁻¹ (1, 2) = (1, 1/2) -> α = (2/3, 1/3). Weights w = α e^s = (2/3, 2/3).
    # θ.grad = Σ w_t ∇L_t = (2/3, 2/3) (= Σ α_t ∇(e^{s_t} L_t)).
    # s.grad = e^s ⊙ L - 1 = (3 - 1, 2·0.25 - 1) = (2, -1/2): the paper's IMTL-L gradient.
    imtl = IMTL(2)
    with torch.no_grad():
        imtl.loss_scale.copy_(torch.tensor([0.0, math.log(2.0)]))
    theta = torch.zeros(2, requires_grad=True)
    losses = torch.stack([3.0 + theta[0], 0.25 + theta[1]])
    info = Engine(imtl).backward(losses, [theta])
    close(info.weights, t(2 / 3, 2 / 3), tol=1e-6)
    assert theta.grad is not None and imtl.loss_scale.grad is not None
    close(theta.grad, t(2 / 3, 2 / 3), tol=1e-6)
    close(imtl.loss_scale.grad, t(2.0, -0.5), tol=1e-6)
    close(imtl.regularizer(), torch.tensor(-math.log(2.0), dtype=F64), tol=1e-6)


def test_imtl_shared_direction_is_imtlg_direction() -> None:
    # e^s rescales the gradients; IMTL-G's direction does not depend on gradient norms
    jac = jacobians(4, 3)["random"]
    imtl = IMTL(4)
    with torch.no_grad():
        imtl.loss_scale.copy_(torch.tensor([0.3, -1.0, 2.0, 0.0]))
    same_direction(weights(imtl, jac).detach() @ jac, weights(IMTLG(4), jac) @ jac, jac, min_cos=1 - 1e-12)


def test_normalize_gradients_pinned() -> None:
    g = torch.diag(t(4.0, 9.0))
    losses = t(2.0, 3.0)
    close(NormalizeGradients(2, mode="none")(losses, g), t(1, 1))
    close(NormalizeGradients(2, mode="l2")(losses, g), t(1 / 2, 1 / 3))
    close(NormalizeGradients(2, mode="loss")(losses, None), t(1 / 2, 1 / 3))
    close(NormalizeGradients(2, mode="loss+")(losses, g), t(1 / 4, 1 / 9))
    assert not NormalizeGradients(2, mode="none").needs_gramian()
    assert not NormalizeGradients(2, mode="loss").needs_gramian()
    assert NormalizeGradients(2, mode="l2").needs_gramian()
    assert NormalizeGradients(2, mode="loss+").needs_gramian()
    chained = create_weighting("normalize_gradients+mgda", 2, normalize_gradients={"mode": "loss"})
    assert chained.needs_gramian()  # MGDA still needs it


# =============================================================================================
# Edge cases
# =============================================================================================

ALL = {
    "mgda": MGDA,
    "upgrad": UPGrad,
    "dualproj": DualProj,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "imtl_g": IMTLG,
    "imtl": IMTL,
}


@pytest.mark.parametrize("name", list(ALL))
def test_one_task(name: str) -> None:
    expected = {"cagrad": 1.4}.get(name, 1.0)  # CAGrad: (1 + c) g
    close(ALL[name](1)(t(2.0), t(9.0).view(1, 1)), t(expected))


@pytest.mark.parametrize("name", list(ALL))
def test_identical_gradients(name: str) -> None:
    # no conflict at all: every method moves along g; the update's scale is the paper's
    g = torch.randn(1, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    jac = g.repeat(3, 1)
    update = weights(ALL[name](3), jac).detach() @ jac
    scale = {"mgda": 1.0, "upgrad": 1.0, "dualproj": 1.0, "pcgrad": 3.0, "cagrad": 1.4, "imtl_g": 1.0, "imtl": 1.0}
    close(update, scale[name] * g[0], tol=1e-9)


@pytest.mark.parametrize("name", list(ALL))
def test_zero_gradient_row(name: str) -> None:
    jac = jacobians(3, 4)["random"]
    jac[1] = 0.0
    w = weights(ALL[name](3), jac).detach()
    assert bool(torch.isfinite(w).all())
    rest = jac[[0, 2]]
    sub = weights(ALL[name](2), rest).detach()
    if name == "mgda":
        close(w, t(0, 1, 0))  # a zero gradient is the min-norm point: no update (Pareto-stationary)
    elif name in ("pcgrad", "imtl_g", "imtl"):
        # a zero gradient neither projects nor is projected (PCGrad), gets weight 0 (IMTL-G)
        close(w @ jac, sub @ rest, tol=1e-9)
    elif name == "upgrad":
        # no constraint from a zero gradient; its own projection is 0 -> (2/3)·UPGrad of the others
        close(w @ jac, (2 / 3) * (sub @ rest), tol=1e-9)
        close(w[1], torch.tensor(1 / 3, dtype=F64))
    elif name == "dualproj":
        # the mean over 3 tasks is 2/3 of the mean of the others; projection is positively homogeneous
        close(w @ jac, (2 / 3) * (sub @ rest), tol=1e-9)
    else:
        update = w @ jac
        assert bool(torch.isfinite(update).all())


@pytest.mark.parametrize("name", list(ALL))
def test_zero_gramian_and_float32_extremes(name: str) -> None:
    for scale in (0.0, 1e-30, 1e30):
        g = torch.eye(3) * scale
        out = ALL[name](3)(torch.ones(3), g)
        assert out.dtype == torch.float32 and bool(torch.isfinite(out).all()), (scale, out)


def test_non_conflicting_updates_at_extreme_scales() -> None:
    for cls in (MGDA, UPGrad, DualProj):
        for kind in ("badly_scaled", "rank_deficient"):
            jac = jacobians(5, 9)[kind].float()
            w = weights(cls(5), jac).double()
            gw = (jac.double() @ jac.double().T) @ w
            norms = jac.double().norm(dim=1)
            upd = float((w @ jac.double()).norm())
            assert bool((gw >= -1e-5 * norms * max(upd, 1e-30)).all()), (cls, kind, gw)


def test_pcgrad_reproducible_and_checkpointed() -> None:
    # three mutually conflicting gradients: the order matters, so different seeds differ
    jac = t(1, 0, -0.9, 0.5, -0.2, -1.0).view(3, 2)
    g = jac @ jac.T
    a, b, c = PCGrad(3, seed=1), PCGrad(3, seed=1), PCGrad(3, seed=2)
    seq_a = [a(torch.ones(3, dtype=F64), g) for _ in range(6)]
    seq_b = [b(torch.ones(3, dtype=F64), g) for _ in range(3)]
    reloaded = PCGrad(3, seed=1)
    reloaded.load_state_dict(b.state_dict())
    seq_b += [reloaded(torch.ones(3, dtype=F64), g) for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(seq_a, seq_b, strict=True))
    seq_c = [c(torch.ones(3, dtype=F64), g) for _ in range(6)]
    assert any(not torch.equal(x, y) for x, y in zip(seq_a, seq_c, strict=True))
    assert int(a.step) == 6


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        (lambda: UPGrad(2, pref_vector=(1.0,)), "pref_vector="),
        (lambda: UPGrad(2, pref_vector=(1.0, -1.0)), ">= 0"),
        (lambda: DualProj(2, pref_vector=(0.0, 0.0)), "all zero"),
        (lambda: UPGrad(2, reg_eps=-1.0), "reg_eps=-1.0"),
        (lambda: DualProj(2, norm_eps=math.nan), "norm_eps=nan"),
        (lambda: CAGrad(2, c=-0.1), "c=-0.1"),
        (lambda: CAGrad(2, rescale=3), "rescale=3"),
        (lambda: PCGrad(2, seed=-1), "seed=-1"),
        (lambda: NormalizeGradients(2, mode="l1"), "mode='l1'"),
        (lambda: IMTL(2, init=math.inf), "init=inf"),
    ],
)
def test_validation_messages(factory, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        factory()


def test_restricting_a_preference_vector_is_refused() -> None:
    with pytest.raises(ValueError, match="pref_vector=None"):
        UPGrad(3, pref_vector=(1.0, 2.0, 3.0)).for_tasks(2)
    assert UPGrad(3).for_tasks(2).num_tasks == 2


def test_loss_normalisation_refuses_negative_losses() -> None:
    with pytest.raises(ValueError, match="negative"):
        NormalizeGradients(2, mode="loss")(t(-1.0, 2.0))
    d = NormalizeGradients(2, mode="loss")(t(0.0, 2.0))  # floored, finite
    assert bool(torch.isfinite(d).all())


def test_imtlg_pseudo_inverse_path() -> None:
    # dependent gradients (rank 2 among 4): the weights are pinv(G) d / Σ pinv(G) d
    gen = torch.Generator().manual_seed(2)
    jac = torch.randn(4, 2, generator=gen, dtype=F64) @ torch.randn(2, 7, generator=gen, dtype=F64)
    g = jac @ jac.T
    v = torch.linalg.pinv(g, hermitian=True) @ g.diagonal().sqrt()
    close(imtlg_weights(g), v / v.sum(), tol=1e-8)
    # float32 input: the rank is decided at float32 precision, the answer stays close
    close(imtlg_weights(g.float()), v / v.sum(), tol=1e-3)
