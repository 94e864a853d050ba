"""Two-object image datasets (MultiDigits, MultiMNIST, MultiFashion): pairing and composition.

Sener & Koltun (NeurIPS 2018) and Lin et al. (NeurIPS 2019, Pareto MTL) build MultiMNIST and
MultiFashion by putting one image at the top-left and another at the bottom-right of a slightly
larger canvas, so that the two overlap; the tasks are the classes of the two items. The helpers here
do that for any stack of square grey-level images, keeping every source image in one split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from ..tasks import Task
from .base import MultiTaskData
from .batch import TensorSplit

__all__ = [
    "DIGIT_CLASSES",
    "MAX_PAIRS",
    "SPLITS",
    "check_count",
    "check_pairs_per_image",
    "digit_tasks",
    "overlay",
    "pair_splits",
    "pair_within",
]

SPLITS: tuple[str, str, str] = ("train", "val", "test")
MAX_PAIRS = 100
DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
IndexPairs = tuple[NDArray[np.int64], NDArray[np.int64]]


def check_count(name: str, value: int | None, minimum: int, maximum: int | None = None) -> None:
    """Validate an optional integer size parameter; the error names it, its value and a fix."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} must be an int or None, e.g. {name}={max(minimum, 1000)}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name}={value} must be {bound} (or None for all)")


def check_pairs_per_image(pairs_per_image: int) -> None:
    """``pairs_per_image`` must be an int from 1 to :data:`MAX_PAIRS`."""
    if isinstance(pairs_per_image, bool) or not isinstance(pairs_per_image, int):
        raise TypeError(f"pairs_per_image={pairs_per_image!r} must be an int, e.g. pairs_per_image=3")
    if not 1 <= pairs_per_image <= MAX_PAIRS:
        raise ValueError(f"pairs_per_image={pairs_per_image} must be between 1 and {MAX_PAIRS}, e.g. 3")


def pair_within(parts: Sequence[NDArray[np.int64]], *, pairs_per_image: int, split_seed: int) -> dict[str, IndexPairs]:
    """Pair source images within each split: ``{split: (left, right)}``.

    ``parts`` are the train, val and test index arrays (disjoint). Within a split of ``m`` images
    there are ``m * pairs_per_image`` pairs: round ``r`` pairs image ``i`` (left) with image
    ``perm_r[i]`` (right), where ``perm_r`` is a permutation of the split drawn from
    ``numpy.random.default_rng([split_seed, k, pairs_per_image])`` (``k`` = 0, 1, 2 for train,
    val, test). So each image appears ``pairs_per_image`` times on each side, and never in another
    split.
    """
    out: dict[str, IndexPairs] = {}
    for k, (split, idx) in enumerate(zip(SPLITS, parts, strict=True)):
        idx = np.asarray(idx, dtype=np.int64)
        rng = np.random.default_rng([split_seed, k, pairs_per_image])
        lefts, rights = [], []
        for _ in range(pairs_per_image):
            lefts.append(idx)
            rights.append(idx[rng.permutation(len(idx))])
        out[split] = (np.concatenate(lefts).astype(np.int64), np.concatenate(rights).astype(np.int64))
    return out


def overlay(
    images: NDArray[np.float32], left: NDArray[np.int64], right: NDArray[np.int64], offset: int
) -> torch.Tensor:
    """``[N, 1, s + offset, s + offset]`` canvases of ``s x s`` image pairs, combined by pixel-wise max.

    The left image fills ``[0:s, 0:s]`` and the right one ``[offset:, offset:]``; where they overlap
    the brighter pixel wins (the images are non-negative, background 0).
    """
    s = int(images.shape[1])
    canvas = np.zeros((len(left), 1, s + offset, s + offset), dtype=np.float32)
    canvas[:, 0, :s, :s] = images[left]
    np.maximum(canvas[:, 0, offset:, offset:], images[right], out=canvas[:, 0, offset:, offset:])
    return torch.from_numpy(canvas)


def digit_tasks(classes: Sequence[str] = DIGIT_CLASSES) -> list[Task]:
    """The two multiclass tasks ``left`` and ``right`` (default classes ``"0"`` .. ``"9"``)."""
    return [
        Task("left", "multiclass", num_classes=len(classes), classes=tuple(classes)),
        Task("right", "multiclass", num_classes=len(classes), classes=tuple(classes)),
    ]


def pair_splits(
    images: NDArray[np.float32],
    labels: NDArray[np.int64],
    pairs: Mapping[str, IndexPairs],
    *,
    offset: int,
    name: str,
    tasks: list[Task],
    info: dict[str, object],
) -> MultiTaskData:
    """:class:`MultiTaskData` of overlaid image pairs; tasks ``left``/``right`` are the two labels."""
    splits = {}
    for split in SPLITS:
        left, right = pairs[split]
        n = len(left)
        splits[split] = TensorSplit(
            overlay(images, left, right, offset),
            {"left": torch.from_numpy(labels[left]), "right": torch.from_numpy(labels[right])},
            {"left": torch.ones(n, dtype=torch.bool), "right": torch.ones(n, dtype=torch.bool)},
        )
    meta = dict(info)
    meta["source_images"] = {s: len(np.unique(np.concatenate(p))) for s, p in pairs.items()}
    meta["rows"] = {s: len(p[0]) for s, p in pairs.items()}
    return MultiTaskData(
        name=name, tasks=tasks, train=splits["train"], val=splits["val"], test=splits["test"], info=meta
    )
