from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from multitask.architectures import build_model
from multitask.callbacks import Callback
from multitask.checkpoint import CheckpointError
from multitask.data.base import MultiTaskData
from multitask.engine import NonFiniteLossError, StepInfo
from multitask.trainer import Trainer

WEIGHTINGS_TO_RESUME = ["equal", "dwa", "uncertainty", "famo", "rlw", "gradnorm"]


def make_trainer(data: MultiTaskData, tmp: Path | None, weighting: str = "equal", **kw: Any) -> Trainer:
    torch.manual_seed(0)
    model = build_model("hard_sharing", data.input_shape, data.tasks, hidden=[16, 8], dropout=0.1)
    defaults: dict[str, Any] = {"epochs": 3, "batch_size": 32, "lr": 1e-2, "seed": 3}
    defaults.update(kw)
    return Trainer(
        model,
        data.tasks,
        weighting,
        checkpoint_path=tmp / "ckpt.pt" if tmp else None,
        metrics_path=tmp / "metrics.jsonl" if tmp else None,
        **defaults,
    )


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def _strip_time(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.mark.parametrize("weighting", WEIGHTINGS_TO_RESUME)
def test_resume_mid_epoch_is_exact(synthetic: MultiTaskData, tmp_path: Path, weighting: str) -> None:
    full = make_trainer(synthetic, tmp_path / "full", weighting).fit(synthetic)
    steps_per_epoch = synthetic.train.num_batches(32)
    stop = steps_per_epoch + 2  # inside the second epoch
    part = make_trainer(synthetic, tmp_path / "part", weighting)
    part.callbacks.append(StopAt(stop))
    with pytest.raises(KeyboardInterrupt):
        part.fit(synthetic)
    resumed = make_trainer(synthetic, tmp_path / "part", weighting)
    torch.manual_seed(12345)  # the global RNG must come from the checkpoint, not from here
    resumed.fit(synthetic, resume=True)
    assert resumed.global_step == full.global_step
    for (n, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    for a, b in zip(full.weighting.state_dict().values(), resumed.weighting.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert _strip_time(full.history) == _strip_time(resumed.history)
    lines = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert _strip_time(lines) == _strip_time(full.history)


def test_selects_best_validation_epoch_and_never_reads_test(synthetic: MultiTaskData) -> None:
    tr = make_trainer(synthetic, None, epochs=4)
    # poison the test split: training and selection must not touch it
    synthetic.test.inputs.fill_(float("nan"))
    tr.fit(synthetic)
    best = min(range(4), key=lambda i: tr.history[i]["val_loss"])
    assert tr.best_epoch == best + 1
    assert tr.evaluate(synthetic.val)["reg"]["loss"] == pytest.approx(tr.history[best]["val"]["reg"]["loss"])


def test_nan_loss_stops_with_task_and_step_and_keeps_last_good_checkpoint(
    synthetic: MultiTaskData, tmp_path: Path
) -> None:
    class Poison(Callback):
        def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
            if trainer.global_step == 9:  # inside epoch 2, after the epoch-1 checkpoint
                synthetic.train.targets["reg"].fill_(float("nan"))

    tr = make_trainer(synthetic, tmp_path, epochs=3)
    tr.callbacks.append(Poison())
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(NonFiniteLossError, match=r"\['reg'\].*step 10.*last good checkpoint") as info:
        tr.fit(synthetic)
    assert info.value.tasks == ["reg"]
    saved = torch.load(ckpt, weights_only=True)
    assert saved["progress"]["global_step"] == synthetic.train.num_batches(32)  # the epoch-1 checkpoint
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_absent_task_in_batch_gets_zero_weight(synthetic: MultiTaskData) -> None:
    synthetic.train.masks["cls"].fill_(False)
    seen: list[StepInfo] = []

    class Grab(Callback):
        def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
            seen.append(info)

    tr = make_trainer(synthetic, None, epochs=1)
    tr.callbacks.append(Grab())
    tr.fit(synthetic)
    assert all(float(i.weights[2]) == 0.0 and not bool(i.present[2]) for i in seen)
    assert all(math.isfinite(float(i.losses.sum())) for i in seen)


def test_corrupted_truncated_and_incompatible_checkpoints_are_refused(synthetic: MultiTaskData, tmp_path: Path) -> None:
    tr = make_trainer(synthetic, tmp_path, epochs=1).fit(synthetic)
    ckpt = tmp_path / "ckpt.pt"
    raw = ckpt.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        tr.load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        tr.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a multitask checkpoint"):
        tr.load_checkpoint(tmp_path / "other.pt")
    other = make_trainer(synthetic.select_tasks(["reg", "bin"]), None)
    with pytest.raises(CheckpointError, match="trained on tasks"):
        other.load_checkpoint(ckpt)
    lr_changed = make_trainer(synthetic, None, epochs=1, lr=0.5)
    with pytest.raises(CheckpointError, match="lr=0.01"):
        lr_changed.load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="does not exist"):
        tr.load_checkpoint(tmp_path / "missing.pt")


def test_bad_arguments_name_the_value(synthetic: MultiTaskData) -> None:
    with pytest.raises(ValueError, match="epochs=0"):
        make_trainer(synthetic, None, epochs=0)
    with pytest.raises(ValueError, match="did you mean 'adam'"):
        make_trainer(synthetic, None, optimizer="adma")
    with pytest.raises(ValueError, match="did you mean 'equal'"):
        make_trainer(synthetic, None, weighting="equl")
    with pytest.raises(ValueError, match="lr=-1"):
        make_trainer(synthetic, None, lr=-1.0)
