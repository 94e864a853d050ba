"""Sluice networks: cross-stitch over subspaces, learned layer mixing, orthogonal subspaces."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..tasks import Task
from .base import ARCHITECTURES, MultiTaskModel, check_dropout, check_widths, flat_size, make_heads
from .cross_stitch import _check_activation, columns, stitch_init

__all__ = ["Sluice", "sluice"]


class Sluice(MultiTaskModel):
    """Task columns whose layers are split into subspaces mixed across tasks, plus layer mixing.

    After layer ``l`` each column's activation is split into ``subspaces`` equal parts; the
    ``T·K`` parts are mixed by a learned ``α^l`` (``T·K x T·K``, cross-stitch over subspaces). Each
    task's head reads ``Σ_l β_tl h^l_t``, a learned mix of its column's layers (all hidden widths
    equal). The regulariser ``strength · Σ_{l,t} ‖W_{l,t,1} W_{l,t,2}ᵀ‖²_F`` pushes the rows of
    each layer's weight that produce different subspaces towards orthogonality (for
    ``subspaces = 2``; all pairs otherwise).

    Ruder, Bingel, Augenstein, Søgaard, "Latent Multi-task Architecture Learning", AAAI 2019.
    https://arxiv.org/abs/1705.08142

    Args:
        layers: ``layers[l][t]``, modules whose first submodule is the ``nn.Linear`` of the layer.
        heads: ``{task: nn.Module}``.
        subspaces: parts each activation is split into (divides every width).
        self_weight: initial diagonal of the ``α`` units.
        strength: weight of the subspace-orthogonality penalty.
    """

    def __init__(
        self,
        layers: list[list[nn.Module]],
        heads: dict[str, nn.Module],
        *,
        subspaces: int = 2,
        self_weight: float = 0.9,
        strength: float = 1e-3,
    ) -> None:
        super().__init__()
        t = len(heads)
        if not layers or any(len(col) != t for col in layers):
            raise ValueError(f"Sluice: every layer needs one module per task ({t})")
        if subspaces < 1:
            raise ValueError(f"Sluice: subspaces={subspaces!r} must be >= 1")
        if not strength >= 0:
            raise ValueError(f"Sluice: strength={strength!r} must be >= 0")
        self.layers = nn.ModuleList(nn.ModuleList(col) for col in layers)
        self.alphas = nn.ParameterList(nn.Parameter(stitch_init(t * subspaces, self_weight)) for _ in layers)
        self.betas = nn.ParameterDict({n: nn.Parameter(torch.full((len(layers),), 1.0 / len(layers))) for n in heads})
        self.heads = nn.ModuleDict(heads)
        self.task_names = list(heads)
        self.subspaces, self.strength = subspaces, float(strength)

    def _columns(self, x: Tensor) -> list[Tensor]:
        """The mixed activation of every layer, ``[B, T, d]`` each."""
        t, k = len(self.task_names), self.subspaces
        xs = [x.flatten(1)] * t
        outs = []
        for col, alpha in zip(self.layers, self.alphas, strict=True):
            layers: list[nn.Module] = list(col)  # type: ignore[call-overload]
            h = torch.stack([layer(xi) for layer, xi in zip(layers, xs, strict=True)], dim=1)  # [B, T, d]
            b, _, d = h.shape
            parts = h.reshape(b, t * k, d // k)
            h = torch.einsum("ts,bsd->btd", alpha, parts).reshape(b, t, d)
            outs.append(h)
            xs = list(h.unbind(1))
        return outs

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        hs = torch.stack(self._columns(x), dim=-1)  # [B, T, d, L]
        return {n: self.heads[n](hs[:, i] @ self.betas[n]) for i, n in enumerate(self.task_names)}, None

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.layers.parameters()
        yield from self.alphas.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        yield self.betas[name]
        yield from self.heads[name].parameters()

    def regularizer(self) -> Tensor | None:
        if self.strength == 0.0 or self.subspaces < 2:
            return None
        total: Tensor | None = None
        for col in self.layers:
            for module in col:  # type: ignore[attr-defined]
                w = next(m for m in module.modules() if isinstance(m, nn.Linear)).weight
                parts = w.chunk(self.subspaces, dim=0)
                for i in range(len(parts)):
                    for j in range(i + 1, len(parts)):
                        term = (parts[i] @ parts[j].T).pow(2).sum()
                        total = term if total is None else total + term
        return None if total is None else self.strength * total


@ARCHITECTURES.register("sluice")
def sluice(
    *,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    hidden: Sequence[int] = (128, 128),
    head_hidden: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
    subspaces: int = 2,
    self_weight: float = 0.9,
    strength: float = 1e-3,
) -> Sluice:
    """Sluice network: subspace cross-stitch, layer mixing, orthogonality penalty (Ruder et al. 2019).

    Ruder, Bingel, Augenstein, Søgaard, AAAI 2019. https://arxiv.org/abs/1705.08142

    Args:
        input_shape: shape of one input sample (flattened).
        tasks: the tasks; one column and one head each.
        hidden: widths of each column's layers (all equal, divisible by ``subspaces``).
        head_hidden: widths of each head's hidden layers.
        activation: "relu", "gelu", "tanh" or "silu".
        dropout: dropout after each hidden layer, in [0, 1).
        subspaces: subspaces per layer activation.
        self_weight: initial diagonal of the subspace mixing units.
        strength: weight of the subspace-orthogonality penalty.
    """
    hidden = check_widths("sluice", "hidden", hidden, allow_empty=False)
    head_hidden = check_widths("sluice", "head_hidden", head_hidden)
    check_dropout("sluice", dropout)
    _check_activation(activation)
    if len(set(hidden)) != 1:
        raise ValueError(f"sluice: hidden={hidden!r}; the layer mixing needs equal widths, e.g. [128, 128]")
    if not isinstance(subspaces, int) or subspaces < 1 or hidden[0] % subspaces:
        raise ValueError(f"sluice: subspaces={subspaces!r} must be a positive divisor of the width {hidden[0]}")
    layers = columns(flat_size(input_shape), hidden, len(tasks), activation, dropout)
    heads = make_heads(tasks, hidden[-1], head_hidden, activation=activation, dropout=dropout)
    return Sluice(layers, heads, subspaces=subspaces, self_weight=self_weight, strength=strength)
