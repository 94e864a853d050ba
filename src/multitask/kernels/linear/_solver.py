"""Accelerated proximal gradient (FISTA with backtracking and adaptive restart), shared by all methods (private).

Minimizes ``F(V) = f(V) + g(V)`` with ``f`` smooth (a data-fit term plus any smooth penalty) and ``g``
proximable. References: Beck & Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear
inverse problems", SIAM J. Imaging Sciences 2(1), 2009, https://doi.org/10.1137/080716542 (FISTA and its
backtracking rule); O'Donoghue & Candès, "Adaptive restart for accelerated gradient schemes",
Foundations of Computational Mathematics 15, 2015, https://doi.org/10.1007/s10208-013-9150-3 (the
gradient restart); Ji & Ye, ICML 2009, https://doi.org/10.1145/1553374.1553434 (the same scheme for
trace-norm problems).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SolverResult:
    """Solution, iterations used, whether the stopping rule was met, and the final step constant."""

    x: FloatArray
    n_iter: int
    converged: bool
    lipschitz: float


def fista(
    value_grad: Callable[[FloatArray], tuple[float, FloatArray]],
    value: Callable[[FloatArray], float],
    prox: Callable[[FloatArray, float], FloatArray],
    x0: FloatArray,
    lipschitz: float,
    *,
    tol: float,
    max_iter: int,
    backtracking: bool = True,
) -> SolverResult:
    """FISTA with Beck-Teboulle backtracking and O'Donoghue-Candès gradient restart.

    Parameters
    ----------
    value_grad, value : callable
        The smooth part ``f``: value and gradient, and value alone.
    prox : callable
        ``prox(v, step)`` = ``argmin_x step * g(x) + ||x - v||^2 / 2``.
    x0 : ndarray
        Starting point (a warm start, or zeros).
    lipschitz : float
        Initial estimate of the Lipschitz constant of ``grad f``; doubled whenever the sufficient
        decrease test ``f(x) <= f(y) + <grad f(y), x - y> + L/2 ||x - y||^2`` fails.
    backtracking : bool
        Run that test. ``False`` when ``lipschitz`` is a proven upper bound: then ``value`` is never
        called and an iteration costs one gradient and one proximal step.
    tol : float
        Stop when the proximal-gradient step is small relative to the iterate:
        ``||x_k - y_k|| <= tol * ||x_k||`` (``2 L ||x_k - y_k||`` bounds the distance from 0 to the
        subdifferential of ``F`` at ``x_k``).
    max_iter : int
        Maximum number of iterations.

    Returns
    -------
    SolverResult
    """
    L = max(float(lipschitz), 1e-12)
    x = x0.copy()
    y = x.copy()
    t = 1.0
    fy, gy = value_grad(y)
    for it in range(1, max_iter + 1):
        while True:
            x_new = prox(y - gy / L, 1.0 / L)
            step = x_new - y
            if not backtracking:
                break
            f_new = value(x_new)
            bound = fy + float(np.vdot(gy, step)) + 0.5 * L * float(np.vdot(step, step))
            # a relative slack of 1e-12 keeps round-off from inflating L near convergence
            if f_new <= bound + 1e-12 * max(abs(fy), abs(f_new)):
                break
            L *= 2.0
        moved = x_new - x
        converged = math.sqrt(float(np.vdot(step, step))) <= tol * float(np.linalg.norm(x_new))
        if converged:
            return SolverResult(x_new, it, True, L)
        if float(np.vdot(-step, moved)) > 0.0:  # momentum points uphill: restart
            t = 1.0
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * moved
        x, t = x_new, t_new
        fy, gy = value_grad(y)
    return SolverResult(x, max_iter, False, L)
