"""Callback interface: the trainer calls these hooks; callbacks never change the training math."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..data.batch import Batch
    from ..engine import StepInfo
    from ..trainer import Trainer

__all__ = ["Callback"]


class Callback:
    """Base class with no-op hooks. Override the ones you need.

    Attributes:
        gramian_every: ask the engine for the task-gradient Gramian every this many steps even when
            the weighting needs none (0: only the Gramians the method computes anyway reach
            :meth:`on_step_end`). The trainer uses the greatest common divisor of its callbacks' values.
    """

    gramian_every: int = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step (also when resuming)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int, num_batches: int, start: int) -> None:
        """Before the first batch of an epoch (``start`` > 0 when resuming mid-epoch)."""

    def on_batch_start(self, trainer: Trainer, batch: Batch) -> None:
        """Before the step on ``batch`` (this rank's share, on the device); must not change the training.

        A callback that runs the model here (e.g. a lookahead measurement) restores every parameter,
        gradient and random-number state it touches.
        """

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        """After every optimizer step; ``info`` holds the losses, weights and Gramian."""

    def epoch_fields(self, trainer: Trainer) -> dict[str, Any]:
        """Extra fields for this epoch's metrics record (written to ``metrics.jsonl``, seen by every callback)."""
        return {}

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After validation at the end of every epoch; ``record`` is the metrics line."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch, once the best-validation parameters are restored."""
