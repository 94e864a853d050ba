"""Multi-gate mixture of experts: shared experts, one softmax gate per task."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..tasks import Task
from .base import ARCHITECTURES, MultiTaskModel, check_dropout, check_widths, flat_size, make_heads, mlp

__all__ = ["MMoE", "SoftmaxGate", "mmoe"]


class SoftmaxGate(nn.Module):
    """``softmax(W x + b)`` over the experts."""

    def __init__(self, in_features: int, experts: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, experts)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.linear(x.flatten(1)), dim=-1)


class MMoE(MultiTaskModel):
    """Shared experts mixed per task by a gate that reads the input.

    Task ``t``'s tower reads ``Σ_e g_t(x)_e f_e(x)``. The experts are shared; gates and towers are
    the task's own. The shared features ``Z`` are the experts' outputs ``[B, E, d]``: every task
    depends on the experts only through them, so the cheap "features" grad mode applies.

    Ma, Zhao, Yi, Chen, Hong, Chi, "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts", KDD 2018. https://doi.org/10.1145/3219819.3220007

    Args:
        experts: the expert networks (same output width).
        gates: ``{task: module}`` mapping the input to ``[B, E]`` mixture weights.
        heads: ``{task: module}`` on the task's mixture.
    """

    def __init__(self, experts: Sequence[nn.Module], gates: dict[str, nn.Module], heads: dict[str, nn.Module]) -> None:
        super().__init__()
        if not experts:
            raise ValueError("MMoE: experts is empty")
        if set(gates) != set(heads) or not heads:
            raise ValueError(f"MMoE: gates {sorted(gates)} and heads {sorted(heads)} must name the same tasks")
        self.experts = nn.ModuleList(experts)
        self.gates = nn.ModuleDict(gates)
        self.heads = nn.ModuleDict(heads)
        self.task_names = list(heads)

    def _mix(self, x: Tensor, z: Tensor, name: str) -> Tensor:
        return torch.einsum("be,bed->bd", self.gates[name](x), z)

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        z = torch.stack([e(x) for e in self.experts], dim=1)
        return {n: self.heads[n](self._mix(x, z, n)) for n in self.task_names}, z

    def forward_task_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None, dict[str, Tensor] | None]:
        z = torch.stack([e(x) for e in self.experts], dim=1)
        views = {n: z.view_as(z) for n in self.task_names}
        return {n: self.heads[n](self._mix(x, views[n], n)) for n in self.task_names}, z, views

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.experts.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        yield from self.gates[name].parameters()
        yield from self.heads[name].parameters()


def experts_of(
    n_in: int, count: int, hidden: Sequence[int], activation: str, dropout: float, arch: str
) -> list[nn.Module]:
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"{arch}: experts={count!r} must be a positive integer")
    return [mlp(n_in, hidden, activation=activation, dropout=dropout) for _ in range(count)]


@ARCHITECTURES.register("mmoe")
def mmoe(
    *,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    experts: int = 4,
    expert_hidden: Sequence[int] = (256, 128),
    head_hidden: Sequence[int] = (64,),
    activation: str = "relu",
    dropout: float = 0.0,
) -> MMoE:
    """Multi-gate mixture of experts: shared MLP experts, a softmax gate and a tower per task (Ma et al. 2018).

    Ma, Zhao, Yi, Chen, Hong, Chi, KDD 2018. https://doi.org/10.1145/3219819.3220007

    Args:
        input_shape: shape of one input sample (flattened).
        tasks: the tasks; one gate and one tower each.
        experts: number of experts.
        expert_hidden: widths of each expert's layers (the last is the mixture width).
        head_hidden: widths of each task tower's hidden layers.
        activation: "relu", "gelu", "tanh" or "silu".
        dropout: dropout after each hidden layer, in [0, 1).
    """
    expert_hidden = check_widths("mmoe", "expert_hidden", expert_hidden, allow_empty=False)
    head_hidden = check_widths("mmoe", "head_hidden", head_hidden)
    check_dropout("mmoe", dropout)
    n_in = flat_size(input_shape)
    ex = experts_of(n_in, experts, expert_hidden, activation, dropout, "mmoe")
    gates: dict[str, nn.Module] = {t.name: SoftmaxGate(n_in, experts) for t in tasks}
    heads = make_heads(tasks, expert_hidden[-1], head_hidden, activation=activation, dropout=dropout)
    return MMoE(ex, gates, heads)
