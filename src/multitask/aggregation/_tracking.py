"""Helpers shared by the Jacobian aggregators: scale-safe Gramians and norms, lazily sized buffers."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["gramian64", "resize_lazy_buffers", "row_norms64"]

#: Columns per block when a Gramian is accumulated in float64 (caps the temporary copy).
_BLOCK = 1 << 18


def gramian64(rows: Tensor, *, exact: bool = True) -> Tensor:
    """``G = RRᵀ`` of ``rows`` ``[T, P]``, returned in float64.

    With ``exact``, the products are accumulated in float64 (in blocks of columns, so the
    temporary copy stays small), which keeps near rank-deficient Gramians accurate; otherwise in
    ``R``'s dtype (at least float32), which is faster (float64 is slow on most GPUs) and enough when
    only ``G``'s action matters. Entries whose products would overflow or underflow the working
    dtype (beyond about ``1e±19`` in float32) are handled by rescaling ``R`` by its largest entry
    first. Non-finite entries of ``R`` give a non-finite ``G``.
    """
    p = rows.shape[1]
    dtype = torch.float64 if exact else torch.promote_types(rows.dtype, torch.float32)
    gram = _accumulate(rows.detach(), dtype, 1.0)
    if p == 0:
        return gram
    finite = bool(torch.isfinite(gram).all())
    empty = gram.diagonal() == 0
    if finite and not (bool(empty.any()) and bool((rows.detach()[empty] != 0).any())):
        return gram  # no overflow, and no non-zero row whose squares all underflowed
    scale = float(rows.detach().abs().amax())
    if scale == 0.0 or not math.isfinite(scale):
        return gram  # a zero matrix, or inf/NaN in R
    return _accumulate(rows.detach(), dtype, scale) * (scale * scale)


def _accumulate(rows: Tensor, dtype: torch.dtype, scale: float) -> Tensor:
    out = torch.zeros(rows.shape[0], rows.shape[0], dtype=torch.float64, device=rows.device)
    for lo in range(0, rows.shape[1], _BLOCK):
        block = rows[:, lo : lo + _BLOCK].to(dtype)
        if scale != 1.0:
            block = block / scale
        out += (block @ block.T).to(torch.float64)
    return out


def row_norms64(rows: Tensor) -> Tensor:
    """Euclidean norms of the rows of ``[T, P]`` ``rows``, computed in float64 (no overflow or underflow)."""
    norms: Tensor = torch.linalg.vector_norm(rows.detach(), dim=1, dtype=torch.float64)
    return norms


def resize_lazy_buffers(module: nn.Module, state_dict: dict[str, Any], prefix: str, names: tuple[str, ...]) -> None:
    """Give each buffer in ``names`` the shape and dtype saved in ``state_dict`` before it is loaded.

    For ``[T, P]`` buffers sized on the first call (``P`` is unknown at construction and they start
    empty): call it from ``_load_from_state_dict`` so that a fresh instance accepts a checkpoint
    taken after the first call, and a used one accepts an empty (never called) one.
    """
    for name in names:
        saved = state_dict.get(prefix + name)
        current = getattr(module, name)
        if isinstance(saved, Tensor) and isinstance(current, Tensor) and saved.shape != current.shape:
            setattr(module, name, torch.empty(saved.shape, dtype=saved.dtype, device=current.device))
