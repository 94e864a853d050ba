"""Trace-norm (nuclear-norm) regularized multi-task learning: tasks share a low-dimensional subspace."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import FloatArray, _AlphaMaxMixin, _ClassifierBase, _RegressorBase
from ._checks import check_real
from ._prox import Penalty, TraceNormPenalty


class _TraceNormMixin(_AlphaMaxMixin):
    alpha: float

    _dual_norm = staticmethod(TraceNormPenalty.dual_norm)

    def _make_penalty(self, n_tasks: int, **overrides: float) -> Penalty:
        return TraceNormPenalty(check_real(overrides.get("alpha", self.alpha), "alpha"))

    def _set_extra_attributes(self, W: FloatArray, penalty: Penalty, prepared: Any) -> None:
        s = np.linalg.svd(W, compute_uv=False)
        self.rank_ = int(np.sum(s > s.max(initial=0.0) * 1e-10))


class TraceNormRegressor(_TraceNormMixin, _RegressorBase):
    r"""Multi-task least squares with a trace-norm (nuclear-norm) penalty on the coefficient matrix.

    Minimizes over ``W`` (n_features, n_tasks) and per-task intercepts ``b``::

        1 / (2 n) * sum_{(i, t) observed} (x_i . w_t + b_t - y_it)^2  +  alpha * ||W||_*

    where ``n`` counts the rows with at least one observed output (``n_samples`` for a complete ``Y``).

    ``||W||_*`` is the sum of singular values. The penalty is the convex envelope of rank: it pulls
    the task vectors ``w_t`` into a shared low-dimensional subspace. Solved by accelerated proximal
    gradient (FISTA with backtracking and adaptive restart) whose proximal step is singular value
    thresholding [1]_ [3]_; intercepts are eliminated exactly (per-task centring over observed rows).

    Parameters
    ----------
    alpha : float, default=0.1
        Penalty strength, >= 0. ``alpha >= alpha_max(X, Y)`` gives ``W = 0``.
    tol : float, default=1e-8
        Stop when the proximal-gradient step is below ``tol`` times the norm of the iterate.
    max_iter : int, default=10_000
        Maximum number of iterations; a ``ConvergenceWarning`` is raised when it is reached.
    warm_start : bool, default=False
        Start from the previous ``coef_`` when refitting data with the same shape.

    Attributes
    ----------
    coef_ : ndarray of shape (n_tasks, n_features)
        One row per task (also for a 1-D ``y``).
    intercept_ : ndarray of shape (n_tasks,)
    rank_ : int
        Rank of ``coef_`` (singular values above 1e-10 of the largest).
    n_iter_ : int
        Iterations used.
    n_tasks_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    See Also
    --------
    TraceNormClassifier : the logistic version.
    L21Regressor : shared feature selection instead of a shared subspace.

    References
    ----------
    .. [1] S. Ji and J. Ye, "An accelerated gradient method for trace norm minimization", ICML 2009.
           https://doi.org/10.1145/1553374.1553434
    .. [2] T. K. Pong, P. Tseng, S. Ji and J. Ye, "Trace norm regularization: reformulations, algorithms,
           and multi-task learning", SIAM Journal on Optimization 20(6), 2010.
           https://doi.org/10.1137/090763184
    .. [3] A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
           problems", SIAM Journal on Imaging Sciences 2(1), 2009. https://doi.org/10.1137/080716542

    Examples
    --------
    >>> import numpy as np
    >>> from multitask.kernels.linear import TraceNormRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 5))
    >>> Y = X @ rng.standard_normal((5, 1)) @ rng.standard_normal((1, 4))  # rank-1 task matrix
    >>> Y[rng.random(Y.shape) < 0.2] = np.nan  # 20% missing outputs
    >>> TraceNormRegressor(alpha=0.05).fit(X, Y).rank_
    1
    """

    def __init__(
        self, alpha: float = 0.1, *, tol: float = 1e-8, max_iter: int = 10_000, warm_start: bool = False
    ) -> None:
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start


class TraceNormClassifier(_TraceNormMixin, _ClassifierBase):
    r"""Multi-task logistic regression with a trace-norm (nuclear-norm) penalty.

    Minimizes over ``W`` (n_features, n_tasks) and per-task intercepts ``b``::

        1 / n * sum_{(i, t) observed} [log(1 + exp(z_it)) - y_it z_it]  +  alpha * ||W||_*

    with ``z_it = x_i . w_t + b_t``, ``y_it`` in {0, 1} and ``n`` the number of rows with at least one observed
    output (``n_samples`` for a complete ``Y``), by accelerated proximal gradient with singular
    value thresholding [1]_ [3]_ (the intercepts are unpenalized variables of the same iteration).

    Labels: a 1-D ``y`` is one binary task with any two labels; a 2-D ``Y`` holds one 0/1 task per column,
    NaN where a label is missing. See :class:`~multitask.kernels.linear.TraceNormRegressor` for the
    other conventions.

    Parameters
    ----------
    alpha : float, default=0.01
        Penalty strength, >= 0.
    tol : float, default=1e-8
        Relative proximal-gradient step at which to stop.
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
    rank_ : int
    n_iter_ : int
    n_tasks_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    References
    ----------
    .. [1] S. Ji and J. Ye, "An accelerated gradient method for trace norm minimization", ICML 2009.
           https://doi.org/10.1145/1553374.1553434
    .. [2] T. K. Pong, P. Tseng, S. Ji and J. Ye, "Trace norm regularization: reformulations, algorithms,
           and multi-task learning", SIAM Journal on Optimization 20(6), 2010.
           https://doi.org/10.1137/090763184
    .. [3] A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
           problems", SIAM Journal on Imaging Sciences 2(1), 2009. https://doi.org/10.1137/080716542

    Examples
    --------
    >>> import numpy as np
    >>> from multitask.kernels.linear import TraceNormClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5))
    >>> Y = (X @ rng.standard_normal((5, 3)) > 0).astype(float)
    >>> Y[rng.random(Y.shape) < 0.1] = np.nan
    >>> TraceNormClassifier(alpha=0.01).fit(X, Y).predict_proba(X[:2]).shape
    (2, 3)
    """

    def __init__(
        self, alpha: float = 0.01, *, tol: float = 1e-8, max_iter: int = 10_000, warm_start: bool = False
    ) -> None:
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
