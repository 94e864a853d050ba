"""MultiTaskKernelRidge: fast solvers against dense solves, learned B against cvxpy, errors, README example."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.kernel_ridge import KernelRidge
from threadpoolctl import threadpool_limits

from multitask.kernels import MultiTaskKernelRidge
from multitask.kernels._kernels import kernel_matrix
from multitask.kernels._kron import kron_eig, nearest_kronecker

Array = NDArray[np.float64]
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


def _data(n: int = 40, d: int = 3, T: int = 4, seed: int = 0, missing: float = 0.0) -> tuple[Array, Array, Array]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = np.sin(X @ rng.standard_normal((d, T))) + 0.1 * rng.standard_normal((n, T))
    if missing:
        M = rng.random((n, T)) < missing
        M[0] = False  # every task keeps an observation
        Y[M] = np.nan
    A = rng.standard_normal((T, T))
    return X, Y, A @ A.T / T + 0.1 * np.eye(T)


def _rel(a: Array, b: Array) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ---------------------------------------------------------------- exact solvers
@pytest.mark.parametrize("task_kernel", ["identity", "B"])
def test_kronecker_solve_equals_dense_solve(task_kernel: str) -> None:
    X, Y, B = _data()
    tk: str | Array = B if task_kernel == "B" else "identity"
    fast = MultiTaskKernelRidge(alpha=0.05, task_kernel=tk, solver="kronecker").fit(X, Y)
    dense = MultiTaskKernelRidge(alpha=0.05, task_kernel=tk, solver="dense").fit(X, Y)
    assert fast.solver_ == "kronecker"
    assert _rel(fast.dual_coef_, dense.dual_coef_) < 1e-8
    # and against the textbook (nT) x (nT) system
    K = kernel_matrix("rbf", X, X, np.ones(3))
    Bm = B if task_kernel == "B" else np.eye(4)
    c = np.linalg.solve(np.kron(K, Bm) + 0.05 * np.eye(K.shape[0] * 4), Y.ravel())
    assert _rel(fast.dual_coef_.ravel(), c) < 1e-8


@pytest.mark.parametrize("alpha", [1.0, 1e-2, 1e-4])
@pytest.mark.parametrize("missing", [0.1, 0.5, 0.9])
def test_cg_with_missing_outputs_equals_dense_masked_solve(alpha: float, missing: float) -> None:
    X, Y, B = _data(n=50, missing=missing, seed=1)
    cg = MultiTaskKernelRidge(alpha=alpha, task_kernel=B, solver="auto").fit(X, Y)
    dense = MultiTaskKernelRidge(alpha=alpha, task_kernel=B, solver="dense").fit(X, Y)
    assert cg.solver_ == "cg" and cg.cg_iter_ > 0
    assert _rel(cg.dual_coef_, dense.dual_coef_) < 1e-8
    assert np.all(cg.dual_coef_[np.isnan(Y)] == 0.0)  # no coefficient on a missing output
    Xq = np.random.default_rng(2).standard_normal((7, 3))
    assert _rel(cg.predict(Xq), dense.predict(Xq)) < 1e-8


@pytest.mark.parametrize("missing", [0.0, 0.4])
def test_sum_of_separable_kernels_equals_dense_solve(missing: float) -> None:
    X, Y, B = _data(missing=missing, seed=3)
    comps = [("rbf", 1.0, B), ("matern32", [0.5, 1.0, 2.0], "identity"), ("matern12", 3.0, np.ones((4, 4)))]
    fast = MultiTaskKernelRidge(alpha=0.01, components=comps).fit(X, Y)
    dense = MultiTaskKernelRidge(alpha=0.01, components=comps, solver="dense").fit(X, Y)
    assert fast.solver_ == "cg"
    assert _rel(fast.dual_coef_, dense.dual_coef_) < 1e-8
    # against the explicit sum of Kronecker products on the observed outputs
    obs = ~np.isnan(Y).ravel()
    Ks = [kernel_matrix(k, X, X, np.broadcast_to(np.asarray(ls, float), (3,))) for k, ls, _ in comps]
    Bs = [B, np.eye(4), np.ones((4, 4))]
    A = sum(np.kron(K, b) for K, b in zip(Ks, Bs, strict=True))[np.ix_(obs, obs)]
    c = np.linalg.solve(A + 0.01 * np.eye(int(obs.sum())), Y.ravel()[obs])
    assert _rel(fast.dual_coef_.ravel()[obs], c) < 1e-8


def test_identity_task_kernel_is_independent_kernel_ridge_even_with_missing_outputs() -> None:
    X, Y, _ = _data(missing=0.3, seed=4)
    ls = 1.3
    model = MultiTaskKernelRidge(alpha=0.2, lengthscale=ls, task_kernel="identity").fit(X, Y)
    Xq = np.random.default_rng(5).standard_normal((6, 3))
    pred = model.predict(Xq)
    for t in range(Y.shape[1]):
        obs = ~np.isnan(Y[:, t])
        ref = KernelRidge(alpha=0.2, kernel="rbf", gamma=1 / (2 * ls**2)).fit(X[obs], Y[obs, t]).predict(Xq)
        assert _rel(pred[:, t], ref) < 1e-8


def test_nearest_kronecker_is_the_leading_singular_pair_of_the_rearrangement() -> None:
    rng = np.random.default_rng(6)
    n, T = 5, 3
    Ks = [(lambda A: A @ A.T)(rng.standard_normal((n, n))) for _ in range(3)]
    Bs = [(lambda A: A @ A.T)(rng.standard_normal((T, T))) for _ in range(3)]
    Kt, Bt = nearest_kronecker(Ks, Bs)
    R = sum(np.outer(K.ravel(), B.ravel()) for K, B in zip(Ks, Bs, strict=True))
    U, s, Vt = np.linalg.svd(R)
    best = s[0] * np.outer(U[:, 0], Vt[0])
    assert _rel(np.outer(Kt.ravel(), Bt.ravel()), best) < 1e-10
    assert np.linalg.eigvalsh(Kt).min() > -1e-10 and np.linalg.eigvalsh(Bt).min() > -1e-10
    one = nearest_kronecker(Ks[:1], Bs[:1])
    assert one[0] is Ks[0] and one[1] is Bs[0]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 25),
    T=st.integers(1, 5),
    alpha=st.floats(1e-3, 10.0),
    seed=st.integers(0, 10_000),
)
def test_kronecker_solve_property(n: int, T: int, alpha: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    K = kernel_matrix("matern52", X, X, np.array([0.7, 1.5]))
    A = rng.standard_normal((T, T))
    B = A @ A.T
    R = rng.standard_normal((n, T))
    C = kron_eig(K, B).solve(R, alpha)
    assert _rel(K @ C @ B + alpha * C, R) < 1e-9


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), missing=st.floats(0.0, 0.8), T=st.integers(1, 4))
def test_cg_missing_property(seed: int, missing: float, T: int) -> None:
    X, Y, B = _data(n=20, T=T, seed=seed, missing=missing)
    cg = MultiTaskKernelRidge(alpha=0.1, task_kernel=B, solver="cg").fit(X, Y)
    dense = MultiTaskKernelRidge(alpha=0.1, task_kernel=B, solver="dense").fit(X, Y)
    assert _rel(cg.dual_coef_, dense.dual_coef_) < 1e-8


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_permuting_tasks_permutes_predictions(seed: int) -> None:
    X, Y, _ = _data(n=25, seed=seed, missing=0.2)
    perm = np.random.default_rng(seed).permutation(Y.shape[1])
    Xq = X[:5] + 0.1
    a = MultiTaskKernelRidge(alpha=0.1).fit(X, Y).predict(Xq)
    b = MultiTaskKernelRidge(alpha=0.1).fit(X, Y[:, perm]).predict(Xq)
    assert _rel(b, a[:, perm]) < 1e-7


# ---------------------------------------------------------------- learned task matrix
def _okl_cvxpy(X: Array, Y: Array, alpha: float, eps: float) -> float:
    """min_V ||P(Y - K^{1/2} V)||² + (alpha/T) ||[V; sqrt(eps) I]||_*²: the learned-B objective, minimized over B."""
    cp = pytest.importorskip("cvxpy")
    n, T = Y.shape
    K = kernel_matrix("rbf", X, X, np.ones(X.shape[1]))
    w, U = np.linalg.eigh(K)
    Kh = (U * np.sqrt(np.maximum(w, 0.0))) @ U.T
    mask = (~np.isnan(Y)).astype(float)
    V = cp.Variable((n, T))
    obj = cp.sum_squares(cp.multiply(mask, np.nan_to_num(Y) - Kh @ V)) + alpha / T * cp.square(
        cp.normNuc(cp.vstack([V, np.sqrt(eps) * np.eye(T)]))
    )
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver="CLARABEL")
    return float(prob.value)


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_learned_task_matrix_reaches_the_convex_optimum(missing: float) -> None:
    X, Y, _ = _data(n=25, d=2, T=3, seed=7, missing=missing)
    alpha, eps = 0.1, 1e-3
    model = MultiTaskKernelRidge(alpha=alpha, task_kernel="free", eps=eps, tol=1e-13, max_iter=2000).fit(X, Y)
    ref = _okl_cvxpy(X, Y, alpha, eps)
    assert abs(model.objective_ - ref) / ref < 1e-6
    B = model.task_kernel_
    assert np.allclose(B, B.T) and np.linalg.eigvalsh(B).min() > 0 and np.isclose(np.trace(B), 3)


def test_low_rank_task_matrix() -> None:
    X, Y, _ = _data(seed=8, missing=0.2)
    model = MultiTaskKernelRidge(alpha=0.1, task_kernel="low_rank", rank=2).fit(X, Y)
    B = model.task_kernel_
    assert np.linalg.matrix_rank(B, tol=1e-9) == 2 and np.isclose(np.trace(B), 4)
    given_B = MultiTaskKernelRidge(alpha=0.1, task_kernel=B, solver="dense").fit(X, Y)
    assert _rel(model.dual_coef_, given_B.dual_coef_) < 1e-8


def test_learned_task_matrix_finds_related_tasks() -> None:
    rng = np.random.default_rng(9)
    X = rng.standard_normal((80, 2))
    f = np.sin(2 * X[:, 0])
    Y = np.c_[f, f, -f, np.cos(3 * X[:, 1])] + 0.05 * rng.standard_normal((80, 4))
    B = MultiTaskKernelRidge(alpha=0.05, task_kernel="free").fit(X, Y).task_kernel_
    corr = B / np.sqrt(np.outer(np.diag(B), np.diag(B)))
    assert corr[0, 1] > 0.8 and corr[0, 2] < -0.8 and abs(corr[0, 3]) < 0.3


# ---------------------------------------------------------------- shapes and errors
def test_one_dimensional_y_predicts_one_dimensional() -> None:
    X, Y, _ = _data(T=1)
    a = MultiTaskKernelRidge(alpha=0.1).fit(X, Y[:, 0])
    b = MultiTaskKernelRidge(alpha=0.1).fit(X, Y)
    assert a.predict(X).shape == (40,) and b.predict(X).shape == (40, 1)
    assert _rel(a.predict(X), b.predict(X)[:, 0]) < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "Xf", "Yf", "match"),
    [
        ({}, lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X), None, "infinity"),
        ({}, None, lambda Y: np.c_[Y[:, :2], np.full(len(Y), np.nan)], r"task\(s\) 2 of Y .* no observed value"),
        ({}, None, lambda Y: Y[:-1], "inconsistent numbers of samples"),
        ({}, None, lambda Y: Y[:, :, None], "1-D .* or 2-D"),
        ({"alpha": 0.0}, None, None, "alpha=0.0 must be a positive"),
        ({"solver": "lu"}, None, None, "solver='lu' is not one of"),
        ({"kernel": "rbff"}, None, None, "kernel='rbff' is not a known kernel"),
        ({"lengthscale": [1.0, -1.0, 1.0]}, None, None, "lengthscale=.* must be a positive"),
        ({"task_kernel": np.diag([1.0, -1.0, 1.0])}, None, lambda Y: Y[:, :3], "not positive semi-definite"),
        ({"task_kernel": np.eye(2)}, None, None, r"task_kernel has shape \(2, 2\) but Y has 4 task"),
        ({"task_kernel": np.triu(np.ones((4, 4)))}, None, None, "not symmetric"),
        ({"task_kernel": "fre"}, None, None, "task_kernel='fre' must be one of"),
        ({"task_kernel": "low_rank", "rank": 5}, None, None, "rank=5 exceeds the number of tasks"),
        ({"solver": "kronecker"}, None, lambda Y: np.where(np.eye(*Y.shape, dtype=bool), np.nan, Y), "every output"),
        ({"components": []}, None, None, "components=.* is empty"),
        ({"components": [("rbf", 1.0, "free")]}, None, None, "must be 'identity' or a PSD array"),
    ],
)
def test_clear_errors(kwargs: dict[str, object], Xf: object, Yf: object, match: str) -> None:
    X, Y, _ = _data()
    X = Xf(X) if callable(Xf) else X
    Y = Yf(Y) if callable(Yf) else Y
    with pytest.raises(ValueError, match=match):
        MultiTaskKernelRidge(**kwargs).fit(X, Y)  # type: ignore[arg-type]


def test_predict_checks_features() -> None:
    X, Y, _ = _data()
    model = MultiTaskKernelRidge().fit(X, Y)
    with pytest.raises(ValueError, match="3 features"):
        model.predict(X[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((2, 3), np.nan))


def test_readme_kernel_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "multitask.kernels" in b]
    assert blocks, "README has no kernel example"
    assert len(blocks[0].strip().splitlines()) <= 15
    exec(compile(blocks[0], "README.md", "exec"), {})
    assert "R²" in capsys.readouterr().out


def test_unconverged_learned_task_matrix_still_matches_its_coefficients() -> None:
    X, Y, _ = _data(seed=10)
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        model = MultiTaskKernelRidge(alpha=0.1, task_kernel="free", max_iter=2, tol=1e-15).fit(X, Y)
    fixed = MultiTaskKernelRidge(alpha=0.1, task_kernel=model.task_kernel_, solver="dense").fit(X, Y)
    assert model.n_iter_ == 2 and _rel(model.dual_coef_, fixed.dual_coef_) < 1e-8
