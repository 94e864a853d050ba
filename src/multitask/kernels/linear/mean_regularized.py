"""Mean-regularized multi-task learning (Evgeniou & Pontil, KDD 2004): every task is pulled toward the mean task."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from ._base import FloatArray, Loss, _ClassifierBase, _RegressorBase, solve_apg
from ._checks import Targets, check_real
from ._losses import SquaredLoss
from ._prox import MeanRegularizedPenalty, Penalty


class _MeanRegularizedMixin:
    alpha: float
    ridge: float

    def _make_penalty(self, n_tasks: int, **overrides: float) -> Penalty:
        lam1 = check_real(overrides.get("alpha", self.alpha), "alpha")
        lam2 = check_real(self.ridge, "ridge")
        return MeanRegularizedPenalty(lam1, lam2)


class _ClosedForm:
    """Exact solution of the mean-regularized least squares problem, reusable across penalty values.

    With per-task centred Gram matrices ``A_t`` and ``B[:, t]`` (see ``SquaredLoss``), the optimality
    conditions are ``(A_t + c I) w_t - (2 lam1 / T) s = B_t`` for every task, ``c = 2 (lam1 + lam2)``,
    ``s = sum_t w_t``. With ``H_t = (A_t + c I)^{-1}``: ``w_t = H_t (B_t + (2 lam1 / T) s)`` and summing,
    ``(I - (2 lam1 / T) sum_t H_t) s = sum_t H_t B_t``: one ``d x d`` solve. ``A_t`` is eigen-decomposed
    once per observation pattern (tasks with identical missing values share it), so a path over
    ``lam1`` costs ``O(T d^2 + d^3)`` per value. ``c = 0`` (no penalty) uses the pseudo-inverse.
    """

    def __init__(self, loss: SquaredLoss) -> None:
        self.loss = loss
        self.evals, self.evecs = np.linalg.eigh(loss.A_pattern)  # (P, d), (P, d, d)
        self.tasks_of_pattern = [np.flatnonzero(loss.pattern_of_task == p) for p in range(len(self.evals))]
        # Q_p^T B_t for every task, in the eigenbasis of its pattern
        self.QtB = [self.evecs[p].T @ loss.B[:, idx] for p, idx in enumerate(self.tasks_of_pattern)]

    def _inverse_spectrum(self, p: int, c: float) -> FloatArray:
        lam = self.evals[p] + c
        cutoff = max(float(np.abs(lam).max(initial=0.0)), 1e-300) * lam.size * np.finfo(float).eps
        out: FloatArray = np.where(lam > cutoff, 1.0 / np.where(lam > cutoff, lam, 1.0), 0.0)
        return out

    def solve(self, lam1: float, lam2: float) -> FloatArray:
        d, T = self.loss.var_shape
        c = 2.0 * (lam1 + lam2)
        W = np.empty((d, T))
        H_sum = np.zeros((d, d))
        for p, idx in enumerate(self.tasks_of_pattern):
            inv = self._inverse_spectrum(p, c)
            Q = self.evecs[p]
            W[:, idx] = Q @ (inv[:, None] * self.QtB[p])  # H_t B_t
            if lam1 > 0:
                H_sum += idx.size * (Q * inv) @ Q.T
        if lam1 > 0:
            kappa = 2.0 * lam1 / T
            system = np.eye(d) - kappa * H_sum
            rhs = W.sum(axis=1)
            # with lam2 > 0 the eigenvalues of `system` are >= lam2 / (lam1 + lam2) > 0; with lam2 = 0 it is
            # singular only along directions that no task observes, where any solution is optimal
            s = scipy.linalg.solve(system, rhs, assume_a="sym") if lam2 > 0 else scipy.linalg.lstsq(system, rhs)[0]
            for p, idx in enumerate(self.tasks_of_pattern):
                inv = self._inverse_spectrum(p, c)
                Q = self.evecs[p]
                W[:, idx] += (kappa * (Q @ (inv * (Q.T @ s))))[:, None]
        return W


class MeanRegularizedRegressor(_MeanRegularizedMixin, _RegressorBase):
    r"""Mean-regularized multi-task least squares (Evgeniou & Pontil 2004), solved in closed form.

    Minimizes over ``W`` (n_features, n_tasks) and per-task intercepts ``b``::

        1 / (2 n) * sum_{(i, t) observed} (x_i . w_t + b_t - y_it)^2
            + alpha * sum_t ||w_t - w_bar||^2 + ridge * sum_t ||w_t||^2

    where ``n`` counts the rows with at least one observed output (``n_samples`` for a complete ``Y``) and
    ``w_bar`` is the mean of the task vectors. This is the regularized MTL of Evgeniou & Pontil [1]_: they write ``w_t = w_0 + v_t`` and
    penalize ``||v_t||^2`` and ``||w_0||^2``; minimizing over ``w_0`` leaves, as here, a positive combination
    of ``sum_t ||w_t - w_bar||^2`` and ``||w_bar||^2`` (ours is ``(alpha + ridge) sum_t ||w_t - w_bar||^2 +
    ridge * n_tasks * ||w_bar||^2``). ``alpha = 0`` is independent ridge regression per task;
    ``alpha -> inf`` is one shared coefficient vector (with per-task intercepts).

    Solvers: ``"closed_form"`` solves the optimality conditions exactly — one eigendecomposition of the
    ``d x d`` centred Gram matrix per missing-value pattern and one ``d x d`` linear solve, whatever the
    missing values; ``"apg"`` runs accelerated gradient (FISTA [2]_) on the same objective;
    ``"auto"`` picks the closed form unless the Gram matrices would together be larger than ``X``.

    Parameters
    ----------
    alpha : float, default=0.1
        ``lambda_1`` >= 0: pull of every task toward the mean task.
    ridge : float, default=0.01
        ``lambda_2`` >= 0: ridge on every task.
    solver : {"auto", "closed_form", "apg"}, default="auto"
        See above.
    tol : float, default=1e-8
        Relative gradient step at which ``"apg"`` stops (unused by the closed form).
    max_iter : int, default=10_000
        Maximum iterations of ``"apg"`` (``ConvergenceWarning`` when reached).
    warm_start : bool, default=False
        ``"apg"`` starts from the previous ``coef_``; the closed form needs no starting point.

    Attributes
    ----------
    coef_ : ndarray of shape (n_tasks, n_features)
    intercept_ : ndarray of shape (n_tasks,)
    solver_ : str
        The solver used.
    n_iter_ : int
        Iterations of ``"apg"``; 1 for the closed form (one direct solve).
    n_tasks_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    See Also
    --------
    MeanRegularizedClassifier : the logistic version.

    References
    ----------
    .. [1] T. Evgeniou and M. Pontil, "Regularized multi-task learning", KDD 2004.
           https://doi.org/10.1145/1014052.1014067
    .. [2] A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
           problems", SIAM Journal on Imaging Sciences 2(1), 2009. https://doi.org/10.1137/080716542

    Examples
    --------
    >>> import numpy as np
    >>> from multitask.kernels.linear import MeanRegularizedRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((300, 4))
    >>> W = rng.standard_normal((4, 1)) + 0.1 * rng.standard_normal((4, 10))  # 10 similar tasks
    >>> Y = X @ W + rng.standard_normal((300, 10))
    >>> Y[rng.random(Y.shape) < 0.8] = np.nan  # each task sees ~60 rows
    >>> MeanRegularizedRegressor(alpha=1.0).fit(X, Y).coef_.shape
    (10, 4)
    """

    def __init__(
        self,
        alpha: float = 0.1,
        ridge: float = 0.01,
        *,
        solver: str = "auto",
        tol: float = 1e-8,
        max_iter: int = 10_000,
        warm_start: bool = False,
    ) -> None:
        self.alpha = alpha
        self.ridge = ridge
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start

    def _prepare(self, X: FloatArray, targets: Targets) -> Any:
        if self.solver not in ("auto", "closed_form", "apg"):
            raise ValueError(f"solver must be 'auto', 'closed_form' or 'apg', got {self.solver!r}.")
        mode = "gram" if self.solver == "closed_form" else "auto"
        loss = SquaredLoss(X, targets.values, targets.mask, mode=mode)
        if self.solver == "apg" or loss.mode != "gram":
            return loss
        return _ClosedForm(loss)

    def _solve(
        self,
        prepared: Any,
        penalty: Penalty,
        init: tuple[FloatArray, FloatArray] | None,
        tol: float,
        max_iter: int,
    ) -> tuple[FloatArray, FloatArray, int, bool]:
        assert isinstance(penalty, MeanRegularizedPenalty)
        if isinstance(prepared, _ClosedForm):
            W = prepared.solve(penalty.lam1, penalty.lam2)
            return W, prepared.loss.intercept(W), 1, True
        loss: Loss = prepared
        x0 = loss.initial(*(init if init is not None else (None, None)))
        return solve_apg(loss, penalty, x0, tol=tol, max_iter=max_iter)

    def _set_extra_attributes(self, W: FloatArray, penalty: Penalty, prepared: Any) -> None:
        self.solver_ = "closed_form" if isinstance(prepared, _ClosedForm) else "apg"


class MeanRegularizedClassifier(_MeanRegularizedMixin, _ClassifierBase):
    r"""Mean-regularized multi-task logistic regression (Evgeniou & Pontil 2004).

    Minimizes over ``W`` (n_features, n_tasks) and per-task intercepts ``b``::

        1 / n * sum_{(i, t) observed} [log(1 + exp(z_it)) - y_it z_it]
            + alpha * sum_t ||w_t - w_bar||^2 + ridge * sum_t ||w_t||^2

    with ``z_it = x_i . w_t + b_t``, ``y_it`` in {0, 1} and ``n`` the number of rows with at least one observed
    output (``n_samples`` for a complete ``Y``) [1]_, by accelerated gradient (FISTA [2]_).
    Labels: a 1-D ``y`` is one binary task with any two labels; a 2-D ``Y`` holds one 0/1 task per column,
    NaN where a label is missing.

    Parameters
    ----------
    alpha : float, default=0.01
        ``lambda_1`` >= 0: pull of every task toward the mean task.
    ridge : float, default=0.001
        ``lambda_2`` >= 0: ridge on every task.
    tol : float, default=1e-8
        Relative gradient step at which to stop.
    max_iter : int, default=10_000
        Maximum number of iterations (``ConvergenceWarning`` when reached).
    warm_start : bool, default=False
        Start from the previous solution when refitting data with the same shape.

    Attributes
    ----------
    coef_ : ndarray of shape (n_tasks, n_features)
    intercept_ : ndarray of shape (n_tasks,)
    classes_ : ndarray
        The two labels of a 1-D ``y``, or ``array([0, 1])`` for a 2-D ``Y``.
    n_iter_ : int
    n_tasks_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    References
    ----------
    .. [1] T. Evgeniou and M. Pontil, "Regularized multi-task learning", KDD 2004.
           https://doi.org/10.1145/1014052.1014067
    .. [2] A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
           problems", SIAM Journal on Imaging Sciences 2(1), 2009. https://doi.org/10.1137/080716542
    """

    def __init__(
        self,
        alpha: float = 0.01,
        ridge: float = 0.001,
        *,
        tol: float = 1e-8,
        max_iter: int = 10_000,
        warm_start: bool = False,
    ) -> None:
        self.alpha = alpha
        self.ridge = ridge
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
