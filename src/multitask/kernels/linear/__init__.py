"""Regularized linear multi-task learning (numpy/scipy, scikit-learn contract).

Each estimator fits one linear model per task, ``y_t ~ X w_t + b_t``, with a penalty on the coefficient
matrix ``W = [w_1 ... w_T]`` that couples the tasks:

- :class:`TraceNormRegressor` / :class:`TraceNormClassifier`: trace norm, a shared low-rank subspace;
- :class:`L21Regressor` / :class:`L21Classifier`: L2,1 norm, joint feature selection;
- :class:`ClusteredRegressor` / :class:`ClusteredClassifier`: convex clustered MTL (Zhou, Chen & Ye 2011);
- :class:`MeanRegularizedRegressor` / :class:`MeanRegularizedClassifier`: pull toward the mean task
  (Evgeniou & Pontil 2004).

``Y`` is (n_samples, n_tasks) with NaN for a missing output; the loss sums over observed entries only.
"""

from .clustered import ClusteredClassifier, ClusteredRegressor
from .l21 import L21Classifier, L21Regressor
from .mean_regularized import MeanRegularizedClassifier, MeanRegularizedRegressor
from .trace_norm import TraceNormClassifier, TraceNormRegressor

__all__ = [
    "ClusteredClassifier",
    "ClusteredRegressor",
    "L21Classifier",
    "L21Regressor",
    "MeanRegularizedClassifier",
    "MeanRegularizedRegressor",
    "TraceNormClassifier",
    "TraceNormRegressor",
]
