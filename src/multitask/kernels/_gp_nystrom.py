"""Low-rank ICM Gaussian process: Nyström features on the inputs, any missing pattern.

Hyperparameters maximize Titsias's (2009) collapsed variational bound
``log N(y | 0, K̃ + Σ) - ½ Σ_(i,t) B_tt (k(x_i, x_i) - k̃(x_i, x_i)) / σ²_t``, whose trace term stops the
lengthscales from collapsing onto the inducing inputs (a known failure of the plain
subset-of-regressors likelihood); the posterior is the usual DTC/SoR one.

The input kernel is replaced by its Nyström approximation ``k̃(x, x') = φ(x)ᵀ φ(x')`` with
``φ(x) = L^{-1} k(Z, x)`` on ``m`` inducing inputs ``Z`` (``L Lᵀ = K_ZZ``; the subset-of-regressors
/ DTC model of Quiñonero-Candela & Rasmussen 2005). With ``B = W Wᵀ + diag(κ)`` the ICM is then the
linear model ``f_t(x) = φ(x)ᵀ (Θ w_t + √κ_t θ_t)`` with ``Θ`` (``m x r``) and ``θ_t`` (``m``) standard
normal: a shared part of dimension ``m r`` and one private ``m``-vector per task. Its posterior
precision has a block-diagonal private part, eliminated per task in the eigenbasis of
``G_t = Φ_tᵀ Φ_t`` (``Φ_t`` the rows where task ``t`` is observed), leaving an ``(m r) x (m r)``
Schur complement. Tasks observed on the same rows share one eigendecomposition (one for complete
data).

Cost per likelihood and gradient evaluation: O(n m² + n m T) for the features and their gradient
(with ``n`` the rows and the sum over distinct missing patterns), O(Σ_g m² k_g + (m r)³) for the
rest (``k_g <= min(m, n_g)`` the rank of each pattern's features). Memory O(n m + m² r²).
Lengthscale gradients go through ``Φ`` by ``dL = tr(Ω dK̃)`` with ``Ω Φ = ½ ∂L/∂Φ``, so no ``n x n``
or ``(nT)``-sized array appears.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from ._gp_params import Hyper
from ._kernels import KernelName, kernel_matrix, kernel_with_grad_factor, lengthscale_contraction
from ._kron import eigh_psd

__all__ = [
    "NysCache",
    "NysData",
    "NysInner",
    "NysPosterior",
    "nys_inner",
    "nys_outer_grad",
    "nys_posterior",
    "nys_prepare",
]

Array = NDArray[np.float64]
IntArray = NDArray[np.intp]
_LOG2PI = float(np.log(2 * np.pi))
JITTER = 1e-6  # added to the diagonal of K_ZZ (unit-variance kernels)


@dataclass
class NysData:
    """Training data for the low-rank path: rows with at least one output, tasks grouped by missing pattern."""

    kernel: KernelName
    X: Array
    Z: Array
    Y0: Array
    mask: NDArray[np.bool_]
    group_rows: list[IntArray | None]  # None: every row
    group_tasks: list[IntArray]
    n_t: Array
    yy: Array
    jitter: float


def make_nys_data(
    kernel: KernelName, X: Array, Y: Array, mask: NDArray[np.bool_], Z: Array, jitter: float = JITTER
) -> NysData:
    keep = mask.any(axis=1)
    X, Y, mask = X[keep], Y[keep], mask[keep]
    Y0 = np.where(mask, Y, 0.0)
    _, inv = np.unique(np.packbits(mask, axis=0).T, axis=0, return_inverse=True)
    inv = np.asarray(inv).ravel()
    group_rows: list[IntArray | None] = []
    group_tasks: list[IntArray] = []
    for g in range(int(inv.max()) + 1):
        tasks = np.flatnonzero(inv == g).astype(np.intp)
        rows = np.flatnonzero(mask[:, tasks[0]]).astype(np.intp)
        group_rows.append(None if rows.size == X.shape[0] else rows)
        group_tasks.append(tasks)
    return NysData(
        kernel=kernel,
        X=np.ascontiguousarray(X),
        Z=np.ascontiguousarray(Z),
        Y0=Y0,
        mask=mask,
        group_rows=group_rows,
        group_tasks=group_tasks,
        n_t=mask.sum(axis=0).astype(np.float64),
        yy=np.sum(Y0 * Y0, axis=0),
        jitter=jitter,
    )


@dataclass
class NysCache:
    """Everything that depends on the lengthscales: features and the eigenbasis of each pattern.

    With one pattern covering every row (complete data) the features ``Φ = K_nm L^{-T}`` are never
    formed: ``G = L^{-1} K_mn K_nm L^{-T}`` and ``Φᵀ Y`` come from ``K_nm`` directly (``Phi`` is then
    ``K_nm`` and ``direct`` is True), which saves two O(n m²) products per evaluation.
    """

    ls: Array
    L: Array
    Phi: Array
    Gnm: Array
    Gmm: Array
    Xs: Array
    Zs: Array
    Qg: list[Array]
    gam: list[Array]
    c: list[Array]  # Q_gᵀ Φ_gᵀ y_t for the tasks of g, shape (k_g, |g|)
    resid: Array  # Σ_{i observed in t} (k(x_i, x_i) - φ_iᵀφ_i) per task: the trace term of the bound
    direct: bool = False
    Gphi: Array | None = None  # direct: Φᵀ Φ (m, m)
    PhiY: Array | None = None  # direct: Φᵀ Y (m, T)


def nys_prepare(data: NysData, log_ls: Array, *, need_grad: bool = True) -> NysCache:
    ls = np.exp(log_ls)
    m = data.Z.shape[0]
    Kmm, Gmm = kernel_with_grad_factor(data.kernel, data.Z, data.Z, ls, need_factor=need_grad)
    Kmm = Kmm + data.jitter * np.eye(m)  # a new array: the RBF factor Gmm (the old Kmm) stays unjittered
    L = scipy.linalg.cholesky(Kmm, lower=True)
    Knm, Gnm = kernel_with_grad_factor(data.kernel, data.X, data.Z, ls, need_factor=need_grad)
    grads = (
        Gnm if Gnm is not None else np.empty((0, 0)),
        Gmm if Gmm is not None else np.empty((0, 0)),
        data.X / ls,
        data.Z / ls,
    )
    T = data.Y0.shape[1]
    if len(data.group_rows) == 1 and data.group_rows[0] is None:
        A = scipy.linalg.solve_triangular(L, Knm.T @ Knm, lower=True)
        Gphi = scipy.linalg.solve_triangular(L, A.T, lower=True)
        Gphi = 0.5 * (Gphi + Gphi.T)
        PhiY = scipy.linalg.solve_triangular(L, Knm.T @ data.Y0, lower=True)
        g, Q = eigh_psd(Gphi)
        keep = g > 1e-12 * max(float(g.max()), 1e-300)
        Q, g = np.ascontiguousarray(Q[:, keep]), g[keep]
        resid = np.full(T, data.X.shape[0] - float(np.trace(Gphi)))
        return NysCache(ls, L, Knm, *grads, [Q], [g], [Q.T @ PhiY], resid, True, Gphi, PhiY)
    Phi = scipy.linalg.solve_triangular(L, Knm.T, lower=True).T
    Qg, gam, cs = [], [], []
    rdiag = 1.0 - np.einsum("ij,ij->i", Phi, Phi)
    resid = np.zeros(T)
    for rows, tasks in zip(data.group_rows, data.group_tasks, strict=True):
        resid[tasks] = float(rdiag.sum() if rows is None else rdiag[rows].sum())
        P = Phi if rows is None else Phi[rows]
        Yg = data.Y0[:, tasks] if rows is None else data.Y0[np.ix_(rows, tasks)]
        if P.shape[0] >= m:
            g, Q = eigh_psd(P.T @ P)
        else:
            _, sv, Vt = np.linalg.svd(P, full_matrices=False)
            g, Q = sv**2, Vt.T
        keep = g > 1e-12 * max(float(g.max()), 1e-300)
        Q, g = np.ascontiguousarray(Q[:, keep]), g[keep]
        Qg.append(Q)
        gam.append(g)
        cs.append(Q.T @ (P.T @ Yg))
    return NysCache(ls, L, Phi, *grads, Qg, gam, cs, resid)


@dataclass
class NysInner:
    lml: float
    dlml: Hyper  # gradient of the LML in the inner parameters
    Theta: Array  # posterior mean of the shared weights, (m, r)
    M: Array  # posterior mean of each task's weight vector v_t, (m, T)
    Sinv: Array | None  # inverse Schur complement, (m r, m r); None for one pattern (see Ainv)
    Ainv: Array | None  # one pattern: S⁻¹ = I - QQᵀ + Σ_j q_j q_jᵀ ⊗ Ainv[j] (blocks of the eigenbasis Q)
    beta: list[Array]  # κ_t γ / (σ²_t + κ_t γ) per pattern, (k_g, |g|)

    def sinv(self, Q: Array) -> Array:
        """The explicit ``(m r) x (m r)`` inverse Schur complement."""
        if self.Sinv is not None:
            return self.Sinv
        assert self.Ainv is not None
        m, r = Q.shape[0], self.Ainv.shape[1]
        out = np.zeros((m * r, m * r))
        comp = np.eye(m) - Q @ Q.T
        for k in range(r):
            for kk in range(r):
                blk = (Q * self.Ainv[:, k, kk]) @ Q.T + (comp if k == kk else 0.0)
                out[k * m : (k + 1) * m, kk * m : (kk + 1) * m] = blk
        return out


def _sblock(Sinv: Array, m: int, k: int, kk: int) -> Array:
    return Sinv[k * m : (k + 1) * m, kk * m : (kk + 1) * m]


def nys_inner(data: NysData, cache: NysCache, h: Hyper) -> NysInner:
    """LML of the Nyström ICM and its gradient in ``W``, ``log_kappa``, ``log_noise``."""
    W = h.W[0]
    T, r = W.shape
    m = data.Z.shape[0]
    kappa = np.exp(h.log_kappa[0])
    s2 = np.exp(h.log_noise)
    G = len(cache.Qg)
    nus, rhos, utils = [], [], []
    U_all = np.zeros((m, T))
    quad = float(np.sum(data.yy / s2))
    logdet = float(np.sum(data.n_t * np.log(s2)))
    for g in range(G):
        tg = data.group_tasks[g]
        gam = cache.gam[g]
        den = s2[tg][None, :] + kappa[tg][None, :] * gam[:, None]
        nu = 1.0 / den
        rho = gam[:, None] * nu
        ut = cache.c[g] * nu
        nus.append(nu)
        rhos.append(rho)
        utils.append(ut)
        U_all[:, tg] = cache.Qg[g] @ ut
        quad -= float(np.sum((kappa[tg] / s2[tg]) * np.sum(cache.c[g] ** 2 * nu, axis=0)))
        logdet += float(np.sum(np.log1p(kappa[tg][None, :] * gam[:, None] / s2[tg][None, :])))
    Htil = U_all @ W  # (m, r): the shared data vector h̃
    Ainv: Array | None = None
    Sinv: Array | None = None
    if G == 1:
        # one missing pattern (e.g. complete data): S = I + Σ_t w_t w_tᵀ ⊗ Q diag(ρ_t) Qᵀ is block diagonal in the
        # eigenbasis Q of G: one r x r block per direction, identity on the complement of range(Q)
        Q = cache.Qg[0]
        A = np.einsum("jt,tk,tl->jkl", rhos[0], W, W)
        A[:, np.arange(r), np.arange(r)] += 1.0
        Ainv = np.linalg.inv(A)
        Ainv = 0.5 * (Ainv + np.swapaxes(Ainv, 1, 2))
        hq = utils[0] @ W  # Qᵀ h̃ (k, r)
        muq = np.einsum("jkl,jl->jk", Ainv, hq)
        Theta = Q @ muq
        quad -= float(np.sum(hq * muq))
        logdet += float(np.sum(np.linalg.slogdet(A)[1]))
        dk = {(k, kk): Ainv[:, k, kk] for k in range(r) for kk in range(r)}
    else:
        Qall = np.hstack(cache.Qg)
        S = np.eye(m * r)
        for k in range(r):
            for kk in range(k, r):
                coef = np.concatenate(
                    [rhos[g] @ (W[data.group_tasks[g], k] * W[data.group_tasks[g], kk]) for g in range(G)]
                )
                blk = (Qall * coef) @ Qall.T
                S[k * m : (k + 1) * m, kk * m : (kk + 1) * m] += blk
                if kk != k:
                    S[kk * m : (kk + 1) * m, k * m : (k + 1) * m] += blk.T
        LS = scipy.linalg.cholesky(S, lower=True)
        Sinv = scipy.linalg.cho_solve((LS, True), np.eye(m * r))
        Sinv = 0.5 * (Sinv + Sinv.T)
        mu = Sinv @ Htil.T.ravel()
        Theta = mu.reshape(r, m).T
        quad -= float(Htil.T.ravel() @ mu)
        logdet += 2.0 * float(np.log(np.diag(LS)).sum())
        dk = {(k, kk): np.einsum("ij,ij->j", Qall, _sblock(Sinv, m, k, kk) @ Qall) for k in range(r) for kk in range(r)}
    N = float(data.n_t.sum())
    Bdiag = np.sum(W * W, axis=1) + kappa
    lml = -0.5 * quad - 0.5 * logdet - 0.5 * N * _LOG2PI - 0.5 * float(np.sum(Bdiag * cache.resid / s2))

    # gradients
    A_all = Theta @ W.T  # a_t = Θ w_t
    M = np.zeros((m, T))
    gW = np.zeros((T, r))
    gkap = np.zeros(T)
    gs2 = np.zeros(T)
    betas = []
    off = 0
    for g in range(G):
        tg = data.group_tasks[g]
        Q = cache.Qg[g]
        gam = cache.gam[g]
        kg = gam.size
        nu, rho, ut = nus[g], rhos[g], utils[g]
        pa = Q.T @ A_all[:, tg]
        priv = ut - rho * pa  # Qᵀ (u_t - H_t a_t)
        M[:, tg] = A_all[:, tg] + Q @ (priv * kappa[tg])
        pm = pa + priv * kappa[tg]  # Qᵀ m_t
        et = cache.c[g] - gam[:, None] * pm  # Qᵀ (b_t - G_t m_t)
        pth = Q.T @ Theta  # (k_g, r)
        sl = slice(off, off + kg)
        Wg = W[tg]  # (|g|, r)
        # Σ_k' w_tk' <S⁻¹_kk', H_t> and the quadratic forms Σ_kk' w_tk w_tk' <S⁻¹_kk', Q diag(x) Qᵀ>
        trSH = np.zeros((tg.size, r))
        quadH2 = np.zeros(tg.size)
        quadZ = np.zeros(tg.size)
        zeta = gam[:, None] * nu * nu  # γ / (σ² + κγ)²  (times σ⁴ gives P⁻¹ G P⁻¹)
        for k in range(r):
            for kk in range(r):
                d = dk[(k, kk)][sl]
                trSH[:, k] += Wg[:, kk] * (d @ rho)
                quadH2 += Wg[:, k] * Wg[:, kk] * (d @ (rho * rho))
                quadZ += Wg[:, k] * Wg[:, kk] * (d @ zeta)
        s2g = s2[tg]
        kg_ = kappa[tg]
        gW[tg] = (pth.T @ et).T / s2g[:, None] - trSH
        gkap[tg] = 0.5 * np.sum(priv * et, axis=0) / s2g - 0.5 * (rho.sum(axis=0) - quadH2)
        cm = np.sum(cache.c[g] * pm, axis=0)
        rr = data.yy[tg] - 2.0 * cm + np.sum(gam[:, None] * pm * pm, axis=0)
        trCG = kg_ * s2g * rho.sum(axis=0) + s2g * s2g * quadZ
        gs2[tg] = 0.5 * (rr / s2g**2 - data.n_t[tg] / s2g + trCG / s2g**2)
        betas.append(kg_[None, :] * gam[:, None] * nu)
        off += kg
    # the trace term -½ Σ_t B_tt resid_t / σ²_t of the variational bound
    gW -= (cache.resid / s2)[:, None] * W
    gkap -= 0.5 * cache.resid / s2
    gs2 += 0.5 * Bdiag * cache.resid / s2**2
    grad = Hyper([np.zeros_like(cache.ls)], [gW], [gkap * kappa], gs2 * s2)
    return NysInner(lml, grad, Theta, M, Sinv, Ainv, betas)


def _pinv_apply(X: Array, Q: Array, beta: Array) -> Array:
    """``X P_tt^{-1}`` with ``P_tt^{-1} = I - Q diag(β) Qᵀ`` (rows of X are vectors)."""
    out: Array = X - ((X @ Q) * beta) @ Q.T
    return out


def _sw(Sinv: Array, w: Array, m: int) -> Array:
    """``Σ_kk' w_k w_k' S⁻¹_kk'`` (m x m)."""
    r = w.size
    out = np.zeros((m, m))
    for k in range(r):
        for kk in range(r):
            out += (w[k] * w[kk]) * _sblock(Sinv, m, k, kk)
    return out


