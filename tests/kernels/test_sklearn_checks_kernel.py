"""scikit-learn's estimator contract for the kernel estimators, and their use in Pipeline / GridSearchCV."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from multitask.kernels import MultiTaskGP, MultiTaskKernelRidge


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1):  # small matrices: threads only add overhead (and noise on a shared machine)
        yield


@parametrize_with_checks([MultiTaskKernelRidge(), MultiTaskGP(random_state=0)])
def test_sklearn_contract(estimator: BaseEstimator, check: Callable[[BaseEstimator], Any]) -> None:
    check(estimator)


def _xy(missing: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * np.array([1.0, 10.0, 0.1])  # badly scaled: the scaler matters
    f = np.sin(X[:, 0]) + 0.05 * X[:, 1]
    Y = np.c_[f, 0.5 * f + 1.0, -f] + 0.05 * rng.normal(size=(60, 3))
    Y[rng.random(Y.shape) < missing] = np.nan
    Y[:3] = np.c_[f, 0.5 * f + 1.0, -f][:3]
    return X, Y


def _masked_r2(estimator: Any, X: np.ndarray, Y: np.ndarray) -> float:
    """Mean over tasks of R² on the observed outputs only (NaN = missing)."""
    P = estimator.predict(X)
    scores = []
    for t in range(Y.shape[1]):
        o = ~np.isnan(Y[:, t])
        scores.append(1 - np.mean((Y[o, t] - P[o, t]) ** 2) / np.var(Y[o, t]))
    return float(np.mean(scores))


@pytest.mark.parametrize(
    ("estimator", "grid"),
    [
        (
            MultiTaskKernelRidge(),
            {"multitaskkernelridge__alpha": [1e-3, 1e-1, 10.0], "multitaskkernelridge__lengthscale": [0.5, 2.0]},
        ),
        (MultiTaskGP(n_components=1, random_state=0), {"multitaskgp__kernel": ["rbf", "matern52"]}),
    ],
)
def test_pipeline_and_grid_search_with_missing_outputs(estimator: BaseEstimator, grid: dict[str, list[Any]]) -> None:
    X, Y = _xy()
    pipe = make_pipeline(StandardScaler(), estimator)
    search = GridSearchCV(pipe, grid, cv=KFold(3, shuffle=True, random_state=0), scoring=_masked_r2).fit(X, Y)
    assert search.best_score_ > 0.8
    assert search.predict(X[:5]).shape == (5, 3)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_kernels_import_numpy_scipy_sklearn_only() -> None:
    """multitask.kernels must not import torch (or anything beyond numpy, scipy, scikit-learn, threadpoolctl)."""
    import ast
    import sys
    from pathlib import Path

    import multitask.kernels

    allowed = {"numpy", "scipy", "sklearn", "threadpoolctl", "__future__"} | set(sys.stdlib_module_names)
    offenders = []
    for path in sorted(Path(multitask.kernels.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] not in allowed]
    assert not offenders, offenders
