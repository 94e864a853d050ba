"""CAGrad: the update that maximises the worst task improvement near the average gradient."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from . import _qp
from .base import Weighting, as_weights, check_float, register

__all__ = ["CAGRAD_RESCALE", "CAGrad", "cagrad_weights"]

#: Allowed values of ``rescale`` (the official code's option): none, ``/(1 + c²)``, ``/(1 + c)``.
CAGRAD_RESCALE: tuple[int, ...] = (0, 1, 2)

_MAX_STEPS = 60
#: ||g_w||² below this times |w|ᵀ|G||w| is rounding noise (float64): g_w is taken as 0.
_NOISE = 1e-13


def _face(h: Tensor, b: Tensor, state: _qp._State) -> tuple[Tensor, Tensor]:
    """On the free set of ``state``: ``w(σ) = w0 + σ w1`` solves the simplex QP with ``q = σ b``."""
    t = b.shape[1]
    k = _qp._kkt_matrix(h, True)
    fe = _qp._extend(state.free, True)
    m = _qp._masked(k, fe)
    rhs0 = torch.zeros_like(fe, dtype=h.dtype)
    rhs0[:, t] = 1.0
    rhs1 = torch.cat([-b * state.free.to(h.dtype), torch.zeros_like(b[:, :1])], dim=1)
    out = []
    for rhs in (rhs0, rhs1):
        sol = _qp._bmv(state.inv, rhs)
        sol = sol + _qp._bmv(state.inv, rhs - _qp._bmv(m, sol))  # one step of iterative refinement
        out.append(sol[:, :t] * state.free.to(h.dtype))
    return out[0], out[1]


#: Up to this many tasks the dual is solved by checking every face of the simplex at once.
_ENUMERATE_MAX_TASKS = 8


def _faces(t: int, device: torch.device) -> Tensor:
    """All ``2^t - 1`` non-empty subsets of ``range(t)`` as a bool ``[F, t]`` tensor."""
    codes = torch.arange(1, 2**t, device=device)
    return (codes.unsqueeze(1) >> torch.arange(t, device=device)) & 1 == 1


def _enumerate(g: Tensor, b: Tensor, rho: float, eps: float, floor: float, faces: Tensor) -> Tensor | None:
    """The dual's minimiser by checking the closed-form point of each of ``faces``, or None.

    For each face ``S``: solve its bordered KKT system for ``w(σ) = w0 + σ w1``, take the fixed
    point ``σ = sqrt(a0 / (ρ² - a1))`` and keep the candidates that are feasible and satisfy the
    optimality conditions of the simplex QP at that ``σ``; among those (all optimal, up to
    rounding) return the one with the lowest dual objective.
    """
    t = g.shape[0]
    nf = faces.shape[0]
    k = _qp._kkt_matrix(g.unsqueeze(0), True).expand(nf, t + 1, t + 1)
    fe = _qp._extend(faces, True)
    m = _qp._masked(k, fe)
    ff = faces.to(g.dtype)
    rhs = torch.zeros(nf, t + 1, 2, dtype=g.dtype, device=g.device)
    rhs[:, t, 0] = 1.0
    rhs[:, :t, 1] = -b.unsqueeze(0) * ff
    sol, info = torch.linalg.solve_ex(m, rhs)
    resid = (m @ sol - rhs).abs().amax(dim=(1, 2))
    ok = (info == 0) & torch.isfinite(sol).all(dim=2).all(dim=1) & (resid <= 1e-9 * (1.0 + sol.abs().amax(dim=(1, 2))))
    w0, w1 = sol[:, :t, 0] * ff, sol[:, :t, 1] * ff
    a0 = ((w0 @ g) * w0).sum(dim=1)
    a1 = ((w1 @ g) * w1).sum(dim=1).clamp_min(0)
    noise = _NOISE * ((w0.abs() @ g.abs()) * w0.abs()).sum(dim=1)  # rounding level of a0
    ok = ok & (a0 > floor * floor) & (a0 > noise) & (a1 < rho * rho)
    sigma = (a0.clamp_min(0) / torch.where(ok, rho * rho - a1, 1.0)).sqrt()
    w = w0 + sigma.unsqueeze(1) * w1
    gw = w @ g
    grad = gw + sigma.unsqueeze(1) * b.unsqueeze(0)
    lam = (w * grad).sum(dim=1, keepdim=True)
    quad = (w * gw).sum(dim=1, keepdim=True).clamp_min(0)
    scale = (g.diagonal().clamp_min(0).unsqueeze(0) * quad).sqrt() + sigma.unsqueeze(1) * b.abs() + lam.abs()
    tol = max(1e-10, 100.0 * eps)
    optimal = ((grad - lam >= -tol * scale) | faces).all(dim=1)
    feasible = (w >= -1e-12).all(dim=1)
    good = ok & optimal & feasible
    if not bool(good.any()):
        return None
    objective = (w @ b) + rho * quad.squeeze(1).sqrt()
    best = torch.where(good, objective, torch.inf).argmin()
    out: Tensor = w[best].clamp_min(0)
    return out / out.sum()


def _negligible(g: Tensor, w: Tensor, floor: float) -> bool:
    """Whether ``||g_w||`` is below ``floor`` or at the rounding level of its computation."""
    quad = _quad(g, w)
    return math.sqrt(quad) < floor or quad <= _NOISE * _quad(g.abs(), w.abs())


def _quad(g: Tensor, w: Tensor) -> float:
    return float((w @ g @ w).clamp_min(0))


def cagrad_weights(gramian: Tensor, c: float, norm_eps: float = 1e-4, *, eps: float | None = None) -> Tensor:
    """CAGrad weights (float64 ``[T]``, paper scale) for the Gramian ``G`` and ``c``.

    Solves the dual ``min_{w ∈ Δ} wᵀ b + ρ sqrt(wᵀ G w)`` (``b = G 1/T``: ``g_wᵀ g_0``;
    ``ρ = c ||g_0||``) exactly. Its optimality conditions are those of the simplex QP
    ``min_{w ∈ Δ} ½ wᵀ G w + σ bᵀ w`` at ``σ = ||g_w|| / ρ``. On a fixed free set the QP's solution
    is affine in ``σ``, ``w(σ) = w0 + σ w1`` with ``w0ᵀ G w1 = 0``, so the fixed point
    ``||g_w(σ)||² = a0 + a1 σ² = ρ² σ²`` is ``σ = sqrt(a0 / (ρ² - a1))`` in closed form. For
    ``T <= 8`` the closed-form point of every face is checked at once; otherwise a
    safeguarded Newton iteration on ``σ`` (each step one warm-started active-set solve, bracketed
    because ``||g_w(σ)|| / σ`` is non-increasing) ends when the closed-form point of the current
    free set satisfies the QP's optimality conditions, which is exact. The weights are
    ``1/T + (ρ / ||g_w||) w`` (update ``g_0 + ρ g_w / ||g_w||``), or 0 when ``||g_w|| < norm_eps``
    on the trace-normalised Gramian (torchjd's convention: approximately Pareto-stationary) or
    when it is at the rounding level of its computation (its direction would be noise).
    """
    g = gramian.detach().to(torch.float64)
    t = g.shape[0]
    e = _qp._input_eps(gramian, eps)
    trace = float(g.diagonal().sum())
    u0 = torch.full((t,), 1.0 / t, dtype=torch.float64, device=g.device)
    if not trace > 0:
        return u0
    g = g / trace
    b = g @ u0
    rho = c * math.sqrt(max(float(u0 @ b), 0.0))
    if not rho > 0:
        return u0  # c = 0 or g0 = 0: the update is g0
    if t == 1:
        return u0 + c  # g_w = g0: the update is (1 + c) g0
    # ||g_w|| (on the trace-normalised Gramian) below this is 0 (torchjd's convention)
    floor = norm_eps
    if t <= _ENUMERATE_MAX_TASKS:
        # the full face first (one solve: the answer when every task is in the support), then all
        found = _enumerate(g, b, rho, e, floor, torch.ones(1, t, dtype=torch.bool, device=g.device))
        if found is None:
            found = _enumerate(g, b, rho, e, floor, _faces(t, g.device))
        if found is not None:
            norm = math.sqrt(_quad(g, found))
            return torch.zeros_like(u0) if _negligible(g, found, floor) else u0 + (rho / norm) * found
    h = g.unsqueeze(0)
    bb = b.unsqueeze(0)
    rho2 = rho * rho
    sigma_min = max(floor, 1e-12) / rho  # below it ||g_w|| = ρσ is negligible
    # ||g_w(σ)|| <= max_t ||g_t|| (a point of the hull), so ||g_w(σ)|| / σ <= ρ beyond this σ
    lo, hi = 0.0, math.sqrt(float(g.diagonal().max())) / rho * (1.0 + 1e-12)
    sigma = 0.0
    state: _qp._State | None = None
    for _ in range(_MAX_STEPS):
        res, state = _qp._solve_simplex(h, sigma * bb, max_iter=None, rtol=_qp.RTOL, eps=e, state=state)
        w = res.x[0]
        if sigma > 0:
            if math.sqrt(_quad(g, w)) > rho * sigma:
                lo = sigma
            else:
                hi = sigma
        w0, w1 = (v[0] for v in _face(h, bb, state))
        a0, a1 = _quad(g, w0), _quad(g, w1)
        zero_a0 = a0 <= floor * floor or a0 <= _NOISE * _quad(g.abs(), w0.abs())
        if rho2 > a1 and not zero_a0:
            s_face = math.sqrt(a0 / (rho2 - a1))
            cand = w0 + s_face * w1
            if _certified(g, b, cand, s_face, state.free[0], e):
                cand = cand.clamp_min(0)
                cand = cand / cand.sum()
                norm = math.sqrt(_quad(g, cand))
                if _negligible(g, cand, floor):
                    return torch.zeros_like(u0)
                return u0 + (rho / norm) * cand
        elif zero_a0 and rho2 >= a1:
            # 0 is in the face's affine hull and ||g_w(σ)|| / σ = sqrt(a1) <= ρ on it: if the face is
            # optimal down to σ = 0 (its solution is affine in σ), there is no root: g_w = 0
            if sigma > 0 and _certified(g, b, w0, 0.0, state.free[0], e):
                return torch.zeros_like(u0)
            s_face = 0.0
        else:
            s_face = math.inf
        if hi <= sigma_min:
            return torch.zeros_like(u0)  # the optimum has ||g_w|| <= norm_eps
        if lo < s_face < hi and s_face > 0:
            sigma = max(s_face, sigma_min) if lo == 0 else s_face
        elif math.isinf(hi):
            sigma = max(4.0 * lo, 1.0)
        elif lo == 0:
            sigma = max(hi / 4.0, sigma_min)
        else:
            sigma = math.sqrt(lo * hi)
    # not certified within the step budget (degenerate cases): the last QP solution
    w = res.x[0].clamp_min(0)
    w = w / w.sum()
    norm = math.sqrt(_quad(g, w))
    if _negligible(g, w, floor):
        return torch.zeros_like(u0)
    return u0 + (rho / norm) * w


def _certified(g: Tensor, b: Tensor, w: Tensor, sigma: float, free: Tensor, eps: float) -> bool:
    """Whether ``w`` (supported on ``free``) is feasible and optimal for the QP at ``sigma``."""
    if bool((w < -1e-12).any()) or not bool(torch.isfinite(w).all()):
        return False
    gw = g @ w
    grad = gw + sigma * b
    lam = float(w @ grad)
    scale = (g.diagonal().clamp_min(0) * float(w @ gw)).sqrt() + sigma * b.abs() + abs(lam)
    tol = max(1e-10, 100.0 * eps)
    return bool(((grad - lam >= -tol * scale) | free).all())


@register
class CAGrad(Weighting):
    """CAGrad: the update near the average gradient that most improves the worst task.

    Conflict-Averse Gradient descent solves ``max_d min_t ⟨g_t, d⟩`` subject to
    ``||d - g_0|| <= c ||g_0||`` (``g_0`` the average gradient), whose solution is
    ``d = g_0 + (c ||g_0|| / ||g_w||) g_w`` with ``g_w = Σ_t w_t g_t`` and ``w`` the minimiser over
    the simplex of ``g_wᵀ g_0 + c ||g_0|| ||g_w||`` (Algorithm 1). ``c = 0`` is gradient descent on
    the mean loss; larger ``c`` moves towards MGDA-like conflict avoidance (``c >= 1`` converges to
    Pareto-stationary points). The weights are ``1/T + (c ||g_0|| / ||g_w||) w``, the paper's
    scale; the official code's ``rescale`` option divides them by ``1 + c²`` (``rescale=1``, its
    default) or ``1 + c`` (``rescale=2``).

    The dual is solved exactly on the Gramian, without cvxpy or scipy: on each face of the simplex
    its solution has a closed form; for ``T <= 8`` all faces are checked at once, otherwise a
    safeguarded Newton iteration on one scalar finds the face, each step a warm-started
    active-set QP (see :func:`cagrad_weights`; typically 1-5 steps). When ``||g_w|| < norm_eps`` on the trace-normalised Gramian (the
    gradients are approximately Pareto-stationary) the weights are 0, as in torchjd's
    ``CAGradWeighting`` (whose ``norm_eps`` this is; torchjd also returns 0 when ``trace(G)`` is
    below ``norm_eps`` in absolute terms, which this implementation does not, to stay invariant to
    the scale of the Gramian).

    Reference:
        Bo Liu, Xingchao Liu, Xiaojie Jin, Peter Stone, Qiang Liu, "Conflict-Averse Gradient
        Descent for Multi-task Learning", NeurIPS 2021. https://arxiv.org/abs/2110.14048

    Args:
        num_tasks: the number of tasks ``T``.
        c: the radius of the ball around ``g_0``, relative to ``||g_0||`` (>= 0; the paper uses
            0.4 on NYUv2 and 0.5 on CityScapes).
        norm_eps: below this norm of ``g_w`` (trace-normalised) the update is 0.
        rescale: 0 (the paper), 1 (divide by ``1 + c²``) or 2 (divide by ``1 + c``).
    """

    name: ClassVar[str] = "cagrad"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "gramian_scale_invariant", "loss_scale_invariant", "permutation_equivariant", "stateless"}
    )

    def __init__(self, num_tasks: int, *, c: float = 0.4, norm_eps: float = 1e-4, rescale: int = 0) -> None:
        super().__init__(num_tasks)
        self.c = check_float("CAGrad", "c", c, "0.4", allow_zero=True)
        self.norm_eps = check_float("CAGrad", "norm_eps", norm_eps, "1e-4", allow_zero=True)
        if isinstance(rescale, bool) or rescale not in CAGRAD_RESCALE:
            raise ValueError(
                f"CAGrad: rescale={rescale!r} must be 0 (none, the paper), 1 (divide by 1 + c²) or "
                "2 (divide by 1 + c), e.g. rescale=0"
            )
        self.rescale = rescale

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """CAGrad weights ``[T]`` from the Gramian; the losses are not used."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        w = cagrad_weights(gramian, self.c, self.norm_eps)
        if self.rescale == 1:
            w = w / (1.0 + self.c**2)
        elif self.rescale == 2:
            w = w / (1.0 + self.c)
        return as_weights(w, losses)
