"""Task-weighting methods: one small file per method, all registered in :data:`WEIGHTINGS`."""

from .base import PROPERTIES, WEIGHTINGS, Weighting, create_weighting
from .dwa import DynamicWeightAverage
from .equal import EqualWeighting
from .famo import FAMO
from .gls import GeometricLossStrategy
from .gradnorm import GradNorm
from .modo import MoDo
from .rlw import RandomLossWeighting
from .sdmgrad import SDMGrad
from .static import StaticWeighting
from .uncertainty import UncertaintyWeighting

__all__ = [
    "FAMO",
    "PROPERTIES",
    "WEIGHTINGS",
    "DynamicWeightAverage",
    "EqualWeighting",
    "GeometricLossStrategy",
    "GradNorm",
    "MoDo",
    "RandomLossWeighting",
    "SDMGrad",
    "StaticWeighting",
    "UncertaintyWeighting",
    "Weighting",
    "create_weighting",
]
