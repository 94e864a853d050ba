"""Uncertainty weighting: learnable homoscedastic task uncertainties."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from .base import Weighting, register

__all__ = ["UncertaintyWeighting"]


@register
class UncertaintyWeighting(Weighting):
    """Uncertainty weighting (UW): learn one log-variance per task, weight ``0.5·exp(-s_t)``.

    Each task gets a learnable log-variance ``s_t = log σ_t²``; the objective is

        Σ_t 0.5·exp(-s_t)·L_t + 0.5·s_t,

    the Gaussian negative log-likelihood form of the paper (its regression case; the paper's
    classification case drops the 0.5 in front of ``exp(-s_t)``). :meth:`forward` returns
    ``w_t = 0.5·exp(-s_t)`` *attached* to ``s`` and :meth:`regularizer` returns ``0.5·Σ_t s_t``,
    so the engine's single backward of ``Σ_t w_t L_t + regularizer`` gives ``s`` its gradient
    ``0.5 - 0.5·exp(-s_t)·L_t``; at the optimum ``exp(s_t) = L_t``, i.e. each task is weighted by
    about ``1 / (2 L_t)``.

    The trainer must put ``weighting.parameters()`` in the optimizer (the built-in trainer does);
    otherwise ``s`` never moves and this is equal weighting with weight ``0.5·exp(-init)``.
    The weights do not sum to ``T``.

    Reference:
        Alex Kendall, Yarin Gal, Roberto Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
        Losses for Scene Geometry and Semantics", CVPR 2018. https://arxiv.org/abs/1705.07115

    Args:
        num_tasks: the number of tasks ``T``.
        init: the initial log-variance of every task (0 gives initial weights 0.5).
    """

    name: ClassVar[str] = "uncertainty"
    requires_gramian: ClassVar[bool] = False
    properties: ClassVar[frozenset[str]] = frozenset({"nonnegative", "permutation_equivariant", "loss_scale_invariant"})

    def __init__(self, num_tasks: int, *, init: float = 0.0) -> None:
        super().__init__(num_tasks)
        if isinstance(init, bool) or not isinstance(init, int | float) or not math.isfinite(init):
            raise ValueError(f"UncertaintyWeighting: init={init!r} must be a finite number, e.g. init=0.0")
        self.init = init
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(init)))

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Weights ``0.5·exp(-s)`` ``[T]``, differentiable with respect to the log-variances ``s``."""
        self._check_inputs(losses, gramian)
        return (0.5 * torch.exp(-self.log_vars)).to(dtype=losses.dtype, device=losses.device)

    def regularizer(self) -> Tensor:
        """``0.5·Σ_t s_t``, the log-normaliser that keeps the variances from growing without bound."""
        return 0.5 * self.log_vars.sum()
