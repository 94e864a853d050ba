"""MoCo: MGDA on tracked (running-average) task gradients, with a projected step on the weights."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..weighting._qp import project_onto_simplex
from ..weighting.base import check_float
from ._tracking import gramian64, resize_lazy_buffers
from .base import Aggregator, register_aggregator

__all__ = ["MoCo"]


@register_aggregator
class MoCo(Aggregator):
    """MoCo: MGDA-like weights on running estimates of the task gradients, to remove their bias.

    Stochastic MGDA is biased: its weights are a non-linear function of noisy gradients. MoCo
    tracks each task gradient with a running estimate ``Y`` (``[T, P]``, zeros at first) and takes
    one projected gradient step on the task weights ``λ`` (uniform at first) per call. At call
    ``k = 1, 2, ...``, with ``β_k = beta / k^beta_sigma`` and ``γ_k = gamma / k^gamma_sigma``::

        Y ← Y - β_k (Y - J)                          # track the task gradients
        λ ← Π_Δ(λ - γ_k (Y Yᵀ + rho·I) λ)            # one step towards MGDA's weights for Y
        update = Yᵀλ

    (the paper's Algorithm 1; ``Π_Δ`` is the Euclidean projection onto the simplex). The paper's
    optional projection of each ``Y_t`` onto a ball of radius ``L_t`` (a bound on the gradient
    norm) is not applied. ``gamma`` is not scale-free: the weight step is ``γ_k·‖g‖²``.

    State: ``Y`` is sized on the first call, when the number of Jacobian columns ``P`` is first
    seen (the buffer is empty before); :meth:`load_state_dict` resizes it to the saved shape, so a
    fresh instance resumes from a checkpoint. Since ``Y`` tracks the same coordinates across
    calls, a Jacobian with a different ``P`` raises a ``ValueError``: use ``grad_mode="exact"``
    (in ``"features"`` mode the columns are samples of the current batch, which change).

    The defaults are LibMTL's (``beta = 0.5``, ``beta_sigma = 0.5``, ``gamma = 0.1``,
    ``gamma_sigma = 0.5``, ``rho = 0``). LibMTL departs from the paper twice: it rescales each task
    gradient to norm equal to its loss before tracking, and replaces the simplex projection by a
    softmax; this class follows the paper.

    Reference:
        Heshan Fernando, Han Shen, Miao Liu, Subhajit Chaudhury, Keerthiram Murugesan, Tianyi
        Chen, "Mitigating Gradient Bias in Multi-objective Learning: A Provably Convergent
        Approach", ICLR 2023. https://openreview.net/forum?id=dLAYGdKTi2

    Args:
        num_tasks: the number of tasks ``T``.
        beta: the initial tracking rate of ``Y``, in ``(0, 1]``.
        beta_sigma: the decay exponent of the tracking rate (>= 0).
        gamma: the initial step size of the task-weight update (> 0).
        gamma_sigma: the decay exponent of that step size (>= 0).
        rho: the ``ℓ2`` regularisation of the task weights (>= 0).
    """

    name: ClassVar[str] = "moco"
    properties: ClassVar[frozenset[str]] = frozenset({"permutation_equivariant"})
    jacobian_state: ClassVar[bool] = True

    tracked: Tensor
    task_weights: Tensor
    step: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
    ) -> None:
        super().__init__(num_tasks)
        self.beta = check_float("MoCo", "beta", beta, "0.5")
        if self.beta > 1.0:
            raise ValueError(f"MoCo: beta={beta!r} must be in (0, 1] (a tracking rate), e.g. beta=0.5")
        self.beta_sigma = check_float("MoCo", "beta_sigma", beta_sigma, "0.5", allow_zero=True)
        self.gamma = check_float("MoCo", "gamma", gamma, "0.1")
        self.gamma_sigma = check_float("MoCo", "gamma_sigma", gamma_sigma, "0.5", allow_zero=True)
        self.rho = check_float("MoCo", "rho", rho, "0.0", allow_zero=True)
        self.register_buffer("tracked", torch.zeros(0))
        self.register_buffer("task_weights", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """The update ``Yᵀλ`` ``[P]`` after updating ``Y`` and ``λ``."""
        self._check_inputs(jacobian, losses)
        jac = jacobian.detach()
        if self.tracked.numel() == 0 and self.tracked.dim() == 1:
            self.tracked = torch.zeros_like(jac)
        elif self.tracked.shape != jac.shape:
            raise ValueError(
                f"MoCo: jacobian has shape {tuple(jac.shape)} but the tracked gradients have shape "
                f"{tuple(self.tracked.shape)}; MoCo tracks the same parameters across steps, so the number of "
                "Jacobian columns must not change (use grad_mode='exact')"
            )
        k = int(self.step) + 1
        beta_k = self.beta / k**self.beta_sigma
        gamma_k = self.gamma / k**self.gamma_sigma
        tracked = self.tracked
        tracked.mul_(1.0 - beta_k).add_(jac.to(device=tracked.device, dtype=tracked.dtype), alpha=beta_k)
        lam = self.task_weights
        step = gramian64(tracked, exact=False).to(lam.device) @ lam + self.rho * lam
        if bool(torch.isfinite(step).all()):
            self.task_weights.copy_(project_onto_simplex(lam - gamma_k * step))
        self.step.add_(1)
        return (self.task_weights.to(device=tracked.device, dtype=tracked.dtype) @ tracked).to(jac.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        resize_lazy_buffers(self, state_dict, prefix, ("tracked",))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
