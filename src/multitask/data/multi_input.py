"""Multi-input tasks: tasks from different datasets (same input shape), mixed by a task sampler.

:func:`combine` joins source datasets, each labelling its own tasks, into one
:class:`~multitask.data.base.MultiTaskData`:

* its validation and test splits are the row-wise union of the sources' splits, each row
  labelled only for the tasks of its source (the other tasks' masks are ``False``);
* its training split is a :class:`SampledSplit`: the same union of training rows, but each
  epoch's batches are drawn by a :class:`~multitask.data.samplers.TaskSampler`.

One epoch is ``N = Σ_k n_k`` drawn rows (``n_k``: the training rows of source ``k``), in
``ceil(N / batch_size)`` batches, the last one smaller, exactly as for a single dataset. The
sampler decides how many of the ``N`` rows come from each source and in which order (``unit="row"``:
the source of every row, so batches mix the sources; ``unit="batch"``: the source of every whole
batch). Within a source, rows are taken in a random order without replacement; a source drawn
more than ``n_k`` times in an epoch starts a fresh permutation after each full pass. Everything is a
function of ``(seed, epoch)`` only, so ``batches(start=b)`` resumes an epoch at batch ``b`` with
exactly the batches an uninterrupted epoch would have produced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ..tasks import Task
from .base import MultiTaskData
from .batch import Batch, TensorSplit
from .samplers import TaskSampler, create_sampler

__all__ = ["SampledSplit", "combine", "is_multi_input", "set_sampler"]

_STREAM_TAG = 0x6D756C7469  # separates this module's random streams from any other seeded by (seed, epoch)


def _seed_words(seed: int) -> int:
    return int(seed) % (1 << 64)  # numpy seed sequences take non-negative integers


@dataclass
class SampledSplit(TensorSplit):
    """A training split whose epochs are drawn from several source datasets by a sampler.

    ``inputs``, ``targets`` and ``masks`` hold the row-wise union of the sources' training rows
    (source after source, in the order of ``sources``), so the split can be evaluated like any
    :class:`TensorSplit`. ``batches(shuffle=True, ...)`` draws an epoch as described in
    :mod:`multitask.data.multi_input`; ``batches(shuffle=False)`` walks the union in order (every
    row once, as evaluation wants).

    Attributes:
        sources: ``{source name: number of training rows}``, in row order.
        sampler: the :class:`TaskSampler` that picks each draw's source.
    """

    sources: dict[str, int]
    sampler: TaskSampler

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.sampler, TaskSampler):
            raise TypeError(f"SampledSplit: sampler={self.sampler!r} must be a TaskSampler (see create_sampler)")
        if not self.sources or any(int(n) < 1 for n in self.sources.values()):
            raise ValueError(f"SampledSplit: sources={self.sources!r} must name one or more non-empty sources")
        total = sum(int(n) for n in self.sources.values())
        if total != len(self):
            raise ValueError(f"SampledSplit: the sources hold {total} rows but the split has {len(self)}")

    # --- structure ---------------------------------------------------------------------------
    @property
    def source_slices(self) -> dict[str, slice]:
        """``{source name: its rows of the union}``."""
        out, lo = {}, 0
        for name, n in self.sources.items():
            out[name] = slice(lo, lo + int(n))
            lo += int(n)
        return out

    def with_sampler(self, sampler: TaskSampler) -> SampledSplit:
        """The same rows drawn by another sampler."""
        return dataclasses.replace(self, sampler=sampler)

    def select_tasks(self, names: Sequence[str]) -> TensorSplit:
        """Only the tasks ``names``, and only the sources that label at least one of them.

        With one source left the result is a plain :class:`TensorSplit` of that source's rows (every
        sampler draws a single source's rows alike), so a single-task baseline trains exactly as on
        its own dataset.
        """
        keep = [
            (name, part)
            for name, part in self.source_slices.items()
            if any(bool(self.masks[t][part].any()) for t in names)
        ]
        if not keep:
            raise ValueError(f"no source of this split labels any of the tasks {list(names)}")
        if len(keep) == 1:
            part = keep[0][1]
            return TensorSplit(
                self.inputs[part], {n: self.targets[n][part] for n in names}, {n: self.masks[n][part] for n in names}
            )
        if len(keep) == len(self.sources):
            rows: Any = slice(None)
        else:
            rows = torch.cat([torch.arange(p.start, p.stop) for _, p in keep])
        return SampledSplit(
            self.inputs[rows],
            {n: self.targets[n][rows] for n in names},
            {n: self.masks[n][rows] for n in names},
            {name: self.sources[name] for name, _ in keep},
            self.sampler,
        )

    # --- sampling ----------------------------------------------------------------------------
    def source_schedule(self, batch_size: int, *, seed: int, epoch: int) -> NDArray[np.int64]:
        """The source index of every row of the epoch, ``[N]`` (batch ``b`` is rows ``b*B:(b+1)*B``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        sizes = [int(n) for n in self.sources.values()]
        n = len(self)
        rng = np.random.default_rng([_STREAM_TAG, _seed_words(seed), int(epoch)])
        if self.sampler.unit == "row":
            return self.sampler.schedule(sizes, n, epoch=epoch, rng=rng)
        num = -(-n // batch_size)
        per_batch = self.sampler.schedule(sizes, num, epoch=epoch, rng=rng)
        lengths = np.full(num, batch_size, dtype=np.int64)
        lengths[-1] = n - (num - 1) * batch_size
        return np.repeat(per_batch, lengths)

    def epoch_rows(self, batch_size: int, *, seed: int, epoch: int) -> Tensor:
        """The union's row index of every row drawn in epoch ``epoch``: ``[N]`` int64, a function of ``(seed, epoch)``."""
        src = self.source_schedule(batch_size, seed=seed, epoch=epoch)
        out = np.empty(len(src), dtype=np.int64)
        offset = 0
        for k, size in enumerate(int(s) for s in self.sources.values()):
            where = np.flatnonzero(src == k)
            if len(where):
                passes = math.ceil(len(where) / size)
                stream = np.concatenate(
                    [
                        np.random.default_rng([_STREAM_TAG, _seed_words(seed), int(epoch), k, p]).permutation(size)
                        for p in range(passes)
                    ]
                )
                out[where] = offset + stream[: len(where)]
            offset += size
        return torch.from_numpy(out)

    def order(self, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> Tensor:
        """0..N-1 without shuffling; else the epoch's drawn rows (``unit="row"`` samplers only)."""
        if not shuffle:
            return torch.arange(len(self))
        if self.sampler.unit != "row":
            raise ValueError(
                "the row order of a unit='batch' sampler depends on the batch size; use epoch_rows(batch_size, ...)"
            )
        return self.epoch_rows(1, seed=seed, epoch=epoch)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """The batches of epoch ``epoch`` drawn by the sampler (``shuffle=True``), from batch ``start``.

        ``shuffle=False`` gives the union's rows in order instead, each once (for evaluation).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if not shuffle:
            yield from super().batches(batch_size, shuffle=False, start=start, drop_last=drop_last)
            return
        rows = self.epoch_rows(batch_size, seed=seed, epoch=epoch)
        for b in range(start, self.num_batches(batch_size, drop_last=drop_last)):
            yield self.rows(rows[b * batch_size : (b + 1) * batch_size])


def is_multi_input(data: MultiTaskData) -> bool:
    """Whether ``data`` trains on several sources drawn by a sampler (built by :func:`combine`)."""
    return isinstance(data.train, SampledSplit)


def set_sampler(data: MultiTaskData, sampler: TaskSampler | str) -> MultiTaskData:
    """The multi-input dataset ``data`` with its training rows drawn by ``sampler`` (a sampler or a name)."""
    if isinstance(sampler, str):
        sampler = create_sampler(sampler)
    if not isinstance(data.train, SampledSplit):
        raise ValueError(
            f"dataset {data.name!r} is not multi-input: a task sampler applies to data built by "
            "multitask.data.combine(...) or a multi-input built-in such as 'multidigits_split'"
        )
    info = {**data.info, "sampler": repr(sampler)}
    return dataclasses.replace(data, train=data.train.with_sampler(sampler), info=info)


def _union(splits: Sequence[TensorSplit], tasks: Sequence[Task], owners: Sequence[set[str]]) -> TensorSplit:
    """Row-wise union; rows of a source that does not have task ``t`` get mask False and a zero target."""
    inputs = torch.cat([s.inputs for s in splits])
    targets: dict[str, Tensor] = {}
    masks: dict[str, Tensor] = {}
    for t in tasks:
        like = next(s.targets[t.name] for s, own in zip(splits, owners, strict=True) if t.name in own)
        parts_t, parts_m = [], []
        for s, own in zip(splits, owners, strict=True):
            if t.name in own:
                parts_t.append(s.targets[t.name].to(like.dtype))
                parts_m.append(s.masks[t.name])
            else:
                parts_t.append(torch.zeros((len(s), *like.shape[1:]), dtype=like.dtype))
                parts_m.append(torch.zeros(len(s), dtype=torch.bool))
        targets[t.name] = torch.cat(parts_t)
        masks[t.name] = torch.cat(parts_m)
    return TensorSplit(inputs, targets, masks)


def combine(
    sources: Mapping[str, MultiTaskData],
    *,
    sampler: TaskSampler | str = "proportional",
    name: str | None = None,
) -> MultiTaskData:
    """Join datasets that label different tasks on inputs of one shape into one multi-input dataset.

    Args:
        sources: ``{source name: dataset}``; each dataset's rows are labelled for its own tasks
            only. A task may appear in several sources if its definitions are equal (its rows are
            then labelled in each of them). Sources must be single-input (not themselves combined).
        sampler: the :class:`TaskSampler` (or a registered name, default parameters) that draws
            the training batches; see :mod:`multitask.data.samplers`.
        name: the dataset's name (default: the source names joined by ``+``).

    Returns:
        A :class:`MultiTaskData` whose tasks are the union of the sources' tasks (in source
        order), whose val/test splits are the row-wise unions with label masks and whose train
        split is a :class:`SampledSplit`.

    Raises:
        ValueError: no source, different input shapes, a nested multi-input source, or a task
            defined differently by two sources (the message names them).
    """
    if isinstance(sampler, str):
        sampler = create_sampler(sampler)
    if not sources:
        raise ValueError("combine: sources is empty; give {source name: MultiTaskData, ...}")
    items = list(sources.items())
    shape = items[0][1].input_shape
    tasks: list[Task] = []
    defined_by: dict[str, str] = {}
    for src_name, data in items:
        if not isinstance(src_name, str) or not src_name:
            raise ValueError(f"combine: source names must be non-empty strings, got {src_name!r}")
        if not isinstance(data, MultiTaskData):
            raise TypeError(f"combine: source {src_name!r} is a {type(data).__name__}, not a MultiTaskData")
        if isinstance(data.train, SampledSplit):
            raise ValueError(f"combine: source {src_name!r} is itself multi-input; combine its own sources instead")
        if data.input_shape != shape:
            raise ValueError(
                f"combine: source {src_name!r} has inputs of shape {list(data.input_shape)} but source "
                f"{items[0][0]!r} has {list(shape)}; every source must have the same input shape"
            )
        if len(data.train) == 0:
            raise ValueError(f"combine: source {src_name!r} has no training rows")
        for t in data.tasks:
            if t.name not in defined_by:
                defined_by[t.name] = src_name
                tasks.append(t)
                continue
            first = next(x for x in tasks if x.name == t.name)
            if first != t:
                a, b = first.to_dict(), t.to_dict()
                diff = ", ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k])
                raise ValueError(
                    f"combine: task {t.name!r} is defined differently by sources {defined_by[t.name]!r} and "
                    f"{src_name!r} ({diff or 'custom loss or metric objects'}); rename one of them"
                )
    owners = [set(d.task_names) for _, d in items]
    splits: dict[str, TensorSplit] = {}
    for split in ("train", "val", "test"):
        splits[split] = _union([getattr(d, split) for _, d in items], tasks, owners)
    train = splits["train"]
    sampled = SampledSplit(train.inputs, train.targets, train.masks, {n: len(d.train) for n, d in items}, sampler)
    features = items[0][1].feature_names
    if any(d.feature_names != features for _, d in items):
        features = None
    return MultiTaskData(
        name=name or "+".join(n for n, _ in items),
        tasks=tasks,
        train=sampled,
        val=splits["val"],
        test=splits["test"],
        feature_names=features,
        preprocessor=None,
        info={
            "multi_input": True,
            "sampler": repr(sampler),
            "sources": {
                n: {
                    "dataset": d.name,
                    "tasks": d.task_names,
                    "rows": {"train": len(d.train), "val": len(d.val), "test": len(d.test)},
                    **({"info": d.info} if d.info else {}),
                }
                for n, d in items
            },
        },
    )
