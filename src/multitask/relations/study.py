"""``multitask affinity``: every affinity view of a dataset's tasks, with costs, saved to a directory.

:func:`run_affinity` trains the all-tasks model of a config (the same config as ``multitask
train``) with an :class:`~multitask.relations.AffinityProbe`, and writes to ``out``:

* ``affinity.json``: task names, every ``T x T`` matrix (``labels``, ``tag``, ``first_order``,
  ``first_order_features``, ``projected``, and ``pairwise`` with ``pairwise=True``), the seconds
  each method cost, its cost relative to exact TAG, the Spearman correlation of each estimate with
  exact TAG, and under ``subsampled`` the same for each method (exact TAG included, as the noise
  floor) averaged over every 2nd, 5th and 10th measured step only, against exact TAG on all steps;
* ``affinity_<matrix>.csv`` (rows: source task ``i``, columns: target task ``j``), the format
  ``multitask group`` reads;
* ``affinity_<matrix>.png`` heatmaps (with matplotlib);
* ``model/``: the run directory of the trained model (metrics, checkpoint, ``relations.jsonl``).

``pairwise=True`` also trains every task alone and every pair of tasks with the same recipe
(``T + T(T-1)/2`` trainings): ``pairwise[i][j]`` is the relative change of task ``j``'s main
validation metric when trained with task ``i`` instead of alone (positive: ``i`` helps ``j``);
this is the direct, expensive measurement (Standley et al., "Which Tasks Should Be Learned
Together in Multi-task Learning?", ICML 2020, https://arxiv.org/abs/1905.07553).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..data.base import MultiTaskData
from ..metrics import relative_change
from .affinity import ESTIMATES, AffinityProbe, label_similarity, spearman

__all__ = ["format_affinity", "format_group_comparison", "run_affinity", "train_groups", "write_matrix_csv"]

#: Fractions of the measured steps at which the estimates (and exact TAG itself) are re-scored.
SUBSAMPLES = (2, 5, 10)


def write_matrix_csv(path: Path, tasks: Sequence[str], matrix: np.ndarray) -> None:
    """A square matrix as CSV: header ``source,<task...>``, one row per source task."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", *tasks])
        for name, row in zip(tasks, np.asarray(matrix, dtype=float), strict=True):
            w.writerow([name, *("" if not math.isfinite(v) else repr(float(v)) for v in row)])


def _heatmap(path: Path, tasks: Sequence[str], matrix: np.ndarray, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    m = np.asarray(matrix, dtype=float).copy()
    np.fill_diagonal(m, np.nan)
    lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
    size = max(4.0, 0.45 * len(tasks) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(tasks)), tasks, rotation=90)
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_xlabel("target task j")
    ax.set_ylabel("source task i")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _finite(m: np.ndarray) -> list[list[float | None]]:
    return [[float(v) if math.isfinite(v) else None for v in row] for row in np.asarray(m, dtype=float)]


def _train_alone(
    cfg: dict[str, Any], data: MultiTaskData, out: Path, names: Sequence[str], stream: TextIO | None
) -> dict[str, dict[str, Any]]:
    """One model per task in ``names`` with the recipe of ``cfg``, in ``out/single/<task>`` (finished ones reused)."""
    from ..experiment import train_one

    return {
        n: train_one(cfg, data.select_tasks([n]), out / "single" / n, label=f"alone:{n}", resume=True, stream=stream)
        for n in names
    }


def _pairwise(cfg: dict[str, Any], data: MultiTaskData, out: Path, stream: TextIO | None) -> tuple[np.ndarray, float]:
    from ..experiment import train_one

    names = [t.name for t in data.tasks if not t.auxiliary]
    t0 = time.perf_counter()
    alone = {
        n: float(res["val"][n][data.task(n).main_metric.name])
        for n, res in _train_alone(cfg, data, out, names, stream).items()
    }
    gain = np.full((len(data.tasks), len(data.tasks)), np.nan)
    index = {t.name: k for k, t in enumerate(data.tasks)}
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            res = train_one(cfg, data.select_tasks([a, b]), out / "pairs" / f"{a}+{b}", label=f"pair:{a}+{b}",
                            resume=True, stream=stream)  # fmt: skip
            for src, dst in ((a, b), (b, a)):
                metric = data.task(dst).main_metric
                with_src = float(res["val"][dst][metric.name])
                gain[index[src], index[dst]] = relative_change(with_src, alone[dst], metric.higher_is_better)
    return gain, time.perf_counter() - t0


