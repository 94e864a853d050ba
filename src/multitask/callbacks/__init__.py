"""Callbacks: progress, gradient relations, MLflow and TensorBoard loggers, and the hook interface."""

from .base import Callback
from .mlflow import MLflowLogger
from .progress import ProgressBar
from .relations import TaskRelations
from .tensorboard import TensorBoardLogger

__all__ = ["Callback", "MLflowLogger", "ProgressBar", "TaskRelations", "TensorBoardLogger"]
