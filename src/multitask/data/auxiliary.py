"""Auxiliary tasks: trained with the others, left out of Δm, model selection and serving.

Two ways to get one:

* :func:`mark_auxiliary` turns existing tasks into auxiliary ones (their labels help the shared
  representation; only the other tasks are reported);
* :func:`add_reconstruction` adds an input-reconstruction task: the model predicts its own
  flattened input, a regression target of width ``prod(input_shape)`` with a per-sample mean
  squared error: the "supervised autoencoder" of Le, Patterson & White, "Supervised
  autoencoders: Improving generalization performance with unsupervised regularizers", NeurIPS
  2018 (https://papers.nips.cc/paper/7296). Its head is built like any other from
  ``task.output_dim``, so it works with every architecture.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from ..tasks import Task
from .base import MultiTaskData
from .batch import TensorSplit

__all__ = ["add_reconstruction", "mark_auxiliary", "reconstruction_task"]


def reconstruction_task(input_shape: Sequence[int], *, name: str = "reconstruction") -> Task:
    """An auxiliary regression task whose target is the flattened input (``prod(input_shape)`` outputs)."""
    dim = math.prod(int(s) for s in input_shape)
    if dim < 1:
        raise ValueError(f"reconstruction_task: input_shape={list(input_shape)} has no features")
    return Task(name, "regression", target_dim=dim, metrics=("mse", "mae"), auxiliary=True)


def _with_reconstruction(split: TensorSplit, name: str) -> TensorSplit:
    n = len(split)
    target = split.inputs.reshape(n, -1).float()  # a view of the inputs when they are contiguous float32
    return dataclasses.replace(
        split,
        targets={**split.targets, name: target},
        masks={**split.masks, name: torch.ones(n, dtype=torch.bool)},
    )


def add_reconstruction(data: MultiTaskData, *, name: str = "reconstruction") -> MultiTaskData:
    """``data`` plus an auxiliary input-reconstruction task ``name``, labelled on every row.

    Works on multi-input data too (every source's rows are labelled; a multi-input training split
    keeps its sampler).
    """
    if name in data.task_names:
        raise ValueError(
            f"dataset {data.name!r} already has a task {name!r}; pick another name for the reconstruction task"
        )
    task = reconstruction_task(data.input_shape, name=name)
    return dataclasses.replace(
        data,
        tasks=[*data.tasks, task],
        train=_with_reconstruction(data.train, name),
        val=_with_reconstruction(data.val, name),
        test=_with_reconstruction(data.test, name),
        info={**data.info, "auxiliary_reconstruction": name},
    )


def mark_auxiliary(data: MultiTaskData, names: Sequence[str]) -> MultiTaskData:
    """``data`` with the tasks ``names`` marked auxiliary (trained, not evaluated in Δm or served).

    Raises:
        UnknownNameError: a name that is not a task of ``data`` (with the closest names).
        ValueError: every task would become auxiliary (nothing would be left to evaluate).
    """
    chosen = {data.task(n).name for n in names}  # data.task raises "did you mean" errors
    if all(t.name in chosen or t.auxiliary for t in data.tasks):
        raise ValueError(
            f"marking {sorted(chosen)} auxiliary leaves dataset {data.name!r} with no main task; keep at least one"
        )
    tasks = [dataclasses.replace(t, auxiliary=True) if t.name in chosen else t for t in data.tasks]
    return dataclasses.replace(data, tasks=tasks)
