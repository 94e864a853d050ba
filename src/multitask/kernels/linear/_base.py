"""Shared machinery of the regularized linear multi-task estimators (private).

Conventions shared by every estimator of :mod:`multitask.kernels.linear`:

- ``X`` is (n_samples, n_features); ``Y`` is (n_samples, n_tasks) with NaN for a missing output, or 1-D
  for a single task (then ``predict`` returns 1-D, as in scikit-learn).
- The data-fit term sums over observed entries only, scaled by ``1 / (2 n)`` (squared loss) or ``1 / n``
  (logistic loss) as in scikit-learn's ``Lasso`` / ``MultiTaskLasso``, where ``n`` counts the rows with at
  least one observed output (``n_samples`` for a complete ``Y``).
- Each task has its own unpenalized intercept.
- ``coef_`` is (n_tasks, n_features) and ``intercept_`` is (n_tasks,), also for a single task.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.validation import check_array, check_is_fitted

from ._checks import (
    Targets,
    check_solver_params,
    validate_classification_targets,
    validate_regression_targets,
    validate_X,
)
from ._losses import LogisticLoss, SquaredLoss
from ._prox import Penalty
from ._solver import fista

FloatArray = NDArray[np.float64]
Loss = SquaredLoss | LogisticLoss


def solve_apg(
    loss: Loss, penalty: Penalty, x0: FloatArray, *, tol: float, max_iter: int
) -> tuple[FloatArray, FloatArray, int, bool]:
    """Minimize ``loss(V) + penalty(W)`` by FISTA; return ``W`` (d, T), intercepts (T,), iterations, converged."""
    d = loss.coef(x0).shape[0]

    def value_grad(V: FloatArray) -> tuple[float, FloatArray]:
        f, g = loss.value_grad(V)
        ps, pg = penalty.smooth(V[:d])
        if pg is not None:
            g[:d] += pg
        return f + ps, g

    def value(V: FloatArray) -> float:
        return loss.value(V) + penalty.smooth(V[:d])[0]

    def prox(V: FloatArray, step: float) -> FloatArray:
        if V.shape[0] == d:
            return penalty.prox(V, step)
        out = V.copy()
        out[:d] = penalty.prox(V[:d], step)
        return out

    lipschitz = loss.lipschitz() + penalty.smooth_lipschitz
    res = fista(
        value_grad, value, prox, x0, lipschitz, tol=tol, max_iter=max_iter, backtracking=not loss.lipschitz_exact
    )
    return loss.coef(res.x).copy(), loss.intercept(res.x), res.n_iter, res.converged


class _LinearMTLBase(BaseEstimator):  # type: ignore[misc]
    """Fit / path logic common to the regressors and classifiers."""

    coef_: FloatArray
    intercept_: FloatArray
    n_iter_: int
    n_tasks_: int

    _classifier: ClassVar[bool] = False
    # the regularization parameter swept by ``path`` and bounded by ``alpha_max``
    _path_param: ClassVar[str] = "alpha"

    # --- hooks for the method files --------------------------------------------------------------

    def _make_penalty(self, n_tasks: int, **overrides: float) -> Penalty:
        """Validate the hyperparameters (``overrides`` replace attributes, for ``path``) and build the penalty."""
        raise NotImplementedError

    def _prepare(self, X: FloatArray, targets: Targets) -> Any:
        """Alpha-independent precomputation (the loss object), shared by the fits of a path."""
        if self._classifier:
            return LogisticLoss(X, targets.values, targets.mask)
        return SquaredLoss(X, targets.values, targets.mask)

    def _solve(
        self,
        prepared: Any,
        penalty: Penalty,
        init: tuple[FloatArray, FloatArray] | None,
        tol: float,
        max_iter: int,
    ) -> tuple[FloatArray, FloatArray, int, bool]:
        """Fit for one penalty; return ``W`` (d, T), intercepts (T,), iterations and convergence."""
        loss: Loss = prepared
        x0 = loss.initial(*(init if init is not None else (None, None)))
        return solve_apg(loss, penalty, x0, tol=tol, max_iter=max_iter)

    def _set_extra_attributes(self, W: FloatArray, penalty: Penalty, prepared: Any) -> None:
        """Method-specific fitted attributes (e.g. ``rank_``)."""

    # --- shared ------------------------------------------------------------------------------------

    def _targets(self, Y: Any, n_samples: int) -> tuple[Targets, NDArray[Any] | None]:
        if self._classifier:
            return validate_classification_targets(Y, n_samples)
        return validate_regression_targets(Y, n_samples), None

    def _warn_not_converged(self, max_iter: int, tol: float, where: str = "") -> None:
        warnings.warn(
            f"{type(self).__name__} did not converge{where}: the proximal-gradient step was still above "
            f"tol={tol:g} after max_iter={max_iter} iterations. Increase max_iter, loosen tol, or "
            "standardize X.",
            ConvergenceWarning,
            stacklevel=3,
        )

    def fit(self, X: ArrayLike, Y: ArrayLike) -> Self:
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs (finite).
        Y : array-like of shape (n_samples, n_tasks) or (n_samples,)
            Targets, NaN where a task's output is missing. Every task needs at least one observation.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        Xv = validate_X(self, X, reset=True)
        targets, classes = self._targets(Y, Xv.shape[0])
        tol, max_iter = check_solver_params(self.tol, self.max_iter)
        n_tasks = targets.values.shape[1]
        penalty = self._make_penalty(n_tasks)
        init = None
        previous: FloatArray | None = getattr(self, "coef_", None)
        if getattr(self, "warm_start", False) and previous is not None and previous.shape == (n_tasks, Xv.shape[1]):
            init = (previous.T.copy(), np.array(self.intercept_, dtype=np.float64))
        prepared = self._prepare(Xv, targets)
        W, b, n_iter, converged = self._solve(prepared, penalty, init, tol, max_iter)
        if not converged:
            self._warn_not_converged(max_iter, tol)
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = b
        self.n_iter_ = n_iter
        self.n_tasks_ = n_tasks
        self._single_task = targets.one_d
        if classes is not None:
            self.classes_ = classes
        self._set_extra_attributes(W, penalty, prepared)
        return self

    def path(self, X: ArrayLike, Y: ArrayLike, alphas: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Coefficients along a decreasing sequence of ``alpha``, each fit warm-started from the previous one.

        The other hyperparameters are those of this estimator, which is left unfitted and unchanged.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        Y : array-like of shape (n_samples, n_tasks) or (n_samples,)
            Targets, NaN where missing.
        alphas : array-like of shape (n_alphas,)
            Values of the estimator's ``alpha``; they are sorted in decreasing order.

        Returns
        -------
        alphas : ndarray of shape (n_alphas,)
            The values used, in decreasing order.
        coefs : ndarray of shape (n_alphas, n_tasks, n_features)
            ``coef_`` at each alpha.
        intercepts : ndarray of shape (n_alphas, n_tasks)
            ``intercept_`` at each alpha.
        """
        Xv: FloatArray = check_array(X, dtype=np.float64, ensure_min_samples=1)
        targets, _ = self._targets(Y, Xv.shape[0])
        tol, max_iter = check_solver_params(self.tol, self.max_iter)
        grid = np.sort(np.asarray(alphas, dtype=np.float64).reshape(-1))[::-1]
        if grid.size == 0:
            raise ValueError("alphas is empty; pass at least one regularization value.")
        n_tasks = targets.values.shape[1]
        coefs = np.empty((grid.size, n_tasks, Xv.shape[1]))
        intercepts = np.empty((grid.size, n_tasks))
        init = None
        prepared = self._prepare(Xv, targets)
        for i, a in enumerate(grid):
            penalty = self._make_penalty(n_tasks, **{self._path_param: float(a)})
            W, b, _, converged = self._solve(prepared, penalty, init, tol, max_iter)
            if not converged:
                self._warn_not_converged(max_iter, tol, f" at {self._path_param}={a:g}")
            coefs[i], intercepts[i] = W.T, b
            init = (W, b)
        return grid, coefs, intercepts

    def _decision(self, X: ArrayLike) -> FloatArray:
        check_is_fitted(self)
        Xv = validate_X(self, X, reset=False)
        out: FloatArray = Xv @ self.coef_.T + self.intercept_
        return out


