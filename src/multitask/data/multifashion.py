"""MultiFashion (Lin et al. 2019): two overlapping Fashion-MNIST items per 36x36 image."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .base import DATASETS, MissingDependencyError, MultiTaskData
from .pairs import check_count, check_pairs_per_image, digit_tasks, pair_splits, pair_within
from .splits import holdout_indices

__all__ = ["CLASSES", "ENV_VAR", "INSTALL_COMMAND", "SEARCH_DIRS", "multifashion", "read_idx"]

INSTALL_COMMAND = "apt-get install -y dataset-fashion-mnist"
ENV_VAR = "MULTITASK_FASHION_MNIST_DIR"
SEARCH_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
"""Where Debian's ``dataset-fashion-mnist`` package puts the idx files (after ``$MULTITASK_FASHION_MNIST_DIR``)."""
CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TRAIN_IMAGES = 60_000
_TEST_IMAGES = 10_000
_OFFSET = 8  # 28x28 items on a 36x36 canvas


def read_idx(path: Path) -> NDArray[np.uint8]:
    """An unsigned-byte idx array (the MNIST file format), gzip-compressed or not."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{str(path)!r} is not an idx file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{str(path)!r} holds idx type {raw[2]:#04x}; expected unsigned bytes (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise ValueError(f"{str(path)!r} is truncated: header says {shape}, file has {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _locate() -> dict[str, Path]:
    """The four idx files: from ``$MULTITASK_FASHION_MNIST_DIR`` or :data:`SEARCH_DIRS`."""
    env = os.environ.get(ENV_VAR)
    dirs = ([Path(env)] if env else []) + list(SEARCH_DIRS)
    for d in dirs:
        found = {}
        for key, stem in _FILES.items():
            for candidate in (d / f"{stem}.gz", d / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_FILES):
            return found
    looked = ", ".join(repr(str(d)) for d in dirs)
    raise MissingDependencyError(
        f"the multifashion dataset needs the Fashion-MNIST idx files (looked in {looked}); install them with: "
        f"{INSTALL_COMMAND} (or point ${ENV_VAR} at a folder holding {', '.join(_FILES.values())}[.gz])"
    )


def _subset(n: int, size: int | None, seed: list[int]) -> NDArray[np.int64]:
    if size is None or size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)


@DATASETS.register("multifashion")
def multifashion(
    *,
    max_train_images: int | None = 25_000,
    max_test_images: int | None = 5_000,
    pairs_per_image: int = 1,
    split_seed: int = 0,
    val_fraction: float = 0.2,
) -> MultiTaskData:
    """Two overlapping Fashion-MNIST items per 36x36 image; tasks: left and right item (needs apt).

    The MultiFashion benchmark of Lin et al. (NeurIPS 2019, Pareto MTL), built like Sener & Koltun's
    MultiMNIST (NeurIPS 2018): one 28x28 item at the top-left ``[0:28, 0:28]`` and another at the
    bottom-right ``[8:36, 8:36]`` of a 36x36 canvas, combined by pixel-wise maximum where they
    overlap. The items come from Debian's ``dataset-fashion-mnist`` package
    (``apt-get install -y dataset-fashion-mnist``, as root; Zalando, MIT/Expat license).

    Splits: a seeded subset of ``max_train_images`` of the 60,000 training images is split into
    train and validation (``val_fraction``); a seeded subset of ``max_test_images`` of the 10,000
    test images is the test split. Pairs are formed within each split (each image appears
    ``pairs_per_image`` times on each side), so no source image is in two splits. The defaults give
    20,000 / 5,000 / 5,000 pairs.

    Args:
        max_train_images: training-file images to use (None: all 60,000).
        max_test_images: test-file images to use (None: all 10,000).
        pairs_per_image: pairs per source image in each split (1 to 100).
        split_seed: seed of the subsets, the train/validation split and the pairing.
        val_fraction: fraction of the training images held out for validation.

    Returns:
        Inputs float32 in [0, 1] of shape ``[N, 1, 36, 36]``; tasks ``left`` and ``right``,
        multiclass with the 10 Fashion-MNIST classes (``"T-shirt/top"`` .. ``"Ankle boot"``).
    """
    check_count("max_train_images", max_train_images, 2, _TRAIN_IMAGES)
    check_count("max_test_images", max_test_images, 1, _TEST_IMAGES)
    check_pairs_per_image(pairs_per_image)
    files = _locate()
    train_x, train_y = read_idx(files["train_images"]), read_idx(files["train_labels"])
    test_x, test_y = read_idx(files["test_images"]), read_idx(files["test_labels"])
    for x, y, what in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
            raise ValueError(f"Fashion-MNIST {what} files hold images {x.shape} and labels {y.shape}")
    train_sel = _subset(len(train_x), max_train_images, [split_seed, 11])
    test_sel = _subset(len(test_x), max_test_images, [split_seed, 12])
    fit, val = holdout_indices(len(train_sel), seed=split_seed, fraction=val_fraction, name="val_fraction")
    n_dev = len(train_sel)
    parts = (fit, val, np.arange(n_dev, n_dev + len(test_sel), dtype=np.int64))
    images = np.concatenate([train_x[train_sel], test_x[test_sel]]).astype(np.float32) / np.float32(255.0)
    labels = np.concatenate([train_y[train_sel], test_y[test_sel]]).astype(np.int64)
    pairs = pair_within(parts, pairs_per_image=pairs_per_image, split_seed=split_seed)
    return pair_splits(
        images,
        labels,
        pairs,
        offset=_OFFSET,
        name="multifashion",
        tasks=digit_tasks(CLASSES),
        info={
            "source": "Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), Debian package dataset-fashion-mnist",
            "source_files": [str(p) for p in files.values()],
            "license": "MIT (Expat), Zalando SE",
            "reference": "Lin et al., Pareto Multi-Task Learning, NeurIPS 2019 (MultiFashion)",
            "pairs_per_image": pairs_per_image,
            "split": {
                "split_seed": split_seed,
                "val_fraction": val_fraction,
                "max_train_images": max_train_images,
                "max_test_images": max_test_images,
            },
        },
    )
