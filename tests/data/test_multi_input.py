"""Multi-input data: task samplers, SampledSplit epochs and resume, combine(), training end to end."""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_synthetic
from multitask.architectures import build_model
from multitask.callbacks import Callback
from multitask.cli import main
from multitask.config import ConfigError, resolve_config
from multitask.data import (
    SAMPLERS,
    MultiTaskData,
    SampledSplit,
    TensorSplit,
    combine,
    create_sampler,
    is_multi_input,
    load_dataset,
    set_sampler,
)
from multitask.data.samplers import (
    AnnealedSampler,
    ProportionalSampler,
    RoundRobinSampler,
    TaskSampler,
    TemperatureSampler,
    largest_remainder,
)
from multitask.engine import StepInfo
from multitask.experiment import load_data
from multitask.registry import UnknownNameError, first_doc_line, signature_params
from multitask.tasks import Task
from multitask.trainer import Trainer

PAPER = re.compile(r"(19|20)\d\d.*(https?://|doi)", re.S)
FAST = settings(max_examples=25, deadline=None)
sizes_st = st.lists(st.integers(1, 400), min_size=1, max_size=5)


def two_sources(sampler: TaskSampler | str = "proportional", missing: float = 0.2) -> MultiTaskData:
    """Source ``a`` labels reg and bin (144 train rows), source ``b`` labels cls (60 train rows)."""
    a = make_synthetic(n=240, seed=0, missing=missing).select_tasks(["reg", "bin"])
    b = make_synthetic(n=100, seed=1, missing=missing).select_tasks(["cls"])
    return combine({"a": a, "b": b}, sampler=sampler)


def make_sampler(kind: str, unit: str) -> TaskSampler:
    if kind == "annealed":
        return AnnealedSampler(epochs=3, unit=unit)
    if kind == "temperature":
        return TemperatureSampler(temperature=3.0, unit=unit)
    return create_sampler(kind, unit=unit)


# --- samplers -------------------------------------------------------------------------------------


@FAST
@given(sizes=sizes_st, temperature=st.floats(0.25, 20.0), draws=st.integers(0, 5000), epoch=st.integers(0, 10))
def test_sampler_counts_match_their_probabilities(sizes: list[int], temperature: float, draws: int, epoch: int) -> None:
    n = np.asarray(sizes, dtype=np.float64)
    expected = {
        ProportionalSampler(): n / n.sum(),
        TemperatureSampler(temperature=temperature): n ** (1 / temperature) / (n ** (1 / temperature)).sum(),
        RoundRobinSampler(): np.full(len(sizes), 1 / len(sizes)),
        AnnealedSampler(epochs=5, alpha_end=0.0): n ** (1 - min(epoch, 4) / 4) / (n ** (1 - min(epoch, 4) / 4)).sum(),
    }
    for sampler, p in expected.items():
        np.testing.assert_allclose(sampler.probabilities(sizes, epoch=epoch), p, rtol=1e-9)
        counts = sampler.counts(sizes, draws, epoch=epoch)
        assert counts.sum() == draws
        assert np.all(np.abs(counts - draws * p) < 1 + 1e-9)  # within one draw of the expected frequency
        sched = sampler.schedule(sizes, draws, epoch=epoch, rng=np.random.default_rng(0))
        assert np.array_equal(np.bincount(sched, minlength=len(sizes)), counts)


@FAST
@given(sizes=sizes_st, draws=st.integers(1, 300))
def test_round_robin_visits_every_source_in_turn(sizes: list[int], draws: int) -> None:
    k = len(sizes)
    sched = RoundRobinSampler().schedule(sizes, draws, epoch=0, rng=np.random.default_rng(0))
    for lo in range(0, draws - k + 1):
        assert sorted(sched[lo : lo + k].tolist()) == list(range(k))  # any K consecutive draws: each source once


def test_temperature_one_is_proportional_and_annealing_moves_towards_uniform() -> None:
    sizes = [900, 100]
    np.testing.assert_allclose(
        TemperatureSampler(temperature=1.0).probabilities(sizes, epoch=0),
        ProportionalSampler().probabilities(sizes, epoch=0),
    )
    ann = AnnealedSampler(epochs=5)  # Stickland & Murray: alpha = 1 - 0.8 (e - 1) / (E - 1)
    assert [ann.alpha(e) for e in range(6)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.2])
    small = [ann.probabilities(sizes, epoch=e)[1] for e in range(5)]
    assert small == sorted(small) and small[0] == pytest.approx(0.1)
    np.testing.assert_allclose(
        ann.probabilities(sizes, epoch=4), TemperatureSampler(temperature=5.0).probabilities(sizes, epoch=0)
    )
    assert AnnealedSampler(epochs=1).alpha(3) == 1.0


