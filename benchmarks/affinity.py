"""Task-affinity estimates against exact TAG, and task grouping against all-in-one and single-task training.

Part 1 (``--part estimates``): for each dataset and seed, train the all-tasks model with the
benchmark recipe while measuring exact TAG lookahead affinity (Fifty et al., NeurIPS 2021) at every
step, and on the same batches the cheap estimates (first order from the shared-parameter Gramian,
first order at the shared features, random projections). Reports the Spearman correlation of each
estimate's training-averaged matrix with exact TAG's (off-diagonal entries), and each estimate's
measured cost relative to exact TAG, both for the estimate measured on the same steps and on every
10th of them only. Threads pinned to 1; the cost ratios are measured side by side in one run.

Part 2 (``--part grouping``): TAG's claim. For each seed: exact TAG affinity from a training run
of that seed, ``multitask.relations.group_tasks`` picks ``k`` groups, then one model per group,
one model with all tasks, and one model per task are trained with the same recipe; reports Δm on
the test split against single-task training for all-in-one and for the grouping.

    python benchmarks/affinity.py --part estimates --datasets yeast,qm9 --seeds 0,1,2
    python benchmarks/affinity.py --part grouping --datasets yeast --k 3 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from multitask.config import resolve_config
from multitask.relations.study import run_affinity

FRACTIONS = ("1/5", "1/10")

RECIPES: dict[str, dict[str, Any]] = {
    "yeast": {"data": {"dataset": "yeast"}, "train": {"epochs": 15, "batch_size": 128, "lr": 1e-3}},
    "qm9": {"data": {"dataset": "qm9", "subset": 10000}, "train": {"epochs": 10, "batch_size": 256, "lr": 1e-3}},
    "adult": {"data": {"dataset": "adult"}, "train": {"epochs": 10, "batch_size": 1024, "lr": 3e-3}},
}


def config(dataset: str, seed: int, weighting: str = "equal") -> dict[str, Any]:
    if dataset not in RECIPES:
        raise SystemExit(f"--datasets: {dataset!r} has no recipe here; choose from {sorted(RECIPES)}")
    recipe = json.loads(json.dumps(RECIPES[dataset]))
    recipe["train"]["seed"] = seed
    recipe["weighting"] = {"name": weighting}
    recipe["run"] = {"quiet": True}
    return resolve_config(recipe)


def ms(values: list[float | None]) -> str:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def estimates(args: argparse.Namespace) -> None:
    for dataset in args.datasets:
        rows: dict[str, dict[str, list[float]]] = {}
        steps = []
        for seed in args.seeds:
            out = args.out / args.weighting / dataset / f"seed-{seed}"
            report = run_affinity(config(dataset, seed, args.weighting), out, every=args.every, lr=args.lookahead_lr,
                                  projections=args.projections)  # fmt: skip
            steps.append(report["measured_steps"])
            for m in ["tag", *report["spearman_vs_tag"]]:
                r = rows.setdefault(m, {})
                r.setdefault("rho", []).append(report["spearman_vs_tag"].get(m, 1.0))
                r.setdefault("cost", []).append(report["cost_vs_tag"][m])
                for frac in FRACTIONS:
                    v = report["subsampled"][frac]["methods"][m]
                    r.setdefault(f"rho {frac}", []).append(v["spearman_vs_tag"])
                    r.setdefault(f"cost {frac}", []).append(v["cost_vs_tag"])
            rows.setdefault("labels", {}).setdefault("rho", []).append(report["spearman_labels_vs_tag"])
            print(f"[{dataset} seed {seed}] {json.dumps(report['spearman_vs_tag'])}", file=sys.stderr)
        t = len(report["tasks"])
        print(f"\n### {dataset}, trained with {args.weighting} ({t} tasks, {steps[0]} measured steps per seed, "
              f"seeds {args.seeds})\n")  # fmt: skip
        head = ["estimate", "Spearman vs exact TAG", "cost / exact TAG"]
        for frac in FRACTIONS:
            head += [f"Spearman, {frac} of the steps", f"cost, {frac}"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for m, r in rows.items():
            cells = [m, ms(r["rho"]), ms(r.get("cost", []))]
            for frac in FRACTIONS:
                cells += [ms(r.get(f"rho {frac}", [])), ms(r.get(f"cost {frac}", []))]
            print("| " + " | ".join(cells) + " |")


def grouping(args: argparse.Namespace) -> None:
    from multitask.relations import group_tasks
    from multitask.relations.study import train_groups

    for dataset in args.datasets:
        lines = []
        for seed in args.seeds:
            cfg = config(dataset, seed, args.weighting)
            out = args.out / dataset / f"seed-{seed}"
            report = run_affinity(cfg, out / "affinity", every=args.every, lr=args.lookahead_lr,
                                  estimates=("first_order",))  # fmt: skip
            z = np.array(report["matrices"]["tag"], dtype=float)
            chosen = group_tasks(z, k=args.k, task_names=report["tasks"], objective="tag")
            groups = [list(g) for g in chosen.named_groups]
            res = train_groups(cfg, groups, out / "train", served_by=chosen.assignment)
            lines.append((seed, groups, res))
            print(f"[{dataset} seed {seed}] groups {groups}: {json.dumps(res['delta_m'])}", file=sys.stderr)
        print(f"\n### {dataset}: k = {args.k} groups chosen from exact TAG (test Δm vs single-task, %)\n")
        print("| seed | groups | all tasks together | grouping |")
        print("|---|---|---|---|")
        for seed, groups, res in lines:
            g = "; ".join("{" + ", ".join(x) + "}" for x in groups)
            print(
                f"| {seed} | {g} | {100 * res['delta_m']['together']:+.2f} | {100 * res['delta_m']['grouped']:+.2f} |"
            )
        tog = [100 * r["delta_m"]["together"] for _, _, r in lines]
        grp = [100 * r["delta_m"]["grouped"] for _, _, r in lines]
        print(f"| mean ± std | | {ms(tog)} | {ms(grp)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["estimates", "grouping"], default="estimates")
    p.add_argument("--datasets", default="yeast,qm9", type=lambda s: [x for x in s.split(",") if x])
    p.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",") if x])
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--lookahead-lr", type=float, default=None)
    p.add_argument("--projections", type=int, default=4)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--weighting", default="equal", help="weighting of the measured run (upgrad: first_order_engine)")
    p.add_argument("--out", type=Path, default=Path("bench-affinity"))
    args = p.parse_args()
    torch.set_num_threads(1)
    (estimates if args.part == "estimates" else grouping)(args)


if __name__ == "__main__":
    main()
