"""The small tabular problems the serving tests train on."""

from __future__ import annotations

import numpy as np
import pandas as pd

TASKS = ["--task", "buy:binary:yes", "--task", "species:multiclass", "--task", "price:regression"]
FEATURES = ["x1", "x2", "color"]


def make_table(n: int, seed: int, *, ids: bool = True) -> pd.DataFrame:
    """Numeric and categorical features; binary and multiclass targets with string labels, a regression target.

    ``ids`` adds an ``id`` column (train with ``--set data.drop=[id]``).
    """
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    s = x1 + 0.5 * x2 + (color == "red")
    frame = pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "color": color,
            "buy": np.where(s + 0.3 * rng.normal(size=n) > 0.5, "yes", "no"),
            "species": np.select([s < 0, s < 1], ["cat", "dog"], "eel"),
            "price": 100 + 20 * s + rng.normal(size=n),
        }
    )
    if ids:
        frame.insert(0, "id", [f"row{i}" for i in range(n)])
    return frame


def make_two_task_table(n: int = 160, seed: int = 0) -> pd.DataFrame:
    """Two numeric features; a binary (yes/no) and a regression target (tracking and report tests)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    s = x1 + 0.5 * x2
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "buy": np.where(s + 0.3 * rng.normal(size=n) > 0.3, "yes", "no"),
            "price": 100 + 20 * s + rng.normal(size=n),
        }
    )