def test_largest_remainder_is_exact_on_integer_quotas() -> None:
    assert largest_remainder([1 / 3, 2 / 3], 3).tolist() == [1, 2]
    assert largest_remainder([0.5, 0.5], 3).tolist() == [2, 1]  # ties go to the lower index
    assert largest_remainder([0.1] * 10, 7).sum() == 7


def test_sampler_registry_errors_and_documentation() -> None:
    assert set(SAMPLERS.names()) == {"proportional", "temperature", "round_robin", "annealed"}
    with pytest.raises(UnknownNameError, match="did you mean 'temperature'"):
        create_sampler("temprature")
    with pytest.raises(UnknownNameError, match="did you mean 'temperature'"):
        create_sampler("temperature", temprature=2.0)
    with pytest.raises(UnknownNameError, match="did you mean 'row'"):
        ProportionalSampler(unit="rows")
    with pytest.raises(ValueError, match="temperature=0"):
        TemperatureSampler(temperature=0)
    with pytest.raises(ValueError, match="epochs=0"):
        AnnealedSampler(epochs=0)
    for name, cls in SAMPLERS.items():
        assert first_doc_line(cls), name
        assert PAPER.search(inspect.getdoc(cls) or ""), f"{name} must cite its source"
        params = inspect.signature(cls.__init__).parameters
        assert all(p.kind is p.KEYWORD_ONLY for n, p in params.items() if n != "self"), name
        assert all(p.annotation is not p.empty for n, p in params.items() if n != "self"), name
        sampler = create_sampler(name, **({"epochs": 2} if name == "annealed" else {}))
        assert sampler == create_sampler(name, **({"epochs": 2} if name == "annealed" else {}))
        assert set(sampler.hyperparameters()) == {p.name for p in signature_params(cls)}
        assert repr(sampler).startswith(cls.__name__ + "(")


# --- epochs and resume ----------------------------------------------------------------------------


def _same_batches(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.inputs, y.inputs)
        and all(torch.equal(x.targets[k], y.targets[k]) and torch.equal(x.masks[k], y.masks[k]) for k in x.targets)
        for x, y in zip(a, b, strict=True)
    )


@FAST
@given(
    kind=st.sampled_from(["proportional", "temperature", "round_robin", "annealed"]),
    unit=st.sampled_from(["row", "batch"]),
    batch_size=st.integers(1, 90),
    seed=st.integers(-5, 2**40),
    epoch=st.integers(0, 6),
    data=st.data(),
)
def test_epochs_are_deterministic_and_resume_at_any_start(
    kind: str, unit: str, batch_size: int, seed: int, epoch: int, data: st.DataObject
) -> None:
    train = two_sources(make_sampler(kind, unit)).train
    assert isinstance(train, SampledSplit)
    full = list(train.batches(batch_size, shuffle=True, seed=seed, epoch=epoch))
    assert len(full) == train.num_batches(batch_size) == math.ceil(len(train) / batch_size)
    assert sum(len(b) for b in full) == len(train)  # one epoch draws N = sum of source sizes rows
    assert _same_batches(full, list(train.batches(batch_size, shuffle=True, seed=seed, epoch=epoch)))
    start = data.draw(st.integers(0, len(full)))
    resumed = list(train.batches(batch_size, shuffle=True, seed=seed, epoch=epoch, start=start))
    assert _same_batches(resumed, full[start:])
    sched = train.source_schedule(batch_size, seed=seed, epoch=epoch)
    draws = len(train) if unit == "row" else len(full)
    counts = train.sampler.counts(list(train.sources.values()), draws, epoch=epoch)
    per_draw = sched if unit == "row" else sched[::batch_size]
    assert np.bincount(per_draw, minlength=2).tolist() == counts.tolist()
    rows = train.epoch_rows(batch_size, seed=seed, epoch=epoch)
    for k, (_, part) in enumerate(train.source_slices.items()):
        mine = rows[torch.from_numpy(sched == k)]
        assert bool(((mine >= part.start) & (mine < part.stop)).all())
        n = part.stop - part.start
        if len(mine) <= n:
            assert len(set(mine.tolist())) == len(mine)  # no row twice before a source is used up


