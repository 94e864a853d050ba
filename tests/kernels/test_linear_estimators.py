"""scikit-learn contract, classifier conventions, warm starts, paths, convergence warnings and errors of the
regularized linear multi-task estimators."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from multitask.kernels.linear import (
    ClusteredClassifier,
    ClusteredRegressor,
    L21Classifier,
    L21Regressor,
    MeanRegularizedClassifier,
    MeanRegularizedRegressor,
    TraceNormClassifier,
    TraceNormRegressor,
)

REGRESSORS = [TraceNormRegressor, L21Regressor, ClusteredRegressor, MeanRegularizedRegressor]
CLASSIFIERS = [TraceNormClassifier, L21Classifier, ClusteredClassifier, MeanRegularizedClassifier]
ALL = REGRESSORS + CLASSIFIERS


@parametrize_with_checks([Est() for Est in ALL])
def test_sklearn_compatible(estimator, check) -> None:
    check(estimator)


def _data(classification: bool, seed: int = 0, n: int = 80, d: int = 6, T: int = 4, missing: float = 0.2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 3 + 1
    W = rng.standard_normal((d, 1)) @ rng.standard_normal((1, T)) + 0.2 * rng.standard_normal((d, T))
    Z = X @ W + rng.standard_normal((n, T))
    Y = (np.median(Z, axis=0) < Z).astype(float) if classification else Z
    Y[rng.random((n, T)) < missing] = np.nan
    return X, Y


@pytest.mark.parametrize("Est", ALL)
def test_pipeline_and_grid_search_with_missing_outputs(Est) -> None:
    X, Y = _data(Est in CLASSIFIERS)
    name = Est.__name__.lower()
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), Est()), {f"{name}__alpha": [0.001, 0.01, 0.1]}, cv=KFold(3)
    ).fit(X, Y)
    assert grid.best_params_[f"{name}__alpha"] in (0.001, 0.01, 0.1)
    assert np.isfinite(grid.best_score_)
    pred = grid.predict(X)
    assert pred.shape == Y.shape


def test_regressor_score_is_mean_r2_over_observed_entries() -> None:
    from sklearn.metrics import r2_score

    X, Y = _data(False)
    est = TraceNormRegressor(alpha=0.05).fit(X, Y)
    P = est.predict(X)
    mask = ~np.isnan(Y)
    expected = np.mean([r2_score(Y[mask[:, t], t], P[mask[:, t], t]) for t in range(Y.shape[1])])
    np.testing.assert_allclose(est.score(X, Y), expected)
    Yfull = np.where(mask, Y, P + 1.0)
    np.testing.assert_allclose(est.score(X, Yfull), r2_score(Yfull, P))


def test_one_dimensional_y_gives_one_dimensional_predictions() -> None:
    X, Y = _data(False)
    y = Y[:, 0]
    est = L21Regressor(alpha=0.05).fit(X, y)
    assert est.predict(X).shape == (X.shape[0],)
    assert est.coef_.shape == (1, X.shape[1]) and est.intercept_.shape == (1,)
    two = L21Regressor(alpha=0.05).fit(X, y[:, None])
    assert two.predict(X).shape == (X.shape[0], 1)
    np.testing.assert_allclose(two.coef_, est.coef_)


def test_classifier_contract_single_task_with_string_labels() -> None:
    X, Y = _data(True, missing=0.0)
    y = np.where(Y[:, 0] == 1, "spam", "ham")
    clf = TraceNormClassifier(alpha=0.01).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, ["ham", "spam"])
    proba = clf.predict_proba(X)
    assert proba.shape == (X.shape[0], 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba)
    assert clf.decision_function(X).shape == (X.shape[0],)
    assert clf.score(X, y) > 0.8


def test_classifier_contract_multi_task_with_missing_labels() -> None:
    X, Y = _data(True)
    clf = L21Classifier(alpha=0.01).fit(X, Y)
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    pred, proba, dec = clf.predict(X), clf.predict_proba(X), clf.decision_function(X)
    assert pred.shape == proba.shape == dec.shape == Y.shape
    assert pred.dtype.kind == "i"
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba)
    mask = ~np.isnan(Y)
    accuracies = [np.mean(pred[mask[:, t], t] == Y[mask[:, t], t]) for t in range(Y.shape[1])]
    np.testing.assert_allclose(clf.score(X, Y), np.mean(accuracies))
    assert clf.score(X, Y) > 0.8


@pytest.mark.parametrize("Est", [TraceNormRegressor, L21Regressor, ClusteredRegressor, TraceNormClassifier])
def test_warm_start_reaches_the_same_solution_in_fewer_iterations(Est) -> None:
    X, Y = _data(Est in CLASSIFIERS)
    cold = Est(alpha=0.02, tol=1e-9).fit(X, Y)
    warm = Est(alpha=0.03, tol=1e-9, warm_start=True).fit(X, Y)
    warm.set_params(alpha=0.02).fit(X, Y)
    np.testing.assert_allclose(warm.coef_, cold.coef_, rtol=1e-5, atol=1e-7)
    assert warm.n_iter_ < cold.n_iter_


@pytest.mark.parametrize("Est", ALL)
def test_path_matches_independent_fits_and_leaves_the_estimator_unfitted(Est) -> None:
    X, Y = _data(Est in CLASSIFIERS)
    est = Est(tol=1e-11, max_iter=100_000)
    unsorted = [0.003, 0.03, 0.01] if Est in CLASSIFIERS else [0.001, 0.1, 0.01]
    alphas, coefs, intercepts = est.path(X, Y, unsorted)
    np.testing.assert_array_equal(alphas, sorted(unsorted, reverse=True))
    assert coefs.shape == (3, Y.shape[1], X.shape[1]) and intercepts.shape == (3, Y.shape[1])
    assert not hasattr(est, "coef_")
    for a, coef, b in zip(alphas, coefs, intercepts, strict=True):
        single = clone(est).set_params(alpha=a).fit(X, Y)
        np.testing.assert_allclose(coef, single.coef_, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(b, single.intercept_, rtol=1e-6, atol=1e-8)


def test_trace_norm_path_lowers_rank_as_alpha_grows() -> None:
    X, Y = _data(False, n=200, T=6)
    est = TraceNormRegressor()
    amax = est.alpha_max(X, Y)
    _, coefs, _ = est.path(X, Y, amax * np.array([1.0, 0.3, 0.1, 0.01]))
    ranks = [np.linalg.matrix_rank(c, tol=1e-8) for c in coefs]
    assert ranks[0] == 0 and ranks == sorted(ranks) and ranks[-1] >= 2


@pytest.mark.parametrize("Est", [TraceNormRegressor, ClusteredRegressor, L21Classifier])
def test_convergence_warning_when_max_iter_is_reached(Est) -> None:
    X, Y = _data(Est in CLASSIFIERS)
    with pytest.warns(ConvergenceWarning, match=r"did not converge.*max_iter=2"):
        Est(max_iter=2, tol=1e-12).fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        Est().fit(X, Y)


@pytest.mark.parametrize("Est", ALL)
def test_clear_errors(Est) -> None:
    classification = Est in CLASSIFIERS
    X, Y = _data(classification)
    with pytest.raises(ValueError, match=r"X has 80 samples but Y has 79 rows"):
        Est().fit(X, Y[:-1])
    bad = Y.copy()
    bad[:, 2] = np.nan
    with pytest.raises(ValueError, match=re.escape("no observed value (all NaN) in task column(s) [2]")):
        Est().fit(X, bad)
    for value in (np.nan, np.inf):
        Xbad = X.copy()
        Xbad[3, 1] = value
        with pytest.raises(ValueError, match="Input X contains"):
            Est().fit(Xbad, Y)
    with pytest.raises(ValueError, match=r"alpha must be a finite real number >= 0, got -1"):
        Est(alpha=-1).fit(X, Y)
    for alpha in (np.nan, "big", True):
        with pytest.raises(ValueError, match="alpha must be a finite real number"):
            Est(alpha=alpha).fit(X, Y)
    with pytest.raises(ValueError, match="tol must be"):
        Est(tol=0.0).fit(X, Y)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1, got 0"):
        Est(max_iter=0).fit(X, Y)
    with pytest.raises(ValueError, match=r"Y must be 1-D .* got an array with shape \(80, 4, 1\)"):
        Est().fit(X, Y[:, :, None])
    fitted = Est().fit(X, Y)
    with pytest.raises(ValueError, match="X has 5 features, but .* is expecting 6 features"):
        fitted.predict(X[:, :5])


def test_model_specific_errors() -> None:
    X, Y = _data(False)
    with pytest.raises(ValueError, match=r"ridge must be > 0 when alpha > 0 .* got ridge=0 with alpha=1"):
        ClusteredRegressor(alpha=1.0, ridge=0).fit(X, Y)
    with pytest.raises(ValueError, match=r"ridge must be a finite real number >= 0, got -0.5"):
        MeanRegularizedRegressor(ridge=-0.5).fit(X, Y)
    ClusteredRegressor(alpha=0.0, ridge=0.0).fit(X, Y)  # plain least squares is allowed
    with pytest.raises(ValueError, match=r"n_clusters must be a finite real number > 0, got 0"):
        ClusteredRegressor(n_clusters=0).fit(X, Y)
    with pytest.raises(ValueError, match="solver must be 'auto', 'closed_form' or 'apg', got 'lbfgs'"):
        MeanRegularizedRegressor(solver="lbfgs").fit(X, Y)
    with pytest.raises(ValueError, match="Y contains infinity"):
        L21Regressor().fit(X, np.where(np.isnan(Y), np.inf, Y))
    with pytest.raises(ValueError, match="requires y to be passed"):
        L21Regressor().fit(X, None)


def test_classifier_label_errors() -> None:
    X, Y = _data(True)
    three = Y.copy()
    three[int(np.flatnonzero(Y[:, 1] == 1)[0]), 1] = 2.0
    with pytest.raises(
        ValueError, match=r"2-D Y must hold 0/1 labels per task .* task column 1 holds \[0.0, 1.0, 2.0\]"
    ):
        L21Classifier().fit(X, three)
    one_class = Y.copy()
    one_class[:, 3] = np.where(np.isnan(Y[:, 3]), np.nan, 1.0)
    with pytest.raises(ValueError, match="Task column 3 of Y has only one class"):
        L21Classifier().fit(X, one_class)
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        TraceNormClassifier().fit(X, np.arange(X.shape[0]) % 3)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        TraceNormClassifier().fit(X, np.linspace(0, 1, X.shape[0]))
    with pytest.raises(ValueError, match="y has only one class"):
        TraceNormClassifier().fit(X, np.ones(X.shape[0]))


@pytest.mark.parametrize("Est", ALL)
def test_shifting_x_moves_only_the_intercepts_and_stays_fast(Est) -> None:
    """Intercepts are unpenalized, so X + s gives the same coef_ and intercept_ - coef_ @ s; the solvers
    centre internally, so an uncentred X (here at 100) does not slow them down."""
    X, Y = _data(Est in CLASSIFIERS)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    shift = np.full(X.shape[1], 100.0)
    a = Est(tol=1e-12, max_iter=100_000).fit(X, Y)
    b = Est(tol=1e-12, max_iter=100_000).fit(X + shift, Y)
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b.intercept_, a.intercept_ - a.coef_ @ shift, rtol=1e-6, atol=1e-6)
    assert b.n_iter_ <= 2 * a.n_iter_ + 10
