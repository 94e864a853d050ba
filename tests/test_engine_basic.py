"""Basic behaviour of :class:`multitask.engine.Engine`: absent tasks and non-finite losses."""

from __future__ import annotations

import math

import pytest
import torch

from multitask.engine import Engine, NonFiniteLossError
from multitask.weighting import EqualWeighting, GradNorm, StaticWeighting


def test_absent_tasks_get_weight_zero_and_no_gradient() -> None:
    theta = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    losses = torch.stack([theta[0] ** 2, 10 * theta[1] ** 2, theta[2] ** 2])
    info = Engine(StaticWeighting(3, weights=(1.0, 2.0, 3.0))).backward(
        losses, [theta], present=torch.tensor([True, False, True])
    )
    assert info.weights.tolist() == [1.0, 0.0, 3.0]
    assert theta.grad is not None
    # d/dθ (1 * θ0² + 3 * θ2²) = [2θ0, 0, 6θ2] = [2, 0, 18]
    assert theta.grad.tolist() == [2.0, 0.0, 18.0]


def test_absent_task_shows_its_last_observed_loss_to_the_weighting() -> None:
    engine = Engine(EqualWeighting(2))
    theta = torch.tensor([1.0, 1.0], requires_grad=True)
    engine.backward(torch.stack([2 * theta[0], 5 * theta[1]]), [theta])
    info = engine.backward(torch.stack([3 * theta[0], 0 * theta[1]]), [theta], present=torch.tensor([True, False]))
    assert info.losses.tolist() == [3.0, 5.0]
    assert info.weights.tolist() == [1.0, 0.0]


def test_nan_loss_raises_naming_the_task() -> None:
    theta = torch.tensor([1.0, 1.0], requires_grad=True)
    losses = torch.stack([theta[0], theta[1] * math.nan])
    with pytest.raises(NonFiniteLossError, match="depth") as err:
        Engine(EqualWeighting(2)).backward(losses, [theta], task_names=["seg", "depth"], step=7)
    assert err.value.tasks == ["depth"]
    assert err.value.step == 7
    assert theta.grad is None  # nothing was backpropagated


def test_inf_loss_of_an_absent_task_is_not_an_error() -> None:
    # Only present tasks are checked. The absent task still sits in the graph, so its parameter
    # gets 0 * inf = NaN: callers must build absent losses finite (Task.compute_loss returns an
    # exact zero for a task without labelled rows), hence only the present task is checked here.
    theta = torch.tensor([1.0, 1.0], requires_grad=True)
    losses = torch.stack([theta[0], theta[1] * math.inf])
    info = Engine(EqualWeighting(2)).backward(losses, [theta], present=torch.tensor([True, False]))
    assert info.weights.tolist() == [1.0, 0.0]
    assert theta.grad is not None and theta.grad[0].item() == 1.0


def test_gramian_is_computed_only_when_required() -> None:
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    info = Engine(EqualWeighting(2)).backward(torch.stack([theta[0] ** 2, theta[1] ** 2]), [theta])
    assert info.gramian is None
    theta.grad = None
    info = Engine(GradNorm(2)).backward(torch.stack([theta[0] ** 2, theta[1] ** 2]), [theta])
    assert info.gramian is not None
    # gradients [2θ0, 0] and [0, 2θ1] = [2, 0], [0, 4]: G = diag(4, 16)
    assert info.gramian.tolist() == [[4.0, 0.0], [0.0, 16.0]]
    assert info.grad_norms is not None and info.grad_norms.tolist() == [2.0, 4.0]
