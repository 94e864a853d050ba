"""Task grouping (``multitask.relations.group_tasks``): exact solver time and correctness, heuristic
quality against exact, heuristic time at scale. Prints the Markdown tables of docs/relations.md::

    python benchmarks/grouping.py                  # everything, 3 repeats (about 5 minutes on one core)
    python benchmarks/grouping.py --repeats 1 --sizes 8,10,12 --large 100

Instances: ``clustered`` affinities (T/4 latent clusters, +0.6 within a cluster, -0.3 offset, a
per-source helpfulness N(0, 0.2), noise N(0, 0.4)), the kind of structure a real affinity matrix
has, and ``gaussian`` ones (i.i.d. N(0, 1), no structure: the hardest for the heuristics).
Budgets: ``k`` groups, or a cost of 0.25 per model. Threads are pinned to one (BLAS, OpenMP,
torch); every timing is repeated (``--repeats``) and reported as min / median.

1. exact solver time for T = 8 ... 16 (its limit) per objective and budget;
2. exact = brute force: every set partition with at most k blocks (partition, T <= 10), every
   combination of at most k of the 2^T - 1 candidate groups (tag, T <= 7, k <= 3);
3. heuristic quality at T = 12: greedy, spectral, and both (what ``auto`` runs above its exact
   limit) against exact: share of instances solved optimally, mean and worst relative gap;
4. heuristic time (and score) at T = 100 and T = 300.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import itertools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from multitask.relations import Grouping, group_tasks  # noqa: E402
from multitask.relations.grouping import EXACT_MAX_TASKS  # noqa: E402

COST = 0.25


def clustered(t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, max(2, t // 4), t)
    base = 0.6 * (labels[:, None] == labels[None, :]) - 0.3 + rng.normal(0, 0.2, t)[:, None]
    z: np.ndarray = base + rng.normal(0, 0.4, (t, t))
    np.fill_diagonal(z, np.nan)
    return z


def gaussian(t: int, seed: int) -> np.ndarray:
    z: np.ndarray = np.random.default_rng(seed).normal(size=(t, t))
    np.fill_diagonal(z, np.nan)
    return z


def budgets(k: int) -> list[tuple[str, dict[str, Any]]]:
    return [(f"k={k}", {"k": k}), (f"cost={COST}", {"cost": COST})]


def timed(z: np.ndarray, repeats: int, **kwargs: Any) -> tuple[list[float], Grouping]:
    """Wall times of ``repeats`` calls of ``group_tasks(z, **kwargs)`` and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = group_tasks(z, **kwargs)
        times.append(time.perf_counter() - start)
    assert out is not None
    return times, out


def fmt(times: list[float]) -> str:
    """``min / median`` of repeated timings, or the one value."""
    lo, med = min(times), statistics.median(times)
    scale, unit = (1e3, "ms") if med < 1 else (1.0, "s")
    if len(times) == 1:
        return f"{med * scale:.3g} {unit}"
    return f"{lo * scale:.3g} / {med * scale:.3g} {unit}"


def brute_partition(z: np.ndarray, k: int, cost: float) -> float:
    t = len(z)
    rgs = np.zeros((1, 1), dtype=np.int64)
    for _ in range(1, t):
        reps = np.minimum(rgs.max(axis=1) + 2, k)
        rgs = np.hstack([np.repeat(rgs, reps, axis=0), np.concatenate([np.arange(r) for r in reps])[:, None]])
    zd = np.nan_to_num(z)
    np.fill_diagonal(zd, 0.0)
    same = rgs[:, :, None] == rgs[:, None, :]
    return float(((same * zd).sum(axis=(1, 2)) - cost * (rgs.max(axis=1) + 1)).max())


def brute_tag(z: np.ndarray, k: int, cost: float) -> float:
    t = len(z)
    zd = np.nan_to_num(z)
    np.fill_diagonal(zd, 0.0)
    x = ((np.arange(1, 2**t)[:, None] >> np.arange(t)) & 1).astype(bool)
    n = x.sum(axis=1)
    p = np.where(x, np.where((n >= 2)[:, None], (x @ zd) / np.maximum(n - 1, 1)[:, None], 0.0), -np.inf)
    best = -np.inf
    for m in range(1, k + 1):
        combos = np.array(list(itertools.combinations(range(len(x)), m)))
        best = max(best, float((p[combos].max(axis=1).sum(axis=1) - cost * m).max()))
    return best


