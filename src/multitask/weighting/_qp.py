"""Small exact quadratic-program solvers for the Gramian-based weightings (batched, float64).

Every Gramian method reduces to a tiny convex QP in ``T`` variables (``T`` = number of tasks):

* MGDA: the min-norm point of the convex hull of the task gradients,
  ``min_{w ∈ Δ} wᵀ G w`` (:func:`min_norm_weights`);
* UPGrad / DualProj: the projection of ``Jᵀu`` onto the dual cone ``{x : J x >= 0}``, which in
  Gramian form is ``min_{v >= u} vᵀ G v`` (:func:`project_dual_cone`; Quinton & Rey 2024, Prop. 1);
* CAGrad's dual, through a sequence of simplex QPs with a linear term (:func:`solve_simplex_qp`).

They are solved by one primal active-set method (Lawson & Hanson's NNLS, in the Gramian form of
Bro & de Jong, extended with an optional equality ``Σ x = 1`` through a bordered KKT system):

    minimise ½ xᵀ H x + qᵀ x   subject to   x >= 0   [and Σ_t x_t = 1]

with ``H`` symmetric positive semi-definite and ``q`` in its range (least-squares form). Each
iteration solves the equality-constrained problem on the current free set; if that point is
feasible it becomes the iterate and the most violated optimality condition enters the free set,
otherwise the iterate moves towards it until a free variable reaches 0 and leaves the free set.
Iterates are always feasible and the objective never increases, so stopping early still returns
a feasible, improved point. A variable enters only when its reduced gradient is clearly negative
(relative to its natural scale and to rounding) and its Schur complement is clearly positive, so
a variable whose column is (numerically) a combination of the free ones never enters: rank-
deficient ``H`` (dependent, duplicate or zero gradients) is handled without regularisation, and
the method ends (to rounding) after about as many iterations as there are variables in the final
free set. Tolerances follow the precision of the input (float32 Gramians are noisy at ~1e-7).

The inverse of the free set's KKT matrix is kept up to date by rank-one updates (Schur
complements) as variables enter and leave, so an iteration is a handful of ``O(B T²)`` tensor
operations; each solve gets one step of iterative refinement, and the inverse is recomputed if
its residual shows drift. A warm start (an initial free set: every variable for the simplex, the
conflicting tasks for the dual cone, used only where that system is well-conditioned) usually
ends the iteration after 1-3 turns. ``T = 2`` has closed forms (MGDA, dual cone), and MGDA first
tries the full-support solution with one bordered solve.

Problems are batched: ``H`` is ``[B, T, T]``, ``q`` ``[B, T]``; every problem of the batch advances
by one iteration per loop turn, finished problems are frozen. Everything runs in float64 on the
device of the inputs (the matrices are ``T×T``, T <= a few dozen).

References:
    C. L. Lawson, R. J. Hanson, "Solving Least Squares Problems", Prentice-Hall 1974, ch. 23.
    R. Bro, S. de Jong, "A fast non-negativity-constrained least squares algorithm", Journal of
    Chemometrics 1997, https://doi.org/10.1002/(SICI)1099-128X(199709/10)11:5<393::AID-CEM483>3.0.CO;2-L
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "QPResult",
    "min_norm_weights",
    "project_dual_cone",
    "solve_nonneg_qp",
    "solve_simplex_qp",
]

#: Relative tolerance of the optimality test (reduced gradient < -RTOL * its natural scale).
RTOL = 1e-12
#: Relative ridge added when an inverse is computed from scratch (a safety net for exactly singular systems).
RIDGE = 1e-14
_TINY = torch.finfo(torch.float64).tiny
#: A warm start is used only if its KKT system is better conditioned than this.
_MAX_COND = 1e10
#: More variables than this leaving at once: the inverse is recomputed instead of downdated.
_MAX_DOWNDATES = 6


class QPResult(NamedTuple):
    """Solution of a batch of QPs.

    Attributes:
        x: ``[B, T]`` the minimisers (feasible).
        multiplier: ``[B]`` the multiplier of ``Σ x = 1`` (simplex problems; 0 otherwise), i.e.
            the optimal value of ``(H x + q)_t`` on the support.
        free: ``[B, T]`` bool, the final free set (support).
        converged: ``[B]`` bool, whether the optimality test passed for each problem (False
            also when the only improving variable is numerically dependent on the free ones).
        iterations: the number of loop turns (one variable entering or leaving per problem each).
    """

    x: Tensor
    multiplier: Tensor
    free: Tensor
    converged: Tensor
    iterations: int


def _bmv(m: Tensor, v: Tensor) -> Tensor:
    """Batched matrix-vector product ``[B, n, n] x [B, n] -> [B, n]`` (faster than bmm for tiny n)."""
    return (m * v.unsqueeze(-2)).sum(dim=-1)


class _State(NamedTuple):
    x: Tensor  # [B, T] feasible iterate
    free: Tensor  # [B, T] bool
    inv: Tensor  # [B, n, n] inverse of the masked KKT matrix of the free set


def _kkt_matrix(h: Tensor, simplex: bool) -> Tensor:
    """``H`` (non-negativity only) or the symmetric bordered matrix ``[[H, 1], [1ᵀ, 0]]``."""
    if not simplex:
        return h
    b, t = h.shape[0], h.shape[1]
    k = torch.zeros(b, t + 1, t + 1, dtype=h.dtype, device=h.device)
    k[:, :t, :t] = h
    k[:, :t, t] = 1.0
    k[:, t, :t] = 1.0
    return k


def _masked(k: Tensor, fe: Tensor) -> Tensor:
    """The KKT matrix restricted to the free set ``fe``, with the identity on the fixed variables."""
    fef = fe.to(k.dtype)
    return k * (fef.unsqueeze(2) * fef.unsqueeze(1)) + torch.diag_embed(1.0 - fef)


def _extend(free: Tensor, simplex: bool) -> Tensor:
    if not simplex:
        return free
    return torch.cat([free, torch.ones_like(free[:, :1])], dim=1)


def _active_set(
    h: Tensor, q: Tensor, state: _State, *, simplex: bool, max_iter: int, rtol: float, eps: float
) -> tuple[QPResult, _State]:
    """Lawson-Hanson iterations from a feasible ``state`` whose ``inv`` matches its free set.

    The inverse of the KKT matrix of the free set is kept up to date with rank-one updates when a
    variable enters or leaves (Schur complements), so an iteration costs a few ``O(B n²)``
    operations; one step of iterative refinement per solve removes the drift of the updates.
    """
    b, t = q.shape
    dtype, dev = h.dtype, h.device
    shared = b == 1 or h.stride(0) == 0  # one matrix for the whole batch (UPGrad's T problems)
    k = _kkt_matrix(h[:1] if shared else h, simplex)
    n = k.shape[-1]
    k0 = k[0]
    kdiag = k.diagonal(dim1=-2, dim2=-1).expand(b, n)
    hdiag = kdiag[:, :t].clamp_min(0)

    def kmv(v: Tensor) -> Tensor:  # K v for every problem
        return v @ k0 if shared else _bmv(k, v)

    habs = h[:1].abs() if shared else h.abs()

    def kcol(j: Tensor) -> Tensor:  # column j of K (K is symmetric) for every problem, [B, n]
        return k0[j.squeeze(1)] if shared else k.gather(2, j.view(b, 1, 1).expand(b, n, 1)).squeeze(2)

    rhs_full = torch.cat([-q, torch.ones(b, 1, dtype=dtype, device=dev)], dim=1) if simplex else -q
    rhs_size = float(rhs_full.abs().max())
    kmax = float(k.abs().max())
    x, free, inv = state
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    converged = torch.zeros(b, dtype=torch.bool, device=dev)
    lam = torch.zeros(b, dtype=dtype, device=dev)
    blocked = torch.zeros(b, t, dtype=torch.bool, device=dev)
    dep_tol = max(1e-11, 100.0 * eps)
    rtol = max(rtol, 10.0 * eps)
    qabs = q.abs()
    inf = torch.full_like(q, torch.inf)
    zero = torch.zeros_like(q)
    one_n = torch.ones(b, 1, dtype=dtype, device=dev)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        fef = free.to(dtype)
        if simplex:
            fef = torch.cat([fef, one_n], dim=1)
        rhs = rhs_full * fef
        sol = _bmv(inv, rhs)  # zero on the fixed variables, like rhs
        resid = rhs - fef * kmv(sol)
        if float(resid.abs().max()) > 1e-6 * (rhs_size + kmax * float(sol.abs().max())):
            # the updated inverse has drifted (ill-conditioned updates): recompute it
            inv = _inverse(k.expand(b, n, n), _extend(free, simplex), not simplex)
            sol = _bmv(inv, rhs)
            resid = rhs - fef * kmv(sol)
        sol = sol + _bmv(inv, resid)  # one step of iterative refinement
        s = sol[:, :t] * fef[:, :t]
        bad = free & (s <= 0)
        has_bad = bad.any(dim=1)
        finite = torch.isfinite(s).all(dim=1)
        active = ~done & finite
        feasible = active & ~has_bad
        infeasible = active & has_bad

        # feasible: take the free-set optimum, test the optimality of the fixed variables
        x = torch.where(feasible.unsqueeze(1), s, x)
        hx = kmv(torch.cat([x, zero[:, :1]], dim=1))[:, :t] if simplex else kmv(x)
        grad = hx + q
        # the natural size of each gradient entry, and a floor for its rounding error (|H| |x|)
        roundoff = x.abs() @ habs[0] if shared else _bmv(habs, x.abs())
        scale = (hdiag * (x * hx).sum(dim=1, keepdim=True).clamp_min(0)).sqrt() + qabs + roundoff
        if simplex:
            lam_now = (x * grad).sum(dim=1, keepdim=True) / x.sum(dim=1, keepdim=True).clamp_min(_TINY)
            lam = torch.where(feasible, lam_now.squeeze(1), lam)
            grad = grad - lam_now
            scale = scale + lam_now.abs()
        viol = (grad < -rtol * scale - _TINY) & ~free & feasible.unsqueeze(1)
        optimal = feasible & ~viol.any(dim=1)
        viol = viol & ~blocked
        enter_now = viol.any(dim=1)
        converged = converged | optimal
        done = done | (feasible & ~enter_now) | ~finite
        if bool(enter_now.any()):
            # the most violated optimality condition enters (Lawson-Hanson's rule)
            j = torch.where(viol, grad / (scale + _TINY), inf).argmin(dim=1, keepdim=True)
            e = torch.zeros(b, n, dtype=dtype, device=dev).scatter_(1, j, 1.0)
            col = kcol(j) * fef  # K[:, j] on the free set
            y = _bmv(inv, col)
            kjj = kdiag.gather(1, j).squeeze(1)
            sigma = kjj - (col * y).sum(dim=1)
            # Schur complement of the entering variable: refuse it if (numerically) dependent
            ok = enter_now & (sigma > dep_tol * kjj.abs().clamp_min(_TINY))
            okf = ok.to(dtype).unsqueeze(1)
            u = y - e
            # inv += (u uᵀ / σ - e eᵀ) where ok, as one batched rank-2 product
            left = torch.stack([u * (okf / torch.where(ok, sigma, 1.0).unsqueeze(1)), -e * okf], dim=2)
            inv = torch.baddbmm(inv, left, torch.stack([u, e], dim=1))
            ej = e[:, :t].to(torch.bool)
            free = free | (ej & ok.unsqueeze(1))
            blocked = blocked | (ej & (enter_now & ~ok).unsqueeze(1))

        # infeasible: move towards the free-set optimum until a variable reaches 0; drop it
        if bool(infeasible.any()):
            ratio = torch.where(bad, x / (x - s).clamp_min(_TINY), inf)
            alpha = ratio.amin(dim=1, keepdim=True).clamp(0.0, 1.0)
            stepped = x + alpha * (s - x)
            drop = bad & ((ratio <= alpha) | (stepped <= 0)) & infeasible.unsqueeze(1)
            x = torch.where(infeasible.unsqueeze(1), torch.where(drop, zero, stepped), x)
            free = free & ~drop
            blocked = blocked & ~infeasible.unsqueeze(1)
            if int(drop.sum(dim=1).max()) > _MAX_DOWNDATES:
                inv = _inverse(k.expand(b, n, n), _extend(free, simplex), not simplex)
            else:
                while bool(drop.any()):
                    has = drop.any(dim=1, keepdim=True)
                    jd = drop.to(torch.int8).argmax(dim=1, keepdim=True)
                    e = torch.zeros(b, n, dtype=dtype, device=dev).scatter_(1, jd, 1.0)
                    cj = inv.gather(2, jd.view(b, 1, 1).expand(b, n, 1)).squeeze(2)  # inv is symmetric
                    cjj = torch.where(has, cj.gather(1, jd), 1.0)
                    hasf = has.to(dtype)
                    # inv += e eᵀ - c cᵀ / c_j where has
                    left = torch.stack([e * hasf, -cj * (hasf / cjj)], dim=2)
                    inv = torch.baddbmm(inv, left, torch.stack([e, cj], dim=1))
                    drop = drop & ~e[:, :t].to(torch.bool)

        if bool(done.all()):
            break
    return QPResult(x, lam, free, converged, it), _State(x, free, inv)


def _inverse(k: Tensor, fe: Tensor, spd: bool, m: Tensor | None = None) -> Tensor:
    """Inverse of the KKT matrix restricted to the free set ``fe`` (identity elsewhere).

    ``spd``: the matrix is symmetric positive definite (no equality constraint), so a Cholesky
    factorisation is used (faster); a problem where it fails gets a non-finite inverse. ``m``:
    the masked matrix, if already computed.
    """
    if m is None:
        m = _masked(k, fe)
    diag = k.diagonal(dim1=-2, dim2=-1).abs()
    m = m + torch.diag_embed(RIDGE * diag * fe.to(k.dtype))
    if spd:
        chol, info = torch.linalg.cholesky_ex(m)
        eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device).expand_as(m)
        low = torch.linalg.solve_triangular(chol, eye, upper=False)
        out: Tensor = low.transpose(1, 2) @ low
        return torch.where((info == 0).view(-1, 1, 1), out, torch.nan)
    inv: Tensor = torch.linalg.inv_ex(m)[0]
    return inv


def _default_max_iter(t: int) -> int:
    return 3 * t + 20


def _input_eps(x: Tensor, eps: float | None) -> float:
    """Relative precision of the input data (float32 Gramians are only accurate to ~1e-7)."""
    if eps is not None:
        return eps
    return float(torch.finfo(x.dtype).eps) if x.is_floating_point() else float(torch.finfo(torch.float64).eps)


def solve_nonneg_qp(
    h: Tensor, q: Tensor, *, max_iter: int | None = None, rtol: float = RTOL, eps: float | None = None
) -> QPResult:
    """``argmin_{x >= 0} ½ xᵀ H x + qᵀ x`` for a batch of PSD ``H`` ``[B, T, T]`` and ``q`` ``[B, T]``.

    ``q`` must lie in the range of ``H`` (the least-squares form ``H = AᵀA``, ``q = Aᵀc``, as in
    every use here), so that the problem restricted to any set of free variables is bounded.
    Starts from ``x = 0`` with the variables whose gradient is negative there free (where that
    system is well-conditioned). Inputs are cast to float64; ``eps`` is the relative precision of
    the data (default: that of the input dtype), which sets the tolerances.
    """
    e = _input_eps(h, eps)
    h64, q64 = h.to(torch.float64), q.to(torch.float64)
    b, t = q64.shape
    free = q64 < 0
    inv, good = _warm(h64, q64, free, False, e)
    if not bool(good.all()):
        eye = torch.eye(t, dtype=torch.float64, device=h.device)
        inv = torch.where(good.view(b, 1, 1), inv, eye)
        free = free & good.unsqueeze(1)
    state = _State(torch.zeros_like(q64), free, inv)
    result, _ = _active_set(h64, q64, state, simplex=False, max_iter=max_iter or _default_max_iter(t), rtol=rtol, eps=e)
    return result


def solve_simplex_qp(
    h: Tensor,
    q: Tensor | None = None,
    *,
    max_iter: int | None = None,
    rtol: float = RTOL,
    eps: float | None = None,
) -> QPResult:
    """``argmin_{x ∈ Δ} ½ xᵀ H x + qᵀ x`` (``Δ``: the probability simplex) for a batch ``[B, T, T]``.

    First tries the solution with every variable free (one linear solve: the answer whenever the
    optimum has full support and that system is well-conditioned); otherwise runs the active-set
    method from the best vertex. Inputs are cast to float64; ``eps`` as in
    :func:`solve_nonneg_qp`. ``q`` must lie in the range of ``H`` up to a multiple of the
    all-ones vector (which only shifts the objective on ``Δ``).
    """
    result, _ = _solve_simplex(h, q, max_iter=max_iter, rtol=rtol, eps=_input_eps(h, eps))
    return result


def _solve_simplex(
    h: Tensor, q: Tensor | None, *, max_iter: int | None, rtol: float, eps: float, state: _State | None = None
) -> tuple[QPResult, _State]:
    h64 = h.to(torch.float64)
    b, t = h64.shape[0], h64.shape[1]
    q64 = torch.zeros(b, t, dtype=torch.float64, device=h.device) if q is None else q.to(torch.float64)
    if state is None:
        # start from the best vertex, with every variable free where that system is well-conditioned
        vertex = torch.nn.functional.one_hot((0.5 * h64.diagonal(dim1=-2, dim2=-1) + q64).argmin(dim=1), t)
        free = torch.ones(b, t, dtype=torch.bool, device=h.device)
        inv, good = _warm(h64, q64, free, True, eps)
        if not bool(good.all()):
            free = torch.where(good.unsqueeze(1), free, vertex.to(torch.bool))
            inv = torch.where(good.view(b, 1, 1), inv, _inverse(_kkt_matrix(h64, True), _extend(free, True), False))
        state = _State(vertex.to(torch.float64), free, inv)
    return _active_set(h64, q64, state, simplex=True, max_iter=max_iter or _default_max_iter(t), rtol=rtol, eps=eps)


def _warm(h: Tensor, q: Tensor, free: Tensor, simplex: bool, eps: float) -> tuple[Tensor, Tensor]:
    """The inverse of the KKT matrix of ``free``, and whether it is accurate enough to start from.

    A near-singular system (dependent gradients) is refused: its inverse would make the rank-one
    updates lose all accuracy.
    """
    k = _kkt_matrix(h, simplex)
    fe = _extend(free, simplex)
    m = _masked(k, fe)
    inv = _inverse(k, fe, not simplex, m)
    rhs = torch.cat([-q, torch.ones_like(q[:, :1])], dim=1) if simplex else -q
    rhs = rhs * fe.to(h.dtype)
    sol = _bmv(inv, rhs)
    resid = (_bmv(m, sol) - rhs).abs().amax(dim=1)
    mmax = m.abs().amax(dim=(1, 2))
    size = mmax * sol.abs().amax(dim=1) + rhs.abs().amax(dim=1)
    cond = inv.abs().amax(dim=(1, 2)) * mmax  # a cheap condition-number estimate
    max_cond = min(_MAX_COND, 1e-2 / max(eps, 1e-300))  # rank-one updates amplify rounding by cond
    good = torch.isfinite(sol).all(dim=1) & (resid <= 1e-10 * size) & (cond <= max_cond)
    return torch.nan_to_num(inv), good


def _full_support_min_norm(g: Tensor) -> Tensor | None:
    """The min-norm weights if they are all positive (one bordered solve), else None.

    A positive, accurate solution of ``[[G, 1], [1ᵀ, 0]] [w; μ] = [0; 1]`` satisfies every
    optimality condition (nothing is fixed at 0), so it is the answer; the common case of
    gradients in general position with dimension >= T.
    """
    b, t = g.shape[0], g.shape[1]
    k = _kkt_matrix(g, True)
    rhs = torch.zeros(b, t + 1, dtype=g.dtype, device=g.device)
    rhs[:, t] = 1.0
    sol, info = torch.linalg.solve_ex(k, rhs)
    sol = sol + torch.linalg.solve_ex(k, rhs - _bmv(k, sol))[0]  # one step of iterative refinement
    resid = (rhs - _bmv(k, sol)).abs().amax(dim=1)
    w = sol[:, :t]
    ok = (
        (info == 0) & torch.isfinite(sol).all(dim=1) & (w > 0).all(dim=1) & (resid <= 1e-12 * (1 + w.abs().amax(dim=1)))
    )
    return w if bool(ok.all()) else None


def min_norm_weights(gramian: Tensor, *, eps: float | None = None) -> Tensor:
    """Weights ``w ∈ Δ`` of the min-norm point of the convex hull of the gradients: ``argmin wᵀ G w``.

    ``gramian`` is ``[T, T]`` or a batch ``[B, T, T]``; returns float64 weights of the same
    leading shape. ``G`` is divided by its largest diagonal entry first (the solution does not
    change). Zero gradients (``G_tt = 0``) share the weight equally (the min-norm point is 0);
    an all-zero Gramian gives uniform weights.
    """
    single = gramian.dim() == 2
    g = gramian.to(torch.float64)
    if single:
        g = g.unsqueeze(0)
    t = g.shape[-1]
    diag = g.diagonal(dim1=-2, dim2=-1)
    top = diag.max(dim=1, keepdim=True).values
    positive = top.squeeze(1) > 0
    g = g / torch.where(top > 0, top, torch.ones_like(top)).unsqueeze(2)
    zero = diag <= 0
    has_zero = zero.any(dim=1)
    if t == 2:
        # closed form: w_1 = clip(⟨g_2 - g_1, g_2⟩ / ||g_1 - g_2||², 0, 1) (Sener & Koltun, Algorithm 1)
        num = g[:, 1, 1] - g[:, 0, 1]
        den = g[:, 0, 0] + g[:, 1, 1] - 2.0 * g[:, 0, 1]
        w1 = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.5).clamp(0.0, 1.0)
        w = torch.stack([w1, 1.0 - w1], dim=1)
    elif t == 1:
        w = torch.ones_like(diag)
    else:
        full = _full_support_min_norm(g)
        w = full if full is not None else solve_simplex_qp(g, eps=_input_eps(gramian, eps)).x.clamp_min(0)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(_TINY)
    zero_w = zero.to(torch.float64) / zero.sum(dim=1, keepdim=True).clamp_min(1)
    uniform = torch.full_like(w, 1.0 / t)
    w = torch.where(has_zero.unsqueeze(1), zero_w, w)
    w = torch.where(positive.unsqueeze(1), w, uniform)
    return w.squeeze(0) if single else w


def project_dual_cone(gramian: Tensor, u: Tensor, *, eps: float | None = None) -> Tensor:
    """Weights ``v = argmin_{v >= u} vᵀ G v`` for each row of ``u``, so ``Jᵀv = π(Jᵀu)``.

    ``π`` is the Euclidean projection onto the dual cone ``{x : J x >= 0}`` of the task gradients
    (the rows of ``J``; ``G = J Jᵀ``), by Proposition 1 of Quinton & Rey 2024. ``gramian`` is
    ``[T, T]``, ``u`` is ``[T]`` or ``[B, T]``; returns float64 weights shaped like ``u``. ``eps``
    is the relative precision of the Gramian (default: that of its dtype).

    The problem is solved in the basis of unit-norm gradients (the dual cone does not change when
    a gradient is rescaled): with ``n_t = sqrt(G_tt)`` and ``C = G / (n nᵀ)``,
    ``z = n ⊙ v`` solves ``min_{z >= n ⊙ u} zᵀ C z``, which is scale-free, so tasks whose gradient
    norms differ by many orders of magnitude are all handled to relative precision. A task with a
    zero gradient imposes no constraint; its weight is its lower bound ``u_t``.
    """
    single = u.dim() == 1
    g = gramian.to(torch.float64)
    uu = u.to(torch.float64)
    if single:
        uu = uu.unsqueeze(0)
    b, t = uu.shape
    n = g.diagonal().clamp_min(0).sqrt()
    nz = n > 0
    all_nz = bool(nz.all())
    if all_nz:
        safe_n = n
        c = g / (n.unsqueeze(1) * n.unsqueeze(0))
        lower = n * uu  # bounds in the unit-gradient basis
    else:
        safe_n = torch.where(nz, n, torch.ones_like(n))
        pair = nz.unsqueeze(1) & nz.unsqueeze(0)
        c = torch.where(pair, g / (safe_n.unsqueeze(1) * safe_n.unsqueeze(0)), torch.zeros_like(g))
        c = c + torch.diag((~nz).to(g.dtype))
        lower = torch.where(nz, n, torch.zeros_like(n)) * uu
    c = 0.5 * (c + c.T)
    span = lower.abs().amax(dim=1, keepdim=True)
    span = torch.where(span > 0, span, 1.0)
    lower_s = lower / span
    if t == 2:
        z = _two_task_projection(c, lower_s) * span
    else:
        h = c.unsqueeze(0).expand(b, t, t)
        q = _bmv(h, lower_s)  # x = z - lower >= 0: ½ (x + l)ᵀ C (x + l)
        x = solve_nonneg_qp(h, q, eps=_input_eps(gramian, eps)).x
        z = (x + lower_s) * span
    v = z / safe_n if all_nz else torch.where(nz.unsqueeze(0), z / safe_n.unsqueeze(0), uu)
    return v.squeeze(0) if single else v


def _two_task_projection(c: Tensor, lower: Tensor) -> Tensor:
    """``argmin_{z >= l} zᵀ C z`` for ``T = 2`` (``C`` with unit diagonal), by its four faces.

    The face minimisers are ``z = l`` (both bounds active), ``(-ρ l_2, l_2)``, ``(l_1, -ρ l_1)``
    (one free coordinate, ``ρ = C_12``) and ``0`` (none active); the optimum is the feasible one
    with the smallest objective.
    """
    rho = c[0, 1]
    l1, l2 = lower[:, 0], lower[:, 1]
    cands = torch.stack(
        [
            lower,
            torch.stack([-rho * l2, l2], dim=1),
            torch.stack([l1, -rho * l1], dim=1),
            torch.zeros_like(lower),
        ],
        dim=1,
    )  # [B, 4, 2]
    slack = 1e-15 * lower.abs().amax(dim=1, keepdim=True).unsqueeze(2)
    feasible = (cands >= lower.unsqueeze(1) - slack).all(dim=2)
    obj = ((cands @ c) * cands).sum(dim=2)
    best = torch.where(feasible, obj, torch.inf).argmin(dim=1)
    return cands[torch.arange(lower.shape[0], device=lower.device), best]


def project_onto_simplex(v: Tensor) -> Tensor:
    """The Euclidean projection of ``v`` ``[T]`` onto the probability simplex ``{x >= 0, Σ x = 1}``.

    Computed in float64 by :func:`simplex_projection` (``T`` is small); returned in the dtype and
    on the device of ``v``.
    """
    values = simplex_projection(v.detach().to(torch.float64).tolist())
    return torch.tensor(values, dtype=v.dtype, device=v.device)


def simplex_projection(v: list[float]) -> list[float]:
    """The Euclidean projection of ``v`` onto the probability simplex, on Python floats.

    The sort-based algorithm of Held, Wolfe & Crowder (1974) (see also Duchi et al., ICML 2008):
    with ``u`` sorted in decreasing order, ``θ = (Σ_{i<=k} u_i - 1) / k`` for the largest ``k``
    with ``u_k > θ`` (the condition holds exactly for a prefix), and ``x = max(v - θ, 0)``. The
    projection commutes with adding a constant to every entry, so ``v`` is first shifted to have
    its maximum at 0: entries as large as ``1e30`` (a huge step on the task weights) still give an
    exact point of the simplex. Plain Python, because for the ``T <= 32`` entries of a weight
    vector it is several times faster than a dozen tensor operations.
    """
    top = max(v)
    shifted = [x - top for x in v]
    total = 0.0
    theta = -1.0
    for k, u in enumerate(sorted(shifted, reverse=True), 1):
        total += u
        candidate = (total - 1.0) / k
        if u <= candidate:
            break
        theta = candidate
    out = [max(x - theta, 0.0) for x in shifted]
    norm = sum(out)  # 1 up to rounding, and > 0: the largest entry maps to -theta > 0
    return [x / norm for x in out]
