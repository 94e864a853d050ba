"""Task-weighting methods: one small file per method, all registered in :data:`WEIGHTINGS`."""

from .aligned_mtl import AlignedMTL
from .base import PROPERTIES, WEIGHTINGS, Weighting, create_weighting
from .cagrad import CAGrad
from .chain import Chain, chain
from .dualproj import DualProj
from .dwa import DynamicWeightAverage
from .equal import EqualWeighting
from .fairgrad import FairGrad
from .famo import FAMO
from .gls import GeometricLossStrategy
from .gradnorm import GradNorm
from .gradvac import GradVac
from .imtl import IMTL, IMTLG
from .mgda import MGDA
from .modo import MoDo
from .nash_mtl import NashMTL
from .normalize import NormalizeGradients
from .pcgrad import PCGrad
from .rlw import RandomLossWeighting
from .sdmgrad import SDMGrad
from .static import StaticWeighting
from .stch import STCH
from .uncertainty import UncertaintyWeighting
from .upgrad import UPGrad

__all__ = [
    "FAMO",
    "IMTL",
    "IMTLG",
    "MGDA",
    "PROPERTIES",
    "STCH",
    "WEIGHTINGS",
    "AlignedMTL",
    "CAGrad",
    "Chain",
    "DualProj",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FairGrad",
    "GeometricLossStrategy",
    "GradNorm",
    "GradVac",
    "MoDo",
    "NashMTL",
    "NormalizeGradients",
    "PCGrad",
    "RandomLossWeighting",
    "SDMGrad",
    "StaticWeighting",
    "UPGrad",
    "UncertaintyWeighting",
    "Weighting",
    "chain",
    "create_weighting",
]
