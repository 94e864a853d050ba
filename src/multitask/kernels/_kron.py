"""Kronecker-structured linear algebra for separable kernels (numpy/scipy only).

Conventions: an ``n x T`` matrix ``C`` stands for the vector ``vec(C)`` indexed by ``(sample i, task
t)``; the separable kernel matrix ``K_X ⊗ B`` then acts as ``C ↦ K_X C B`` (for symmetric ``B``), so no
``(nT) x (nT)`` array is ever formed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "KronEig",
    "PCGResult",
    "eigh_psd",
    "kron_eig",
    "nearest_kronecker",
    "pcg",
]

Array = NDArray[np.float64]


def eigh_psd(A: Array) -> tuple[Array, Array]:
    """Eigendecomposition of a symmetric PSD matrix with rounding-level negative eigenvalues set to 0."""
    w, V = np.linalg.eigh(0.5 * (A + A.T))
    np.maximum(w, 0.0, out=w)
    return w, V


@dataclass(frozen=True)
class KronEig:
    """``K_X = U diag(lam) Uᵀ`` and ``B = V diag(s) Vᵀ``: solves ``(K_X ⊗ B + alpha I) vec(C) = vec(R)``.

    The solution is ``C = U [(Uᵀ R V) / (lam sᵀ + alpha)] Vᵀ``: O(n² T + n T²) per right-hand side
    after the O(n³ + T³) eigendecompositions.
    """

    U: Array
    lam: Array
    V: Array
    s: Array

    def solve(self, R: Array, alpha: float) -> Array:
        """``C`` with ``K_X C B + alpha C = R``."""
        Z = self.U.T @ R @ self.V
        Z /= np.outer(self.lam, self.s) + alpha
        out: Array = self.U @ Z @ self.V.T
        return out


def kron_eig(K: Array, B: Array) -> KronEig:
    """Eigendecompose both factors of ``K ⊗ B``."""
    lam, U = eigh_psd(K)
    s, V = eigh_psd(B)
    return KronEig(U=U, lam=lam, V=V, s=s)


def nearest_kronecker(Ks: Sequence[Array], Bs: Sequence[Array]) -> tuple[Array, Array]:
    """``(K, B)`` with ``K ⊗ B`` nearest to ``Σ_q Ks[q] ⊗ Bs[q]`` in Frobenius norm.

    Van Loan & Pitsianis (1993): the best Kronecker approximation is the leading singular pair of
    the rearranged matrix ``Σ_q vec(K_q) vec(B_q)ᵀ``; with Gram matrices ``GK = [<K_q, K_p>]`` and
    ``GB = [<B_q, B_p>]`` it is ``B = Σ β_q B_q`` for the leading generalized eigenvector of
    ``(GB GK GB, GB)``. For PSD terms the Gram matrices are entrywise non-negative, so ``β >= 0`` and
    both factors are PSD. Used as the preconditioner of sums of separable kernels.
    """
    Q = len(Ks)
    if Q == 1:
        return Ks[0], Bs[0]
    GK = np.array([[float(np.vdot(Ks[a], Ks[b])) for b in range(Q)] for a in range(Q)])
    GB = np.array([[float(np.vdot(Bs[a], Bs[b])) for b in range(Q)] for a in range(Q)])
    # GB may be singular (equal task matrices): work in the eigenbasis of GB restricted to its range
    gw, gv = np.linalg.eigh(GB)
    keep = gw > 1e-12 * max(float(gw.max()), 1e-300)
    P = gv[:, keep] / np.sqrt(gw[keep])  # GB^{-1/2} on its range
    M = P.T @ GB @ GK @ GB @ P
    _, ev = np.linalg.eigh(0.5 * (M + M.T))
    beta = P @ ev[:, -1]
    if beta.sum() < 0:
        beta = -beta
    beta = np.maximum(beta, 0.0)
    Bt = sum((beta[q] * Bs[q] for q in range(Q)), np.zeros_like(Bs[0]))
    nb = float(np.vdot(Bt, Bt))
    Kt = sum((Ks[q] * (float(np.vdot(Bs[q], Bt)) / nb) for q in range(Q)), np.zeros_like(Ks[0]))
    return Kt, Bt


@dataclass(frozen=True)
class PCGResult:
    """Solution, iterations used, final relative residual and whether the tolerance was met."""

    x: Array
    n_iter: int
    residual: float
    converged: bool


def pcg(
    apply_A: Callable[[Array], Array],
    apply_M: Callable[[Array], Array],
    b: Array,
    *,
    x0: Array | None = None,
    tol: float = 1e-10,
    max_iter: int = 1000,
) -> PCGResult:
    """Preconditioned conjugate gradients on matrices (``vec`` inner products), relative residual ``tol``.

    ``apply_A`` must be symmetric positive definite and ``apply_M`` an SPD approximation of its
    inverse on the same subspace (both map the subspace of ``b`` to itself).
    """
    x = np.zeros_like(b) if x0 is None else x0.copy()
    r = b - apply_A(x) if x0 is not None else b.copy()
    bnorm = float(np.linalg.norm(b))
    if bnorm == 0.0:
        return PCGResult(np.zeros_like(b), 0, 0.0, True)
    res = float(np.linalg.norm(r)) / bnorm
    if res <= tol:
        return PCGResult(x, 0, res, True)
    z = apply_M(r)
    p = z.copy()
    rz = float(np.vdot(r, z))
    for it in range(1, max_iter + 1):
        Ap = apply_A(p)
        step = rz / float(np.vdot(p, Ap))
        x += step * p
        r -= step * Ap
        res = float(np.linalg.norm(r)) / bnorm
        if res <= tol:
            return PCGResult(x, it, res, True)
        z = apply_M(r)
        rz_new = float(np.vdot(r, z))
        p *= rz_new / rz
        p += z
        rz = rz_new
    return PCGResult(x, max_iter, res, False)
