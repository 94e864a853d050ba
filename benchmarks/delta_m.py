"""Δm of the default multi-task recipe against its single-task baselines, mean ± std over seeds.

Runs the real main job (``multitask train --seeds ...``) once per dataset and prints one Markdown
row per dataset, as recorded in docs/benchmarks.md::

    python benchmarks/delta_m.py                          # multidigits and adult, seeds 0,1,2
    python benchmarks/delta_m.py --dataset yeast --epochs 10 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from multitask.cli import main as multitask_main

# dataset -> extra `multitask train` options (the recipe recorded in docs/benchmarks.md)
RECIPES: dict[str, list[str]] = {
    "multidigits": [],
    "adult": ["--epochs", "10", "--batch-size", "256"],
}


def run_one(dataset: str, extra: list[str], seeds: str, out: Path) -> dict[str, object]:
    args = ["train", "--dataset", dataset, "--seeds", seeds, "-q", "--out-dir", str(out), "--name", dataset, *extra]
    t0 = time.perf_counter()
    code = multitask_main(args)
    if code != 0:
        raise SystemExit(f"multitask {' '.join(args)} exited with {code}")
    stats = json.loads((out / dataset / "seeds.json").read_text())
    per_seed = [
        json.loads((out / dataset / f"seed-{s}" / "summary.json").read_text())["delta_m"] for s in stats["seeds"]
    ]
    return {
        "dataset": dataset,
        "args": extra,
        "per_seed": per_seed,
        **stats["delta_m"],
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="dataset(s) to run (default: multidigits and adult)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out-dir", default=None, help="keep the run directories here (default: a temp dir)")
    args, extra = parser.parse_known_args()
    datasets = args.dataset or list(RECIPES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out_dir or tmp)
        for ds in datasets:
            rows.append(run_one(ds, extra or RECIPES.get(ds, []), args.seeds, out))
    print("| dataset | extra options | Δm per seed | Δm mean ± std | wall time |")
    print("|---|---|---|---|---|")
    for r in rows:
        per_seed = ", ".join(f"{100 * v:+.2f}%" for v in r["per_seed"])  # type: ignore[attr-defined]
        print(
            f"| {r['dataset']} | `{' '.join(r['args']) or '(defaults)'}` | {per_seed} | "  # type: ignore[arg-type]
            f"{100 * r['mean']:+.2f}% ± {100 * r['std']:.2f}% | {r['seconds']:.0f} s |"  # type: ignore[operator]
        )


if __name__ == "__main__":
    main()
