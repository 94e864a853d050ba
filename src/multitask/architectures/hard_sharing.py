"""Hard parameter sharing with an MLP trunk, built from a config."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from ..tasks import Task
from .base import ARCHITECTURES, HardSharing, mlp


def _check_widths(name: str, widths: Sequence[int]) -> None:
    if any((not isinstance(w, int)) or isinstance(w, bool) or w < 1 for w in widths):
        raise ValueError(f"hard_sharing: {name}={list(widths)!r}; every width must be a positive integer")


@ARCHITECTURES.register("hard_sharing")
def hard_sharing(
    *,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    hidden: Sequence[int] = (256, 128),
    head_hidden: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
) -> HardSharing:
    """Shared MLP trunk and one MLP head per task (Caruana 1997).

    Caruana, "Multitask Learning", Machine Learning 28, 1997. https://doi.org/10.1023/A:1007379606734

    Args:
        input_shape: shape of one input sample (flattened by the trunk).
        tasks: the tasks; one head each, ``task.output_dim`` outputs.
        hidden: widths of the shared trunk's layers.
        head_hidden: widths of each head's hidden layers before its output layer.
        activation: "relu", "gelu", "tanh" or "silu".
        dropout: dropout probability after each hidden layer, in [0, 1).
    """
    hidden, head_hidden = list(hidden), list(head_hidden)
    _check_widths("hidden", hidden)
    _check_widths("head_hidden", head_hidden)
    if not hidden:
        raise ValueError("hard_sharing: hidden=[] leaves nothing to share; give at least one trunk width")
    if not (0.0 <= dropout < 1.0):
        raise ValueError(f"hard_sharing: dropout={dropout!r} must be in [0, 1)")
    in_features = math.prod(input_shape)
    trunk = mlp(in_features, hidden, activation=activation, dropout=dropout)
    heads: dict[str, nn.Module] = {}
    for task in tasks:
        body = mlp(hidden[-1], head_hidden, activation=activation, dropout=dropout)
        heads[task.name] = nn.Sequential(
            *body, nn.Linear(head_hidden[-1] if head_hidden else hidden[-1], task.output_dim)
        )
    return HardSharing(trunk, heads)
