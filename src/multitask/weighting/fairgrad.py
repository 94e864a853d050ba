"""FairGrad: α-fair task weights, the solution of ``(G w)_t = w_t^{-1/α}``, and its Newton solver.

The solver here is shared with :mod:`~multitask.weighting.nash_mtl` (Nash-MTL is FairGrad with
``α = 1``). It works on the unit-diagonal Gramian ``C = D⁻¹ G D⁻¹`` (``D = diag(‖g_t‖)``), which
makes it insensitive to the scale of each task's gradient, in float64 on the CPU:

* ``α = 1``: ``(C + εI) u = 1/u`` is the stationarity condition of the self-concordant convex
  function ``½ uᵀ(C + εI)u - Σ log u_t``; damped Newton (step ``1/(1 + λ)`` while the Newton
  decrement ``λ > 1/4``, full steps after) converges from any positive start, quadratically at
  the end, and never leaves ``u > 0``.
* ``α ≠ 1``: the ``α = 1`` solution is a point where ``(C + εI) u > 0``; from there Newton's
  method on the log-residual ``R(y) = log((C + εI) e^y) + y/α - log c`` (``c_t = ‖g_t‖^{1/α - 1}``,
  ``y = log u``), with backtracking on ``‖R‖²`` inside ``{(C + εI) u > 0}``, solves the equation.
  In logarithms the power law ``u^{-1/α}`` is linear, so Newton is not slowed down by it; when a
  full step fails, ``1/α`` is moved there from 1 in smaller steps (continuation).

``ε = 1e-8`` (relative to the unit diagonal) keeps the solution finite when no solution exists
(``0`` in the convex hull of the gradients, e.g. ``g_2 = -g_1``): the weights then stay bounded by
``sqrt(T/ε)`` in ``C``'s units and the update is close to zero. If rounding makes ``C + εI``
indefinite (a float32 Gramian of a huge model), ``ε`` is raised until the Cholesky factorisation
succeeds.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, check_float, register

__all__ = ["FairGrad"]

#: Tikhonov regularisation added to the unit-diagonal Gramian.
REG = 1e-8
#: A task whose squared gradient norm is below this fraction of the largest one counts as zero.
ZERO_ROW = 1e-30


def unit_gramian(gramian: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(G, C, norms, active)`` from a Gramian, in float64 on the CPU.

    ``G`` is the symmetrised Gramian; ``active`` marks the tasks whose gradient is not
    (numerically) zero; ``C`` is the Gramian of their normalised gradients (clamped to
    ``[-1, 1]``, exactly 1 on the diagonal) and ``norms`` their gradient norms.
    """
    g = gramian.detach().to(device="cpu", dtype=torch.float64)
    g = torch.nan_to_num(0.5 * (g + g.T), nan=0.0, posinf=0.0, neginf=0.0)
    diag = g.diagonal()
    active = diag > max(ZERO_ROW * float(diag.max()), 0.0)
    sub = g if bool(active.all()) else g[active][:, active]
    inv = sub.diagonal().rsqrt()
    c = (sub * inv.unsqueeze(1) * inv.unsqueeze(0)).clamp_(-1.0, 1.0)
    c.diagonal().fill_(1.0)
    return g, c, inv.reciprocal(), active


class _System:
    """``H = C + εI`` with its entrywise absolute value, raising ``ε`` if ``H`` turns out indefinite."""

    def __init__(self, c: Tensor, reg: float = REG) -> None:
        self.c = c
        self.reg = reg
        self.h = c.clone()
        self.h.diagonal().add_(reg)
        self.abs_h = self.h.abs()

    def factor(self, diag: Tensor) -> Tensor:
        """Cholesky factor of ``H + diag(diag)``; bumps ``ε`` (×10) until it exists.

        After ten bumps (``ε = 1e2``: ``C`` is not a Gramian at all) it factors the diagonal part only.
        """
        diag = torch.nan_to_num(diag, nan=0.0, posinf=1e300)
        for _ in range(10):
            chol: Tensor
            chol, info = torch.linalg.cholesky_ex(self.h + torch.diag_embed(diag))
            if int(info) == 0:
                return chol
            self.reg = max(10.0 * self.reg, 1e-8)
            self.h = self.c.clone()
            self.h.diagonal().add_(self.reg)
            self.abs_h = self.h.abs()
        return torch.diag_embed((self.h.diagonal().clamp_min(1.0) + diag).sqrt())


