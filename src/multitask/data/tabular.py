"""CSV/Parquet tables as multi-task data: task specs, a train-fitted preprocessor and target encoding.

A table has one row per sample. Some columns are targets (one per task, named by a *task spec*
such as ``"income:binary"``), the others are input features. Numeric features are standardised
and categorical ones one-hot encoded, with statistics from the training rows only. A missing
target (NaN, None or an empty string) masks that task for that row and leaves the row's other
labels in place.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from ..registry import UnknownNameError, unknown_name_message
from ..tasks import KINDS, Task
from .base import MissingDependencyError, MultiTaskData
from .batch import TensorSplit
from .splits import split_indices

__all__ = [
    "IMPUTE_MODES",
    "MISSING_CATEGORY",
    "TabularPreprocessor",
    "TargetEncoder",
    "TaskSpec",
    "from_frame",
    "load_table",
    "parse_task_spec",
    "read_table",
]

IMPUTE_MODES: tuple[str, ...] = ("error", "mean", "median")
MISSING_CATEGORY = "<missing>"
_CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# task specs
# --------------------------------------------------------------------------------------------
class TaskSpec(NamedTuple):
    """A parsed task spec: the target column, the task kind and, for binary tasks, the positive class."""

    column: str
    kind: str
    positive: str | None = None


def parse_task_spec(spec: str) -> TaskSpec:
    """Parse ``"column:kind"`` or ``"column:binary:POSITIVE"``.

    ``kind`` is ``binary``, ``multiclass`` or ``regression``. The column name may not contain
    ``:``; the positive class may (everything after the second ``:``).

    Examples:
        >>> parse_task_spec("income:binary:>50K")
        TaskSpec(column='income', kind='binary', positive='>50K')

    Raises:
        ValueError: no kind, an empty column, or a positive class on a non-binary task.
        UnknownNameError: an unknown kind (names the closest one).
    """
    if not isinstance(spec, str):
        raise TypeError(f"task spec {spec!r} must be a string like 'income:binary'")
    column, sep, rest = spec.partition(":")
    column = column.strip()
    if not sep:
        raise ValueError(
            f"task spec {spec!r} has no kind; write '{column}:binary', '{column}:multiclass' or '{column}:regression'"
        )
    if not column:
        raise ValueError(f"task spec {spec!r} has an empty column name; write e.g. 'income:binary'")
    kind, sep2, positive = rest.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise UnknownNameError(
            unknown_name_message(f"task kind in spec {spec!r}:", kind, list(KINDS), "Write COLUMN:KIND.")
        )
    if sep2:
        if kind != "binary":
            raise ValueError(f"task spec {spec!r}: only binary tasks take a positive class; write '{column}:{kind}'")
        if not positive.strip():
            raise ValueError(f"task spec {spec!r}: empty positive class; write e.g. '{column}:binary:yes'")
        return TaskSpec(column, kind, positive.strip())
    return TaskSpec(column, kind, None)


# --------------------------------------------------------------------------------------------
# value keys: one canonical string per value, shared by targets and categorical features
# --------------------------------------------------------------------------------------------
def _scalar_key(v: Any) -> str | None:
    """Canonical string of one cell; None when missing (NaN, None, NA, empty string)."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return None
        return str(int(f)) if f.is_integer() and abs(f) < 2**53 else repr(f)
    s = str(v).strip()
    return s or None


