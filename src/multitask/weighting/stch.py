"""STCH: smooth Tchebycheff scalarisation of the log-normalised losses (loss-based)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, check_float, register

__all__ = ["STCH"]

#: Added inside the logarithms, as in the official code.
_TINY = 1e-20


@register
class STCH(Weighting):
    """STCH: smooth Tchebycheff scalarisation, a soft maximum of the tasks' normalised log-losses.

    The smooth Tchebycheff scalarisation of objectives ``f_t`` with preferences ``λ`` and ideal
    point ``z`` is ``g_μ = μ log Σ_t exp(λ_t (f_t - z_t) / μ)``, a smooth approximation of
    ``max_t λ_t (f_t - z_t)`` whose minimisers are (weakly) Pareto optimal; ``μ -> 0`` recovers
    the Tchebycheff scalarisation. Its gradient weights are ``λ ⊙ softmax(λ (f - z) / μ)``.

    For multi-task learning this class follows the authors' code (also LibMTL's ``STCH``): the
    objectives are the log-losses normalised by a nadir point, ``f_t = log(L_t / ℓ̄_t)`` with
    ``z = 0`` and ``λ = 1``, scaled by ``T``: ``T·μ log Σ_t exp(f_t / μ)``. The weights on the
    losses are therefore ``w_t = T·softmax(f / μ)_t / L_t``: the task whose loss has decreased
    least relative to ``ℓ̄`` dominates. ``ℓ̄`` is the mean of the losses seen during the last
    warm-up epoch (a buffer). During the ``warmup_epochs`` warm-up epochs the objective is
    ``Σ_t log L_t`` (weights ``1/L_t``). With ``warmup_epochs = 0`` the nadir is the first call's
    losses. Epochs are counted by :meth:`on_epoch_end`, which the trainer calls; the official
    ``STCH_warmup_epoch = 4`` (four warm-up epochs, then the nadir is averaged during the fifth)
    is ``warmup_epochs = 5`` here. As in the official code ``1e-20`` is added inside the
    logarithms, so ``L_t = 0`` gives a large, finite weight.

    Reference:
        Xi Lin, Xiaoyuan Zhang, Zhiyuan Yang, Fei Liu, Zhenkun Wang, Qingfu Zhang, "Smooth
        Tchebycheff Scalarization for Multi-Objective Optimization", ICML 2024.
        https://arxiv.org/abs/2402.19078

    Args:
        num_tasks: the number of tasks ``T``.
        mu: the smoothing ``μ > 0`` (1.0 as in the official code; the paper evaluates 0.01-1;
            smaller is closer to the maximum).
        warmup_epochs: epochs of ``Σ log L_t`` before STCH; the last one averages the nadir.
    """

    name: ClassVar[str] = "stch"
    requires_gramian: ClassVar[bool] = False
    properties: ClassVar[frozenset[str]] = frozenset({"nonnegative", "permutation_equivariant"})

    epoch: Tensor
    loss_sum: Tensor
    loss_count: Tensor
    nadir: Tensor
    has_nadir: Tensor

    def __init__(self, num_tasks: int, *, mu: float = 1.0, warmup_epochs: int = 5) -> None:
        super().__init__(num_tasks)
        check_float("STCH", "mu", mu, "1.0")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"STCH: warmup_epochs={warmup_epochs!r} must be an integer >= 0, e.g. warmup_epochs=5")
        self.mu = mu
        self.warmup_epochs = warmup_epochs
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("loss_sum", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("nadir", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("has_nadir", torch.zeros((), dtype=torch.bool))

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """The weights ``[T]``: ``1/L_t`` during warm-up, ``T·softmax(log(L/ℓ̄)/μ)_t / L_t`` after."""
        self._check_inputs(losses, gramian)
        current = losses.detach().to(device=self.loss_sum.device, dtype=torch.float64)
        current = torch.nan_to_num(current, nan=0.0, posinf=torch.finfo(torch.float64).max).clamp_min(0.0)
        epoch = int(self.epoch)
        if epoch < self.warmup_epochs:
            if epoch == self.warmup_epochs - 1:
                self.loss_sum.add_(current)
                self.loss_count.add_(1)
            weights = 1.0 / (current + _TINY)
        else:
            if not bool(self.has_nadir):
                count = int(self.loss_count)
                self.nadir.copy_((self.loss_sum / count if count > 0 else current).clamp_min(_TINY))
                self.has_nadir.fill_(True)
            relative = torch.log(current / self.nadir + _TINY)
            weights = self.num_tasks * torch.softmax(relative / self.mu, dim=0) / (current + _TINY * self.nadir)
        return weights.to(dtype=losses.dtype, device=losses.device)

    def on_epoch_end(self) -> None:
        """Advance the epoch counter (ends the warm-up after ``warmup_epochs`` epochs)."""
        self.epoch.add_(1)
