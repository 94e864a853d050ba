"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ._qp import min_norm_weights
from .base import Weighting, as_weights, register

__all__ = ["MGDA"]


@register
class MGDA(Weighting):
    """MGDA: weights on the simplex giving the min-norm point of the hull of the task gradients.

    Solves ``w = argmin_{w ∈ Δ} ||Σ_t w_t g_t||² = argmin_{w ∈ Δ} wᵀ G w`` (``Δ`` the probability
    simplex, ``G`` the Gramian of the task gradients ``g_t``). The update ``d = Σ_t w_t g_t``
    satisfies ``⟨g_t, d⟩ >= ||d||² >= 0`` for every task, so it decreases every loss to first order;
    ``d = 0`` exactly at a Pareto-stationary point (some convex combination of the gradients
    vanishes), where training stops. The weights are returned as in the papers, summing to 1: the
    update ``d`` itself has the paper's scale (the min-norm vector).

    Solved exactly (to rounding) by an active-set method on the ``T×T`` Gramian in float64
    (closed form for ``T = 2``), instead of the Frank-Wolfe iterations of Sener & Koltun's
    Algorithm 2 (torchjd's ``MGDA`` also uses Frank-Wolfe, stopping at a step below
    ``epsilon=1e-3``, so it returns an approximation of these weights). Scale invariant: ``G``
    is divided by its largest diagonal entry first. When the min-norm point is not unique
    (dependent gradients), one minimiser is returned; the update is unique. Zero gradients share
    the weight equally (the min-norm point is then 0).

    For MGDA on normalised gradients (Sener & Koltun's "l2", "loss" and "loss+" variants) chain it
    after :class:`~multitask.weighting.normalize.NormalizeGradients`:
    ``create_weighting("normalize_gradients+mgda", T, normalize_gradients={"mode": "l2"})``. For
    "MGDA-UB" use the engine's ``grad_mode="features"``.

    References:
        Jean-Antoine Désidéri, "Multiple-gradient descent algorithm (MGDA) for multiobjective
        optimization", Comptes Rendus Mathématique 350(5-6), 2012.
        https://doi.org/10.1016/j.crma.2012.03.014
        Ozan Sener, Vladlen Koltun, "Multi-Task Learning as Multi-Objective Optimization",
        NeurIPS 2018. https://arxiv.org/abs/1810.04650

    Args:
        num_tasks: the number of tasks ``T``.
    """

    name: ClassVar[str] = "mgda"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {
            "nonnegative",
            "on_simplex",
            "non_conflicting",
            "gramian_scale_invariant",
            "loss_scale_invariant",
            "permutation_equivariant",
            "stateless",
        }
    )

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Min-norm weights ``[T]`` (on the simplex) from the Gramian; the losses are not used."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        return as_weights(min_norm_weights(gramian.detach()), losses)
