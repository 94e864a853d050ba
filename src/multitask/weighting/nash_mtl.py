"""Nash-MTL: task weights from the Nash bargaining solution, ``(G α)_t = 1/α_t``."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, register
from .fairgrad import _System, ray_scale, solve_nash, unit_gramian

__all__ = ["NashMTL"]


@register
class NashMTL(Weighting):
    """Nash-MTL: weights from the Nash bargaining solution ``(G α)_t = 1/α_t`` of the tasks.

    The tasks bargain over an update ``d = Jᵀα`` in a ball; the Nash bargaining solution
    maximises ``Σ_t log(g_tᵀd)`` and is characterised by ``(G α)_t = 1/α_t``, ``α > 0``: every
    task improves (``g_tᵀd = 1/α_t > 0``) and the direction is invariant to rescaling any one
    task's gradient. This class solves the equation exactly with a damped Newton method on the
    equivalent self-concordant problem ``min ½αᵀGα - Σ log α_t`` (float64, on the Gramian with unit
    diagonal, warm-started from the previous solution; a few iterations, no cvxpy). The paper's
    Algorithm 1 instead runs ``optim_niter`` rounds of a sequential convex approximation with
    cvxpy and stops at a residual of ``10⁻³``.

    Scale, as in the paper, the authors' code and torchjd's ``NashMTL``: ``α`` solves the equation
    for ``G`` itself, so ``‖Jᵀα‖² = αᵀGα = Σ_t α_t (Gα)_t = T`` whatever the gradients' scale (the
    authors divide ``G`` by ``‖G‖_F`` inside their cvxpy problem for conditioning only); then ``α``
    is scaled down so that ``‖Jᵀα‖ <= max_norm`` (the authors clip the shared gradient with
    ``clip_grad_norm_``; here the norm is computed exactly from the Gramian, so in
    ``grad_mode="features"`` it is the norm of the gradient with respect to the features). With
    the default ``max_norm = 1`` and ``T >= 2`` tasks the update therefore has norm 1.

    Edge cases: a task with a zero gradient (for instance absent from the batch) takes no part in
    the bargaining and gets the mean weight of the others (it adds nothing to the shared update;
    its head is trained with an ordinary weight). When no solution exists (``0`` in the convex
    hull of the gradients, e.g. ``g_2 = -g_1``), a ridge of ``10⁻⁸`` on the normalised Gramian
    keeps the weights finite and the update close to zero (torchjd's cvxpy problem is infeasible
    there and it returns its previous weights).

    ``update_weights_every = k > 1`` recomputes the weights at every ``k``-th call only and
    reuses them in between; :meth:`needs_gramian` then tells the engine to skip the Gramian (and
    the per-task backward passes) on the calls in between, which is where the paper's speed-up
    comes from (the reused weights keep the clipping factor of the call that computed them; the
    authors clip every step's gradient). The previous solution, the last weights and the call
    counter are buffers.

    Reference:
        Aviv Navon, Aviv Shamsian, Idan Achituve, Haggai Maron, Kenji Kawaguchi, Gal Chechik,
        Ethan Fetaya, "Multi-Task Learning as a Bargaining Game", ICML 2022.
        https://arxiv.org/abs/2202.01017

    Args:
        num_tasks: the number of tasks ``T``.
        max_norm: the largest norm of the update ``Jᵀα`` (0 disables the clipping).
        update_weights_every: recompute the weights at every this many calls.
        optim_niter: the most Newton iterations per solve (3-10 are typical).
    """

    name: ClassVar[str] = "nash_mtl"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "permutation_equivariant", "non_conflicting", "loss_scale_invariant"}
    )

    step: Tensor
    solution: Tensor
    weights: Tensor

    def __init__(
        self, num_tasks: int, *, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20
    ) -> None:
        super().__init__(num_tasks)
        ok = isinstance(max_norm, int | float) and not isinstance(max_norm, bool) and math.isfinite(max_norm)
        if not ok or max_norm < 0:
            raise ValueError(
                f"NashMTL: max_norm={max_norm!r} must be a finite number >= 0 (0 disables the clipping), e.g. max_norm=1.0"
            )
        for key, value, example in (
            ("update_weights_every", update_weights_every, 1),
            ("optim_niter", optim_niter, 20),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NashMTL: {key}={value!r} must be an integer >= 1, e.g. {key}={example}")
        self.max_norm = max_norm
        self.update_weights_every = update_weights_every
        self.optim_niter = optim_niter
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("solution", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("weights", torch.ones(num_tasks, dtype=torch.float64))

    def needs_gramian(self) -> bool:
        """True on the calls that recompute the weights (every ``update_weights_every``-th one)."""
        return int(self.step) % self.update_weights_every == 0

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """The Nash bargaining weights ``[T]`` (recomputed from ``G`` or reused, see the class doc)."""
        if not self.needs_gramian():
            if gramian is not None:
                self._check_inputs(losses, gramian)
            elif losses.dim() != 1 or losses.shape[0] != self.num_tasks:
                raise ValueError(
                    f"NashMTL: losses has shape {tuple(losses.shape)}; expected ({self.num_tasks},), one loss per task"
                )
            self.step.add_(1)
            return self.weights.to(dtype=losses.dtype, device=losses.device)
        self._check_inputs(losses, gramian)
        assert gramian is not None
        _, c, norms, active = unit_gramian(gramian)
        weights = torch.ones(self.num_tasks, dtype=torch.float64)
        if c.numel() > 0:
            system = _System(c)
            start = self.solution.detach().to(device="cpu", dtype=torch.float64)[active].clamp_min(1e-12)
            u = solve_nash(system, ray_scale(system.h, start), self.optim_niter)
            # u solves C u = 1/u with C = D⁻¹GD⁻¹, so α = D⁻¹u solves G α = 1/α.
            alpha = u / norms
            if self.max_norm > 0:
                norm = math.sqrt(max(float(u @ (c @ u)), 0.0))  # ‖Jᵀα‖² = αᵀGα = uᵀCu (= T exactly)
                if norm > self.max_norm:
                    alpha = alpha * (self.max_norm / norm)
            weights[active] = alpha
            weights[~active] = alpha.mean()
            solution = torch.ones(self.num_tasks, dtype=torch.float64)
            solution[active] = u
            self.solution.copy_(solution)
        self.weights.copy_(weights.to(self.weights.device))
        self.step.add_(1)
        return weights.to(dtype=losses.dtype, device=losses.device)
