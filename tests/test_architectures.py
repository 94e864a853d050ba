"""Contract suite over every registered architecture."""

from __future__ import annotations

import inspect

import pytest
import torch

from multitask.architectures import ARCHITECTURES, HardSharing, MultiTaskModel, build_model, mlp
from multitask.data.base import MultiTaskData
from multitask.registry import UnknownNameError
from multitask.tasks import Task

TASKS = [Task("a", "multiclass", num_classes=5), Task("b", "binary"), Task("c", "regression")]


@pytest.mark.parametrize("name", ARCHITECTURES.names())
@pytest.mark.parametrize("shape", [(1, 4, 4), (6,)])
def test_contract(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, TASKS)
    assert isinstance(model, MultiTaskModel)
    x = torch.randn(7, *shape)
    out = model(x)
    assert set(out) == {"a", "b", "c"}
    assert out["a"].shape == (7, 5) and out["b"].shape == (7, 1) and out["c"].shape == (7, 1)
    outputs, features = model.forward_features(x)
    assert all(torch.equal(outputs[k], out[k]) for k in out)
    assert (features is None) == (model.forward_task_features(x)[1] is None)
    outputs3, features3, views = model.forward_task_features(x)
    assert all(torch.allclose(outputs3[k], out[k]) for k in out)
    shared = list(model.shared_parameters())
    assert bool(shared) == type(model).shares_parameters
    shared_ids = {id(p) for p in shared}
    task_ids = {t.name: {id(p) for p in model.task_parameters(t.name)} for t in TASKS}
    all_task_ids = set().union(*task_ids.values())
    assert shared_ids.isdisjoint(all_task_ids)
    assert sum(len(v) for v in task_ids.values()) == len(all_task_ids), "a task parameter listed for two tasks"
    assert shared_ids | all_task_ids == {id(p) for p in model.parameters()}
    # each task's loss reaches every shared parameter and its own parameters, never another task's
    for task in TASKS:
        model.zero_grad(set_to_none=True)
        model(x)[task.name].pow(2).sum().backward()
        assert all(p.grad is not None for p in shared), f"task {task.name} does not reach every shared parameter"
        own = [p for p in model.parameters() if id(p) in task_ids[task.name]]
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in own)
        others = [p for p in model.parameters() if id(p) in all_task_ids - task_ids[task.name]]
        assert all(p.grad is None for p in others)
    # the shared features, when declared, carry every dependence of the outputs on the shared parameters
    if features3 is not None:
        assert features3.shape[0] == 7
        loss = outputs3["b"].pow(2).sum()
        direct = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        dz = torch.autograd.grad(loss, features3, retain_graph=True)[0]
        through = torch.autograd.grad(features3, shared, dz, allow_unused=True)
        for d, t in zip(direct, through, strict=True):
            torch.testing.assert_close(d if d is not None else torch.zeros(()), t if t is not None else torch.zeros(()))
    if views is not None:
        assert set(views) == {"a", "b", "c"} and features3 is not None
    reg = model.regularizer()
    if reg is not None:
        assert reg.dim() == 0 and torch.isfinite(reg)
    # deterministic construction and output (fresh models: BatchNorm statistics moved above)
    fresh = []
    for _ in range(2):
        torch.manual_seed(0)
        fresh.append(build_model(name, shape, TASKS))
    assert all(torch.equal(o, fresh[1](x)[k]) for k, o in fresh[0](x).items())


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_every_architecture_trains(name: str, synthetic: MultiTaskData) -> None:
    from multitask.trainer import Trainer

    data = synthetic
    small = {"hidden": [16, 16], "expert_hidden": [16], "widths": [8, 8], "experts": 4, "head_hidden": []}
    params = {k: v for k, v in small.items() if k in inspect.signature(ARCHITECTURES.get(name)).parameters}
    torch.manual_seed(0)
    model = build_model(name, data.input_shape, data.tasks, **params)
    methods = ["uncertainty"] + (["mgda"] if type(model).shares_parameters else [])
    for method in methods:
        torch.manual_seed(0)
        model = build_model(name, data.input_shape, data.tasks, **params)
        trainer = Trainer(model, data.tasks, method, epochs=4, batch_size=32, lr=1e-2)
        trainer.fit(data)
        first, last = trainer.history[0]["train_loss"], trainer.history[-1]["train_loss"]
        assert last < first, f"{name} + {method}: train loss {first:.3f} -> {last:.3f}"


def test_gradient_methods_refuse_models_that_share_nothing() -> None:
    from multitask.trainer import Trainer

    model = build_model("soft_sharing", (6,), TASKS, hidden=[4])
    with pytest.raises(ValueError, match="shares no parameters.*loss-based weighting"):
        Trainer(model, TASKS, "mgda")


def test_hard_sharing_parameter_count() -> None:
    model = build_model("hard_sharing", (3,), TASKS, hidden=[8, 4])
    # trunk 3*8+8 + 8*4+4 = 68; heads 4*5+5 + 4+1 + 4+1 = 35
    assert sum(p.numel() for p in model.parameters()) == 68 + 35


def test_any_module_as_trunk() -> None:
    trunk = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten())
    heads = {t.name: torch.nn.Linear(32, t.output_dim) for t in TASKS}
    model = HardSharing(trunk, heads)  # type: ignore[arg-type]
    assert model(torch.randn(2, 1, 4, 4))["a"].shape == (2, 5)


def test_errors() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'hidden'"):
        build_model("hard_sharing", (3,), TASKS, hiden=[3])
    with pytest.raises(ValueError, match="hidden=\\[0\\]"):
        build_model("hard_sharing", (3,), TASKS, hidden=[0])
    with pytest.raises(ValueError, match="dropout=1.5"):
        build_model("hard_sharing", (3,), TASKS, dropout=1.5)
    with pytest.raises(UnknownNameError, match="did you mean 'relu'"):
        mlp(3, [4], activation="rleu")
    with pytest.raises(ValueError, match="heads is empty"):
        HardSharing(torch.nn.Identity(), {})
