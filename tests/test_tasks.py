from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multitask.registry import UnknownNameError
from multitask.tasks import Task


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["binary", "multiclass", "regression"]))
def test_masked_loss_equals_loss_on_labelled_rows_only(seed: int, kind: str) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 17
    task = Task("t", kind, num_classes=4 if kind == "multiclass" else None)  # type: ignore[arg-type]
    out = torch.randn(n, task.output_dim, generator=g, requires_grad=True)
    if kind == "multiclass":
        y = torch.randint(0, 4, (n,), generator=g)
    elif kind == "binary":
        y = torch.randint(0, 2, (n,), generator=g).float()
    else:
        y = torch.randn(n, generator=g)
    mask = torch.rand(n, generator=g) > 0.4
    mask[0] = True
    poisoned = y.clone()
    if kind != "multiclass":
        poisoned[~mask] = float("nan")  # a missing label must never be read
    else:
        poisoned[~mask] = 999  # out of range: cross-entropy would fail if it were read
    masked = task.compute_loss(out, poisoned, mask)
    reference = task.compute_loss(out[mask], y[mask])
    assert torch.allclose(masked, reference)
    (grad,) = torch.autograd.grad(masked, out)
    assert torch.isfinite(grad).all()
    assert torch.all(grad[~mask] == 0)


def test_all_missing_gives_zero_loss_in_graph() -> None:
    task = Task("t", "binary")
    out = torch.randn(4, 1, requires_grad=True)
    loss = task.compute_loss(out, torch.zeros(4), torch.zeros(4, dtype=torch.bool))
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_regression_metrics_on_original_scale() -> None:
    task = Task("age", "regression", target_mean=40.0, target_std=10.0)
    z_pred = torch.tensor([[0.0], [1.0]])
    z_true = torch.tensor([0.5, 1.0])
    m = task.evaluate(z_pred, z_true)
    assert m["mae"] == pytest.approx(2.5)  # |40-45| and |50-50| in years, averaged
    assert task.predict(z_pred).tolist() == [40.0, 50.0]


def test_task_validation_errors_name_the_value() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'binary'"):
        Task("x", "binray")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes=None"):
        Task("x", "multiclass")
    with pytest.raises(UnknownNameError, match="did you mean 'accuracy'"):
        Task("x", "binary", metrics=["acuracy"])
    with pytest.raises(ValueError, match="rows"):
        Task("x", "binary").compute_loss(torch.zeros(3, 1), torch.zeros(4))


def test_round_trip_dict() -> None:
    t = Task("c", "multiclass", num_classes=3, classes=("a", "b", "c"), metrics=["accuracy"])
    assert Task.from_dict(t.to_dict()) == t
    assert t.main_metric.name == "accuracy" and t.directions == {"accuracy": True}
    assert math.isnan(Task("b", "binary").evaluate(torch.zeros(0, 1), torch.zeros(0))["auc"])


def test_custom_losses_follow_torch_conventions() -> None:
    out = torch.randn(6, 1)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    mask = torch.tensor([True, True, False, True, True, False])
    default = Task("b", "binary").compute_loss(out, y, mask)
    for fn in (torch.nn.BCEWithLogitsLoss(reduction="none"), torch.nn.BCEWithLogitsLoss()):
        assert torch.allclose(Task("b", "binary", loss=fn).compute_loss(out, y, mask), default)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])
    ce = Task("c", "multiclass", num_classes=3, loss=torch.nn.CrossEntropyLoss(label_smoothing=0.0))
    assert torch.allclose(
        ce.compute_loss(logits, labels), Task("c", "multiclass", num_classes=3).compute_loss(logits, labels)
    )
    bad = Task("r", "regression", loss=lambda o, t: (o - t).unsqueeze(1) ** 2)
    with pytest.raises(ValueError, match=r"returned shape \(6, 1\)"):
        bad.compute_loss(torch.randn(6, 1), torch.randn(6))
