"""DualProj: the averaged gradient, projected onto the dual cone of the task gradients."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ._qp import project_dual_cone
from .base import as_weights, register
from .upgrad import DualConeWeighting

__all__ = ["DualProj"]


@register
class DualProj(DualConeWeighting):
    """DualProj: project the mean gradient onto the dual cone of the task gradients.

    The update is ``π(Σ_t p_t g_t)`` (``p_t = 1/T`` by default), ``π`` being the Euclidean
    projection onto the dual cone ``{x : ⟨g_t, x⟩ >= 0 ∀t}``: the closest vector to the averaged
    gradient that conflicts with no task (the projection of GEM, Lopez-Paz & Ranzato 2017,
    applied to all tasks). By Proposition 1 of the paper it has weights
    ``w = argmin_{v >= p} vᵀ G v``, solved exactly (to rounding) by an active-set method on the
    Gramian in float64, in the basis of unit-norm gradients (see :class:`UPGrad`). ``G w >= 0``
    and ``w >= p``.

    ``norm_eps`` and ``reg_eps`` reproduce torchjd's numerical safeguards (trace normalisation
    with an absolute threshold, then ``reg_eps · I``; torchjd's defaults are 1e-4 for both); here
    both default to 0, the exact method. With ``norm_eps=1e-4, reg_eps=1e-4`` the weights equal
    torchjd's ``DualProjWeighting`` to solver precision.

    Reference:
        Pierre Quinton, Valérian Rey, "Jacobian Descent for Multi-Objective Optimization", 2024.
        https://arxiv.org/abs/2406.16232

    Args:
        num_tasks: the number of tasks ``T``.
        pref_vector: ``T`` non-negative numbers weighting the gradients before the projection
            (None: ``1/T`` each, the mean). torchjd's ``pref_vector``.
        norm_eps: the Gramian is treated as 0 when its trace is below this (0: never).
        reg_eps: added to the diagonal of the trace-normalised Gramian (0: exact).
    """

    name: ClassVar[str] = "dualproj"

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """DualProj weights ``[T]`` from the Gramian; the losses are not used."""
        g, p, eps = self._prepare(losses, gramian)
        return as_weights(project_dual_cone(g, p, eps=eps), losses)
