"""Static weighting: fixed user-given task weights (tuned scalarization)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, register

__all__ = ["StaticWeighting"]


@register
class StaticWeighting(Weighting):
    """Static weighting: fixed user-given task weights (linear scalarization).

    The update is the gradient of ``Σ_t w_t L_t`` with constant ``w``. Xin et al. (2022) found that
    such a scalarization, with its weights tuned by a sweep, matches or beats most multi-task
    optimisation methods; use this to run that sweep or to encode known task priorities. The
    weights are used exactly as given (they are not renormalised to sum to ``T``).

    Reference:
        Derrick Xin, Behrooz Ghorbani, Justin Gilmer, Ankush Garg, Orhan Firat, "Do Current
        Multi-Task Optimization Methods in Deep Learning Even Help?", NeurIPS 2022.
        https://arxiv.org/abs/2209.11379

    Args:
        num_tasks: the number of tasks ``T``.
        weights: one finite, non-negative weight per task, not all zero; ``None`` means all ones.
    """

    name: ClassVar[str] = "static"
    requires_gramian: ClassVar[bool] = False
    properties: ClassVar[frozenset[str]] = frozenset({"nonnegative", "loss_scale_invariant", "stateless"})

    fixed_weights: Tensor

    def __init__(self, num_tasks: int, *, weights: tuple[float, ...] | None = None) -> None:
        super().__init__(num_tasks)
        if weights is None:
            values = [1.0] * num_tasks
        else:
            try:
                values = [float(v) for v in weights]
            except (TypeError, ValueError):
                raise ValueError(
                    f"StaticWeighting: weights={weights!r} must be a sequence of {num_tasks} numbers, "
                    f"e.g. weights={tuple([1.0] * num_tasks)}"
                ) from None
            if len(values) != num_tasks:
                raise ValueError(
                    f"StaticWeighting: weights={tuple(weights)!r} has {len(values)} entries; expected one per task "
                    f"({num_tasks})"
                )
            if any(not math.isfinite(v) or v < 0 for v in values):
                raise ValueError(
                    f"StaticWeighting: weights={tuple(weights)!r} must all be finite and >= 0; "
                    "drop a task by giving it weight 0"
                )
            if all(v == 0 for v in values):
                raise ValueError(
                    f"StaticWeighting: weights={tuple(weights)!r} are all zero, nothing would be trained; "
                    "give at least one task a positive weight"
                )
        self.weights = None if weights is None else tuple(values)
        # A function of the hyperparameter, not state: kept out of state_dict but moved by .to().
        self.register_buffer("fixed_weights", torch.tensor(values, dtype=torch.float32), persistent=False)

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """The configured weights ``[T]`` in the dtype and device of ``losses``."""
        self._check_inputs(losses, gramian)
        return self.fixed_weights.to(dtype=losses.dtype, device=losses.device).clone()
