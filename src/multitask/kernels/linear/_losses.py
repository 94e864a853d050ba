"""Data-fit terms of the linear multi-task estimators, over observed outputs only (private).

Both losses are scaled like scikit-learn's linear models: by ``1 / n`` (``1 / (2 n)`` for the squared
loss, as in ``Lasso`` and ``MultiTaskLasso``), summing over the observed entries of ``Y`` only; a missing
output contributes nothing and no row is dropped. ``n`` counts the rows with at least one observed
output: all rows when ``Y`` is complete, and rows whose outputs are all missing change nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def _mask_patterns(mask: BoolArray) -> tuple[NDArray[np.intp], list[NDArray[np.intp]]]:
    """Group the task columns of ``mask`` by identical observation pattern.

    Returns ``pattern_of_task`` (n_tasks,) and, per pattern, the observed row indices.
    """
    packed = np.packbits(mask, axis=0)  # (ceil(n/8), T)
    _, first, inverse = np.unique(packed.T, axis=0, return_index=True, return_inverse=True)
    rows = [np.flatnonzero(mask[:, t]) for t in first]
    return inverse.reshape(-1).astype(np.intp), rows


def _power_iteration(op: Callable[[FloatArray], FloatArray], shape: tuple[int, int], n_iter: int = 30) -> float:
    """Largest eigenvalue of a symmetric PSD operator on (shape)-arrays, by power iteration (a lower bound)."""
    v = np.random.default_rng(0).standard_normal(shape)
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(n_iter):
        w = op(v)
        lam = float(np.vdot(v, w))
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0
        v = w / norm
    return lam


class SquaredLoss:
    """``(1 / (2 n)) sum_t sum_{i observed in t} (x_i . w_t + b_t - y_it)^2`` with ``b`` minimized out.

    For fixed ``W`` the optimal intercept of task ``t`` is ``mean_obs(y_t) - mean_obs(x) . w_t`` over
    the task's observed rows, so the loss is exactly a function of ``W`` alone: per-task centred least
    squares. Two equivalent evaluations:

    - ``gram``: per observation pattern (identical missing-value columns share one), the centred Gram
      matrix ``A = Xc^T Xc / n`` and ``B[:, t] = Xc^T yc_t / n``; an evaluation then costs
      ``O(n_tasks d^2)`` whatever ``n``. Used when the Gram matrices together are no larger than ``X``.
    - ``dense``: masked residuals ``X W - Y`` (``O(n d n_tasks)``), for ``d`` large against ``n``.

    The variable is ``W`` of shape (n_features, n_tasks).
    """

    def __init__(self, X: FloatArray, Y: FloatArray, mask: BoolArray, *, mode: str = "auto") -> None:
        n, d = int(mask.any(axis=1).sum()), int(X.shape[1])
        T = int(Y.shape[1])
        self.n = n
        counts = mask.sum(axis=0).astype(np.float64)
        self.x_mean: FloatArray = (X.T @ mask) / counts  # (d, T)
        self.y_mean: FloatArray = (Y * mask).sum(axis=0) / counts  # (T,)
        pattern_of_task, rows = _mask_patterns(mask)
        n_blocks = 1 if len(rows) == 1 else T
        if mode == "auto":
            mode = "gram" if n_blocks * d <= X.shape[0] else "dense"
        self.mode = mode
        self.var_shape = (d, T)
        self._lipschitz: float | None = None
        if mode == "gram":
            A = np.empty((len(rows), d, d))
            for p, r in enumerate(rows):
                Xc = X[r] - X[r].mean(axis=0)
                A[p] = Xc.T @ Xc / n
            yc = np.where(mask, Y - self.y_mean, 0.0)
            # B[:, t] = Xc_t^T yc_t / n; yc_t sums to 0 over observed rows, so X^T yc_t = Xc_t^T yc_t
            self.B: FloatArray = X.T @ yc / n
            self.const: float = float(np.vdot(yc, yc)) / (2 * n)
            self.A_pattern: FloatArray = A  # (n_patterns, d, d)
            self.pattern_of_task = pattern_of_task
            self.A_task: FloatArray = A if len(rows) == 1 else A[pattern_of_task]
        elif mode == "dense":
            self.X = X
            self.Y = Y
            self.mask = mask
        else:
            raise ValueError(f"mode must be 'auto', 'gram' or 'dense', got {mode!r}.")

    def _gram_apply(self, W: FloatArray) -> FloatArray:
        if self.A_task.shape[0] == 1:
            out: FloatArray = self.A_task[0] @ W
            return out
        out2: FloatArray = np.einsum("tij,jt->it", self.A_task, W)
        return out2

    def _residual(self, W: FloatArray) -> FloatArray:
        R = self.X @ W - self.Y
        R -= (self.x_mean * W).sum(axis=0) - self.y_mean
        R *= self.mask
        return R

    def value(self, W: FloatArray) -> float:
        if self.mode == "gram":
            AW = self._gram_apply(W)
            return 0.5 * float(np.vdot(W, AW)) - float(np.vdot(self.B, W)) + self.const
        R = self._residual(W)
        return float(np.vdot(R, R)) / (2 * self.n)

    def value_grad(self, W: FloatArray) -> tuple[float, FloatArray]:
        if self.mode == "gram":
            AW = self._gram_apply(W)
            value = 0.5 * float(np.vdot(W, AW)) - float(np.vdot(self.B, W)) + self.const
            return value, AW - self.B
        R = self._residual(W)
        return float(np.vdot(R, R)) / (2 * self.n), self.X.T @ R / self.n

    def hessian_apply(self, V: FloatArray) -> FloatArray:
        """The (constant) Hessian applied to ``V``: block diagonal, one block per task."""
        if self.mode == "gram":
            return self._gram_apply(V)
        R = self.X @ V - (self.x_mean * V).sum(axis=0)
        R *= self.mask
        out: FloatArray = self.X.T @ R / self.n
        return out

    @property
    def lipschitz_exact(self) -> bool:
        """Whether :meth:`lipschitz` is exact (then the solver needs no line search)."""
        return self.mode == "gram"

    def lipschitz(self) -> float:
        """Largest eigenvalue of the (constant, block-diagonal) Hessian, cached.

        Exact in ``gram`` mode (the largest eigenvalue over the per-pattern Gram matrices); a power-iteration
        estimate in ``dense`` mode, which the solver's backtracking corrects if it is low.
        """
        if self._lipschitz is None:
            if self.mode == "gram":
                self._lipschitz = float(np.linalg.eigvalsh(self.A_pattern)[:, -1].max())
            else:
                self._lipschitz = _power_iteration(self.hessian_apply, self.var_shape)
        return self._lipschitz

    def coef(self, V: FloatArray) -> FloatArray:
        return V

    def intercept(self, V: FloatArray) -> FloatArray:
        """Optimal intercepts for ``W = V``."""
        out: FloatArray = self.y_mean - (self.x_mean * V).sum(axis=0)
        return out

    def initial(self, W: FloatArray | None, b: FloatArray | None) -> FloatArray:
        return np.zeros(self.var_shape) if W is None else W.copy()


class LogisticLoss:
    """``(1 / n) sum_t sum_{i observed in t} log(1 + exp(z_it)) - y_it z_it`` with ``z = X W + b``, ``y`` in {0, 1}.

    The variable ``V`` stacks ``W`` (n_features, n_tasks) over centred intercepts ``c`` (last row): the
    model is written ``z_it = (x_i - mu_t) . w_t + c_t`` with ``mu_t`` the mean of ``x`` over task ``t``'s
    observed rows, so ``b_t = c_t - mu_t . w_t``. This exact reparametrization decouples the unpenalized
    intercepts from ``W`` (an uncentred ``X`` otherwise makes the problem badly conditioned).
    """

    def __init__(self, X: FloatArray, Y: FloatArray, mask: BoolArray) -> None:
        self.X = X
        self.Y = Y
        self.mask = mask
        self.n, self.d = int(mask.any(axis=1).sum()), int(X.shape[1])
        self.var_shape = (self.d + 1, Y.shape[1])
        self.x_mean: FloatArray = (X.T @ mask) / mask.sum(axis=0)  # (d, T)
        self._lipschitz: float | None = None

    def _z(self, V: FloatArray) -> FloatArray:
        W = V[:-1]
        out: FloatArray = self.X @ W + (V[-1] - (self.x_mean * W).sum(axis=0))
        return out

    def _adjoint(self, Gz: FloatArray) -> FloatArray:
        """Transpose of ``V -> z``: ``[X^T Gz - mu * colsum(Gz); colsum(Gz)]``."""
        col = Gz.sum(axis=0)
        out: FloatArray = np.vstack((self.X.T @ Gz - self.x_mean * col, col))
        return out

    def value(self, V: FloatArray) -> float:
        z = self._z(V)
        return float(np.sum(np.where(self.mask, np.logaddexp(0.0, z) - self.Y * z, 0.0))) / self.n

    def value_grad(self, V: FloatArray) -> tuple[float, FloatArray]:
        z = self._z(V)
        value = float(np.sum(np.where(self.mask, np.logaddexp(0.0, z) - self.Y * z, 0.0))) / self.n
        Gz = np.where(self.mask, expit(z) - self.Y, 0.0) / self.n
        return value, self._adjoint(Gz)

    def hessian_bound_apply(self, V: FloatArray) -> FloatArray:
        """``J^T (mask * (J V)) / (4 n)`` for the linear map ``J: V -> z``: dominates the Hessian (sigmoid' <= 1/4)."""
        return self._adjoint(self._z(V) * self.mask) / (4.0 * self.n)

    lipschitz_exact = False

    def lipschitz(self) -> float:
        """Bound from ``hessian_bound_apply`` (power iteration, cached)."""
        if self._lipschitz is None:
            self._lipschitz = _power_iteration(self.hessian_bound_apply, self.var_shape)
        return self._lipschitz

    def coef(self, V: FloatArray) -> FloatArray:
        return V[:-1]

    def intercept(self, V: FloatArray) -> FloatArray:
        out: FloatArray = V[-1] - (self.x_mean * V[:-1]).sum(axis=0)
        return out

    def initial(self, W: FloatArray | None, b: FloatArray | None) -> FloatArray:
        """Warm start, else ``W = 0`` with each task's intercept at the log-odds of its observed labels."""
        if W is not None and b is not None:
            return np.vstack((W, b + (self.x_mean * W).sum(axis=0)))
        counts = self.mask.sum(axis=0)
        p = np.clip((self.Y * self.mask).sum(axis=0) / counts, 1e-12, 1 - 1e-12)
        return np.vstack((np.zeros((self.d, self.Y.shape[1])), np.log(p / (1 - p))))
