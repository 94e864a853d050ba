"""Input checks shared by the estimators of :mod:`multitask.kernels`.

``X`` must be a finite 2-D array; ``Y`` is 1-D (one task) or 2-D ``(n_samples, n_tasks)`` with NaN
marking a missing output. Every task needs at least one observed value. Errors name the
parameter, the value seen and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.utils.validation import check_array, validate_data

__all__ = ["FitData", "check_task_matrix", "validate_fit_data", "validate_predict_data"]


@dataclass(frozen=True)
class FitData:
    """Validated training data.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
        Finite float64 inputs.
    Y : ndarray of shape (n_samples, n_tasks)
        float64 outputs with NaN where missing.
    mask : ndarray of bool, shape (n_samples, n_tasks)
        True where ``Y`` is observed.
    y_was_1d : bool
        Whether ``Y`` came in as a 1-D array (predictions are then 1-D too).
    """

    X: NDArray[np.float64]
    Y: NDArray[np.float64]
    mask: NDArray[np.bool_]
    y_was_1d: bool

    @property
    def complete(self) -> bool:
        """Whether every output is observed."""
        return bool(self.mask.all())


def validate_fit_data(estimator: Any, X: Any, Y: Any) -> FitData:
    """Check ``X`` (finite, 2-D, sets ``n_features_in_``) and ``Y`` (NaN = missing) for ``fit``."""
    name = type(estimator).__name__
    if Y is None:
        raise ValueError(
            f"{name} requires y to be passed, but the target y is None. Pass Y of shape (n_samples,) or "
            "(n_samples, n_tasks), with NaN for a missing output."
        )
    X = validate_data(estimator, X, reset=True, dtype=np.float64, ensure_all_finite=True, ensure_min_samples=1)
    ndim = np.asarray(Y).ndim
    if ndim > 2:
        raise ValueError(f"{name}: Y must be 1-D (one task) or 2-D (n_samples, n_tasks); got {ndim} dimensions.")
    Y = check_array(Y, ensure_2d=False, dtype=np.float64, ensure_all_finite="allow-nan", input_name="Y", estimator=name)
    if Y.ndim not in (1, 2):
        raise ValueError(f"{name}: Y must be 1-D (one task) or 2-D (n_samples, n_tasks); got shape {Y.shape}.")
    y_was_1d = Y.ndim == 1
    Y = Y.reshape(-1, 1) if y_was_1d else Y
    if Y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{name}: X has {X.shape[0]} samples but Y has {Y.shape[0]}; inconsistent numbers of samples. "
            "Pass one row of Y per row of X (NaN where an output is missing)."
        )
    if Y.shape[1] == 0:
        raise ValueError(f"{name}: Y has 0 tasks (shape {Y.shape}); pass at least one output column.")
    mask = ~np.isnan(Y)
    empty = np.flatnonzero(~mask.any(axis=0))
    if empty.size:
        which = ", ".join(str(int(t)) for t in empty[:10]) + (" ..." if empty.size > 10 else "")
        raise ValueError(
            f"{name}: task(s) {which} of Y (column index) have no observed value: every entry is NaN. "
            "Every task needs at least one observed output; drop those columns of Y."
        )
    Y = np.ascontiguousarray(Y)
    return FitData(X=np.ascontiguousarray(X), Y=Y, mask=mask, y_was_1d=y_was_1d)


def validate_predict_data(estimator: Any, X: Any) -> NDArray[np.float64]:
    """Check ``X`` for ``predict``: finite, 2-D, with the number of features seen in ``fit``."""
    X = validate_data(estimator, X, reset=False, dtype=np.float64, ensure_all_finite=True)
    return np.ascontiguousarray(X)


def check_task_matrix(B: Any, n_tasks: int, owner: str, name: str = "task_kernel") -> NDArray[np.float64]:
    """A symmetric positive semi-definite ``(n_tasks, n_tasks)`` task matrix, or a ValueError saying why not."""
    A = np.asarray(B, dtype=np.float64)
    if A.shape != (n_tasks, n_tasks):
        raise ValueError(
            f"{owner}: {name} has shape {A.shape} but Y has {n_tasks} task(s); pass a ({n_tasks}, {n_tasks}) "
            "symmetric positive semi-definite matrix."
        )
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{owner}: {name} contains NaN or infinite entries; pass a finite PSD matrix.")
    scale = max(float(np.abs(A).max()), 1e-300)
    if not np.allclose(A, A.T, rtol=0.0, atol=1e-10 * scale):
        raise ValueError(f"{owner}: {name} is not symmetric; pass (B + B.T) / 2 or a matrix of the form L @ L.T.")
    A = 0.5 * (A + A.T)
    lo = float(np.linalg.eigvalsh(A)[0])
    if lo < -1e-10 * scale:
        raise ValueError(
            f"{owner}: {name} is not positive semi-definite (smallest eigenvalue {lo:.3g} < 0); "
            "pass a PSD matrix, e.g. L @ L.T."
        )
    return A