def test_proportional_row_epoch_is_a_permutation_and_epochs_differ() -> None:
    train = two_sources().train
    assert isinstance(train, SampledSplit)
    e0 = train.epoch_rows(32, seed=1, epoch=0)
    assert sorted(e0.tolist()) == list(range(len(train)))  # every row exactly once
    assert torch.equal(train.order(shuffle=True, seed=1, epoch=0), e0)
    assert not torch.equal(e0, train.epoch_rows(32, seed=1, epoch=1))
    assert not torch.equal(e0, train.epoch_rows(32, seed=2, epoch=0))
    plain = list(train.batches(50))  # no shuffling: the union in order, for evaluation
    assert torch.equal(torch.cat([b.inputs for b in plain]), train.inputs)


def test_batch_unit_batches_hold_one_source_and_row_unit_batches_mix() -> None:
    data = two_sources(ProportionalSampler(unit="batch"), missing=0.0)
    for batch in data.train.batches(16, shuffle=True, seed=0, epoch=0):
        from_a = batch.masks["reg"]
        assert bool(from_a.all()) or not bool(from_a.any())  # all of a's rows or all of b's
        assert torch.equal(batch.masks["bin"], from_a) and torch.equal(batch.masks["cls"], ~from_a)
    with pytest.raises(ValueError, match="depends on the batch size"):
        data.train.order(shuffle=True)
    mixed = set_sampler(data, RoundRobinSampler())
    for batch in mixed.train.batches(16, shuffle=True, seed=0, epoch=0):
        assert int(batch.masks["cls"].sum()) == int(batch.masks["reg"].sum()) == len(batch) // 2  # half each


# --- combine --------------------------------------------------------------------------------------


def test_combine_unions_val_and_test_with_masks_and_checks_its_sources() -> None:
    a = make_synthetic(n=240, seed=0).select_tasks(["reg", "bin"])
    b = make_synthetic(n=100, seed=1).select_tasks(["cls"])
    data = combine({"a": a, "b": b})
    assert is_multi_input(data) and not is_multi_input(a)
    assert data.task_names == ["reg", "bin", "cls"] and data.name == "a+b"
    for split in ("val", "test"):
        s, sa, sb = getattr(data, split), getattr(a, split), getattr(b, split)
        assert type(s) is TensorSplit and len(s) == len(sa) + len(sb)
        assert torch.equal(s.inputs, torch.cat([sa.inputs, sb.inputs]))
        assert torch.equal(s.masks["reg"], torch.cat([sa.masks["reg"], torch.zeros(len(sb), dtype=torch.bool)]))
        assert torch.equal(s.masks["cls"], torch.cat([torch.zeros(len(sa), dtype=torch.bool), sb.masks["cls"]]))
        assert s.targets["cls"].dtype == sb.targets["cls"].dtype
    assert data.summary()["labelled_train_rows"]["cls"] == int(b.train.masks["cls"].sum())
    assert data.info["sources"]["b"]["tasks"] == ["cls"]
    # a task shared by two sources is labelled in both
    shared = combine({"a": a, "b": make_synthetic(n=100, seed=1).select_tasks(["cls", "reg"])})
    assert shared.task_names == ["reg", "bin", "cls"]
    assert int(shared.train.masks["reg"].sum()) > int(a.train.masks["reg"].sum())
    # errors
    other = make_synthetic(n=100, seed=1)
    clash = MultiTaskData("x", [Task("reg", "binary")], other.train.select_tasks(["reg"]), other.val.select_tasks(["reg"]), other.test.select_tasks(["reg"]))  # fmt: skip
    with pytest.raises(ValueError, match="task 'reg' is defined differently by sources 'a' and 'x'.*kind"):
        combine({"a": a, "x": clash})
    wide = make_synthetic(n=100, d=7, seed=1)
    with pytest.raises(ValueError, match=r"shape \[7\].*same input shape"):
        combine({"a": a, "w": wide})
    with pytest.raises(ValueError, match="itself multi-input"):
        combine({"ab": data, "c": b})
    with pytest.raises(ValueError, match="sources is empty"):
        combine({})
    with pytest.raises(ValueError, match="not multi-input"):
        set_sampler(a, "temperature")


