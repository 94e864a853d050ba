"""Exact LMC Gaussian process on the observed outputs only (any missing pattern, any Q).

The covariance of the ``N`` observed outputs ``(i_o, t_o)`` is
``K_obs[o, o'] = Σ_q k_q(x_{i_o}, x_{i_o'}) B_q[t_o, t_o'] + δ_oo' σ²_{t_o}``. One Cholesky factorization
and one inverse per likelihood evaluation: O(N³) time and O(N²) memory, with ``N`` the number of
observed outputs (``N = n T`` for complete data, which is why complete-data ICM takes the Kronecker
path instead). Gradients are contractions of ``W = α αᵀ - K_obs^{-1}`` with each derivative, done
without forming the derivative matrices: O(Q N² (d + 1)) on top of the factorization.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
from numpy.typing import NDArray
from scipy.linalg import lapack

from ._gp_params import Hyper
from ._kernels import KernelName, kernel_matrix, kernel_with_grad_factor, lengthscale_contraction
from ._kron import eigh_psd

__all__ = ["DenseData", "DensePosterior", "dense_lml_grad", "dense_posterior", "make_dense_data"]

Array = NDArray[np.float64]
_LOG2PI = float(np.log(2 * np.pi))


@dataclass
class DenseData:
    """Observed outputs sorted by task: rows ``ri`` into ``X``, tasks ``ti``, values ``y``; task blocks start at ``starts``."""

    kernel: KernelName
    X: Array
    ri: NDArray[np.intp]
    ti: NDArray[np.intp]
    y: Array
    starts: NDArray[np.intp]
    T: int


def make_dense_data(kernel: KernelName, X: Array, Y: Array, mask: NDArray[np.bool_]) -> DenseData:
    tasks, rows = np.nonzero(mask.T)  # sorted by task, then row
    starts = np.searchsorted(tasks, np.arange(Y.shape[1]))
    return DenseData(kernel, X, rows, tasks, Y[rows, tasks], starts.astype(np.intp), Y.shape[1])


def _block_sum(M: Array, starts: NDArray[np.intp]) -> Array:
    """Sums of the task blocks of an (N, N) matrix whose rows and columns are sorted by task."""
    out: Array = np.add.reduceat(np.add.reduceat(M, starts, axis=0), starts, axis=1)
    return out


def _gather(A: Array, idx: NDArray[np.intp]) -> Array:
    """``A[np.ix_(idx, idx)]``, faster."""
    out: Array = A.take(idx, axis=0).take(idx, axis=1)
    return out


def _expand_tasks(B: Array, starts: NDArray[np.intp], N: int) -> Array:
    """``B[np.ix_(ti, ti)]`` for outputs sorted by task (blocks beginning at ``starts``)."""
    counts = np.diff(np.append(starts, N))
    out: Array = np.repeat(np.repeat(B, counts, axis=0), counts, axis=1)
    return out


def _cov(data: DenseData, h: Hyper) -> Array:
    Q = len(h.log_ls)
    N = data.y.size
    C = np.zeros((N, N))
    for q in range(Q):
        Kq = _gather(kernel_matrix(data.kernel, data.X, data.X, np.exp(h.log_ls[q])), data.ri)
        Kq *= _expand_tasks(h.B(q), data.starts, N)
        C += Kq
    C[np.diag_indices(N)] += np.exp(h.log_noise)[data.ti]
    return C


def _chol(C: Array) -> Array:
    """Lower Cholesky factor; adds growing jitter if rounding made the matrix indefinite."""
    jitter = 0.0
    scale = float(np.mean(np.diag(C)))
    for _ in range(6):
        L, info = lapack.dpotrf(C if jitter == 0 else C + jitter * np.eye(C.shape[0]), lower=1, clean=1)
        if info == 0:
            return np.asarray(L)
        jitter = max(jitter * 100, 1e-10 * scale)
    raise np.linalg.LinAlgError("the covariance of the observed outputs is not positive definite")


def dense_lml_grad(data: DenseData, h: Hyper, *, need_grad: bool = True) -> tuple[float, Hyper | None]:
    """Exact LML over the observed outputs and its gradient in every hyperparameter."""
    Q = len(h.log_ls)
    N = data.y.size
    L = _chol(_cov(data, h))
    alpha = scipy.linalg.cho_solve((L, True), data.y)
    lml = -0.5 * float(data.y @ alpha) - float(np.log(np.diag(L)).sum()) - 0.5 * N * _LOG2PI
    if not need_grad:
        return lml, None
    Kinv, info = lapack.dpotri(L, lower=1)
    if info != 0:  # pragma: no cover - L came from a successful factorization
        raise np.linalg.LinAlgError("inverse from the Cholesky factor failed")
    Wm = np.tril(Kinv)
    Wm += np.tril(Kinv, -1).T
    del Kinv
    Wm *= -1.0
    Wm += np.outer(alpha, alpha)  # W = α αᵀ - K⁻¹
    noise = np.exp(h.log_noise)
    g_noise = 0.5 * np.add.reduceat(np.diag(Wm), data.starts) * noise
    # sums over the outputs of each row: M_rows = Eᵀ M E with E the (N, n) one-hot of the rows
    E = scipy.sparse.csr_matrix((np.ones(N), (np.arange(N), data.ri)), shape=(N, data.X.shape[0]))
    g_ls, g_W, g_k = [], [], []
    for q in range(Q):
        ls = np.exp(h.log_ls[q])
        Kr, Gr = kernel_with_grad_factor(data.kernel, data.X, data.X, ls)
        assert Gr is not None
        Bq = h.B(q)
        M = Wm * _gather(Kr, data.ri)
        GB = 0.5 * _block_sum(M, data.starts)  # ∂L/∂B_q = ½ Eₜᵀ (W ∘ K_q) Eₜ
        GB = 0.5 * (GB + GB.T)
        M = Wm * _expand_tasks(Bq, data.starts, N)
        Mr = np.asarray(E.T @ np.asarray(E.T @ M).T)  # (n, n); M is symmetric
        Mr *= Gr
        Xs = data.X / ls
        g_ls.append(0.5 * lengthscale_contraction(Xs, Xs, Mr))
        g_W.append(2.0 * GB @ h.W[q])
        g_k.append(np.diag(GB) * np.exp(h.log_kappa[q]))
    return lml, Hyper(g_ls, g_W, g_k, g_noise)


@dataclass
class DensePosterior:
    """Posterior of the LMC given the observed outputs (exact; O(N²) memory)."""

    kernel: KernelName
    X: Array
    ri: NDArray[np.intp]
    ti: NDArray[np.intp]
    y: Array
    T: int
    ls: list[Array]
    Bs: list[Array]
    noise: Array
    L: Array
    alpha: Array

    def _scatter(self, v: Array) -> Array:
        """Observed-output vector(s) -> (n, T[, S]) matrix with zeros at missing outputs."""
        out = np.zeros((self.X.shape[0], self.T, *v.shape[1:]))
        np.add.at(out, (self.ri, self.ti), v)
        return out

    def mean(self, Xq: Array) -> Array:
        A = self._scatter(self.alpha)
        out = np.zeros((Xq.shape[0], self.T))
        for ls, B in zip(self.ls, self.Bs, strict=True):
            out += kernel_matrix(self.kernel, Xq, self.X, ls) @ A @ B
        return out

    def mean_var(self, Xq: Array) -> tuple[Array, Array]:
        """Mean and latent variance: O(T m N²) for the variances (one triangular solve per task)."""
        mean = self.mean(Xq)
        m = Xq.shape[0]
        Kqs = [kernel_matrix(self.kernel, Xq, self.X, ls)[:, self.ri] for ls in self.ls]
        var = np.zeros((m, self.T))
        prior = sum((np.diag(B) for B in self.Bs), np.zeros(self.T))
        for t in range(self.T):
            Ct = sum((Kq * B[t, self.ti] for Kq, B in zip(Kqs, self.Bs, strict=True)), np.zeros((m, self.y.size)))
            V = scipy.linalg.solve_triangular(self.L, Ct.T, lower=True)
            var[:, t] = prior[t] - np.einsum("ij,ij->j", V, V)
        return mean, np.maximum(var, 0.0)

    def sample(self, Xq: Array, n_samples: int, rng: np.random.Generator) -> Array:
        """Joint posterior samples by pathwise conditioning; shape (m, T, n_samples)."""
        n = self.X.shape[0]
        m = Xq.shape[0]
        Xa = np.vstack([self.X, Xq])
        F = np.zeros((n + m, self.T, n_samples))
        for ls, B in zip(self.ls, self.Bs, strict=True):
            w, E = eigh_psd(kernel_matrix(self.kernel, Xa, Xa, ls))
            sb, Vb = eigh_psd(B)
            Z = rng.standard_normal((n + m, self.T, n_samples))
            F += np.einsum("ut,its->ius", Vb * np.sqrt(sb), np.einsum("ij,jts->its", E * np.sqrt(w), Z))
        eps = rng.standard_normal((self.y.size, n_samples)) * np.sqrt(self.noise[self.ti])[:, None]
        resid = self.y[:, None] - F[self.ri, self.ti] - eps
        corr = self._scatter(scipy.linalg.cho_solve((self.L, True), resid))
        out: Array = F[n:].copy()
        for ls, B in zip(self.ls, self.Bs, strict=True):
            out += np.einsum("mi,its,tu->mus", kernel_matrix(self.kernel, Xq, self.X, ls), corr, B)
        return out


def dense_posterior(data: DenseData, h: Hyper) -> DensePosterior:
    L = _chol(_cov(data, h))
    alpha = scipy.linalg.cho_solve((L, True), data.y)
    Q = len(h.log_ls)
    return DensePosterior(
        kernel=data.kernel,
        X=data.X,
        ri=data.ri,
        ti=data.ti,
        y=data.y,
        T=data.T,
        ls=[np.exp(h.log_ls[q]) for q in range(Q)],
        Bs=[h.B(q) for q in range(Q)],
        noise=np.exp(h.log_noise),
        L=L,
        alpha=alpha,
    )
