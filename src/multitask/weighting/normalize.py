"""Gradient normalisation (Sener & Koltun): a diagonal rescaling of the task gradients."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, as_weights, register

__all__ = ["NORMALIZE_MODES", "NormalizeGradients"]

#: The normalisations of Sener & Koltun's code: none, g/||g||, g/L, g/(L·||g||).
NORMALIZE_MODES: tuple[str, ...] = ("none", "l2", "loss", "loss+")

_NEEDS_GRAMIAN = frozenset({"l2", "loss+"})


@register
class NormalizeGradients(Weighting):
    """Normalise each task gradient (by its norm, its loss, or both): a first stage for chain().

    Returns ``d`` with ``d_t`` the factor that rescales task ``t``'s gradient: ``g_t -> d_t g_t``.
    The modes are those of Sener & Koltun's code (``gradient_normalizers``):

    * ``"none"``: ``d_t = 1``;
    * ``"l2"``: ``d_t = 1 / ||g_t||`` (unit-norm gradients; ``||g_t|| = sqrt(G_tt)``);
    * ``"loss"``: ``d_t = 1 / L_t``;
    * ``"loss+"``: ``d_t = 1 / (L_t · ||g_t||)``.

    On its own it is a weighting (the update is the sum of the normalised gradients); its use is
    as the first stage of a chain, which hands the next stage the Gramian of the rescaled
    gradients ``D G D`` and multiplies the final weights by ``d``, so that
    ``create_weighting("normalize_gradients+mgda", T, normalize_gradients={"mode": "l2"})`` is
    MGDA run on normalised gradients, as in the paper's experiments.

    Guards (never returning inf or NaN): a zero gradient gets ``d_t = 0`` in the ``"l2"`` and
    ``"loss+"`` modes (its direction is undefined; it contributes nothing either way); the losses
    are floored at ``1e-12 · max_s L_s`` (and at the smallest normal float) in the ``"loss"``
    modes, which assume positive losses; a negative loss raises a ValueError there.
    ``needs_gramian()`` is False for ``"none"`` and ``"loss"``, so the engine then computes no
    Gramian for this stage.

    Reference:
        Ozan Sener, Vladlen Koltun, "Multi-Task Learning as Multi-Objective Optimization",
        NeurIPS 2018. https://arxiv.org/abs/1810.04650

    Args:
        num_tasks: the number of tasks ``T``.
        mode: one of ``"none"``, ``"l2"``, ``"loss"``, ``"loss+"``.
    """

    name: ClassVar[str] = "normalize_gradients"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset({"nonnegative", "permutation_equivariant", "stateless"})

    def __init__(self, num_tasks: int, *, mode: str = "l2") -> None:
        super().__init__(num_tasks)
        if mode not in NORMALIZE_MODES:
            raise ValueError(
                f"NormalizeGradients: mode={mode!r} is not supported; use one of "
                f"{', '.join(repr(m) for m in NORMALIZE_MODES)}, e.g. mode='l2'"
            )
        self.mode = mode

    def needs_gramian(self) -> bool:
        """Only the norm-based modes (``"l2"``, ``"loss+"``) need the Gramian."""
        return self.mode in _NEEDS_GRAMIAN

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """The rescaling factors ``d`` ``[T]`` (non-negative)."""
        if losses.dim() != 1 or losses.shape[0] != self.num_tasks:
            raise ValueError(
                f"NormalizeGradients: losses has shape {tuple(losses.shape)}; expected ({self.num_tasks},), "
                "one loss per task"
            )
        if self.needs_gramian() or gramian is not None:
            self._check_inputs(losses, gramian)
        d = torch.ones(self.num_tasks, dtype=torch.float64, device=losses.device)
        if self.mode in ("l2", "loss+"):
            assert gramian is not None
            norms = gramian.detach().diagonal().to(torch.float64).clamp_min(0).sqrt()
            d = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
        if self.mode in ("loss", "loss+"):
            lvals = losses.detach().to(torch.float64)
            if bool((lvals < 0).any()):
                raise ValueError(
                    f"NormalizeGradients(mode={self.mode!r}): the losses {lvals.tolist()} include a negative "
                    "value; loss normalisation assumes positive losses (use mode='l2' instead)"
                )
            floor = (1e-12 * lvals.max()).clamp_min(torch.finfo(losses.dtype).tiny)
            d = d / torch.maximum(lvals, floor)
        return as_weights(d.clamp(max=torch.finfo(losses.dtype).max), losses)
