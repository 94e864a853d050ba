"""Penalties of the linear multi-task estimators: values, gradients and proximal operators (private).

Coefficients are held as ``W`` of shape (n_features, n_tasks): one column per task.

- trace norm ``alpha * ||W||_*``: prox = singular value thresholding;
- L2,1 ``alpha * sum_j ||W[j, :]||_2``: prox = row-wise (per-feature) group soft-thresholding;
- mean-regularized ``lam1 * sum_t ||w_t - w_bar||^2 + lam2 * ||W||_F^2``: smooth;
- clustered (convex relaxation of Zhou, Chen & Ye 2011)
  ``rho1 * eta * (1 + eta) * min_{M in M_k} tr(W (eta I + M)^{-1} W^T)``, ``eta = rho2 / rho1``,
  ``M_k = {M : 0 <= M <= I, tr M = k}``: the inner minimum over ``M`` is solved exactly (eigen-decomposition
  of ``W^T W`` and a 1-D search), which leaves a smooth function of ``W`` (see :func:`cluster_eigenvalues`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class Penalty(Protocol):
    """What the proximal-gradient solver needs from a penalty on ``W`` (n_features, n_tasks)."""

    smooth_lipschitz: float  # Lipschitz constant of the gradient of the smooth part (0 if none)

    def smooth(self, W: FloatArray) -> tuple[float, FloatArray | None]:
        """Value and gradient of the smooth part (``(0.0, None)`` when there is none)."""
        ...

    def nonsmooth_value(self, W: FloatArray) -> float:
        """Value of the part handled by :meth:`prox` (0 when there is none)."""
        ...

    def prox(self, W: FloatArray, step: float) -> FloatArray:
        """``argmin_Z step * g(Z) + ||Z - W||^2 / 2`` for the non-smooth part ``g`` (identity when none)."""
        ...


# --- proximal operators ------------------------------------------------------------------------


def singular_value_threshold(W: FloatArray, tau: float) -> FloatArray:
    """Proximal operator of ``tau * ||.||_*``: shrink every singular value by ``tau`` (Cai, Candès, Shen 2010)."""
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    s = np.maximum(s - tau, 0.0)
    keep = s > 0
    out: FloatArray = (U[:, keep] * s[keep]) @ Vt[keep]
    return out


def group_soft_threshold_rows(W: FloatArray, tau: float) -> FloatArray:
    """Proximal operator of ``tau * sum_j ||W[j, :]||_2``: scale each row by ``max(0, 1 - tau / ||row||)``."""
    norms = np.linalg.norm(W, axis=1)
    scale = np.where(norms > tau, 1.0 - tau / np.where(norms > 0, norms, 1.0), 0.0)
    out: FloatArray = W * scale[:, None]
    return out


def cluster_eigenvalues(sigma: FloatArray, eta: float, k: float, n_tasks: int) -> FloatArray:
    """Eigenvalues of the optimal ``M`` in ``min_{0 <= M <= I, tr M = k} tr(W (eta I + M)^{-1} W^T)``.

    With ``sigma`` the singular values of ``W`` sorted in decreasing order (padded with zeros to
    ``n_tasks``), the optimal ``M`` shares the right singular vectors of ``W`` and its eigenvalues solve
    ``min sum_i sigma_i^2 / (eta + g_i)`` over ``0 <= g_i <= 1, sum_i g_i = k``. The KKT conditions give
    ``g_i = clip(theta * sigma_i - eta, 0, 1)`` for a scalar ``theta >= 0``; ``sum_i g_i(theta)`` is
    piecewise linear and non-decreasing, so ``theta`` is found exactly from its sorted breakpoints.
    When fewer than ``k`` singular values are positive (above round-off of the largest), those get
    ``g_i = 1`` and the remaining trace is spread evenly over the null directions (the objective does not
    depend on it there).

    Parameters
    ----------
    sigma : ndarray of shape (r,)
        Non-negative singular values in decreasing order, ``r <= n_tasks``.
    eta : float
        ``rho2 / rho1 > 0``.
    k : float
        Trace of ``M`` (the number of clusters), ``0 < k <= n_tasks``.
    n_tasks : int
        Size of ``M``.

    Returns
    -------
    ndarray of shape (n_tasks,)
        The eigenvalues ``g``, aligned with ``sigma`` (then the null directions).
    """
    g = np.zeros(n_tasks)
    # singular values at round-off level of the largest are null directions (and would overflow eta / sigma)
    pos = sigma[sigma > sigma.max(initial=0.0) * n_tasks * np.finfo(float).eps]
    p = pos.size
    if p <= k:
        g[:p] = 1.0
        if n_tasks > p:
            g[p:] = (k - p) / (n_tasks - p)
        return g
    # g(theta) = m_s + theta * sum(pos[m_s:m_e]) - eta * (m_e - m_s), where the m_e largest sigmas have
    # entered (theta * sigma >= eta) and the m_s largest are saturated (theta * sigma >= 1 + eta). The
    # partial sums come from suffix sums (smallest first), which do not cancel when sigma spans decades.
    suffix = np.concatenate((np.cumsum(pos[::-1])[::-1], [0.0]))  # suffix[i] = sum(pos[i:])
    breaks = np.sort(np.concatenate((eta / pos, (1.0 + eta) / pos)))
    neg = -pos  # increasing, for searchsorted

    def counts(theta: FloatArray) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        m_e = np.searchsorted(neg, -eta / theta, side="right")
        m_s = np.searchsorted(neg, -(1.0 + eta) / theta, side="right")
        return m_e, m_s

    m_e, m_s = counts(breaks)
    total = m_s + breaks * (suffix[m_s] - suffix[m_e]) - eta * (m_e - m_s)
    # first breakpoint with total >= k (total[-1] = p > k up to round-off, hence the clamp)
    j = min(int(np.searchsorted(total, k, side="left")), total.size - 1)
    if j == 0 or total[j] == k:
        theta = float(breaks[j])
    else:
        # the entered / saturated sets on the open interval (breaks[j-1], breaks[j]), read at its midpoint
        # (at a breakpoint itself, eta / (eta / sigma) may round either way)
        mid_e, mid_s = counts(np.array([0.5 * (breaks[j - 1] + breaks[j])]))
        lo_e, lo_s = int(mid_e[0]), int(mid_s[0])
        slope = suffix[lo_s] - suffix[lo_e]
        theta = float((k - lo_s + eta * (lo_e - lo_s)) / slope) if slope > 0 else float(breaks[j])
    g[:p] = np.clip(theta * pos - eta, 0.0, 1.0)
    return g


# --- penalties ---------------------------------------------------------------------------------


class TraceNormPenalty:
    """``alpha * ||W||_*`` (sum of singular values)."""

    smooth_lipschitz = 0.0

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def smooth(self, W: FloatArray) -> tuple[float, FloatArray | None]:
        return 0.0, None

    def nonsmooth_value(self, W: FloatArray) -> float:
        return self.alpha * float(np.linalg.svd(W, compute_uv=False).sum())

    def prox(self, W: FloatArray, step: float) -> FloatArray:
        return singular_value_threshold(W, step * self.alpha)

    @staticmethod
    def dual_norm(G: FloatArray) -> float:
        """Spectral norm: the smallest ``alpha`` with ``W = 0`` optimal is ``dual_norm(grad f(0))``."""
        return float(np.linalg.norm(G, 2))


class L21Penalty:
    """``alpha * sum_j ||W[j, :]||_2``: a feature is used by all tasks or by none."""

    smooth_lipschitz = 0.0

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def smooth(self, W: FloatArray) -> tuple[float, FloatArray | None]:
        return 0.0, None

    def nonsmooth_value(self, W: FloatArray) -> float:
        return self.alpha * float(np.linalg.norm(W, axis=1).sum())

    def prox(self, W: FloatArray, step: float) -> FloatArray:
        return group_soft_threshold_rows(W, step * self.alpha)

    @staticmethod
    def dual_norm(G: FloatArray) -> float:
        """Largest row norm: the smallest ``alpha`` with ``W = 0`` optimal is ``dual_norm(grad f(0))``."""
        return float(np.linalg.norm(G, axis=1).max(initial=0.0))


class MeanRegularizedPenalty:
    """``lam1 * sum_t ||w_t - w_bar||^2 + lam2 * ||W||_F^2`` with ``w_bar`` the mean task vector."""

    def __init__(self, lam1: float, lam2: float) -> None:
        self.lam1 = lam1
        self.lam2 = lam2
        self.smooth_lipschitz = 2.0 * (lam1 + lam2)

    def smooth(self, W: FloatArray) -> tuple[float, FloatArray | None]:
        D = W - W.mean(axis=1, keepdims=True)
        value = self.lam1 * float(np.vdot(D, D)) + self.lam2 * float(np.vdot(W, W))
        return value, 2.0 * self.lam1 * D + 2.0 * self.lam2 * W

    def nonsmooth_value(self, W: FloatArray) -> float:
        return 0.0

    def prox(self, W: FloatArray, step: float) -> FloatArray:
        return W


class ClusteredPenalty:
    """``rho1 * eta * (1 + eta) * min_{M in M_k} tr(W (eta I + M)^{-1} W^T)`` with ``eta = rho2 / rho1``.

    The minimum over ``M`` is attained at ``M = V diag(g) V^T`` (``V``: right singular vectors of ``W``,
    ``g`` from :func:`cluster_eigenvalues`), so the penalty equals
    ``c * sum_i sigma_i^2 / (eta + g_i)`` with ``c = rho1 * eta * (1 + eta)``. As a partial minimum of a
    jointly convex function it is convex, and it is differentiable with gradient
    ``2 c W (eta I + M)^{-1} = 2 c U diag(sigma_i / (eta + g_i)) V^T`` (Danskin), which is Lipschitz with
    constant ``2 c / eta = 2 (rho1 + rho2)``. In the span of the top-``k`` directions the curvature is
    ``rho2`` (plain ridge); outside it ``rho1 + rho2``.

    ``rho1 = 0`` is the plain ridge ``rho2 * ||W||_F^2``.
    """

    def __init__(self, rho1: float, rho2: float, k: float, n_tasks: int) -> None:
        self.rho1 = rho1
        self.rho2 = rho2
        self.k = min(k, float(n_tasks))
        self.n_tasks = n_tasks
        self.smooth_lipschitz = 2.0 * (rho1 + rho2)

    def eigen(self, W: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """``U, sigma, Vt, g`` of the thin SVD of ``W`` and the optimal eigenvalues of ``M`` along ``Vt``."""
        U, s, Vt = np.linalg.svd(W, full_matrices=False)
        eta = self.rho2 / self.rho1
        g = cluster_eigenvalues(s, eta, self.k, self.n_tasks)[: s.size]
        return U, s, Vt, g

    def smooth(self, W: FloatArray) -> tuple[float, FloatArray | None]:
        if self.rho1 == 0.0:
            return self.rho2 * float(np.vdot(W, W)), 2.0 * self.rho2 * W
        U, s, Vt, g = self.eigen(W)
        eta = self.rho2 / self.rho1
        c = self.rho1 * eta * (1.0 + eta)
        value = c * float(np.sum(s**2 / (eta + g)))
        grad: FloatArray = (U * (2.0 * c * s / (eta + g))) @ Vt
        return value, grad

    def relationship(self, W: FloatArray) -> FloatArray:
        """The optimal task-relationship matrix ``M`` (n_tasks, n_tasks) at ``W``."""
        T = W.shape[1]
        if self.rho1 == 0.0:
            uniform: FloatArray = np.eye(T) * (self.k / T)
            return uniform
        evals, V = np.linalg.eigh(W.T @ W)
        order = np.argsort(evals)[::-1]
        sigma = np.sqrt(np.maximum(evals[order], 0.0))
        # singular values below round-off of the largest are null directions
        sigma[sigma <= sigma.max(initial=0.0) * 1e-12] = 0.0
        g = cluster_eigenvalues(sigma, self.rho2 / self.rho1, self.k, T)
        V = V[:, order]
        M: FloatArray = (V * g) @ V.T
        return M

    def nonsmooth_value(self, W: FloatArray) -> float:
        return 0.0

    def prox(self, W: FloatArray, step: float) -> FloatArray:
        return W
