"""Yeast multi-label gene functions: 14 binary tasks from 103 numeric features."""

from __future__ import annotations

import re

import pandas as pd

from .base import DATASETS, MultiTaskData
from .splits import split_indices
from .tabular import TaskSpec, build_tabular, package_file

__all__ = ["INSTALL_COMMAND", "N_LABELS", "yeast"]

INSTALL_COMMAND = "pip install river==0.26.1"
N_LABELS = 14


def _identifier(name: str) -> str:
    ident = re.sub(r"\W+", "_", name.strip()).strip("_").lower()
    return ident if ident and not ident[0].isdigit() else f"label_{ident}"


@DATASETS.register("yeast")
def yeast(*, split_seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> MultiTaskData:
    """Yeast gene functions, 14 binary labels from 103 features, 2,417 genes (needs river).

    Elisseeff & Weston (NIPS 2001). Read from the CSV shipped in ``river==0.26.1``
    (``river/datasets/yeast.csv.gz``), which is located but never imported. The last 14 columns of
    the file are the labels (``Class1`` .. ``Class14``, tasks ``class1`` .. ``class14``); the 103
    ``Att*`` columns are standardised with training statistics.

    Args:
        split_seed: seed of the train/val/test split.
        val_fraction: fraction of rows for validation.
        test_fraction: fraction of rows for test.
    """
    path = package_file("river", "datasets", "yeast.csv.gz", install=INSTALL_COMMAND)
    df = pd.read_csv(path)
    columns = [str(c) for c in df.columns]
    if len(columns) <= N_LABELS:
        raise ValueError(f"{str(path)!r} has {len(columns)} columns; expected 103 features + {N_LABELS} labels")
    label_cols = columns[-N_LABELS:]
    rename = {c: _identifier(c) for c in label_cols}
    if len(set(rename.values())) != N_LABELS or set(rename.values()) & set(columns[:-N_LABELS]):
        raise ValueError(f"{str(path)!r}: label columns {label_cols} do not give distinct task names")
    df = df.rename(columns=rename)
    splits = split_indices(len(df), seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    return build_tabular(
        df,
        [TaskSpec(rename[c], "binary", None) for c in label_cols],
        splits,
        name="yeast",
        info={
            "source": "Yeast multi-label data (Elisseeff & Weston 2001), river==0.26.1 file river/datasets/yeast.csv.gz",
            "source_file": str(path),
            "license": "BSD-3-Clause (river package); data from the MULAN multi-label repository",
            "label_columns": label_cols,
            "split": {"split_seed": split_seed, "val_fraction": val_fraction, "test_fraction": test_fraction},
        },
    )
