"""Customized gate control (CGC) and progressive layered extraction (PLE)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..tasks import Task
from .base import ARCHITECTURES, MultiTaskModel, check_dropout, check_widths, flat_size, make_heads, mlp
from .mmoe import SoftmaxGate

__all__ = ["PLE", "cgc", "ple"]


class PLE(MultiTaskModel):
    """Shared and task-specific experts, stacked in levels; each task gates its own and the shared ones.

    At level ``l`` task ``t``'s experts read the task's previous output, the shared experts read
    the shared previous output (the input at level 0). Task ``t``'s output is its gate's mix of
    its own experts and the shared ones; below the last level a shared gate mixes every expert of
    the level into the shared output. One level is CGC. Below the last level every expert reaches
    every task (through the shared gate), so the experts and shared gates are shared; the task
    gates of every level and the task experts of the last level belong to their task.

    Tang, Liu, Zhao, Gong, "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
    Model for Personalized Recommendations", RecSys 2020. https://doi.org/10.1145/3383313.3412236

    Args:
        task_names: the tasks.
        n_in: input width (flattened).
        levels: number of extraction levels (1 = CGC).
        shared_experts: shared experts per level.
        task_experts: experts per task per level.
        expert_hidden: widths of each expert (the last is the level's output width).
        heads: ``{task: module}`` on the last level's task output.
    """

    def __init__(
        self,
        n_in: int,
        heads: dict[str, nn.Module],
        *,
        levels: int,
        shared_experts: int,
        task_experts: int,
        expert_hidden: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, v in (("levels", levels), ("shared_experts", shared_experts), ("task_experts", task_experts)):
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "task_experts" else 1):
                raise ValueError(f"PLE: {name}={v!r} must be a positive integer")
        self.task_names = list(heads)
        t = len(self.task_names)
        width = n_in
        self.shared_bank = nn.ModuleList()
        self.task_bank = nn.ModuleList()
        self.task_gates = nn.ModuleList()
        self.shared_gates = nn.ModuleList()
        for level in range(levels):
            self.shared_bank.append(
                nn.ModuleList(
                    mlp(width, expert_hidden, activation=activation, dropout=dropout) for _ in range(shared_experts)
                )
            )
            self.task_bank.append(
                nn.ModuleDict(
                    {
                        n: nn.ModuleList(
                            mlp(width, expert_hidden, activation=activation, dropout=dropout)
                            for _ in range(task_experts)
                        )
                        for n in self.task_names
                    }
                )
            )
            self.task_gates.append(
                nn.ModuleDict({n: SoftmaxGate(width, task_experts + shared_experts) for n in self.task_names})
            )
            if level < levels - 1:
                self.shared_gates.append(SoftmaxGate(width, shared_experts + t * task_experts))
            width = expert_hidden[-1]
        self.heads = nn.ModuleDict(heads)
        self.levels = levels

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        x = x.flatten(1)
        task_in = dict.fromkeys(self.task_names, x)
        shared_in = x
        for level in range(self.levels):
            shared_out = [e(shared_in) for e in self.shared_bank[level]]  # type: ignore[union-attr,attr-defined]
            own = {n: [e(task_in[n]) for e in self.task_bank[level][n]] for n in self.task_names}  # type: ignore[index]
            new_in = {}
            for n in self.task_names:
                pool = torch.stack(own[n] + shared_out, dim=1)
                new_in[n] = torch.einsum("be,bed->bd", self.task_gates[level][n](task_in[n]), pool)  # type: ignore[index]
            if level < self.levels - 1:
                pool = torch.stack(shared_out + [o for n in self.task_names for o in own[n]], dim=1)
                shared_in = torch.einsum("be,bed->bd", self.shared_gates[level](shared_in), pool)
            task_in = new_in
        return {n: self.heads[n](task_in[n]) for n in self.task_names}, None

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        last = self.levels - 1
        for level in range(last):
            yield from self.shared_bank[level].parameters()
            yield from self.task_bank[level].parameters()
        yield from self.shared_gates.parameters()
        yield from self.shared_bank[last].parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        last = self.levels - 1
        yield from self.task_bank[last][name].parameters()  # type: ignore[index]
        for gates in self.task_gates:
            yield from gates[name].parameters()  # type: ignore[index]
        yield from self.heads[name].parameters()


def _build(
    arch: str,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    levels: int,
    shared_experts: int,
    task_experts: int,
    expert_hidden: Sequence[int],
    head_hidden: Sequence[int],
    activation: str,
    dropout: float,
) -> PLE:
    expert_hidden = check_widths(arch, "expert_hidden", expert_hidden, allow_empty=False)
    head_hidden = check_widths(arch, "head_hidden", head_hidden)
    check_dropout(arch, dropout)
    heads = make_heads(tasks, expert_hidden[-1], head_hidden, activation=activation, dropout=dropout)
    return PLE(
        flat_size(input_shape),
        heads,
        levels=levels,
        shared_experts=shared_experts,
        task_experts=task_experts,
        expert_hidden=expert_hidden,
        activation=activation,
        dropout=dropout,
    )


@ARCHITECTURES.register("cgc")
def cgc(
    *,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    shared_experts: int = 2,
    task_experts: int = 2,
    expert_hidden: Sequence[int] = (256, 128),
    head_hidden: Sequence[int] = (64,),
    activation: str = "relu",
    dropout: float = 0.0,
) -> PLE:
    """Customized gate control: shared + task-specific experts, one gate per task (Tang et al. 2020).

    Tang, Liu, Zhao, Gong, RecSys 2020. https://doi.org/10.1145/3383313.3412236

    Args:
        input_shape: shape of one input sample (flattened).
        tasks: the tasks.
        shared_experts: number of shared experts.
        task_experts: experts of each task.
        expert_hidden: widths of each expert's layers.
        head_hidden: widths of each task tower's hidden layers.
        activation: "relu", "gelu", "tanh" or "silu".
        dropout: dropout after each hidden layer, in [0, 1).
    """
    return _build(
        "cgc", input_shape, tasks, 1, shared_experts, task_experts, expert_hidden, head_hidden, activation, dropout
    )


@ARCHITECTURES.register("ple")
def ple(
    *,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    levels: int = 2,
    shared_experts: int = 2,
    task_experts: int = 2,
    expert_hidden: Sequence[int] = (128,),
    head_hidden: Sequence[int] = (64,),
    activation: str = "relu",
    dropout: float = 0.0,
) -> PLE:
    """Progressive layered extraction: stacked CGC levels with shared gates between them (Tang et al. 2020).

    Tang, Liu, Zhao, Gong, RecSys 2020. https://doi.org/10.1145/3383313.3412236

    Args:
        input_shape: shape of one input sample (flattened).
        tasks: the tasks.
        levels: extraction levels (1 is CGC).
        shared_experts: shared experts per level.
        task_experts: experts of each task per level.
        expert_hidden: widths of each expert's layers (the last is each level's output width).
        head_hidden: widths of each task tower's hidden layers.
        activation: "relu", "gelu", "tanh" or "silu".
        dropout: dropout after each hidden layer, in [0, 1).
    """
    return _build(
        "ple", input_shape, tasks, levels, shared_experts, task_experts, expert_hidden, head_hidden, activation, dropout
    )
