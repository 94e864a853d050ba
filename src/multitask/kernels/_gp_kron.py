"""Exact ICM Gaussian process with every output observed: the Kronecker eigendecomposition path.

Model: ``vec(Y) ~ N(0, K_X ⊗ B + I_n ⊗ Σ)`` with ``Σ = diag(σ²_t)`` (per-task noise). Whitening by
the noise (Bonilla et al. 2008; Rakitsch et al. 2013, "It is all in the noise") turns the
covariance into ``(I ⊗ Σ^{1/2}) (K_X ⊗ B̃ + I) (I ⊗ Σ^{1/2})`` with ``B̃ = Σ^{-1/2} B Σ^{-1/2}``;
with ``K_X = U diag(λ) Uᵀ`` and ``B̃ = V diag(s) Vᵀ`` every quantity of the log marginal
likelihood and its gradient is a sum over the ``n T`` eigenvalues ``D_kl = λ_k s_l + 1``.

Costs: one eigendecomposition of ``K_X`` (O(n³)) per lengthscale value; with it fixed, the
likelihood and its gradient in ``B`` and the noises cost O(n T² + T³) (the ``Uᵀ Y`` rotation is
done once), and the lengthscale gradient one O(n³) product plus O(n² (T + d)). No ``(nT)``-sized
array is formed anywhere, including predictions (O(m n² + m n T) for ``m`` test points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from ._gp_params import Hyper
from ._kernels import KernelName, kernel_matrix, kernel_with_grad_factor, lengthscale_contraction
from ._kron import eigh_psd

__all__ = ["KronCache", "KronInner", "KronPosterior", "kron_inner", "kron_outer_grad", "kron_posterior", "kron_prepare"]

Array = NDArray[np.float64]
_LOG2PI = float(np.log(2 * np.pi))


@dataclass
class KronCache:
    """Everything that depends on the lengthscales only."""

    kernel: KernelName
    X: Array
    Y: Array
    ls: Array
    Xs: Array
    G: Array | None
    lam: Array
    U: Array
    UtY: Array


def kron_prepare(kernel: KernelName, X: Array, Y: Array, log_ls: Array, *, need_grad: bool = True) -> KronCache:
    """Kernel matrix, its eigendecomposition (the one O(n³) decomposition) and ``Uᵀ Y``."""
    ls = np.exp(log_ls)
    K, G = kernel_with_grad_factor(kernel, X, X, ls, need_factor=need_grad)
    lam, U = eigh_psd(K)  # does not modify K (the RBF gradient factor G is K itself)
    return KronCache(kernel, X, Y, ls, X / ls, G, lam, U, U.T @ Y)


@dataclass
class KronInner:
    """Log marginal likelihood, its gradient in the inner parameters, and what the outer gradient needs."""

    lml: float
    dlml: Hyper  # gradient of the LML in the inner parameters
    s: Array
    V: Array
    isig: Array
    D: Array
    Ahat: Array  # Uᵀ K^{-1} y as an (n, T) matrix
    B: Array


def kron_inner(cache: KronCache, h: Hyper) -> KronInner:
    """LML and its gradient w.r.t. ``W``, ``log_kappa``, ``log_noise`` (O(n T² + T³))."""
    n, T = cache.Y.shape
    W = h.W[0]
    kappa = np.exp(h.log_kappa[0])
    noise = np.exp(h.log_noise)
    isig = 1.0 / np.sqrt(noise)
    B = h.B(0)
    Bt = B * np.outer(isig, isig)
    s, V = eigh_psd(Bt)
    lam = cache.lam
    Z = (cache.UtY * isig) @ V
    D = np.outer(lam, s) + 1.0
    Zd = Z / D
    quad = float(np.sum(Z * Zd))
    logdet = float(np.sum(np.log(D))) + n * float(np.sum(np.log(noise)))
    lml = -0.5 * quad - 0.5 * logdet - 0.5 * n * T * _LOG2PI
    Ahat = (Zd @ V.T) * isig  # Uᵀ A, A = K^{-1} y as an (n, T) matrix
    invD = 1.0 / D
    # ∂L/∂B = ½ (Aᵀ K_X A - Σ^{-1/2} V diag(Σ_k λ_k / D_kl) Vᵀ Σ^{-1/2})
    AKA = (Ahat * lam[:, None]).T @ Ahat
    hb = lam @ invD
    HB = ((V * hb) @ V.T) * np.outer(isig, isig)
    GB = 0.5 * (AKA - HB)
    GB = 0.5 * (GB + GB.T)
    # ∂L/∂σ²_t = ½ (Σ_i A_it² - σ_t^{-2} Σ_l V_tl² Σ_k 1/D_kl)
    c = invD.sum(axis=0)
    gnoise = 0.5 * (np.sum(Ahat * Ahat, axis=0) - isig**2 * ((V * V) @ c))
    grad = Hyper(
        log_ls=[np.zeros_like(cache.ls)],
        W=[2.0 * GB @ W],
        log_kappa=[np.diag(GB) * kappa],
        log_noise=gnoise * noise,
    )
    return KronInner(lml, grad, s, V, isig, D, Ahat, B)


def kron_outer_grad(cache: KronCache, inner: KronInner) -> Array:
    """Gradient w.r.t. the log-lengthscales: ``½ Σ_ij W_X[i, j] ∂K_X[i, j]/∂log ℓ``.

    ``W_X = A B Aᵀ - U diag(g) Uᵀ`` with ``g_k = Σ_l s_l / D_kl``: one O(n³) product, no (nT) array.
    """
    assert cache.G is not None
    A = cache.U @ inner.Ahat
    g = (1.0 / inner.D) @ inner.s
    Ug = cache.U * np.sqrt(g)
    WX = (A @ inner.B) @ A.T
    WX -= Ug @ Ug.T
    WX *= cache.G
    out: Array = 0.5 * lengthscale_contraction(cache.Xs, cache.Xs, WX)
    return out


@dataclass
class KronPosterior:
    """Posterior of the ICM model given complete data (prediction without (nT)-sized arrays)."""

    kernel: KernelName
    X: Array
    ls: Array
    U: Array
    lam: Array
    V: Array
    s: Array
    isig: Array
    B: Array
    A: Array  # K^{-1} y as an (n, T) matrix
    noise: Array

    def _kinv(self, R: Array) -> Array:
        """``K^{-1} vec(R)`` as a matrix, for R of shape (n, T) or (n, T, S)."""
        if R.ndim == 3:
            return np.stack([self._kinv(R[:, :, j]) for j in range(R.shape[2])], axis=2)
        Z = self.U.T @ (R * self.isig) @ self.V
        Z /= np.outer(self.lam, self.s) + 1.0
        out: Array = (self.U @ Z @ self.V.T) * self.isig
        return out

    def mean(self, Xq: Array) -> Array:
        out: Array = kernel_matrix(self.kernel, Xq, self.X, self.ls) @ (self.A @ self.B)
        return out

    def mean_var(self, Xq: Array) -> tuple[Array, Array]:
        Kq = kernel_matrix(self.kernel, Xq, self.X, self.ls)
        mean = Kq @ (self.A @ self.B)
        P = Kq @ self.U
        Qm = self.B @ (self.V * self.isig[:, None])
        D = np.outer(self.lam, self.s) + 1.0
        red = ((P * P) @ (1.0 / D)) @ (Qm * Qm).T
        var = np.diag(self.B)[None, :] - red
        return mean, np.maximum(var, 0.0)

    def sample(self, Xq: Array, n_samples: int, rng: np.random.Generator) -> Array:
        """Joint posterior samples of the latent functions, shape (m, T, n_samples).

        Pathwise conditioning (Matheron's rule; Wilson et al. 2020): a joint prior sample on the
        training and test inputs, corrected by one Kronecker solve. O((n + m)³ + n² T S).
        """
        n, T = self.A.shape
        m = Xq.shape[0]
        Xa = np.vstack([self.X, Xq])
        Ka = kernel_matrix(self.kernel, Xa, Xa, self.ls)
        w, E = eigh_psd(Ka)
        La = E * np.sqrt(w)
        sb, Vb = eigh_psd(self.B)
        LB = Vb * np.sqrt(sb)
        Zs = rng.standard_normal((n + m, T, n_samples))
        F = np.einsum("ij,jts->its", La, Zs)
        F = np.einsum("its,ut->ius", F, LB)
        eps = rng.standard_normal((n, T, n_samples)) / self.isig[None, :, None]
        # the caller's Y is folded into A: y = K A, so y - f - eps has K^{-1} = A - K^{-1}(f + eps)
        corr = self.A[:, :, None] - self._kinv(F[:n] + eps)
        Kq = kernel_matrix(self.kernel, Xq, self.X, self.ls)
        out: Array = F[n:] + np.einsum("mi,its,tu->mus", Kq, corr, self.B)
        return out


def kron_posterior(cache: KronCache, h: Hyper) -> KronPosterior:
    """Posterior for prediction at the given hyperparameters."""
    inner = kron_inner(cache, h)
    A = cache.U @ inner.Ahat
    return KronPosterior(
        kernel=cache.kernel,
        X=cache.X,
        ls=cache.ls,
        U=cache.U,
        lam=cache.lam,
        V=inner.V,
        s=inner.s,
        isig=inner.isig,
        B=inner.B,
        A=A,
        noise=np.exp(h.log_noise),
    )


def icm_lml(kernel: KernelName, X: Array, Y: Array, lengthscales: Array, B: Array, noise: Array) -> float:
    """Exact ICM log marginal likelihood for any PSD ``B`` (no gradient): O(n³ + n²T + T³)."""
    n, T = Y.shape
    lam, U = eigh_psd(kernel_matrix(kernel, X, X, np.asarray(lengthscales, dtype=np.float64)))
    isig = 1.0 / np.sqrt(noise)
    s, V = eigh_psd(B * np.outer(isig, isig))
    Z = (U.T @ Y * isig) @ V
    D = np.outer(lam, s) + 1.0
    return float(-0.5 * np.sum(Z * Z / D) - 0.5 * (np.log(D).sum() + n * np.log(noise).sum()) - 0.5 * n * T * _LOG2PI)


def kron_lml(kernel: KernelName, X: Array, Y: Array, h: Hyper) -> float:
    """The exact log marginal likelihood at ``h`` (no gradient), for benchmarks and tests."""
    return kron_inner(kron_prepare(kernel, X, Y, h.log_ls[0], need_grad=False), h).lml


def dense_icm_lml(kernel: KernelName, X: Array, Y: Array, h: Hyper) -> float:
    """Reference: the same LML from a dense (nT) x (nT) Cholesky (small problems only)."""
    n, T = Y.shape
    K = kernel_matrix(kernel, X, X, np.exp(h.log_ls[0]))
    C = np.kron(K, h.B(0)) + np.kron(np.eye(n), np.diag(np.exp(h.log_noise)))
    L = scipy.linalg.cholesky(C, lower=True)
    a = scipy.linalg.solve_triangular(L, Y.ravel(), lower=True)
    return float(-0.5 * a @ a - np.log(np.diag(L)).sum() - 0.5 * n * T * _LOG2PI)
