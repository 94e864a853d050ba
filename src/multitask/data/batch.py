"""Batches and in-memory splits of multi-task data.

Targets of missing labels hold a placeholder (0) and a ``False`` mask; nothing downstream reads a
target whose mask is ``False``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Batch", "TensorSplit"]


@dataclass
class Batch:
    """One mini-batch: inputs, a target per task, and a label mask per task.

    Attributes:
        inputs: ``[B, ...]`` input tensor.
        targets: ``{task: Tensor[B]}``; float for binary/regression, int64 for multiclass;
            ``Tensor[B, D]`` for a vector regression target (``Task.target_dim = D``).
        masks: ``{task: BoolTensor[B]}``; ``True`` where the label is present.
    """

    inputs: Tensor
    targets: dict[str, Tensor]
    masks: dict[str, Tensor]

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.inputs.to(device),
            {k: v.to(device) for k, v in self.targets.items()},
            {k: v.to(device) for k, v in self.masks.items()},
        )


@dataclass
class TensorSplit:
    """One split (train, validation or test) held in memory as tensors.

    Attributes:
        inputs: ``[N, ...]`` float32 inputs.
        targets: ``{task: Tensor[N]}`` or ``Tensor[N, D]`` for a vector regression target
            (placeholder 0 where the label is missing).
        masks: ``{task: BoolTensor[N]}``.
    """

    inputs: Tensor
    targets: dict[str, Tensor]
    masks: dict[str, Tensor]

    def __post_init__(self) -> None:
        n = int(self.inputs.shape[0])
        if set(self.targets) != set(self.masks):
            raise ValueError(f"targets {sorted(self.targets)} and masks {sorted(self.masks)} name different tasks")
        for name in self.targets:
            t, m = self.targets[name], self.masks[name]
            if t.shape[0] != n or m.shape[0] != n:
                raise ValueError(
                    f"task {name!r}: inputs have {n} rows but targets have {t.shape[0]} and mask {m.shape[0]}"
                )
            if m.dtype != torch.bool:
                raise TypeError(f"task {name!r}: mask dtype is {m.dtype}; it must be torch.bool")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def task_names(self) -> list[str]:
        return list(self.targets)

    def select_tasks(self, names: Sequence[str]) -> TensorSplit:
        """The same rows with only the tasks ``names`` (used for single-task baselines)."""
        return TensorSplit(self.inputs, {n: self.targets[n] for n in names}, {n: self.masks[n] for n in names})

    def rows(self, index: Tensor) -> Batch:
        """The rows ``index`` as a :class:`Batch`."""
        return Batch(
            self.inputs.index_select(0, index),
            {k: v.index_select(0, index) for k, v in self.targets.items()},
            {k: v.index_select(0, index) for k, v in self.masks.items()},
        )

    def order(self, *, shuffle: bool, seed: int = 0, epoch: int = 0) -> Tensor:
        """The row order of one epoch: a permutation fixed by ``(seed, epoch)``, or 0..N-1."""
        n = len(self)
        if not shuffle:
            return torch.arange(n)
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
        return torch.randperm(n, generator=gen)

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

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
        """Mini-batches of one epoch, starting at batch number ``start`` (for mid-epoch resume).

        The order depends only on ``(seed, epoch)``, so a resumed epoch sees exactly the batches an
        uninterrupted one would.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        order = self.order(shuffle=shuffle, seed=seed, epoch=epoch)
        for b in range(start, self.num_batches(batch_size, drop_last=drop_last)):
            yield self.rows(order[b * batch_size : (b + 1) * batch_size])