def _solve(chol: Tensor, rhs: Tensor) -> Tensor:
    return torch.cholesky_solve(rhs.unsqueeze(1), chol).squeeze(1)


def ray_scale(h: Tensor, u: Tensor) -> Tensor:
    """The best multiple ``s·u`` of a positive ``u`` for ``½ uᵀHu - Σ log u`` (``s² = T / uᵀHu``)."""
    quad = float(u @ (h @ u))
    return u * math.sqrt(u.numel() / quad) if quad > 0 else u


def solve_nash(system: _System, u0: Tensor, max_iter: int) -> Tensor:
    """``u > 0`` with ``(C + εI) u = 1/u``: damped Newton on ``½ uᵀ(C + εI)u - Σ log u``.

    Stops once the squared Newton decrement ``λ²`` (twice the distance to the optimum in value)
    is below ``1e-12``, after taking that last full step (whose decrement is then about
    ``λ² <= 1e-12``: ``u`` is accurate to ~1e-12 relative). Damped steps move ``u`` by less than
    ``λ/(1 + λ) < 1`` in the norm ``‖Δ/u‖``, full ones (``λ <= 1/4``) by less than ``1/4``, so
    ``u`` stays positive.
    """
    u = u0
    for _ in range(max_iter):
        inv = u.reciprocal()
        grad = torch.addmv(-inv, system.h, u)
        step = _solve(system.factor(inv * inv), grad)
        lam2 = float(grad @ step)
        if not math.isfinite(lam2):  # cannot happen for a finite C; keep the last finite point
            break
        if lam2 <= 0.0625:
            u = u - step
            if lam2 <= 1e-12:
                break
        else:
            u = u - step / (1.0 + math.sqrt(lam2))
    return u


def _log_newton(
    system: _System, log_c: Tensor, p: float, u: Tensor, budget: int, tol: float
) -> tuple[Tensor, int, bool]:
    """Newton on ``R(y) = log(H e^y) + p·y - log c`` from a ``u`` with ``Hu > 0``.

    Backtracks on ``‖R‖²`` inside ``{Hu > 0}``. ``R_t`` is the log of the ratio of the two sides
    of the equation, so ``max |R| <= tol`` is a relative residual. Returns the last accepted
    point, the iterations used and whether it converged (or can make no further progress).
    """
    y = u.log()
    hu = system.h @ u
    res = hu.log() + p * y - log_c
    merit = float(res @ res)
    for used in range(budget):
        if float(res.abs().max()) <= tol:
            return u, used, True
        # J_R = diag(1/Hu) H U + pI, so J_R dy = -R  <=>  (H + p diag(Hu/u)) (u ⊙ dy) = -(Hu ⊙ R).
        step = _solve(system.factor(p * hu / u), hu * res).div_(u).neg_()
        t = 1.0
        while True:
            y_new = y + t * step
            u_new = y_new.exp()
            hu_new = system.h @ u_new
            if float(hu_new.min()) > 0:
                res_new = hu_new.log() + p * y_new - log_c
                merit_new = float(res_new @ res_new)
                if merit_new <= (1.0 - 1e-4 * t) * merit:
                    break
            t *= 0.5
            if t * float(step.abs().max()) < 1e-14:  # no progress possible at this precision
                return u, used + 1, merit < 1e-2 * tol
        y, u, hu, res, merit = y_new, u_new, hu_new, res_new, merit_new
    return u, budget, float(res.abs().max()) <= tol


def _max_residual(system: _System, log_norms: Tensor, p: float, u: Tensor) -> float:
    hu = system.h @ u
    if float(hu.min()) <= 0:
        return math.inf
    return float((hu.log() + p * u.log() - (p - 1.0) * log_norms).abs().max())