def exact_times(sizes: list[int], repeats: int) -> None:
    print("### Exact solver time (clustered instance, seed 0; min / median of", repeats, "runs)\n")
    print("| objective | budget | " + " | ".join(f"T = {t}" for t in sizes) + " |")
    print("|---|---|" + "---:|" * len(sizes))
    for objective in ("partition", "tag"):
        for label, budget in budgets(3):
            cells = []
            for t in sizes:
                z = clustered(t, 0)
                times, _ = timed(z, repeats, objective=objective, method="exact", **budget)
                cells.append(fmt(times))
            print(f"| {objective} | {label} | " + " | ".join(cells) + " |", flush=True)
    print()


def brute_force_agreement(seeds: int) -> None:
    print(f"### Exact = brute force ({seeds} seeds x 2 families per row)\n")
    print("| objective | T | budgets | agree | max abs diff | brute force (one instance, median) |")
    print("|---|---:|---|---:|---:|---:|")
    cases = [("partition", t, brute_partition) for t in (6, 8, 10)] + [("tag", t, brute_tag) for t in (5, 6, 7)]
    for objective, t, brute in cases:
        agree = total = 0
        worst = 0.0
        brute_times = []
        for family in (clustered, gaussian):
            for seed in range(seeds):
                z = family(t, seed)
                for k, cost in ((1, 0.0), (2, 0.0), (3, 0.0), (3, COST)):
                    got = group_tasks(z, k=k, cost=cost, objective=objective, method="exact").score
                    start = time.perf_counter()
                    want = brute(z, k, cost)
                    brute_times.append(time.perf_counter() - start)
                    worst = max(worst, abs(got - want))
                    agree += abs(got - want) <= 1e-9
                    total += 1
        budgets_s = f"k = 1, 2, 3; k = 3 + cost {COST}"
        print(
            f"| {objective} | {t} | {budgets_s} | {agree}/{total} | {worst:.1e} | "
            f"{fmt([statistics.median(brute_times)])} |",
            flush=True,
        )
    print()


def quality(t: int, seeds: int) -> None:
    print(f"### Heuristics against exact at T = {t} ({seeds} seeds x 2 families x 4 budgets per row)\n")
    print("| objective | method | optimal | mean gap | worst gap | median time |")
    print("|---|---|---:|---:|---:|---:|")
    for objective in ("partition", "tag"):
        rows: dict[str, list[tuple[float, float]]] = {"greedy": [], "spectral": [], "greedy + spectral": []}
        for family in (clustered, gaussian):
            for seed in range(seeds):
                z = family(t, seed)
                for budget in ({"k": 2}, {"k": 3}, {"k": 4}, {"cost": COST}):
                    exact = group_tasks(z, objective=objective, method="exact", **budget).score
                    found = {}
                    for method in ("greedy", "spectral"):
                        g = group_tasks(z, objective=objective, method=method, seed=seed, **budget)
                        found[method] = (g.score, g.seconds)
                    found["greedy + spectral"] = (
                        max(found["greedy"][0], found["spectral"][0]),
                        found["greedy"][1] + found["spectral"][1],
                    )
                    for method, (score, seconds) in found.items():
                        rows[method].append(((exact - score) / max(abs(exact), 1e-12), seconds))
        for method, vals in rows.items():
            gaps = np.array([v[0] for v in vals])
            print(
                f"| {objective} | {method} | {np.mean(gaps <= 1e-9):.0%} | {100 * gaps.mean():.2f}% | "
                f"{100 * gaps.max():.2f}% | {fmt([statistics.median(v[1] for v in vals)])} |",
                flush=True,
            )
    print()


def large(sizes: list[int], repeats: int) -> None:
    print(f"### Heuristics at scale (clustered instance, seed 0; min / median of {repeats} runs)\n")
    print("| T | objective | budget | method | time | groups | score |")
    print("|---:|---|---|---|---:|---:|---:|")
    for t in sizes:
        z = clustered(t, 0)
        for objective in ("partition", "tag"):
            for label, budget in budgets(5):
                for method in ("greedy", "spectral", "auto"):
                    times, g = timed(z, repeats, objective=objective, method=method, **budget)
                    shown = method if method != "auto" else f"auto ({g.method})"
                    print(
                        f"| {t} | {objective} | {label} | {shown} | {fmt(times)} | {len(g.groups)} | {g.score:.4g} |",
                        flush=True,
                    )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=f"8,10,12,15,{EXACT_MAX_TASKS}", help="exact solver sizes")
    parser.add_argument("--seeds", type=int, default=5, help="instances per family (brute force, quality)")
    parser.add_argument("--large", default="100,300", help="heuristic sizes")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency of multitask
        pass
    print(f"numpy {np.__version__}, 1 thread, {os.cpu_count()} CPUs visible\n")
    exact_times([int(s) for s in args.sizes.split(",")], args.repeats)
    brute_force_agreement(args.seeds)
    quality(12, args.seeds)
    large([int(s) for s in args.large.split(",")], args.repeats)


if __name__ == "__main__":
    main()
