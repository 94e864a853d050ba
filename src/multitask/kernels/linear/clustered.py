"""Clustered multi-task learning: the convex relaxation of Zhou, Chen & Ye (NeurIPS 2011)."""

from __future__ import annotations

from typing import Any

from ._base import FloatArray, _ClassifierBase, _RegressorBase
from ._checks import check_real
from ._prox import ClusteredPenalty, Penalty


class _ClusteredMixin:
    alpha: float
    ridge: float
    n_clusters: float

    def _make_penalty(self, n_tasks: int, **overrides: float) -> Penalty:
        rho1 = check_real(overrides.get("alpha", self.alpha), "alpha")
        rho2 = check_real(self.ridge, "ridge")
        if rho1 > 0 and rho2 == 0:
            raise ValueError(
                f"ridge must be > 0 when alpha > 0 (eta = ridge / alpha must be positive in the convex "
                f"relaxation), got ridge={self.ridge!r} with alpha={rho1:g}; pass e.g. ridge=0.01, or alpha=0 "
                "for plain ridge."
            )
        k = check_real(self.n_clusters, "n_clusters", strict=True, example=2)
        return ClusteredPenalty(rho1, rho2, k, n_tasks)

    def _set_extra_attributes(self, W: FloatArray, penalty: Any, prepared: Any) -> None:
        self.task_relationship_ = penalty.relationship(W)


class ClusteredRegressor(_ClusteredMixin, _RegressorBase):
    r"""Clustered multi-task least squares (convex relaxation of Zhou, Chen & Ye 2011).

    Minimizes over ``W`` (n_features, n_tasks) and per-task intercepts ``b``::

        1 / (2 n) * sum_{(i, t) observed} (x_i . w_t + b_t - y_it)^2
            + alpha * eta * (1 + eta) * min_{M in M_k} tr(W (eta I + M)^{-1} W^T),   eta = ridge / alpha

    where ``n`` counts the rows with at least one observed output (``n_samples`` for a complete ``Y``).

    The penalty is the convex relaxation of clustered multi-task learning (CMTL) derived by Zhou, Chen &
    Ye [1]_ (shown there to be equivalent to a relaxed alternating structure optimization, and in the
    family of the convex clustered MTL of Jacob, Bach & Vert [2]_)::

        rho1 * eta * (1 + eta) * min_{M in M_k} tr(W (eta I + M)^{-1} W^T),   eta = rho2 / rho1,
        M_k = {M symmetric : 0 <= M <= I, tr M = k}

    with ``rho1 = alpha``, ``rho2 = ridge`` and ``k = n_clusters``. Along the top-``k`` directions of
    ``W^T W`` (the cluster structure) the penalty costs ``ridge * sigma^2``; off them up to
    ``(alpha + ridge) * sigma^2``. ``alpha = 0`` is plain ridge on every task; ``n_clusters >= n_tasks``
    (every task its own cluster) gives ``M = I`` and again plain ridge.

    Solver (stated, as the problem is joint in ``W`` and ``M``): the minimum over ``M`` is computed
    exactly for each ``W`` — ``M`` shares the right singular vectors of ``W`` and its eigenvalues come from
    a one-dimensional search on the KKT multiplier (``g_i = clip(theta * sigma_i - eta, 0, 1)``,
    ``sum g_i = k``), solved exactly from its breakpoints. What remains is a convex, differentiable
    function of ``W`` alone (gradient ``2 rho1 eta (1 + eta) W (eta I + M*)^{-1}``, Lipschitz constant
    ``2 (alpha + ridge)``), minimized with the loss by accelerated gradient (FISTA with backtracking
    and adaptive restart [3]_). This reaches the joint optimum of ``(W, M)``: it is exact alternating
    minimization in the limit, without an ``M`` iterate or a projection onto ``M_k``.

    Parameters
    ----------
    alpha : float, default=0.1
        ``rho1`` >= 0: the extra cost of task structure outside the ``k`` cluster directions.
    ridge : float, default=0.01
        ``rho2``: ridge on every task; must be > 0 when ``alpha > 0``.
    n_clusters : float, default=2
        ``k`` = trace of ``M`` (> 0; values above ``n_tasks`` act as ``n_tasks``).
    tol : float, default=1e-8
        Stop when the gradient step is below ``tol`` times the norm of the iterate.
    max_iter : int, default=10_000
        Maximum number of iterations; a ``ConvergenceWarning`` is raised when it is reached.
    warm_start : bool, default=False
        Start from the previous ``coef_`` when refitting data with the same shape.

    Attributes
    ----------
    coef_ : ndarray of shape (n_tasks, n_features)
    intercept_ : ndarray of shape (n_tasks,)
    task_relationship_ : ndarray of shape (n_tasks, n_tasks)
        The optimal ``M`` at ``coef_`` (eigenvalues in [0, 1], trace ``k``): tasks in one cluster have
        large off-diagonal entries.
    n_iter_ : int
    n_tasks_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    References
    ----------
    .. [1] J. Zhou, J. Chen and J. Ye, "Clustered multi-task learning via alternating structure
           optimization", Advances in Neural Information Processing Systems 24 (NeurIPS 2011).
           https://pmc.ncbi.nlm.nih.gov/articles/PMC4200604/
    .. [2] L. Jacob, F. Bach and J.-P. Vert, "Clustered multi-task learning: a convex formulation",
           Advances in Neural Information Processing Systems 21 (NeurIPS 2008). https://arxiv.org/abs/0809.2085
    .. [3] A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
           problems", SIAM Journal on Imaging Sciences 2(1), 2009. https://doi.org/10.1137/080716542

    Examples
    --------
    >>> import numpy as np
    >>> from multitask.kernels.linear import ClusteredRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5))
    >>> centers = rng.standard_normal((5, 2))
    >>> W = np.repeat(centers, 3, axis=1) + 0.05 * rng.standard_normal((5, 6))  # 2 clusters of 3 tasks
    >>> Y = X @ W + 0.1 * rng.standard_normal((200, 6))
    >>> M = ClusteredRegressor(alpha=1.0, ridge=0.01, n_clusters=2).fit(X, Y).task_relationship_
    >>> bool(M[0, 1] > M[0, 4])
    True
    """

    def __init__(
        self,
        alpha: float = 0.1,
        ridge: float = 0.01,
        *,
        n_clusters: float = 2,
        tol: float = 1e-8,
        max_iter: int = 10_000,
        warm_start: bool = False,
    ) -> None:
        self.alpha = alpha
        self.ridge = ridge
        self.n_clusters = n_clusters
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start


