"""ConFIG: the direction with equal cosines to every task gradient, scaled by the sum of projections."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ._tracking import gramian64
from .base import Aggregator, register_aggregator

__all__ = ["ConFIG"]

#: Lower bound of the pseudo-inverse cut-off (relative singular value of the unit-row Jacobian).
_MIN_RTOL = 1e-6


@register_aggregator
class ConFIG(Aggregator):
    """ConFIG: the update with equal, positive cosine to every task gradient (a pseudo-inverse).

    With ``U`` the Jacobian with unit-norm rows (``u_t = g_t/‖g_t‖``; a zero gradient gives a
    zero row), the direction is ``d = U⁺·1`` (the minimum-norm solution of ``U d = 1``: equal
    cosines with every task gradient), made a unit vector ``d̂``; the update is
    ``(Σ_t g_tᵀd̂)·d̂``, the sum of the task gradients' projections on it (the paper's Eq. 2 with
    equal weights). If the task gradients are linearly independent, every task decreases at the
    same relative rate; if not (``T`` larger than the rank), ``U d = 1`` may have no solution and
    ``d`` is its least-squares solution (which can then conflict with a task).

    Computed in the ``T``-dimensional span of the gradients: ``U⁺1 = Uᵀ(UUᵀ)⁺1`` with the Gramian
    accumulated in float64 (one pass over ``J``, plus the final ``Jᵀw``; the other steps are ``T×T``). Pseudo-inverse cut-off:
    singular values of ``U`` below ``max(10·T·ε, 1e-6)`` times the largest are treated as zero
    (``ε`` the machine epsilon of ``J``'s dtype). When every task gradient is zero, or they cancel
    (``U⁺1 = 0``, e.g. ``g₂ = -g₁``), the update is zero.

    Matches torchjd's ``ConFIG`` with its default ``pref_vector=None``; this class has no
    preference vector (the paper's weighted variant), and its cut-off does not grow with the number
    of parameters (``torch.linalg.pinv``'s default ``max(T, P)·ε`` does, and truncates meaningful
    directions for large models).

    Reference:
        Qiang Liu, Mengyu Chu, Nils Thuerey, "ConFIG: Towards Conflict-free Training of Physics
        Informed Neural Networks", ICLR 2025. https://arxiv.org/abs/2408.11104

    Args:
        num_tasks: the number of tasks ``T``.
    """

    name: ClassVar[str] = "config"
    properties: ClassVar[frozenset[str]] = frozenset({"stateless", "permutation_equivariant"})

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)

    def forward(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """The ConFIG update ``[P]``."""
        self._check_inputs(jacobian, losses)
        jac = jacobian.detach()
        weights = self.weights(jac)
        update: Tensor = weights.to(jac.dtype) @ jac
        return update

    def weights(self, jacobian: Tensor) -> Tensor:
        """``w`` (float64) such that the update is ``Jᵀw``."""
        t = jacobian.shape[0]
        gram = gramian64(jacobian)
        zeros = torch.zeros(t, dtype=torch.float64, device=jacobian.device)
        if not bool(torch.isfinite(gram).all()) or not bool((gram.diagonal() > 0).any()):
            return zeros
        norms = gram.diagonal().clamp_min(0.0).sqrt()
        live = norms > 0
        inv = torch.where(live, 1.0 / torch.where(live, norms, 1.0), 0.0)
        unit_gram = gram * inv[:, None] * inv[None, :]
        rtol = max(10.0 * t * torch.finfo(jacobian.dtype).eps, _MIN_RTOL)
        evals, evecs = torch.linalg.eigh(unit_gram)
        keep = evals > (rtol**2) * evals.max().clamp_min(0.0)
        if not bool(keep.any()):
            return zeros
        vk = evecs[:, keep]
        x: Tensor = vk @ ((vk.T @ torch.ones_like(norms)) / evals[keep])  # (UUᵀ)⁺1
        y = x * inv  # d = Uᵀx = Jᵀy
        gy: Tensor = gram @ y
        sq_norm = float(y @ gy)  # ‖d‖²
        if not sq_norm > 0.0:
            return zeros
        return y * (float(gy.sum()) / sq_norm)  # (Σ_t g_tᵀd)/‖d‖² · d = (Σ_t g_tᵀd̂)·d̂
