"""``TensorBoardLogger``: per-task scalars and gradient-cosine heatmaps in TensorBoard event files.

Uses :class:`torch.utils.tensorboard.SummaryWriter` (needs the ``tensorboard`` package), on rank 0
only. Browse with ``tensorboard --logdir runs/NAME/tensorboard``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ._tracking import TRACKING_EXTRA, epoch_scalars, safe_name
from .base import Callback

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from ..engine import StepInfo
    from ..trainer import Trainer

__all__ = ["TensorBoardLogger", "cosine_heatmap"]


def cosine_heatmap(matrix: list[list[float | None]], *, cell: int = 16) -> Tensor:
    """An RGB image ``[3, T*cell, T*cell]`` of a cosine matrix: blue -1, white 0, red +1, grey unknown."""
    if not isinstance(cell, int) or cell < 1:
        raise ValueError(f"cosine_heatmap: cell={cell!r} must be a positive number of pixels per cell")
    t = len(matrix)
    img = torch.full((3, t, t), 0.5)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v is None or not math.isfinite(v):
                continue
            c = max(-1.0, min(1.0, float(v)))
            if c >= 0:  # white -> red
                img[:, i, j] = torch.tensor([1.0, 1.0 - c, 1.0 - c])
            else:  # white -> blue
                img[:, i, j] = torch.tensor([1.0 + c, 1.0 + c, 1.0])
    return img.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)


class TensorBoardLogger(Callback):
    """Log a training to TensorBoard: per-task scalars per epoch, optional per-step values, cosine heatmaps.

    Per epoch (global step = epoch): the scalars ``train/<task>/loss``, ``val/<task>/<metric>``,
    ``weight/<task>``, ``train_loss``, ``val_loss`` and, when the epoch recorded gradient relations,
    ``relations/mean_cosine`` and ``relations/conflict_rate``, the image ``relations/cosine`` (a
    heatmap, rows and columns in task order) and the histogram ``relations/cosines`` of the
    off-diagonal cosines. Every ``log_every`` steps: ``step/loss/<task>`` and ``step/weight/<task>``.
    The config goes in as text (``config``).

    Args:
        log_dir: the event-file directory (``multitask train`` uses ``<run_dir>/tensorboard``).
        log_every: also log per-step task losses and weights every this many steps (0: per epoch only).
    """

    def __init__(self, *, log_dir: str | Path, log_every: int = 0) -> None:
        if not isinstance(log_dir, str | Path) or not str(log_dir).strip():
            raise ValueError(f"TensorBoardLogger: log_dir={log_dir!r} must be a directory path")
        if not isinstance(log_every, int) or isinstance(log_every, bool) or log_every < 0:
            raise ValueError(f"TensorBoardLogger: log_every={log_every!r} must be an integer >= 0 (0: per epoch only)")
        self.log_dir = Path(log_dir)
        self.log_every = log_every
        self.writer: SummaryWriter | None = None
        _writer_class()  # fail now, not after the first epoch, when tensorboard is missing

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main:
            return
        self.writer = _writer_class()(log_dir=str(self.log_dir))
        config = json.dumps(trainer.config, indent=2, default=str)
        self.writer.add_text("config", "    " + config.replace("\n", "\n    "), 0)

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        if self.writer is None or not self.log_every or trainer.global_step % self.log_every:
            return
        losses, weights, present = info.losses.tolist(), info.weights.tolist(), info.present.tolist()
        for name, loss, weight, here in zip(trainer.task_names, losses, weights, present, strict=True):
            if here:
                self.writer.add_scalar(f"step/loss/{safe_name(name)}", float(loss), trainer.global_step)
            self.writer.add_scalar(f"step/weight/{safe_name(name)}", float(weight), trainer.global_step)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        epoch = int(record.get("epoch", 0))
        for tag, value in epoch_scalars(record).items():
            self.writer.add_scalar(tag, value, epoch)
        relations = record.get("relations")
        if isinstance(relations, dict) and relations.get("cosine"):
            cos = relations["cosine"]
            self.writer.add_image("relations/cosine", cosine_heatmap(cos), epoch)
            off = [
                float(v)
                for i, row in enumerate(cos)
                for j, v in enumerate(row)
                if i != j and v is not None and math.isfinite(v)
            ]
            if off:
                self.writer.add_histogram("relations/cosines", torch.tensor(off), epoch)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _writer_class() -> type[SummaryWriter]:
    from ..data.base import MissingDependencyError

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise MissingDependencyError(
            f"the tensorboard logger needs the tensorboard package ({exc}); install it with: {TRACKING_EXTRA}"
        ) from None
    return SummaryWriter
