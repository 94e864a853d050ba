"""IMTL: impartial multi-task learning (IMTL-G on gradients, and the hybrid with learnt loss scales)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from .base import Weighting, as_weights, register

__all__ = ["IMTL", "IMTLG", "imtlg_weights"]


def imtlg_weights(gramian: Tensor, *, eps: float | None = None) -> Tensor:
    """IMTL-G weights ``α = G⁺d / Σ(G⁺d)`` (float64 ``[T]``), ``d_t = ||g_t|| = sqrt(G_tt)``.

    ``Gα = λd`` says that the update ``Jᵀα`` has the same projection ``λ`` on every unit gradient
    ``g_t / ||g_t||``; ``Σ α = 1`` fixes its scale. Computed in the basis of unit-norm gradients,
    ``C = G / (d dᵀ)`` (tasks with a zero gradient are left out and get weight 0): for a
    numerically non-singular ``C`` (eigenvalues above ``10·T·eps·λ_max``, ``eps`` the precision
    of the input dtype), ``α ∝ D⁻¹ C⁻¹ 1``, which is ``G⁻¹d`` computed stably even when gradient
    norms differ by many orders of magnitude. Otherwise (linearly dependent gradients) the
    Moore-Penrose pseudo-inverse is used as in Quinton & Rey (2024) and torchjd: with the rank
    ``r`` decided on ``C``, ``G = B Bᵀ`` with ``B = D V_r Λ_r^½``, ``B = QR`` and
    ``G⁺d = Q R⁻ᵀ R⁻¹ Qᵀ d``. When ``|Σ G⁺d| <= 1e-12 Σ|G⁺d|`` the weights are 0 (torchjd's guard,
    made relative).
    """
    g = gramian.detach().to(torch.float64)
    t = g.shape[0]
    e = eps if eps is not None else float(torch.finfo(gramian.dtype).eps)
    norms = g.diagonal().clamp_min(0).sqrt()
    out = torch.zeros(t, dtype=torch.float64, device=g.device)
    idx = (norms > 0).nonzero(as_tuple=True)[0]
    n = int(idx.numel())
    if n == 0:
        return out
    d = norms[idx]
    c = g[idx][:, idx] / (d.unsqueeze(1) * d.unsqueeze(0))
    c = 0.5 * (c + c.T)
    lam, vec = torch.linalg.eigh(c)
    keep = lam > 10.0 * max(n, 1) * e * lam.max()
    if bool(keep.all()):
        beta = vec @ ((vec.T @ torch.ones(n, dtype=torch.float64, device=g.device)) / lam)
        v = beta / d
    else:
        factor = d.unsqueeze(1) * vec[:, keep] * lam[keep].sqrt()  # G = B Bᵀ on these tasks
        q, r = torch.linalg.qr(factor)
        v = _pinv_apply(q, r, d)
    total = v.sum()
    if not bool(torch.isfinite(total)) or float(total.abs()) <= 1e-12 * float(v.abs().sum()):
        return out
    out[idx] = v / total
    return out


def _pinv_apply(q: Tensor, r: Tensor, d: Tensor) -> Tensor:
    """``Q R⁻ᵀ R⁻¹ Qᵀ d``: the pseudo-inverse of ``G = B Bᵀ`` (``B = QR`` of full column rank) times ``d``."""
    y = torch.linalg.solve_triangular(r, (q.T @ d).unsqueeze(1), upper=True)  # R⁻¹ Qᵀ d
    z = torch.linalg.solve_triangular(r.T, y, upper=False)  # R⁻ᵀ R⁻¹ Qᵀ d
    out: Tensor = (q @ z).squeeze(1)
    return out


@register
class IMTLG(Weighting):
    """IMTL-G: weights summing to 1 whose update projects equally onto every unit task gradient.

    Finds ``g = Σ_t α_t g_t`` with ``Σ_t α_t = 1`` such that ``⟨g, g_t / ||g_t||⟩`` is the same for
    every task: no task dominates the update's direction regardless of its gradient's norm. The
    paper's closed form (``α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹`` with ``D``, ``U`` the differences of the
    gradients and unit gradients to the first) equals ``α ∝ G⁻¹ d`` (``d_t = ||g_t||``); this is
    computed on the Gramian in float64, stably when gradient norms differ by orders of magnitude,
    with the pseudo-inverse for linearly dependent gradients (as in torchjd's ``IMTLG``, following
    Quinton & Rey 2024); see :func:`imtlg_weights`. Weights can be negative. Zero gradients get
    weight 0.

    The paper applies ``α`` to the shared parameters only and trains task-specific parameters on
    their own losses; through this interface (the engine backpropagates ``Σ_t α_t L_t``) the task
    heads' gradients are scaled by ``α_t`` too.

    Reference:
        Liyang Liu, Yi Li, Zhanghui Kuang, Jing-Hao Xue, Yimin Chen, Wenming Yang, Qingmin Liao,
        Wayne Zhang, "Towards Impartial Multi-task Learning", ICLR 2021.
        https://openreview.net/forum?id=IMPnRXEWpvr

    Args:
        num_tasks: the number of tasks ``T``.
    """

    name: ClassVar[str] = "imtl_g"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {"gramian_scale_invariant", "loss_scale_invariant", "permutation_equivariant", "stateless"}
    )

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """IMTL-G weights ``[T]`` (summing to 1) from the Gramian; the losses are not used."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        return as_weights(imtlg_weights(gramian), losses)


