"""MultiTaskGP: likelihoods and gradients against dense references and finite differences, predictions
against the dense formulas, samples against the predictive moments, estimator behaviour and errors."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

import multitask.kernels.gp as gp_module
from multitask.kernels import MultiTaskGP
from multitask.kernels._gp_dense import dense_lml_grad, dense_posterior, make_dense_data
from multitask.kernels._gp_kron import dense_icm_lml, icm_lml, kron_inner, kron_outer_grad, kron_posterior, kron_prepare
from multitask.kernels._gp_nystrom import make_nys_data, nys_inner, nys_outer_grad, nys_posterior, nys_prepare
from multitask.kernels._gp_params import Hyper, HyperLayout
from multitask.kernels._kernels import KERNELS, kernel_matrix

Array = NDArray[np.float64]
KERNEL_NAMES = list(KERNELS)


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


def _hyper(rng: np.random.Generator, Q: int, d: int, T: int, r: int) -> Hyper:
    return Hyper(
        [0.3 * rng.standard_normal(d) for _ in range(Q)],
        [rng.standard_normal((T, r)) for _ in range(Q)],
        [0.3 * rng.standard_normal(T) for _ in range(Q)],
        0.3 * rng.standard_normal(T) - 1.0,
    )


def _fd(f: Callable[[Array], float], x: Array, eps: float = 1e-6) -> Array:
    out = np.zeros_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = eps
        out[j] = (f(x + e) - f(x - e)) / (2 * eps)
    return out


def _close(a: Array, b: Array, tol: float) -> bool:
    return bool(np.abs(a - b).max() <= tol * max(1.0, float(np.abs(b).max())))


def _dense_reference(X: Array, Y: Array, mask: NDArray[np.bool_], kernel: str, h: Hyper) -> tuple[Array, Array]:
    """Covariance of the observed outputs and their values, built entry by entry from the model definition."""
    rows, tasks = np.nonzero(mask)
    C = np.diag(np.exp(h.log_noise)[tasks])
    for q in range(len(h.log_ls)):
        K = kernel_matrix(kernel, X, X, np.exp(h.log_ls[q]))  # type: ignore[arg-type]
        C = C + K[np.ix_(rows, rows)] * h.B(q)[np.ix_(tasks, tasks)]
    return C, Y[rows, tasks]


def _gauss_lml(C: Array, y: Array) -> float:
    _, logdet = np.linalg.slogdet(C)
    return float(-0.5 * y @ np.linalg.solve(C, y) - 0.5 * logdet - 0.5 * y.size * np.log(2 * np.pi))


# ---------------------------------------------------------------- likelihoods and gradients
@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_kronecker_lml_and_gradients(kernel: str) -> None:
    rng = np.random.default_rng(0)
    n, d, T, r = 14, 3, 4, 2
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, T))
    h = _hyper(rng, 1, d, T, r)
    lay = HyperLayout(1, d, T, r)
    cache = kron_prepare(kernel, X, Y, h.log_ls[0])  # type: ignore[arg-type]
    res = kron_inner(cache, h)
    assert abs(res.lml - dense_icm_lml(kernel, X, Y, h)) < 1e-10 * abs(res.lml)  # type: ignore[arg-type]
    C, y = _dense_reference(X, Y, np.ones((n, T), bool), kernel, h)
    assert abs(res.lml - _gauss_lml(C, y)) < 1e-9 * abs(res.lml)
    o0, i0 = lay.pack_outer(h), lay.pack_inner(h)

    def f(o: Array, i: Array) -> float:
        hh = lay.unpack(o, i)
        return kron_inner(kron_prepare(kernel, X, Y, hh.log_ls[0]), hh).lml  # type: ignore[arg-type]

    assert _close(kron_outer_grad(cache, res), _fd(lambda o: f(o, i0), o0), 1e-6)
    assert _close(lay.pack_inner(res.dlml), _fd(lambda i: f(o0, i), i0), 1e-6)


@pytest.mark.parametrize("kernel", ["rbf", "matern12", "matern52"])
def test_dense_lmc_lml_and_gradients_with_missing_outputs(kernel: str) -> None:
    rng = np.random.default_rng(1)
    n, d, T, r, Q = 12, 2, 3, 2, 2
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, T))
    mask = rng.random((n, T)) > 0.4
    mask[0] = True
    data = make_dense_data(kernel, X, np.where(mask, Y, np.nan), mask)  # type: ignore[arg-type]
    h = _hyper(rng, Q, d, T, r)
    lml, g = dense_lml_grad(data, h)
    assert g is not None
    C, y = _dense_reference(X, Y, mask, kernel, h)
    assert abs(lml - _gauss_lml(C, y)) < 1e-9 * abs(lml)
    lay = HyperLayout(Q, d, T, r)
    x0 = np.concatenate([lay.pack_outer(h), lay.pack_inner(h)])
    no = lay.n_outer

    def f(x: Array) -> float:
        return dense_lml_grad(data, lay.unpack(x[:no], x[no:]), need_grad=False)[0]

    assert _close(np.concatenate([lay.pack_outer(g), lay.pack_inner(g)]), _fd(f, x0), 1e-6)


@pytest.mark.parametrize("pattern", ["complete", "missing", "one task per row"])
@pytest.mark.parametrize("m", [6, 14])
def test_nystrom_bound_and_gradients(pattern: str, m: int) -> None:
    rng = np.random.default_rng(2)
    n, d, T, r = 24, 2, 3, 2
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, T))
    mask = {
        "complete": np.ones((n, T), bool),
        "missing": rng.random((n, T)) > 0.5,
        "one task per row": np.eye(T, dtype=bool)[rng.integers(0, T, n)],
    }[pattern]
    mask[:T] |= np.eye(T, dtype=bool)
    Z = X[rng.choice(n, m, replace=False)]
    data = make_nys_data("matern52", X, np.where(mask, Y, np.nan), mask, Z)
    h = _hyper(rng, 1, d, T, r)
    cache = nys_prepare(data, h.log_ls[0])
    res = nys_inner(data, cache, h)
    # reference: the collapsed bound of Titsias (2009) with the Nyström kernel, built densely
    ls = np.exp(h.log_ls[0])
    Kmm = kernel_matrix("matern52", Z, Z, ls) + 1e-6 * np.eye(m)
    Knm = kernel_matrix("matern52", X, Z, ls)
    Qn = Knm @ np.linalg.solve(Kmm, Knm.T)
    rows, tasks = np.nonzero(mask)
    C = Qn[np.ix_(rows, rows)] * h.B(0)[np.ix_(tasks, tasks)] + np.diag(np.exp(h.log_noise)[tasks])
    trace = np.sum(h.B(0)[tasks, tasks] * (1 - np.diag(Qn)[rows]) / np.exp(h.log_noise)[tasks])
    assert abs(res.lml - (_gauss_lml(C, Y[rows, tasks]) - 0.5 * trace)) < 1e-9 * abs(res.lml)
    lay = HyperLayout(1, d, T, r)
    o0, i0 = lay.pack_outer(h), lay.pack_inner(h)

    def f(o: Array, i: Array) -> float:
        return nys_inner(data, nys_prepare(data, o), lay.unpack(o, i)).lml

    assert _close(nys_outer_grad(data, cache, h, res), _fd(lambda o: f(o, i0), o0), 1e-6)
    assert _close(lay.pack_inner(res.dlml), _fd(lambda i: f(o0, i), i0), 1e-6)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), T=st.integers(1, 4), r=st.integers(1, 2), seed=st.integers(0, 10_000))
def test_kronecker_lml_property(n: int, T: int, r: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((n, 2)), rng.standard_normal((n, T))
    h = _hyper(rng, 1, 2, T, min(r, T))
    fast = kron_inner(kron_prepare("rbf", X, Y, h.log_ls[0]), h).lml
    dense = dense_lml_grad(make_dense_data("rbf", X, Y, np.ones((n, T), bool)), h, need_grad=False)[0]
    assert abs(fast - dense) < 1e-9 * max(1.0, abs(dense))
    assert abs(icm_lml("rbf", X, Y, np.exp(h.log_ls[0]), h.B(0), np.exp(h.log_noise)) - dense) < 1e-9 * max(
        1.0, abs(dense)
    )


# ---------------------------------------------------------------- predictions and samples
def _reference_posterior(
    Xq: Array,
    X: Array,
    Y: Array,
    mask: NDArray[np.bool_],
    kernel: str,
    h: Hyper,
    Kfun: Callable[..., Array] | None = None,
) -> tuple[Array, Array, Array]:
    """Dense posterior mean, variance and full covariance of f at Xq (all tasks), from the textbook formulas."""
    kf = Kfun or (lambda A, B, q: kernel_matrix(kernel, A, B, np.exp(h.log_ls[q])))  # type: ignore[arg-type]
    rows, tasks = np.nonzero(mask)
    T = Y.shape[1]
    Q = len(h.log_ls)
    C = np.diag(np.exp(h.log_noise)[tasks]) + sum(
        kf(X, X, q)[np.ix_(rows, rows)] * h.B(q)[np.ix_(tasks, tasks)] for q in range(Q)
    )
    m = Xq.shape[0]
    qi, qt = np.repeat(np.arange(m), T), np.tile(np.arange(T), m)
    Cq = sum(kf(Xq, X, q)[np.ix_(qi, rows)] * h.B(q)[np.ix_(qt, tasks)] for q in range(Q))
    Cqq = sum(kf(Xq, Xq, q)[np.ix_(qi, qi)] * h.B(q)[np.ix_(qt, qt)] for q in range(Q))
    mean = Cq @ np.linalg.solve(C, Y[rows, tasks])
    cov = Cqq - Cq @ np.linalg.solve(C, Cq.T)
    return mean.reshape(m, T), np.diag(cov).reshape(m, T), cov


def test_kronecker_predictions_equal_dense_formulas() -> None:
    rng = np.random.default_rng(3)
    n, d, T = 15, 2, 3
    X, Y, Xq = rng.standard_normal((n, d)), rng.standard_normal((n, T)), rng.standard_normal((6, d))
    h = _hyper(rng, 1, d, T, 1)
    post = kron_posterior(kron_prepare("matern32", X, Y, h.log_ls[0]), h)
    mean, var = post.mean_var(Xq)
    rm, rv, _ = _reference_posterior(Xq, X, Y, np.ones((n, T), bool), "matern32", h)
    assert _close(mean, rm, 1e-9) and _close(var, rv, 1e-9)
    assert _close(post.mean(Xq), rm, 1e-9)


def test_dense_lmc_predictions_with_missing_outputs_equal_dense_formulas() -> None:
    rng = np.random.default_rng(4)
    n, d, T = 14, 2, 3
    X, Y, Xq = rng.standard_normal((n, d)), rng.standard_normal((n, T)), rng.standard_normal((5, d))
    mask = rng.random((n, T)) > 0.5
    mask[0] = True
    h = _hyper(rng, 2, d, T, 1)
    post = dense_posterior(make_dense_data("rbf", X, np.where(mask, Y, np.nan), mask), h)
    mean, var = post.mean_var(Xq)
    rm, rv, _ = _reference_posterior(Xq, X, Y, mask, "rbf", h)
    assert _close(mean, rm, 1e-9) and _close(var, rv, 1e-9)


@pytest.mark.parametrize("m", [7, 16])  # 16 > rows per task: the SVD route for patterns with few rows
def test_nystrom_predictions_equal_dense_dtc_formulas(m: int) -> None:
    rng = np.random.default_rng(5)
    n, d, T = 20, 2, 3
    X, Y, Xq = rng.standard_normal((n, d)), rng.standard_normal((n, T)), rng.standard_normal((5, d))
    mask = rng.random((n, T)) > 0.4
    mask[0] = True
    Z = X[:m]
    data = make_nys_data("rbf", X, np.where(mask, Y, np.nan), mask, Z)
    h = _hyper(rng, 1, d, T, 2)
    post = nys_posterior(data, nys_prepare(data, h.log_ls[0]), h)
    mean, var = post.mean_var(Xq)
    ls = np.exp(h.log_ls[0])
    Kmm = kernel_matrix("rbf", Z, Z, ls) + 1e-6 * np.eye(m)

    def nys(A: Array, B: Array, q: int) -> Array:
        out: Array = kernel_matrix("rbf", A, Z, ls) @ np.linalg.solve(Kmm, kernel_matrix("rbf", Z, B, ls))
        return out

    rm, rv, _ = _reference_posterior(Xq, X, Y, mask, "rbf", h, nys)
    qdiag = np.einsum(
        "ij,ji->i", kernel_matrix("rbf", Xq, Z, ls), np.linalg.solve(Kmm, kernel_matrix("rbf", Z, Xq, ls))
    )
    rv = rv + (1 - qdiag)[:, None] * np.diag(h.B(0))[None, :]  # DTC: prior variance the inducing points miss
    assert _close(mean, rm, 1e-8) and _close(var, rv, 1e-8)


@pytest.mark.parametrize("path", ["kronecker", "dense", "nystrom"])
def test_samples_match_the_posterior_moments(path: str) -> None:
    rng = np.random.default_rng(6)
    n, d, T, S = 12, 1, 2, 4000
    X, Y, Xq = rng.standard_normal((n, d)), rng.standard_normal((n, T)), np.array([[0.1], [0.5], [3.0]])
    mask = np.ones((n, T), bool)
    h = _hyper(rng, 2 if path == "dense" else 1, d, T, 1)
    post: object
    if path == "kronecker":
        post = kron_posterior(kron_prepare("rbf", X, Y, h.log_ls[0]), h)
    elif path == "dense":
        mask[::3, 1] = False
        post = dense_posterior(make_dense_data("rbf", X, np.where(mask, Y, np.nan), mask), h)
    else:
        data = make_nys_data("rbf", X, Y, mask, X[:5])
        post = nys_posterior(data, nys_prepare(data, h.log_ls[0]), h)
    samples = post.sample(Xq, S, np.random.default_rng(7))  # type: ignore[attr-defined]
    mean, var = post.mean_var(Xq)  # type: ignore[attr-defined]
    assert samples.shape == (3, T, S)
    se = np.sqrt(var / S)
    assert np.all(np.abs(samples.mean(axis=2) - mean) < 5 * se + 1e-12)
    assert np.allclose(samples.var(axis=2), var, rtol=0.15, atol=1e-10)
    if path != "nystrom":  # exact joint covariance, across points and tasks
        _, _, cov = _reference_posterior(Xq, X, Y, mask, "rbf", h)
        emp = np.cov(samples.reshape(3 * T, S))
        assert np.allclose(emp, cov, atol=0.15 * np.sqrt(np.outer(np.diag(cov), np.diag(cov))).max())


# ---------------------------------------------------------------- the estimator
def _task_data(n: int = 40, T: int = 3, seed: int = 0, missing: float = 0.0) -> tuple[Array, Array]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 2))
    base = np.sin(2 * X[:, 0]) + 0.3 * X[:, 1]
    Y = 3.0 * np.c_[[base * (1 + 0.2 * t) + 0.1 * t for t in range(T)]].T + 5.0 + 0.1 * rng.standard_normal((n, T))
    if missing:
        M = rng.random((n, T)) < missing
        M[:T] = False
        Y[M] = np.nan
    return X, Y


@pytest.mark.parametrize(
    ("kwargs", "missing", "path"),
    [
        ({"n_components": 1}, 0.0, "kronecker"),
        ({"n_components": 1}, 0.3, "dense"),
        ({"n_components": 2}, 0.3, "dense"),
        ({"n_components": 1, "method": "nystrom", "n_inducing": 15}, 0.3, "nystrom"),
    ],
)
def test_reported_likelihood_is_the_dense_one_in_original_units(
    kwargs: dict[str, object], missing: float, path: str
) -> None:
    X, Y = _task_data(missing=missing)
    gp = MultiTaskGP(random_state=0, **kwargs).fit(X, Y)  # type: ignore[arg-type]
    assert gp.method_ == path
    mask = ~np.isnan(Y)
    rows, tasks = np.nonzero(mask)
    if path == "nystrom":
        return  # a variational bound, checked against its dense reference above
    C = np.diag(gp.noise_[tasks])
    for q in range(gp.n_components_):
        K = kernel_matrix("rbf", X, X, gp.lengthscales_[q])
        C += K[np.ix_(rows, rows)] * gp.task_covariances_[q][np.ix_(tasks, tasks)]
    y = Y[rows, tasks] - gp.y_mean_[tasks]
    assert abs(gp.log_marginal_likelihood_value_ - _gauss_lml(C, y)) < 1e-7 * abs(_gauss_lml(C, y))
    init = MultiTaskGP(random_state=0, optimizer=None, **kwargs).fit(X, Y)  # type: ignore[arg-type]
    assert gp.log_marginal_likelihood_value_ > init.log_marginal_likelihood_value_ + 1.0


def test_kronecker_fit_reaches_a_stationary_point() -> None:
    X, Y = _task_data(n=50)
    gp = MultiTaskGP(n_components=1, normalize_y=False, random_state=0).fit(X, Y)
    h = gp.hyperparameters_
    cache = kron_prepare("rbf", X, Y, h.log_ls[0])
    res = kron_inner(cache, h)
    # the optimizer stops once an iteration gains < 0.01 nats: gradients (in nats) are then near zero
    assert np.abs(kron_outer_grad(cache, res)).max() < 0.1
    assert np.abs(HyperLayout(1, 2, 3, 1).pack_inner(res.dlml)).max() < 1e-3


def test_method_and_components_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    X, Y = _task_data(n=30)
    Ym = Y.copy()
    Ym[5, 1] = np.nan
    assert MultiTaskGP(optimizer=None).fit(X, Y).n_components_ == 2
    assert MultiTaskGP(optimizer=None, n_components=1).fit(X, Y).method_ == "kronecker"
    assert MultiTaskGP(optimizer=None, n_components=1).fit(X, Ym).method_ == "dense"
    monkeypatch.setattr(gp_module, "_AUTO_DENSE_MAX_N", 10)
    monkeypatch.setattr(gp_module, "_AUTO_LMC_MAX_N", 10)
    big = MultiTaskGP(optimizer=None, n_inducing=8, random_state=0).fit(X, Ym)
    assert big.n_components_ == 1 and big.method_ == "nystrom" and big.inducing_points_.shape == (8, 2)
    monkeypatch.setattr(gp_module, "_DENSE_MAX_N", 50)
    with pytest.raises(ValueError, match="observed outputs .* use n_components=1"):
        MultiTaskGP(n_components=2).fit(X, Ym)


def test_multitask_gp_helps_a_scarce_task() -> None:
    rng = np.random.default_rng(8)
    X = rng.uniform(-2, 2, (80, 1))
    f = np.sin(2 * X[:, 0])
    Y = np.c_[f, 0.8 * f + 0.2] + 0.05 * rng.standard_normal((80, 2))
    Y[10:, 1] = np.nan  # task 1: 10 labels
    Xq = np.linspace(-2, 2, 50)[:, None]
    truth = 0.8 * np.sin(2 * Xq[:, 0]) + 0.2
    joint = MultiTaskGP(random_state=0).fit(X, Y).predict(Xq)[:, 1]
    alone = MultiTaskGP(random_state=0).fit(X[:10], Y[:10, 1]).predict(Xq)
    assert np.mean((joint - truth) ** 2) < 0.25 * np.mean((alone - truth) ** 2)


def test_outputs_shapes_and_one_dimensional_y() -> None:
    X, Y = _task_data(n=25)
    gp1 = MultiTaskGP(random_state=0).fit(X, Y[:, 0])
    mean, std = gp1.predict(X[:4], return_std=True)
    assert mean.shape == (4,) and std.shape == (4,) and np.all(std >= 0)
    assert gp1.sample_y(X[:4], n_samples=3).shape == (4, 3)
    gp = MultiTaskGP(random_state=0, n_components=1).fit(X, Y)
    assert gp.predict(X[:4]).shape == (4, 3)
    assert gp.sample_y(X[:4], n_samples=2, random_state=1).shape == (4, 3, 2)
    assert gp.task_covariance_.shape == (3, 3) and gp.noise_.shape == (3,)
    assert np.allclose(gp.sample_y(X[:2], random_state=3), gp.sample_y(X[:2], random_state=3))


def test_no_nT_sized_array_on_the_kronecker_path() -> None:
    rng = np.random.default_rng(9)
    n, T, m = 300, 10, 400
    X = rng.standard_normal((n, 3))
    Y = np.sin(X @ rng.standard_normal((3, T))) + 0.1 * rng.standard_normal((n, T))
    tracemalloc.start()
    gp = MultiTaskGP(n_components=1, max_iter=5).fit(X, Y)
    _, fit_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    gp.predict(rng.standard_normal((m, 3)), return_std=True)
    _, pred_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert gp.method_ == "kronecker"
    one_nT_square = (n * T) ** 2 * 8  # 72 MB; (mT) x (nT) would be 96 MB
    assert fit_peak < one_nT_square / 8 and pred_peak < one_nT_square / 8


@pytest.mark.parametrize(
    ("kwargs", "Yf", "match"),
    [
        ({}, lambda Y: np.c_[Y[:, :2], np.full(len(Y), np.nan)], r"task\(s\) 2 of Y .* no observed value"),
        ({}, lambda Y: np.where(Y > 6, np.inf, Y), "infinity"),
        ({"n_components": 0}, None, "n_components=0 must be 'auto' or a positive integer"),
        ({"n_components": "many"}, None, "n_components='many'"),
        ({"rank": 4}, None, "rank=4 exceeds the number of tasks"),
        ({"method": "svgp"}, None, "method='svgp' is not one of"),
        ({"method": "nystrom", "n_components": 2}, None, "supports n_components=1"),
        ({"kernel": "periodic"}, None, "kernel='periodic' is not a known kernel"),
        ({"optimizer": "adam"}, None, "optimizer='adam'"),
        ({"normalize_y": "yes"}, None, "normalize_y='yes'"),
        ({"max_iter": 0}, None, "max_iter=0 must be a positive integer"),
    ],
)
def test_clear_errors(kwargs: dict[str, object], Yf: object, match: str) -> None:
    X, Y = _task_data(n=20)
    Y = Yf(Y) if callable(Yf) else Y
    with pytest.raises(ValueError, match=match):
        MultiTaskGP(**kwargs).fit(X, Y)  # type: ignore[arg-type]


def test_non_finite_inputs_are_refused() -> None:
    X, Y = _task_data(n=20)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MultiTaskGP().fit(X, Y)
    gp = MultiTaskGP(optimizer=None).fit(np.nan_to_num(X), Y)
    with pytest.raises(ValueError, match="NaN"):
        gp.predict(X)
