"""Stationary input kernels with ARD lengthscales and their lengthscale gradients (numpy only).

Every kernel here has unit variance (``k(x, x) = 1``); amplitudes live in the task matrices.
With ``Δ_j = (x_j - x'_j) / ℓ_j`` and ``r = ||Δ||``, every kernel is ``k = f(r)`` and its
derivative with respect to ``log ℓ_j`` has the form ``∂k/∂log ℓ_j = g(r) Δ_j²`` with
``g = -f'(r) / r``. So the contraction ``Σ_ik M_ik ∂K_ik/∂log ℓ_j`` of an arbitrary matrix ``M``
with every lengthscale derivative costs one ``(n1 x n2) @ (n2 x d)`` product
(:func:`lengthscale_contraction`) and never forms the ``d`` derivative matrices.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "KERNELS",
    "KernelName",
    "check_kernel_name",
    "check_lengthscale",
    "kernel_diag",
    "kernel_matrix",
    "kernel_with_grad_factor",
    "lengthscale_contraction",
]

Array = NDArray[np.float64]
KernelName = Literal["rbf", "matern12", "matern32", "matern52"]
KERNELS: tuple[str, ...] = ("rbf", "matern12", "matern32", "matern52")

_SQRT3 = float(np.sqrt(3.0))
_SQRT5 = float(np.sqrt(5.0))


def check_kernel_name(kernel: object, owner: str) -> KernelName:
    """Return ``kernel`` if it names a kernel of this module, else raise a ValueError naming the choices."""
    if not isinstance(kernel, str) or kernel not in KERNELS:
        raise ValueError(f"{owner}: kernel={kernel!r} is not a known kernel; use one of {', '.join(KERNELS)}.")
    return cast(KernelName, kernel)


def check_lengthscale(lengthscale: object, n_features: int, owner: str, name: str = "lengthscale") -> Array:
    """A positive, finite lengthscale: a scalar (shared by every input) or one value per input feature."""
    ls = np.asarray(lengthscale, dtype=np.float64)
    if ls.ndim == 0:
        ls = np.full(n_features, float(ls))
    if ls.shape != (n_features,) or not np.all(np.isfinite(ls)) or not np.all(ls > 0):
        raise ValueError(
            f"{owner}: {name}={lengthscale!r} must be a positive finite scalar or an array of {n_features} "
            f"positive values (one per input feature); got shape {ls.shape}."
        )
    return ls


def _sqdist(A: Array, B: Array) -> Array:
    """Squared Euclidean distances between the rows of A and B, clipped at 0 against rounding."""
    sa = np.einsum("ij,ij->i", A, A)
    sb = np.einsum("ij,ij->i", B, B)
    norms: Array = sa[:, None] + sb[None, :]
    d2: Array = norms - 2.0 * (A @ B.T)
    # cancellation leaves ~1e-16 |x|² where x == x' (duplicated rows); set those to exactly 0
    d2[d2 <= 1e-13 * norms] = 0.0
    return d2


def kernel_matrix(kernel: KernelName, X1: Array, X2: Array, lengthscale: Array) -> Array:
    """The kernel matrix ``K[i, k] = k(X1[i], X2[k])`` (unit variance)."""
    return kernel_with_grad_factor(kernel, X1, X2, lengthscale, need_factor=False)[0]


def kernel_diag(kernel: KernelName, X: Array) -> Array:
    """``k(x, x)`` for every row: 1 for every stationary kernel here."""
    del kernel
    return np.ones(X.shape[0])


def kernel_with_grad_factor(
    kernel: KernelName, X1: Array, X2: Array, lengthscale: Array, *, need_factor: bool = True
) -> tuple[Array, Array | None]:
    """The kernel matrix and the factor ``G`` with ``∂K_ik/∂log ℓ_j = G_ik Δ_ikj²``.

    For the RBF kernel ``G`` is ``K`` itself (the same array is returned twice, do not modify it).
    """
    A = X1 / lengthscale
    B = A if X2 is X1 else X2 / lengthscale
    d2 = _sqdist(A, B)
    if B is A:  # exact zeros on the diagonal (rounding there would be amplified by sqrt)
        np.fill_diagonal(d2, 0.0)
    if kernel == "rbf":
        K = np.exp(-0.5 * d2)
        return K, (K if need_factor else None)
    r = np.sqrt(d2)
    if kernel == "matern12":
        K = np.exp(-r)
        if not need_factor:
            return K, None
        with np.errstate(divide="ignore", invalid="ignore"):
            G = np.where(r > 0, K / np.where(r > 0, r, 1.0), 0.0)
        return K, G
    if kernel == "matern32":
        e = np.exp(-_SQRT3 * r)
        K = (1.0 + _SQRT3 * r) * e
        return K, (3.0 * e if need_factor else None)
    if kernel == "matern52":
        e = np.exp(-_SQRT5 * r)
        K = (1.0 + _SQRT5 * r + (5.0 / 3.0) * d2) * e
        return K, ((5.0 / 3.0) * (1.0 + _SQRT5 * r) * e if need_factor else None)
    raise ValueError(f"unknown kernel {kernel!r}")  # pragma: no cover - names are checked upstream


def lengthscale_contraction(X1s: Array, X2s: Array, M: Array) -> Array:
    """``v_j = Σ_ik M_ik (X1s_ij - X2s_kj)²`` for every feature j (``X1s``, ``X2s`` already divided by ℓ).

    With ``M = W ∘ G`` this is ``Σ_ik W_ik ∂K_ik/∂log ℓ_j``: one ``M @ X2s`` product, O(n1 n2 d).
    """
    rows = M.sum(axis=1)
    cols = M.sum(axis=0)
    cross = np.einsum("ij,ij->j", X1s, M @ X2s)
    out: Array = rows @ (X1s * X1s) + cols @ (X2s * X2s) - 2.0 * cross
    return out
