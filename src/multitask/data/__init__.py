"""Multi-task data: batches, splits, built-in datasets, the CSV/Parquet loader, multi-input data and samplers."""

from typing import Any

from . import adult as _adult  # noqa: F401  (registers "adult")
from . import movielens as _movielens  # noqa: F401  (registers "movielens")
from . import multidigits as _multidigits  # noqa: F401  (registers "multidigits")
from . import multifashion as _multifashion  # noqa: F401  (registers "multifashion")
from . import multimnist as _multimnist  # noqa: F401  (registers "multimnist")
from . import qm9 as _qm9  # noqa: F401  (registers "qm9")
from . import yeast as _yeast  # noqa: F401  (registers "yeast")
from .auxiliary import add_reconstruction, mark_auxiliary, reconstruction_task
from .base import DATASETS, MissingDependencyError, MultiTaskData
from .batch import Batch, TensorSplit
from .multi_input import SampledSplit, combine, is_multi_input, set_sampler
from .samplers import SAMPLERS, TaskSampler, create_sampler
from .splits import holdout_indices, split_indices
from .tabular import (
    TabularPreprocessor,
    TargetEncoder,
    TaskSpec,
    from_frame,
    load_table,
    parse_task_spec,
    read_table,
)

__all__ = [
    "DATASETS",
    "SAMPLERS",
    "Batch",
    "MissingDependencyError",
    "MultiTaskData",
    "SampledSplit",
    "TabularPreprocessor",
    "TargetEncoder",
    "TaskSampler",
    "TaskSpec",
    "TensorSplit",
    "add_reconstruction",
    "combine",
    "create_sampler",
    "from_frame",
    "holdout_indices",
    "is_multi_input",
    "load_dataset",
    "load_table",
    "mark_auxiliary",
    "parse_task_spec",
    "read_table",
    "reconstruction_task",
    "set_sampler",
    "split_indices",
]


def load_dataset(name: str, **params: Any) -> MultiTaskData:
    """The built-in dataset ``name`` built with keyword ``params`` (see ``multitask list datasets``)."""
    data: MultiTaskData = DATASETS.create(name, **params)
    return data
