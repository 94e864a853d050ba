"""Equal weighting: every task gets weight 1."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, register

__all__ = ["EqualWeighting"]


@register
class EqualWeighting(Weighting):
    """Equal weighting (EW): minimise the plain sum of the task losses, every weight is 1.

    The baseline every other method is measured against; with a tuned learning rate it is hard to
    beat (Xin et al., 2022). Recommended as the first thing to try.

    Reference:
        Rich Caruana, "Multitask Learning", Machine Learning 28(1), 1997.
        https://doi.org/10.1023/A:1007379606734

    Args:
        num_tasks: the number of tasks ``T``.
    """

    name: ClassVar[str] = "equal"
    requires_gramian: ClassVar[bool] = False
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "sums_to_num_tasks", "permutation_equivariant", "loss_scale_invariant", "stateless"}
    )

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """All-ones weights ``[T]`` in the dtype and device of ``losses``."""
        self._check_inputs(losses, gramian)
        return torch.ones_like(losses)
