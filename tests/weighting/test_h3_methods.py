"""MoDo and SDMGrad: torchjd comparisons, hand-derived reference values, edge cases."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from multitask.weighting import MoDo, SDMGrad, create_weighting
from multitask.weighting._qp import project_onto_simplex, simplex_projection

D = torch.float64


def t(*values: float) -> Tensor:
    return torch.tensor(values, dtype=D)


def close(actual: Tensor, expected: Tensor, tol: float = 1e-12) -> None:
    torch.testing.assert_close(actual.to(D), expected.to(D), rtol=tol, atol=tol)


def cosine(a: Tensor, b: Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def jacobian_sequence(case: str, n: int, seed: int = 0, p: int = 20) -> list[Tensor]:
    """``n`` Jacobians of one kind: random, rank-deficient, opposed or badly scaled (float64)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        r = torch.randn(4, p, generator=gen, dtype=D)
        if case == "random":
            out.append(r[:3])
        elif case == "rank_deficient":
            out.append(torch.stack([r[0], r[1], r[0] + 2 * r[1], r[1] - r[0]]))
        elif case == "opposed":
            out.append(torch.stack([r[0], -r[0], r[2]]))
        else:  # badly scaled
            out.append(r * t(1e-4, 1e-1, 1e2, 1e4)[:, None])
    return out


CASES = ["random", "rank_deficient", "opposed", "badly_scaled"]


# --- the simplex projection ----------------------------------------------------------------


def test_simplex_projection() -> None:
    # (0.4875, 0.45): θ = (0.9375 - 1)/2 = -0.03125 -> (0.51875, 0.48125); (3, 0, -1): θ = 2 -> (1, 0, 0);
    # (0.2, 0.3, 0.5) is already on the simplex.
    close(project_onto_simplex(t(0.4875, 0.45)), t(0.51875, 0.48125))
    close(project_onto_simplex(t(3.0, 0.0, -1.0)), t(1.0, 0.0, 0.0))
    close(project_onto_simplex(t(0.2, 0.3, 0.5)), t(0.2, 0.3, 0.5))
    # huge entries (a huge step) still give a point of the simplex
    out = simplex_projection([-1e30, -1e30 + 2e14, -3e30])
    assert out == [0.0, 1.0, 0.0]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = 10 * torch.randn(6, generator=gen, dtype=D)
        x = project_onto_simplex(v)
        assert float(x.min()) >= 0 and abs(float(x.sum()) - 1) < 1e-12
        # optimality (KKT): v - x is constant on the support and not larger off it
        r = v - x
        support = x > 0
        assert float(r[support].max() - r[support].min()) < 1e-9
        if bool((~support).any()):
            assert float(r[~support].max()) <= float(r[support].min()) + 1e-9


# --- MoDo ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_modo_matches_torchjd(case: str) -> None:
    # Same weights along a sequence of calls (so the same state), hence the same update Jᵀλ.
    tj = pytest.importorskip("torchjd.aggregation")
    jacs = jacobian_sequence(case, 5)
    ours, reference = MoDo(jacs[0].shape[0]), tj.MoDoWeighting()
    for jac in jacs:
        g = jac @ jac.T
        w, w_ref = ours(torch.ones(jac.shape[0], dtype=D), g), reference(g)
        close(w, w_ref, tol=1e-10)
        update, update_ref = jac.T @ w, jac.T @ w_ref
        assert cosine(update, update_ref) >= 0.9999


def test_modo_accepts_a_cross_batch_matrix_like_torchjd() -> None:
    # the paper's A = J₁J₂ᵀ from two independent batches (not symmetric)
    tj = pytest.importorskip("torchjd.aggregation")
    gen = torch.Generator().manual_seed(3)
    ours, reference = MoDo(3, gamma=0.05, rho=0.0), tj.MoDoWeighting(gamma=0.05, rho=0.0)
    for _ in range(4):
        j1, j2 = torch.randn(3, 10, generator=gen, dtype=D), torch.randn(3, 10, generator=gen, dtype=D)
        close(ours(torch.ones(3, dtype=D), j1 @ j2.T), reference(j1 @ j2.T), tol=1e-10)


def test_modo_reference_values() -> None:
    # G = diag(1, 4), gamma = rho = 0.1, λ = (½, ½): step = Gλ + ρλ = (0.55, 2.05);
    # λ - 0.1·step = (0.445, 0.295), sum 0.74, θ = (0.74 - 1)/2 = -0.13 -> λ = (0.575, 0.425).
    modo = MoDo(2)
    close(modo(t(1.0, 1.0), torch.diag(t(1.0, 4.0))), t(0.575, 0.425))
    close(modo.task_weights, t(0.575, 0.425))


def test_modo_edge_cases() -> None:
    ones = torch.ones(2, dtype=D)
    close(MoDo(1)(t(1.0), torch.ones(1, 1)), t(1.0))  # T = 1
    close(MoDo(2)(ones, torch.zeros(2, 2)), t(0.5, 0.5))  # zero Gramian: stays uniform
    close(MoDo(2)(ones, torch.ones(2, 2)), t(0.5, 0.5))  # identical gradients
    close(MoDo(2)(ones, t(1.0, -1.0, -1.0, 1.0).view(2, 2)), t(0.5, 0.5))  # opposed: Gλ = 0
    # repeated calls on a constant Gramian reach MGDA's min-norm weights (rho = 0):
    # g1 = (1, 0), g2 = (0, 2): λ1·1 = λ2·4 -> (0.8, 0.2); a zero gradient takes all the weight
    modo = MoDo(2, rho=0.0)
    for _ in range(200):
        w = modo(ones, torch.diag(t(1.0, 4.0)))
    close(w, t(0.8, 0.2), tol=1e-9)
    modo = MoDo(2, gamma=1.0, rho=0.0)
    for _ in range(80):
        w = modo(ones, torch.diag(t(1.0, 0.0)))
    close(w, t(0.0, 1.0))
    assert torch.isfinite(MoDo(2)(ones, torch.full((2, 2), float("inf")))).all()


