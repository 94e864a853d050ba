"""Multi-task kernel and regularized linear estimators (numpy/scipy, scikit-learn contract)."""

from .linear import (
    ClusteredClassifier,
    ClusteredRegressor,
    L21Classifier,
    L21Regressor,
    MeanRegularizedClassifier,
    MeanRegularizedRegressor,
    TraceNormClassifier,
    TraceNormRegressor,
)

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