def test_select_tasks_keeps_only_the_sources_that_label_them() -> None:
    data = two_sources(TemperatureSampler(temperature=2.0))
    only_cls = data.select_tasks(["cls"])
    assert type(only_cls.train) is TensorSplit and len(only_cls.train) == data.train.sources["b"]
    b = make_synthetic(n=100, seed=1)
    assert torch.equal(only_cls.train.inputs, b.train.inputs)  # the baseline trains on its own dataset
    assert len(only_cls.val) == len(data.val)  # evaluation reads the labelled rows only
    both = data.select_tasks(["bin", "cls"])
    assert isinstance(both.train, SampledSplit) and both.train.sampler == data.train.sampler


def test_multidigits_split_labels_each_task_on_disjoint_images() -> None:
    data = load_dataset("multidigits_split", pairs_per_image=1, left_fraction=0.75)
    assert data.task_names == ["left", "right"] and data.input_shape == (1, 8, 16)
    train = data.train
    assert isinstance(train, SampledSplit) and list(train.sources) == ["left", "right"]
    assert train.sources["left"] == pytest.approx(3 * train.sources["right"], rel=0.02)
    for split in (data.train, data.val, data.test):
        assert not bool((split.masks["left"] & split.masks["right"]).any())
        assert bool((split.masks["left"] | split.masks["right"]).all())
        # no 8x8 digit image is shared by the two sources
        halves = [split.inputs[split.masks[t]][:, 0, :, :8].reshape(-1, 64) for t in ("left", "right")]
        seen = {tuple(r.tolist()) for r in halves[0]}
        assert not any(tuple(r.tolist()) in seen for r in halves[1])
    with pytest.raises(ValueError, match="left_fraction=1.5"):
        load_dataset("multidigits_split", left_fraction=1.5)


# --- training end to end --------------------------------------------------------------------------


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class Grab(Callback):
    def __init__(self) -> None:
        self.infos: list[StepInfo] = []

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        self.infos.append(info)


def _trainer(data: MultiTaskData, weighting: str, tmp: Path | None = None, **kw: Any) -> Trainer:
    torch.manual_seed(0)
    model = build_model("hard_sharing", data.input_shape, data.tasks, hidden=[16, 8], dropout=0.1)
    recipe: dict[str, Any] = {"epochs": 3, "batch_size": 32, "lr": 1e-2, "seed": 3, **kw}
    return Trainer(
        model,
        data.tasks,
        weighting,
        checkpoint_path=tmp / "ckpt.pt" if tmp else None,
        metrics_path=tmp / "metrics.jsonl" if tmp else None,
        **recipe,
    )


@pytest.mark.parametrize(("weighting", "unit"), [("mgda", "batch"), ("dwa", "row")])
def test_resume_mid_epoch_is_exact_on_multi_input_data(tmp_path: Path, weighting: str, unit: str) -> None:
    data = two_sources(AnnealedSampler(epochs=2, unit=unit))
    recipe = {"epochs": 2, "batch_size": 48}
    full = _trainer(data, weighting, tmp_path / "full", **recipe).fit(data)
    part = _trainer(data, weighting, tmp_path / "part", **recipe)
    part.callbacks.append(StopAt(data.train.num_batches(48) + 2))  # inside the second epoch
    with pytest.raises(KeyboardInterrupt):
        part.fit(data)
    resumed = _trainer(data, weighting, tmp_path / "part", **recipe)
    torch.manual_seed(999)
    resumed.fit(data, resume=True)
    for (n, x), (_, y) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), n
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]


@pytest.mark.parametrize("weighting", ["mgda", "dwa"])
def test_absent_tasks_get_zero_weight_with_single_source_batches(weighting: str) -> None:
    data = two_sources(RoundRobinSampler(unit="batch"))
    grab = Grab()
    tr = _trainer(data, weighting, callbacks=[grab], epochs=2)
    tr.fit(data)
    per_epoch = data.train.num_batches(32)
    for step, info in enumerate(grab.infos):
        # round robin over the batches of each epoch: a's tasks (reg, bin), then b's (cls), in turn
        from_a = (step % per_epoch) % 2 == 0
        assert info.present.tolist() == [from_a, from_a, not from_a]
    for info in grab.infos:
        assert bool((info.weights[~info.present] == 0).all())
        assert bool(torch.isfinite(info.losses).all()) and bool(torch.isfinite(info.weights).all())
    assert all(math.isfinite(r["val_loss"]) for r in tr.history)


