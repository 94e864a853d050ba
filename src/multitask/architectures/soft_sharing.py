"""Soft parameter sharing: one tower per task, coupled by a penalty on their weights."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..tasks import Task
from .base import ARCHITECTURES, MultiTaskModel, check_dropout, check_widths, flat_size, make_heads, mlp

__all__ = ["SoftSharing", "soft_sharing"]

PENALTIES = ("l2", "trace")


class SoftSharing(MultiTaskModel):
    """One tower per task; corresponding layers are pulled together by a penalty.

    ``penalty="l2"``: ``strength · Σ_layers Σ_t ‖W_t − W̄‖²`` (the squared distance of each task's
    weights to their mean; for two tasks, half the pairwise distance of Duong et al.). Duong, Cohn,
    Bird, Cook, "Low Resource Dependency Parsing: Cross-lingual Parameter Sharing in a Neural
    Network Parser", ACL 2015. https://doi.org/10.3115/v1/P15-2139

    ``penalty="trace"``: ``strength · Σ_layers ‖[vec W_1; …; vec W_T]‖_*`` (the trace norm of the
    stacked per-task weights, the matrix-unfolding variant of Yang & Hospedales, "Trace Norm
    Regularised Deep Multi-Task Learning", ICLR 2017 workshop, https://arxiv.org/abs/1606.04038).

    No parameter is used by two tasks (``shares_parameters = False``): gradient-balancing methods,
    which weigh gradients of shared parameters, do not apply; loss-based weightings do.

    Args:
        towers: ``{task: nn.Module}``, structurally identical modules (same parameter shapes).
        heads: ``{task: nn.Module}`` on top of each tower.
        penalty: "l2" or "trace".
        strength: weight of the penalty (>= 0).
    """

    shares_parameters = False

    def __init__(
        self, towers: dict[str, nn.Module], heads: dict[str, nn.Module], *, penalty: str = "l2", strength: float = 1e-3
    ) -> None:
        super().__init__()
        if set(towers) != set(heads) or not towers:
            raise ValueError(f"SoftSharing: towers {sorted(towers)} and heads {sorted(heads)} must name the same tasks")
        if penalty not in PENALTIES:
            from ..registry import UnknownNameError, unknown_name_message

            raise UnknownNameError(unknown_name_message("soft_sharing penalty", penalty, list(PENALTIES)))
        if not strength >= 0:
            raise ValueError(f"SoftSharing: strength={strength!r} must be >= 0")
        shapes = {name: [tuple(p.shape) for p in t.parameters()] for name, t in towers.items()}
        if len({tuple(s) for s in shapes.values()}) != 1:
            raise ValueError(f"SoftSharing: the towers must have the same parameter shapes, got {shapes}")
        self.towers = nn.ModuleDict(towers)
        self.heads = nn.ModuleDict(heads)
        self.task_names = list(towers)
        self.penalty, self.strength = penalty, float(strength)

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        return {t: self.heads[t](self.towers[t](x)) for t in self.task_names}, None

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        yield from self.towers[name].parameters()
        yield from self.heads[name].parameters()

    def regularizer(self) -> Tensor | None:
        if self.strength == 0.0 or len(self.task_names) < 2:
            return None
        per_task = [list(self.towers[t].parameters()) for t in self.task_names]
        total: Tensor | None = None
        for layer in zip(*per_task, strict=True):
            stacked = torch.stack([p.reshape(-1) for p in layer])  # [T, P_layer]
            if self.penalty == "l2":
                term = (stacked - stacked.mean(0, keepdim=True)).pow(2).sum()
            else:
                term = torch.linalg.svdvals(stacked).sum()
            total = term if total is None else total + term
        assert total is not None
        return self.strength * total


@ARCHITECTURES.register("soft_sharing")
def soft_sharing(
    *,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    hidden: Sequence[int] = (256, 128),
    head_hidden: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
    penalty: str = "l2",
    strength: float = 1e-3,
) -> SoftSharing:
    """One MLP tower per task coupled by an L2 or trace-norm penalty (Duong et al. 2015; Yang & Hospedales 2017).

    Duong et al., ACL 2015, https://doi.org/10.3115/v1/P15-2139; Yang & Hospedales, ICLR 2017
    workshop, https://arxiv.org/abs/1606.04038.

    Args:
        input_shape: shape of one input sample (flattened).
        tasks: the tasks; one tower and one head each.
        hidden: widths of each tower's layers.
        head_hidden: widths of each head's hidden layers.
        activation: "relu", "gelu", "tanh" or "silu".
        dropout: dropout after each hidden layer, in [0, 1).
        penalty: "l2" (distance to the mean of the towers' weights) or "trace" (trace norm).
        strength: weight of the penalty in the training objective.
    """
    hidden = check_widths("soft_sharing", "hidden", hidden, allow_empty=False)
    head_hidden = check_widths("soft_sharing", "head_hidden", head_hidden)
    check_dropout("soft_sharing", dropout)
    n_in = flat_size(input_shape)
    towers: dict[str, nn.Module] = {t.name: mlp(n_in, hidden, activation=activation, dropout=dropout) for t in tasks}
    heads = make_heads(tasks, hidden[-1], head_hidden, activation=activation, dropout=dropout)
    return SoftSharing(towers, heads, penalty=penalty, strength=strength)