@register
class IMTL(Weighting):
    """IMTL (hybrid): learnt loss scales (IMTL-L) with IMTL-G on the scaled losses' gradients.

    IMTL-L scales each loss as ``e^{s_t} L_t - s_t`` with a learnt ``s_t`` (an ``nn.Parameter``,
    ``loss_scale``); minimising it over ``s_t`` drives ``e^{s_t} L_t`` towards 1. IMTL-G is then
    applied to the gradients of the scaled losses, ``e^{s_t} g_t``, whose Gramian is ``E G E``
    (``E = diag(e^s)``), giving ``α`` (summing to 1, see :class:`IMTLG`).

    Mapping onto this interface (the engine backpropagates ``Σ_t w_t L_t + regularizer()``):
    :meth:`forward` returns ``w_t = α_t e^{s_t}`` with ``α`` detached but attached to ``s`` through
    ``e^{s_t}`` alone (``w = α·sg(e^s) + e^s - sg(e^s)``, ``sg`` = stop-gradient: value
    ``α_t e^{s_t}``, derivative ``∂w_t/∂s_t = e^{s_t}``), and :meth:`regularizer` returns
    ``-Σ_t s_t``. Hence:

    * shared parameters get ``Σ_t α_t ∇(e^{s_t} L_t)``: IMTL-G on the scaled losses (paper, LibMTL);
    * ``s_t`` gets ``e^{s_t} L_t - 1``, the gradient of the scaled loss ``e^{s_t} L_t - s_t``
      (paper, LibMTL), not scaled by ``α_t``;
    * task-specific parameters get ``α_t e^{s_t} ∇L_t``, where the paper and LibMTL use
      ``e^{s_t} ∇L_t`` (their heads see the unweighted scaled loss). Within the weighting
      interface the engine has one weight per task for all parameters; the difference is a
      positive per-task factor ``α_t`` on the heads' step (which an adaptive optimizer largely
      absorbs).

    Put ``weighting.parameters()`` in the optimizer (the built-in trainer does); otherwise ``s``
    stays at ``init`` and this is IMTL-G with weights scaled by ``e^{init}``.

    Reference:
        Liyang Liu, Yi Li, Zhanghui Kuang, Jing-Hao Xue, Yimin Chen, Wenming Yang, Qingmin Liao,
        Wayne Zhang, "Towards Impartial Multi-task Learning", ICLR 2021.
        https://openreview.net/forum?id=IMPnRXEWpvr

    Args:
        num_tasks: the number of tasks ``T``.
        init: the initial log-scale ``s_t`` of every task (0: unscaled losses).
    """

    name: ClassVar[str] = "imtl"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {"gramian_scale_invariant", "loss_scale_invariant", "permutation_equivariant"}
    )

    def __init__(self, num_tasks: int, *, init: float = 0.0) -> None:
        super().__init__(num_tasks)
        if isinstance(init, bool) or not isinstance(init, int | float) or not math.isfinite(init):
            raise ValueError(f"IMTL: init={init!r} must be a finite number, e.g. init=0.0")
        self.init = init
        self.loss_scale = nn.Parameter(torch.full((num_tasks,), float(init)))

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Weights ``α_t e^{s_t}`` ``[T]``, differentiable with respect to ``s`` through ``e^{s_t}`` only."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        scale = torch.exp(self.loss_scale.to(dtype=losses.dtype, device=losses.device))
        fixed = scale.detach().to(torch.float64)
        g = gramian.detach().to(torch.float64) * fixed.unsqueeze(1) * fixed.unsqueeze(0)
        alpha = imtlg_weights(g, eps=float(torch.finfo(gramian.dtype).eps)).to(losses.dtype)
        return alpha * scale.detach() + (scale - scale.detach())

    def regularizer(self) -> Tensor:
        """``-Σ_t s_t``, the ``-s_t`` terms of the scaled losses ``e^{s_t} L_t - s_t``."""
        return -self.loss_scale.sum()
