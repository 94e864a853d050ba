"""Multi-task Gaussian process regression (ICM and LMC) as a scikit-learn estimator."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from ._gp_dense import DensePosterior, dense_lml_grad, dense_posterior, make_dense_data
from ._gp_kron import KronPosterior, kron_inner, kron_outer_grad, kron_posterior, kron_prepare
from ._gp_nystrom import NysPosterior, make_nys_data, nys_inner, nys_outer_grad, nys_posterior, nys_prepare
from ._gp_params import Hyper, HyperLayout
from ._kernels import KernelName, check_kernel_name
from ._validation import FitData, validate_fit_data, validate_predict_data

__all__ = ["MultiTaskGP"]

Array = NDArray[np.float64]
_METHODS = ("auto", "exact", "nystrom")
_NOISE_BOUNDS = (float(np.log(1e-6)), float(np.log(10.0)))
_KAPPA_BOUNDS = (float(np.log(1e-8)), float(np.log(1e3)))
# "auto" limits: exact Kronecker up to this many rows, exact dense up to this many observed outputs
_AUTO_KRON_MAX_N = 3000
_AUTO_DENSE_MAX_N = 3000
_DENSE_MAX_N = 20000
# the optimizer stops when an iteration improves the log marginal likelihood by less than this (in nats)
_FTOL_LML = 1e-2
# n_components="auto": an LMC with two components when the exact dense path is cheap, else the ICM
_AUTO_LMC_MAX_N = 2000
# complete data, ICM: the optimization starts from the exact optimum on this many random rows when the
# Kronecker path has at least 3x as many rows (or the Nyström path more than 4x): fewer O(n³) / O(n m²) steps
_WARM_N_KRON = 500
_WARM_N_NYSTROM = 500


class MultiTaskGP(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Multi-task Gaussian process regression: intrinsic coregionalization (ICM) and the LMC.

    Each task ``t`` is a latent function ``f_t`` observed with its own noise variance ``σ²_t``.
    The functions are jointly Gaussian with the linear model of coregionalization (LMC)

    ``Cov(f_s(x), f_t(x')) = Σ_{q=1..Q} k_q(x, x') B_q[s, t]``,  ``B_q = W_q W_qᵀ + diag(κ_q)``,

    where every component ``q`` has its own input kernel (with one lengthscale per feature) and
    its own rank-``rank`` task matrix. ``n_components=1`` is the intrinsic coregionalization model
    (ICM). All hyperparameters (lengthscales, ``W_q``, ``κ_q``, noises) maximize the log marginal
    likelihood with analytic gradients (L-BFGS-B). Missing outputs (NaN in ``Y``) are left out
    of the likelihood exactly: no row is dropped and nothing is imputed.

    Computation (``method``):

    - ``"exact"`` with every output observed and ``n_components=1``: Kronecker
      eigendecomposition with noise whitening (Rakitsch et al. 2013). One eigendecomposition of
      the ``n x n`` input kernel matrix per lengthscale value, O(n³ + n²T + T³); the
      lengthscales are optimized over the profile likelihood (task matrix and noises
      re-maximized at each step, which costs O(nT² + T³) per evaluation and no new
      decomposition). Prediction of means and variances costs O(m n² + m n T) for ``m`` points.
    - ``"exact"`` otherwise (missing outputs, or an LMC with ``n_components > 1``): a dense
      Cholesky factorization over the ``N`` observed outputs, O(N³) time and O(N²) memory per
      likelihood evaluation, predictive variances O(T m N²).
    - ``"nystrom"`` (``n_components=1``): the input kernel is replaced by its Nyström
      approximation on ``n_inducing`` inputs drawn from the training rows, any missing pattern;
      hyperparameters maximize Titsias's collapsed variational bound (reported as
      ``log_marginal_likelihood_value_``), predictions are the DTC ones (Quiñonero-Candela &
      Rasmussen 2005): O(n m² + n m T + (m·rank)³) per evaluation, analytic gradients.
    - ``"auto"``: exact when it is cheap (complete data with ``n <= 3000``, or at most 3000
      observed outputs), else Nyström for ``n_components=1``, else exact.

    No ``(nT) x (nT)`` or ``(mT) x (nT)`` array is formed on the Kronecker and Nyström paths.

    Default model (``n_components="auto"``): an LMC with ``min(n_tasks, 2)`` components when the
    exact path is cheap (at most 2000 observed outputs), else the ICM. The ICM shares one input
    kernel across tasks, which costs a well-observed task whose smoothness differs from the
    others; two components with their own lengthscales avoid that while still helping scarce
    tasks (measured in ``docs/kernels.md``). Task matrices start from the observed task
    correlations with at least half of each task's prior variance on the diagonal.

    Parameters
    ----------
    kernel : {"rbf", "matern12", "matern32", "matern52"}, default="rbf"
        Input kernel of every component (unit variance; amplitudes are in ``B_q``).
    n_components : int or "auto", default="auto"
        Number ``Q`` of LMC components, each with its own lengthscales and task matrix; 1 is the
        ICM. ``"auto"``: ``min(n_tasks, 2)`` up to 2000 observed outputs, else 1.
    rank : int, default=1
        Rank of ``W_q`` in every task matrix ``B_q = W_q W_qᵀ + diag(κ_q)``.
    method : {"auto", "exact", "nystrom"}, default="auto"
        See above.
    n_inducing : int, default=300
        Number of inducing inputs of the Nyström path (capped at the number of rows).
    normalize_y : bool or "global", default=True
        True: center and scale every task by its observed mean and standard deviation before
        fitting; ``"global"``: one mean and scale for all observed outputs (tasks in the same
        units whose levels should be shared); False: neither. Hyperparameters, the likelihood and
        the predictions are always reported in the units of ``Y``.
    optimizer : {"fmin_l_bfgs_b"} or None, default="fmin_l_bfgs_b"
        ``None`` keeps the initial hyperparameters.
    max_iter : int, default=200
        Maximum L-BFGS-B iterations (over the lengthscales for the profile strategy). The
        optimizer also stops when an iteration improves the likelihood by less than 0.01 nats.
    random_state : int, RandomState instance or None, default=None
        Draws the inducing inputs and breaks the symmetry of the initial ``W_q``.

    Attributes
    ----------
    method_ : str
        The path used: ``"kronecker"``, ``"dense"`` or ``"nystrom"``.
    n_components_ : int
        Number of LMC components fitted.
    hyperparameters_ : Hyper
        Fitted hyperparameters in normalized units (log-lengthscales, ``W_q``, log ``κ_q``, log noises).
    posterior_ : object
        The posterior used by ``predict`` and ``sample_y``.
    log_marginal_likelihood_value_ : float
        Log marginal likelihood of the observed outputs (original units) at the fitted hyperparameters.
    lengthscales_ : ndarray of shape (n_components, n_features)
        Fitted lengthscales.
    task_covariances_ : ndarray of shape (n_components, n_tasks, n_tasks)
        Fitted ``B_q`` in the units of ``Y``.
    task_covariance_ : ndarray of shape (n_tasks, n_tasks)
        ``Σ_q B_q``: the covariance of the latent task values at one input.
    noise_ : ndarray of shape (n_tasks,)
        Fitted noise variance of every task (units of ``Y²``).
    n_iter_ : int
        Optimizer iterations.
    inducing_points_ : ndarray of shape (n_inducing, n_features) or None
        The inducing inputs (Nyström path).
    y_mean_, y_std_ : ndarray of shape (n_tasks,)
        Normalization of every task.
    n_tasks_ : int
        Number of tasks.
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Input feature names, when ``X`` has string column names.

    References
    ----------
    Edwin V. Bonilla, Kian Ming A. Chai, Christopher K. I. Williams, "Multi-task Gaussian process
    prediction", NeurIPS 2008. https://papers.nips.cc/paper/3189-multi-task-gaussian-process-prediction

    Mauricio A. Álvarez, Lorenzo Rosasco, Neil D. Lawrence, "Kernels for vector-valued functions:
    a review", Foundations and Trends in Machine Learning 4(3), 2012.
    https://arxiv.org/abs/1106.6251

    Barbara Rakitsch, Christoph Lippert, Karsten Borgwardt, Oliver Stegle, "It is all in the noise:
    efficient multi-task Gaussian process inference with structured residuals", NeurIPS 2013.
    https://papers.nips.cc/paper/5089-it-is-all-in-the-noise-efficient-multi-task-gaussian-process-inference-with-structured-residuals

    Joaquin Quiñonero-Candela, Carl Edward Rasmussen, "A unifying view of sparse approximate
    Gaussian process regression", JMLR 6, 2005. https://jmlr.org/papers/v6/quinonero-candela05a.html

    James T. Wilson, Viacheslav Borovitskiy, Alexander Terenin, Peter Mostowsky, Marc Peter
    Deisenroth, "Efficiently sampling functions from Gaussian process posteriors", ICML 2020
    (pathwise conditioning, used by ``sample_y``). https://arxiv.org/abs/2002.09309

    Examples
    --------
    >>> import numpy as np
    >>> from multitask.kernels import MultiTaskGP
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-3, 3, size=(60, 1))
    >>> Y = np.c_[np.sin(X[:, 0]), np.sin(X[:, 0]) + 0.5] + 0.05 * rng.normal(size=(60, 2))
    >>> Y[20:, 1] = np.nan  # the second task is observed on a third of the rows
    >>> gp = MultiTaskGP(random_state=0).fit(X, Y)
    >>> mean, std = gp.predict(X[:3], return_std=True)
    >>> mean.shape, std.shape
    ((3, 2), (3, 2))
    """

    def __init__(
        self,
        *,
        kernel: str = "rbf",
        n_components: int | str = "auto",
        rank: int = 1,
        method: str = "auto",
        n_inducing: int = 300,
        normalize_y: bool | str = True,
        optimizer: str | None = "fmin_l_bfgs_b",
        max_iter: int = 200,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.kernel = kernel
        self.n_components = n_components
        self.rank = rank
        self.method = method
        self.n_inducing = n_inducing
        self.normalize_y = normalize_y
        self.optimizer = optimizer
        self.max_iter = max_iter
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    # ------------------------------------------------------------------ checks
    def _check_params(self, T: int, N: int) -> tuple[KernelName, int]:
        name = type(self).__name__
        kern = check_kernel_name(self.kernel, name)
        for pname in ("rank", "n_inducing", "max_iter"):
            v = getattr(self, pname)
            if not (isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name}: {pname}={v!r} must be a positive integer.")
        nc = self.n_components
        if isinstance(nc, str):
            if nc != "auto":
                raise ValueError(f"{name}: n_components={nc!r} must be 'auto' or a positive integer.")
            Q = min(T, 2) if (N <= _AUTO_LMC_MAX_N and self.method != "nystrom") else 1
        elif isinstance(nc, int | np.integer) and not isinstance(nc, bool) and nc >= 1:
            Q = int(nc)
        else:
            raise ValueError(f"{name}: n_components={nc!r} must be 'auto' or a positive integer.")
        if self.rank > T:
            raise ValueError(f"{name}: rank={self.rank} exceeds the number of tasks ({T}); use rank <= {T}.")
        if self.method not in _METHODS:
            raise ValueError(f"{name}: method={self.method!r} is not one of {', '.join(_METHODS)}.")
        if self.method == "nystrom" and Q != 1:
            raise ValueError(
                f"{name}: method='nystrom' supports n_components=1 (ICM) only, got n_components={nc!r}; "
                "use method='exact' for an LMC."
            )
        if self.optimizer not in ("fmin_l_bfgs_b", None):
            raise ValueError(f"{name}: optimizer={self.optimizer!r} must be 'fmin_l_bfgs_b' or None.")
        if not (isinstance(self.normalize_y, bool | np.bool_) or self.normalize_y == "global"):
            raise ValueError(f"{name}: normalize_y={self.normalize_y!r} must be True, False or 'global'.")
        return kern, Q

    def _resolve_method(self, data: FitData, Q: int) -> str:
        n = data.Y.shape[0]
        N = int(data.mask.sum())
        if self.method == "nystrom":
            return "nystrom"
        if self.method == "exact":
            path = "kronecker" if (data.complete and Q == 1) else "dense"
        elif data.complete and Q == 1 and n <= _AUTO_KRON_MAX_N:
            path = "kronecker"
        elif N <= _AUTO_DENSE_MAX_N:
            path = "dense"
        elif Q == 1:
            path = "nystrom"
        else:
            path = "dense"
        if path == "dense" and N > _DENSE_MAX_N:
            raise ValueError(
                f"{type(self).__name__}: the exact LMC path factorizes the covariance of all {N} observed outputs "
                f"(O(N³) time, {8 * N * N / 2**30:.1f} GiB per N x N array); above {_DENSE_MAX_N} use n_components=1 "
                "with method='nystrom' (or 'auto')."
            )
        return path

    # ------------------------------------------------------------------ init
    def _init_hyper(self, Xs: Array, Ys: Array, mask: NDArray[np.bool_], rng: np.random.RandomState, Q: int) -> Hyper:
        d = Xs.shape[1]
        T = Ys.shape[1]
        r = self.rank
        yscale = np.array([np.std(Ys[mask[:, t], t]) for t in range(T)])
        yscale[~(yscale > 0)] = 1.0
        Ys = np.where(mask, Ys / yscale, np.nan)
        sd = Xs.std(axis=0)
        sd[~(sd > 0)] = 1.0
        log_ls0 = np.log(sd * np.sqrt(d))
        # observed pairwise correlations of the (standardized) tasks, 0 where no row has both
        fm = mask.astype(np.float64)
        Y0 = np.where(mask, Ys, 0.0)
        cnt = fm.T @ fm
        with np.errstate(invalid="ignore", divide="ignore"):
            C = np.where(cnt >= 3, (Y0.T @ Y0) / np.maximum(cnt, 1.0), 0.0)
        np.fill_diagonal(C, 1.0)
        C = np.clip(0.5 * (C + C.T), -1.0, 1.0)
        w, V = np.linalg.eigh(C)
        top = np.argsort(w)[::-1][:r]
        W0 = V[:, top] * np.sqrt(np.maximum(w[top] - 1.0, 0.0) * T / max(T - 1, 1) + 1e-2)
        if T > 1 and not np.any(cnt[~np.eye(T, dtype=bool)] >= 3):
            # no two tasks observed together (e.g. one task per row): start from a correlation of 1/2
            W0 = np.full((T, r), np.sqrt(0.45 / r)) + 0.01 * rng.standard_normal((T, r))
        # most of the prior variance on the task-specific diagonal: start close to independent tasks
        shared = np.sum(W0 * W0, axis=1)
        scale = np.sqrt(np.minimum(1.0, 0.45 / np.maximum(shared, 1e-12)))
        W0 = W0 * scale[:, None]
        kappa0 = np.maximum(0.9 - np.sum(W0 * W0, axis=1), 0.1)
        # in the units of Y: scale by each task's observed standard deviation (1 when normalized)
        W0 = W0 * yscale[:, None]
        kappa0 = kappa0 * yscale**2
        log_ls, Ws, log_k = [], [], []
        for q in range(Q):
            log_ls.append(log_ls0 + np.log(2.0) * (q - (Q - 1) / 2.0))
            Ws.append(W0 / np.sqrt(Q) + (0.01 * rng.standard_normal((T, r)) * yscale[:, None] if Q > 1 else 0.0))
            log_k.append(np.log(kappa0 / Q))
        return Hyper(log_ls, Ws, log_k, np.log(0.1 * yscale**2))

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, Y: Any) -> MultiTaskGP:
        """Fit the hyperparameters by maximizing the log marginal likelihood.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs (finite).
        Y : array-like of shape (n_samples,) or (n_samples, n_tasks)
            Targets; NaN marks a missing output. Every task needs one observed value.

        Returns
        -------
        self : MultiTaskGP
            The fitted estimator.
        """
        self._fit_t0 = time.perf_counter()
        self._lml_trace: list[tuple[float, float]] = []
        data = validate_fit_data(self, X, Y)
        n, T = data.Y.shape
        mask = data.mask
        kern, Q = self._check_params(T, int(mask.sum()))
        rng = check_random_state(self.random_state)
        if isinstance(self.normalize_y, str):  # "global": one mean and scale for all observed outputs
            obs = data.Y[mask]
            mu, sd = np.full(T, obs.mean()), np.full(T, obs.std())
        elif self.normalize_y:
            mu = np.array([data.Y[mask[:, t], t].mean() for t in range(T)])
            sd = np.array([data.Y[mask[:, t], t].std() for t in range(T)])
        else:
            mu, sd = np.zeros(T), np.ones(T)
        sd[~(sd > 0)] = 1.0
        Ys = np.where(mask, (data.Y - mu) / sd, np.nan)
        X_ = data.X
        path = self._resolve_method(data, Q)
        h0 = self._init_hyper(X_, Ys, mask, rng, Q)
        layout = HyperLayout(Q, X_.shape[1], T, self.rank)
        sdx = X_.std(axis=0)
        sdx[~(sdx > 0)] = 1.0
        ls_bounds = [(float(np.log(1e-3 * s)), float(np.log(1e3 * s))) for s in sdx] * Q
        # noise and κ bounds relative to each task's variance (1 when normalize_y)
        vy = np.array([np.var(Ys[mask[:, t], t]) for t in range(T)])
        vy[~(vy > 0)] = 1.0
        inner_bounds = layout.inner_bounds(_NOISE_BOUNDS, _KAPPA_BOUNDS)
        nb = layout.n_inner - T
        lv = np.log(np.tile(vy, Q))
        kb0 = Q * T * self.rank
        for j in range(Q * T):
            lo, hi = _KAPPA_BOUNDS
            inner_bounds[kb0 + j] = (lo + lv[j], hi + lv[j])
        for t in range(T):
            lo, hi = _NOISE_BOUNDS
            inner_bounds[nb + t] = (lo + float(np.log(vy[t])), hi + float(np.log(vy[t])))
        N = float(mask.sum())
        Yfull = np.where(mask, Ys, 0.0)
        self.inducing_points_: Array | None = None
        if path == "kronecker" and n >= 3 * _WARM_N_KRON:
            h0 = self._warm_start(kern, X_, Yfull, h0, layout, ls_bounds, inner_bounds, _WARM_N_KRON, rng)
        if path == "kronecker":

            def prepare(o: Array) -> Any:
                return kron_prepare(kern, X_, Yfull, o)

            def inner_fn(c: Any, h: Hyper) -> tuple[float, Hyper, Any]:
                res = kron_inner(c, h)
                return res.lml, res.dlml, res

            def outer_fn(c: Any, h: Hyper, st: Any) -> Array:
                return kron_outer_grad(c, st)

            h, n_iter, cache = self._optimize_profile(
                layout, h0, prepare, inner_fn, outer_fn, ls_bounds, inner_bounds, N
            )
            post: Any = kron_posterior(cache, h)
            lml = kron_inner(cache, h).lml
        elif path == "nystrom":
            rows = np.flatnonzero(mask.any(axis=1))
            m = min(self.n_inducing, rows.size)
            Z = X_[np.sort(rng.choice(rows, size=m, replace=False))]
            self.inducing_points_ = Z
            ndata = make_nys_data(kern, X_, Ys, mask, Z)
            if data.complete and n > 4 * _WARM_N_NYSTROM:
                h0 = self._warm_start(kern, X_, Yfull, h0, layout, ls_bounds, inner_bounds, _WARM_N_NYSTROM, rng)

            def nprepare(o: Array) -> Any:
                return nys_prepare(ndata, o)

            def ninner(c: Any, h: Hyper) -> tuple[float, Hyper, Any]:
                res = nys_inner(ndata, c, h)
                return res.lml, res.dlml, res

            def nouter(c: Any, h: Hyper, st: Any) -> Array:
                return nys_outer_grad(ndata, c, h, st)

            if len(ndata.group_tasks) == 1:
                h, n_iter, ncache = self._optimize_profile(
                    layout, h0, nprepare, ninner, nouter, ls_bounds, inner_bounds, N
                )
            else:
                h, n_iter = self._optimize_joint(layout, h0, nprepare, ninner, nouter, ls_bounds, inner_bounds, N)
                ncache = nys_prepare(ndata, h.log_ls[0], need_grad=False)
            post = nys_posterior(ndata, ncache, h)
            lml = nys_inner(ndata, ncache, h).lml
        else:
            ddata = make_dense_data(kern, X_, Ys, mask)

            def dprepare(o: Array) -> Any:
                return o

            def dinner(c: Any, h: Hyper) -> tuple[float, Hyper, Any]:
                lml_, g = dense_lml_grad(ddata, h)
                assert g is not None
                return lml_, g, g

            def douter(c: Any, h: Hyper, st: Any) -> Array:
                return layout.pack_outer(st)

            h, n_iter = self._optimize_joint(layout, h0, dprepare, dinner, douter, ls_bounds, inner_bounds, N)
            post = dense_posterior(ddata, h)
            lml = dense_lml_grad(ddata, h, need_grad=False)[0]

        self.n_components_ = Q
        self.method_ = path
        self.posterior_ = post
        self.hyperparameters_ = h
        self.n_iter_ = n_iter
        self.y_mean_ = mu
        self.y_std_ = sd
        self.n_tasks_ = T
        self.log_marginal_likelihood_value_ = float(lml - np.sum(mask.sum(axis=0) * np.log(sd)))
        self.lengthscales_ = np.array([np.exp(h.log_ls[q]) for q in range(Q)])
        self.task_covariances_ = np.array([h.B(q) * np.outer(sd, sd) for q in range(Q)])
        self.task_covariance_ = self.task_covariances_.sum(axis=0)
        self.noise_ = np.exp(h.log_noise) * sd**2
        self._y_was_1d = data.y_was_1d
        return self

    # ------------------------------------------------------------------ optimizers
    def _warm_start(
        self,
        kern: KernelName,
        X: Array,
        Y: Array,
        h0: Hyper,
        layout: HyperLayout,
        ls_bounds: list[tuple[float, float]],
        inner_bounds: list[tuple[float | None, float | None]],
        n_sub: int,
        rng: np.random.RandomState,
    ) -> Hyper:
        """The exact ICM optimum on ``n_sub`` random rows of complete data (O(n_sub³) per step)."""
        if self.optimizer is None:
            return h0
        sub = np.sort(rng.choice(X.shape[0], size=n_sub, replace=False))
        Xw, Yw = X[sub], Y[sub]
        h, _, _ = self._optimize_profile(
            layout,
            h0,
            lambda o: kron_prepare(kern, Xw, Yw, o),
            lambda c, h: (lambda res: (res.lml, res.dlml, res))(kron_inner(c, h)),
            lambda c, h, st: kron_outer_grad(c, st),
            ls_bounds,
            inner_bounds,
            float(Yw.size),
            record=False,
        )
        return h

    def _optimize_profile(
        self,
        layout: HyperLayout,
        h0: Hyper,
        prepare: Callable[[Array], Any],
        inner_fn: Callable[[Any, Hyper], tuple[float, Hyper, Any]],
        outer_fn: Callable[[Any, Hyper, Any], Array],
        ls_bounds: list[tuple[float, float]],
        inner_bounds: list[tuple[float | None, float | None]],
        N: float,
        record: bool = True,
    ) -> tuple[Hyper, int, Any]:
        """Maximize over the lengthscales the likelihood maximized over everything else.

        One decomposition per lengthscale value; the inner problem reuses it. By the envelope
        theorem the outer gradient is the partial gradient at the inner optimum.
        """
        o0 = layout.pack_outer(h0)
        state: dict[str, Any] = {"inner": layout.pack_inner(h0), "key": None, "cache": None}
        if self.optimizer is None:
            return h0, 0, prepare(o0)

        def cached(o: Array) -> Any:
            key = o.tobytes()
            if state["key"] != key:
                state["key"], state["cache"] = key, prepare(o)
            return state["cache"]

        def solve_inner(c: Any, o: Array) -> tuple[float, Hyper, Any]:
            def f(i: Array) -> tuple[float, Array]:
                lml, g, _ = inner_fn(c, layout.unpack(o, i))
                return -lml / N, -layout.pack_inner(g) / N

            # small dense algebra only: one BLAS thread avoids threading overhead (as in scikit-learn's KMeans)
            with threadpool_limits(limits=1, user_api="blas"):
                res = minimize(
                    f,
                    state["inner"],
                    jac=True,
                    method="L-BFGS-B",
                    bounds=inner_bounds,
                    options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9, "maxcor": 30},
                )
            state["inner"] = res.x
            h = layout.unpack(o, res.x)
            lml, _, st = inner_fn(c, h)
            return lml, h, st

        def outer(o: Array) -> tuple[float, Array]:
            c = cached(o)
            lml, h, st = solve_inner(c, o)
            state["last"] = (o.copy(), h)
            if record:  # (seconds since fit started, LML) at every lengthscale value, for benchmarks
                self._lml_trace.append((time.perf_counter() - self._fit_t0, lml))
            return -lml / N, -outer_fn(c, h, st) / N

        res = minimize(
            outer,
            o0,
            jac=True,
            method="L-BFGS-B",
            bounds=ls_bounds,
            options={"maxiter": self.max_iter, "ftol": _FTOL_LML / N, "gtol": 1e-5, "maxcor": 30},
        )
        self._warn_if_not_converged(res)
        last_o, last_h = state["last"]
        if np.array_equal(last_o, res.x):
            return last_h, int(res.nit), state["cache"]
        # the inner optimum belongs to the last evaluated point, which is not res.x here: redo it
        c = cached(res.x)
        _, h, _ = solve_inner(c, res.x)
        return h, int(res.nit), c

    def _optimize_joint(
        self,
        layout: HyperLayout,
        h0: Hyper,
        prepare: Callable[[Array], Any],
        inner_fn: Callable[[Any, Hyper], tuple[float, Hyper, Any]],
        outer_fn: Callable[[Any, Hyper, Any], Array],
        ls_bounds: list[tuple[float, float]],
        inner_bounds: list[tuple[float | None, float | None]],
        N: float,
    ) -> tuple[Hyper, int]:
        """One L-BFGS-B over all hyperparameters (when the inner problem is as costly as a decomposition)."""
        if self.optimizer is None:
            return h0, 0
        no = layout.n_outer

        def f(x: Array) -> tuple[float, Array]:
            o, i = x[:no], x[no:]
            c = prepare(o)
            h = layout.unpack(o, i)
            lml, g, st = inner_fn(c, h)
            go = outer_fn(c, h, st)
            return -lml / N, -np.concatenate([go, layout.pack_inner(g)]) / N

        x0 = np.concatenate([layout.pack_outer(h0), layout.pack_inner(h0)])
        res = minimize(
            f,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=list(ls_bounds) + list(inner_bounds),
            options={"maxiter": self.max_iter, "ftol": _FTOL_LML / N, "gtol": 1e-5, "maxcor": 30},
        )
        self._warn_if_not_converged(res)
        return layout.unpack(res.x[:no], res.x[no:]), int(res.nit)

    def _warn_if_not_converged(self, res: Any) -> None:
        if not res.success and res.nit >= self.max_iter:
            warnings.warn(
                f"{type(self).__name__}: L-BFGS-B stopped after max_iter={self.max_iter} iterations before converging "
                f"({res.message}); increase max_iter.",
                ConvergenceWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------------ predict
    def _unscale(self, A: Array) -> Array:
        out: Array = A * self.y_std_ + self.y_mean_
        return out

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """Posterior mean (and standard deviation) of every task's latent function.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query inputs.
        return_std : bool, default=False
            Also return the posterior standard deviation of the latent function (without the
            observation noise; add ``noise_`` for the predictive distribution of new outputs).

        Returns
        -------
        mean : ndarray of shape (n_samples, n_tasks), or (n_samples,) if fitted on a 1-D y
        std : ndarray of the same shape, only if ``return_std``
        """
        check_is_fitted(self)
        Xq = validate_predict_data(self, X)
        post: KronPosterior | DensePosterior | NysPosterior = self.posterior_
        if not return_std:
            mean = self._unscale(post.mean(Xq))
            return mean.ravel() if self._y_was_1d else mean
        mean_s, var_s = post.mean_var(Xq)
        mean = self._unscale(mean_s)
        std = np.sqrt(var_s) * self.y_std_
        if self._y_was_1d:
            return mean.ravel(), std.ravel()
        return mean, std

    def sample_y(self, X: Any, n_samples: int = 1, random_state: int | np.random.RandomState | None = 0) -> Array:
        """Draw joint posterior samples of the latent functions at ``X``.

        Exact on the exact paths (pathwise conditioning: a joint prior draw corrected by one
        solve, so no ``(mT) x (mT)`` posterior covariance is formed); on the Nyström path, draws
        from the weight-space posterior plus the DTC residual.

        Parameters
        ----------
        X : array-like of shape (n_samples_X, n_features)
            Query inputs.
        n_samples : int, default=1
            Number of joint samples.
        random_state : int, RandomState instance or None, default=0
            Seed of the draws.

        Returns
        -------
        samples : ndarray of shape (n_samples_X, n_tasks, n_samples), or (n_samples_X, n_samples) if fitted on a 1-D y
        """
        check_is_fitted(self)
        Xq = validate_predict_data(self, X)
        seed = check_random_state(random_state).randint(0, 2**31 - 1)
        rng = np.random.default_rng(seed)
        S = self.posterior_.sample(Xq, int(n_samples), rng)
        out: Array = S * self.y_std_[None, :, None] + self.y_mean_[None, :, None]
        return out[:, 0, :] if self._y_was_1d else out
