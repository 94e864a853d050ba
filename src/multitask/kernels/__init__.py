"""Kernel multi-task learning as scikit-learn estimators (numpy and scipy only; no torch).

- :class:`MultiTaskKernelRidge`: separable kernels ``k(x, x') B``, sums of them, learned ``B``,
  Kronecker and conjugate-gradient solves, missing outputs.
- :class:`MultiTaskGP`: multi-task Gaussian processes (ICM and LMC), per-task noise, hyperparameters
  by marginal likelihood with analytic gradients, missing outputs and a Nyström path for large n.
"""

from .gp import MultiTaskGP
from .kernel_ridge import MultiTaskKernelRidge

__all__ = [
    "MultiTaskGP",
    "MultiTaskKernelRidge",
]
