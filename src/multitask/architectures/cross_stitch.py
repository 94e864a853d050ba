"""Cross-stitch networks: one column per task, linearly mixed after every layer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..tasks import Task
from .base import _ACTIVATIONS as ACTIVATIONS
from .base import ARCHITECTURES, MultiTaskModel, check_dropout, check_widths, flat_size, make_heads

__all__ = ["CrossStitch", "cross_stitch", "stitch_init"]


def stitch_init(units: int, self_weight: float) -> Tensor:
    """A ``units x units`` mixing matrix: ``self_weight`` on the diagonal, the rest spread evenly."""
    if units == 1:
        return torch.ones(1, 1)
    off = (1.0 - self_weight) / (units - 1)
    return torch.full((units, units), off) + torch.eye(units) * (self_weight - off)


class CrossStitch(MultiTaskModel):
    """Task columns whose activations are mixed by learned cross-stitch units after each layer.

    After layer ``l`` the activations of the ``T`` columns are replaced by ``x̃_t = Σ_s α^l_ts x_s``
    (``α^l`` is ``T x T``, initialised to ``self_weight`` on the diagonal). Every column then
    influences every task, so the columns and the cross-stitch units are the shared parameters;
    the shared features ``Z`` are the mixed activations of the last layer, ``[B, T, d]``.

    Misra, Shrivastava, Gupta, Hebert, "Cross-stitch Networks for Multi-task Learning", CVPR 2016.
    https://arxiv.org/abs/1604.03539

    Args:
        layers: ``layers[l][t]`` is layer ``l`` of task ``t``'s column (``[B, d_in] -> [B, d_l]``).
        heads: ``{task: nn.Module}`` on the last mixed activation of its column.
        self_weight: initial diagonal of the cross-stitch units (in (0, 1]).
    """

    def __init__(self, layers: list[list[nn.Module]], heads: dict[str, nn.Module], *, self_weight: float = 0.9) -> None:
        super().__init__()
        t = len(heads)
        if not layers or any(len(col) != t for col in layers):
            raise ValueError(f"CrossStitch: every layer needs one module per task ({t})")
        if not (0.0 < self_weight <= 1.0):
            raise ValueError(f"CrossStitch: self_weight={self_weight!r} must be in (0, 1]")
        self.layers = nn.ModuleList(nn.ModuleList(col) for col in layers)
        self.stitches = nn.ParameterList(nn.Parameter(stitch_init(t, self_weight)) for _ in layers)
        self.heads = nn.ModuleDict(heads)
        self.task_names = list(heads)

    def _features(self, x: Tensor) -> Tensor:
        xs = [x.flatten(1)] * len(self.task_names)
        h = x
        for col, alpha in zip(self.layers, self.stitches, strict=True):
            layers: list[nn.Module] = list(col)  # type: ignore[call-overload]
            h = torch.stack([layer(xi) for layer, xi in zip(layers, xs, strict=True)], dim=1)  # [B, T, d]
            h = torch.einsum("ts,bsd->btd", alpha, h)
            xs = list(h.unbind(1))
        return h

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        z = self._features(x)
        return {name: self.heads[name](z[:, i]) for i, name in enumerate(self.task_names)}, z

    def forward_task_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None, dict[str, Tensor] | None]:
        z = self._features(x)
        views = {name: z.view_as(z) for name in self.task_names}
        return {name: self.heads[name](views[name][:, i]) for i, name in enumerate(self.task_names)}, z, views

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.layers.parameters()
        yield from self.stitches.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        return self.heads[name].parameters()


def columns(n_in: int, hidden: Sequence[int], n_columns: int, activation: str, dropout: float) -> list[list[nn.Module]]:
    """``layers[l][c]``: ``Linear -> activation [-> Dropout]`` for each of ``n_columns`` columns."""
    out: list[list[nn.Module]] = []
    width = n_in
    for h in hidden:
        col: list[nn.Module] = []
        for _ in range(n_columns):
            parts: list[nn.Module] = [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout > 0:
                parts.append(nn.Dropout(dropout))
            col.append(nn.Sequential(*parts))
        out.append(col)
        width = h
    return out


@ARCHITECTURES.register("cross_stitch")
def cross_stitch(
    *,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    hidden: Sequence[int] = (256, 128),
    head_hidden: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
    self_weight: float = 0.9,
) -> CrossStitch:
    """One MLP column per task mixed by cross-stitch units after every layer (Misra et al. 2016).

    Misra, Shrivastava, Gupta, Hebert, CVPR 2016. https://arxiv.org/abs/1604.03539

    Args:
        input_shape: shape of one input sample (flattened).
        tasks: the tasks; one column and one head each.
        hidden: widths of each column's layers.
        head_hidden: widths of each head's hidden layers.
        activation: "relu", "gelu", "tanh" or "silu".
        dropout: dropout after each hidden layer, in [0, 1).
        self_weight: initial weight of a column on itself in each cross-stitch unit.
    """
    hidden = check_widths("cross_stitch", "hidden", hidden, allow_empty=False)
    head_hidden = check_widths("cross_stitch", "head_hidden", head_hidden)
    check_dropout("cross_stitch", dropout)
    _check_activation(activation)
    layers = columns(flat_size(input_shape), hidden, len(tasks), activation, dropout)
    heads = make_heads(tasks, hidden[-1], head_hidden, activation=activation, dropout=dropout)
    return CrossStitch(layers, heads, self_weight=self_weight)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        from ..registry import UnknownNameError, unknown_name_message

        raise UnknownNameError(unknown_name_message("activation", activation, list(ACTIVATIONS)))
