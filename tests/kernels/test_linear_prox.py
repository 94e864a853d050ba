"""Proximal operators, penalties and losses of multitask.kernels.linear against hand-derived values,
finite differences and direct formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from multitask.kernels.linear._losses import LogisticLoss, SquaredLoss
from multitask.kernels.linear._prox import (
    ClusteredPenalty,
    MeanRegularizedPenalty,
    cluster_eigenvalues,
    group_soft_threshold_rows,
    singular_value_threshold,
)


def _central_diff(f, W: np.ndarray, h: float = 1e-6) -> np.ndarray:
    G = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        E = np.zeros_like(W)
        E[idx] = h
        G[idx] = (f(W + E) - f(W - E)) / (2 * h)
    return G


def test_singular_value_threshold_hand_values() -> None:
    U = ortho_group.rvs(4, random_state=0)[:, :2]
    V = ortho_group.rvs(3, random_state=1)[:, :2]
    W = U @ np.diag([3.0, 1.0]) @ V.T
    np.testing.assert_allclose(singular_value_threshold(W, 2.0), U @ np.diag([1.0, 0.0]) @ V.T, atol=1e-12)
    np.testing.assert_allclose(singular_value_threshold(W, 0.5), U @ np.diag([2.5, 0.5]) @ V.T, atol=1e-12)
    assert np.all(singular_value_threshold(W, 3.0) == 0.0)


def test_group_soft_threshold_hand_values() -> None:
    W = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0]])
    expected = np.array([[2.4, 3.2], [0.0, 0.0], [0.0, 0.0], [-5.4, 7.2]])
    np.testing.assert_allclose(group_soft_threshold_rows(W, 1.0), expected, atol=1e-15)


@pytest.mark.parametrize(
    ("sigma", "eta", "k", "T", "expected"),
    [
        # both interior: theta = 6/7 solves (2 theta - 1) + (1.5 theta - 1) = 1
        (np.array([2.0, 1.5]), 1.0, 1.0, 2, np.array([5 / 7, 2 / 7])),
        # the second direction stays at 0: g = [1, 0]
        (np.array([3.0, 1.0]), 1.0, 1.0, 2, np.array([1.0, 0.0])),
        # fewer positive singular values than k: the rest of the trace is spread over null directions
        (np.array([2.0, 0.0]), 0.5, 2.0, 3, np.array([1.0, 0.5, 0.5])),
        # k = T: M = I
        (np.array([2.0, 1.0, 0.5]), 0.3, 3.0, 3, np.array([1.0, 1.0, 1.0])),
    ],
)
def test_cluster_eigenvalues_hand_values(sigma, eta, k, T, expected) -> None:
    np.testing.assert_allclose(cluster_eigenvalues(sigma, eta, k, T), expected, atol=1e-14)


def test_cluster_eigenvalues_kkt_on_random_instances() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        T = int(rng.integers(2, 12))
        sigma = np.sort(rng.gamma(1.0, size=T))[::-1]
        eta = float(rng.uniform(0.05, 3.0))
        k = float(rng.uniform(0.2, T - 0.1))
        g = cluster_eigenvalues(sigma, eta, k, T)
        assert abs(g.sum() - k) < 1e-10
        assert g.min() >= 0.0 and g.max() <= 1.0
        # KKT: sigma_i / (eta + g_i) equals one multiplier on the interior, is >= it where g = 1, <= where g = 0
        ratio = sigma / (eta + g)
        interior = (g > 1e-12) & (g < 1 - 1e-12)
        if interior.any():
            nu = ratio[interior].mean()
            np.testing.assert_allclose(ratio[interior], nu, rtol=1e-10)
            assert np.all(ratio[g >= 1 - 1e-12] >= nu - 1e-10)
            assert np.all(ratio[g <= 1e-12] <= nu + 1e-10)
        # and no feasible perturbation improves the objective
        best = np.sum(sigma**2 / (eta + g))
        for _ in range(20):
            d = rng.standard_normal(T)
            d -= d.mean()
            g2 = np.clip(g + 1e-3 * d, 0, 1)
            if abs(g2.sum() - k) < 1e-12:
                assert np.sum(sigma**2 / (eta + g2)) >= best - 1e-12


def test_cluster_eigenvalues_with_round_off_singular_values() -> None:
    """Singular values at round-off level (even subnormal) must not overflow eta / sigma."""
    # found by the real-data benchmark: a round-off singular value used to make the search run off its grid
    g = cluster_eigenvalues(np.array([7.90486308e-02, 4.31637173e-02, 3.74105561e-02, 1.14913597e-17]), 1e-6, 3.0, 160)
    np.testing.assert_allclose(g[:3], 1.0)
    assert abs(g.sum() - 3.0) < 1e-12
    for tiny in (1e-320, 1e-200, 1e-17):
        sigma = np.array([3.0, 2.0, 1.0, 0.5, tiny, tiny / 2])
        g = cluster_eigenvalues(sigma, 0.2, 2.0, 8)
        assert np.all(np.isfinite(g)) and abs(g.sum() - 2.0) < 1e-12
        np.testing.assert_allclose(g[:4], cluster_eigenvalues(sigma[:4], 0.2, 2.0, 8)[:4], atol=1e-12)


def test_cluster_eigenvalues_against_cvxpy() -> None:
    cp = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(1)
    for _ in range(3):
        T = 6
        sigma = np.sort(rng.gamma(1.0, size=T))[::-1]
        eta, k = 0.4, 2.5
        g = cp.Variable(T)
        obj = sum(cp.quad_over_lin(sigma[i], eta + g[i]) for i in range(T))
        prob = cp.Problem(cp.Minimize(obj), [g >= 0, g <= 1, cp.sum(g) == k])
        prob.solve(solver=cp.CLARABEL)
        ours = cluster_eigenvalues(sigma, eta, k, T)
        np.testing.assert_allclose(np.sum(sigma**2 / (eta + ours)), prob.value, rtol=1e-7)


@pytest.mark.parametrize("shape", [(5, 4), (3, 6)])
def test_clustered_penalty_gradient_matches_finite_differences(shape) -> None:
    rng = np.random.default_rng(2)
    W = rng.standard_normal(shape)
    pen = ClusteredPenalty(rho1=0.7, rho2=0.2, k=2.0, n_tasks=shape[1])
    value, grad = pen.smooth(W)
    np.testing.assert_allclose(grad, _central_diff(lambda V: pen.smooth(V)[0], W), rtol=1e-6, atol=1e-8)
    # the value equals c * tr(W (eta I + M)^{-1} W^T) at the reported M
    M = pen.relationship(W)
    eta = 0.2 / 0.7
    direct = 0.7 * eta * (1 + eta) * np.trace(W @ np.linalg.inv(eta * np.eye(shape[1]) + M) @ W.T)
    np.testing.assert_allclose(value, direct, rtol=1e-10)
    evals = np.linalg.eigvalsh(M)
    assert evals.min() > -1e-12 and evals.max() < 1 + 1e-12 and abs(np.trace(M) - 2.0) < 1e-10


def test_clustered_penalty_limits_are_ridge() -> None:
    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 3))
    ridge = ClusteredPenalty(rho1=0.0, rho2=0.3, k=2.0, n_tasks=3).smooth(W)
    np.testing.assert_allclose(ridge[0], 0.3 * np.sum(W**2))
    # k >= T: M = I and the penalty is rho1 eta (1 + eta) / (1 + eta) ||W||^2 = rho2 ||W||^2
    full = ClusteredPenalty(rho1=2.0, rho2=0.3, k=5.0, n_tasks=3).smooth(W)
    np.testing.assert_allclose(full[0], 0.3 * np.sum(W**2), rtol=1e-12)
    np.testing.assert_allclose(full[1], 0.6 * W, rtol=1e-12)


def test_mean_regularized_penalty_value_and_gradient() -> None:
    rng = np.random.default_rng(4)
    W = rng.standard_normal((3, 5))
    pen = MeanRegularizedPenalty(0.4, 0.1)
    value, grad = pen.smooth(W)
    wbar = W.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(value, 0.4 * np.sum((W - wbar) ** 2) + 0.1 * np.sum(W**2))
    np.testing.assert_allclose(grad, _central_diff(lambda V: pen.smooth(V)[0], W), rtol=1e-7, atol=1e-9)


def _masked_problem(seed: int = 5, n: int = 30, d: int = 4, T: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = X @ rng.standard_normal((d, T)) + rng.standard_normal((n, T))
    mask = rng.random((n, T)) > 0.3
    return X, np.where(mask, Y, 0.0), mask


def test_squared_loss_gram_and_dense_agree_and_minimize_intercepts() -> None:
    X, Y, mask = _masked_problem()
    W = np.random.default_rng(6).standard_normal((4, 3))
    gram, dense = SquaredLoss(X, Y, mask, mode="gram"), SquaredLoss(X, Y, mask, mode="dense")
    (vg, gg), (vd, gd) = gram.value_grad(W), dense.value_grad(W)
    np.testing.assert_allclose(vg, vd, rtol=1e-12)
    np.testing.assert_allclose(gg, gd, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gd, _central_diff(dense.value, W), rtol=1e-6, atol=1e-8)
    # value = min over intercepts of the masked loss, and intercept() is that minimizer
    b = dense.intercept(W)
    n = mask.any(axis=1).sum()
    direct = np.sum(mask * (X @ W + b - Y) ** 2) / (2 * n)
    np.testing.assert_allclose(vd, direct, rtol=1e-12)
    for t in range(3):
        r = (X @ W[:, t] - Y[:, t])[mask[:, t]]
        np.testing.assert_allclose(b[t], -r.mean(), rtol=1e-12)
    # Lipschitz estimate: the largest block eigenvalue of the Hessian
    blocks = []
    for t in range(3):
        Xt = X[mask[:, t]] - X[mask[:, t]].mean(axis=0)
        blocks.append(np.linalg.eigvalsh(Xt.T @ Xt / n)[-1])
    assert gram.lipschitz() <= max(blocks) * (1 + 1e-9)
    assert gram.lipschitz() >= 0.9 * max(blocks)


def test_logistic_loss_gradient_matches_finite_differences() -> None:
    X, Y, mask = _masked_problem(seed=7)
    Yb = (Y > 0).astype(float) * mask
    loss = LogisticLoss(X, Yb, mask)
    V = np.random.default_rng(8).standard_normal(loss.var_shape) * 0.3
    value, grad = loss.value_grad(V)
    np.testing.assert_allclose(grad, _central_diff(loss.value, V), rtol=1e-6, atol=1e-9)
    # V holds W over centred intercepts c_t = b_t + mu_t . w_t (mu_t: mean of x over task t's observed rows)
    b = loss.intercept(V)
    mu = np.stack([X[mask[:, t]].mean(axis=0) for t in range(mask.shape[1])], axis=1)
    np.testing.assert_allclose(b, V[-1] - (mu * V[:-1]).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(loss.initial(V[:-1], b), V, rtol=1e-12)
    z = X @ V[:-1] + b
    n = mask.any(axis=1).sum()
    np.testing.assert_allclose(value, np.sum(mask * (np.log1p(np.exp(z)) - Yb * z)) / n, rtol=1e-12)
