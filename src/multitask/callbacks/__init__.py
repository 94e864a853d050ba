"""Callbacks: progress, and the hook interface for loggers and checkpointing."""

from .base import Callback
from .progress import ProgressBar
from .relations import TaskRelations

__all__ = ["Callback", "ProgressBar", "TaskRelations"]
