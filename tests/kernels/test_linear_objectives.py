"""Every regularized objective of multitask.kernels.linear against a generic convex solver (cvxpy), with
missing outputs, and against scikit-learn where it solves the same problem."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import MultiTaskLasso, Ridge

from multitask.kernels.linear import (
    ClusteredClassifier,
    ClusteredRegressor,
    L21Classifier,
    L21Regressor,
    MeanRegularizedClassifier,
    MeanRegularizedRegressor,
    TraceNormClassifier,
    TraceNormRegressor,
)

TIGHT = {"tol": 1e-11, "max_iter": 200_000}
RTOL = 1e-6


def _problem(classification: bool, seed: int = 0, n: int = 40, d: int = 5, T: int = 4, missing: float = 0.25):
    """Correlated tasks with ~25% missing outputs (NaN)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((d, 2)) @ rng.standard_normal((2, T)) + 0.3 * rng.standard_normal((d, T))
    Z = X @ W + 0.5 * rng.standard_normal((n, T)) + rng.standard_normal(T)
    Y = (Z > 0).astype(float) if classification else Z
    mask = rng.random((n, T)) > missing
    mask[:2] = True  # both classes stay observed in every task
    if classification:
        Y[0], Y[1] = 0.0, 1.0
    return X, np.where(mask, Y, np.nan), mask


def _cvx_fit_term(cp, X, Y, mask, classification, W, b):
    n = mask.any(axis=1).sum()
    Z = X @ W + np.ones((X.shape[0], 1)) @ cp.reshape(b, (1, Y.shape[1]), order="C")
    M = mask.astype(float)
    Y0 = np.where(mask, Y, 0.0)
    if classification:
        return cp.sum(cp.multiply(M, cp.logistic(Z) - cp.multiply(Y0, Z))) / n
    return cp.sum_squares(cp.multiply(M, Z - Y0)) / (2 * n)


def _np_fit_term(X, Y, mask, classification, W, b):
    n = mask.any(axis=1).sum()
    Z = X @ W + b
    Y0 = np.where(mask, Y, 0.0)
    if classification:
        return np.sum(mask * (np.logaddexp(0, Z) - Y0 * Z)) / n
    return np.sum(mask * (Z - Y0) ** 2) / (2 * n)


def _penalty(cp, kind, W, T, params):
    """The penalty as a cvxpy expression plus constraints (clustered: M is a variable of the SDP)."""
    if kind == "trace":
        return params["alpha"] * cp.normNuc(W), []
    if kind == "l21":
        return params["alpha"] * cp.sum(cp.norm(W, 2, axis=1)), []
    if kind == "mean":
        wbar = cp.sum(W, axis=1, keepdims=True) / T
        return params["alpha"] * cp.sum_squares(W - wbar @ np.ones((1, T))) + params["ridge"] * cp.sum_squares(W), []
    rho1, rho2, k = params["alpha"], params["ridge"], params["n_clusters"]
    eta = rho2 / rho1
    M = cp.Variable((T, T), symmetric=True)
    cons = [M >> 0, np.eye(T) - M >> 0, cp.trace(M) == k]
    return rho1 * eta * (1 + eta) * cp.matrix_frac(W.T, eta * np.eye(T) + M), cons


def _cvx_optimum(kind, classification, X, Y, mask, params, W_fixed=None, b_fixed=None) -> float:
    """Optimal value; with ``W_fixed``/``b_fixed`` the objective at that point (minimizing only over M)."""
    cp = pytest.importorskip("cvxpy")
    d, T = X.shape[1], Y.shape[1]
    W = cp.Variable((d, T)) if W_fixed is None else cp.Constant(W_fixed)
    b = cp.Variable(T) if b_fixed is None else cp.Constant(b_fixed)
    pen, cons = _penalty(cp, kind, W, T, params)
    if W_fixed is not None and not cons:  # nothing to optimize
        return float((_cvx_fit_term(cp, X, Y, mask, classification, W, b) + pen).value)
    prob = cp.Problem(cp.Minimize(_cvx_fit_term(cp, X, Y, mask, classification, W, b) + pen), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9)
    assert prob.status == "optimal", prob.status
    return float(prob.value)


CASES = [
    ("trace", TraceNormRegressor, {"alpha": 0.3}),
    ("l21", L21Regressor, {"alpha": 0.2}),
    ("mean", MeanRegularizedRegressor, {"alpha": 0.5, "ridge": 0.05}),
    ("mean", MeanRegularizedRegressor, {"alpha": 0.5, "ridge": 0.05, "solver": "apg"}),
    ("clustered", ClusteredRegressor, {"alpha": 0.8, "ridge": 0.1, "n_clusters": 2}),
    ("trace", TraceNormClassifier, {"alpha": 0.03}),
    ("l21", L21Classifier, {"alpha": 0.02}),
    ("mean", MeanRegularizedClassifier, {"alpha": 0.05, "ridge": 0.01}),
    ("clustered", ClusteredClassifier, {"alpha": 0.1, "ridge": 0.02, "n_clusters": 2}),
]


@pytest.mark.parametrize(("kind", "Est", "params"), CASES, ids=lambda c: getattr(c, "__name__", None))
def test_objective_equals_cvxpy_optimum_with_missing_outputs(kind, Est, params) -> None:
    classification = "Classifier" in Est.__name__
    X, Y, mask = _problem(classification)
    est = Est(**params, **TIGHT).fit(X, Y)
    W, b = est.coef_.T, est.intercept_
    pen_params = {k: v for k, v in params.items() if k != "solver"}
    optimum = _cvx_optimum(kind, classification, X, Y, mask, pen_params)
    # our objective, evaluated by cvxpy at our (W, b); for the clustered penalty that is itself an SDP in M
    ours = _cvx_optimum(kind, classification, X, Y, mask, pen_params, W_fixed=W, b_fixed=b)
    if kind != "clustered":  # and by an independent numpy formula
        np.testing.assert_allclose(ours, _np_fit_term(X, Y, mask, classification, W, b) + _np_penalty(kind, W, params))
    assert ours >= optimum * (1 - 1e-8)
    np.testing.assert_allclose(ours, optimum, rtol=RTOL)


