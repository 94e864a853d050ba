"""Drift monitoring: compare new data, and the model's predictions on it, with the training data.

Every artifact written at the end of training holds a *training reference* (``reference.json``,
see :func:`build_reference`): a compact description of the training split's feature columns and
of the model's predictions on it. :func:`drift_report` compares new data with it:

* numeric columns: the population stability index (PSI) over 10 bins cut at the training deciles,
  and a two-sample Kolmogorov-Smirnov test against a seeded sample of up to 2,000 training values;
* categorical columns: the total variation distance between the category frequencies (a missing
  value is the category ``"<missing>"``), and the categories never seen in training with their share;
* each served task's predictions: PSI and KS on the positive-class probability (binary) or the
  predicted value (regression); total variation between predicted-class frequencies (multiclass).

Numeric values are compared as the model sees them (after imputation, in float32), so the
reference and the new data go through the same preprocessing. ``multitask monitor`` prints the
report, writes it as JSON and exits 1 when drift reaches a threshold, so it can gate a scheduled job.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from .artifact import InputData, Predictor, _task_prediction
from .data.tabular import MISSING_CATEGORY, _keys

__all__ = [
    "PSI_EPSILON",
    "REFERENCE_FORMAT_VERSION",
    "STATUSES",
    "DriftReport",
    "DriftRow",
    "MissingReferenceError",
    "attach_reference",
    "build_reference",
    "drift_report",
    "ks_test",
    "psi",
    "reference_from_encoded",
    "total_variation",
]

REFERENCE_FORMAT_VERSION = 1
PSI_EPSILON = 1e-4
"""An empty bin's share is raised to this before the PSI's logarithm (so one empty bin adds a
large but finite term instead of infinity)."""
STATUSES: tuple[str, ...] = ("ok", "warn", "alert")
Status = Literal["ok", "warn", "alert"]
_TENSOR_COLUMNS_MAX = 16  # tensor inputs with at most this many values: one column per value
_TENSOR_SUMMARIES = ("mean", "std", "min", "max")
_RESAVE = (
    "re-save it with `python -c \"from multitask.experiment import save_artifact; save_artifact('RUN_DIR')\"` "
    "(it recomputes the reference from the run's training data), or for a model built in Python call "
    "multitask.monitor.attach_reference(predictor, training_data) then predictor.save(path)"
)


class MissingReferenceError(ValueError):
    """The artifact holds no training reference (written before monitoring existed, or built in Python)."""


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------
def psi(expected: ArrayLike, actual: ArrayLike, *, eps: float = PSI_EPSILON) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` of two bin-share vectors.

    Args:
        expected: the reference shares per bin (training).
        actual: the new data's shares per bin, same length.
        eps: an empty bin's share is raised to ``eps`` (shares are not renormalised).

    Returns:
        0 for identical distributions; by convention < 0.1 is stable, 0.1-0.25 a moderate shift,
        >= 0.25 a major one.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError(
            f"psi: expected has shape {list(e.shape)} and actual {list(a.shape)}; pass two 1-D share vectors of one length"
        )
    if not eps > 0:
        raise ValueError(f"psi: eps={eps!r} must be positive, e.g. {PSI_EPSILON}")
    e, a = np.maximum(e, eps), np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_test(reference: ArrayLike, current: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: ``(statistic, p-value)``.

    The statistic is the largest gap between the two empirical distribution functions; the p-value
    is scipy's (exact for small samples, asymptotic otherwise). NaN values are dropped.
    """
    from scipy.stats import ks_2samp

    r = np.asarray(reference, dtype=np.float64).ravel()
    c = np.asarray(current, dtype=np.float64).ravel()
    r, c = r[np.isfinite(r)], c[np.isfinite(c)]
    if r.size == 0 or c.size == 0:
        return math.nan, math.nan
    with warnings.catch_warnings():  # "exact calculation unsuccessful, switching to asymp" is not news
        warnings.simplefilter("ignore", RuntimeWarning)
        result = ks_2samp(r, c)
    return float(result.statistic), float(result.pvalue)


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Total variation distance ``0.5 * sum(|p_k - q_k|)`` over the union of categories (0 to 1)."""
    keys = set(p) | set(q)
    return 0.5 * float(sum(abs(float(p.get(k, 0.0)) - float(q.get(k, 0.0))) for k in keys))


def _bins(edges: ArrayLike, values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Shares of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(idx, minlength=np.size(edges) + 1).astype(np.float64)
    return counts / max(values.size, 1)


def _shares(keys: Sequence[str]) -> dict[str, float]:
    s = pd.Series(list(keys), dtype=object).value_counts()
    n = max(len(keys), 1)
    return {str(k): float(v) / n for k, v in s.items()}


def _round(x: float) -> float:
    return float(f"{x:.9g}")


# --------------------------------------------------------------------------------------------
# the reference
# --------------------------------------------------------------------------------------------
def _numeric_reference(
    values: NDArray[np.float64], *, bins: int, sample_size: int, rng: np.random.Generator
) -> dict[str, Any]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"kind": "numeric", "edges": [], "freq": [1.0], "sample": [], "count": 0}
    edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    sample = v if v.size <= sample_size else rng.choice(v, size=sample_size, replace=False)
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "freq": [_round(f) for f in _bins(edges, v)],
        "sample": [_round(float(x)) for x in np.sort(sample)],
        "count": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
    }


def _categorical_reference(keys: Sequence[str]) -> dict[str, Any]:
    shares = _shares(keys)
    return {"kind": "categorical", "freq": {k: _round(shares[k]) for k in sorted(shares)}, "count": len(keys)}


def _numeric_features(predictor: Predictor, x: Tensor) -> dict[str, NDArray[np.float64]]:
    """Numeric columns (table: back in original units; tensor: values or per-sample summaries)."""
    pre = predictor.preprocessor
    if pre is None:
        t = x.reshape(x.shape[0], -1)
        if t.shape[1] <= _TENSOR_COLUMNS_MAX:
            small = t.double().numpy()
            return {f"x[{i}]": small[:, i] for i in range(small.shape[1])}
        if t.shape[0] == 0:
            return {f"input_{s}": np.zeros(0) for s in _TENSOR_SUMMARIES}
        t = t.float()  # per-sample summaries in float32: no float64 copy of large (image) inputs
        return {
            "input_mean": t.mean(dim=1).double().numpy(),
            "input_std": t.std(dim=1, correction=0).double().numpy(),
            "input_min": t.amin(dim=1).double().numpy(),
            "input_max": t.amax(dim=1).double().numpy(),
        }
    flat = x.reshape(x.shape[0], -1).double().numpy()
    out: dict[str, NDArray[np.float64]] = {}
    j = 0
    for c in pre.columns:
        if c in pre.numeric:
            st = pre.numeric[c]
            out[c] = flat[:, j] * st["std"] + st["mean"]
            j += 1
        else:
            j += len(pre.categorical[c])
    return out


def _training_categories(predictor: Predictor, x: Tensor) -> dict[str, list[str]]:
    """Categorical columns of encoded training rows (one-hot back to category names)."""
    pre = predictor.preprocessor
    if pre is None:
        return {}
    flat = x.reshape(x.shape[0], -1).numpy()
    out: dict[str, list[str]] = {}
    j = 0
    for c in pre.columns:
        if c in pre.numeric:
            j += 1
            continue
        cats = pre.categorical[c]
        block = flat[:, j : j + len(cats)]
        idx = block.argmax(axis=1)
        known = block.max(axis=1) > 0
        names = np.asarray(cats, dtype=object)[idx] if cats else np.full(len(flat), "<unknown>", dtype=object)
        out[c] = [str(n) if k else "<unknown>" for n, k in zip(names, known, strict=True)]
        j += len(cats)
    return out


def _prediction_values(predictor: Predictor, x: Tensor) -> dict[str, tuple[str, Any]]:
    """Per served task (regression vectors: per output column): ``(kind, values)``."""
    outputs = predictor._forward(x, predictor.task_names, 4096)
    out: dict[str, tuple[str, Any]] = {}
    for t in predictor.tasks:
        p = _task_prediction(t, outputs[t.name])
        if t.kind == "regression":
            for name, values in p.columns().items():
                out[name] = ("regression", np.asarray(values, dtype=np.float64))
        elif t.kind == "binary":
            assert p.proba is not None
            out[t.name] = ("binary", np.asarray(p.proba, dtype=np.float64))
        else:
            assert p.proba is not None
            out[t.name] = ("multiclass", np.asarray(p.proba, dtype=np.float64))
    return out


def _class_names(predictor: Predictor, task: str, n: int) -> list[str]:
    classes = predictor.task(task).classes
    return [str(c) for c in classes] if classes is not None else [str(i) for i in range(n)]


def reference_from_encoded(
    predictor: Predictor,
    x: Tensor,
    *,
    bins: int = 10,
    sample_size: int = 2000,
    max_rows: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`build_reference` of inputs already encoded for the model (``[N, *input_shape]``)."""
    for name, value, low in (("bins", bins, 2), ("sample_size", sample_size, 1), ("max_rows", max_rows, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    n_total = int(x.shape[0])
    if n_total == 0:
        raise ValueError("the training data has no rows; a reference needs the training split's rows")
    rng = np.random.default_rng(seed)
    x = x.detach().cpu()
    if n_total > max_rows:
        rows = np.sort(rng.choice(n_total, size=max_rows, replace=False))
        x = x.index_select(0, torch.from_numpy(rows))
    features: dict[str, Any] = {}
    numeric = _numeric_features(predictor, x)
    categories = _training_categories(predictor, x)
    order = predictor.input_columns if predictor.preprocessor is not None else list(numeric)
    for c in order or []:
        if c in numeric:
            features[c] = _numeric_reference(numeric[c], bins=bins, sample_size=sample_size, rng=rng)
        else:
            features[c] = _categorical_reference(categories[c])
    predictions: dict[str, Any] = {}
    for name, (kind, values) in _prediction_values(predictor, x).items():
        if kind == "multiclass":
            names = _class_names(predictor, name, values.shape[1])
            picked = [names[i] for i in values.argmax(axis=1)]
            shares = _shares(picked)
            predictions[name] = {
                "kind": "multiclass",
                "classes": names,
                "freq": {c: _round(shares.get(c, 0.0)) for c in names},
                "mean_proba": [_round(float(m)) for m in values.mean(axis=0)],
                "count": int(values.shape[0]),
            }
        else:
            entry = _numeric_reference(values, bins=bins, sample_size=sample_size, rng=rng)
            entry["kind"] = kind
            predictions[name] = entry
    return {
        "format_version": REFERENCE_FORMAT_VERSION,
        "source": "training split",
        "input": "table" if predictor.preprocessor is not None else "tensor",
        "rows": int(x.shape[0]),
        "rows_total": n_total,
        "bins": bins,
        "sample_size": sample_size,
        "seed": seed,
        "features": features,
        "predictions": predictions,
    }


def build_reference(
    predictor: Predictor,
    data: InputData,
    *,
    bins: int = 10,
    sample_size: int = 2000,
    max_rows: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The training reference of ``predictor`` from its training data (stored as ``reference.json``).

    Args:
        predictor: the trained model.
        data: the training rows, in any form :meth:`Predictor.predict` takes.
        bins: numeric columns and binary/regression predictions are cut at ``bins`` training
            quantiles (fewer when values repeat).
        sample_size: the seeded sample of training values kept per numeric column and task for the
            KS test.
        max_rows: a larger training split is subsampled (seeded) to this many rows first.
        seed: the sampling seed.

    Returns:
        A JSON-able dict: per feature column (tables: the raw columns; tensor inputs: one column per
        input value when an input has at most 16 values, else the per-sample ``input_mean``,
        ``input_std``, ``input_min`` and ``input_max`` of the flattened input) its bin edges, bin
        shares and sample (numeric) or category shares (categorical); per served task the same for
        its predictions (multiclass: predicted-class shares and mean probabilities).
    """
    x = predictor.encode(data, unknown_categories="ignore")
    return reference_from_encoded(predictor, x, bins=bins, sample_size=sample_size, max_rows=max_rows, seed=seed)


def attach_reference(predictor: Predictor, data: InputData, **kwargs: Any) -> Predictor:
    """Store :func:`build_reference` of the training ``data`` in ``predictor`` (saved with it); returns it."""
    predictor.reference = build_reference(predictor, data, **kwargs)
    return predictor


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
@dataclass
class DriftRow:
    """The drift of one feature column or one task's predictions.

    Attributes:
        name: the column or task (a vector regression target: ``<task>_<i>``).
        kind: ``numeric`` / ``categorical`` (features), ``binary`` / ``multiclass`` / ``regression`` (tasks).
        status: ``ok``, ``warn`` or ``alert``.
        psi: population stability index (numeric, binary, regression; also categorical and
            multiclass, over the categories, for information).
        ks_statistic, ks_pvalue: KS test against the training sample (numeric, binary, regression).
        tv_distance: total variation distance of category / predicted-class shares.
        new_categories: categories never seen in training and their share of the new rows.
        new_share: their total share.
        reason: why the status is not ok.
    """

    name: str
    kind: str
    status: str = "ok"
    psi: float | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    tv_distance: float | None = None
    new_categories: dict[str, float] = field(default_factory=dict)
    new_share: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@dataclass
class DriftReport:
    """:func:`drift_report`'s result: per-feature and per-task rows and the overall status."""

    features: list[DriftRow]
    predictions: list[DriftRow]
    rows: int
    reference_rows: int
    thresholds: dict[str, float]

    @property
    def status(self) -> str:
        """The worst status of any row."""
        worst = 0
        for r in (*self.features, *self.predictions):
            worst = max(worst, STATUSES.index(r.status))
        return STATUSES[worst]

    def exceeds(self, level: str) -> bool:
        """Whether any row is at or above ``level`` (``warn`` or ``alert``)."""
        if level not in ("warn", "alert"):
            raise ValueError(f"level={level!r} must be 'warn' or 'alert'")
        return STATUSES.index(self.status) >= STATUSES.index(level)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        return {
            "status": self.status,
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "thresholds": dict(self.thresholds),
            "features": [r.to_dict() for r in self.features],
            "predictions": [r.to_dict() for r in self.predictions],
        }

    def table(self) -> str:
        """A plain-text table, one line per feature and per task."""

        def num(v: float | None, spec: str = ".3f") -> str:
            if v is None or not math.isfinite(v):
                return "-"
            return format(v, ".1e") if spec == "p" and v < 1e-3 else format(v, ".3f" if spec == "p" else spec)

        header = ["", "name", "kind", "status", "PSI", "KS", "KS p", "TV", "new", "reason"]
        lines: list[list[str]] = []
        for section, rows in (("feature", self.features), ("prediction", self.predictions)):
            for r in rows:
                new = num(r.new_share) if r.new_share else "-"
                lines.append(
                    [
                        section,
                        r.name,
                        r.kind,
                        r.status.upper() if r.status != "ok" else "ok",
                        num(r.psi),
                        num(r.ks_statistic),
                        num(r.ks_pvalue, "p"),
                        num(r.tv_distance),
                        new,
                        r.reason,
                    ]
                )
        widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(header)]
        out = [f"drift: {self.rows} new rows against {self.reference_rows} training rows: {self.status.upper()}"]
        for row in [header, *lines]:
            out.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        return "\n".join(out)


def _numeric_drift(
    name: str,
    kind: str,
    ref: Mapping[str, Any],
    values: NDArray[np.float64],
    *,
    warn: float,
    alert: float,
    alpha: float,
) -> DriftRow:
    v = values[np.isfinite(values)]
    row = DriftRow(name, kind)
    if v.size == 0:
        row.status, row.reason = "alert", "no finite value"
        return row
    edges = [float(e) for e in ref["edges"]]
    row.psi = psi(ref["freq"], _bins(edges, v))
    row.ks_statistic, row.ks_pvalue = ks_test(ref["sample"], v)
    if row.psi >= alert:
        row.status, row.reason = "alert", f"PSI >= {alert:g}"
    elif row.psi >= warn:
        row.status, row.reason = "warn", f"PSI >= {warn:g}"
    elif row.ks_pvalue is not None and math.isfinite(row.ks_pvalue) and row.ks_pvalue < alpha:
        row.status, row.reason = "warn", f"KS p < {alpha:g}"
    return row


def _share_drift(name: str, kind: str, ref: Mapping[str, float], keys: Sequence[str], *, shift: float) -> DriftRow:
    shares = _shares(keys)
    row = DriftRow(name, kind)
    row.tv_distance = total_variation(ref, shares)
    cats = sorted(set(ref) | set(shares))
    row.psi = psi([float(ref.get(c, 0.0)) for c in cats], [shares.get(c, 0.0) for c in cats])
    new = {k: _round(s) for k, s in sorted(shares.items(), key=lambda kv: -kv[1]) if k not in ref}
    row.new_categories = new
    row.new_share = float(sum(shares[k] for k in new))
    if row.tv_distance >= shift:
        row.status, row.reason = "alert", f"TV >= {shift:g}"
    elif row.tv_distance >= shift / 2:
        row.status, row.reason = "warn", f"TV >= {shift / 2:g}"
    elif new:
        row.status, row.reason = "warn", f"{len(new)} new categor{'y' if len(new) == 1 else 'ies'}"
    return row


def _threshold(name: str, value: float, *, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low < float(value) < high):
        bound = f"between {low:g} and {high:g}" if math.isfinite(high) else f"above {low:g}"
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"{name}={value!r} ({flag}) must be a number {bound} (exclusive)")
    return float(value)


def drift_report(
    predictor: Predictor,
    data: InputData,
    *,
    psi_warn: float = 0.1,
    psi_alert: float = 0.25,
    ks_alpha: float = 0.01,
    category_shift: float = 0.1,
    prediction_psi_alert: float = 0.25,
) -> DriftReport:
    """Compare ``data`` (new rows) and the model's predictions on it with the training reference.

    Status rules (each row; the report's status is the worst row's):

    * numeric feature, binary probability, regression value: ``alert`` when PSI >= ``psi_alert``
      (``prediction_psi_alert`` for predictions), ``warn`` when PSI >= ``psi_warn`` or the KS
      p-value < ``ks_alpha``;
    * categorical feature, multiclass predicted class: ``alert`` when the total variation distance
      >= ``category_shift``, ``warn`` when it is >= half of it or (features) a category never seen
      in training appears.

    Args:
        predictor: a model whose artifact holds a training reference (:func:`multitask.load`).
        data: the new rows, in any form :meth:`Predictor.predict` takes (a DataFrame, a CSV/Parquet
            path; for a tensor model, an array or ``.npy``/``.pt`` path). PSI is noisy on few rows:
            a few hundred rows give stable values.
        psi_warn, psi_alert: PSI thresholds of features (and ``psi_warn`` of predictions).
        ks_alpha: KS significance level.
        category_shift: total variation threshold.
        prediction_psi_alert: PSI alert threshold of predictions.

    Raises:
        MissingReferenceError: the artifact has no training reference (says how to write one).
        ValueError: bad thresholds, no rows, or data the model cannot take (the errors of
            :meth:`Predictor.predict`: a missing feature column, a non-numeric value, ...).
    """
    psi_warn = _threshold("psi_warn", psi_warn)
    psi_alert = _threshold("psi_alert", psi_alert)
    prediction_psi_alert = _threshold("prediction_psi_alert", prediction_psi_alert)
    ks_alpha = _threshold("ks_alpha", ks_alpha, high=1.0)
    category_shift = _threshold("category_shift", category_shift, high=1.0)
    if psi_warn > psi_alert:
        raise ValueError(
            f"psi_warn={psi_warn!r} is above psi_alert={psi_alert!r}; the warn level must not exceed the alert "
            "level: lower psi_warn (--psi-warn) or raise psi_alert (--psi-alert)"
        )
    ref = predictor.reference
    if ref is None:
        raise MissingReferenceError(
            f"this artifact has no training reference, so there is nothing to compare with; {_RESAVE}"
        )
    version = ref.get("format_version")
    if not isinstance(version, int) or version > REFERENCE_FORMAT_VERSION:
        raise MissingReferenceError(
            f"this artifact's training reference has format_version={version!r}; this multitask reads "
            f"{REFERENCE_FORMAT_VERSION}: upgrade multitask, or {_RESAVE}"
        )
    frame: pd.DataFrame | None = None
    if predictor.preprocessor is not None:
        frame = predictor._as_frame(data)
        data = frame
    x = predictor.encode(data, unknown_categories="ignore")
    n = int(x.shape[0])
    if n == 0:
        raise ValueError(
            "the data has no rows; monitoring compares distributions and needs rows (a few hundred give stable values)"
        )
    numeric = _numeric_features(predictor, x)
    feature_rows: list[DriftRow] = []
    for name, r in ref["features"].items():
        if r["kind"] == "numeric":
            feature_rows.append(
                _numeric_drift(name, "numeric", r, numeric[name], warn=psi_warn, alert=psi_alert, alpha=ks_alpha)
            )
        else:
            assert frame is not None
            column = frame[frame.columns[[str(c) for c in frame.columns].index(name)]]
            keys = [k if k is not None else MISSING_CATEGORY for k in _keys(column)]
            feature_rows.append(_share_drift(name, "categorical", r["freq"], keys, shift=category_shift))
    prediction_rows: list[DriftRow] = []
    values = _prediction_values(predictor, x)
    for name, r in ref["predictions"].items():
        if name not in values:
            continue
        kind, v = values[name]
        if kind == "multiclass":
            names = _class_names(predictor, name, v.shape[1])
            row = _share_drift(name, kind, r["freq"], [names[i] for i in v.argmax(axis=1)], shift=category_shift)
            row.new_categories, row.new_share = {}, None
            prediction_rows.append(row)
        else:
            prediction_rows.append(
                _numeric_drift(name, kind, r, v, warn=psi_warn, alert=prediction_psi_alert, alpha=ks_alpha)
            )
    return DriftReport(
        features=feature_rows,
        predictions=prediction_rows,
        rows=n,
        reference_rows=int(ref.get("rows", 0)),
        thresholds={
            "psi_warn": psi_warn,
            "psi_alert": psi_alert,
            "ks_alpha": ks_alpha,
            "category_shift": category_shift,
            "prediction_psi_alert": prediction_psi_alert,
        },
    )
