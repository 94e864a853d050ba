"""Contract suite over every registered architecture."""

from __future__ import annotations

import pytest
import torch

from multitask.architectures import ARCHITECTURES, HardSharing, MultiTaskModel, build_model, mlp
from multitask.registry import UnknownNameError
from multitask.tasks import Task

TASKS = [Task("a", "multiclass", num_classes=5), Task("b", "binary"), Task("c", "regression")]


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_contract(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 4, 4), TASKS)
    assert isinstance(model, MultiTaskModel)
    x = torch.randn(7, 1, 4, 4)
    out = model(x)
    assert set(out) == {"a", "b", "c"}
    assert out["a"].shape == (7, 5) and out["b"].shape == (7, 1) and out["c"].shape == (7, 1)
    outputs, features = model.forward_features(x)
    assert all(torch.equal(outputs[k], out[k]) for k in out)
    # shared parameters get gradients from every task; heads only from their own
    shared = list(model.shared_parameters())
    assert shared, "an architecture must share something"
    loss = out["b"].sum()
    loss.backward()
    assert all(p.grad is not None for p in shared)
    for p in model.task_parameters("a"):
        assert p.grad is None
    shared_ids = {id(p) for p in shared}
    task_ids = {id(p) for t in ("a", "b", "c") for p in model.task_parameters(t)}
    assert shared_ids.isdisjoint(task_ids)
    assert shared_ids | task_ids == {id(p) for p in model.parameters()}
    # deterministic construction and output
    torch.manual_seed(0)
    again = build_model(name, (1, 4, 4), TASKS)
    assert all(torch.equal(o, again(x)[k]) for k, o in model(x).items())
    if features is not None:
        assert features.shape[0] == 7


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