def test_mixed_batches_give_every_task_a_gradient_and_training_improves() -> None:
    data = two_sources(TemperatureSampler(temperature=2.0))
    grab = Grab()
    tr = _trainer(data, "mgda", callbacks=[grab], epochs=3, batch_size=48)
    tr.fit(data)
    assert torch.stack([i.present for i in grab.infos]).float().mean() > 0.95
    assert tr.history[-1]["val_loss"] < tr.history[0]["val_loss"]


# --- config and CLI -------------------------------------------------------------------------------


def test_config_sampler_and_combine_resolve_and_load() -> None:
    cfg = resolve_config(
        {"data": {"dataset": "multidigits_split", "pairs_per_image": 1, "sampler": "annealed"}, "train": {"epochs": 4}}
    )
    assert cfg["data"]["sampler"] == {
        "name": "annealed",
        "epochs": 4,
        "alpha_start": 1.0,
        "alpha_end": 0.2,
        "unit": "row",
    }
    assert resolve_config(cfg) == cfg  # a resolved config (config.yaml) resolves to itself
    data = load_data(cfg)
    assert isinstance(data.train, SampledSplit) and data.train.sampler == AnnealedSampler(epochs=4)
    with pytest.raises(UnknownNameError, match="did you mean 'temperature'"):
        resolve_config({"data": {"dataset": "multidigits_split", "sampler": {"name": "temperature", "temprature": 2}}})
    with pytest.raises(UnknownNameError, match="did you mean 'round_robin'"):
        resolve_config({"data": {"dataset": "multidigits_split", "sampler": "round_robn"}})
    with pytest.raises(ConfigError, match="temperature=-1"):
        resolve_config(
            {"data": {"dataset": "multidigits_split", "sampler": {"name": "temperature", "temperature": -1}}}
        )
    with pytest.raises(ConfigError, match="not multi-input"):
        load_data(resolve_config({"data": {"pairs_per_image": 1, "sampler": "temperature"}}))
    combo = {
        "data": {
            "combine": {
                "lefts": {"dataset": "multidigits", "tasks": ["left"], "pairs_per_image": 1},
                "rights": {"dataset": "multidigits", "tasks": "right", "pairs_per_image": 1, "split_seed": 1},
            },
            "sampler": {"name": "temperature", "temperature": 2.0},
        }
    }
    cfg = resolve_config(combo)
    assert cfg["data"]["dataset"] is None and cfg["data"]["combine"]["rights"]["layout"] == "side"
    assert resolve_config(cfg) == cfg
    data = load_data(cfg)
    assert data.task_names == ["left", "right"] and data.name == "lefts+rights"
    assert data.train.sampler == TemperatureSampler(temperature=2.0)  # type: ignore[attr-defined]
    with pytest.raises(UnknownNameError, match="did you mean 'layout'"):
        resolve_config({"data": {"combine": {"x": {"dataset": "multidigits", "layot": "side"}}}})
    with pytest.raises(ConfigError, match="replaces data.dataset"):
        resolve_config({"data": {"dataset": "multidigits", "combine": {"x": {"dataset": "multidigits"}}}})
    with pytest.raises(UnknownNameError, match="each source of data.combine"):
        resolve_config({"data": {"layout": "side", "combine": {"x": {"dataset": "multidigits"}}}})


def test_cli_trains_a_multi_input_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--dataset", "multidigits_split", "--epochs", "1", "-q", "--out-dir", str(tmp_path)]
    args += ["--set", "data.pairs_per_image=1", "--set", "model.hidden=[16]", "--name", "mi"]
    args += ["--set", "data.sampler={name: temperature, temperature: 2, unit: batch}", "--weighting", "mgda"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "multidigits_split" in out and "Δm" in out
    summary = json.loads((tmp_path / "mi" / "summary.json").read_text())
    assert [r["task"] for r in summary["rows"]] == ["left", "right"]
    assert json.loads((tmp_path / "mi" / "data.json").read_text())["info"]["multi_input"] is True
    assert main(["list", "samplers"]) == 0
    assert "annealed" in capsys.readouterr().out
    bad = ["train", "--dataset", "multidigits", "--set", "data.sampler=temperature", "-q", "--out-dir", str(tmp_path)]
    assert main(bad) == 2
    assert "not multi-input" in capsys.readouterr().err
