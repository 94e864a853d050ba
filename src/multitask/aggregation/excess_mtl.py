"""ExcessMTL: task weights raised for the tasks with the largest estimated excess risk."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..weighting.base import check_float
from ._tracking import resize_lazy_buffers
from .base import Aggregator, register_aggregator

__all__ = ["ExcessMTL"]

#: AdaGrad's damping inside the square root, as in the official code, LibMTL and torchjd.
_DAMPING = 1e-7


@register_aggregator
class ExcessMTL(Aggregator):
    """ExcessMTL: up-weight the tasks farthest from their optimum (estimated excess risk).

    Robust multi-task learning: the task weights follow an exponentiated-gradient ascent on
    the tasks' excess risks (their distance to their own optimum, which, unlike the loss, does not
    reward tasks with a high irreducible noise). The excess risk of task ``t`` is estimated by a
    second-order Taylor expansion, ``E_t ≈ g_tᵀ H_t⁻¹ g_t``, with the diagonal Hessian approximated
    by AdaGrad's accumulated squared gradients: ``S_t += g_t²`` and
    ``E_t = Σ_k g_tk² / sqrt(S_tk + 1e-7)``. It needs the task Jacobian itself (per-coordinate
    statistics), so it is an aggregator. Each call (paper's Algorithm 1, as in the official code
    and LibMTL)::

        S += J ⊙ J;  E = Σ_k J² / sqrt(S + 1e-7)
        first call after the warm-up: E⁰ = E (or the warm-up mean of E), the weights stay
        later calls: w ← w ⊙ exp(robust_step_size · E / E⁰), rescaled to sum to T
        update = Jᵀw

    The weights start at 1 and sum to ``T`` (the official code's and LibMTL's convention;
    torchjd's ``ExcessMTL`` keeps them on the simplex, i.e. ``1/T`` times these, and its default
    step size is 1.0). The exponentiated update is done in log space, so the weights saturate
    instead of overflowing. A task whose gradient is zero at the baseline call (e.g. absent from
    the batch) gets its baseline at its first non-zero gradient; until then its ratio is 0.

    ``warmup_epochs`` (counted by :meth:`on_epoch_end`): the paper (Appendix C.1) collects the
    statistics for 3 epochs with uniform weights and uses the mean excess risk over them as the
    baseline; 0 (the default, as in the official code) takes the first call's.

    State: ``S`` (``[T, P]``, as large as the Jacobian) is sized on the first call; a different
    ``P`` later raises a ``ValueError`` (use ``grad_mode="exact"``: in ``"features"`` mode the
    columns are the samples of the batch). :meth:`load_state_dict` resizes it to the saved shape.
    The current weights are the ``task_weights`` buffer. Note: as for every aggregator, the
    engine trains the task heads with unweighted losses (the official code weights them too).

    Reference:
        Yifei He, Shiji Zhou, Guojun Zhang, Hyokun Yun, Yi Xu, Belinda Zeng, Trishul Chilimbi,
        Han Zhao, "Robust Multi-Task Learning with Excess Risks", ICML 2024.
        https://arxiv.org/abs/2402.02009

    Args:
        num_tasks: the number of tasks ``T``.
        robust_step_size: the step size ``η`` of the exponentiated weight update (LibMTL's 1e-2).
        warmup_epochs: epochs of statistics collection with equal weights before the baseline.
    """

    name: ClassVar[str] = "excess_mtl"
    properties: ClassVar[frozenset[str]] = frozenset({"permutation_equivariant"})
    jacobian_state: ClassVar[bool] = True

    sq_grad_sum: Tensor
    log_weights: Tensor
    task_weights: Tensor
    baseline: Tensor
    has_baseline: Tensor
    warmup_sum: Tensor
    warmup_count: Tensor
    epoch: Tensor

    def __init__(self, num_tasks: int, *, robust_step_size: float = 1e-2, warmup_epochs: int = 0) -> None:
        super().__init__(num_tasks)
        check_float("ExcessMTL", "robust_step_size", robust_step_size, "0.01")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(
                f"ExcessMTL: warmup_epochs={warmup_epochs!r} must be an integer >= 0, e.g. warmup_epochs=3"
            )
        self.robust_step_size = robust_step_size
        self.warmup_epochs = warmup_epochs
        self.register_buffer("sq_grad_sum", torch.zeros(0))
        self.register_buffer("log_weights", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("task_weights", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("baseline", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("has_baseline", torch.zeros(num_tasks, dtype=torch.bool))
        self.register_buffer("warmup_sum", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("warmup_count", torch.zeros(num_tasks, dtype=torch.long))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    def excess_risks(self, jacobian: Tensor) -> Tensor:
        """Accumulate ``J²`` into ``S`` and return ``E_t = Σ_k J_tk² / sqrt(S_tk + 1e-7)`` (float64)."""
        jac = jacobian.detach()
        if self.sq_grad_sum.numel() == 0 and self.sq_grad_sum.dim() == 1:
            self.sq_grad_sum = torch.zeros_like(jac)
        elif self.sq_grad_sum.shape != jac.shape:
            raise ValueError(
                f"ExcessMTL: jacobian has shape {tuple(jac.shape)} but the accumulated squared gradients have "
                f"shape {tuple(self.sq_grad_sum.shape)}; ExcessMTL accumulates statistics of the same parameters "
                "across steps, so the number of Jacobian columns must not change (use grad_mode='exact')"
            )
        sq = jac.to(self.sq_grad_sum.dtype).square()
        self.sq_grad_sum.add_(sq)
        excess = (sq * (self.sq_grad_sum + _DAMPING).rsqrt()).sum(dim=1).to(torch.float64)
        return torch.nan_to_num(excess, nan=0.0, posinf=torch.finfo(torch.float64).max).to(self.baseline.device)

    def forward(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """Update the statistics and (after the warm-up) the weights ``w``; return ``Jᵀw`` ``[P]``."""
        self._check_inputs(jacobian, losses)
        excess = self.excess_risks(jacobian)
        positive = excess > 0
        if int(self.epoch) < self.warmup_epochs:
            self.warmup_sum.add_(torch.where(positive, excess, torch.zeros_like(excess)))
            self.warmup_count.add_(positive.long())
        else:
            fresh = positive & ~self.has_baseline
            if bool(fresh.any()):
                count = self.warmup_count.clamp_min(1).to(torch.float64)
                from_warmup = torch.where(self.warmup_count > 0, self.warmup_sum / count, excess)
                self.baseline.copy_(torch.where(fresh, from_warmup, self.baseline))
                self.has_baseline.logical_or_(fresh)
            updating = self.has_baseline & ~fresh
            if bool(updating.any()):
                ratio = torch.where(updating, excess / self.baseline.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
                log_w = self.log_weights + (self.robust_step_size * ratio).clamp_max(1e300)
                log_w = (log_w - log_w.max()).clamp_min(-1e300)
                self.log_weights.copy_(log_w)
                self.task_weights.copy_(self.num_tasks * torch.softmax(log_w, dim=0))
        weights = self.task_weights.to(device=jacobian.device, dtype=jacobian.dtype)
        return weights @ jacobian.detach()

    def on_epoch_end(self) -> None:
        """Advance the epoch counter (ends the warm-up after ``warmup_epochs`` epochs)."""
        self.epoch.add_(1)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        resize_lazy_buffers(self, state_dict, prefix, ("sq_grad_sum",))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
