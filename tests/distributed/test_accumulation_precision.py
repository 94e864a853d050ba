"""Gradient accumulation, mixed precision and torch.compile, on one process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from multitask.engine import Engine, StepInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ddp_worker as worker

ACCUMULATE = [
    ("equal", "exact"),
    ("uncertainty", "exact"),
    ("dwa", "exact"),
    ("famo", "exact"),
    ("gradnorm", "exact"),
    ("mgda", "exact"),
    ("mgda", "features"),
    ("pcgrad", "every:3"),
    ("cagrad", "features+every:2"),
    ("nash_mtl", "exact"),
    ("upgrad", "features"),
]


@pytest.mark.parametrize(("method", "mode"), ACCUMULATE)
@pytest.mark.parametrize("k", [2, 3])
def test_accumulation_gives_the_update_of_the_whole_batch(method: str, mode: str, k: int) -> None:
    plain, data = worker.make_trainer(method, mode, None)
    plain.fit(data)
    acc, _ = worker.make_trainer(method, mode, None, accumulate=k)
    acc.fit(data)
    assert float((worker.flat_params(plain) - worker.flat_params(acc)).abs().max()) <= 1e-5
    assert acc.history[-1]["weights"] == pytest.approx(plain.history[-1]["weights"], abs=1e-5)


class RecordingDropout(torch.nn.Module):
    """Dropout that records every mask it draws."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (torch.rand(x.shape) > 0.3).to(x.dtype)
        self.masks.append(mask)
        return x * mask / 0.7


@pytest.mark.parametrize("method", ["mgda", "equal"])
def test_pass_two_replays_the_dropout_masks_of_pass_one(method: str) -> None:
    from multitask.architectures.base import HardSharing
    from multitask.trainer import Trainer

    data = worker.make_data()
    torch.manual_seed(0)
    drop = RecordingDropout()
    trunk = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), drop)
    heads = {t.name: torch.nn.Linear(8, t.output_dim) for t in data.tasks}
    trainer = Trainer(HardSharing(trunk, heads), data.tasks, method, epochs=1, batch_size=16, accumulate=2)
    trainer.fit(data)
    train_masks = drop.masks[: 4 * worker.STEPS]  # then validation forwards follow
    for step in range(worker.STEPS):
        m1a, m2a, m1b, m2b = train_masks[4 * step : 4 * step + 4]
        assert torch.equal(m1a, m1b) and torch.equal(m2a, m2b)
        assert not torch.equal(m1a, m2a)
    # and the run continues with fresh masks, as without accumulation
    assert not torch.equal(train_masks[0], train_masks[4])


def test_accumulation_refuses_aggregators_and_small_batches() -> None:
    with pytest.raises(ValueError, match="graddrop|GradDrop"):
        worker.make_trainer("graddrop", "exact", None, accumulate=2)
    from multitask.trainer import Trainer

    trainer, data = worker.make_trainer("equal", "exact", None)
    with pytest.raises(ValueError, match="accumulate=32"):
        Trainer(trainer.model, data.tasks, "equal", batch_size=16, accumulate=32)


class Record:
    def __init__(self) -> None:
        self.infos: list[StepInfo] = []

    def on_fit_start(self, trainer: Any) -> None: ...
    def on_epoch_start(self, *a: Any) -> None: ...
    def on_epoch_end(self, *a: Any) -> None: ...
    def on_fit_end(self, trainer: Any) -> None: ...

    def on_step_end(self, trainer: Any, info: StepInfo) -> None:
        self.infos.append(info)


@pytest.mark.parametrize("mode", ["exact", "features"])
def test_bf16_autocast_trains_with_a_float32_gramian(mode: str) -> None:
    rec = Record()
    trainer, data = worker.make_trainer("mgda", mode, None, precision="bf16", callbacks=[rec], epochs=3)
    trainer.fit(data)
    g = rec.infos[-1].gramian
    assert g is not None and g.dtype == torch.float32
    ref, _ = worker.make_trainer("mgda", mode, None, epochs=3)
    ref.fit(data)
    assert trainer.history[-1]["val_loss"] == pytest.approx(ref.history[-1]["val_loss"], rel=0.05)
    assert trainer.history[-1]["val_loss"] < trainer.history[0]["val_loss"] * 1.5


@pytest.mark.parametrize(
    ("method", "mode"), [("equal", "exact"), ("uncertainty", "exact"), ("mgda", "exact"), ("cagrad", "features")]
)
def test_the_loss_scale_multiplies_every_gradient_and_changes_no_weight(method: str, mode: str) -> None:
    """What torch.amp.GradScaler needs: gradients S times the true ones; the method sees the true Gramian."""
    grads, weights = [], []
    for scale in (1.0, 1024.0):
        trainer, data = worker.make_trainer(method, mode, None)
        batch = data.train.rows(torch.arange(16))
        outputs, z, views = trainer.model.forward_task_features(batch.inputs)
        losses, present, _ = trainer._losses(batch, outputs)
        shared = list(trainer.model.shared_parameters())
        ids = {id(p) for p in shared}
        other = [p for p in trainer.model.parameters() if id(p) not in ids] + list(trainer.weighting.parameters())
        eng = Engine(trainer.weighting, grad_mode=mode)
        info = eng.backward(
            losses, shared, other_params=other, present=present, features=z, task_features=list(views.values()),
            loss_scale=scale,
        )  # fmt: skip
        grads.append(torch.cat([p.grad.reshape(-1) / scale for p in [*shared, *other] if p.grad is not None]))
        weights.append(info.weights)
    torch.testing.assert_close(weights[0], weights[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_fp16_with_a_grad_scaler_trains() -> None:
    trainer, data = worker.make_trainer("upgrad", "exact", None, precision="fp16", epochs=3)
    assert trainer.scaler is not None
    trainer.fit(data)
    assert trainer.scaler.get_scale() > 0
    assert all(torch.isfinite(worker.flat_params(trainer)))
    assert trainer.history[-1]["val_loss"] < trainer.history[0]["val_loss"] * 1.5


def test_bad_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision='fp8'"):
        worker.make_trainer("equal", "exact", None, precision="fp8")


@pytest.mark.parametrize(("method", "mode"), [("uncertainty", "exact"), ("mgda", "features")])
def test_compile_matches_eager(method: str, mode: str) -> None:
    compiled, data = worker.make_trainer(method, mode, None, compile=True)
    compiled.fit(data)
    eager, _ = worker.make_trainer(method, mode, None)
    eager.fit(data)
    assert float((worker.flat_params(compiled) - worker.flat_params(eager)).abs().max()) <= 1e-5


def test_compile_is_refused_where_torch_gets_exact_jacobians_wrong() -> None:
    with pytest.raises(ValueError, match="grad_mode='features'"):
        worker.make_trainer("mgda", "exact", None, compile=True)
