"""Callbacks: progress, and the hook interface for loggers and checkpointing."""

from .base import Callback
from .progress import ProgressBar

__all__ = ["Callback", "ProgressBar"]
