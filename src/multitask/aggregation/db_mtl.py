"""DB-MTL: dual balancing, log-losses for the loss scales and max-norm rescaling for the gradients."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..weighting.base import check_float
from ._tracking import resize_lazy_buffers, row_norms64
from .base import Aggregator, register_aggregator

__all__ = ["DBMTL"]

#: Added to each loss before the log, as in the reference implementation (LibMTL).
_EPS = 1e-8


@register_aggregator
class DBMTL(Aggregator):
    """DB-MTL: balance loss scales with log-losses and gradient scales by rescaling to the max norm.

    Loss-scale balancing: each task's gradient is replaced by the gradient of ``log L_t``,
    ``g_t/(L_t + 1e-8)`` (the ``1e-8`` as in the reference implementation). Gradient-magnitude
    balancing: an exponential moving average ``ĝ_t`` of these (a ``[T, P]`` buffer, zeros at
    first) is updated at call ``k = 1, 2, ...`` with ``β_k = beta / k^beta_sigma``,
    ``ĝ_t ← β_k·ĝ_t + (1 - β_k)·∇log L_t``, and the update is
    ``Σ_t (max_s ‖ĝ_s‖ / ‖ĝ_t‖)·ĝ_t``: every task contributes with the norm of the largest (a task
    whose average is zero contributes nothing). The losses must be positive (they are logged).

    State: the moving average is sized on the first call, when the number of Jacobian columns
    ``P`` is first seen (the buffer is empty before); :meth:`load_state_dict` resizes it to the
    saved shape, so a fresh instance resumes from a checkpoint. A Jacobian with a different ``P``
    later raises a ``ValueError`` (use ``grad_mode="exact"``: in ``"features"`` mode the columns
    are samples of the current batch). Compared with LibMTL, the ratio ``max/‖ĝ_t‖`` is taken
    exactly (LibMTL adds ``1e-8`` to ``‖ĝ_t‖``, which matters for gradients of norm near ``1e-8``).

    Reference:
        Baijiong Lin, Weisen Jiang, Feiyang Ye, Yu Zhang, Pengguang Chen, Ying-Cong Chen, Shu Liu,
        James T. Kwok, "Dual-Balancing for Multi-Task Learning", 2023.
        https://arxiv.org/abs/2308.12029

    Args:
        num_tasks: the number of tasks ``T``.
        beta: the initial weight of the moving average's past, in ``(0, 1)``.
        beta_sigma: the decay exponent of that weight (>= 0; 0 keeps it constant).
    """

    name: ClassVar[str] = "db_mtl"
    properties: ClassVar[frozenset[str]] = frozenset({"permutation_equivariant"})
    jacobian_state: ClassVar[bool] = True

    averaged: Tensor
    step: Tensor

    def __init__(self, num_tasks: int, *, beta: float = 0.9, beta_sigma: float = 0.5) -> None:
        super().__init__(num_tasks)
        self.beta = check_float("DBMTL", "beta", beta, "0.9")
        if self.beta >= 1.0:
            raise ValueError(f"DBMTL: beta={beta!r} must be in (0, 1) (a moving-average weight), e.g. beta=0.9")
        self.beta_sigma = check_float("DBMTL", "beta_sigma", beta_sigma, "0.5", allow_zero=True)
        self.register_buffer("averaged", torch.zeros(0))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """The update ``Σ_t (max_s‖ĝ_s‖/‖ĝ_t‖) ĝ_t`` ``[P]`` after updating the moving average."""
        self._check_inputs(jacobian, losses)
        observed = losses.detach()
        if not bool((torch.isfinite(observed) & (observed >= 0)).all()):
            raise ValueError(
                f"DBMTL: losses {observed.tolist()} must be finite and >= 0, since DB-MTL differentiates "
                "log(loss); shift or transform a loss that can be negative (e.g. a log-likelihood)"
            )
        jac = jacobian.detach()
        if self.averaged.numel() == 0 and self.averaged.dim() == 1:
            self.averaged = torch.zeros_like(jac)
        elif self.averaged.shape != jac.shape:
            raise ValueError(
                f"DBMTL: jacobian has shape {tuple(jac.shape)} but the averaged gradients have shape "
                f"{tuple(self.averaged.shape)}; DB-MTL averages the same parameters' gradients across steps, so "
                "the number of Jacobian columns must not change (use grad_mode='exact')"
            )
        k = int(self.step) + 1
        beta_k = self.beta / k**self.beta_sigma
        avg = self.averaged
        inv_losses = 1.0 / (observed.to(torch.float64) + _EPS)
        log_grads = jac.to(avg.dtype) * inv_losses.to(device=avg.device, dtype=avg.dtype)[:, None]
        avg.mul_(beta_k).add_(log_grads, alpha=1.0 - beta_k)
        norms = row_norms64(avg)
        live = norms > 0
        scales = torch.where(live, norms.max() / torch.where(live, norms, 1.0), 0.0)
        self.step.add_(1)
        return (scales.to(avg.dtype) @ avg).to(jac.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        resize_lazy_buffers(self, state_dict, prefix, ("averaged",))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
