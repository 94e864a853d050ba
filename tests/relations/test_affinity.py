"""Task affinity: exact TAG against hand-derived values, its estimates, the relations callback, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from multitask.architectures.base import HardSharing
from multitask.callbacks import TaskRelations
from multitask.cli import main
from multitask.data.batch import TensorSplit
from multitask.engine import Engine, gramian
from multitask.relations import ESTIMATES, AffinityProbe, label_similarity, spearman
from multitask.tasks import Task
from multitask.trainer import Trainer
from multitask.weighting.base import create_weighting

# four regression tasks on one shared scalar θ (trunk x -> θ x with x = 1, identity heads):
# L_t(θ) = (θ - a_t)²; a, b and d pull θ up together, c pulls it down.
TARGETS = {"a": 1.0, "b": 1.2, "c": -1.0, "d": 0.9}


def scalar_problem(n: int = 32) -> tuple[HardSharing, list[Task], TensorSplit]:
    x = torch.ones(n, 1)
    split = TensorSplit(
        x,
        {k: torch.full((n,), v) for k, v in TARGETS.items()},
        {k: torch.ones(n, dtype=torch.bool) for k in TARGETS},
    )
    trunk = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(trunk.weight)
    model = HardSharing(trunk, {k: nn.Identity() for k in TARGETS})
    return model, [Task(k, "regression") for k in TARGETS], split


def test_exact_tag_matches_hand_derived_values_and_estimates_agree() -> None:
    model, tasks, split = scalar_problem()
    eta = 0.05
    probe = AffinityProbe(every=1, lr=eta, projections=3)
    Trainer(model, tasks, "equal", epochs=1, batch_size=32, lr=0.01, optimizer="sgd", callbacks=[probe]).fit(
        (split, split)
    )
    # first measured step: θ = 0, g_i = -2 a_i, L_j(θ - η g_i) = (2 η a_i - a_j)²
    a = np.array(list(TARGETS.values()))
    expected = 1.0 - (2 * eta * a[:, None] - a[None, :]) ** 2 / a[None, :] ** 2
    np.testing.assert_allclose(probe.steps["tag"][0], expected, rtol=1e-5)
    # first order: η G_ij / L_j = η (4 a_i a_j) / a_j²
    np.testing.assert_allclose(probe.steps["first_order"][0], eta * 4 * a[:, None] * a[None, :] / a[None, :] ** 2,
                               rtol=1e-5)  # fmt: skip
    mats = probe.matrices
    helpful, harmful = [("a", "b"), ("b", "d"), ("d", "a")], [("a", "c"), ("c", "b"), ("d", "c")]
    idx = {k: i for i, k in enumerate(TARGETS)}
    assert np.isnan(mats["first_order_engine"]).all()  # a loss-only weighting computes no Gramian
    for name in ("tag", "first_order", "first_order_last", "first_order_features", "projected"):
        m = mats[name]
        assert all(m[idx[i], idx[j]] > 0 for i, j in helpful), name
        assert all(m[idx[i], idx[j]] < 0 for i, j in harmful), name
    summary = probe.summary()
    assert all(summary["spearman_vs_tag"][e] > 0.9 for e in ("first_order", "projected"))
    assert set(summary["seconds"]) == {"tag", *ESTIMATES}
    assert summary["cost_vs_tag"]["tag"] == 1.0 and len(probe.forward_seconds) == 1
    assert summary["measured_steps"] == 1


def _dropout_bn_model(seed: int) -> tuple[nn.Module, list[Task], TensorSplit]:
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3))
    model = HardSharing(trunk, {"r": nn.Linear(16, 1), "s": nn.Linear(16, 1), "u": nn.Linear(16, 1)})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 5, generator=g)
    targets = {"r": x[:, 0], "s": x[:, 0] + x[:, 1], "u": -x[:, 2]}
    masks = {k: torch.rand(96, generator=g) > 0.2 for k in targets}
    return model, [Task(k, "regression") for k in targets], TensorSplit(x, targets, masks)


def test_first_order_from_the_methods_own_gramian_equals_the_probes() -> None:
    model, tasks, split = _dropout_bn_model(0)
    probe = AffinityProbe(every=2, estimates=("first_order", "first_order_engine"))
    Trainer(model, tasks, "mgda", epochs=2, batch_size=32, lr=0.01, seed=3, callbacks=[probe]).fit((split, split))
    assert len(probe.steps["first_order_engine"]) == 3
    for own, engine in zip(probe.steps["first_order"], probe.steps["first_order_engine"], strict=True):
        np.testing.assert_allclose(engine, own, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("weighting", ["equal", "mgda"])
def test_probe_and_relations_do_not_change_training(weighting: str) -> None:
    finals = []
    for callbacks in ([], [AffinityProbe(every=2, projections=2), TaskRelations(gramian_every=3)]):
        model, tasks, split = _dropout_bn_model(0)
        Trainer(model, tasks, weighting, epochs=2, batch_size=32, lr=0.01, seed=3, callbacks=callbacks).fit(
            (split, split)
        )
        finals.append(model.state_dict())
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], rtol=0, atol=0)


def test_task_relations_records_conflicts_from_monitored_or_free_gramians(tmp_path: Path) -> None:
    def fit(weighting: str, every: int) -> tuple[TaskRelations, Trainer]:
        model, tasks, split = scalar_problem()
        rel = TaskRelations(gramian_every=every, path=tmp_path / f"{weighting}{every}.jsonl")
        trainer = Trainer(model, tasks, weighting, epochs=2, batch_size=8, lr=0.01, optimizer="sgd",
                          metrics_path=tmp_path / f"{weighting}{every}-metrics.jsonl", callbacks=[rel])  # fmt: skip
        trainer.fit((split, split))
        return rel, trainer

    rel, _ = fit("equal", 1)
    last = rel.history[-1]
    assert last["steps"] == 4 and last["tasks"] == list(TARGETS)
    conflict = np.array(last["conflict"], dtype=float)
    idx = {k: i for i, k in enumerate(TARGETS)}
    assert conflict[idx["a"], idx["c"]] == 1.0 and conflict[idx["a"], idx["b"]] == 0.0
    cos = np.array(last["cosine"], dtype=float)
    np.testing.assert_allclose(cos[idx["a"], idx["b"]], 1.0, atol=1e-6)  # one parameter: cosines are ±1
    np.testing.assert_allclose(cos[idx["a"], idx["c"]], -1.0, atol=1e-6)
    assert len((tmp_path / "equal1.jsonl").read_text().splitlines()) == 2
    records = [json.loads(line) for line in (tmp_path / "equal1-metrics.jsonl").read_text().splitlines()]
    assert all("relations" in r for r in records)
    # loss-only weighting without monitoring: nothing computed, nothing written
    rel, _ = fit("equal", 0)
    assert rel.history == [] and not (tmp_path / "equal0.jsonl").exists()
    # a gradient method's own Gramian is used for free
    rel, _ = fit("mgda", 0)
    assert rel.history and rel.history[-1]["steps"] == 4
    # grad-norm ratios average to one over the tasks
    assert sum(rel.history[-1]["grad_norm_ratio"]) == pytest.approx(4.0)


@pytest.mark.parametrize("method", ["equal", "graddrop"])
@pytest.mark.parametrize("mode", ["exact", "features"])
def test_engine_monitor_gramian_equals_direct_gramian(method: str, mode: str) -> None:
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 6), nn.ModuleList([nn.Linear(6, 1) for _ in range(3)])
    x = torch.randn(10, 4)

    def losses_and_features() -> tuple[list[torch.Tensor], torch.Tensor]:
        z = trunk(x)
        return [(h(z).squeeze(-1) - i).pow(2).mean() for i, h in enumerate(heads)], z

    losses, z = losses_and_features()
    targets = [z] if mode == "features" else list(trunk.parameters())
    expected = gramian(torch.stack(losses), targets)
    engine = Engine(create_weighting(method, 3), grad_mode=mode)
    engine.monitor_every = 2
    info = engine.backward(losses, list(trunk.parameters()), other_params=list(heads.parameters()), features=z,
                           step=2)  # fmt: skip
    assert info.gramian is not None
    torch.testing.assert_close(info.gramian, expected, rtol=1e-5, atol=1e-6)
    losses, z = losses_and_features()
    info = engine.backward(losses, list(trunk.parameters()), other_params=list(heads.parameters()), features=z,
                           step=3)  # fmt: skip
    assert info.gramian is None  # not a monitored step


def test_label_similarity_respects_missing_labels_and_kinds() -> None:
    g = torch.Generator().manual_seed(0)
    n = 200
    y1 = torch.randn(n, generator=g)
    y2 = 0.5 * y1 + torch.randn(n, generator=g)
    cls = (y1 > 0).long() + (y1 > 1).long()  # three classes driven by y1
    masks = {
        "y1": torch.ones(n, dtype=torch.bool),
        "y2": torch.rand(n, generator=g) > 0.3,
        "c": torch.ones(n, dtype=torch.bool),
    }
    split = TensorSplit(torch.zeros(n, 1), {"y1": y1, "y2": y2, "c": cls}, masks)
    tasks = [Task("y1", "regression"), Task("y2", "regression"), Task("c", "multiclass", num_classes=3)]
    sim = label_similarity(split, tasks)
    both = masks["y2"].numpy()
    assert sim[0, 1] == pytest.approx(np.corrcoef(y1.numpy()[both], y2.numpy()[both])[0, 1])
    # multi-class vs regression: the correlation ratio sqrt(between-class SS / total SS)
    y = y1.numpy()
    c = cls.numpy()
    between = sum((c == k).sum() * (y[c == k].mean() - y.mean()) ** 2 for k in range(3))
    assert sim[0, 2] == pytest.approx(math.sqrt(between / ((y - y.mean()) ** 2).sum()), rel=1e-6)
    assert np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T, equal_nan=True)


def test_spearman_of_matrices() -> None:
    a = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 4.0], [5.0, 6.0, 0.0]])
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert math.isnan(spearman(np.eye(2), np.eye(2)))


def test_probe_errors() -> None:
    with pytest.raises(ValueError, match="every=0"):
        AffinityProbe(every=0)
    with pytest.raises(ValueError, match="unknown \\['tag2'\\]"):
        AffinityProbe(estimates=["tag2"])
    with pytest.raises(ValueError, match="gramian_every=-1"):
        TaskRelations(gramian_every=-1)


def test_cli_affinity_writes_matrices_for_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "aff"
    args = ["affinity", "--dataset", "multidigits", "--epochs", "1", "--set", "data.pairs_per_image=1", "--every", "3"]
    assert main([*args, "--out", str(out), "--pairwise", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "Spearman vs TAG" in printed and "pairwise" in printed
    report = json.loads((out / "affinity.json").read_text())
    assert report["tasks"] == ["left", "right"]
    assert {"labels", "tag", "first_order", "first_order_last", "first_order_features", "projected", "pairwise"} <= set(
        report["matrices"]
    )
    assert report["measured_steps"] >= 1 and report["cost_vs_tag"]["tag"] == pytest.approx(1.0)
    header = (out / "affinity_tag.csv").read_text().splitlines()[0]
    assert header == "source,left,right"
    assert main(["affinity", "--dataset", "multidigits", "--every", "0", "--out", str(out)]) == 2
    assert "every=0" in capsys.readouterr().err


def test_cli_group_train_compares_grouping_with_together_and_single(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aff = tmp_path / "aff.csv"
    aff.write_text("source,left,right\nleft,,-0.2\nright,-0.1,\n")
    out = tmp_path / "groups"
    common = ["--dataset", "multidigits", "--epochs", "1", "--set", "data.pairs_per_image=1", "-q"]
    assert main(["group", str(aff), "--k", "2", "--train", *common, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "grouped (2 models)" in printed and "all tasks together (1 model)" in printed
    result = json.loads((out / "comparison.json").read_text())
    assert result["groups"] == [["left"], ["right"]]
    # two singleton groups are the single-task models, trained with the same recipe and seed
    assert result["grouped"] == result["single"]
    assert result["delta_m"]["grouped"] == pytest.approx(0.0)
    assert main(["group", str(aff), "--k", "2", "--train", "--dataset", "multidigits"]) == 2
    assert "--out" in capsys.readouterr().err