def nys_outer_grad(data: NysData, cache: NysCache, h: Hyper, inner: NysInner) -> Array:
    """Gradient in the log-lengthscales through ``F = ∂L/∂Φ`` (O(n m² + n m T))."""
    W = h.W[0]
    m = data.Z.shape[0]
    kappa = np.exp(h.log_kappa[0])
    s2 = np.exp(h.log_noise)
    Phi = cache.Phi
    Bdiag = np.sum(W * W, axis=1) + kappa
    F = np.zeros_like(Phi)
    Sinv = inner.Sinv if inner.Sinv is not None else np.empty((0, 0))
    if cache.direct:
        assert inner.Ainv is not None and cache.Gphi is not None and cache.PhiY is not None
        L = cache.L
        Q, beta = cache.Qg[0], inner.beta[0]
        sq = np.einsum("tk,jkl,tl->jt", W, inner.Ainv, W)
        d = (kappa * (1.0 - beta) + (1.0 - beta) ** 2 * sq) @ (1.0 / s2)
        cperp = float(np.sum((kappa + np.sum(W**2, axis=1)) / s2))
        Cm = (Q * (d - cperp)) @ Q.T  # C - c I, with C = Σ_t Cov(v_t)/σ²_t and c = Σ_t B_tt/σ²_t (trace term)
        Cm[np.diag_indices(m)] += cperp - float(np.sum(Bdiag / s2))
        LtM = scipy.linalg.solve_triangular(L, inner.M, lower=True, trans="T")  # L^{-T} M: Φ M = K_nm L^{-T} M
        R = (data.Y0 - cache.Phi @ LtM) / s2
        X1 = scipy.linalg.solve_triangular(L, Cm, lower=True, trans="T")
        Xm = scipy.linalg.solve_triangular(L, X1.T, lower=True, trans="T").T  # L^{-T} (C - cI) L^{-1}
        FL = R @ LtM.T - cache.Phi @ Xm  # F L^{-1} with F = R Mᵀ - Φ (C - cI)
        A1 = inner.M @ ((cache.PhiY - cache.Gphi @ inner.M) / s2).T - Cm @ cache.Gphi  # Fᵀ Φ
        return _lengthscale_grad(cache, FL, A1)
    for g, (rows, tasks) in enumerate(zip(data.group_rows, data.group_tasks, strict=True)):
        P = Phi if rows is None else Phi[rows]
        Yg = data.Y0[:, tasks] if rows is None else data.Y0[np.ix_(rows, tasks)]
        Mg = inner.M[:, tasks]
        R = (Yg - P @ Mg) / s2[tasks]
        Fg = R @ Mg.T
        Q = cache.Qg[g]
        if inner.Ainv is not None:  # one pattern: Cov(v_t) is diagonal in the basis (Q, complement)
            beta = inner.beta[g]  # (k, T)
            sq = np.einsum("tk,jkl,tl->jt", W[tasks], inner.Ainv, W[tasks])
            d = (kappa[tasks] * (1.0 - beta) + (1.0 - beta) ** 2 * sq) @ (1.0 / s2[tasks])
            cperp = float(np.sum((kappa[tasks] + np.sum(W[tasks] ** 2, axis=1)) / s2[tasks]))
            Cg = (Q * (d - cperp)) @ Q.T
            Cg[np.diag_indices(m)] += cperp
            Fg -= P @ Cg
        elif P.shape[0] >= m:
            Cg = np.zeros((m, m))
            for j, t in enumerate(tasks):
                beta = inner.beta[g][:, j]
                Pinv = np.eye(m) - (Q * beta) @ Q.T
                Cg += (kappa[t] * Pinv + Pinv @ _sw(Sinv, W[t], m) @ Pinv) / s2[t]
            Fg -= P @ Cg
        else:
            for j, t in enumerate(tasks):
                beta = inner.beta[g][:, j]
                X1 = _pinv_apply(P, Q, beta)
                Fg -= (kappa[t] * X1 + _pinv_apply(X1 @ _sw(Sinv, W[t], m), Q, beta)) / s2[t]
        Fg += P * float(np.sum(Bdiag[tasks] / s2[tasks]))  # trace term: ∂/∂φ_i of -½ c (1 - φ_iᵀφ_i)
        if rows is None:
            F += Fg
        else:
            F[rows] += Fg
    FL = scipy.linalg.solve_triangular(cache.L, F.T, lower=True, trans="T").T  # F L^{-1}
    return _lengthscale_grad(cache, FL, F.T @ Phi)


