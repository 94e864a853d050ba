"""Task-weighting methods: one small file per method, all registered in :data:`WEIGHTINGS`."""

from .aligned_mtl import AlignedMTL
from .base import PROPERTIES, WEIGHTINGS, Weighting, create_weighting
from .dwa import DynamicWeightAverage
from .equal import EqualWeighting
from .fairgrad import FairGrad
from .famo import FAMO
from .gls import GeometricLossStrategy
from .gradnorm import GradNorm
from .gradvac import GradVac
from .modo import MoDo
from .nash_mtl import NashMTL
from .rlw import RandomLossWeighting
from .sdmgrad import SDMGrad
from .static import StaticWeighting
from .stch import STCH
from .uncertainty import UncertaintyWeighting

__all__ = [
    "FAMO",
    "PROPERTIES",
    "STCH",
    "WEIGHTINGS",
    "AlignedMTL",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FairGrad",
    "GeometricLossStrategy",
    "GradNorm",
    "GradVac",
    "MoDo",
    "NashMTL",
    "RandomLossWeighting",
    "SDMGrad",
    "StaticWeighting",
    "UncertaintyWeighting",
    "Weighting",
    "create_weighting",
]
