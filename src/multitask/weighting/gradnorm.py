"""GradNorm: adapt task weights so that the tasks' gradient norms train at similar rates."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, check_float, register

__all__ = ["GradNorm"]

#: Weights are clamped to at least this before renormalisation, so they stay positive.
MIN_WEIGHT = 1e-4


@register
class GradNorm(Weighting):
    """GradNorm: tune the task weights so the tasks' gradient norms train at balanced rates.

    With ``G`` the Gramian of the task gradients (``sqrt(G_tt)`` is the gradient norm of task
    ``t``), each step computes the weighted norms ``n_t = w_t·sqrt(G_tt)``, the relative inverse
    training rates ``r_t = (L_t / L_t(0)) / mean_s(L_s / L_s(0))`` and the targets
    ``n̄·r_t^alpha`` (``n̄`` the mean of ``n``, held constant as in the paper), and takes one
    gradient step on ``L_grad = Σ_t |n_t - n̄·r_t^alpha|`` with respect to ``w``. The gradient is
    analytic, ``∂L_grad/∂w_t = sign(n_t - target_t)·sqrt(G_tt)``, no autograd involved.

    Step size (a choice of this implementation): the gradient is divided by
    ``mean_t sqrt(G_tt)`` before the step ``w ← w - lr·ĝ``, so the step in weight space is
    ``O(lr)`` whatever the scale of the gradients (the paper instead trains ``w`` with the
    model's optimizer, which makes its learning rate depend on the gradient scale). The weights
    are then clamped to at least ``1e-4`` and renormalised to sum to ``T``.

    :meth:`forward` returns the weights *before* this step's update (the ones whose gradient
    norms were measured, as in the paper); the updated ones are used at the next call. The first
    call records the initial losses ``L(0)`` (floored at the smallest normal float). Needs the
    Gramian (the engine computes it over the shared parameters, or over the shared features in
    ``grad_mode="features"``, the paper's cheaper choice of the last shared layer).

    Reference:
        Zhao Chen, Vijay Badrinarayanan, Chen-Yu Lee, Andrew Rabinovich, "GradNorm: Gradient
        Normalization for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.
        https://arxiv.org/abs/1711.02257

    Args:
        num_tasks: the number of tasks ``T``.
        alpha: the strength of the pull towards balanced training rates (0: equal gradient norms).
        lr: the step size of the weight update (on the normalised gradient).
    """

    name: ClassVar[str] = "gradnorm"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "sums_to_num_tasks", "permutation_equivariant", "loss_scale_invariant"}
    )

    task_weights: Tensor
    initial_losses: Tensor
    initialized: Tensor

    def __init__(self, num_tasks: int, *, alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(num_tasks)
        check_float("GradNorm", "alpha", alpha, "1.5", allow_zero=True)
        check_float("GradNorm", "lr", lr, "0.025")
        self.alpha = alpha
        self.lr = lr
        self.register_buffer("task_weights", torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.ones(num_tasks))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Current weights ``[T]``; then updates them for the next call from ``losses`` and ``G``."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        dtype = self.task_weights.dtype
        tiny = torch.finfo(dtype).tiny
        current = losses.detach().to(dtype).clamp_min(tiny)
        if not bool(self.initialized):
            self.initial_losses.copy_(current)
            self.initialized.fill_(True)
        used = self.task_weights.clone()

        norms_raw = gramian.detach().diagonal().to(dtype).clamp_min(0).sqrt()
        norms = used * norms_raw
        ratio = current / self.initial_losses
        rate = ratio / ratio.mean().clamp_min(tiny)
        target = norms.mean() * rate.pow(self.alpha)
        grad = torch.sign(norms - target) * norms_raw
        step = grad / norms_raw.mean().clamp_min(tiny)
        updated = (used - self.lr * step).clamp_min(MIN_WEIGHT)
        self.task_weights.copy_(self.num_tasks * updated / updated.sum())
        return used.to(dtype=losses.dtype, device=losses.device)
