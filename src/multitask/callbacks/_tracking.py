"""Helpers shared by the MLflow and TensorBoard loggers: metric names and values from an epoch record."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["TRACKING_EXTRA", "epoch_scalars", "flatten", "relation_scalars", "safe_name"]

TRACKING_EXTRA = "pip install 'multitask[tracking]'"
_UNSAFE = re.compile(r"[^0-9A-Za-z_\-. /]")


def safe_name(name: str) -> str:
    """A metric-name part with every character MLflow refuses replaced by ``_``."""
    return _UNSAFE.sub("_", str(name))


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def relation_scalars(relations: Mapping[str, Any]) -> dict[str, float]:
    """Mean off-diagonal gradient cosine and conflict rate of one epoch's ``relations`` summary."""
    out: dict[str, float] = {}
    for key, name in (("cosine", "relations/mean_cosine"), ("conflict", "relations/conflict_rate")):
        matrix = relations.get(key) or []
        vals = [
            f for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and (f := _finite(v)) is not None
        ]
        if vals:
            out[name] = sum(vals) / len(vals)
    return out


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one metrics record, named ``train/<task>/loss``, ``val/<task>/<metric>``, ``weight/<task>``.

    Also ``train_loss``, ``val_loss`` and, when the record holds gradient relations, the mean
    off-diagonal cosine and the conflict rate. Non-finite values are left out.
    """
    out: dict[str, float] = {}
    for key in ("train_loss", "val_loss", "seconds"):
        if (f := _finite(record.get(key))) is not None:
            out[key] = f
    for task, v in (record.get("train") or {}).items():
        if (f := _finite(v)) is not None:
            out[f"train/{safe_name(task)}/loss"] = f
    for task, metrics in (record.get("val") or {}).items():
        for metric, v in (metrics or {}).items():
            if (f := _finite(v)) is not None:
                out[f"val/{safe_name(task)}/{safe_name(metric)}"] = f
    for task, v in (record.get("weights") or {}).items():
        if (f := _finite(v)) is not None:
            out[f"weight/{safe_name(task)}"] = f
    if isinstance(record.get("relations"), Mapping):
        out.update(relation_scalars(record["relations"]))
    return out


def _walk(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        if not value and prefix:
            yield prefix, "{}"
        for k, v in value.items():
            yield from _walk(f"{prefix}.{k}" if prefix else str(k), v)
    else:
        yield prefix, value


def flatten(config: Mapping[str, Any], *, max_len: int = 500) -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}`` (values as strings, cut to ``max_len``)."""
    out: dict[str, str] = {}
    for key, value in _walk("", config):
        text = "null" if value is None else str(value)
        out[key] = text if len(text) <= max_len else text[: max_len - 3] + "..."
    return out
