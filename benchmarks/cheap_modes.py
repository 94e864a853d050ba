"""Accuracy of the cheap grad modes: exact vs features vs every:K for gradient methods, on real data.

For each dataset and seed, the single-task baselines are trained once; then every method x mode
is trained with the same recipe and compared against them (Δm, per-task test metrics, wall time).
Prints a Markdown table of mean ± std over seeds, as recorded in docs/benchmarks.md::

    python benchmarks/cheap_modes.py --dataset multidigits --dataset adult --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from multitask.config import resolve_config
from multitask.experiment import load_data, train_one
from multitask.metrics import delta_m

RECIPES: dict[str, dict[str, Any]] = {
    "multidigits": {"train": {"epochs": 20}},
    "adult": {"train": {"epochs": 10, "batch_size": 256}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="datasets (default: multidigits, adult)")
    parser.add_argument("--method", action="append", help="methods (default: mgda pcgrad nash_mtl upgrad)")
    parser.add_argument("--mode", action="append", help="grad modes (default: exact features every:10)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (smoke tests)")
    parser.add_argument("--out-dir", default=None, help="keep run directories here (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    args = parser.parse_args()
    datasets = args.dataset or list(RECIPES)
    methods = args.method or ["mgda", "pcgrad", "nash_mtl", "upgrad"]
    modes = args.mode or ["exact", "features", "every:10"]
    seeds = [int(s) for s in args.seeds.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out_dir or tmp)
        for ds in datasets:
            base = json.loads(json.dumps(RECIPES.get(ds, {})))
            if args.epochs is not None:
                base.setdefault("train", {})["epochs"] = args.epochs
            for seed in seeds:
                cfg = resolve_config(
                    {"data": {"dataset": ds}, "train": {**base.get("train", {}), "seed": seed}, "run": {"quiet": True}}
                )
                data = load_data(cfg)
                tasks = [t for t in data.tasks if not t.auxiliary]
                single = {
                    t.name: train_one(
                        cfg,
                        data.select_tasks([t.name]),
                        out / ds / f"seed{seed}" / "single" / t.name,
                        label=t.name,
                        weighting="equal",
                        weighting_params={},
                    )
                    for t in tasks
                }
                stl = {t.name: single[t.name]["test"][t.name] for t in tasks}
                dirs = {t.name: {t.main_metric.name: t.main_metric.higher_is_better} for t in tasks}
                runs = [("equal", "exact")] + [(m, mode) for m in methods for mode in modes]
                for method, mode in runs:
                    c = resolve_config(
                        {**cfg, "weighting": {"name": method}, "train": {**cfg["train"], "grad_mode": mode}}
                    )
                    t0 = time.perf_counter()
                    r = train_one(c, data, out / ds / f"seed{seed}" / f"{method}-{mode.replace(':', '')}", label=method)
                    mtl = {t.name: r["test"][t.name] for t in tasks}
                    results.append(
                        {
                            "dataset": ds,
                            "seed": seed,
                            "method": method,
                            "mode": mode,
                            "delta_m": delta_m(mtl, stl, dirs),
                            "seconds": time.perf_counter() - t0,
                            "test": {t.name: r["test"][t.name][t.main_metric.name] for t in tasks},
                        }
                    )
                    print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print("\n| dataset | method | mode | Δm mean ± std (%) | per-seed Δm (%) | wall time per run (s) |")
    print("|---|---|---|---|---|---|")
    keys = sorted(
        {(r["dataset"], r["method"], r["mode"]) for r in results}, key=lambda k: (k[0], k[1] != "equal", k[1], k[2])
    )
    for ds, method, mode in keys:
        rs = [r for r in results if (r["dataset"], r["method"], r["mode"]) == (ds, method, mode)]
        dm = [100 * r["delta_m"] for r in rs]
        std = statistics.stdev(dm) if len(dm) > 1 else math.nan
        print(
            f"| {ds} | {method} | {mode} | {statistics.mean(dm):+.2f} ± {std:.2f} | "
            f"{', '.join(f'{v:+.2f}' for v in dm)} | {statistics.median(r['seconds'] for r in rs):.1f} |"
        )


if __name__ == "__main__":
    main()
