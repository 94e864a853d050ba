"""Shared fixtures: a small synthetic multi-task dataset with missing labels."""

from __future__ import annotations

import pytest
import torch

from multitask.data.base import MultiTaskData
from multitask.data.batch import TensorSplit
from multitask.tasks import Task


def make_synthetic(n: int = 240, d: int = 6, seed: int = 0, missing: float = 0.2) -> MultiTaskData:
    """Three related tasks on shared inputs: regression, binary and 3-class; ~20% labels missing."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    s = x @ w
    targets = {
        "reg": s + 0.1 * torch.randn(n, generator=g),
        "bin": (s + 0.3 * torch.randn(n, generator=g) > 0).float(),
        "cls": torch.bucketize(s, torch.tensor([-0.5, 0.5])),
    }
    masks = {k: torch.rand(n, generator=g) > missing for k in targets}
    for k in targets:  # placeholder where missing
        targets[k] = torch.where(masks[k], targets[k], torch.zeros_like(targets[k]))
    tasks = [Task("reg", "regression"), Task("bin", "binary"), Task("cls", "multiclass", num_classes=3)]
    a, b = int(n * 0.6), int(n * 0.8)

    def split(lo: int, hi: int) -> TensorSplit:
        return TensorSplit(x[lo:hi], {k: v[lo:hi] for k, v in targets.items()}, {k: v[lo:hi] for k, v in masks.items()})

    return MultiTaskData("synthetic", tasks, split(0, a), split(a, b), split(b, n))


@pytest.fixture
def synthetic() -> MultiTaskData:
    return make_synthetic()
