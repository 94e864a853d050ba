"""The batched active-set QP solver behind MGDA, UPGrad, DualProj and CAGrad, against quadprog/scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from multitask.weighting import _qp
from multitask.weighting._qp import (
    min_norm_weights,
    project_dual_cone,
    solve_nonneg_qp,
    solve_simplex_qp,
)

quadprog = pytest.importorskip("quadprog")


def random_gramian(t: int, dim: int, seed: int, *, scales: tuple[float, float] | None = None) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(t, dim, generator=gen, dtype=torch.float64)
    if scales is not None:
        jac = jac * torch.logspace(np.log10(scales[0]), np.log10(scales[1]), t, dtype=torch.float64).unsqueeze(1)
    return jac @ jac.T


def ref_nonneg(h: np.ndarray, q: np.ndarray) -> np.ndarray:
    """quadprog: min ½xᵀHx + qᵀx s.t. x >= 0 (a tiny ridge makes H positive definite)."""
    t = h.shape[0]
    ridge = 1e-12 * max(np.trace(h) / t, 1e-300)
    return np.asarray(quadprog.solve_qp(h + ridge * np.eye(t), -q, np.eye(t), np.zeros(t))[0])


def ref_simplex(h: np.ndarray, q: np.ndarray) -> np.ndarray:
    t = h.shape[0]
    ridge = 1e-12 * max(np.trace(h) / t, 1e-300)
    cons = np.hstack([np.ones((t, 1)), np.eye(t)])
    rhs = np.concatenate([[1.0], np.zeros(t)])
    x = np.clip(np.asarray(quadprog.solve_qp(h + ridge * np.eye(t), -q, cons, rhs, meq=1)[0]), 0.0, None)
    return np.asarray(x / x.sum())  # quadprog's equality can be off by 1e-3 on singular H


def objective(h: Tensor, q: Tensor, x: Tensor) -> Tensor:
    return 0.5 * ((x @ h) * x).sum(-1) + (q * x).sum(-1)


CASES = [(t, dim) for t in (2, 3, 5, 8, 16) for dim in (2, 4, 50)]


@pytest.mark.parametrize(("t", "dim"), CASES)
def test_nonneg_qp_matches_quadprog(t: int, dim: int) -> None:
    # random PSD H (singular when dim < t) and a linear term in its range (q = H c), as for the dual cone
    seeds = range(4)
    hs = torch.stack([random_gramian(t, dim, s) for s in seeds])
    gen = torch.Generator().manual_seed(t * 100 + dim)
    qs = (hs @ torch.randn(len(seeds), t, 1, generator=gen, dtype=torch.float64)).squeeze(2)
    res = solve_nonneg_qp(hs, qs)
    assert bool(res.converged.all())
    assert res.iterations <= t + 6
    assert bool((res.x >= 0).all())
    for i in range(len(seeds)):
        ref = torch.from_numpy(ref_nonneg(hs[i].numpy(), qs[i].numpy()))
        f, f_ref = objective(hs[i], qs[i], res.x[i]), objective(hs[i], qs[i], ref.clamp_min(0))
        scale = float(hs[i].diagonal().sum()) * float(1 + ref.abs().max()) ** 2
        assert float(f) <= float(f_ref) + 1e-10 * scale


@pytest.mark.parametrize(("t", "dim"), CASES)
def test_simplex_qp_matches_quadprog(t: int, dim: int) -> None:
    # q = H c + μ 1: in the range of H up to a constant (which only shifts the objective on Δ)
    hs = torch.stack([random_gramian(t, dim, s) for s in range(4)])
    gen = torch.Generator().manual_seed(t * 7 + dim)
    qs = (hs @ torch.randn(4, t, 1, generator=gen, dtype=torch.float64)).squeeze(2)
    qs = qs + torch.randn(4, 1, generator=gen, dtype=torch.float64)
    qs[0] = 0.0  # the min-norm point itself
    res = solve_simplex_qp(hs, qs)
    assert bool(res.converged.all())
    torch.testing.assert_close(res.x.sum(dim=1), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert bool((res.x >= 0).all())
    for i in range(4):
        ref = torch.from_numpy(ref_simplex(hs[i].numpy(), qs[i].numpy()))
        f, f_ref = objective(hs[i], qs[i], res.x[i]), objective(hs[i], qs[i], ref)
        scale = float(hs[i].diagonal().max()) + float(qs[i].abs().max())
        assert float(f) <= float(f_ref) + 1e-9 * scale
        # the multiplier is the common value of the gradient on the support
        grad = hs[i] @ res.x[i] + qs[i]
        support = res.x[i] > 0
        torch.testing.assert_close(grad[support], res.multiplier[i].expand(int(support.sum())), rtol=1e-8, atol=1e-9)


def test_full_support_needs_one_iteration() -> None:
    # nearly orthogonal gradients: the min-norm point has full support and is found by one solve
    g = random_gramian(8, 2000, 0)
    res = solve_simplex_qp(g.unsqueeze(0))
    assert res.iterations == 1
    assert bool((res.x > 0).all())


def test_min_norm_weights_known_values() -> None:
    # orthonormal gradients: the min-norm point of the simplex of e_1..e_T is the centroid
    torch.testing.assert_close(min_norm_weights(torch.eye(4, dtype=torch.float64)), torch.full((4,), 0.25).double())
    # g1 = (1, 0), g2 = (1, 1): ||(1, 1 - w1)||² is smallest at w1 = 1 (a vertex)
    g = torch.tensor([[1.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(min_norm_weights(g), torch.tensor([1.0, 0.0], dtype=torch.float64))
    # three gradients, T = 3, through the active-set path: g1 = (1, 0), g2 = (0, 1), g3 = (2, 2):
    # g3 is dominated; min-norm of the segment [g1, g2] is its midpoint (0.5, 0.5)
    j = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(min_norm_weights(j @ j.T), torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))


def test_min_norm_weights_batched_and_degenerate() -> None:
    gs = torch.stack([random_gramian(5, 3, s) for s in range(3)] + [torch.zeros(5, 5, dtype=torch.float64)])
    w = min_norm_weights(gs)
    assert w.shape == (4, 5)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(4, dtype=torch.float64))
    # 5 gradients in 3 dimensions: generically 0 is not in their hull, but the value is the min over the hull
    for i in range(3):
        ref = torch.from_numpy(ref_simplex(gs[i].numpy(), np.zeros(5)))
        assert float(w[i] @ gs[i] @ w[i]) <= float(ref @ gs[i] @ ref) + 1e-12 * float(gs[i].diagonal().max())
    torch.testing.assert_close(w[3], torch.full((5,), 0.2, dtype=torch.float64))  # G = 0: uniform


def test_project_dual_cone_kkt_and_reference() -> None:
    for t, dim, scales in [(3, 10, None), (6, 4, None), (8, 30, (1e-4, 1e4)), (16, 100, None)]:
        g = random_gramian(t, dim, t, scales=scales)
        u = torch.eye(t, dtype=torch.float64)
        v = project_dual_cone(g, u)
        n = g.diagonal().sqrt()
        gv = v @ g  # row i: G v_i
        # feasibility v >= u, dual feasibility G v >= 0 and complementarity, each relative to the task norms
        assert bool((v >= u - 1e-14).all())
        norm_v = ((v @ g) * v).sum(1).clamp_min(0).sqrt().unsqueeze(1)
        rel = gv / (n.unsqueeze(0) * norm_v.clamp_min(1e-300))
        assert float(rel.min()) >= -1e-9
        slack = (v - u) * n.unsqueeze(0) / norm_v.clamp_min(1e-300)
        assert float((slack * rel).abs().max()) <= 1e-8
        if scales is None:
            for i in range(t):
                ref = torch.from_numpy(ref_nonneg(g.numpy(), (g @ u[i]).numpy())) + u[i]
                f, f_ref = float(v[i] @ g @ v[i]), float(ref @ g @ ref)
                assert f <= f_ref + 1e-9 * float(g[i, i])


def test_project_dual_cone_single_vector_and_zero_rows() -> None:
    # g1 = (1, 0), g2 = (-1, 1), g3 = 0: the mean (0, 1/3) is already in the dual cone
    j = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    u = torch.full((3,), 1 / 3, dtype=torch.float64)
    torch.testing.assert_close(project_dual_cone(j @ j.T, u), u)
    # projecting g1: (1, 0) -> (1/2, 1/2) = 1·g1 + 1/2·g2; the zero row keeps its bound 0
    v = project_dual_cone(j @ j.T, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(v, torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))


def test_float32_inputs_use_float32_tolerances() -> None:
    # rank-deficient float32 Gramian: the rounding noise must not make the solver chase noise
    gen = torch.Generator().manual_seed(3)
    jac = torch.randn(16, 5, generator=gen) @ torch.randn(5, 40, generator=gen)
    g32 = jac @ jac.T
    res = solve_simplex_qp(g32.unsqueeze(0) / g32.diagonal().max())
    assert res.iterations <= 16 + 6
    w = min_norm_weights(g32)
    g64 = g32.double()
    assert float(w @ g64 @ w) <= 1e-5 * float(g64.diagonal().max())  # 16 > 5 + 1 vectors: 0 is in the hull


def test_warm_started_simplex_solve_reuses_the_state() -> None:
    # the sequence of QPs CAGrad solves: same H, shifting linear term; warm starts give the same answers
    g = random_gramian(6, 20, 1).unsqueeze(0)
    b = (g[0] @ torch.full((6,), 1 / 6, dtype=torch.float64)).unsqueeze(0)
    state = None
    for sigma in (0.0, 0.3, 1.0, 3.0, 0.5):
        warm, state = _qp._solve_simplex(g, sigma * b, max_iter=None, rtol=_qp.RTOL, eps=2.0**-52, state=state)
        cold = solve_simplex_qp(g, sigma * b)
        torch.testing.assert_close(warm.x, cold.x, rtol=1e-9, atol=1e-11)


def test_two_task_projection_matches_the_active_set_solver() -> None:
    # T = 2 has a closed form (four faces); compare with the general solver, including bounds of
    # any sign, opposed (ρ = -1) and identical (ρ = 1) gradients
    gen = torch.Generator().manual_seed(5)
    for rho in (-1.0, -0.7, -0.1, 0.0, 0.4, 1.0):
        c = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)
        lower = torch.randn(16, 2, generator=gen, dtype=torch.float64)
        z = _qp._two_task_projection(c, lower)
        assert bool((z >= lower - 1e-15).all())
        h = c.unsqueeze(0).expand(16, 2, 2)
        ref = solve_nonneg_qp(h, (h @ lower.unsqueeze(2)).squeeze(2)).x + lower
        torch.testing.assert_close(((z @ c) * z).sum(1), ((ref @ c) * ref).sum(1), rtol=1e-12, atol=1e-12)