def _keys(series: pd.Series) -> list[str | None]:
    """Canonical string keys of a column (None where missing)."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return [_scalar_key(v) for v in series.to_numpy(dtype=object)]
    return [_scalar_key(v) for v in series.astype(object).to_numpy()]


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series.dtype)) and not pd.api.types.is_bool_dtype(series.dtype)


def _is_categorical(series: pd.Series) -> bool:
    dt = series.dtype
    return bool(
        pd.api.types.is_bool_dtype(dt)
        or pd.api.types.is_object_dtype(dt)
        or pd.api.types.is_string_dtype(dt)
        or isinstance(dt, pd.CategoricalDtype)
    )


def _to_float(series: pd.Series, column: str, what: str) -> NDArray[np.float64]:
    """Numbers of a column; a non-numeric, non-missing value raises naming the column and the value."""
    if _is_numeric(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    raw = series.astype(object).to_numpy()
    out = np.full(len(raw), np.nan, dtype=np.float64)
    bad: list[Any] = []
    for i, v in enumerate(raw):
        key = _scalar_key(v)
        if key is None:
            continue
        try:
            out[i] = float(key)
        except ValueError:
            bad.append(v)
    if bad:
        fix = (
            "fix the data, or use a classification kind (binary/multiclass) for a target"
            if "target" in what
            else "fix the data (an empty cell counts as missing)"
        )
        raise ValueError(
            f"{what} column {column!r} holds the non-numeric value {bad[0]!r} ({len(bad)} such rows); {fix}"
        )
    return out


def _sort_keys(keys: set[str], numeric: bool) -> list[str]:
    if numeric:
        return sorted(keys, key=float)
    return sorted(keys)


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------
@dataclass
class TargetEncoder:
    """How one target column becomes a task's targets and mask.

    Attributes:
        column: the target column (and the task name).
        kind: ``binary``, ``multiclass`` or ``regression``.
        classes: label names in encoded order (binary: ``(negative, positive)``).
        mean, std: standardisation of a regression target (training rows only).
    """

    column: str
    kind: str
    classes: tuple[str, ...] | None = None
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, spec: TaskSpec, series: pd.Series, train_rows: NDArray[np.int64] | None = None) -> TargetEncoder:
        """Fit on a whole column; regression statistics use only ``train_rows`` (all rows if None)."""
        col = spec.column
        if spec.kind == "regression":
            values = _to_float(series, col, "regression target")
            inf = np.isinf(values)
            if inf.any():
                raise ValueError(
                    f"regression target column {col!r} holds {int(inf.sum())} infinite values; "
                    "replace them by a number or leave them empty (missing)"
                )
            tr = values if train_rows is None else values[train_rows]
            tr = tr[~np.isnan(tr)]
            if tr.size == 0:
                raise ValueError(f"regression target column {col!r} has no labelled training rows")
            mean = float(tr.mean())
            std = float(tr.std())
            return cls(col, "regression", None, mean, std if math.isfinite(std) and std > 0 else 1.0)
        keys = _keys(series)
        seen = {k for k in keys if k is not None}
        if not seen:
            raise ValueError(f"target column {col!r} has no labels: every value is missing")
        numeric = _is_numeric(series)
        if spec.kind == "multiclass":
            if len(seen) < 2:
                raise ValueError(
                    f"multiclass target column {col!r} has only one distinct value {sorted(seen)!r}; "
                    "a multiclass task needs at least 2 classes"
                )
            return cls(col, "multiclass", tuple(_sort_keys(seen, numeric)))
        # binary
        if spec.positive is not None:
            positive = spec.positive
            if numeric:
                with contextlib.suppress(ValueError):
                    positive = _scalar_key(float(positive)) or positive
            if positive not in seen:
                raise ValueError(
                    f"binary target column {col!r}: positive class {spec.positive!r} never occurs; "
                    f"values seen: {_sort_keys(seen, numeric)[:10]!r}"
                )
            others = sorted(seen - {positive})
            if len(others) > 1:
                raise ValueError(
                    f"binary target column {col!r} has {len(seen)} distinct values {_sort_keys(seen, numeric)[:10]!r}; "
                    f"a binary task needs 2. Use '{col}:multiclass'"
                )
            negative = others[0] if others else f"not {positive}"
            return cls(col, "binary", (negative, positive))
        if seen <= {"True", "False"} and not numeric:
            return cls(col, "binary", ("False", "True"))
        if numeric and seen <= {"0", "1"}:
            return cls(col, "binary", ("0", "1"))
        if len(seen) != 2:
            if len(seen) > 2:
                raise ValueError(
                    f"binary target column {col!r} has {len(seen)} distinct values "
                    f"{_sort_keys(seen, numeric)[:10]!r}; a binary task needs 2. Use '{col}:multiclass'"
                    + (" or 'regression'" if numeric else "")
                )
            (only,) = seen
            raise ValueError(
                f"binary target column {col!r} has only the value {only!r}; name the positive class "
                f"('{col}:binary:{only}') or check the data"
            )
        neg, pos = _sort_keys(seen, numeric)
        return cls(col, "binary", (neg, pos))

    def encode(self, series: pd.Series) -> tuple[torch.Tensor, torch.Tensor]:
        """``(targets, mask)``: targets float32 (binary, regression) or int64 (multiclass), 0 where missing."""
        if self.kind == "regression":
            values = _to_float(series, self.column, "regression target")
            mask = np.isfinite(values)
            out = np.zeros(values.shape, dtype=np.float32)
            out[mask] = ((values[mask] - self.mean) / self.std).astype(np.float32)
            return torch.from_numpy(out), torch.from_numpy(mask)
        assert self.classes is not None
        keys = _keys(series)
        mask = np.array([k is not None for k in keys], dtype=bool)
        if self.kind == "binary":
            positive = self.classes[1]
            negative = self.classes[0]
            unknown = {k for k in keys if k is not None and k != positive and k != negative}
            if unknown and not negative.startswith("not "):
                raise ValueError(
                    f"binary target column {self.column!r} holds values {sorted(unknown)[:5]!r} outside its "
                    f"classes {list(self.classes)!r}"
                )
            bin_out = np.array([1.0 if k == positive else 0.0 for k in keys], dtype=np.float32)
            return torch.from_numpy(bin_out), torch.from_numpy(mask)
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = {k for k in keys if k is not None and k not in index}
        if unknown:
            raise ValueError(
                f"multiclass target column {self.column!r} holds classes {sorted(unknown)[:5]!r} unseen when "
                f"the task was built; known classes: {list(self.classes)[:20]!r}"
            )
        mc_out = np.array([index[k] if k is not None else 0 for k in keys], dtype=np.int64)
        return torch.from_numpy(mc_out), torch.from_numpy(mask)

    def task(self) -> Task:
        """The :class:`~multitask.tasks.Task` this target trains."""
        if self.kind == "multiclass":
            assert self.classes is not None
            return Task(self.column, "multiclass", num_classes=len(self.classes), classes=self.classes)
        if self.kind == "binary":
            return Task(self.column, "binary", classes=self.classes)
        return Task(self.column, "regression", target_mean=self.mean, target_std=self.std)

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "classes": list(self.classes) if self.classes is not None else None,
            "mean": self.mean,
            "std": self.std,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetEncoder:
        classes = d.get("classes")
        return cls(
            str(d["column"]),
            str(d["kind"]),
            tuple(str(c) for c in classes) if classes is not None else None,
            float(d.get("mean", 0.0)),
            float(d.get("std", 1.0)),
        )


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------
def _nonfinite_report(df: pd.DataFrame, columns: Sequence[str]) -> list[tuple[str, int]]:
    bad = []
    for c in columns:
        values = _to_float(df[c], c, "numeric feature")
        n = int((~np.isfinite(values)).sum())
        if n:
            bad.append((c, n))
    return bad


def _nonfinite_error(bad: list[tuple[str, int]], n_rows: int) -> ValueError:
    parts = ", ".join(f"{c!r} ({n} of {n_rows} rows)" for c, n in bad)
    return ValueError(
        f"numeric feature columns hold NaN or infinite values: {parts}. Fill them in the data, drop the "
        "columns, or pass impute='mean' or impute='median' (filled with training-set statistics)"
    )


class TabularPreprocessor:
    """Turns feature columns into a float32 matrix, with statistics fitted on the training rows.

    * numeric columns are standardised: ``(x - mean) / std`` with the training mean and
      (population) standard deviation; a constant column gets ``std = 1``;
    * categorical columns (object, string, category or bool dtype) are one-hot encoded over the
      categories seen in training, sorted; a missing value is its own category ``"<missing>"``;
      a category never seen in training encodes as all zeros;
    * NaN or infinite numeric values raise, unless ``impute`` is ``"mean"`` or ``"median"``, in
      which case they are replaced by the training mean/median of the column (before
      standardisation).

    ``to_dict()``/``from_dict()`` round-trip the fitted state through JSON, for checkpoints and
    prediction. ``targets`` (filled by :func:`from_frame`) holds the target encoders, so the same
    object can also encode the labels of a new file (:meth:`encode_targets`).
    ``dtypes`` records each feature column's pandas dtype at fitting time (for reference; the
    encoding depends only on the numeric/categorical split). :meth:`unknown_categories` and
    :meth:`nonfinite_counts` report, before :meth:`transform`, the rows it would encode as all
    zeros or refuse (or impute).

    Args:
        impute: ``"error"`` (default), ``"mean"`` or ``"median"``.
    """

    def __init__(self, *, impute: str = "error") -> None:
        if impute not in IMPUTE_MODES:
            raise UnknownNameError(unknown_name_message("impute mode", str(impute), list(IMPUTE_MODES)))
        self.impute = impute
        self.columns: list[str] = []
        self.numeric: dict[str, dict[str, float]] = {}
        self.categorical: dict[str, list[str]] = {}
        self.dtypes: dict[str, str] = {}
        self.targets: dict[str, TargetEncoder] = {}
        self._fitted = False

    # --- fitting -----------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame, columns: Sequence[str] | None = None) -> TabularPreprocessor:
        """Learn statistics from ``df`` (the training rows) for ``columns`` (default: all)."""
        cols = [str(c) for c in (df.columns if columns is None else columns)]
        _require_columns(df, cols, "feature")
        numeric: dict[str, dict[str, float]] = {}
        categorical: dict[str, list[str]] = {}
        numeric_cols = []
        for c in cols:
            s = df[c]
            if _is_numeric(s):
                numeric_cols.append(c)
            elif _is_categorical(s):
                categorical[c] = sorted({k if k is not None else MISSING_CATEGORY for k in _keys(s)})
            else:
                raise TypeError(
                    f"feature column {c!r} has dtype {s.dtype}, which is neither numeric nor categorical; "
                    "convert it to numbers or strings, or leave it out with drop=[...]"
                )
        if self.impute == "error":
            bad = _nonfinite_report(df, numeric_cols)
            if bad:
                raise _nonfinite_error(bad, len(df))
        for c in numeric_cols:
            x = _to_float(df[c], c, "numeric feature")
            finite = x[np.isfinite(x)]
            fill = 0.0
            if self.impute != "error":
                if finite.size == 0:
                    raise ValueError(
                        f"numeric feature column {c!r} has no finite value in the training rows, so "
                        f"impute={self.impute!r} has nothing to fill with; drop the column"
                    )
                fill = float(finite.mean() if self.impute == "mean" else np.median(finite))
                x = np.where(np.isfinite(x), x, fill)
            mean = float(x.mean()) if x.size else 0.0
            std = float(x.std()) if x.size else 1.0
            if not (math.isfinite(std) and std > 0):
                std = 1.0
            numeric[c] = {"mean": mean, "std": std, "fill": fill}
        self.columns, self.numeric, self.categorical = cols, numeric, categorical
        self.dtypes = {c: str(df[c].dtype) for c in cols}
        self._fitted = True
        return self

    # --- applying ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("TabularPreprocessor is not fitted; call fit(train_frame) or from_dict(...) first")

    @property
    def feature_names_out(self) -> list[str]:
        """Names of the output columns: ``col`` for numeric, ``col=value`` for one-hot columns."""
        self._check_fitted()
        names: list[str] = []
        for c in self.columns:
            if c in self.numeric:
                names.append(c)
            else:
                names.extend(f"{c}={v}" for v in self.categorical[c])
        return names

    @property
    def n_features_out(self) -> int:
        return len(self.feature_names_out)

    def transform(self, df: pd.DataFrame) -> NDArray[np.float32]:
        """The ``[len(df), n_features_out]`` float32 matrix of ``df``'s feature columns."""
        self._check_fitted()
        _require_columns(df, self.columns, "feature", fitted=True)
        if self.impute == "error":
            bad = _nonfinite_report(df, list(self.numeric))
            if bad:
                raise _nonfinite_error(bad, len(df))
        blocks: list[NDArray[np.float32]] = []
        for c in self.columns:
            if c in self.numeric:
                st = self.numeric[c]
                x = _to_float(df[c], c, "numeric feature")
                if self.impute != "error":
                    x = np.where(np.isfinite(x), x, st["fill"])
                blocks.append(((x - st["mean"]) / st["std"]).astype(np.float32)[:, None])
            else:
                cats = self.categorical[c]
                keys = [k if k is not None else MISSING_CATEGORY for k in _keys(df[c])]
                codes = pd.Index(cats, dtype=object).get_indexer(pd.Index(keys, dtype=object)).astype(np.int64)
                onehot = np.zeros((len(df), len(cats)), dtype=np.float32)
                seen = codes >= 0
                onehot[np.nonzero(seen)[0], codes[seen]] = 1.0
                blocks.append(onehot)
        if not blocks:
            return np.zeros((len(df), 0), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.float32)

    def fit_transform(self, df: pd.DataFrame, columns: Sequence[str] | None = None) -> NDArray[np.float32]:
        return self.fit(df, columns).transform(df)

    def unknown_categories(self, df: pd.DataFrame) -> dict[str, dict[str, int]]:
        """``{column: {value: rows}}``: categorical values of ``df`` never seen in training.

        :meth:`transform` encodes them as all zeros; this says how many rows that affects. A
        missing value counts as ``"<missing>"`` when training had none.
        """
        self._check_fitted()
        _require_columns(df, list(self.categorical), "feature", fitted=True)
        out: dict[str, dict[str, int]] = {}
        for c, cats in self.categorical.items():
            known = set(cats)
            counts: dict[str, int] = {}
            for k in _keys(df[c]):
                key = k if k is not None else MISSING_CATEGORY
                if key not in known:
                    counts[key] = counts.get(key, 0) + 1
            if counts:
                out[c] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return out

    def nonfinite_counts(self, df: pd.DataFrame) -> dict[str, int]:
        """``{column: rows}``: numeric feature columns of ``df`` holding NaN or infinite values."""
        self._check_fitted()
        _require_columns(df, list(self.numeric), "feature", fitted=True)
        return dict(_nonfinite_report(df, list(self.numeric)))

    def encode_targets(self, df: pd.DataFrame) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(targets, masks)`` of the target columns in ``self.targets`` (for evaluating on a new file)."""
        _require_columns(df, [e.column for e in self.targets.values()], "target", fitted=True)
        targets, masks = {}, {}
        for name, enc in self.targets.items():
            targets[name], masks[name] = enc.encode(df[enc.column])
        return targets, masks

    # --- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description of the fitted state."""
        self._check_fitted()
        return {
            "format_version": _FORMAT_VERSION,
            "impute": self.impute,
            "columns": list(self.columns),
            "numeric": {c: dict(v) for c, v in self.numeric.items()},
            "categorical": {c: list(v) for c, v in self.categorical.items()},
            "dtypes": dict(self.dtypes),
            "targets": {n: e.to_dict() for n, e in self.targets.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TabularPreprocessor:
        """Rebuild a preprocessor written by :meth:`to_dict`."""
        version = d.get("format_version")
        if version != _FORMAT_VERSION:
            raise ValueError(
                f"TabularPreprocessor format_version={version!r} is not supported (expected {_FORMAT_VERSION})"
            )
        self = cls(impute=str(d["impute"]))
        self.columns = [str(c) for c in d["columns"]]
        self.numeric = {str(c): {k: float(x) for k, x in v.items()} for c, v in d["numeric"].items()}
        self.categorical = {str(c): [str(x) for x in v] for c, v in d["categorical"].items()}
        self.dtypes = {str(c): str(t) for c, t in d.get("dtypes", {}).items()}
        missing = [c for c in self.columns if c not in self.numeric and c not in self.categorical]
        if missing:
            raise ValueError(f"TabularPreprocessor dict has no statistics for columns {missing!r}")
        self.targets = {str(n): TargetEncoder.from_dict(e) for n, e in d.get("targets", {}).items()}
        self._fitted = True
        return self

    def __repr__(self) -> str:
        if not self._fitted:
            return f"TabularPreprocessor(impute={self.impute!r}, unfitted)"
        return (
            f"TabularPreprocessor(impute={self.impute!r}, numeric={len(self.numeric)}, "
            f"categorical={len(self.categorical)}, features_out={self.n_features_out})"
        )


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str, *, fitted: bool = False) -> None:
    present = [str(c) for c in df.columns]
    have = set(present)
    for c in columns:
        if c not in have:
            extra = "; the preprocessor was fitted with it, so the data to transform must have it" if fitted else ""
            raise UnknownNameError(
                unknown_name_message(f"{what} column", c, present, f"(missing from the data{extra})")
            )


# --------------------------------------------------------------------------------------------
# reading files
# --------------------------------------------------------------------------------------------
def _find_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """``importlib.util.find_spec`` of a top-level package: locates it without importing it."""
    return importlib.util.find_spec(name)


def _module_available(name: str) -> bool:
    return _find_spec(name) is not None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``, ``.tsv``, ``.tsv.gz``) or Parquet (``.parquet``, ``.pq``) file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist (looked in {str(p.resolve().parent)!r})")
    if p.is_dir():
        raise IsADirectoryError(f"data path {str(p)!r} is a directory; pass a .csv or .parquet file")
    name = p.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        if not _module_available("pyarrow"):
            raise MissingDependencyError(
                f"reading {p.name!r} needs pyarrow; install it with: pip install 'multitask[parquet]'"
            )
        df = pd.read_parquet(p)
    elif name.endswith(_CSV_SUFFIXES):
        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        try:
            df = pd.read_csv(p, sep=sep)
        except pd.errors.EmptyDataError:
            raise ValueError(f"data file {str(p)!r} is empty: it has no header and no rows") from None
    else:
        raise ValueError(
            f"data file {p.name!r} has an unsupported extension; use one of "
            f"{', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}"
        )
    if len(df) == 0:
        raise ValueError(f"data file {str(p)!r} has a header but no rows")
    return df


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(_CSV_SUFFIXES + _PARQUET_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_table(
    path: str | Path,
    tasks: Sequence[str],
    *,
    features: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    split_seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    impute: str = "error",
    name: str | None = None,
) -> MultiTaskData:
    """Load a CSV/Parquet file as multi-task data; see :func:`from_frame` for the arguments.

    Args:
        path: a ``.csv``, ``.csv.gz``, ``.tsv``, ``.tsv.gz``, ``.parquet`` or ``.pq`` file.
        name: dataset name (default: the file name without its extension).
    """
    p = Path(path)
    df = read_table(p)
    return from_frame(
        df,
        tasks,
        features=features,
        drop=drop,
        split_seed=split_seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        impute=impute,
        name=name if name is not None else _stem(p),
        source=str(p),
    )


def from_frame(
    df: pd.DataFrame,
    tasks: Sequence[str],
    *,
    features: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    split_seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    impute: str = "error",
    name: str = "table",
    source: str | None = None,
) -> MultiTaskData:
    """Build multi-task data from a pandas DataFrame.

    Args:
        df: one row per sample.
        tasks: task specs ``"column:kind"`` or ``"column:binary:POSITIVE"``; the task is named
            after its column.
        features: input columns (default: every column that is neither a target nor dropped).
        drop: columns never used as inputs (identifiers, leaks).
        split_seed: seed of the train/val/test split (independent of the training seed).
        val_fraction: fraction of rows for validation.
        test_fraction: fraction of rows for test.
        impute: ``"error"``, ``"mean"`` or ``"median"`` for NaN/inf in numeric features.
        name: dataset name.
        source: where the frame came from (recorded in ``info``).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"from_frame expects a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError(f"dataset {name!r} has no rows")
    specs = _parse_specs(tasks)
    train_idx, val_idx, test_idx = split_indices(
        len(df), seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    info: dict[str, Any] = {"source": source} if source is not None else {}
    info["split"] = {"split_seed": split_seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    return build_tabular(
        df, specs, (train_idx, val_idx, test_idx), features=features, drop=drop, impute=impute, name=name, info=info
    )


def _parse_specs(tasks: Sequence[str]) -> list[TaskSpec]:
    if isinstance(tasks, str):
        tasks = [tasks]
    specs = [s if isinstance(s, TaskSpec) else parse_task_spec(s) for s in tasks]
    if not specs:
        raise ValueError("no tasks given; pass at least one task spec like 'income:binary'")
    seen: set[str] = set()
    for s in specs:
        if s.column in seen:
            raise ValueError(f"duplicate task {s.column!r}: each target column may be used by one task only")
        seen.add(s.column)
    return specs


def build_tabular(
    df: pd.DataFrame,
    specs: Sequence[TaskSpec],
    splits: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]],
    *,
    features: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    impute: str = "error",
    name: str = "table",
    info: dict[str, Any] | None = None,
) -> MultiTaskData:
    """Build :class:`MultiTaskData` from a frame, parsed specs and given row splits (used by loaders)."""
    df = df.reset_index(drop=True)
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise ValueError(f"dataset {name!r} has duplicate column names {dup!r}; rename them")
    df.columns = pd.Index(columns)
    targets = [s.column for s in specs]
    _require_columns(df, targets, "target")
    _require_columns(df, list(drop), "drop")
    if features is not None:
        _require_columns(df, list(features), "feature")
        clash = [c for c in features if c in targets]
        if clash:
            raise ValueError(
                f"columns {clash!r} are listed both as features and as task targets; remove them from features"
            )
        feature_cols = [str(c) for c in features if c not in set(drop)]
    else:
        feature_cols = [c for c in columns if c not in set(targets) and c not in set(drop)]
    if not feature_cols:
        raise ValueError(f"dataset {name!r} has no feature columns left after removing targets and drop={list(drop)!r}")
    train_idx, val_idx, test_idx = splits

    encoders: dict[str, TargetEncoder] = {}
    label_info: dict[str, Any] = {}
    for spec in specs:
        enc = TargetEncoder.fit(spec, df[spec.column], train_idx)
        values, mask = enc.encode(df[spec.column])
        n_train = int(mask[torch.from_numpy(train_idx)].sum())
        if n_train == 0:
            raise ValueError(
                f"task {spec.column!r} has no labelled rows in the training split ({int(mask.sum())} labelled rows "
                "in total); provide more labels or change split_seed"
            )
        encoders[spec.column] = enc
        entry: dict[str, Any] = {
            "labelled": {
                "train": n_train,
                "val": int(mask[torch.from_numpy(val_idx)].sum()),
                "test": int(mask[torch.from_numpy(test_idx)].sum()),
            },
            "missing": int((~mask).sum()),
        }
        if enc.classes is not None:
            counts = np.bincount(values[mask].long().numpy(), minlength=len(enc.classes))
            entry["classes"] = {c: int(n) for c, n in zip(enc.classes, counts, strict=True)}
        label_info[spec.column] = entry

    pre = TabularPreprocessor(impute=impute)
    if impute == "error":
        bad = _nonfinite_report(df, [c for c in feature_cols if _is_numeric(df[c])])
        if bad:
            raise _nonfinite_error(bad, len(df))
    pre.fit(df.iloc[train_idx], feature_cols)
    pre.targets = encoders
    x = torch.from_numpy(pre.transform(df))
    all_targets, all_masks = pre.encode_targets(df)

    def split(idx: NDArray[np.int64]) -> TensorSplit:
        t = torch.from_numpy(idx)
        return TensorSplit(
            x.index_select(0, t).contiguous(),
            {n: v.index_select(0, t) for n, v in all_targets.items()},
            {n: m.index_select(0, t) for n, m in all_masks.items()},
        )

    meta = dict(info or {})
    meta.setdefault("rows", {"total": len(df), "train": len(train_idx), "val": len(val_idx), "test": len(test_idx)})
    meta["labels"] = label_info
    meta["features"] = {"columns": feature_cols, "numeric": list(pre.numeric), "categorical": list(pre.categorical)}
    return MultiTaskData(
        name=name,
        tasks=[encoders[s.column].task() for s in specs],
        train=split(train_idx),
        val=split(val_idx),
        test=split(test_idx),
        feature_names=pre.feature_names_out,
        preprocessor=pre,
        info=meta,
    )


def package_file(package: str, *parts: str, install: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package.

    Raises:
        MissingDependencyError: the package (or the file) is absent; the message gives ``install``.
    """
    spec = _find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingDependencyError(f"this dataset needs the {package!r} package; install it with: {install}")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.is_file():
        raise MissingDependencyError(
            f"the installed {package!r} package has no file {str(path)!r}; reinstall it with: {install}"
        )
    return path
