"""Multi-task kernel ridge regression with separable (and sums of separable) kernels."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from ._kernels import KernelName, check_kernel_name, check_lengthscale, kernel_matrix
from ._kron import KronEig, eigh_psd, kron_eig, nearest_kronecker, pcg
from ._validation import check_task_matrix, validate_fit_data, validate_predict_data

__all__ = ["MultiTaskKernelRidge"]

Array = NDArray[np.float64]
_SOLVERS = ("auto", "kronecker", "cg", "dense")
_TASK_KERNELS = ("identity", "free", "low_rank")


class MultiTaskKernelRidge(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Multi-task kernel ridge regression with a separable kernel ``k(x, x') B[s, t]``.

    Minimizes, over vector-valued functions ``f = (f_1, ..., f_T)`` in the reproducing kernel
    Hilbert space of ``K((x, s), (x', t)) = Σ_q k_q(x, x') B_q[s, t]``,

    ``Σ_{(i, t) observed} (Y[i, t] - f_t(x_i))² + alpha ||f||²``.

    The task matrix ``B`` encodes how tasks share information: ``B = I`` gives independent kernel
    ridge regressions, a full ``B`` lets every task borrow from the others. ``B`` can be given,
    the identity, or learned jointly with ``f`` (``"free"``: a positive semi-definite ``B`` with
    ``trace(B) = n_tasks``, by alternating minimization of the convex objective
    ``loss + alpha trace(B^{-1} (Fᵀ K^{-1} F + eps I))`` of Argyriou, Evgeniou & Pontil; each
    ``B`` step is the closed form ``B = T (Γ + eps I)^{1/2} / trace((Γ + eps I)^{1/2})``;
    ``"low_rank"``: the learned ``B`` projected on its ``rank`` leading eigenvectors, then ``f``
    refitted).

    Solvers, all exact (no dropped rows, no approximation beyond the tolerance of CG):

    - ``"kronecker"`` (one separable kernel, every output observed): eigendecompositions of
      ``K_X`` and ``B`` solve ``(K_X ⊗ B + alpha I) c = y`` in O(n³ + T³ + n²T) time and O(n² + nT)
      memory, against O(n³T³) and O(n²T²) for a dense solve.
    - ``"cg"`` (missing outputs and/or sums of separable kernels): conjugate gradients on the
      observed outputs with Kronecker matrix-vector products (O(Q (n²T + nT²)) each, Q the number
      of separable terms), preconditioned by the complete-data Kronecker solve of the nearest
      single separable kernel (exact for Q = 1 and complete data). Stops at relative residual
      ``cg_tol``.
    - ``"dense"``: Cholesky factorization on the N observed outputs, O(N³); a reference for
      small problems.
    - ``"auto"``: ``"kronecker"`` when it applies, else ``"cg"``.

    Parameters
    ----------
    alpha : float, default=1.0
        Regularization strength (> 0). With ``trace(B) = n_tasks`` (``"identity"``, ``"free"``,
        ``"low_rank"``) it has the scale of single-task kernel ridge.
    kernel : {"rbf", "matern12", "matern32", "matern52"}, default="rbf"
        Input kernel (unit variance).
    lengthscale : float or array-like of shape (n_features,), default=1.0
        Kernel lengthscale(s); an array gives one per input feature (ARD).
    task_kernel : {"free", "identity", "low_rank"} or array-like of shape (n_tasks, n_tasks), default="free"
        The task matrix ``B``: learned (``"free"``, ``"low_rank"``), the identity, or given
        (symmetric positive semi-definite).
    rank : int, default=1
        Rank of ``B`` for ``task_kernel="low_rank"``.
    components : sequence of (kernel, lengthscale, task_matrix) or None, default=None
        A sum of separable kernels ``Σ_q k_q ⊗ B_q``; each ``task_matrix`` is a PSD array or
        ``"identity"``. When given, ``kernel``, ``lengthscale`` and ``task_kernel`` are ignored.
    solver : {"auto", "kronecker", "cg", "dense"}, default="auto"
        See above.
    eps : float, default=1e-6
        Smoothing of the learned ``B`` (in units of ``Y²``); keeps ``B`` positive definite.
    max_iter : int, default=500
        Maximum alternating iterations when ``B`` is learned.
    tol : float, default=1e-7
        Stop the alternation when one iteration decreases the objective by less than ``tol`` relative
        (the alternation converges monotonically but can be slow when tasks are nearly collinear).
    cg_tol : float, default=1e-10
        Relative residual at which conjugate gradients stop.
    cg_max_iter : int, default=2000
        Maximum conjugate-gradient iterations per solve.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_samples, n_features)
        Training inputs.
    dual_coef_ : ndarray of shape (n_samples, n_tasks)
        Representer coefficients ``c`` (0 for missing outputs); ``f = Σ_q K_q c B_q``.
    task_kernel_ : ndarray of shape (n_tasks, n_tasks)
        The task matrix used (learned, given or identity); for ``components`` the first one.
    components_ : list of (str, ndarray, ndarray)
        ``(kernel, lengthscales, B)`` of every separable term.
    n_tasks_ : int
        Number of tasks.
    solver_ : str
        The solver used.
    n_iter_ : int
        Alternating iterations (0 when ``B`` is not learned).
    cg_iter_ : int
        Total conjugate-gradient iterations (0 unless ``solver_ == "cg"``).
    objective_ : float
        Final objective (loss + alpha ||f||², plus the ``eps`` term when ``B`` is learned).
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Input feature names, when ``X`` has string column names.

    References
    ----------
    Charles A. Micchelli, Massimiliano Pontil, "On learning vector-valued functions", Neural
    Computation 17(1), 2005. https://doi.org/10.1162/0899766052530802

    Theodoros Evgeniou, Charles A. Micchelli, Massimiliano Pontil, "Learning multiple tasks with
    kernel methods", JMLR 6, 2005. https://jmlr.org/papers/v6/evgeniou05a.html

    Andreas Argyriou, Theodoros Evgeniou, Massimiliano Pontil, "Convex multi-task feature
    learning", Machine Learning 73(3), 2008. https://doi.org/10.1007/s10994-007-5040-8

    Mauricio A. Álvarez, Lorenzo Rosasco, Neil D. Lawrence, "Kernels for vector-valued functions:
    a review", Foundations and Trends in Machine Learning 4(3), 2012.
    https://arxiv.org/abs/1106.6251

    Examples
    --------
    >>> import numpy as np
    >>> from multitask.kernels import MultiTaskKernelRidge
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 3))
    >>> Y = np.c_[np.sin(X[:, 0]), np.sin(X[:, 0]) + 0.1 * X[:, 1]]
    >>> Y[::3, 1] = np.nan  # missing outputs are fine
    >>> model = MultiTaskKernelRidge(alpha=0.1).fit(X, Y)
    >>> model.predict(X[:2]).shape
    (2, 2)
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        kernel: str = "rbf",
        lengthscale: float | Sequence[float] | NDArray[np.float64] = 1.0,
        task_kernel: str | NDArray[np.float64] = "free",
        rank: int = 1,
        components: Sequence[tuple[str, Any, Any]] | None = None,
        solver: str = "auto",
        eps: float = 1e-6,
        max_iter: int = 500,
        tol: float = 1e-7,
        cg_tol: float = 1e-10,
        cg_max_iter: int = 2000,
    ) -> None:
        self.alpha = alpha
        self.kernel = kernel
        self.lengthscale = lengthscale
        self.task_kernel = task_kernel
        self.rank = rank
        self.components = components
        self.solver = solver
        self.eps = eps
        self.max_iter = max_iter
        self.tol = tol
        self.cg_tol = cg_tol
        self.cg_max_iter = cg_max_iter

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    # ------------------------------------------------------------------ checks
    def _check_params(self, n_tasks: int, n_features: int) -> tuple[list[tuple[KernelName, Array, Array | None]], str]:
        name = type(self).__name__
        if not (isinstance(self.alpha, int | float) and np.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"{name}: alpha={self.alpha!r} must be a positive finite number, e.g. alpha=1.0.")
        if self.solver not in _SOLVERS:
            raise ValueError(f"{name}: solver={self.solver!r} is not one of {', '.join(_SOLVERS)}.")
        for pname in ("eps", "tol", "cg_tol"):
            v = getattr(self, pname)
            if not (isinstance(v, int | float) and np.isfinite(v) and v > 0):
                raise ValueError(f"{name}: {pname}={v!r} must be a positive finite number.")
        for pname in ("max_iter", "cg_max_iter", "rank"):
            v = getattr(self, pname)
            if not (isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name}: {pname}={v!r} must be a positive integer.")
        comps: list[tuple[KernelName, Array, Array | None]] = []
        if self.components is not None:
            if len(self.components) == 0:
                raise ValueError(f"{name}: components=[] is empty; pass at least one (kernel, lengthscale, B) triple.")
            for q, comp in enumerate(self.components):
                if not (isinstance(comp, tuple | list) and len(comp) == 3):
                    raise ValueError(
                        f"{name}: components[{q}]={comp!r} must be a (kernel, lengthscale, task_matrix) triple."
                    )
                kname, ls, B = comp
                kern = check_kernel_name(kname, name)
                ls_arr = check_lengthscale(ls, n_features, name, f"components[{q}] lengthscale")
                if isinstance(B, str):
                    if B != "identity":
                        raise ValueError(
                            f"{name}: components[{q}] task matrix {B!r} must be 'identity' or a PSD array "
                            "(learned task matrices need a single component)."
                        )
                    Bm = np.eye(n_tasks)
                else:
                    Bm = check_task_matrix(B, n_tasks, name, f"components[{q}] task matrix")
                comps.append((kern, ls_arr, Bm))
            return comps, "given"
        kern = check_kernel_name(self.kernel, name)
        ls_arr = check_lengthscale(self.lengthscale, n_features, name)
        tk = self.task_kernel
        if isinstance(tk, str):
            if tk not in _TASK_KERNELS:
                raise ValueError(
                    f"{name}: task_kernel={tk!r} must be one of {', '.join(_TASK_KERNELS)} or a PSD (n_tasks, n_tasks) "
                    "array."
                )
            if tk == "low_rank" and self.rank > n_tasks:
                raise ValueError(
                    f"{name}: rank={self.rank} exceeds the number of tasks ({n_tasks}); use rank <= {n_tasks}."
                )
            return [(kern, ls_arr, np.eye(n_tasks) if tk == "identity" else None)], tk
        return [(kern, ls_arr, check_task_matrix(tk, n_tasks, name))], "given"

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, Y: Any) -> MultiTaskKernelRidge:
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs (finite).
        Y : array-like of shape (n_samples,) or (n_samples, n_tasks)
            Targets; NaN marks a missing output. Every task needs one observed value.

        Returns
        -------
        self : MultiTaskKernelRidge
            The fitted estimator.
        """
        data = validate_fit_data(self, X, Y)
        T = data.Y.shape[1]
        comps, mode = self._check_params(T, data.X.shape[1])
        complete = data.complete
        if self.solver == "kronecker" and (len(comps) > 1 or not complete):
            raise ValueError(
                f"{type(self).__name__}: solver='kronecker' needs a single separable kernel and every output "
                f"observed (got {len(comps)} component(s), {int((~data.mask).sum())} missing output(s)); "
                "use solver='cg' or 'auto'."
            )
        solver = self.solver
        if solver == "auto":
            solver = "kronecker" if (len(comps) == 1 and complete) else "cg"
        Ks = [kernel_matrix(k, data.X, data.X, ls) for k, ls, _ in comps]
        Y0 = np.where(data.mask, data.Y, 0.0)
        alpha = float(self.alpha)
        self.cg_iter_ = 0
        self.n_iter_ = 0
        keig = eigh_psd(Ks[0]) if (len(comps) == 1 and solver in ("kronecker", "cg")) else None

        if mode in ("free", "low_rank"):
            B, C, obj = self._learn_task_matrix(Ks[0], keig, Y0, data.mask, solver, alpha)
            if mode == "low_rank":
                s, V = eigh_psd(B)
                top = np.argsort(s)[::-1][: self.rank]
                B = (V[:, top] * s[top]) @ V[:, top].T
                B *= T / np.trace(B)
                C = self._solve([Ks[0]], [B], keig, Y0, data.mask, solver, alpha, C)
                obj = self._objective([Ks[0]], [B], C, Y0, data.mask, alpha)
            comps = [(comps[0][0], comps[0][1], B)]
        else:
            Bs = [c[2] for c in comps]
            assert all(b is not None for b in Bs)
            Bs_arr = [b for b in Bs if b is not None]
            C = self._solve(Ks, Bs_arr, keig, Y0, data.mask, solver, alpha, None)
            obj = self._objective(Ks, Bs_arr, C, Y0, data.mask, alpha)
        self.X_fit_ = data.X
        self.dual_coef_ = C
        self.components_ = [(k, ls, np.asarray(B)) for k, ls, B in comps]
        self.task_kernel_ = self.components_[0][2]
        self.n_tasks_ = T
        self.solver_ = solver
        self.objective_ = obj
        self._y_was_1d = data.y_was_1d
        return self

    def _learn_task_matrix(
        self,
        K: Array,
        keig: tuple[Array, Array] | None,
        Y0: Array,
        mask: NDArray[np.bool_],
        solver: str,
        alpha: float,
    ) -> tuple[Array, Array, float]:
        """Alternating minimization over (f, B) with trace(B) = T (Argyriou et al. 2008)."""
        T = Y0.shape[1]
        B = np.eye(T)
        C: Array | None = None
        prev = np.inf
        obj = np.inf
        eps = float(self.eps)
        converged = False
        for it in range(1, self.max_iter + 1):
            C = self._solve([K], [B], keig, Y0, mask, solver, alpha, C)
            KC = K @ C
            Gamma = B @ (C.T @ KC) @ B
            Gamma = 0.5 * (Gamma + Gamma.T)
            F = KC @ B
            loss = float(np.sum(np.where(mask, Y0 - F, 0.0) ** 2))
            s, V = eigh_psd(B)
            Binv = (V / s) @ V.T
            obj = loss + alpha * float(np.sum(Binv * (Gamma + eps * np.eye(T))))
            self.n_iter_ = it
            if prev - obj <= self.tol * abs(obj):
                converged = True
                break
            if it == self.max_iter:
                break  # keep the B that C was solved with
            prev = obj
            g, W = eigh_psd(Gamma + eps * np.eye(T))
            root = (W * np.sqrt(g)) @ W.T
            B = T * root / np.trace(root)
            B = 0.5 * (B + B.T)
        if not converged:
            warnings.warn(
                f"{type(self).__name__}: the alternating minimization over B did not converge in max_iter="
                f"{self.max_iter} iterations (tol={self.tol}); increase max_iter.",
                ConvergenceWarning,
                stacklevel=3,
            )
        assert C is not None
        return B, C, obj

    def _solve(
        self,
        Ks: list[Array],
        Bs: list[Array],
        keig: tuple[Array, Array] | None,
        Y0: Array,
        mask: NDArray[np.bool_],
        solver: str,
        alpha: float,
        x0: Array | None,
    ) -> Array:
        """Coefficients ``C`` (zero at missing outputs) of ``(P Σ_q K_q ⊗ B_q Pᵀ + alpha I) c = y``."""
        if solver == "dense":
            return _dense_solve(Ks, Bs, Y0, mask, alpha)
        if solver == "kronecker":
            assert keig is not None
            lam, U = keig
            s, V = eigh_psd(Bs[0])
            return KronEig(U=U, lam=lam, V=V, s=s).solve(Y0, alpha)
        # conjugate gradients on the observed entries, preconditioned by a Kronecker solve
        if keig is not None:
            lam, U = keig
            s, V = eigh_psd(Bs[0])
            pre = KronEig(U=U, lam=lam, V=V, s=s)
        else:
            Kt, Bt = nearest_kronecker(Ks, Bs)
            pre = kron_eig(Kt, Bt)
        fmask = mask.astype(np.float64)
        complete = bool(mask.all())

        def apply_A(Cm: Array) -> Array:
            out = sum((K @ Cm @ B for K, B in zip(Ks, Bs, strict=True)), np.zeros_like(Cm))
            if not complete:
                out *= fmask
            return out + alpha * Cm

        def apply_M(R: Array) -> Array:
            Z = pre.solve(R, alpha)
            if not complete:
                Z *= fmask
            return Z

        res = pcg(apply_A, apply_M, Y0, x0=x0, tol=float(self.cg_tol), max_iter=int(self.cg_max_iter))
        self.cg_iter_ += res.n_iter
        if not res.converged:
            warnings.warn(
                f"{type(self).__name__}: conjugate gradients stopped at relative residual {res.residual:.2e} after "
                f"cg_max_iter={self.cg_max_iter} iterations (cg_tol={self.cg_tol}); increase cg_max_iter or alpha.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return res.x

    @staticmethod
    def _objective(
        Ks: list[Array], Bs: list[Array], C: Array, Y0: Array, mask: NDArray[np.bool_], alpha: float
    ) -> float:
        """``Σ_obs (y - f)² + alpha ||f||²`` with ``f = Σ_q K_q C B_q`` and ``||f||² = <C, f>``."""
        F = sum((K @ C @ B for K, B in zip(Ks, Bs, strict=True)), np.zeros_like(C))
        loss = float(np.sum(np.where(mask, Y0 - F, 0.0) ** 2))
        return loss + alpha * float(np.vdot(C, F))

    # ------------------------------------------------------------------ predict
    def predict(self, X: Any) -> NDArray[np.float64]:
        """Predict every task at ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        Y : ndarray of shape (n_samples, n_tasks), or (n_samples,) if fitted on a 1-D y
            Predictions ``f_t(x) = Σ_q k_q(x, X_fit) C B_q[:, t]``.
        """
        check_is_fitted(self)
        Xq = validate_predict_data(self, X)
        out = np.zeros((Xq.shape[0], self.n_tasks_))
        for kern, ls, B in self.components_:
            out += kernel_matrix(kern, Xq, self.X_fit_, ls) @ self.dual_coef_ @ B
        return out.ravel() if self._y_was_1d else out


def _dense_solve(Ks: list[Array], Bs: list[Array], Y0: Array, mask: NDArray[np.bool_], alpha: float) -> Array:
    """Cholesky solve on the N observed outputs (O(N³)); the reference the fast solvers are tested against."""
    rows, tasks = np.nonzero(mask)
    A = np.zeros((rows.size, rows.size))
    for K, B in zip(Ks, Bs, strict=True):
        A += K[np.ix_(rows, rows)] * B[np.ix_(tasks, tasks)]
    A[np.diag_indices_from(A)] += alpha
    c = scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, lower=True), Y0[rows, tasks])
    C = np.zeros_like(Y0)
    C[rows, tasks] = c
    return C
