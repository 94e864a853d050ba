"""Deterministic train/val/test splits."""

from __future__ import annotations

import numpy as np
import pytest

from multitask.data import holdout_indices, split_indices


def test_split_is_a_deterministic_partition() -> None:
    a = split_indices(100, seed=3, val_fraction=0.15, test_fraction=0.2)
    b = split_indices(100, seed=3, val_fraction=0.15, test_fraction=0.2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    train, val, test = a
    assert (len(train), len(val), len(test)) == (65, 15, 20)
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(100))
    assert all(x.dtype == np.int64 and np.all(np.diff(x) > 0) for x in a)


def test_different_seeds_give_different_splits() -> None:
    a = split_indices(100, seed=0, val_fraction=0.15, test_fraction=0.15)
    b = split_indices(100, seed=1, val_fraction=0.15, test_fraction=0.15)
    assert not np.array_equal(a[2], b[2])


def test_tiny_n_keeps_every_split_non_empty() -> None:
    train, val, test = split_indices(3, seed=0, val_fraction=0.01, test_fraction=0.01)
    assert (len(train), len(val), len(test)) == (1, 1, 1)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"val_fraction": 0.0, "test_fraction": 0.1}, "val_fraction=0.0"),
        ({"val_fraction": 0.1, "test_fraction": 1.5}, "test_fraction=1.5"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "leaves no training rows"),
        ({"val_fraction": float("nan"), "test_fraction": 0.1}, "val_fraction=nan"),
    ],
)
def test_bad_fractions_name_the_parameter(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        split_indices(100, seed=0, **kwargs)
    assert "e.g." in str(info.value) or "make the sum" in str(info.value)


def test_too_few_rows_and_bad_types() -> None:
    with pytest.raises(ValueError, match="n=2"):
        split_indices(2, seed=0, val_fraction=0.1, test_fraction=0.1)
    with pytest.raises(ValueError, match="leaves 0 training rows"):
        split_indices(4, seed=0, val_fraction=0.4, test_fraction=0.4)
    with pytest.raises(TypeError, match="split_seed"):
        split_indices(10, seed=1.5, val_fraction=0.1, test_fraction=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split_seed=-1"):
        split_indices(10, seed=-1, val_fraction=0.1, test_fraction=0.1)


def test_holdout() -> None:
    kept, out = holdout_indices(10, seed=0, fraction=0.2)
    assert len(out) == 2 and len(kept) == 8
    assert not set(kept) & set(out)
    with pytest.raises(ValueError, match=r"val_fraction=1\.0"):
        holdout_indices(10, seed=0, fraction=1.0)
