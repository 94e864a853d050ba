"""FAMO: fast adaptive multitask optimisation, balancing the tasks' log-loss decrease."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, check_float, register

__all__ = ["FAMO"]

_BETA1 = 0.9
_BETA2 = 0.999
_EPS = 1e-8


@register
class FAMO(Weighting):
    """FAMO: keep the tasks' log-losses decreasing at equal rates, without per-task gradients.

    Task logits ``ξ`` (zeros at first) give ``z = softmax(ξ)``. With the losses floored at
    ``min_loss``, ``ℓ_t = max(L_t, min_loss)``, the paper's update direction is
    ``d = Σ_t c·z_t/ℓ_t ∇L_t`` with ``c = 1 / Σ_s z_s/ℓ_s`` — the gradient of
    ``Σ_t z_t log ℓ_t`` rescaled by ``c`` — whose weights sum to 1. This class returns them
    multiplied by ``T``, ``w_t = T·c·z_t/ℓ_t``, to follow the library's convention that
    loss-based weights sum to ``T`` (all ones at the start, like equal weighting): the direction is
    the paper's, the step is ``T`` times larger for a given learning rate (immaterial with Adam).

    Logit update: at each call after the first, with ``δ_t = log ℓ_t(previous call) - log ℓ_t(now)``
    (the decrease in log-loss achieved by the last update), the gradient of ``ξ ↦ z(ξ)·δ`` is the
    softmax Jacobian product ``z ⊙ (δ - z·δ)``; ``weight_decay·ξ`` is added to it and ``ξ`` takes one
    Adam step (betas 0.9/0.999, eps 1e-8, bias-corrected; moments and step count in buffers) with
    learning rate ``lr``. Tasks whose loss fell faster than average thus lose weight. The paper
    measures ``δ`` on the same batch after the model update (an extra forward pass); here it is
    taken between consecutive calls, i.e. on consecutive batches, at no extra cost. The new
    ``ξ`` is used for the weights of the current call.

    Reference:
        Bo Liu, Yihao Feng, Peter Stone, Qiang Liu, "FAMO: Fast Adaptive Multitask Optimization",
        NeurIPS 2023. https://arxiv.org/abs/2306.03792

    Args:
        num_tasks: the number of tasks ``T``.
        lr: the Adam learning rate of the logits (the paper's β, 0.025).
        weight_decay: the decay ``γ`` of the logits (pulls the weights towards uniform).
        min_loss: a floor on the losses before the log and the division; it should be below every
            loss you expect (the weights stop adapting once losses reach it).
    """

    name: ClassVar[str] = "famo"
    requires_gramian: ClassVar[bool] = False
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "sums_to_num_tasks", "permutation_equivariant", "loss_scale_invariant"}
    )

    logits: Tensor
    prev_losses: Tensor
    has_prev: Tensor
    adam_m: Tensor
    adam_v: Tensor
    adam_step: Tensor

    def __init__(
        self, num_tasks: int, *, lr: float = 0.025, weight_decay: float = 1e-3, min_loss: float = 1e-8
    ) -> None:
        super().__init__(num_tasks)
        check_float("FAMO", "lr", lr, "0.025")
        check_float("FAMO", "weight_decay", weight_decay, "1e-3", allow_zero=True)
        check_float("FAMO", "min_loss", min_loss, "1e-8")
        self.lr = lr
        self.weight_decay = weight_decay
        self.min_loss = min_loss
        self.register_buffer("logits", torch.zeros(num_tasks))
        self.register_buffer("prev_losses", torch.ones(num_tasks))
        self.register_buffer("has_prev", torch.zeros((), dtype=torch.bool))
        self.register_buffer("adam_m", torch.zeros(num_tasks))
        self.register_buffer("adam_v", torch.zeros(num_tasks))
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.long))

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Weights ``T·c·z_t/ℓ_t`` ``[T]``, after updating the logits from the last loss change."""
        self._check_inputs(losses, gramian)
        current = losses.detach().to(self.logits.dtype).clamp_min(self.min_loss)
        if bool(self.has_prev):
            self._update_logits(torch.log(self.prev_losses / current))
        self.prev_losses.copy_(current)
        self.has_prev.fill_(True)
        # log-space: w ∝ z/ℓ = exp(ξ - log ℓ) / Σ exp(ξ), normalised; finite at any loss scale.
        weights = self.num_tasks * torch.softmax(self.logits - current.log(), dim=0)
        return weights.to(dtype=losses.dtype, device=losses.device)

    def _update_logits(self, delta: Tensor) -> None:
        z = torch.softmax(self.logits, dim=0)
        # z ⊙ (δ - z·δ), written as z_t·Σ_s z_s(δ_t - δ_s) so that it is exactly 0 when all δ are
        # equal (no rounding noise for Adam to blow up into a full-size step).
        centred = (z.unsqueeze(0) * (delta.unsqueeze(1) - delta.unsqueeze(0))).sum(dim=1)
        grad = z * centred + self.weight_decay * self.logits
        self.adam_step.add_(1)
        k = int(self.adam_step)
        self.adam_m.mul_(_BETA1).add_(grad, alpha=1 - _BETA1)
        self.adam_v.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
        m_hat = self.adam_m / (1 - _BETA1**k)
        v_hat = self.adam_v / (1 - _BETA2**k)
        self.logits.sub_(self.lr * m_hat / (v_hat.sqrt() + _EPS))
