"""A progress bar with per-task running losses, and a one-line-per-epoch log."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from .base import Callback

if TYPE_CHECKING:
    from ..engine import StepInfo
    from ..trainer import Trainer

__all__ = ["ProgressBar"]


class ProgressBar(Callback):
    """tqdm bar per epoch with running per-task losses; prints a summary line per epoch.

    Args:
        label: prefix shown on the bar and the epoch lines (e.g. "multi-task").
        bar: show the live bar (off in quiet mode or when output is not a terminal).
        stream: where to write (default stderr).
    """

    def __init__(self, label: str = "", *, bar: bool | None = None, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self._pbar: tqdm[Any] | None = None
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def on_epoch_start(self, trainer: Trainer, epoch: int, num_batches: int, start: int) -> None:
        self._sums = {n: 0.0 for n in trainer.task_names}
        self._counts = {n: 0 for n in trainer.task_names}
        if self.bar:
            self._pbar = tqdm(
                total=num_batches,
                initial=start,
                desc=f"{self.label} epoch {epoch + 1}/{trainer.epochs}",
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
            )

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        for i, n in enumerate(trainer.task_names):
            if bool(info.present[i]):
                self._sums[n] += float(info.losses[i])
                self._counts[n] += 1
        if self._pbar is not None:
            self._pbar.update(1)
            self._pbar.set_postfix({n: f"{self._sums[n] / max(1, self._counts[n]):.3f}" for n in trainer.task_names})

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        val = record.get("val", {})
        parts = []
        for n in trainer.task_names:
            task = trainer.task(n)
            m = task.main_metric.name
            v = val.get(n, {}).get(m)
            parts.append(f"{n} {m}={v:.4f}" if isinstance(v, float) else n)
        print(
            f"[{self.label}] epoch {record['epoch']}/{trainer.epochs} train_loss={record['train_loss']:.4f} "
            f"val_loss={record['val_loss']:.4f} | " + ", ".join(parts),
            file=self.stream,
            flush=True,
        )
