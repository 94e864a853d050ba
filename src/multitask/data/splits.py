"""Deterministic train/validation/test splits of row indices.

Splits depend only on ``(n, seed, fractions)``: never on the training seed, the platform or the
order in which datasets are loaded.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["holdout_indices", "split_indices"]

IndexArray = NDArray[np.int64]


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r} must be a number in (0, 1), e.g. {name}=0.15")
    v = float(value)
    if not (math.isfinite(v) and 0.0 < v < 1.0):
        raise ValueError(f"{name}={value!r} must be in (0, 1) so that every split is non-empty; use e.g. {name}=0.15")
    return v


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"split_seed={seed!r} must be an int, e.g. split_seed=0")
    if seed < 0:
        raise ValueError(f"split_seed={seed} must be >= 0, e.g. split_seed=0")
    return int(seed)


def _check_n(n: int, minimum: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n={n!r} must be an int (the number of rows)")
    if n < minimum:
        raise ValueError(
            f"n={n} rows is too few to split into {minimum} non-empty parts; provide at least {minimum} rows"
        )
    return int(n)


def _count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction))


def split_indices(
    n: int, *, seed: int, val_fraction: float, test_fraction: float
) -> tuple[IndexArray, IndexArray, IndexArray]:
    """Split ``range(n)`` into sorted, disjoint, non-empty train/val/test index arrays.

    ``round(n * fraction)`` rows (at least one) go to validation and to test; the rest is train.
    The assignment is a permutation drawn from ``numpy.random.default_rng(seed)``, so it is the
    same on every machine and run.

    Args:
        n: number of rows (at least 3).
        seed: split seed (>= 0).
        val_fraction: fraction of rows for validation, in (0, 1).
        test_fraction: fraction of rows for test, in (0, 1).

    Returns:
        ``(train_idx, val_idx, test_idx)`` as sorted int64 arrays.

    Raises:
        ValueError: a fraction outside (0, 1), fractions summing to 1 or more, or too few rows for
            three non-empty splits. The message names the parameter, its value and a fix.
    """
    val_f = _check_fraction("val_fraction", val_fraction)
    test_f = _check_fraction("test_fraction", test_fraction)
    seed = _check_seed(seed)
    if val_f + test_f >= 1.0:
        raise ValueError(
            f"val_fraction={val_fraction!r} + test_fraction={test_fraction!r} = {val_f + test_f:g} leaves no "
            "training rows; make the sum < 1, e.g. val_fraction=0.15, test_fraction=0.15"
        )
    n = _check_n(n, 3)
    n_val, n_test = _count(n, val_f), _count(n, test_f)
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(
            f"n={n} rows with val_fraction={val_fraction!r} and test_fraction={test_fraction!r} leaves "
            f"{n_train} training rows; lower the fractions or provide more rows"
        )
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    val_idx = np.sort(perm[:n_val])
    test_idx = np.sort(perm[n_val : n_val + n_test])
    train_idx = np.sort(perm[n_val + n_test :])
    return train_idx, val_idx, test_idx


def holdout_indices(n: int, *, seed: int, fraction: float, name: str = "val_fraction") -> tuple[IndexArray, IndexArray]:
    """Split ``range(n)`` into two sorted, disjoint, non-empty parts: ``(kept, held_out)``.

    ``round(n * fraction)`` rows (at least one) are held out, drawn like :func:`split_indices`.
    ``name`` is the parameter name used in error messages.
    """
    f = _check_fraction(name, fraction)
    seed = _check_seed(seed)
    n = _check_n(n, 2)
    n_out = _count(n, f)
    if n - n_out < 1:
        raise ValueError(f"n={n} rows with {name}={fraction!r} leaves no rows to keep; lower {name}")
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])
