"""Multi-task attention network (MTAN): a shared backbone with per-task attention modules."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tasks import Task
from .base import ARCHITECTURES, MultiTaskModel, check_widths, make_heads

__all__ = ["MTAN", "mtan"]


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


def _attention(c_in: int, c_out: int, conv: bool) -> nn.Sequential:
    """MTAN's attention module: 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN -> sigmoid (Linear for vectors)."""
    if conv:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 1),
            nn.BatchNorm2d(c_out),
            nn.Sigmoid(),
        )
    return nn.Sequential(nn.Linear(c_in, c_out), nn.ReLU(), nn.Linear(c_out, c_out), nn.Sigmoid())


class MTAN(MultiTaskModel):
    """A shared backbone; each task learns soft attention masks over the backbone's features.

    At block ``j`` task ``t``'s mask ``a^j_t = g^j_t([u^j, â^{j-1}_t])`` (sigmoid) selects from the
    shared feature ``p^j`` (``â^j_t = f^j(a^j_t ⊙ p^j)``, brought to the next block's width and
    resolution by a shared ``f^j``). With image inputs ``[C, H, W]`` the backbone is a CNN
    (conv-BN-ReLU blocks with 2x2 max-pooling) and the masks are per channel and pixel; with
    vector inputs it is an MLP and the masks are per unit. The backbone and the ``f^j`` are shared;
    the attention modules and heads belong to their task. There is no single shared feature the
    heads read, so only the "exact" grad mode applies to gradient methods.

    Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019.
    https://arxiv.org/abs/1803.10704

    Args:
        input_shape: ``[C, H, W]`` (convolutional) or ``[D]`` (MLP).
        tasks: the tasks.
        widths: channels (or units) of the backbone blocks.
        head_hidden: widths of each head's hidden layers.
    """

    def __init__(
        self, input_shape: Sequence[int], tasks: Sequence[Task], widths: Sequence[int], head_hidden: Sequence[int]
    ) -> None:
        super().__init__()
        self.conv = len(input_shape) == 3
        if not self.conv and len(input_shape) != 1:
            raise ValueError(f"mtan: input_shape={tuple(input_shape)!r}; give [C, H, W] images or [D] vectors")
        c_in = int(input_shape[0])
        self.task_names = [t.name for t in tasks]
        self.backbone = nn.ModuleList()
        self.shared_f = nn.ModuleList()
        prev = c_in
        for j, w in enumerate(widths):
            self.backbone.append(_conv_block(prev, w) if self.conv else nn.Sequential(nn.Linear(prev, w), nn.ReLU()))
            if j + 1 < len(widths):
                nxt = widths[j + 1]
                self.shared_f.append(_conv_block(w, nxt) if self.conv else nn.Sequential(nn.Linear(w, nxt), nn.ReLU()))
            prev = w
        self.attention = nn.ModuleDict(
            {
                t.name: nn.ModuleList(_attention(w if j == 0 else w + w, w, self.conv) for j, w in enumerate(widths))
                for t in tasks
            }
        )
        self.heads = nn.ModuleDict(make_heads(tasks, widths[-1], head_hidden))

    def _pool(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, 2) if self.conv and min(x.shape[-2:]) >= 2 else x

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        if not self.conv:
            x = x.flatten(1)
        shared: list[Tensor] = []
        h = x
        for j, block in enumerate(self.backbone):
            h = block(h)
            shared.append(h)
            if j + 1 < len(self.backbone):
                h = self._pool(h)
        outputs = {}
        for name in self.task_names:
            att = self.attention[name]
            a: Tensor | None = None
            for j, p in enumerate(shared):
                inp = p if a is None else torch.cat([p, a], dim=1)
                a = att[j](inp) * p  # type: ignore[index]
                if j + 1 < len(shared):
                    a = self._pool(self.shared_f[j](a))
            assert a is not None
            feat = a.mean(dim=(2, 3)) if self.conv else a
            outputs[name] = self.heads[name](feat)
        return outputs, None

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.backbone.parameters()
        yield from self.shared_f.parameters()

    def task_parameters(self, name: str) -> Iterator[nn.Parameter]:
        yield from self.attention[name].parameters()
        yield from self.heads[name].parameters()


@ARCHITECTURES.register("mtan")
def mtan(
    *,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    widths: Sequence[int] = (16, 32, 64),
    head_hidden: Sequence[int] = (),
) -> MTAN:
    """Multi-task attention network: shared CNN (or MLP) backbone, per-task attention masks (Liu et al. 2019).

    Liu, Johns, Davison, CVPR 2019. https://arxiv.org/abs/1803.10704

    Args:
        input_shape: ``[C, H, W]`` images (convolutional backbone) or ``[D]`` vectors (MLP backbone).
        tasks: the tasks; one attention branch and one head each.
        widths: channels (images) or units (vectors) of the backbone blocks.
        head_hidden: widths of each head's hidden layers.
    """
    widths = check_widths("mtan", "widths", widths, allow_empty=False)
    head_hidden = check_widths("mtan", "head_hidden", head_hidden)
    return MTAN(input_shape, tasks, widths, head_hidden)
