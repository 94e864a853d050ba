"""Multi-task architectures: the model interface, one file per architecture, the registry."""

from . import cross_stitch as _cross_stitch  # noqa: F401  (registers "cross_stitch")
from . import dselect_k as _dselect_k  # noqa: F401  (registers "dselect_k")
from . import hard_sharing as _hard_sharing  # noqa: F401  (registers "hard_sharing")
from . import mmoe as _mmoe  # noqa: F401  (registers "mmoe")
from . import mtan as _mtan  # noqa: F401  (registers "mtan")
from . import ple as _ple  # noqa: F401  (registers "cgc" and "ple")
from . import sluice as _sluice  # noqa: F401  (registers "sluice")
from . import soft_sharing as _soft_sharing  # noqa: F401  (registers "soft_sharing")
from .base import ARCHITECTURES, HardSharing, MultiTaskModel, build_model, mlp
from .cross_stitch import CrossStitch
from .dselect_k import DSelectGate, DSelectK
from .mmoe import MMoE
from .mtan import MTAN
from .ple import PLE
from .sluice import Sluice
from .soft_sharing import SoftSharing

__all__ = [
    "ARCHITECTURES",
    "MTAN",
    "PLE",
    "CrossStitch",
    "DSelectGate",
    "DSelectK",
    "HardSharing",
    "MMoE",
    "MultiTaskModel",
    "Sluice",
    "SoftSharing",
    "build_model",
    "mlp",
]
