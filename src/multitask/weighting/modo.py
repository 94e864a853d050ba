"""MoDo: multi-objective gradient with double sampling (one projected step on the task weights)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ._qp import project_onto_simplex, simplex_projection
from .base import Weighting, check_float, register

__all__ = ["MoDo", "project_onto_simplex", "simplex_projection"]


@register
class MoDo(Weighting):
    """MoDo: task weights that take one projected gradient step per call towards MGDA's.

    The weights ``λ`` (a buffer, uniform at first) live on the simplex. Each call takes one step of
    projected gradient descent on ``½‖Jᵀλ‖² + ½ρ‖λ‖²``:
    ``λ ← Π_Δ(λ - gamma·(A + rho·I)λ)`` and returns the new ``λ``; the update is ``Jᵀλ``, the
    paper's direction and scale (a convex combination of the task gradients). ``Π_Δ`` is the
    Euclidean projection onto the simplex. Many such cheap steps track MGDA's min-norm weights.

    The matrix ``A``: the paper samples two independent mini-batches and uses ``A = J₁J₂ᵀ``, an
    unbiased estimate of ``E[J]E[J]ᵀ``, for the ``λ`` step (and a third batch, or their mean, for
    the update). The engine passes the Gramian ``G = JJᵀ`` of one batch, so here ``A = G``: exactly
    the paper's step with full-batch (deterministic) gradients, but with mini-batches ``E[JJᵀ]``
    also contains the gradient covariance, the bias double sampling removes, and the convergence
    guarantee of the stochastic analysis no longer applies. ``forward`` takes any ``[T, T]``
    matrix (it is not assumed symmetric), so a caller holding two independent batches can pass
    ``J₁J₂ᵀ`` itself. ``gamma`` is not scale-free: the step is ``gamma·‖g‖²`` in weight space.

    Matches torchjd's ``MoDoWeighting`` (same defaults). LibMTL's default ``gamma`` is ``1e-3``.

    Reference:
        Lisha Chen, Heshan Fernando, Yiming Ying, Tianyi Chen, "Three-Way Trade-Off in
        Multi-Objective Learning: Optimization, Generalization and Conflict-Avoidance",
        NeurIPS 2023 (JMLR 2024). https://arxiv.org/abs/2305.20057

    Args:
        num_tasks: the number of tasks ``T``.
        gamma: the step size of the task-weight update (> 0).
        rho: the ``ℓ2`` regularisation of the task weights (>= 0); it pulls them towards uniform.
    """

    name: ClassVar[str] = "modo"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset({"nonnegative", "on_simplex", "permutation_equivariant"})

    task_weights: Tensor

    def __init__(self, num_tasks: int, *, gamma: float = 0.1, rho: float = 0.1) -> None:
        super().__init__(num_tasks)
        self.gamma = check_float("MoDo", "gamma", gamma, "0.1")
        self.rho = check_float("MoDo", "rho", rho, "0.1", allow_zero=True)
        self.register_buffer("task_weights", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64))

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """The updated weights ``[T]`` on the simplex (``gramian`` may be any ``[T, T]`` matrix ``J₁J₂ᵀ``)."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        a = gramian.detach().to(dtype=torch.float64, device=self.task_weights.device)
        lam = self.task_weights
        step = a @ lam + self.rho * lam
        new = project_onto_simplex(lam - self.gamma * step) if torch.isfinite(step).all() else lam.clone()
        self.task_weights.copy_(new)
        return new.to(dtype=losses.dtype, device=losses.device)
