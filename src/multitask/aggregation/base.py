"""The :class:`Aggregator` interface: methods that need the Jacobian itself, not only its Gramian.

Most methods output one weight per task and are :class:`~multitask.weighting.Weighting` s. A few
combine the task gradients non-linearly (GradDrop drops gradient *entries* by sign; ConFIG solves
for a direction with equal cosines; MoCo and DB-MTL track running gradient estimates). They map
the Jacobian ``J`` (``[T, P]``, one row per task) and the losses to an update vector ``[P]``.
The engine computes ``J`` for the shared parameters ("exact" mode) or for the shared features
("features" mode), calls the aggregator, and writes the result as the shared gradient; each task
head receives the gradient of its own loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor, nn

from ..registry import signature_params
from ..weighting.base import PROPERTIES, WEIGHTINGS, check_num_tasks

__all__ = ["Aggregator", "register_aggregator"]


class Aggregator(nn.Module, ABC):
    """Base class of methods that aggregate the task Jacobian into one update vector.

    Subclasses set ``name`` (registry key, shared with the weightings), ``properties``, take
    ``num_tasks`` first and typed keyword-only hyperparameters stored under the same names, and
    keep state in buffers. They never call ``backward`` nor read ``.grad``.
    """

    name: ClassVar[str] = ""
    requires_gramian: ClassVar[bool] = False  # aggregators receive the Jacobian itself
    requires_jacobian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset()
    #: the method keeps state as wide as the Jacobian (e.g. running gradient estimates ``[T, P]``),
    #: so ``P`` must not change between steps: exact mode only (in features mode ``P`` is the batch
    #: size times the feature width, and the last batch of an epoch is smaller).
    jacobian_state: ClassVar[bool] = False

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = check_num_tasks(type(self).__name__, num_tasks)

    @abstractmethod
    def forward(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """The update vector ``[P]`` from the Jacobian ``[T, P]`` and the detached losses ``[T]``."""

    def regularizer(self) -> Tensor | None:
        return None

    def on_epoch_end(self) -> None:
        """Called by the trainer after every training epoch."""

    def _check_inputs(self, jacobian: Tensor, losses: Tensor) -> None:
        if jacobian.dim() != 2 or jacobian.shape[0] != self.num_tasks:
            raise ValueError(
                f"{type(self).__name__}: jacobian has shape {tuple(jacobian.shape)}; expected ({self.num_tasks}, P)"
            )
        if losses.shape != (self.num_tasks,):
            raise ValueError(
                f"{type(self).__name__}: losses has shape {tuple(losses.shape)}; expected ({self.num_tasks},)"
            )

    def hyperparameters(self) -> dict[str, Any]:
        return {p.name: getattr(self, p.name) for p in signature_params(type(self)) if p.name != "num_tasks"}

    def for_tasks(self, num_tasks: int) -> Aggregator:
        """A fresh instance with the same hyperparameters for ``num_tasks`` tasks."""
        return type(self)(num_tasks, **self.hyperparameters())

    def extra_repr(self) -> str:
        return ", ".join([f"num_tasks={self.num_tasks}"] + [f"{k}={v!r}" for k, v in self.hyperparameters().items()])


def register_aggregator(cls: type[Aggregator]) -> type[Aggregator]:
    """Class decorator: register an aggregator in the method registry under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute `name`")
    unknown = cls.properties - PROPERTIES
    if unknown:
        raise ValueError(f"{cls.__name__} declares unknown properties {sorted(unknown)}")
    WEIGHTINGS.add(cls.name, cls)  # type: ignore[arg-type]
    return cls
