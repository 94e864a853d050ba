"""PCGrad: project each task gradient off the gradients it conflicts with (gradient surgery)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, as_weights, register, stream_seed

__all__ = ["PCGrad", "pcgrad_weights"]


def pcgrad_weights(gramian: Tensor, orders: Tensor) -> Tensor:
    """PCGrad weights (float64 ``[T]``) for the Gramian ``G`` and the task orders ``orders``.

    ``orders[i]`` (a permutation of ``0..T-1``; the entry ``i`` is skipped) is the order in which
    task ``i``'s gradient is projected off the others. Every projected gradient is a linear
    combination of the original ones, ``g_i^PC = Σ_m C_im g_m``, so the projections are done on the
    coefficients: ``⟨g_i^PC, g_j⟩ = (C G)_ij``, and a conflict (``< 0``) adds
    ``-⟨g_i^PC, g_j⟩ / ||g_j||²`` to ``C_ij``. The update ``Σ_i g_i^PC`` has weights ``Σ_i C_i``.
    All ``T`` projections advance together, one position of their orders at a time.
    """
    g = gramian.detach().to(torch.float64)
    t = g.shape[0]
    diag = g.diagonal()
    top = diag.max()
    if float(top) > 0:
        g = g / top
        diag = g.diagonal()
    rows = torch.arange(t, device=g.device)
    coeffs = torch.eye(t, dtype=torch.float64, device=g.device)
    against = g[orders]  # [i, k, :] = G[orders[i, k], :]
    onehot = torch.nn.functional.one_hot(orders, t).to(torch.float64)  # [i, k, m]
    for k in range(t):
        j = orders[:, k]
        inner = (coeffs * against[:, k, :]).sum(dim=1)
        djj = diag[j]
        conflict = (inner < 0) & (j != rows) & (djj > 0)
        step = torch.where(conflict, -inner / torch.where(djj > 0, djj, 1.0), 0.0)
        coeffs = coeffs + step.unsqueeze(1) * onehot[:, k, :]
    return coeffs.sum(dim=0)


@register
class PCGrad(Weighting):
    """PCGrad: project each gradient off the ones it conflicts with, in random order; sum them.

    For every task ``i``, starting from ``g_i^PC = g_i``, for each other task ``j`` in a random
    order: if ``⟨g_i^PC, g_j⟩ < 0``, ``g_i^PC ← g_i^PC - ⟨g_i^PC, g_j⟩ / ||g_j||² · g_j``. The update
    is ``Σ_i g_i^PC`` (the paper's Algorithm 1: a sum, not a mean). The projected gradients are
    combinations of the original ones, so this runs on the Gramian, tracking the combination
    coefficients; the weights are their column sums (all >= 1 for a non-zero gradient: the
    projections only add non-negative multiples of other gradients).

    Randomness: each task's order is an independent random permutation drawn at every step (as
    in the paper's Algorithm 1, LibMTL and torchjd; the official TensorFlow code shuffles once per
    step for all tasks) from a CPU generator seeded from ``(seed, step)``; the step
    counter is a buffer, so the sequence is reproducible, survives a checkpoint, and does not
    touch the global RNG. For two tasks there is no randomness. torchjd's ``PCGrad`` draws its
    orders from the global RNG (``torch.randperm``), so it is not reproducible run-to-run;
    :func:`pcgrad_weights` with the same orders reproduces it exactly.

    Reference:
        Tianhe Yu, Saurabh Kumar, Abhishek Gupta, Sergey Levine, Karol Hausman, Chelsea Finn,
        "Gradient Surgery for Multi-Task Learning", NeurIPS 2020. https://arxiv.org/abs/2001.06782

    Args:
        num_tasks: the number of tasks ``T``.
        seed: the seed of the sequence of random orders (an integer >= 0).
    """

    name: ClassVar[str] = "pcgrad"
    requires_gramian: ClassVar[bool] = True
    # Not declared "stochastic": the contract's check wants every seed change to change the
    # weights, but the order does not matter when no projection interacts with a later one.
    properties: ClassVar[frozenset[str]] = frozenset({"nonnegative", "loss_scale_invariant", "gramian_scale_invariant"})

    step: Tensor

    def __init__(self, num_tasks: int, *, seed: int = 0) -> None:
        super().__init__(num_tasks)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"PCGrad: seed={seed!r} must be an integer >= 0, e.g. seed=0")
        self.seed = seed
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def orders(self) -> Tensor:
        """The ``[T, T]`` task orders of the current step (row ``i``: the order for task ``i``)."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(stream_seed(self.seed, int(self.step)))
        return torch.rand(self.num_tasks, self.num_tasks, generator=gen, dtype=torch.float64).argsort(dim=1)

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """PCGrad weights ``[T]``; advances the step counter."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        orders = self.orders().to(gramian.device)
        self.step.add_(1)
        return as_weights(pcgrad_weights(gramian, orders), losses)
