"""The container every dataset loader returns, and the dataset registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..registry import Registry
from ..tasks import Task
from .batch import TensorSplit

__all__ = ["DATASETS", "MissingDependencyError", "MultiTaskData"]


class MissingDependencyError(ImportError):
    """An optional dependency (a dataset package, an extra) is not installed; says how to install it."""


@dataclass
class MultiTaskData:
    """A multi-task dataset split into train, validation and test.

    Attributes:
        name: dataset name (registry key, or the file name for CSV/Parquet data).
        tasks: the tasks, in output order.
        train, val, test: the splits; splits are fixed by the dataset's ``split_seed`` and never
            depend on the training seed.
        feature_names: input column names for tabular data (None for images).
        preprocessor: the fitted input/target preprocessing for tabular data (None otherwise);
            it is fitted on the training split only.
        info: provenance: source package, license, sizes, notes.
    """

    name: str
    tasks: list[Task]
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    feature_names: list[str] | None = None
    preprocessor: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name!r}: duplicate task names {names}")
        for split_name, split in (("train", self.train), ("val", self.val), ("test", self.test)):
            if split.task_names != names:
                raise ValueError(
                    f"dataset {self.name!r}: {split_name} split has tasks {split.task_names}, expected {names}"
                )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""
        return tuple(int(s) for s in self.train.inputs.shape[1:])

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        from ..registry import UnknownNameError, unknown_name_message

        raise UnknownNameError(unknown_name_message("task", name, self.task_names))

    def select_tasks(self, names: list[str]) -> MultiTaskData:
        """The same data restricted to the tasks ``names`` (order kept as given)."""
        tasks = [self.task(n) for n in names]
        return MultiTaskData(
            self.name,
            tasks,
            self.train.select_tasks(names),
            self.val.select_tasks(names),
            self.test.select_tasks(names),
            self.feature_names,
            self.preprocessor,
            dict(self.info),
        )

    def summary(self) -> dict[str, Any]:
        """Sizes and label counts, JSON-able."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "tasks": [t.to_dict() for t in self.tasks],
            "rows": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "labelled_train_rows": {n: int(self.train.masks[n].sum()) for n in self.task_names},
            **({"info": self.info} if self.info else {}),
        }


DATASETS: Registry[Callable[..., MultiTaskData]] = Registry(
    "dataset", list_hint="Run `multitask list datasets` to see them, or pass --data FILE.csv."
)
