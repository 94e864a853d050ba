"""MultiDigits: pairs of scikit-learn's 8x8 digits, one 10-class task per digit."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from ..registry import UnknownNameError, unknown_name_message
from .base import DATASETS, MultiTaskData
from .batch import TensorSplit
from .pairs import check_pairs_per_image, digit_tasks, overlay, pair_within
from .splits import _check_fraction, split_indices

__all__ = ["LAYOUTS", "multidigits", "multidigits_split", "pair_indices"]

LAYOUTS: tuple[str, ...] = ("side", "overlay")


def pair_indices(
    n_images: int, *, pairs_per_image: int, split_seed: int, val_fraction: float, test_fraction: float
) -> dict[str, tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Source-image indices ``{split: (left, right)}`` of every pair.

    The images are split first, so a source image belongs to exactly one split. Within a split of
    ``m`` images there are ``m * pairs_per_image`` pairs: round ``r`` pairs image ``i`` (left) with
    image ``perm_r[i]`` (right), where ``perm_r`` is a seeded permutation of the split. So each
    image appears ``pairs_per_image`` times on each side (see :func:`~multitask.data.pairs.pair_within`).
    """
    parts = split_indices(n_images, seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    return pair_within(parts, pairs_per_image=pairs_per_image, split_seed=split_seed)


def _compose(
    images: NDArray[np.float32], left: NDArray[np.int64], right: NDArray[np.int64], layout: str
) -> torch.Tensor:
    if layout == "overlay":
        return overlay(images, left, right, offset=4)  # [N, 1, 12, 12]
    canvas = np.concatenate([images[left], images[right]], axis=2)  # [N, 8, 16]
    return torch.from_numpy(np.ascontiguousarray(canvas[:, None, :, :], dtype=np.float32))


def _check_layout_and_pairs(layout: str, pairs_per_image: int) -> None:
    if layout not in LAYOUTS:
        raise UnknownNameError(unknown_name_message("multidigits layout", str(layout), list(LAYOUTS)))
    check_pairs_per_image(pairs_per_image)


def _load_digits() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (np.asarray(digits.images, dtype=np.float32) / 16.0).clip(0.0, 1.0)
    return images, np.asarray(digits.target, dtype=np.int64)


@DATASETS.register("multidigits")
def multidigits(
    *,
    layout: str = "side",
    pairs_per_image: int = 3,
    split_seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> MultiTaskData:
    """Two 8x8 scikit-learn digits per image; tasks: left and right digit (tiny default dataset).

    The default dataset of the library and of its tests: it is tiny (1,797 source images; 3,771
    train / 810 val / 810 test pairs with the defaults) and ships with scikit-learn, so it needs no
    download. The source images are split into train/val/test first, so no digit image appears in
    two splits; pairs are then formed within each split (see :func:`pair_indices`).

    Args:
        layout: ``"side"``: an 8x16 image, left digit | right digit; ``"overlay"``: a 12x12 canvas
            with the first digit at the top-left ``[0:8, 0:8]`` and the second at the bottom-right
            ``[4:12, 4:12]``, combined by pixel-wise maximum.
        pairs_per_image: pairs per source image in each split (1 to 100).
        split_seed: seed of the image split and of the pairing.
        val_fraction: fraction of source images for validation.
        test_fraction: fraction of source images for test.

    Returns:
        Inputs float32 in [0, 1] of shape ``[N, 1, 8, 16]`` (side) or ``[N, 1, 12, 12]``
        (overlay); tasks ``left`` and ``right``, multiclass with classes ``"0"`` to ``"9"``.
    """
    _check_layout_and_pairs(layout, pairs_per_image)
    images, labels = _load_digits()
    pairs = pair_indices(
        len(images),
        pairs_per_image=pairs_per_image,
        split_seed=split_seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    splits = {}
    for split, (left, right) in pairs.items():
        n = len(left)
        splits[split] = TensorSplit(
            _compose(images, left, right, layout),
            {"left": torch.from_numpy(labels[left]), "right": torch.from_numpy(labels[right])},
            {"left": torch.ones(n, dtype=torch.bool), "right": torch.ones(n, dtype=torch.bool)},
        )
    tasks = digit_tasks()
    return MultiTaskData(
        name="multidigits",
        tasks=tasks,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        info={
            "source": "scikit-learn sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits)",
            "license": "BSD-3-Clause (scikit-learn); the digits come from the UCI repository",
            "source_images": {s: len(np.unique(p[0])) for s, p in pairs.items()},
            "rows": {s: len(p[0]) for s, p in pairs.items()},
            "layout": layout,
            "pairs_per_image": pairs_per_image,
            "split": {"split_seed": split_seed, "val_fraction": val_fraction, "test_fraction": test_fraction},
        },
    )


@DATASETS.register("multidigits_split")
def multidigits_split(
    *,
    layout: str = "side",
    pairs_per_image: int = 3,
    left_fraction: float = 0.5,
    split_seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> MultiTaskData:
    """Multi-input multidigits: the left and right tasks are labelled on disjoint sets of images.

    An example of tasks that come from different datasets (see :func:`multitask.data.combine`).
    The source digit images are split into train/val/test as in :func:`multidigits`; each split's
    images are then divided at random into two disjoint halves. Source ``"left"`` pairs images
    of the first half with each other and labels only the left digit; source ``"right"`` does the
    same with the second half and labels only the right digit. No 8x8 digit appears in both
    sources, and no image has both labels. Training batches are drawn from the two sources by a
    task sampler (proportional by default; set ``data.sampler``); the validation and test splits
    hold both sources' rows, each labelled for its own task.

    Args:
        layout: ``"side"`` or ``"overlay"``, as in :func:`multidigits`.
        pairs_per_image: pairs per source image within its half (1 to 100).
        left_fraction: fraction of each split's images given to the left task's source (the rest
            go to the right task's), in (0, 1); e.g. 0.8 makes a 4:1 imbalance for samplers to act on.
        split_seed: seed of the image split, the halves and the pairing.
        val_fraction: fraction of source images for validation.
        test_fraction: fraction of source images for test.

    Returns:
        A multi-input :class:`MultiTaskData` named ``multidigits_split`` with tasks ``left`` and
        ``right`` (multiclass, 10 classes) and sources ``left`` and ``right``.
    """
    from .multi_input import combine

    _check_layout_and_pairs(layout, pairs_per_image)
    left_fraction = _check_fraction("left_fraction", left_fraction)
    images, labels = _load_digits()
    parts = split_indices(len(images), seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    rows: dict[str, dict[str, TensorSplit]] = {"left": {}, "right": {}}
    for k, (split, idx) in enumerate(zip(("train", "val", "test"), parts, strict=True)):
        rng = np.random.default_rng([split_seed, k, pairs_per_image, 2])
        shuffled = idx[rng.permutation(len(idx))]
        cut = round(len(idx) * left_fraction)
        if not 0 < cut < len(idx):
            raise ValueError(
                f"left_fraction={left_fraction!r} leaves one task with no {split} images ({len(idx)} in the split); "
                "use a value nearer 0.5"
            )
        for task, half in (("left", np.sort(shuffled[:cut])), ("right", np.sort(shuffled[cut:]))):
            lefts, rights = [], []
            for _ in range(pairs_per_image):
                lefts.append(half)
                rights.append(half[rng.permutation(len(half))])
            left, right = np.concatenate(lefts), np.concatenate(rights)
            target = labels[left] if task == "left" else labels[right]
            rows[task][split] = TensorSplit(
                _compose(images, left, right, layout),
                {task: torch.from_numpy(target)},
                {task: torch.ones(len(left), dtype=torch.bool)},
            )
    sources = {
        task: MultiTaskData(
            name=f"multidigits_{task}",
            tasks=[t for t in digit_tasks() if t.name == task],
            train=rows[task]["train"],
            val=rows[task]["val"],
            test=rows[task]["test"],
        )
        for task in ("left", "right")
    }
    data = combine(sources, name="multidigits_split")
    data.info.update(
        {
            "source": "scikit-learn sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits)",
            "license": "BSD-3-Clause (scikit-learn); the digits come from the UCI repository",
            "layout": layout,
            "pairs_per_image": pairs_per_image,
            "left_fraction": left_fraction,
            "split": {"split_seed": split_seed, "val_fraction": val_fraction, "test_fraction": test_fraction},
        }
    )
    return data
