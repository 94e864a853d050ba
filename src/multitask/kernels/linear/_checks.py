"""Input validation for the regularized linear multi-task estimators (private).

Every error names the parameter, the value seen and the fix.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, validate_data

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class Targets:
    """Validated targets: values with 0 at missing entries, the observation mask, and the original layout."""

    values: FloatArray  # (n_samples, n_tasks), 0.0 where missing
    mask: BoolArray  # (n_samples, n_tasks), True where observed
    one_d: bool  # Y was 1-D: one task, and predictions are returned 1-D


def check_real(value: object, name: str, *, low: float = 0.0, strict: bool = False, example: float = 0.1) -> float:
    """A finite real number ``>= low`` (``> low`` when ``strict``); bools are refused."""
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value))
    if not bad:
        v = float(value)  # type: ignore[arg-type]
        bad = v <= low if strict else v < low
    if bad:
        relation = ">" if strict else ">="
        raise ValueError(
            f"{name} must be a finite real number {relation} {low:g}, got {value!r}; pass e.g. {name}={example:g}."
        )
    return float(value)  # type: ignore[arg-type]


def check_int(value: object, name: str, *, low: int = 1, example: int = 10_000) -> int:
    """An integer ``>= low``; bools are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}; pass e.g. {name}={example}.")
    return int(value)


def check_solver_params(tol: object, max_iter: object) -> tuple[float, int]:
    """Validate the shared convergence parameters."""
    return check_real(tol, "tol", strict=True, example=1e-8), check_int(max_iter, "max_iter")


def validate_X(estimator: Any, X: Any, *, reset: bool) -> FloatArray:
    """Validate X (finite, 2-D, float64) and record or check ``n_features_in_`` / ``feature_names_in_``."""
    out: FloatArray = validate_data(estimator, X, reset=reset, dtype=np.float64, ensure_min_samples=1)
    return out


def _raise_if_y_none(Y: Any) -> None:
    if Y is None:
        raise ValueError(
            "This estimator requires y to be passed, but the target y is None; "
            "pass Y of shape (n_samples,) or (n_samples, n_tasks), with NaN for a missing output."
        )


def _check_rows(Y: NDArray[Any], n_samples: int) -> None:
    if Y.ndim not in (1, 2):
        raise ValueError(
            f"Y must be 1-D (one task) or 2-D (n_samples, n_tasks), got an array with shape {Y.shape}; "
            "reshape it to (n_samples, n_tasks)."
        )
    if Y.shape[0] != n_samples:
        raise ValueError(
            f"X has {n_samples} samples but Y has {Y.shape[0]} rows; pass one row of Y per row of X "
            "(NaN where a task's output is missing)."
        )
    if Y.ndim == 2 and Y.shape[1] == 0:
        raise ValueError("Y has 0 task columns; pass Y with at least one task column.")


def _check_observed(mask: BoolArray) -> None:
    empty = np.flatnonzero(~mask.any(axis=0))
    if empty.size:
        raise ValueError(
            f"Y has no observed value (all NaN) in task column(s) {empty.tolist()}; "
            "drop those columns or provide observations for them."
        )


def validate_regression_targets(Y: Any, n_samples: int) -> Targets:
    """Validate regression targets: numeric, NaN = missing, no infinities, no all-missing task."""
    _raise_if_y_none(Y)
    _check_rows(np.asarray(Y), n_samples)
    arr: FloatArray = check_array(
        Y, ensure_2d=False, dtype=np.float64, ensure_all_finite="allow-nan", input_name="Y", ensure_min_samples=1
    )
    one_d = arr.ndim == 1
    arr2 = arr.reshape(-1, 1) if one_d else arr
    mask = ~np.isnan(arr2)
    _check_observed(mask)
    return Targets(np.where(mask, arr2, 0.0), mask, one_d)


def validate_classification_targets(Y: Any, n_samples: int) -> tuple[Targets, NDArray[Any]]:
    """Validate binary targets and return them as 0/1 values with the ``classes_`` array.

    A 1-D ``y`` is one binary task with any two labels (NaN = missing when numeric); ``classes_`` holds
    them sorted and the second one is the positive class. A 2-D ``Y`` holds one binary task per
    column with labels 0 and 1 (NaN = missing) and ``classes_`` is ``array([0, 1])``.
    """
    _raise_if_y_none(Y)
    raw = np.asarray(Y)
    _check_rows(raw, n_samples)
    if raw.ndim == 1:
        if raw.dtype.kind in "fc":
            arr = check_array(raw, ensure_2d=False, dtype=np.float64, ensure_all_finite="allow-nan", input_name="y")
            observed = ~np.isnan(arr)
            labels: NDArray[Any] = arr[observed]
        else:
            observed = np.ones(raw.shape[0], dtype=bool)
            labels = raw
        if not observed.any():
            raise ValueError("y has no observed value (all NaN); provide at least one label of each class.")
        kind = type_of_target(labels, input_name="y")
        if kind in ("continuous", "continuous-multioutput"):
            raise ValueError(
                f"Unknown label type: {kind}. These classifiers need binary labels; "
                "use the matching regressor for continuous targets."
            )
        classes = np.unique(labels)
        if classes.size > 2:
            raise ValueError(
                f"Only binary classification is supported. The type of the target is {kind}; "
                f"y has {classes.size} classes {classes.tolist()[:10]}. Use one 0/1 column per task instead."
            )
        if classes.size < 2:
            raise ValueError(f"y has only one class ({classes[0]!r}); a classifier needs samples of 2 classes.")
        values = np.zeros(raw.shape[0])
        values[observed] = (labels == classes[1]).astype(np.float64)
        return Targets(values.reshape(-1, 1), observed.reshape(-1, 1), True), classes
    arr2: FloatArray = check_array(raw, dtype=np.float64, ensure_all_finite="allow-nan", input_name="Y")
    mask = ~np.isnan(arr2)
    _check_observed(mask)
    bad = mask & (arr2 != 0.0) & (arr2 != 1.0)
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        seen = np.unique(arr2[mask[:, col], col])[:10].tolist()
        raise ValueError(
            f"Unknown label type: a 2-D Y must hold 0/1 labels per task (NaN = missing); task column {col} "
            f"holds {seen}. Binarize each task (e.g. Y = (Y == positive_label)) before fitting."
        )
    for t in range(arr2.shape[1]):
        seen_t = np.unique(arr2[mask[:, t], t])
        if seen_t.size < 2:
            raise ValueError(
                f"Task column {t} of Y has only one class ({seen_t[0]:g}) among its observed labels; "
                "a classifier needs samples of 2 classes per task. Drop that task or add labels of the other class."
            )
    return Targets(np.where(mask, arr2, 0.0), mask, False), np.array([0, 1])
