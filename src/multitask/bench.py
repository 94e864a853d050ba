"""``multitask bench``: datasets x architectures x weightings x seeds against single-task baselines.

Protocol (the same for every cell):

* every model, multi-task or single-task, is trained with one recipe per dataset (epochs, batch
  size, optimizer, learning rate: ``train`` settings of the grid, or the dataset's defaults in
  :data:`RECIPES`), selected on the validation split only (mean validation loss over the main
  tasks), and evaluated once on the test split;
* the single-task baselines are one model per (non-auxiliary) task with the same architecture
  family as :func:`multitask.experiment.run` uses for its baselines: the hard-sharing MLP with one
  head (``stl_architecture``), per dataset and seed; Δm of seed ``s`` compares with the baselines
  of seed ``s``;
* reported per configuration, over seeds (mean ± sample std): Δm on the main metric of each task
  (best-validation checkpoint and last epoch), Δm over all metrics with per-task and with
  per-metric averaging, the mean rank of the configuration among all configurations of the
  dataset (rank of Δm per seed, then averaged), and training wall time;
* ``tuned_static``: linear scalarization with its weights chosen on validation (a small grid of
  loss weights; Xin et al. NeurIPS 2022 and Kurin et al. NeurIPS 2022 found that tuned
  scalarization matches specialised methods), shown in every table.

Every cell writes its ``result.json``; a rerun skips finished cells, so a long grid resumes. The
outputs are ``results.csv`` (one row per cell and seed), ``summary.md`` (one table per dataset),
``summary.json`` and ``delta_m.png`` (with matplotlib).
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from .config import ConfigError, resolve_config
from .data.base import MultiTaskData
from .experiment import load_data, train_one
from .metrics import delta_m

__all__ = ["RECIPES", "Grid", "run_bench", "static_candidates"]

#: Default recipe per built-in dataset (overridden by the grid's ``train`` settings).
RECIPES: dict[str, dict[str, Any]] = {
    "multidigits": {"epochs": 20, "batch_size": 128},
    "adult": {"epochs": 10, "batch_size": 256},
    "yeast": {"epochs": 30, "batch_size": 64},
    "multifashion": {"epochs": 10, "batch_size": 256},
    "multimnist": {"epochs": 20, "batch_size": 128},
    "qm9": {"epochs": 30, "batch_size": 256},
    "movielens": {"epochs": 10, "batch_size": 512},
}

TUNED_STATIC = "tuned_static"


@dataclass
class Grid:
    """What ``multitask bench`` runs.

    Attributes:
        datasets: built-in dataset names (or ``{"name": ..., params}`` tables via ``data``).
        architectures: registered architecture names.
        weightings: registered weighting names (chains allowed) and/or ``"tuned_static"``.
        seeds: training seeds (>= 3 for mean ± std).
        train: recipe overrides applied to every dataset (``epochs``, ``batch_size``, ``lr``,
            ``grad_mode``, ...).
        data: per-dataset loader parameters, e.g. ``{"qm9": {"subset": 20000}}``.
        model: per-architecture parameters, e.g. ``{"mmoe": {"experts": 8}}``.
        stl_architecture: architecture of the single-task baselines.
        static_candidates: loss-weight vectors tried by ``tuned_static``.
        extra: further blocks ``{"architectures": [...], "weightings": [...]}`` run against the same
            baselines, e.g. every gradient method on hard sharing only, without the full product.
            Cells are the main product followed by each block's, duplicates dropped.
    """

    datasets: list[str]
    architectures: list[str] = field(default_factory=lambda: ["hard_sharing"])
    weightings: list[str] = field(default_factory=lambda: ["equal", TUNED_STATIC])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: dict[str, dict[str, Any]] = field(default_factory=dict)
    stl_architecture: str = "hard_sharing"
    static_candidates: int = 5
    extra: list[dict[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("datasets", "architectures", "weightings", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"bench: {name} is empty; give at least one")
        for i, block in enumerate(self.extra):
            if not isinstance(block, dict) or set(block) != {"architectures", "weightings"}:
                raise ConfigError(
                    f"bench: extra[{i}]={block!r} must be a table with exactly the keys architectures and "
                    "weightings, e.g. {architectures = ['hard_sharing'], weightings = ['pcgrad']}"
                )
            for key in ("architectures", "weightings"):
                value = block[key]
                if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"bench: extra[{i}].{key}={value!r} must be a non-empty list of names")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"bench: seeds={self.seeds!r} has duplicates")
        if self.static_candidates < 2:
            raise ConfigError(f"bench: static_candidates={self.static_candidates!r} must be >= 2")

    def cells(self) -> list[tuple[str, str]]:
        """(architecture, weighting) pairs in run order: the main product, then each ``extra`` block."""
        blocks = [(self.architectures, self.weightings)] + [(b["architectures"], b["weightings"]) for b in self.extra]
        return list(dict.fromkeys(pair for archs, ws in blocks for pair in itertools.product(archs, ws)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            from .registry import unknown_name_message

            raise ConfigError(unknown_name_message("bench grid key", unknown[0], sorted(known)))
        return cls(**d)


def static_candidates(num_tasks: int, count: int) -> list[list[float]]:
    """Loss-weight vectors for tuned scalarization, each summing to ``num_tasks``; uniform first.

    Two tasks: ``w_1`` evenly spaced in (0, 1) (``count`` values, 0.5 included when ``count`` is
    odd). More tasks: uniform, then Dirichlet(1) draws from a fixed generator (the same
    candidates for every seed and configuration).
    """
    if num_tasks == 2:
        grid = [(i + 1) / (count + 1) for i in range(count)]
        cands = [[2 * a, 2 * (1 - a)] for a in grid]
        cands.sort(key=lambda w: abs(w[0] - 1.0))
        return cands
    gen = torch.Generator().manual_seed(12345)
    out = [[1.0] * num_tasks]
    while len(out) < count:
        w = _dirichlet(num_tasks, gen)
        out.append([float(v) * num_tasks for v in w])
    return out


def _dirichlet(k: int, gen: torch.Generator) -> torch.Tensor:
    e = -torch.log(torch.rand(k, generator=gen, dtype=torch.float64).clamp_min(1e-300))
    return e / e.sum()


def _directions(data: MultiTaskData, *, main_only: bool) -> dict[str, dict[str, bool]]:
    main = [t for t in data.tasks if not t.auxiliary]
    if main_only:
        return {t.name: {t.main_metric.name: t.main_metric.higher_is_better} for t in main}
    return {t.name: t.directions for t in main}


def _cfg(grid: Grid, dataset: str, architecture: str, seed: int) -> dict[str, Any]:
    train = {**RECIPES.get(dataset, {}), **grid.train, "seed": seed}
    cfg = {
        "data": {"dataset": dataset, **grid.data.get(dataset, {})},
        "model": {"architecture": architecture, **grid.model.get(architecture, {})},
        "weighting": {"name": "equal"},
        "train": train,
        "run": {"quiet": True, "baselines": True},
    }
    return resolve_config(cfg)


def _fmt(mean: float, std: float) -> str:
    return f"{100 * mean:+.2f} ± {100 * std:.2f}"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _log(stream: TextIO | None, msg: str) -> None:
    if stream is not None:
        print(msg, file=stream, flush=True)


def run_bench(grid: Grid, out_dir: str | Path, *, stream: TextIO | None = None) -> dict[str, Any]:
    """Run (or resume) the grid in ``out_dir``; write and return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.json").write_text(json.dumps(grid.__dict__, indent=2))
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"datasets": {}}
    for dataset in grid.datasets:
        base_cfg = _cfg(grid, dataset, grid.stl_architecture, grid.seeds[0])
        data = load_data(base_cfg)
        main_dirs = _directions(data, main_only=True)
        all_dirs = _directions(data, main_only=False)
        stl: dict[int, dict[str, Any]] = {}
        for seed in grid.seeds:
            cfg = _cfg(grid, dataset, grid.stl_architecture, seed)
            test, val, test_last, secs = {}, {}, {}, 0.0
            for task in [t for t in data.tasks if not t.auxiliary]:
                where = out / dataset / "single" / f"seed-{seed}" / task.name
                _log(stream, f"[{dataset}] single-task {task.name}, seed {seed}")
                res = train_one(
                    cfg, data.select_tasks([task.name]), where, label=f"single:{task.name}", weighting="equal",
                    weighting_params={}, resume=True,
                )  # fmt: skip
                test[task.name] = res["test"][task.name]
                val[task.name] = res["val"][task.name]
                test_last[task.name] = res.get("test_last", res["test"])[task.name]
                secs += res["seconds"]
            stl[seed] = {"test": test, "val": val, "test_last": test_last, "seconds": secs}
        configs = grid.cells()
        per_config: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        for arch, weighting in configs:
            key = f"{arch} + {weighting}"
            per_seed: list[dict[str, Any]] = []
            for seed in grid.seeds:
                cfg = _cfg(grid, dataset, arch, seed)
                where = out / dataset / arch / weighting / f"seed-{seed}"
                _log(stream, f"[{dataset}] {key}, seed {seed}")
                try:
                    if weighting == TUNED_STATIC:
                        res = _tuned_static(grid, cfg, data, where, stl[seed]["val"], main_dirs)
                    else:
                        res = train_one(
                            cfg, data, where, label=key, weighting=weighting, weighting_params={}, resume=True
                        )
                except (ValueError, ConfigError) as exc:  # e.g. a grad mode the architecture cannot serve
                    _log(stream, f"[{dataset}] {key}: skipped ({exc})")
                    skipped[key] = str(exc).splitlines()[0]
                    per_seed = []
                    break
                main_test = {t: res["test"][t] for t in main_dirs}
                main_last = {t: res.get("test_last", res["test"])[t] for t in main_dirs}
                row = {
                    "dataset": dataset,
                    "architecture": arch,
                    "weighting": weighting,
                    "seed": seed,
                    "delta_m": delta_m(main_test, stl[seed]["test"], main_dirs),
                    "delta_m_last": delta_m(main_last, stl[seed]["test_last"], main_dirs),
                    "delta_m_all_per_task": delta_m(main_test, stl[seed]["test"], all_dirs, averaging="per-task"),
                    "delta_m_all_per_metric": delta_m(main_test, stl[seed]["test"], all_dirs, averaging="per-metric"),
                    "seconds": res["seconds"],
                    "stl_seconds": stl[seed]["seconds"],
                    "parameters": res["parameters"],
                    "best_epoch": res["best_epoch"],
                    **{f"{t}/{m}": res["test"][t][m] for t in main_dirs for m in main_dirs[t]},
                }
                if weighting == TUNED_STATIC:
                    row["static_weights"] = res["static_weights"]
                rows.append(row)
                per_seed.append(row)
            if per_seed:
                per_config[key] = {"rows": per_seed}
        _ranks(per_config, grid.seeds)
        summary["datasets"][dataset] = {
            "configs": {k: _aggregate(v["rows"], v["ranks"]) for k, v in per_config.items()},
            "skipped": dict(skipped),
            "tasks": {t: next(iter(m)) for t, m in main_dirs.items()},
            "stl_test": {str(s): stl[s]["test"] for s in grid.seeds},
        }
    _write_csv(out / "results.csv", rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(format_markdown(summary, grid))
    _plot(summary, out / "delta_m.png", stream)
    return summary


def _tuned_static(
    grid: Grid,
    cfg: dict[str, Any],
    data: MultiTaskData,
    where: Path,
    stl_val: dict[str, dict[str, float]],
    main_dirs: dict[str, dict[str, bool]],
) -> dict[str, Any]:
    """Train every candidate weight vector; keep the one with the best validation Δm."""
    done = where / "result.json"
    if done.exists():
        result: dict[str, Any] = json.loads(done.read_text())
        return result
    t = len(data.tasks)
    best: dict[str, Any] | None = None
    total = 0.0
    for i, w in enumerate(static_candidates(t, grid.static_candidates)):
        res = train_one(
            copy.deepcopy(cfg), data, where / f"candidate-{i}", label=f"static {w}", weighting="static",
            weighting_params={"weights": w}, resume=True,
        )  # fmt: skip
        total += res["seconds"]
        score = delta_m({k: res["val"][k] for k in main_dirs}, stl_val, main_dirs)
        if best is None or score > best["val_delta_m"]:
            best = {**res, "val_delta_m": score, "static_weights": w}
    assert best is not None
    best["seconds"] = total  # the tuning is part of the method's cost
    where.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(best, indent=2))
    return best


