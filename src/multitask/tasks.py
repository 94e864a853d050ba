"""Tasks: a name, a kind, a loss, metrics with directions, and label-mask handling.

A :class:`Task` turns a model's raw output for one task into a loss and metrics. Targets may be
missing per sample: every loss and metric takes a boolean ``mask`` and never sees an unlabelled
row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import METRICS, Metric
from .registry import UnknownNameError, unknown_name_message

__all__ = ["KINDS", "Task", "TaskKind"]

TaskKind = Literal["binary", "multiclass", "regression"]
KINDS: tuple[str, ...] = ("binary", "multiclass", "regression")

PerSampleLoss = Callable[[Tensor, Tensor], Tensor]

_DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "accuracy", "f1"),
    "multiclass": ("accuracy",),
    "regression": ("rmse", "mae", "r2"),
}


def _binary_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(outputs.reshape(-1), targets.float(), reduction="none")


def _multiclass_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets.long(), reduction="none")


def _regression_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    if targets.dim() > 1:  # a vector target [N, D]: the mean squared error over its D features
        return ((outputs.reshape(targets.shape) - targets.float()) ** 2).mean(dim=1)
    return (outputs.reshape(-1) - targets.float()) ** 2


_DEFAULT_LOSSES: dict[str, PerSampleLoss] = {
    "binary": _binary_loss,
    "multiclass": _multiclass_loss,
    "regression": _regression_loss,
}


@dataclass(frozen=True)
class Task:
    """One prediction task of a multi-task model.

    Args:
        name: task name; the key of the model's output dict and of the batch's targets.
        kind: "binary" (one logit, targets 0/1), "multiclass" (``num_classes`` logits, integer
            targets) or "regression" (``target_dim`` outputs, float targets).
        num_classes: number of classes of a multiclass task (2 or more).
        loss: optional loss ``loss(outputs, targets)`` returning per-sample values ``[N]`` or a
            mean (any ``torch.nn`` loss works; see :meth:`per_sample_loss` for shapes); defaults
            to BCE-with-logits, cross-entropy or squared error by kind.
        metrics: metric names from :data:`multitask.metrics.METRICS` or :class:`Metric` objects;
            the first is the task's main metric (used by Δm). Defaults by kind: binary
            (auc, accuracy, f1), multiclass (accuracy), regression (rmse, mae, r2).
        classes: label names of a classification task, in encoded order.
        target_mean: mean used to standardise a regression target (metrics are reported on the
            original scale: ``y = target_mean + target_std * z``).
        target_std: standard deviation used to standardise a regression target.
        auxiliary: an auxiliary task is trained but neither evaluated in Δm nor served.
        target_dim: width of a regression target: 1 (a scalar, targets ``[N]``) or ``D > 1`` (a
            vector, targets ``[N, D]``, e.g. an input reconstruction; its per-sample loss is the
            mean squared error over the ``D`` features).
    """

    name: str
    kind: TaskKind
    num_classes: int | None = None
    loss: PerSampleLoss | None = field(default=None, compare=False)
    metrics: Sequence[str | Metric] | None = None
    classes: tuple[str, ...] | None = None
    target_mean: float = 0.0
    target_std: float = 1.0
    auxiliary: bool = False
    target_dim: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not self.name.isprintable():
            raise ValueError(f"Task name must be a non-empty printable string, got {self.name!r}")
        if self.kind not in KINDS:
            raise UnknownNameError(unknown_name_message("task kind", str(self.kind), list(KINDS)))
        if self.kind == "multiclass":
            if self.num_classes is None or self.num_classes < 2:
                raise ValueError(
                    f"Task {self.name!r}: num_classes={self.num_classes!r}; a multiclass task needs "
                    "num_classes >= 2 (use kind='binary' for two classes with one logit)"
                )
        elif self.num_classes not in (None, 2 if self.kind == "binary" else None):
            raise ValueError(f"Task {self.name!r}: num_classes={self.num_classes!r} only applies to kind='multiclass'")
        if isinstance(self.target_dim, bool) or not isinstance(self.target_dim, int) or self.target_dim < 1:
            raise ValueError(f"Task {self.name!r}: target_dim={self.target_dim!r} must be a positive integer")
        if self.target_dim != 1 and self.kind != "regression":
            raise ValueError(
                f"Task {self.name!r}: target_dim={self.target_dim} only applies to kind='regression' "
                "(vector targets); use num_classes for a multiclass task"
            )
        if not (math.isfinite(self.target_std) and self.target_std > 0):
            raise ValueError(f"Task {self.name!r}: target_std={self.target_std!r} must be finite and > 0")
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        resolved = self._resolve_metrics()
        object.__setattr__(self, "_metrics", resolved)

    def _resolve_metrics(self) -> tuple[Metric, ...]:
        names = self.metrics if self.metrics is not None else _DEFAULT_METRICS[self.kind]
        if len(names) == 0:
            raise ValueError(f"Task {self.name!r}: metrics must name at least one metric")
        out = []
        for m in names:
            if isinstance(m, Metric):
                out.append(m)
            elif m in METRICS:
                out.append(METRICS[m])
            else:
                raise UnknownNameError(unknown_name_message(f"metric for task {self.name!r}:", str(m), list(METRICS)))
        return tuple(out)

    # --- structure -------------------------------------------------------------------------
    @property
    def output_dim(self) -> int:
        """Width of the head's output: ``num_classes`` for multiclass, ``target_dim`` for regression, 1 for binary."""
        if self.kind == "multiclass" and self.num_classes is not None:
            return self.num_classes
        return self.target_dim

    @property
    def metric_objects(self) -> tuple[Metric, ...]:
        """The resolved metrics, main metric first."""
        return self._metrics  # type: ignore[attr-defined,no-any-return]

    @property
    def main_metric(self) -> Metric:
        """The metric used for Δm."""
        return self.metric_objects[0]

    @property
    def directions(self) -> dict[str, bool]:
        """``{metric name: higher_is_better}``."""
        return {m.name: m.higher_is_better for m in self.metric_objects}

    # --- loss and metrics ------------------------------------------------------------------
    def per_sample_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Per-sample loss (no reduction) on already-masked rows.

        A custom ``loss`` receives outputs of shape ``[N]`` for single-output tasks (binary,
        regression), ``[N, C]`` for multiclass and ``[N, D]`` for a vector regression target, with
        float targets for binary and regression tasks and int64 for multiclass: the conventions of
        ``torch.nn`` losses. It may return per-sample values ``[N]`` or an already-reduced mean (a
        scalar).
        """
        if self.loss is None:
            return _DEFAULT_LOSSES[self.kind](outputs, targets)
        if self.kind == "multiclass":
            targets = targets.long()
        elif self.target_dim > 1:
            outputs, targets = outputs.reshape(targets.shape), targets.float()
        else:
            outputs, targets = outputs.reshape(-1), targets.float()
        result = self.loss(outputs, targets)
        if result.dim() == 0:
            return result
        if result.shape != (targets.shape[0],):
            raise ValueError(
                f"Task {self.name!r}: the custom loss returned shape {tuple(result.shape)}; it must return "
                f"per-sample losses ({targets.shape[0]},) (reduction='none') or a scalar mean"
            )
        return result

    def compute_loss(self, outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean loss over the labelled rows; an exact zero (still in the graph) when none is labelled.

        Unlabelled rows are removed before the loss function runs, so a placeholder target (or a
        NaN) in a missing row can never reach the loss or its gradient.
        """
        if outputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"Task {self.name!r}: outputs have {outputs.shape[0]} rows but targets have {targets.shape[0]}"
            )
        if mask is not None:
            if mask.shape[0] != targets.shape[0]:
                raise ValueError(
                    f"Task {self.name!r}: mask has {mask.shape[0]} rows but targets have {targets.shape[0]}"
                )
            if not bool(mask.all()):
                idx = mask.nonzero(as_tuple=True)[0]
                if idx.numel() == 0:
                    return outputs.sum() * 0.0
                outputs = outputs.index_select(0, idx)
                targets = targets.index_select(0, idx)
        return self.per_sample_loss(outputs, targets).mean()

    def unscale(self, values: Tensor) -> Tensor:
        """Map standardised regression values back to the original scale (identity otherwise)."""
        if self.kind != "regression":
            return values
        return values.double() * self.target_std + self.target_mean

    def evaluate(self, outputs: Tensor, targets: Tensor, mask: Tensor | None = None) -> dict[str, float]:
        """Every metric on the labelled rows, on the original target scale."""
        if mask is not None:
            idx = mask.nonzero(as_tuple=True)[0]
            outputs, targets = outputs.index_select(0, idx), targets.index_select(0, idx)
        if targets.numel() == 0:
            return {m.name: math.nan for m in self.metric_objects}
        outputs, targets = self.unscale(outputs), self.unscale(targets)
        return {m.name: m(outputs, targets) for m in self.metric_objects}

    def predict(self, outputs: Tensor) -> Tensor:
        """Probabilities (classification) or values on the original scale (regression)."""
        if self.kind == "binary":
            return torch.sigmoid(outputs.reshape(-1))
        if self.kind == "multiclass":
            return torch.softmax(outputs, dim=-1)
        return self.unscale(outputs.reshape(-1) if self.target_dim == 1 else outputs.reshape(outputs.shape[0], -1))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (custom loss functions and metric objects are named only)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "num_classes": self.num_classes,
            "metrics": [m.name for m in self.metric_objects],
            "classes": list(self.classes) if self.classes is not None else None,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "auxiliary": self.auxiliary,
            "target_dim": self.target_dim,
            "custom_loss": self.loss is not None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        """Rebuild a task written by :meth:`to_dict` (built-in metrics only)."""
        return cls(
            name=d["name"],
            kind=d["kind"],
            num_classes=d.get("num_classes"),
            metrics=tuple(m for m in d.get("metrics", []) if m in METRICS) or None,
            classes=tuple(d["classes"]) if d.get("classes") is not None else None,
            target_mean=float(d.get("target_mean", 0.0)),
            target_std=float(d.get("target_std", 1.0)),
            auxiliary=bool(d.get("auxiliary", False)),
            target_dim=int(d.get("target_dim", 1)),
        )
