"""Aligned-MTL: align the principal components of the task gradients (Gramian eigendecomposition)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, register

__all__ = ["ALIGNED_MTL_SCALE_MODES", "AlignedMTL"]

#: How :class:`AlignedMTL` picks the scale of the aligned gradients.
ALIGNED_MTL_SCALE_MODES: tuple[str, ...] = ("min", "median", "rmse")


@register
class AlignedMTL(Weighting):
    """Aligned-MTL: make the task gradients orthogonal with equal norms, then combine them.

    With the eigendecomposition ``G = V Λ Vᵀ`` of the Gramian (rank ``r``: eigenvalues above
    ``λ_max·T·eps`` of the input's dtype, as in the authors' code and torchjd), the balance
    transformation ``B = sqrt(σ)·V_r Λ_r^{-1/2} V_rᵀ`` maps the gradients ``J`` to aligned ones
    ``Ĵ = B J`` whose Gramian is ``σ·V_r V_rᵀ``: orthogonal, all of norm ``sqrt(σ)`` (the
    condition number of the linear system is 1). The update is ``Ĵᵀω = Jᵀ(Bω)``, so the weights
    are ``w = Bω`` with ``ω`` the task preferences. ``σ`` is the smallest kept eigenvalue
    (``scale_mode="min"``, the paper's choice), their (lower) median (``"median"``) or their mean
    (``"rmse"``, as in the original code). The weights do not change when ``G`` is multiplied by a
    constant. With a zero Gramian ``B`` is the identity.

    Scale: ``ω`` defaults to all ones (the paper's sum of the aligned gradients); torchjd's
    ``AlignedMTL`` defaults to ``1/T`` and returns ``1/T`` times this update.

    Reference:
        Dmitry Senushkin, Nikolay Patakin, Arseny Kuznetsov, Anton Konushin, "Independent
        Component Alignment for Multi-Task Learning", CVPR 2023. https://arxiv.org/abs/2305.19000

    Args:
        num_tasks: the number of tasks ``T``.
        pref_vector: the task preferences ``ω`` (``T`` finite numbers >= 0, not all zero);
            ``None`` means all ones.
        scale_mode: ``"min"``, ``"median"`` or ``"rmse"`` (see above).
    """

    name: ClassVar[str] = "aligned_mtl"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset(
        {"permutation_equivariant", "stateless", "gramian_scale_invariant", "loss_scale_invariant"}
    )

    def __init__(
        self, num_tasks: int, *, pref_vector: tuple[float, ...] | None = None, scale_mode: str = "min"
    ) -> None:
        super().__init__(num_tasks)
        if pref_vector is not None:
            try:
                values = [float(v) for v in pref_vector]
            except (TypeError, ValueError):
                raise ValueError(
                    f"AlignedMTL: pref_vector={pref_vector!r} must be a sequence of {num_tasks} numbers, "
                    f"e.g. pref_vector={tuple([1.0] * num_tasks)}"
                ) from None
            if len(values) != num_tasks:
                raise ValueError(
                    f"AlignedMTL: pref_vector={tuple(pref_vector)!r} has {len(values)} entries; expected one per "
                    f"task ({num_tasks})"
                )
            if any(not math.isfinite(v) or v < 0 for v in values) or not any(v > 0 for v in values):
                raise ValueError(
                    f"AlignedMTL: pref_vector={tuple(pref_vector)!r} must be finite, >= 0 and not all zero, "
                    f"e.g. pref_vector={tuple([1.0] * num_tasks)}"
                )
            pref_vector = tuple(values)
        if scale_mode not in ALIGNED_MTL_SCALE_MODES:
            raise ValueError(
                f"AlignedMTL: scale_mode={scale_mode!r} is not supported; use one of "
                f"{', '.join(repr(m) for m in ALIGNED_MTL_SCALE_MODES)}"
            )
        self.pref_vector = pref_vector
        self.scale_mode = scale_mode

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """The weights ``B ω`` ``[T]`` of the aligned gradients."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        t = self.num_tasks
        pref = (
            torch.ones(t, dtype=torch.float64)
            if self.pref_vector is None
            else torch.tensor(self.pref_vector, dtype=torch.float64)
        )
        g = gramian.detach().to(device="cpu", dtype=torch.float64)
        g = torch.nan_to_num(0.5 * (g + g.T), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(g.diagonal().abs().max())
        if top > 0:
            g = g / top  # the weights are scale-invariant; this keeps eigh away from under/overflow
        eigvals, eigvecs = torch.linalg.eigh(g)
        eps = torch.finfo(gramian.dtype).eps if gramian.dtype.is_floating_point else torch.finfo(torch.float32).eps
        kept = eigvals > float(eigvals.max()) * t * eps
        if not bool(kept.any()):
            return pref.to(dtype=losses.dtype, device=losses.device)
        lam, vecs = eigvals[kept], eigvecs[:, kept]
        if self.scale_mode == "min":
            sigma = lam.min()
        elif self.scale_mode == "median":
            sigma = lam.sort().values[(lam.numel() - 1) // 2]
        else:
            sigma = lam.mean()
        balance = (vecs * (sigma / lam).sqrt()) @ vecs.T
        weights: Tensor = balance @ pref
        return weights.to(dtype=losses.dtype, device=losses.device)
