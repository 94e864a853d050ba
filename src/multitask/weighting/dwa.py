"""Dynamic Weight Average: weight tasks by how slowly their loss fell over the last epochs."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, check_float, register

__all__ = ["DynamicWeightAverage"]


@register
class DynamicWeightAverage(Weighting):
    """Dynamic Weight Average (DWA): up-weight the tasks whose loss fell least over the last epoch.

    With ``L̄_t(e)`` the mean loss of task ``t`` over the training steps of epoch ``e``, the weights
    during epoch ``e`` are

        r_t = L̄_t(e-1) / L̄_t(e-2),   w = T·softmax(r / temperature),

    and all ones during the first two epochs. A larger ``temperature`` gives more uniform weights.

    State: :meth:`forward` adds each (detached) loss to a running sum and counts the steps;
    :meth:`on_epoch_end`, which the trainer calls after every epoch, turns them into the epoch's
    mean and keeps the last two epoch means. An epoch with no step is skipped. Everything lives in
    buffers, so ``state_dict()`` checkpoints it, also mid-epoch. A zero epoch mean in the
    denominator is floored at the smallest normal float.

    Reference:
        Shikun Liu, Edward Johns, Andrew J. Davison, "End-to-End Multi-Task Learning with
        Attention", CVPR 2019. https://arxiv.org/abs/1803.10704

    Args:
        num_tasks: the number of tasks ``T``.
        temperature: the softmax temperature (the paper uses 2).
    """

    name: ClassVar[str] = "dwa"
    requires_gramian: ClassVar[bool] = False
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "sums_to_num_tasks", "permutation_equivariant", "loss_scale_invariant"}
    )

    epoch_sum: Tensor
    epoch_count: Tensor
    history: Tensor
    epochs_done: Tensor

    def __init__(self, num_tasks: int, *, temperature: float = 2.0) -> None:
        super().__init__(num_tasks)
        check_float("DynamicWeightAverage", "temperature", temperature, "2.0 (the paper's value)")
        self.temperature = temperature
        self.register_buffer("epoch_sum", torch.zeros(num_tasks, dtype=torch.float32))
        self.register_buffer("epoch_count", torch.zeros((), dtype=torch.long))
        # history[0] = mean losses of epoch e-2, history[1] = of epoch e-1.
        self.register_buffer("history", torch.ones(2, num_tasks, dtype=torch.float32))
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Weights ``[T]`` for this step; also adds ``losses`` to the current epoch's running mean."""
        self._check_inputs(losses, gramian)
        self.epoch_sum.add_(losses.detach().to(self.epoch_sum.dtype))
        self.epoch_count.add_(1)
        if int(self.epochs_done) < 2:
            return torch.ones_like(losses)
        tiny = torch.finfo(self.history.dtype).tiny
        ratio = self.history[1] / self.history[0].clamp_min(tiny)
        weights = self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)
        return weights.to(dtype=losses.dtype, device=losses.device)

    def on_epoch_end(self) -> None:
        """Close the epoch: store its mean losses as the newest history entry and reset the sums."""
        count = int(self.epoch_count)
        if count == 0:
            return
        self.history[0].copy_(self.history[1])
        self.history[1].copy_(self.epoch_sum / count)
        self.epoch_sum.zero_()
        self.epoch_count.zero_()
        self.epochs_done.add_(1)
