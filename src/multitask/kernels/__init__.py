"""Multi-task kernel and regularized linear estimators (numpy/scipy only, scikit-learn contract; no torch).

- :class:`MultiTaskKernelRidge`: separable kernels ``k(x, x') B``, sums of them, learned ``B``,
  Kronecker and conjugate-gradient solves, missing outputs.
- :class:`MultiTaskGP`: multi-task Gaussian processes (ICM and LMC), per-task noise, hyperparameters
  by marginal likelihood with analytic gradients, missing outputs and a Nyström path for large n.
- Regularized linear MTL (:mod:`multitask.kernels.linear`): trace norm, L2,1, clustered and
  mean-regularized, as regressors and logistic classifiers.
"""

from .gp import MultiTaskGP
from .kernel_ridge import MultiTaskKernelRidge
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
    "MultiTaskGP",
    "MultiTaskKernelRidge",
    "TraceNormClassifier",
    "TraceNormRegressor",
]
