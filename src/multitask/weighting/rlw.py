"""Random loss weighting: fresh random task weights at every step."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, register, stream_seed

__all__ = ["RLW_DISTRIBUTIONS", "RandomLossWeighting"]

#: The distributions :class:`RandomLossWeighting` can draw from.
RLW_DISTRIBUTIONS: tuple[str, ...] = ("normal", "uniform", "dirichlet")


@register
class RandomLossWeighting(Weighting):
    """Random loss weighting (RLW): draw new random task weights at every step.

    ``distribution="normal"`` (the paper's main variant) draws ``z ~ N(0, I)`` and returns
    ``w = T·softmax(z)``; ``"uniform"`` does the same with ``z ~ U(0, 1)^T``; ``"dirichlet"``
    draws ``w/T ~ Dirichlet(1, ..., 1)`` (uniform on the simplex). Weights are positive and sum
    to ``T``. The paper proposes RLW as a litmus test: a method that does not beat it on average
    is not doing much.

    Reproducible: draw number ``k`` uses a CPU ``torch.Generator`` seeded from ``(seed, k)``, and
    ``k`` is a buffer, so a method reloaded from ``state_dict()`` continues the same sequence and
    the draws do not touch (or depend on) the global RNG.

    Reference:
        Baijiong Lin, Feiyang Ye, Yu Zhang, Ivor W. Tsang, "Reasonable Effectiveness of Random
        Weighting: A Litmus Test for Multi-Task Learning", TMLR 2022.
        https://arxiv.org/abs/2111.10603

    Args:
        num_tasks: the number of tasks ``T``.
        distribution: one of ``"normal"``, ``"uniform"``, ``"dirichlet"``.
        seed: the seed of the weight sequence (an integer >= 0).
    """

    name: ClassVar[str] = "rlw"
    requires_gramian: ClassVar[bool] = False
    properties: ClassVar[frozenset[str]] = frozenset(
        {"nonnegative", "sums_to_num_tasks", "loss_scale_invariant", "stochastic"}
    )

    step: Tensor

    def __init__(self, num_tasks: int, *, distribution: str = "normal", seed: int = 0) -> None:
        super().__init__(num_tasks)
        if distribution not in RLW_DISTRIBUTIONS:
            raise ValueError(
                f"RandomLossWeighting: distribution={distribution!r} is not supported; "
                f"use one of {', '.join(repr(d) for d in RLW_DISTRIBUTIONS)}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"RandomLossWeighting: seed={seed!r} must be an integer >= 0, e.g. seed=0")
        self.distribution = distribution
        self.seed = seed
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """Random weights ``[T]`` (positive, summing to ``T``); advances the draw counter."""
        self._check_inputs(losses, gramian)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(stream_seed(self.seed, int(self.step)))
        t = self.num_tasks
        if self.distribution == "normal":
            probs = torch.softmax(torch.randn(t, generator=gen, dtype=torch.float64), dim=0)
        elif self.distribution == "uniform":
            probs = torch.softmax(torch.rand(t, generator=gen, dtype=torch.float64), dim=0)
        else:  # dirichlet(1): normalised Exp(1) draws
            u = torch.rand(t, generator=gen, dtype=torch.float64)
            e = -torch.log1p(-u)
            probs = e / e.sum().clamp_min(torch.finfo(torch.float64).tiny)
        self.step.add_(1)
        return (t * probs).to(dtype=losses.dtype, device=losses.device)
