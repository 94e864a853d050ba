"""Geometric loss strategy: minimise the geometric mean of the task losses."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, register

__all__ = ["GeometricLossStrategy"]


@register
class GeometricLossStrategy(Weighting):
    """Geometric loss strategy (GLS): minimise the geometric mean ``(Π_t L_t)^(1/T)`` of the losses.

    The gradient of the objective is ``Σ_t w_t ∇L_t`` with

        w_t = GM / (T · L_t),   GM = (Π_s L_s)^(1/T)  (of the detached losses),

    so these gradient-equivalent weights are returned (computed in log space,
    ``w_t = exp(mean(log L) - log L_t) / T``, so they are finite at any loss scale). They equal
    ``1/T`` when all losses are equal and do not sum to ``T``. They are invariant to rescaling all
    losses, and rescaling one loss by ``c`` only multiplies the whole update by ``c^(1/T)`` (its
    direction is unchanged), which is why GLS suits tasks whose losses live on different scales.
    Every loss must be positive: a loss ``<= 0`` is floored at the smallest normal float of its
    dtype (the exact gradient would be infinite there).

    Reference:
        Sumanth Chennupati, Ganesh Sistu, Senthil Yogamani, Samir A. Rawashdeh, "MultiNet++:
        Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning",
        CVPR Workshops 2019. https://arxiv.org/abs/1904.08492

    Args:
        num_tasks: the number of tasks ``T``.
    """

    name: ClassVar[str] = "gls"
    requires_gramian: ClassVar[bool] = False
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "permutation_equivariant", "loss_scale_invariant", "stateless"}
    )

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Weights ``GM / (T·L_t)`` ``[T]`` in the dtype and device of ``losses``."""
        self._check_inputs(losses, gramian)
        work = losses.detach().to(torch.promote_types(losses.dtype, torch.float32))
        log_l = work.clamp_min(torch.finfo(work.dtype).tiny).log()
        weights = torch.exp(log_l.mean() - log_l) / self.num_tasks
        return weights.to(losses.dtype)