class ClusteredClassifier(_ClusteredMixin, _ClassifierBase):
    r"""Clustered multi-task logistic regression (convex relaxation of Zhou, Chen & Ye 2011).

    Minimizes over ``W`` (n_features, n_tasks) and per-task intercepts ``b``::

        1 / n * sum_{(i, t) observed} [log(1 + exp(z_it)) - y_it z_it]
            + alpha * eta * (1 + eta) * min_{M in M_k} tr(W (eta I + M)^{-1} W^T),   eta = ridge / alpha

    with ``z_it = x_i . w_t + b_t`` and ``y_it`` in {0, 1} (a 1-D ``y`` may use any two labels; a 2-D ``Y``
    holds 0/1 per task, NaN where missing), and ``n`` the number of rows with at least one observed output
    (``n_samples`` for a complete ``Y``).

    The penalty is the convex relaxation of clustered multi-task learning (CMTL) derived by Zhou, Chen &
    Ye [1]_ (shown there to be equivalent to a relaxed alternating structure optimization, and in the
    family of the convex clustered MTL of Jacob, Bach & Vert [2]_)::

        rho1 * eta * (1 + eta) * min_{M in M_k} tr(W (eta I + M)^{-1} W^T),   eta = rho2 / rho1,
        M_k = {M symmetric : 0 <= M <= I, tr M = k}

    with ``rho1 = alpha``, ``rho2 = ridge`` and ``k = n_clusters``. Along the top-``k`` directions of
    ``W^T W`` (the cluster structure) the penalty costs ``ridge * sigma^2``; off them up to
    ``(alpha + ridge) * sigma^2``. ``alpha = 0`` is plain ridge on every task; ``n_clusters >= n_tasks``
    (every task its own cluster) gives ``M = I`` and again plain ridge.

    Solver (stated, as the problem is joint in ``W`` and ``M``): the minimum over ``M`` is computed
    exactly for each ``W`` — ``M`` shares the right singular vectors of ``W`` and its eigenvalues come from
    a one-dimensional search on the KKT multiplier (``g_i = clip(theta * sigma_i - eta, 0, 1)``,
    ``sum g_i = k``), solved exactly from its breakpoints. What remains is a convex, differentiable
    function of ``W`` alone (gradient ``2 rho1 eta (1 + eta) W (eta I + M*)^{-1}``, Lipschitz constant
    ``2 (alpha + ridge)``), minimized with the loss by accelerated gradient (FISTA with backtracking
    and adaptive restart [3]_). This reaches the joint optimum of ``(W, M)``: it is exact alternating
    minimization in the limit, without an ``M`` iterate or a projection onto ``M_k``.

    Parameters
    ----------
    alpha : float, default=0.01
        ``rho1`` >= 0.
    ridge : float, default=0.001
        ``rho2``; must be > 0 when ``alpha > 0``.
    n_clusters : float, default=2
        ``k`` = trace of ``M`` (> 0; values above ``n_tasks`` act as ``n_tasks``).
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
    task_relationship_ : ndarray of shape (n_tasks, n_tasks)
    n_iter_ : int
    n_tasks_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names.

    References
    ----------
    .. [1] J. Zhou, J. Chen and J. Ye, "Clustered multi-task learning via alternating structure
           optimization", Advances in Neural Information Processing Systems 24 (NeurIPS 2011).
           https://pmc.ncbi.nlm.nih.gov/articles/PMC4200604/
    .. [2] L. Jacob, F. Bach and J.-P. Vert, "Clustered multi-task learning: a convex formulation",
           Advances in Neural Information Processing Systems 21 (NeurIPS 2008). https://arxiv.org/abs/0809.2085
    .. [3] A. Beck and M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
           problems", SIAM Journal on Imaging Sciences 2(1), 2009. https://doi.org/10.1137/080716542
    """

    def __init__(
        self,
        alpha: float = 0.01,
        ridge: float = 0.001,
        *,
        n_clusters: float = 2,
        tol: float = 1e-8,
        max_iter: int = 10_000,
        warm_start: bool = False,
    ) -> None:
        self.alpha = alpha
        self.ridge = ridge
        self.n_clusters = n_clusters
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
