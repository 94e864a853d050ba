"""Per-task metrics and the multi-task performance measure Δm.

Metric functions take the model's raw outputs for the *labelled* rows only (shape ``[N, out]``)
and the matching targets (shape ``[N]``, or ``[N, D]`` for a vector regression target), both on
the task's original scale, and return a float.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "delta_m",
    "f1",
    "mae",
    "mse",
    "r2",
    "relative_change",
    "rmse",
    "roc_auc",
]


@dataclass(frozen=True)
class Metric:
    """A named metric and its direction.

    Args:
        name: metric name shown in tables ("auc", "rmse", ...).
        fn: ``fn(outputs, targets) -> float`` on labelled rows only.
        higher_is_better: direction, used by Δm and model selection.
    """

    name: str
    fn: Callable[[Tensor, Tensor], float]
    higher_is_better: bool

    def __call__(self, outputs: Tensor, targets: Tensor) -> float:
        return float(self.fn(outputs, targets))


def _binary_scores(outputs: Tensor) -> Tensor:
    return outputs.reshape(outputs.shape[0], -1)[:, 0].float()


def _labels(outputs: Tensor) -> Tensor:
    """Predicted labels: logit > 0 for one output column, argmax otherwise."""
    out = outputs.reshape(outputs.shape[0], -1)
    if out.shape[1] == 1:
        return (out[:, 0] > 0).long()
    return out.argmax(dim=1)


def accuracy(outputs: Tensor, targets: Tensor) -> float:
    """Fraction of correctly predicted labels (binary: logit > 0; multiclass: argmax)."""
    if targets.numel() == 0:
        return math.nan
    return float((_labels(outputs) == targets.long()).double().mean())


def roc_auc(outputs: Tensor, targets: Tensor) -> float:
    """Area under the ROC curve for a binary task (ties get the average rank); NaN if one class."""
    scores = _binary_scores(outputs).double()
    y = targets.reshape(-1).double()
    n_pos = float(y.sum())
    n_neg = float(y.numel()) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(scores)
    s_sorted = scores[order]
    ranks = torch.empty_like(scores)
    # average ranks over ties
    uniq, inverse, counts = torch.unique_consecutive(s_sorted, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    del uniq
    rank_sum = float(ranks[y > 0.5].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def f1(outputs: Tensor, targets: Tensor) -> float:
    """F1 score of the positive class of a binary task."""
    pred = _labels(outputs)
    y = targets.long().reshape(-1)
    tp = float(((pred == 1) & (y == 1)).sum())
    fp = float(((pred == 1) & (y == 0)).sum())
    fn = float(((pred == 0) & (y == 1)).sum())
    if tp == 0:
        return 0.0 if (fp + fn) > 0 else math.nan
    return 2 * tp / (2 * tp + fp + fn)


def _reg(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Predictions and targets in float64: ``[N]`` for a scalar target, ``[N, D]`` for a vector one."""
    y = targets.double()
    if y.dim() > 1:
        return outputs.reshape(y.shape).double(), y
    return outputs.reshape(outputs.shape[0], -1)[:, 0].double(), y


def mse(outputs: Tensor, targets: Tensor) -> float:
    """Mean squared error (over every entry for a vector target ``[N, D]``)."""
    if targets.numel() == 0:
        return math.nan
    pred, y = _reg(outputs, targets)
    return float(((pred - y) ** 2).mean())


def rmse(outputs: Tensor, targets: Tensor) -> float:
    """Root mean squared error."""
    return math.sqrt(mse(outputs, targets))


def mae(outputs: Tensor, targets: Tensor) -> float:
    """Mean absolute error (over every entry for a vector target ``[N, D]``)."""
    if targets.numel() == 0:
        return math.nan
    pred, y = _reg(outputs, targets)
    return float((pred - y).abs().mean())


def r2(outputs: Tensor, targets: Tensor) -> float:
    """Coefficient of determination R².

    For a vector target ``[N, D]``: ``1 - Σ SS_res / Σ SS_tot`` summed over the columns, each about
    its own mean (scikit-learn's ``multioutput="variance_weighted"``), so constant columns do not
    make it undefined.
    """
    if targets.shape[0] < 2:
        return math.nan
    pred, y = _reg(outputs, targets)
    ss_res = float(((pred - y) ** 2).sum())
    ss_tot = float(((y - y.mean(dim=0)) ** 2).sum())
    return math.nan if ss_tot == 0 else 1.0 - ss_res / ss_tot


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", accuracy, True),
    "auc": Metric("auc", roc_auc, True),
    "f1": Metric("f1", f1, True),
    "mse": Metric("mse", mse, False),
    "rmse": Metric("rmse", rmse, False),
    "mae": Metric("mae", mae, False),
    "r2": Metric("r2", r2, True),
}


def relative_change(multi: float, single: float, higher_is_better: bool) -> float:
    """Signed relative change of ``multi`` against ``single``: positive means ``multi`` is better.

    ``(-1)^l (M_m - M_b) / |M_b|`` with ``l = 1`` when lower is better (Maninis et al., CVPR 2019;
    Vandenhende et al., TPAMI 2021).
    """
    if single == 0 or math.isnan(single) or math.isnan(multi):
        return math.nan
    sign = 1.0 if higher_is_better else -1.0
    return sign * (multi - single) / abs(single)


def delta_m(
    multi: Mapping[str, Mapping[str, float]],
    single: Mapping[str, Mapping[str, float]],
    directions: Mapping[str, Mapping[str, bool]],
    *,
    averaging: Literal["per-task", "per-metric"] = "per-task",
) -> float:
    """Δm: mean signed relative change of a multi-task model against single-task baselines.

    Δm = 1/T Σ_t 1/K_t Σ_k (-1)^{l_tk} (M_m,tk - M_b,tk) / M_b,tk  (``averaging="per-task"``:
    metrics averaged within each task, then tasks averaged; Vandenhende et al. 2021 / LibMTL), or
    the plain mean over every (task, metric) pair (``averaging="per-metric"``; Maninis et al. 2019).
    Positive Δm means the multi-task model is better. Reported as a fraction (multiply by 100 for %).

    Args:
        multi: ``{task: {metric: value}}`` of the multi-task model.
        single: the same for the single-task baselines.
        directions: ``{task: {metric: higher_is_better}}``; only these metrics are used.
        averaging: "per-task" or "per-metric", see above.

    References:
        K.-K. Maninis, I. Radosavovic, I. Kokkinos. "Attentive Single-Tasking of Multiple Tasks",
        CVPR 2019. https://arxiv.org/abs/1904.08918
        S. Vandenhende et al. "Multi-Task Learning for Dense Prediction Tasks: A Survey",
        IEEE TPAMI 2021. https://arxiv.org/abs/2004.13379
    """
    if averaging not in ("per-task", "per-metric"):
        raise ValueError(f"averaging={averaging!r} is not valid; use 'per-task' or 'per-metric'")
    per_task: list[float] = []
    flat: list[float] = []
    for task, metrics in directions.items():
        if task not in multi or task not in single:
            raise KeyError(f"delta_m: task {task!r} is missing from the multi-task or single-task results")
        changes = [relative_change(multi[task][m], single[task][m], hib) for m, hib in metrics.items()]
        changes = [c for c in changes if not math.isnan(c)]
        if changes:
            per_task.append(sum(changes) / len(changes))
            flat.extend(changes)
    values = per_task if averaging == "per-task" else flat
    return sum(values) / len(values) if values else math.nan