def _ranks(per_config: dict[str, dict[str, Any]], seeds: Sequence[int]) -> None:
    for v in per_config.values():
        v["ranks"] = []
    for i, _ in enumerate(seeds):
        scores = sorted(per_config, key=lambda k: -per_config[k]["rows"][i]["delta_m"])
        for rank, k in enumerate(scores, start=1):
            per_config[k]["ranks"].append(rank)


def _aggregate(rows: list[dict[str, Any]], ranks: list[int]) -> dict[str, Any]:
    agg: dict[str, Any] = {"seeds": len(rows), "mean_rank": statistics.fmean(ranks)}
    for k in ("delta_m", "delta_m_last", "delta_m_all_per_task", "delta_m_all_per_metric", "seconds", "stl_seconds"):
        agg[k], agg[f"{k}_std"] = _mean_std([r[k] for r in rows])
    agg["parameters"] = rows[0]["parameters"]
    agg["delta_m_per_seed"] = [r["delta_m"] for r in rows]
    if "static_weights" in rows[0]:
        agg["static_weights"] = [r["static_weights"] for r in rows]
    return agg


def format_markdown(summary: dict[str, Any], grid: Grid) -> str:
    """One table per dataset, best mean Δm first."""
    lines = [
        "Δm in %, mean ± sample std over seeds "
        f"{grid.seeds}; each model at its best-validation epoch unless marked 'last epoch'. "
        "Δm: main metric of each task, averaged over tasks; 'all metrics': every metric, averaged "
        "within each task then over tasks (per-task) or over all (task, metric) pairs (per-metric). "
        "Rank: mean rank of Δm among the configurations of the dataset.",
        "",
    ]
    for dataset, d in summary["datasets"].items():
        tasks = ", ".join(f"{t} ({m})" for t, m in d["tasks"].items())
        lines += [f"### {dataset}", "", f"Tasks (main metric): {tasks}.", ""]
        lines.append(
            "| configuration | Δm | Δm, last epoch | Δm all metrics, per-task | Δm all metrics, per-metric "
            "| rank | params | train time (s) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        order = sorted(d["configs"].items(), key=lambda kv: -kv[1]["delta_m"])
        for key, a in order:
            beats = a["delta_m"] - a["delta_m_std"] > 0
            lines.append(
                f"| {key} | {'**' if beats else ''}{_fmt(a['delta_m'], a['delta_m_std'])}{'**' if beats else ''} "
                f"| {_fmt(a['delta_m_last'], a['delta_m_last_std'])} "
                f"| {_fmt(a['delta_m_all_per_task'], a['delta_m_all_per_task_std'])} "
                f"| {_fmt(a['delta_m_all_per_metric'], a['delta_m_all_per_metric_std'])} "
                f"| {a['mean_rank']:.1f} | {a['parameters']:,} | {a['seconds']:.1f} |"
            )
        for key, why in d.get("skipped", {}).items():
            lines.append(f"| {key} | n/a: {why} | | | | | | |")
        lines += ["", "Bold: Δm > 0 by more than one std (beats single-task training).", ""]
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})


def _plot(summary: dict[str, Any], path: Path, stream: TextIO | None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log(stream, "matplotlib is not installed: no plot (pip install 'multitask[bench]')")
        return
    datasets = list(summary["datasets"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        items = sorted(summary["datasets"][dataset]["configs"].items(), key=lambda kv: kv[1]["delta_m"])
        names = [k for k, _ in items]
        ax.barh(
            names,
            [100 * a["delta_m"] for _, a in items],
            xerr=[100 * a["delta_m_std"] for _, a in items],
            color=["tab:green" if a["delta_m"] > 0 else "tab:red" for _, a in items],
        )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(dataset)
        ax.set_xlabel("Δm vs single-task (%)")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
