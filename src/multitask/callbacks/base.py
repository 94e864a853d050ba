"""Callback interface: the trainer calls these hooks; callbacks never change the training math."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine import StepInfo
    from ..trainer import Trainer

__all__ = ["Callback"]


class Callback:
    """Base class with no-op hooks. Override the ones you need."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step (also when resuming)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int, num_batches: int, start: int) -> None:
        """Before the first batch of an epoch (``start`` > 0 when resuming mid-epoch)."""

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        """After every optimizer step; ``info`` holds the losses, weights and Gramian."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After validation at the end of every epoch; ``record`` is the metrics line."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch, once the best-validation parameters are restored."""
