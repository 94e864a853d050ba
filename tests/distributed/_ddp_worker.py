"""Worker for the distributed tests: run under ``torchrun`` (or plainly, as a single process).

    python -m torch.distributed.run --standalone --nproc-per-node 2 _ddp_worker.py SCENARIO OUT [...]

Scenarios:
    equivalence OUT             train every (method, grad mode) of ``CASES`` for ``STEPS`` steps and
                                save the final parameters of each rank to OUT/<method>-<mode>-rank<r>.pt
    interrupt OUT STEP          train with checkpoints, stop every rank at ``STEP`` (as Ctrl-C would)
    resume OUT                  resume the checkpoint in OUT and train to the end; save the parameters
    die OUT STEP                rank 1 exits abruptly at ``STEP``; the others must not hang
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from multitask.architectures import build_model
from multitask.callbacks.base import Callback
from multitask.data.base import MultiTaskData
from multitask.data.batch import TensorSplit
from multitask.distributed import Distributed, init_from_env
from multitask.tasks import Task
from multitask.trainer import Trainer
from multitask.weighting import create_weighting

METHODS = ("equal", "uncertainty", "gradnorm", "mgda", "pcgrad", "cagrad", "nash_mtl", "upgrad")
MODES = ("exact", "features")
CASES = [(m, g) for m in METHODS for g in MODES]
# the same, with each rank's share split again into 2 micro-batches (gradient accumulation)
ACCUMULATE_CASES = [("uncertainty", "exact"), ("mgda", "exact"), ("upgrad", "features"), ("dwa", "every:3")]
GLOBAL_BATCH = 16
STEPS = 10


def make_data(n: int = GLOBAL_BATCH * STEPS, d: int = 5, seed: int = 0) -> MultiTaskData:
    """Three tasks with ~25% missing labels, so the ranks' labelled-row counts differ."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 40, d, generator=g)
    s = x @ torch.randn(d, generator=g)
    targets = {
        "reg": s + 0.1 * torch.randn(n + 40, generator=g),
        "bin": (s + 0.5 * torch.randn(n + 40, generator=g) > 0).float(),
        "cls": torch.bucketize(-s, torch.tensor([-0.5, 0.5])),
    }
    masks = {k: torch.rand(n + 40, generator=g) > 0.25 for k in targets}
    tasks = [Task("reg", "regression"), Task("bin", "binary"), Task("cls", "multiclass", num_classes=3)]

    def split(lo: int, hi: int) -> TensorSplit:
        return TensorSplit(x[lo:hi], {k: v[lo:hi] for k, v in targets.items()}, {k: v[lo:hi] for k, v in masks.items()})

    return MultiTaskData("ddp-synthetic", tasks, split(0, n), split(n, n + 20), split(n + 20, n + 40))


def make_trainer(
    method: str, mode: str, dist: Distributed | None, *, epochs: int = 1, **kwargs: Any
) -> tuple[Trainer, MultiTaskData]:
    data = make_data()
    torch.manual_seed(0)
    model = build_model("hard_sharing", data.input_shape, data.tasks, hidden=[16, 8])
    trainer = Trainer(
        model,
        data.tasks,
        create_weighting(method, len(data.tasks)),
        epochs=epochs,
        batch_size=GLOBAL_BATCH,
        lr=0.05,
        optimizer="sgd",
        grad_mode=mode,
        dist=dist,
        **kwargs,
    )
    return trainer, data


def flat_params(trainer: Trainer) -> torch.Tensor:
    tensors = [*trainer.model.parameters(), *trainer.weighting.parameters()]
    return torch.cat([p.detach().reshape(-1) for p in tensors]).double()


class StopAt(Callback):
    """Raise KeyboardInterrupt (as Ctrl-C would) or exit the process abruptly at a global step."""

    def __init__(self, step: int, *, die: bool = False) -> None:
        self.step, self.die = step, die

    def on_step_end(self, trainer: Trainer, info: Any) -> None:
        if trainer.global_step == self.step:
            if self.die:
                os._exit(3)
            raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    dist = init_from_env(timeout_s=60)
    ok = False
    try:
        code = scenario_main(argv, dist)
        ok = code == 0
        return code
    finally:
        if dist is not None:
            dist.close(wait=ok)


def scenario_main(argv: list[str], dist: Distributed | None) -> int:
    scenario, out = argv[0], Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rank = dist.rank if dist is not None else 0
    world = dist.world_size if dist is not None else 1
    if scenario == "equivalence":
        for method, mode in CASES:
            trainer, data = make_trainer(method, mode, dist)
            trainer.fit(data)
            torch.save(flat_params(trainer), out / f"{method}-{mode}-w{world}-rank{rank}.pt")
        for method, mode in ACCUMULATE_CASES:
            trainer, data = make_trainer(method, mode, dist, accumulate=2)
            trainer.fit(data)
            torch.save(flat_params(trainer), out / f"{method}-{mode}-acc2-w{world}-rank{rank}.pt")
    elif scenario in ("interrupt", "resume"):
        method, mode = "pcgrad", "exact"
        callbacks = [StopAt(int(argv[2]))] if scenario == "interrupt" else []
        trainer, data = make_trainer(
            method, mode, dist, epochs=2, checkpoint_path=out / "checkpoint.pt", checkpoint_every=1, callbacks=callbacks
        )
        try:
            trainer.fit(data, resume=scenario == "resume")
        except KeyboardInterrupt:
            return 0
        torch.save(flat_params(trainer), out / f"{scenario}-w{world}-rank{rank}.pt")
    elif scenario == "die":
        callbacks = [StopAt(int(argv[2]), die=True)] if rank == 1 else []
        trainer, data = make_trainer("mgda", "exact", dist, epochs=50, callbacks=callbacks)
        trainer.fit(data)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