def test_modo_validation() -> None:
    with pytest.raises(ValueError, match="gamma=0"):
        MoDo(2, gamma=0)
    with pytest.raises(ValueError, match="rho=-1"):
        MoDo(2, rho=-1)
    assert isinstance(create_weighting("modo", 3, gamma=0.01), MoDo)


# --- SDMGrad -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_sdmgrad_matches_torchjd(case: str) -> None:
    # torchjd normalises by (mean_t sqrt(A_tt))² + 1e-8, this class without the 1e-8: with
    # gradients of norm ~1e4 the difference is ~1e-16 relative, so the weights agree along the
    # whole sequence (the warm-started inner weights included).
    tj = pytest.importorskip("torchjd.aggregation")
    jacs = [1e4 * j for j in jacobian_sequence(case, 5, seed=1)]
    ours, reference = SDMGrad(jacs[0].shape[0]), tj.SDMGradWeighting()
    for jac in jacs:
        g = jac @ jac.T
        w, w_ref = ours(torch.ones(jac.shape[0], dtype=D), g), reference(g)
        close(w, w_ref, tol=1e-8)
        assert cosine(jac.T @ w, jac.T @ w_ref) >= 0.9999


@pytest.mark.parametrize(("lr", "momentum", "n_iter", "lambda_"), [(5.0, 0.0, 3, 0.0), (1.0, 0.9, 50, 2.0)])
def test_sdmgrad_matches_torchjd_with_other_hyperparameters(
    lr: float, momentum: float, n_iter: int, lambda_: float
) -> None:
    tj = pytest.importorskip("torchjd.aggregation")
    params = {"lr": lr, "momentum": momentum, "n_iter": n_iter, "lambda_": lambda_}
    ours, reference = SDMGrad(3, **params), tj.SDMGradWeighting(**params)  # type: ignore[arg-type]
    for jac in jacobian_sequence("random", 4, seed=2):
        g = 1e4 * jac @ jac.T * 1e4
        close(ours(torch.ones(3, dtype=D), g), reference(g), tol=1e-8)


def test_sdmgrad_reference_values() -> None:
    # One inner step, no momentum: G = diag(1, 4), s = mean(1, 2) = 1.5, Â = diag(4/9, 16/9).
    # λ = 0.3, w = (½, ½): gradient Â(w + λ/2) = Â·(0.65, 0.65) = (26/90, 104/90);
    # w - 0.1·gradient = (0.5 - 26/900, 0.5 - 104/900), sum 1 - 130/900, θ = -65/900
    # -> w = (0.5 + 39/900, 0.5 - 39/900); output (w + 0.15)/1.3.
    sdm = SDMGrad(2, lr=0.1, momentum=0.0, n_iter=1)
    w = t(0.5 + 39 / 900, 0.5 - 39 / 900)
    close(sdm(t(1.0, 1.0), torch.diag(t(1.0, 4.0))), (w + 0.15) / 1.3)
    close(sdm.inner_weights, w)


def test_sdmgrad_limits_and_edge_cases() -> None:
    ones = torch.ones(2, dtype=D)
    g = torch.diag(t(1.0, 4.0))
    # lambda_ = 0: MGDA's min-norm weights (0.8, 0.2) once the inner iteration has converged
    sdm = SDMGrad(2, lambda_=0.0, lr=0.5, momentum=0.0, n_iter=200)
    close(sdm(ones, g), t(0.8, 0.2), tol=1e-9)
    # a huge lambda_: the mean
    close(SDMGrad(2, lambda_=1e9)(ones, g), t(0.5, 0.5), tol=1e-8)
    close(SDMGrad(1)(t(1.0), torch.ones(1, 1)), t(1.0))  # T = 1
    close(SDMGrad(2)(ones, torch.zeros(2, 2)), t(0.5, 0.5))  # zero Gramian: uniform, w unchanged
    close(SDMGrad(2)(ones, torch.ones(2, 2)), t(0.5, 0.5))  # identical gradients
    # scale-free: the same weights at any Gramian scale, including tiny ones (torchjd's +1e-8 is not)
    close(SDMGrad(2)(ones, 1e-12 * g), SDMGrad(2)(ones, g), tol=1e-12)


def test_sdmgrad_validation() -> None:
    with pytest.raises(ValueError, match="lr=0"):
        SDMGrad(2, lr=0)
    with pytest.raises(ValueError, match="momentum=1"):
        SDMGrad(2, momentum=1.0)
    with pytest.raises(ValueError, match="n_iter=0"):
        SDMGrad(2, n_iter=0)
    with pytest.raises(ValueError, match="lambda_=-1"):
        SDMGrad(2, lambda_=-1)
    assert isinstance(create_weighting("sdmgrad", 3, lambda_=0.6), SDMGrad)
