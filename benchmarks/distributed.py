"""Bytes communicated and step time of data-parallel training: plain DDP vs our engine per grad mode.

The ANCHORS.md model (MLP trunk 256->512->512->256, T linear heads, per-task MSE, SGD), T = 8, a
global batch of 256 split over 2 CPU processes (gloo, 1 thread each). Configurations:

* ``ddp``: ``torch.nn.parallel.DistributedDataParallel`` with ``sum(losses).backward()`` (what
  users run today; bytes counted by a communication hook around the default all-reduce);
* ours, through :class:`multitask.engine.Engine` with ``dist``: equal weighting (loss-only), and
  MGDA / UPGrad in each grad mode (exact, features, every:10, features+every:10).

Every configuration has its own model copy and optimizer; the steps of all configurations are
interleaved round-robin (each step starts after a barrier), so noise hits them alike. Reported: the
payload bytes this rank put into collectives per step, and the median step time over the median
plain-DDP step (min / median over ``--repeats`` rounds of ``--steps`` steps)::

    python benchmarks/distributed.py                  # launches itself with torchrun, 2 processes
    python benchmarks/distributed.py --tasks 8 --steps 30 --repeats 3 --json dist.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from multitask.architectures.base import HardSharing, mlp
from multitask.distributed import Distributed
from multitask.engine import Engine
from multitask.weighting import create_weighting

METHODS = [("equal", "exact"), ("mgda", "exact"), ("mgda", "features"), ("mgda", "every:10")]
METHODS += [("mgda", "features+every:10"), ("upgrad", "exact"), ("upgrad", "features")]


def make_model(tasks: int) -> HardSharing:
    torch.manual_seed(0)
    trunk = mlp(256, [512, 512, 256])
    return HardSharing(trunk, {f"t{i}": nn.Linear(256, 1) for i in range(tasks)})


def batch(rank: int, world: int, global_batch: int, tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(global_batch, 256, generator=g)
    y = torch.randn(global_batch, tasks, generator=g)
    lo, hi = rank * global_batch // world, (rank + 1) * global_batch // world
    return x[lo:hi], y[lo:hi]


class Config:
    def __init__(self, name: str, step: Callable[[], None], bytes_now: Callable[[], int]) -> None:
        self.name, self.step, self.bytes_now = name, step, bytes_now
        self.times: list[float] = []
        self.bytes: list[int] = []


def build(tasks: int, global_batch: int, d: Distributed) -> list[Config]:
    x, y = batch(d.rank, d.world_size, global_batch, tasks)
    names = [f"t{i}" for i in range(tasks)]
    configs = []

    # plain DDP
    model = make_model(tasks)
    ddp = nn.parallel.DistributedDataParallel(model)
    counter = {"bytes": 0}

    def hook(state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        buf = bucket.buffer()
        counter["bytes"] += buf.numel() * buf.element_size()
        buf.div_(d.world_size)
        fut = dist.all_reduce(buf, async_op=True).get_future()  # type: ignore[union-attr]
        return fut.then(lambda f: f.value()[0])

    ddp.register_comm_hook(None, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)

    def ddp_step() -> None:
        opt.zero_grad(set_to_none=True)
        out = ddp(x)
        loss = sum(F.mse_loss(out[n].squeeze(1), y[:, i]) for i, n in enumerate(names))
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        opt.step()

    configs.append(Config("plain DDP (sum of losses)", ddp_step, lambda: counter["bytes"]))

    for method, mode in METHODS:
        configs.append(_ours(method, mode, tasks, x, y, names, d))
    return configs


def _ours(
    method: str, mode: str, tasks: int, x: torch.Tensor, y: torch.Tensor, names: list[str], d: Distributed
) -> Config:
    m = make_model(tasks)
    engine = Engine(create_weighting(method, tasks), grad_mode=mode, dist=d)
    o = torch.optim.SGD(m.parameters(), lr=1e-3)
    shared = list(m.trunk.parameters())
    heads = list(m.heads.parameters())
    counts = torch.full((tasks,), float(x.shape[0]))
    sent = {"bytes": 0}

    def step() -> None:
        start = d.bytes_communicated
        o.zero_grad(set_to_none=True)
        out, z, views = m.forward_task_features(x)
        assert views is not None
        losses = [F.mse_loss(out[n].squeeze(1), y[:, i]) for i, n in enumerate(names)]
        engine.backward(
            losses,
            shared,
            other_params=heads,
            counts=counts,
            features=z if engine.needs_gradients() else None,
            task_features=[views[n] for n in names],
        )
        o.step()
        sent["bytes"] += d.bytes_communicated - start

    return Config(f"ours: {method}, {mode}", step, lambda: sent["bytes"])


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    d = Distributed()
    configs = build(args.tasks, args.batch, d)
    for cfg in configs:  # warm-up
        for _ in range(3):
            cfg.step()
    rounds: dict[str, list[float]] = {c.name: [] for c in configs}
    per_step_bytes: dict[str, float] = {}
    for _ in range(args.repeats):
        for c in configs:
            c.times = []
        b0 = {c.name: c.bytes_now() for c in configs}
        for _ in range(args.steps):
            for c in configs:
                dist.barrier()
                t0 = time.perf_counter()
                c.step()
                c.times.append(time.perf_counter() - t0)
        for c in configs:
            per_step_bytes[c.name] = (c.bytes_now() - b0[c.name]) / args.steps
            rounds[c.name].append(statistics.median(c.times))
    d.close()  # leave the group before exit: gloo torn down by the interpreter can abort the process
    if d.rank != 0:
        return
    base = rounds[configs[0].name]
    rows = []
    for c in configs:
        ratios = [t / b for t, b in zip(rounds[c.name], base, strict=True)]
        rows.append(
            {
                "config": c.name,
                "bytes_per_step": per_step_bytes[c.name],
                "step_ms_median": 1000 * statistics.median(rounds[c.name]),
                "ratio_min": min(ratios),
                "ratio_median": statistics.median(ratios),
            }
        )
    params = sum(p.numel() for p in make_model(args.tasks).parameters())
    print(
        f"T={args.tasks}, global batch {args.batch} over {d.world_size} gloo processes (1 thread each), "
        f"{params:,} parameters ({4 * params / 1e6:.2f} MB of float32 gradients); "
        f"{args.repeats} rounds x {args.steps} interleaved steps"
    )
    print(
        "| configuration | bytes sent per step (payload) | vs plain DDP | step time (median) | step time / plain DDP (min / median) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['bytes_per_step'] / 1e6:.3f} MB | {r['bytes_per_step'] / rows[0]['bytes_per_step']:.2f}x | "
            f"{r['step_ms_median']:.1f} ms | {r['ratio_min']:.2f}x / {r['ratio_median']:.2f}x |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tasks": args.tasks, "batch": args.batch, "world_size": d.world_size, "rows": rows}, f, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256, help="global batch")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if "WORLD_SIZE" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}"]
        raise SystemExit(subprocess.call([*cmd, __file__, *sys.argv[1:]]))
    worker(args)


if __name__ == "__main__":
    main()
