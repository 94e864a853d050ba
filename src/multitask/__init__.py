"""multitask: multi-task learning for PyTorch.

The names most users need::

    from multitask import Task, HardSharing, Trainer, create_weighting, load_dataset, load_table, delta_m
    predictor = multitask.load("runs/NAME")      # a trained model: predictor.predict(frame)
"""

__version__ = "0.1.0"

from .architectures import ARCHITECTURES, HardSharing, MultiTaskModel, build_model
from .artifact import load
from .data import DATASETS, Batch, TensorSplit, load_dataset, load_table
from .data.base import MultiTaskData
from .engine import Engine
from .metrics import delta_m
from .tasks import Task
from .trainer import Trainer, evaluate
from .weighting import WEIGHTINGS, Weighting, create_weighting

__all__ = [
    "ARCHITECTURES",
    "DATASETS",
    "WEIGHTINGS",
    "Batch",
    "Engine",
    "HardSharing",
    "MultiTaskData",
    "MultiTaskModel",
    "Task",
    "TensorSplit",
    "Trainer",
    "Weighting",
    "__version__",
    "build_model",
    "create_weighting",
    "delta_m",
    "evaluate",
    "load",
    "load_dataset",
    "load_table",
]