class _AlphaMaxMixin:
    """``alpha_max``: the smallest ``alpha`` for which all coefficients are zero (non-smooth penalties)."""

    _classifier: ClassVar[bool]

    @staticmethod
    def _dual_norm(G: FloatArray) -> float:
        raise NotImplementedError

    def alpha_max(self, X: ArrayLike, Y: ArrayLike) -> float:
        """Smallest ``alpha`` at which the fitted coefficients are all zero.

        At ``W = 0`` (intercepts fitted) the optimality condition reads ``dual_norm(grad f(0)) <= alpha``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        Y : array-like of shape (n_samples, n_tasks) or (n_samples,)

        Returns
        -------
        float
        """
        Xv: FloatArray = check_array(X, dtype=np.float64, ensure_min_samples=1)
        if self._classifier:
            targets = validate_classification_targets(Y, Xv.shape[0])[0]
            logistic = LogisticLoss(Xv, targets.values, targets.mask)
            G = logistic.value_grad(logistic.initial(None, None))[1][:-1]
        else:
            targets = validate_regression_targets(Y, Xv.shape[0])
            squared = SquaredLoss(Xv, targets.values, targets.mask, mode="dense")
            G = squared.value_grad(np.zeros(squared.var_shape))[1]
        return self._dual_norm(G)


def _observed_scores(Y: FloatArray, P: FloatArray, mask: NDArray[np.bool_], metric: Any, min_obs: int) -> float:
    scores = [metric(Y[mask[:, t], t], P[mask[:, t], t]) for t in range(Y.shape[1]) if mask[:, t].sum() >= min_obs]
    if not scores:
        raise ValueError(f"No task has {min_obs} or more observed outputs in Y; cannot score.")
    return float(np.mean(scores))


