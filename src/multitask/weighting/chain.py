"""Composition of weightings on the Gramian."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import Weighting

__all__ = ["Chain", "chain"]


class Chain(Weighting):
    """Apply weightings in sequence: every stage but the last rescales the task gradients.

    A stage ``a`` returns ``d_a`` (``[T]``), read as a diagonal rescaling ``g_t -> d_t g_t`` of the
    task gradients. The next stage sees the Gramian of the rescaled gradients, ``D_a G D_a``,
    exactly; the final weights are ``d_1 ⊙ ... ⊙ d_{k-1} ⊙ w_k``, so the update is the last
    stage's combination of the rescaled gradients. ``chain(NormalizeGradients(T, mode="l2"),
    MGDA(T))`` is MGDA on unit-norm gradients (Sener & Koltun's "l2" normalisation). Each stage
    receives the same (detached) losses.

    This is function composition as in optax's ``chain``; see also Sener & Koltun, "Multi-Task
    Learning as Multi-Objective Optimization", NeurIPS 2018, https://arxiv.org/abs/1810.04650.

    Args:
        *stages: two or more weightings built for the same number of tasks.
    """

    name: ClassVar[str] = "chain"

    def __init__(self, *stages: Weighting) -> None:
        if len(stages) < 2:
            raise ValueError(f"chain needs at least two stages, got {len(stages)}")
        counts = {s.num_tasks for s in stages}
        if len(counts) != 1:
            raise ValueError(f"chain: the stages were built for different numbers of tasks {sorted(counts)}")
        super().__init__(stages[0].num_tasks)
        self.stages = torch.nn.ModuleList(stages)

    def needs_gramian(self) -> bool:
        return any(s.needs_gramian() for s in self._stages())

    def _stages(self) -> list[Weighting]:
        return [s for s in self.stages if isinstance(s, Weighting)]

    @property
    def stage_properties(self) -> frozenset[str]:
        """Properties every stage declares (what the composition can promise)."""
        common = frozenset.intersection(*(type(s).properties for s in self._stages()))
        return common & {"stateless"}

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        stages = self._stages()
        scale = torch.ones_like(losses)
        g = gramian
        for stage in stages[:-1]:
            d = stage(losses, g)
            scale = scale * d
            if g is not None:
                g = d.unsqueeze(1) * g * d.unsqueeze(0)
        weights: Tensor = scale * stages[-1](losses, g)
        return weights

    def regularizer(self) -> Tensor | None:
        terms = [r for r in (s.regularizer() for s in self._stages()) if r is not None]
        return torch.stack(terms).sum() if terms else None

    def on_epoch_end(self) -> None:
        for s in self._stages():
            s.on_epoch_end()

    def hyperparameters(self) -> dict[str, Any]:
        return {"stages": [f"{type(s).name}({s.hyperparameters()})" for s in self._stages()]}

    def for_tasks(self, num_tasks: int) -> Weighting:
        return Chain(*(s.for_tasks(num_tasks) for s in self._stages()))

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"


def chain(*stages: Weighting) -> Chain:
    """Compose weightings: ``chain(NormalizeGradients(T, mode="l2"), MGDA(T))``; see :class:`Chain`."""
    return Chain(*stages)
