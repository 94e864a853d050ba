"""GradVac: raise the cosine between task gradients towards an EMA target, on the Gramian."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from .base import Weighting, register, stream_seed

__all__ = ["GradVac"]

#: Added to ``sqrt(1 - φ̂²)`` in the denominator of the correction (keeps it finite when ``φ̂ = 1``).
EPS = 1e-8


@register
class GradVac(Weighting):
    """GradVac (Gradient Vaccine): pull each pair's gradient cosine up to a running target.

    For each task ``i`` and each other task ``j`` (in a random order per ``i``), with ``φ_ij`` the
    cosine between the (already corrected) ``g_i`` and the original ``g_j`` and ``φ̂_ij`` its
    target: if ``φ_ij < φ̂_ij``, ``g_i ← g_i + c·g_j`` with
    ``c = ‖g_i‖(φ̂_ij sqrt(1-φ_ij²) - φ_ij sqrt(1-φ̂_ij²)) / (‖g_j‖ sqrt(1-φ̂_ij²))``, which makes
    the cosine exactly ``φ̂_ij``; then ``φ̂_ij ← (1-β)φ̂_ij + β·φ_ij``. The update is the sum of the
    corrected gradients. Targets start at 0, so the first step projects conflicting gradients
    like PCGrad. Everything is computed on the Gramian (each corrected gradient is a combination
    ``Σ_k C_ik g_k`` of the originals; the weights are ``Σ_i C_ik``), in float64 on the Gramian
    divided by its largest diagonal entry (so the weights do not depend on the Gramian's scale),
    vectorised over ``i``: ``T - 1`` sequential steps.

    The visiting orders are drawn from a CPU generator seeded by ``(seed, call number)`` (the call
    counter and the targets ``φ̂`` are buffers), not from the global RNG as in torchjd. torchjd adds
    an absolute ``eps = 1e-8`` to ``‖g_i‖‖g_j‖`` and to ``‖g_j‖ sqrt(1-φ̂²)``; here the cosine is
    exact and ``1e-8`` is added to ``sqrt(1-φ̂²)`` only, so the update does not depend on the scale
    of any task's gradient, and a pair in which either gradient is zero is skipped (no
    correction, target unchanged) where torchjd would give the zero gradient a huge weight. The paper applies GradVac per
    layer or per parameter group; this is the whole-model variant (torchjd's and LibMTL's
    default).

    Reference:
        Zirui Wang, Yulia Tsvetkov, Orhan Firat, Yuan Cao, "Gradient Vaccine: Investigating and
        Improving Multi-task Optimization in Massively Multilingual Models", ICLR 2021.
        https://arxiv.org/abs/2010.05874

    Args:
        num_tasks: the number of tasks ``T``.
        beta: the EMA rate of the targets ``φ̂`` in ``[0, 1]`` (0.5 as in LibMTL and torchjd; 0
            keeps them at 0, i.e. PCGrad).
        seed: the seed of the visiting orders (an integer >= 0).
    """

    name: ClassVar[str] = "gradvac"
    requires_gramian: ClassVar[bool] = True
    properties: ClassVar[frozenset[str]] = frozenset({"nonnegative", "gramian_scale_invariant", "loss_scale_invariant"})

    step: Tensor
    targets: Tensor

    def __init__(self, num_tasks: int, *, beta: float = 0.5, seed: int = 0) -> None:
        super().__init__(num_tasks)
        ok = isinstance(beta, int | float) and not isinstance(beta, bool) and 0.0 <= beta <= 1.0
        if not ok:
            raise ValueError(f"GradVac: beta={beta!r} must be a number in [0, 1], e.g. beta=0.5")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"GradVac: seed={seed!r} must be an integer >= 0, e.g. seed=0")
        self.beta = beta
        self.seed = seed
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("targets", torch.zeros(num_tasks, num_tasks, dtype=torch.float64))

    def orders(self) -> Tensor:
        """``[T, T-1]``: row ``i`` is the order in which task ``i`` visits the other tasks this call."""
        t = self.num_tasks
        gen = torch.Generator(device="cpu")
        gen.manual_seed(stream_seed(self.seed, int(self.step)))
        keys = torch.rand(t, t, generator=gen, dtype=torch.float64)
        keys.diagonal().fill_(2.0)  # every task visits itself last, i.e. never
        return keys.argsort(dim=1)[:, : t - 1]

    def forward(self, losses: Tensor, gramian: Tensor | None = None) -> Tensor:
        """The GradVac weights ``[T]`` (>= 1 each); updates the targets ``φ̂``."""
        self._check_inputs(losses, gramian)
        assert gramian is not None
        t = self.num_tasks
        g = gramian.detach().to(device="cpu", dtype=torch.float64)
        g = torch.nan_to_num(0.5 * (g + g.T), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(g.diagonal().max())
        if top > 0:
            g = g / top
        sq_norms = g.diagonal().clamp_min(0.0)
        norms = sq_norms.sqrt()
        targets = self.targets.detach().to(device="cpu", dtype=torch.float64)
        orders = self.orders()  # [T, T-1]; each pair (i, j) is visited once, so everything that
        # depends only on the pair is gathered up front and the targets are written at the end
        nj_all, nj2_all, gj_all = norms[orders], sq_norms[orders], g[orders]
        tg_all = targets.gather(1, orders)
        st_all = (1.0 - tg_all * tg_all).clamp_min(0.0).sqrt()
        den_all = nj_all * (st_all + EPS)
        dots = g.clone()  # dots[i, j] = g_i^PC · g_j, with g_i^PC = Σ_k coef[i, k] g_k
        sq = sq_norms.clone()  # ‖g_i^PC‖²
        flat = (torch.arange(t).unsqueeze(1) * t + orders).unbind(1)  # positions of (i, order[i, k]) in dots
        cols = zip(
            flat,
            nj_all.unbind(1),
            nj2_all.unbind(1),
            tg_all.unbind(1),
            st_all.unbind(1),
            den_all.unbind(1),
            gj_all.unbind(1),
            strict=True,
        )
        phis, ws = [], []
        for idx, nj, nj2, tg, st, den, gj in cols:
            dot = dots.take(idx)
            ni = sq.sqrt()
            both = ni * nj
            valid = both > 0
            phi = torch.where(valid, dot / torch.where(valid, both, 1.0), 0.0).clamp_(-1.0, 1.0)
            w = ni * (tg * (1.0 - phi * phi).clamp_min_(0.0).sqrt() - phi * st) / den
            w = torch.where(valid & (phi < tg), w, 0.0)
            dots.addcmul_(w.unsqueeze(1), gj)
            sq = (sq + w * (2.0 * dot + w * nj2)).clamp_min_(0.0)
            phis.append(torch.where(valid, phi, tg))
            ws.append(w)
        coef = torch.eye(t, dtype=torch.float64)
        if t > 1:
            coef.scatter_add_(1, orders, torch.stack(ws, dim=1))
            new = torch.stack(phis, dim=1)
            targets = targets.scatter(1, orders, tg_all + self.beta * (new - tg_all))
        self.targets.copy_(targets)
        self.step.add_(1)
        return coef.sum(dim=0).to(dtype=losses.dtype, device=losses.device)