class _RegressorBase(RegressorMixin, _LinearMTLBase):  # type: ignore[misc]
    """Regressor API: ``predict`` and ``score`` (R² per task over observed entries, averaged)."""

    def predict(self, X: ArrayLike) -> FloatArray:
        """Predict every task.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_tasks), or (n_samples,) when fitted on a 1-D ``y``
        """
        out = self._decision(X)
        return out[:, 0] if self._single_task else out

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """R² of each task over its observed entries, averaged uniformly over tasks (NaN = missing).

        Tasks with fewer than two observed outputs in ``Y`` are skipped. With a complete 2-D ``Y``
        this equals ``sklearn.metrics.r2_score(Y, predict(X))``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples, n_tasks) or (n_samples,)
            True outputs, NaN where missing (named ``y`` as scikit-learn's scorers pass it).
        sample_weight : None
            Not supported; must be None.

        Returns
        -------
        float
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by score; pass sample_weight=None.")
        P = self._decision(X)
        Yv: FloatArray = check_array(y, ensure_2d=False, dtype=np.float64, ensure_all_finite="allow-nan")
        Y2 = Yv.reshape(-1, 1) if Yv.ndim == 1 else Yv
        if Y2.shape != P.shape:
            raise ValueError(
                f"Y has shape {Yv.shape} but the model predicts {P.shape}; pass Y with one column per task."
            )
        mask = ~np.isnan(Y2)
        return _observed_scores(Y2, P, mask, r2_score, 2)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


class _ClassifierBase(ClassifierMixin, _LinearMTLBase):  # type: ignore[misc]
    """Binary classifier per task.

    Contract: a 1-D ``y`` is one binary task with any two labels (``classes_`` holds them, the second is
    positive); ``predict`` returns labels, ``predict_proba`` (n_samples, 2). A 2-D ``Y`` has one 0/1 task
    per column with NaN for missing labels; ``classes_`` is ``array([0, 1])``, ``predict`` returns
    (n_samples, n_tasks) integers, ``predict_proba`` and ``decision_function`` (n_samples, n_tasks)
    with the probability / log-odds of label 1 (the convention of scikit-learn's multilabel
    ``MLPClassifier``).
    """

    _classifier = True

    def decision_function(self, X: ArrayLike) -> FloatArray:
        """Log-odds of the positive label: (n_samples,) for 1-D ``y``, else (n_samples, n_tasks).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray
        """
        Z = self._decision(X)
        return Z[:, 0] if self._single_task else Z

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Class probabilities: (n_samples, 2) for 1-D ``y``, else P(label 1) of shape (n_samples, n_tasks).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray
        """
        Z = self._decision(X)
        if self._single_task:
            z = Z[:, 0]
            return np.column_stack((expit(-z), expit(z)))  # expit(-z), not 1 - expit(z): no cancellation
        out: FloatArray = expit(Z)
        return out

    def predict_log_proba(self, X: ArrayLike) -> FloatArray:
        """Logarithm of :meth:`predict_proba`, computed stably.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray
        """
        Z = self._decision(X)
        if self._single_task:
            z = Z[:, 0]
            return np.column_stack((-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)))
        out: FloatArray = -np.logaddexp(0.0, -Z)
        return out

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Predicted labels: ``classes_`` entries for 1-D ``y``, else 0/1 integers (n_samples, n_tasks).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray
        """
        Z = self._decision(X)
        if self._single_task:
            out: NDArray[Any] = self.classes_[(Z[:, 0] > 0).astype(np.intp)]
            return out
        return (Z > 0).astype(np.int64)

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
        """Accuracy of each task over its observed labels, averaged uniformly over tasks (NaN = missing).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples, n_tasks) or (n_samples,)
            True outputs, NaN where missing (named ``y`` as scikit-learn's scorers pass it).
        sample_weight : None
            Not supported; must be None.

        Returns
        -------
        float
        """
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported by score; pass sample_weight=None.")
        pred = self.predict(X)
        if self._single_task:
            y1 = np.asarray(y).reshape(-1)
            keep = ~np.isnan(y1) if y1.dtype.kind in "fc" else np.ones(y1.shape[0], dtype=bool)
            return float(accuracy_score(y1[keep], pred[keep]))
        Yv: FloatArray = check_array(y, dtype=np.float64, ensure_all_finite="allow-nan")
        if Yv.shape != pred.shape:
            raise ValueError(f"Y has shape {Yv.shape} but the model predicts {pred.shape}; pass one column per task.")
        return _observed_scores(Yv, pred.astype(np.float64), ~np.isnan(Yv), accuracy_score, 1)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.classifier_tags.multi_class = False
        tags.classifier_tags.multi_label = True
        return tags