def run_affinity(
    cfg: dict[str, Any],
    out: str | Path,
    *,
    every: int = 1,
    lr: float | None = None,
    projections: int = 4,
    estimates: Sequence[str] = ESTIMATES,
    pairwise: bool = False,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Measure label similarity, exact TAG and its estimates (and optionally pairwise gains); write ``out``.

    Args:
        cfg: a resolved config (:func:`multitask.config.resolve_config`), as for ``multitask train``.
        out: output directory (created).
        every: measure the affinities every this many training steps.
        lr: lookahead step ``η`` (default: the config's learning rate).
        projections: random directions of the ``projected`` estimate.
        estimates: the cheap estimates to measure next to exact TAG.
        pairwise: also train every task alone and every pair (expensive).
        stream: where progress lines go (None: silent).
    """
    from ..experiment import load_data, train_one

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg)
    if len(data.tasks) < 2:
        raise ValueError(f"affinity: the data have {len(data.tasks)} task(s); affinities need at least 2")
    tasks = data.task_names
    t0 = time.perf_counter()
    labels = label_similarity(data.train, data.tasks)
    label_seconds = time.perf_counter() - t0
    probe = AffinityProbe(every=every, lr=lr, projections=projections, estimates=estimates, seed=cfg["train"]["seed"])
    result = train_one(cfg, data, out / "model", label="affinity", stream=stream, callbacks=[probe])
    if not probe.pairs:
        raise ValueError(
            f"affinity: no training step was measured (every={every}, {result['steps']} steps); lower --every"
        )
    summary = probe.summary()
    n = len(probe.pairs)
    per_step = {m: np.asarray(probe.step_seconds[m]) for m in probe.methods}
    tag_all, tag_cost = probe.mean("tag"), float(per_step["tag"].sum())
    sub: dict[str, dict[str, Any]] = {}
    for k in SUBSAMPLES:
        take = slice(None, None, k)
        sub[f"1/{k}"] = {
            "measured_steps": len(range(n)[take]),
            "methods": {
                m: {
                    "spearman_vs_tag": spearman(probe.mean(m, take=take), tag_all),
                    "cost_vs_tag": float(per_step[m][take].sum() / tag_cost) if tag_cost > 0 else None,
                }
                for m in probe.methods
            },
        }
    matrices: dict[str, Any] = {"labels": labels, **{m: np.asarray(v) for m, v in summary["matrices"].items()}}
    seconds = {"labels": label_seconds, **summary["seconds"]}
    if pairwise:
        matrices["pairwise"], seconds["pairwise"] = _pairwise(cfg, data, out, stream)
    report: dict[str, Any] = {
        "tasks": tasks,
        "matrices": {k: _finite(v) for k, v in matrices.items()},
        "convention": "matrices[name][i][j] is the affinity of source task i onto target task j",
        "measured_steps": n,
        "training_steps": result["steps"],
        "every": every,
        "lookahead_lr": lr if lr is not None else cfg["train"]["lr"],
        "projections": projections,
        "seconds": seconds,
        "training_seconds": result["seconds"],
        "cost_vs_tag": summary["cost_vs_tag"],
        "cost_vs_tag_with_forward": summary["cost_vs_tag_with_forward"],
        "forward_seconds": summary["forward_seconds"],
        "spearman_vs_tag": summary["spearman_vs_tag"],
        "subsampled": sub,
        "spearman_labels_vs_tag": spearman(labels, matrices["tag"]),
    }
    if pairwise:
        report["spearman_pairwise_vs_tag"] = spearman(matrices["pairwise"], matrices["tag"])
    (out / "affinity.json").write_text(json.dumps(report, indent=2))
    plots = []
    for name, m in matrices.items():
        write_matrix_csv(out / f"affinity_{name}.csv", tasks, m)
        if _heatmap(out / f"affinity_{name}.png", tasks, m, f"{name}: source i -> target j"):
            plots.append(name)
    report["plots"] = plots
    return report


def format_affinity(report: dict[str, Any]) -> str:
    """A plain-text table of costs and agreement with exact TAG."""
    lines = [
        f"{len(report['tasks'])} tasks, {report['measured_steps']} measured steps of {report['training_steps']} "
        f"(every {report['every']}), lookahead step {report['lookahead_lr']:g}",
        f"{'method':<30} {'seconds':>9} {'cost / TAG':>10} {'Spearman vs TAG':>16}",
    ]
    for m, secs in report["seconds"].items():
        if m == "labels":
            rho = report["spearman_labels_vs_tag"]
            cost = "-"
        elif m == "pairwise":
            rho = report.get("spearman_pairwise_vs_tag", math.nan)
            cost = f"{secs / report['seconds']['tag']:.2f}" if report["seconds"]["tag"] > 0 else "-"
        else:
            rho = report["spearman_vs_tag"].get(m, 1.0)
            cost = f"{report['cost_vs_tag'][m]:.3f}"
            if m == "first_order_engine" and not math.isfinite(rho):
                lines.append(f"{m:<30} {'-':>9} {'-':>10} {'-':>16}  (the weighting computes no Gramian)")
                continue
        lines.append(f"{m:<30} {secs:>9.3f} {cost:>10} {rho:>16.3f}")
    for frac, part in report["subsampled"].items():
        for m, v in part["methods"].items():
            if not math.isfinite(v["spearman_vs_tag"]) and m == "first_order_engine":
                continue
            label = f"{m} ({frac} steps)"
            cost = "-" if v["cost_vs_tag"] is None else f"{v['cost_vs_tag']:.3f}"
            lines.append(f"{label:<30} {'':>9} {cost:>10} {v['spearman_vs_tag']:>16.3f}")
    return "\n".join(lines)


def train_groups(
    cfg: dict[str, Any],
    groups: Sequence[Sequence[str]],
    out: str | Path,
    *,
    served_by: dict[str, int] | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Train one model per group, all tasks together, and every task alone; compare on the test split.

    Every model uses the recipe of ``cfg`` and is selected on validation. A task trained in several
    groups is scored by the group that serves it (``served_by``; default: the first group that
    contains it). Returns per-task test metrics of the three ways and their Δm against single-task
    training (main metric per task, as ``multitask train`` reports it); finished trainings in
    ``out`` are reused.
    """
    from ..experiment import load_data, train_one
    from ..metrics import delta_m

    out = Path(out)
    data = load_data(cfg)
    names = [t.name for t in data.tasks if not t.auxiliary]
    known = set(data.task_names)
    for g in groups:
        bad = [n for n in g if n not in known]
        if bad:
            raise ValueError(f"train_groups: unknown task(s) {bad} in group {list(g)}; the data have {data.task_names}")
    covered = {n for g in groups for n in g}
    missing = [n for n in names if n not in covered]
    if missing:
        raise ValueError(f"train_groups: task(s) {missing} are in no group; every task needs a group")
    serve = dict(served_by or {})
    for n in names:
        serve.setdefault(n, next(i for i, g in enumerate(groups) if n in g))
    main = {t.name: {t.main_metric.name: t.main_metric.higher_is_better} for t in data.tasks if not t.auxiliary}

    def metrics(res: dict[str, Any], task: str) -> dict[str, float]:
        return {k: float(v) for k, v in res["test"][task].items()}

    t0 = time.perf_counter()
    single = _train_alone(cfg, data, out, names, stream)
    together = train_one(cfg, data, out / "together", label="all tasks", resume=True, stream=stream)
    grouped = [
        train_one(cfg, data.select_tasks(list(g)), out / f"group-{i}", label=f"group {i}", resume=True, stream=stream)
        for i, g in enumerate(groups)
    ]
    stl = {n: metrics(single[n], n) for n in names}
    all_in_one = {n: metrics(together, n) for n in names}
    by_group = {n: metrics(grouped[serve[n]], n) for n in names}
    return {
        "groups": [list(g) for g in groups],
        "served_by": serve,
        "single": stl,
        "together": all_in_one,
        "grouped": by_group,
        "delta_m": {
            "together": delta_m(all_in_one, stl, main),
            "grouped": delta_m(by_group, stl, main),
        },
        "main_metrics": {n: next(iter(m)) for n, m in main.items()},
        "models": {"single": len(names), "together": 1, "grouped": len(groups)},
        "seconds": time.perf_counter() - t0,
    }


def format_group_comparison(result: dict[str, Any]) -> str:
    """Per-task test main metric of single-task, all-tasks and grouped models, and their Δm."""
    lines = [f"{'task':<16} {'metric':<10} {'group':>5} {'single-task':>12} {'all tasks':>10} {'grouped':>10}"]
    for task, metric in result["main_metrics"].items():
        lines.append(
            f"{task:<16} {metric:<10} {result['served_by'][task]:>5} {result['single'][task][metric]:>12.4f} "
            f"{result['together'][task][metric]:>10.4f} {result['grouped'][task][metric]:>10.4f}"
        )
    dm = result["delta_m"]
    models = result["models"]
    lines.append(
        f"Δm vs single-task ({models['single']} models): all tasks together ({models['together']} model) "
        f"{100 * dm['together']:+.2f}%, grouped ({models['grouped']} models) {100 * dm['grouped']:+.2f}%"
    )
    return "\n".join(lines)
