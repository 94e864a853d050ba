"""GradDrop: keep, entry by entry, only the task gradients of a randomly chosen sign."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from ..weighting.base import stream_seed
from .base import Aggregator, register_aggregator

__all__ = ["GradDrop", "graddrop_combine"]


def graddrop_combine(jacobian: Tensor, uniform: Tensor, leak: Tensor) -> Tensor:
    """GradDrop's combination of the rows of ``jacobian`` ``[T, P]`` given the draws ``uniform`` ``[P]``.

    Per column ``j``: the positive sign purity ``P_j = ½(1 + Σ_t J_tj / Σ_t |J_tj|)`` (``½`` for
    an all-zero column); the positive entries are kept where ``P_j > U_j``, the negative ones where
    ``P_j < U_j``; task ``t``'s entry is then scaled by ``leak_t + (1 - leak_t)·kept`` and the
    rows are summed. Deterministic given ``uniform`` (``[P]`` draws from ``U(0, 1)``).

    Computed column-wise from the positive and negative parts ``S⁺_j = Σ_t max(J_tj, 0)`` and
    ``S⁻_j = Σ_t min(J_tj, 0)`` (``P_j = S⁺_j / (S⁺_j - S⁻_j)``), so only one ``[T, P]`` temporary
    is made: the update is ``Σ_t leak_t J_t + [P_j > U_j]·Σ_t (1 - leak_t) J⁺_tj
    + [P_j < U_j]·Σ_t (1 - leak_t) J⁻_tj``.
    """
    lk = leak.to(dtype=jacobian.dtype, device=jacobian.device)
    positive = jacobian.clamp_min(0.0)
    total = jacobian.sum(dim=0)
    pos = positive.sum(dim=0)
    mass = 2.0 * pos - total  # Σ_t |J_tj| = S⁺ - S⁻ with S⁻ = total - S⁺
    purity = torch.where(mass > 0, pos / torch.where(mass > 0, mass, 1.0), 0.5)
    if bool((lk == 0).all()):
        kept_pos, kept_neg, leaked = pos, total - pos, None
    else:
        keep = 1.0 - lk
        kept_pos = keep @ positive
        kept_neg = keep @ jacobian - kept_pos
        leaked = lk @ jacobian
    zero = torch.zeros((), dtype=jacobian.dtype, device=jacobian.device)
    out = torch.where(purity > uniform, kept_pos, zero) + torch.where(purity < uniform, kept_neg, zero)
    return out if leaked is None else out + leaked


@register_aggregator
class GradDrop(Aggregator):
    """GradDrop: per parameter, keep only the task gradients of one randomly drawn sign.

    For each entry ``j`` of the update, the positive sign purity
    ``P_j = ½(1 + Σ_t g_tj / Σ_t |g_tj|)`` (1 if every task pushes that entry the same positive
    way, 0 if every task pushes it negatively) sets the odds: with ``U_j ~ U(0, 1)``, the positive
    task gradients are kept if ``P_j > U_j`` and the negative ones otherwise; the kept entries are
    summed. Conflicting signs are thus resolved at random, in proportion to their mass, so the
    update is ``Σ_t g_t`` where the tasks agree. ``leak_t`` lets a fraction of task ``t``'s dropped
    entries through (``leak_t = 1``: task ``t`` is never dropped). These are lines 10-15 of the
    paper's Algorithm 1 (the form torchjd implements), with its monotone ``f`` the identity:
    applied to the columns of the Jacobian it receives, without the paper's layer-level extras
    (multiplying by ``sign(A)`` of the input activations and summing over the batch), which need
    the activations. In ``grad_mode="features"`` the engine passes the Jacobian with respect to the
    shared features, as in the paper, which inserts GradDrop after the shared trunk.

    Reproducible randomness: the draws of call number ``k`` come from a ``torch.Generator`` on the
    Jacobian's device seeded from ``(seed, k)``; ``k`` is a buffer, so a method reloaded from
    ``state_dict()`` continues the same sequence, and the global RNG is neither used nor changed.
    (The same seed gives different draws on a CPU and on a GPU.)

    Reference:
        Zhao Chen, Jiquan Ngiam, Yanping Huang, Thang Luong, Henrik Kretzschmar, Yuning Chai,
        Dragomir Anguelov, "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign
        Dropout", NeurIPS 2020. https://arxiv.org/abs/2010.06808

    Args:
        num_tasks: the number of tasks ``T``.
        leak: in ``[0, 1]``: one value for every task, or one per task (a sequence of ``T``).
        seed: the seed of the random draws (an integer >= 0).
    """

    name: ClassVar[str] = "graddrop"
    properties: ClassVar[frozenset[str]] = frozenset({"stochastic", "permutation_equivariant"})

    step: Tensor
    leak_values: Tensor

    def __init__(self, num_tasks: int, *, leak: float | Sequence[float] = 0.0, seed: int = 0) -> None:
        super().__init__(num_tasks)
        values = _check_leak(num_tasks, leak)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"GradDrop: seed={seed!r} must be an integer >= 0, e.g. seed=0")
        self.leak = float(leak) if isinstance(leak, int | float) else tuple(values)
        self.seed = seed
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # A function of the hyperparameter, not state: kept out of state_dict but moved by .to().
        self.register_buffer("leak_values", torch.tensor(values, dtype=torch.float64), persistent=False)

    def forward(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """The GradDrop update ``[P]``; advances the draw counter."""
        self._check_inputs(jacobian, losses)
        jac = jacobian.detach()
        gen = torch.Generator(device=jac.device)
        gen.manual_seed(stream_seed(self.seed, int(self.step)))
        draw_dtype = jac.dtype if jac.dtype in (torch.float32, torch.float64) else torch.float32
        uniform = torch.rand(jac.shape[1], generator=gen, dtype=draw_dtype, device=jac.device)
        self.step.add_(1)
        return graddrop_combine(jac, uniform.to(jac.dtype), self.leak_values)


def _check_leak(num_tasks: int, leak: object) -> list[float]:
    hint = f"e.g. leak=0.0 or leak={tuple([0.0] * num_tasks)}"
    if isinstance(leak, bool):
        raise ValueError(f"GradDrop: leak={leak!r} must be a number in [0, 1] or one per task; {hint}")
    if isinstance(leak, int | float):
        values = [float(leak)] * num_tasks
    else:
        try:
            values = [float(v) for v in leak]  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            raise ValueError(f"GradDrop: leak={leak!r} must be a number in [0, 1] or one per task; {hint}") from None
        if len(values) != num_tasks:
            raise ValueError(f"GradDrop: leak={leak!r} has {len(values)} entries; expected one per task ({num_tasks})")
    if any(not (math.isfinite(v) and 0.0 <= v <= 1.0) for v in values):
        raise ValueError(f"GradDrop: leak={leak!r} must lie in [0, 1] (0: drop fully, 1: never drop); {hint}")
    return values