def _lengthscale_grad(cache: NysCache, FL: Array, A1: Array) -> Array:
    """``Σ (F L^{-1}) ∘ ∂K_nm - ½ Σ (L^{-T} FᵀΦ L^{-1}) ∘ ∂K_mm`` for every log-lengthscale."""
    L = cache.L
    A1 = 0.5 * (A1 + A1.T)
    A2 = scipy.linalg.solve_triangular(L, A1, lower=True, trans="T")
    MPhi = scipy.linalg.solve_triangular(L, A2.T, lower=True, trans="T").T  # L^{-T} A1 L^{-1}
    MPhi = 0.5 * (MPhi + MPhi.T)
    g1 = lengthscale_contraction(cache.Xs, cache.Zs, FL * cache.Gnm)
    g2 = lengthscale_contraction(cache.Zs, cache.Zs, MPhi * cache.Gmm)
    out: Array = g1 - 0.5 * g2
    return out


@dataclass
class NysPosterior:
    """Posterior of the Nyström ICM; predictive variance adds the DTC term ``B_tt (k(x,x) - φ(x)ᵀφ(x))``."""

    kernel: KernelName
    Z: Array
    ls: Array
    L: Array
    M: Array
    Theta: Array
    W: Array
    kappa: Array
    noise: Array
    B: Array
    Sinv: Array
    Qg: list[Array]
    beta: list[Array]
    task_group: IntArray
    task_col: IntArray
    uproj: list[Array]  # Qᵀ(u_t) coordinates, for sampling
    rho: list[Array]

    def _phi(self, Xq: Array) -> Array:
        out: Array = scipy.linalg.solve_triangular(
            self.L, kernel_matrix(self.kernel, self.Z, Xq, self.ls), lower=True
        ).T
        return out

    def mean(self, Xq: Array) -> Array:
        out: Array = self._phi(Xq) @ self.M
        return out

    def mean_var(self, Xq: Array) -> tuple[Array, Array]:
        Pq = self._phi(Xq)
        mean = Pq @ self.M
        m = self.Z.shape[0]
        resid = np.maximum(1.0 - np.einsum("ij,ij->i", Pq, Pq), 0.0)
        var = np.zeros_like(mean)
        for t in range(self.M.shape[1]):
            g, j = self.task_group[t], self.task_col[t]
            Q, beta = self.Qg[g], self.beta[g][:, j]
            X1 = _pinv_apply(Pq, Q, beta)
            var[:, t] = (
                self.kappa[t] * np.einsum("ij,ij->i", X1, Pq)
                + np.einsum("ij,ij->i", X1 @ _sw(self.Sinv, self.W[t], m), X1)
                + self.B[t, t] * resid
            )
        return mean, np.maximum(var, 0.0)

    def sample(self, Xq: Array, n_samples: int, rng: np.random.Generator) -> Array:
        """Posterior samples from the weight-space posterior, plus the DTC residual (correlated across tasks by B)."""
        Pq = self._phi(Xq)
        m, r = self.Theta.shape
        T = self.M.shape[1]
        LS = np.linalg.cholesky(self.Sinv)
        out = np.zeros((Xq.shape[0], T, n_samples))
        sb, Vb = eigh_psd(self.B)
        LB = Vb * np.sqrt(sb)
        resid = np.sqrt(np.maximum(1.0 - np.einsum("ij,ij->i", Pq, Pq), 0.0))
        for s in range(n_samples):
            Th = self.Theta + (LS @ rng.standard_normal(m * r)).reshape(r, m).T
            for t in range(T):
                g, j = self.task_group[t], self.task_col[t]
                Q, beta, rho = self.Qg[g], self.beta[g][:, j], self.rho[g][:, j]
                a = Th @ self.W[t]
                mean_priv = np.sqrt(self.kappa[t]) * (Q @ (self.uproj[g][:, j] - rho * (Q.T @ a)))
                xi = rng.standard_normal(m)
                # P_tt^{-1/2} ξ = ξ - Q diag(1 - sqrt(1 - β)) Qᵀ ξ
                theta = mean_priv + xi - Q @ ((1.0 - np.sqrt(1.0 - beta)) * (Q.T @ xi))
                out[:, t, s] = Pq @ (a + np.sqrt(self.kappa[t]) * theta)
            out[:, :, s] += resid[:, None] * (rng.standard_normal((Xq.shape[0], T)) @ LB.T)
        return out


