"""Auxiliary tasks: vector regression targets, input reconstruction, marking tasks auxiliary, Δm and selection."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import make_synthetic
from multitask.architectures import ARCHITECTURES, build_model
from multitask.config import ConfigError, resolve_config
from multitask.data import (
    MultiTaskData,
    SampledSplit,
    add_reconstruction,
    combine,
    load_dataset,
    mark_auxiliary,
    reconstruction_task,
)
from multitask.experiment import load_data, run
from multitask.metrics import mae, mse, r2
from multitask.registry import UnknownNameError
from multitask.tasks import Task
from multitask.trainer import Trainer


@pytest.fixture(scope="module")
def digits() -> MultiTaskData:
    return load_dataset("multidigits", pairs_per_image=1)


def test_reconstruction_task_is_a_vector_regression_with_per_sample_mse() -> None:
    task = reconstruction_task((1, 8, 16))
    assert (task.name, task.kind, task.output_dim, task.auxiliary) == ("reconstruction", "regression", 128, True)
    out, y = torch.randn(5, 128), torch.randn(5, 128)
    torch.testing.assert_close(task.per_sample_loss(out, y), ((out - y) ** 2).mean(dim=1))
    mask = torch.tensor([True, False, True, True, False])
    torch.testing.assert_close(task.compute_loss(out, y, mask), ((out - y) ** 2)[mask].mean())
    metrics = task.evaluate(out, y, mask)
    assert metrics["mse"] == pytest.approx(float(((out - y) ** 2)[mask].mean()), rel=1e-6)
    assert task.predict(out).shape == (5, 128)
    assert Task.from_dict(task.to_dict()) == task
    custom = Task("v", "regression", target_dim=3, loss=torch.nn.L1Loss(reduction="none"))
    with pytest.raises(ValueError, match=r"returned shape \(4, 3\)"):
        custom.per_sample_loss(torch.zeros(4, 3), torch.ones(4, 3))
    assert Task("v", "regression", target_dim=3, loss=torch.nn.L1Loss()).per_sample_loss(
        torch.zeros(4, 3), torch.ones(4, 3)
    ) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="target_dim=4 only applies to kind='regression'"):
        Task("b", "binary", target_dim=4)
    with pytest.raises(ValueError, match="target_dim=0 must be a positive integer"):
        Task("r", "regression", target_dim=0)


def test_regression_metrics_accept_vector_targets() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(50, 4, generator=g)
    y[:, 3] = 0.5  # a constant column must not make R² undefined
    out = y + 0.1 * torch.randn(50, 4, generator=g)
    assert mse(out, y) == pytest.approx(float(((out - y) ** 2).double().mean()))
    assert mae(out, y) == pytest.approx(float((out - y).abs().double().mean()))
    ss_tot = float(((y.double() - y.double().mean(0)) ** 2).sum())
    assert r2(out, y) == pytest.approx(1 - float(((out - y).double() ** 2).sum()) / ss_tot)
    assert mse(torch.tensor([[1.0], [3.0]]), torch.tensor([1.0, 1.0])) == pytest.approx(2.0)  # scalar targets unchanged


def test_add_reconstruction_labels_every_row_with_its_input(digits: MultiTaskData) -> None:
    data = add_reconstruction(digits)
    assert data.task_names == ["left", "right", "reconstruction"]
    for split in (data.train, data.val, data.test):
        target = split.targets["reconstruction"]
        assert target.shape == (len(split), 128) and bool(split.masks["reconstruction"].all())
        assert torch.equal(target, split.inputs.reshape(len(split), -1))
        assert target.data_ptr() == split.inputs.data_ptr()  # a view: no copy of the inputs
    batch = next(data.train.batches(7, shuffle=True, seed=0))
    assert torch.equal(batch.targets["reconstruction"], batch.inputs.reshape(7, -1))
    with pytest.raises(ValueError, match="already has a task 'reconstruction'"):
        add_reconstruction(data)
    assert data.select_tasks(["left"]).task_names == ["left"]
    # on multi-input data every source's rows are labelled and the sampler is kept
    multi = load_dataset("multidigits_split", pairs_per_image=1)
    aux = add_reconstruction(multi, name="recon")
    assert isinstance(aux.train, SampledSplit) and aux.train.sampler == multi.train.sampler  # type: ignore[attr-defined]
    assert bool(aux.train.masks["recon"].all()) and bool(aux.val.masks["recon"].all())
    assert len(list(aux.train.batches(64, shuffle=True, seed=0, epoch=0))) == aux.train.num_batches(64)


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_architecture_builds_a_reconstruction_head(name: str) -> None:
    task = reconstruction_task((1, 8, 16))
    tasks = [Task("left", "multiclass", num_classes=10), task]
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 16), tasks)
    out = model(torch.rand(3, 1, 8, 16))
    assert out["reconstruction"].shape == (3, 128) and out["left"].shape == (3, 10)


def test_mark_auxiliary_and_its_errors() -> None:
    data = make_synthetic()
    aux = mark_auxiliary(data, ["bin"])
    assert [t.auxiliary for t in aux.tasks] == [False, True, False]
    assert not data.task("bin").auxiliary  # the original is unchanged
    with pytest.raises(UnknownNameError, match="did you mean 'cls'"):
        mark_auxiliary(data, ["clss"])
    with pytest.raises(ValueError, match="no main task"):
        mark_auxiliary(data, ["reg", "bin", "cls"])


def test_auxiliary_task_trains_and_is_left_out_of_model_selection(digits: MultiTaskData) -> None:
    data = add_reconstruction(digits)
    torch.manual_seed(0)
    model = build_model("hard_sharing", data.input_shape, data.tasks, hidden=[32])
    tr = Trainer(model, data.tasks, "dwa", epochs=3, batch_size=256, lr=1e-2, seed=0).fit(data)
    recon = [r["train"]["reconstruction"] for r in tr.history]
    assert recon[-1] < 0.8 * recon[0]  # its loss decreases
    assert all(r["weights"]["reconstruction"] > 0 for r in tr.history)  # it is trained
    for r in tr.history:  # selection: the mean validation loss of the main tasks only
        assert r["val_loss"] == pytest.approx((r["val"]["left"]["loss"] + r["val"]["right"]["loss"]) / 2)
        assert "reconstruction" in r["val"]  # still logged
    assert tr.best_epoch == 1 + min(range(3), key=lambda i: tr.history[i]["val_loss"])


def test_auxiliary_tasks_are_absent_from_delta_m_and_baselines(tmp_path: Path) -> None:
    cfg = {
        "data": {
            "dataset": "multidigits",
            "pairs_per_image": 1,
            "auxiliary": ["right"],
            "auxiliary_reconstruction": True,
        },
        "model": {"hidden": [16]},
        "train": {"epochs": 1, "batch_size": 256},
        "run": {"quiet": True},
    }
    summary = run(cfg, run_dir=tmp_path / "r")
    assert [r["task"] for r in summary["rows"]] == ["left"]
    assert math.isfinite(summary["delta_m"])
    assert summary["delta_m"] == pytest.approx(summary["rows"][0]["relative_change"])
    assert sorted(p.name for p in (tmp_path / "r" / "single").iterdir()) == ["left"]
    result = json.loads((tmp_path / "r" / "multitask" / "result.json").read_text())
    assert result["tasks"] == ["left", "right", "reconstruction"]
    tasks = json.loads((tmp_path / "r" / "data.json").read_text())["tasks"]
    assert [(t["name"], t["auxiliary"], t["target_dim"]) for t in tasks] == [
        ("left", False, 1),
        ("right", True, 1),
        ("reconstruction", True, 128),
    ]


def test_config_keys_for_auxiliary_tasks() -> None:
    cfg = resolve_config({"data": {"auxiliary": "right", "pairs_per_image": 1}})
    assert cfg["data"]["auxiliary"] == ["right"] and cfg["data"]["auxiliary_reconstruction"] is False
    with pytest.raises(ConfigError, match="must be true or false"):
        resolve_config({"data": {"auxiliary_reconstruction": "yes"}})
    with pytest.raises(ConfigError, match="list of task names"):
        resolve_config({"data": {"auxiliary": [1]}})
    with pytest.raises(UnknownNameError, match="did you mean 'right'"):
        load_data(resolve_config({"data": {"auxiliary": ["rigth"], "pairs_per_image": 1}}))
    a = make_synthetic(n=60, seed=0).select_tasks(["reg"])
    b = make_synthetic(n=60, seed=1).select_tasks(["bin"])
    both = mark_auxiliary(add_reconstruction(combine({"a": a, "b": b})), ["bin"])
    assert [t.name for t in both.tasks if not t.auxiliary] == ["reg"]