def _np_penalty(kind, W, params) -> float:
    if kind == "trace":
        return params["alpha"] * np.linalg.svd(W, compute_uv=False).sum()
    if kind == "l21":
        return params["alpha"] * np.linalg.norm(W, axis=1).sum()
    wbar = W.mean(axis=1, keepdims=True)
    return params["alpha"] * np.sum((W - wbar) ** 2) + params["ridge"] * np.sum(W**2)


@pytest.mark.parametrize("alpha", [0.02, 0.2, 0.6])
def test_l21_equals_sklearn_multitask_lasso(alpha) -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 8)) * rng.uniform(0.5, 2.0, 8) + 1.0
    W = np.zeros((8, 3))
    W[:3] = rng.standard_normal((3, 3))
    Y = X @ W + 0.3 * rng.standard_normal((50, 3)) + np.array([1.0, -2.0, 0.5])
    ours = L21Regressor(alpha=alpha, **TIGHT).fit(X, Y)
    ref = MultiTaskLasso(alpha=alpha, tol=1e-14, max_iter=1_000_000).fit(X, Y)
    scale = np.abs(ref.coef_).max()
    assert scale > 0
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=RTOL, atol=RTOL * scale)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=RTOL, atol=RTOL * np.abs(ref.intercept_).max())
    np.testing.assert_array_equal(ours.coef_ == 0, np.abs(ref.coef_) < 1e-12)  # same zero features


def test_mean_regularized_without_coupling_is_ridge_per_task_on_observed_rows() -> None:
    X, Y, mask = _problem(False, seed=2)
    ridge = 0.07
    est = MeanRegularizedRegressor(alpha=0.0, ridge=ridge).fit(X, Y)
    n = mask.any(axis=1).sum()
    for t in range(Y.shape[1]):
        ref = Ridge(alpha=2 * n * ridge).fit(X[mask[:, t]], Y[mask[:, t], t])  # (1/2n)||.||^2 + r||w||^2
        np.testing.assert_allclose(est.coef_[t], ref.coef_, rtol=1e-10)
        np.testing.assert_allclose(est.intercept_[t], ref.intercept_, rtol=1e-10)


def test_mean_regularized_closed_form_equals_apg_and_strong_coupling_shares_w() -> None:
    X, Y, _ = _problem(False, seed=3)
    cf = MeanRegularizedRegressor(alpha=0.3, ridge=0.01, solver="closed_form").fit(X, Y)
    apg = MeanRegularizedRegressor(alpha=0.3, ridge=0.01, solver="apg", **TIGHT).fit(X, Y)
    assert cf.solver_ == "closed_form" and apg.solver_ == "apg"
    np.testing.assert_allclose(cf.coef_, apg.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(cf.intercept_, apg.intercept_, rtol=1e-7, atol=1e-9)
    shared = MeanRegularizedRegressor(alpha=1e8, ridge=0.01).fit(X, Y).coef_
    np.testing.assert_allclose(shared, np.broadcast_to(shared.mean(axis=0), shared.shape), atol=1e-6)


def test_clustered_reduces_to_ridge() -> None:
    X, Y, _ = _problem(False, seed=4)
    ridge = MeanRegularizedRegressor(alpha=0.0, ridge=0.05).fit(X, Y).coef_
    no_cluster = ClusteredRegressor(alpha=0.0, ridge=0.05, **TIGHT).fit(X, Y).coef_
    all_own = ClusteredRegressor(alpha=3.0, ridge=0.05, n_clusters=10, **TIGHT).fit(X, Y).coef_
    np.testing.assert_allclose(no_cluster, ridge, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(all_own, ridge, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("Est", [TraceNormRegressor, L21Regressor, TraceNormClassifier, L21Classifier])
def test_alpha_max_is_the_smallest_all_zero_alpha(Est) -> None:
    classification = "Classifier" in Est.__name__
    X, Y, _ = _problem(classification, seed=5)
    amax = Est().alpha_max(X, Y)
    assert np.all(Est(alpha=amax * (1 + 1e-6), **TIGHT).fit(X, Y).coef_ == 0.0)
    assert np.any(Est(alpha=amax * 0.95, **TIGHT).fit(X, Y).coef_ != 0.0)


def test_rows_with_every_output_missing_change_nothing() -> None:
    X, Y, _ = _problem(False, seed=6)
    X2 = np.vstack((X, np.random.default_rng(0).standard_normal((7, X.shape[1]))))
    Y2 = np.vstack((Y, np.full((7, Y.shape[1]), np.nan)))
    for Est in (TraceNormRegressor, ClusteredRegressor, MeanRegularizedRegressor):
        a = Est(**TIGHT).fit(X, Y) if Est is not MeanRegularizedRegressor else Est().fit(X, Y)
        b = Est(**TIGHT).fit(X2, Y2) if Est is not MeanRegularizedRegressor else Est().fit(X2, Y2)
        np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-8, atol=1e-10)
    # one task with NaN rows = the same task with those rows dropped
    y = Y[:, 0]
    keep = ~np.isnan(y)
    a = L21Regressor(alpha=0.1, **TIGHT).fit(X, y)
    b = L21Regressor(alpha=0.1, **TIGHT).fit(X[keep], y[keep])
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-8, atol=1e-10)