def nys_posterior(data: NysData, cache: NysCache, h: Hyper) -> NysPosterior:
    inner = nys_inner(data, cache, h)
    T = data.Y0.shape[1]
    task_group = np.zeros(T, dtype=np.intp)
    task_col = np.zeros(T, dtype=np.intp)
    uproj, rhos = [], []
    kappa = np.exp(h.log_kappa[0])
    s2 = np.exp(h.log_noise)
    for g, tasks in enumerate(data.group_tasks):
        task_group[tasks] = g
        task_col[tasks] = np.arange(tasks.size)
        nu = 1.0 / (s2[tasks][None, :] + kappa[tasks][None, :] * cache.gam[g][:, None])
        uproj.append(cache.c[g] * nu)
        rhos.append(cache.gam[g][:, None] * nu)
    return NysPosterior(
        kernel=data.kernel,
        Z=data.Z,
        ls=cache.ls,
        L=cache.L,
        M=inner.M,
        Theta=inner.Theta,
        W=h.W[0].copy(),
        kappa=kappa,
        noise=s2,
        B=h.B(0),
        Sinv=inner.sinv(cache.Qg[0]) if inner.Sinv is None else inner.Sinv,
        Qg=cache.Qg,
        beta=inner.beta,
        task_group=task_group,
        task_col=task_col,
        uproj=uproj,
        rho=rhos,
    )
