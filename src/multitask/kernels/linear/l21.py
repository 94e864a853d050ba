"""L2,1-regularized multi-task learning: joint feature selection across tasks."""

from __future__ import annotations

from ._base import _AlphaMaxMixin, _ClassifierBase, _RegressorBase
from ._checks import check_real
from ._prox import L21Penalty, Penalty


class _L21Mixin(_AlphaMaxMixin):
    alpha: float

    _dual_norm = staticmethod(L21Penalty.dual_norm)

    def _make_penalty(self, n_tasks: int, **overrides: float) -> Penalty:
        return L21Penalty(check_real(overrides.get("alpha", self.alpha), "alpha"))


class L21Regressor(_L21Mixin, _RegressorBase):
    r"""Multi-task least squares with an L2,1 penalty: each feature is used by all tasks or by none.

    Minimizes over ``W`` (n_features, n_tasks) and per-task intercepts ``b``::

        1 / (2 n) * sum_{(i, t) observed} (x_i . w_t + b_t - y_it)^2  +  alpha * sum_j ||W[j, :]||_2

    where ``n`` counts the rows with at least one observed output (``n_samples`` for a complete ``Y``).

    The penalty (the group lasso with one group per feature, across tasks) is the convex multi-task feature
    selection of Argyriou, Evgeniou & Pontil [1]_ and Liu, Ji & Ye [2]_. On complete ``Y`` it is exactly
    scikit-learn's :class:`~sklearn.linear_model.MultiTaskLasso` objective (same ``alpha``, same scaling);
    unlike it, ``Y`` may have missing outputs (NaN), which are left out of the loss without dropping rows.
    Solved by accelerated proximal gradient [3]_ with row-wise group soft-thresholding as proximal step;
    intercepts are eliminated exactly (per-task centring over observed rows).

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
        One row per task (also for a 1-D ``y``); whole columns (features) are zero.
    intercept_ : ndarray of shape (n_tasks,)
    n_iter_ : int
        Iterations used.
    n_tasks_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    See Also
    --------
    L21Classifier : the logistic version.
    sklearn.linear_model.MultiTaskLasso : the same objective on complete ``Y`` (coordinate descent).

    References
    ----------
    .. [1] A. Argyriou, T. Evgeniou and M. Pontil, "Convex multi-task feature learning", Machine Learning
           73(3), 2008. https://doi.org/10.1007/s10994-007-5040-8
    .. [2] J. Liu, S. Ji and J. Ye, "Multi-task feature learning via efficient l2,1-norm minimization",
           UAI 2009. https://arxiv.org/abs/1205.2631
    .. [3] A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
           problems", SIAM Journal on Imaging Sciences 2(1), 2009. https://doi.org/10.1137/080716542

    Examples
    --------
    >>> import numpy as np
    >>> from multitask.kernels.linear import L21Regressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 10))
    >>> W = np.zeros((10, 3)); W[:2] = rng.standard_normal((2, 3))  # 2 relevant features
    >>> Y = X @ W + 0.1 * rng.standard_normal((100, 3))
    >>> Y[rng.random(Y.shape) < 0.2] = np.nan
    >>> np.flatnonzero(np.abs(L21Regressor(alpha=0.1).fit(X, Y).coef_).sum(axis=0))
    array([0, 1])
    """

    def __init__(
        self, alpha: float = 0.1, *, tol: float = 1e-8, max_iter: int = 10_000, warm_start: bool = False
    ) -> None:
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start


class L21Classifier(_L21Mixin, _ClassifierBase):
    r"""Multi-task logistic regression with an L2,1 penalty (joint feature selection).

    Minimizes over ``W`` (n_features, n_tasks) and per-task intercepts ``b``::

        1 / n * sum_{(i, t) observed} [log(1 + exp(z_it)) - y_it z_it]  +  alpha * sum_j ||W[j, :]||_2

    with ``z_it = x_i . w_t + b_t``, ``y_it`` in {0, 1} and ``n`` the number of rows with at least one observed
    output (``n_samples`` for a complete ``Y``) [1]_ [2]_, by accelerated proximal gradient [3]_.

    Labels: a 1-D ``y`` is one binary task with any two labels; a 2-D ``Y`` holds one 0/1 task per column,
    NaN where a label is missing.

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
    n_iter_ : int
    n_tasks_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    References
    ----------
    .. [1] A. Argyriou, T. Evgeniou and M. Pontil, "Convex multi-task feature learning", Machine Learning
           73(3), 2008. https://doi.org/10.1007/s10994-007-5040-8
    .. [2] J. Liu, S. Ji and J. Ye, "Multi-task feature learning via efficient l2,1-norm minimization",
           UAI 2009. https://arxiv.org/abs/1205.2631
    .. [3] A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
           problems", SIAM Journal on Imaging Sciences 2(1), 2009. https://doi.org/10.1137/080716542

    Examples
    --------
    >>> import numpy as np
    >>> from multitask.kernels.linear import L21Classifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 6))
    >>> Y = (X[:, :2] @ rng.standard_normal((2, 3)) > 0).astype(float)
    >>> clf = L21Classifier(alpha=0.02).fit(X, Y)
    >>> clf.predict(X[:3]).shape
    (3, 3)
    """

    def __init__(
        self, alpha: float = 0.01, *, tol: float = 1e-8, max_iter: int = 10_000, warm_start: bool = False
    ) -> None:
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