def solve_fair(system: _System, log_norms: Tensor, p: float, max_iter: int) -> Tensor:
    """``u > 0`` with ``(C + εI) u = c ⊙ u^{-p}``, ``c = exp((p - 1)·log_norms)`` (see the module docstring).

    Continuation from the Nash solution (``p = 1``): each stage multiplies ``p`` by at most
    ``ratio`` (2 at first, doubled after a success, square-rooted after a failure) and starts
    from the previous stage's solution.
    """
    u_done = solve_nash(system, ray_scale(system.h, torch.ones_like(log_norms)), max_iter)
    budget, p_done, ratio = max_iter, 1.0, 2.0
    u_last = u_done
    while p_done != p and budget > 0:
        p_next = p_done * min(max(p / p_done, 1.0 / ratio), ratio)
        final = p_next == p
        u_last, used, ok = _log_newton(
            system,
            (p_next - 1.0) * log_norms,
            p_next,
            u_done,
            budget if final else min(budget, 15),
            1e-10 if final else 1e-3,
        )
        budget -= used
        if ok:
            u_done, p_done, ratio = u_last, p_next, ratio * 2.0
        else:
            ratio = math.sqrt(ratio)
            if ratio < 1.0 + 1e-3:
                break
    if p_done == p:
        return u_done
    # Out of budget: the better of the last stage's point and the last solved stage's solution.
    return min((u_last, u_done), key=lambda v: _max_residual(system, log_norms, p, v))


@register
class FairGrad(Weighting):
    """FairGrad: α-fair task weights, solving ``(G w)_t = w_t^{-1/α}`` (α = 1 is Nash-MTL's).

    The update ``d = Jᵀw`` maximises the α-fair utility ``Σ_t (g_tᵀd)^{1-α}/(1-α)`` (``log`` at
    ``α = 1``) of the tasks' rates of improvement ``g_tᵀd`` for a given ``‖d‖``; its optimality
    condition is ``(G w)_t = w_t^{-1/α}`` with ``w > 0``, which this class solves exactly (Newton's
    method in float64, typically 5-15 iterations; no SciPy): ``α → 0`` approaches equal weighting,
    ``α = 1`` is proportional fairness (the direction of Nash-MTL), ``α → ∞`` max-min fairness.
    Every task's loss decreases to first order (``G w > 0``).

    Scale: the weights solve the equation for the raw Gramian, as in the paper, the official code
    and torchjd's ``FairGrad``, so ``c·G`` gives ``c^{-α/(1+α)}·w``. A task with a zero gradient
    (for instance a task absent from the batch) has no finite solution (``w_t → ∞``); it gets the
    mean weight of the other tasks (it adds nothing to the shared update; its head is trained
    with an ordinary weight). When no exact solution exists (``0`` in the convex hull of the task
    gradients) a ridge of ``10⁻⁸`` on the normalised Gramian keeps the weights finite. For
    ``α ≠ 1`` together with gradient norms differing by more than ~10³, the equation is badly
    conditioned; the solver then stops after ``max_iter`` iterations at its best point (SciPy's
    least squares, which torchjd uses, does not converge on such cases either).

    Reference:
        Hao Ban, Kaiyi Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024.
        https://arxiv.org/abs/2402.15638

    Args:
        num_tasks: the number of tasks ``T``.
        alpha: the fairness parameter ``α > 0`` (the paper's default, 1, is proportional fairness).
        max_iter: the Newton iteration budget of the ``α = 1`` stage, and again of all the
            ``α ≠ 1`` stages together.
    """

    name: ClassVar[str] = "fairgrad"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "permutation_equivariant", "stateless", "non_conflicting", "loss_scale_invariant"}
    )

    def __init__(self, num_tasks: int, *, alpha: float = 1.0, max_iter: int = 100) -> None:
        super().__init__(num_tasks)
        check_float("FairGrad", "alpha", alpha, "1.0")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"FairGrad: max_iter={max_iter!r} must be an integer >= 1, e.g. max_iter=100")
        self.alpha = alpha
        self.max_iter = max_iter

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """The α-fair weights ``[T]`` for the Gramian ``G``."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        _, c, norms, active = unit_gramian(gramian)
        weights = torch.ones(self.num_tasks, dtype=torch.float64)
        if c.numel() > 0:
            # Solve on G / s (s = the largest squared norm) and scale back: w(sG) = s^{-α/(1+α)} w(G).
            top = float(norms.max())
            rel = norms / top
            u = solve_fair(_System(c), rel.log(), 1.0 / self.alpha, self.max_iter)
            active_w = u / rel * top ** (-2.0 * self.alpha / (1.0 + self.alpha))
            weights[active] = active_w
            weights[~active] = active_w.mean()
        return weights.to(dtype=losses.dtype, device=losses.device)
