"""UPGrad: average of the task gradients, each projected onto the dual cone of all of them."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from ._qp import project_dual_cone
from .base import Weighting, as_weights, check_float, register

__all__ = ["UPGrad"]


def check_pref_vector(owner: str, pref_vector: object, num_tasks: int) -> tuple[float, ...] | None:
    """Validate a preference vector: None, or ``num_tasks`` finite numbers >= 0, not all zero."""
    if pref_vector is None:
        return None
    example = f"pref_vector={tuple([1.0] * num_tasks)!r}"
    if not isinstance(pref_vector, list | tuple) or len(pref_vector) != num_tasks:
        raise ValueError(
            f"{owner}: pref_vector={pref_vector!r} must be None or a sequence of {num_tasks} numbers "
            f"(one per task), e.g. {example}"
        )
    values = []
    for v in pref_vector:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{owner}: pref_vector={pref_vector!r} must hold finite numbers >= 0, e.g. {example}")
        values.append(float(v))
    if not any(values):
        raise ValueError(f"{owner}: pref_vector={pref_vector!r} is all zero; e.g. {example}")
    return tuple(values)


def prepare_gramian(gramian: Tensor, norm_eps: float, reg_eps: float) -> Tensor:
    """``G / trace(G)`` in float64 (0 if ``trace(G) < norm_eps``), plus ``reg_eps · I``.

    These are torchjd's ``normalize`` and ``regularize`` steps (its defaults are 1e-4 for both).
    """
    g = gramian.detach().to(torch.float64)
    trace = g.diagonal().sum()
    g = torch.zeros_like(g) if float(trace) < norm_eps or not float(trace) > 0 else g / trace
    if reg_eps > 0:
        g = g + reg_eps * torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    return g


def data_eps(gramian: Tensor) -> float:
    """Relative precision of the Gramian's dtype (sets the solver's tolerances)."""
    return float(torch.finfo(gramian.dtype).eps) if gramian.is_floating_point() else 2.0**-52


def pref_weights(pref_vector: tuple[float, ...] | None, num_tasks: int, like: Tensor) -> Tensor:
    if pref_vector is None:
        return torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64, device=like.device)
    return torch.tensor(pref_vector, dtype=torch.float64, device=like.device)


class DualConeWeighting(Weighting):
    """Shared hyperparameters of the dual-cone projection methods (UPGrad, DualProj).

    Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
    https://arxiv.org/abs/2406.16232
    """

    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {
            "nonnegative",
            "non_conflicting",
            "gramian_scale_invariant",
            "loss_scale_invariant",
            "permutation_equivariant",
            "stateless",
        }
    )

    def __init__(
        self,
        num_tasks: int,
        *,
        pref_vector: tuple[float, ...] | None = None,
        norm_eps: float = 0.0,
        reg_eps: float = 0.0,
    ) -> None:
        super().__init__(num_tasks)
        self.pref_vector = check_pref_vector(type(self).__name__, pref_vector, num_tasks)
        self.norm_eps = check_float(type(self).__name__, "norm_eps", norm_eps, "1e-4", allow_zero=True)
        self.reg_eps = check_float(type(self).__name__, "reg_eps", reg_eps, "1e-4", allow_zero=True)

    def for_tasks(self, num_tasks: int) -> Weighting:
        if self.pref_vector is not None and num_tasks != self.num_tasks:
            raise ValueError(
                f"{type(self).__name__}(pref_vector={self.pref_vector}) cannot be restricted to {num_tasks} of its "
                f"{self.num_tasks} tasks (which ones is unknown); use pref_vector=None"
            )
        return super().for_tasks(num_tasks)

    def _prepare(self, losses: Tensor, gramian: Tensor | None) -> tuple[Tensor, Tensor, float]:
        """Checked inputs -> the normalised Gramian, the preference weights and the data tolerance."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        g = prepare_gramian(gramian, self.norm_eps, self.reg_eps)
        return g, pref_weights(self.pref_vector, self.num_tasks, g), data_eps(gramian)


@register
class UPGrad(DualConeWeighting):
    """UPGrad: project every task gradient onto the dual cone of all of them, then average.

    With ``π`` the Euclidean projection onto the dual cone ``{x : ⟨g_t, x⟩ >= 0 ∀t}`` of the task
    gradients, the update is ``Σ_i p_i π(g_i)`` (``p_i = 1/T`` by default: the mean of the
    projected gradients, as in the paper). By the paper's Proposition 1, ``π(Jᵀu) = Jᵀv`` with
    ``v = argmin_{v >= u} vᵀ G v``, so the weights are ``w = Σ_i v_i`` with ``v_i`` solved for
    ``u = p_i e_i``: ``T`` small QPs on the Gramian, solved exactly (to rounding) and together by
    a batched active-set method in float64, in the basis of unit-norm gradients (which leaves the
    dual cone unchanged), so tasks whose gradient norms differ by many orders of magnitude are
    handled to relative precision. The update never conflicts with any task gradient
    (``G w >= 0``), and ``w >= p``.

    ``norm_eps`` and ``reg_eps`` reproduce torchjd's numerical safeguards: the Gramian is divided
    by its trace (set to 0 when the trace is below ``norm_eps``, an absolute threshold) and
    ``reg_eps · I`` is added before solving. torchjd's defaults are ``norm_eps=1e-4,
    reg_eps=1e-4`` (needed by its quadprog solver, which requires a positive-definite matrix);
    here both default to 0, which is the exact method of the paper (the solver handles singular
    Gramians) and keeps the weights invariant to the scale of ``G``. With
    ``norm_eps=1e-4, reg_eps=1e-4`` the weights equal torchjd's ``UPGradWeighting`` to solver
    precision; with ``reg_eps > 0`` the update may conflict with a task by ``O(reg_eps)``.

    Tasks with a zero gradient impose no constraint (their projection is 0; their weight is
    ``p_t``), so a zero Gramian row for an absent task is handled exactly.

    Reference:
        Pierre Quinton, Valérian Rey, "Jacobian Descent for Multi-Objective Optimization", 2024.
        https://arxiv.org/abs/2406.16232

    Args:
        num_tasks: the number of tasks ``T``.
        pref_vector: ``T`` non-negative numbers weighting the projected gradients (None: ``1/T``
            each, the paper's UPGrad). torchjd's ``pref_vector``.
        norm_eps: the Gramian is treated as 0 when its trace is below this (0: never).
        reg_eps: added to the diagonal of the trace-normalised Gramian (0: exact).
    """

    name: ClassVar[str] = "upgrad"

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """UPGrad weights ``[T]`` from the Gramian; the losses are not used."""
        g, p, eps = self._prepare(losses, gramian)
        v = project_dual_cone(g, torch.diag(p), eps=eps)
        return as_weights(v.sum(dim=0), losses)
