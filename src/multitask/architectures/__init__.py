"""Multi-task architectures: the model interface, one file per architecture, the registry."""

from . import hard_sharing as _hard_sharing  # noqa: F401  (registers "hard_sharing")
from .base import ARCHITECTURES, HardSharing, MultiTaskModel, build_model, mlp

__all__ = ["ARCHITECTURES", "HardSharing", "MultiTaskModel", "build_model", "mlp"]
