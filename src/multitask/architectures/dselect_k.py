"""DSelect-k: mixture of experts with differentiable top-k selection gates."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..tasks import Task
from .base import ARCHITECTURES, check_dropout, check_widths, flat_size, make_heads
from .mmoe import MMoE, experts_of

__all__ = ["DSelectGate", "DSelectK", "dselect_k", "smooth_step"]


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """0 below ``-γ/2``, 1 above ``γ/2``, the cubic ``-2t³/γ³ + 3t/(2γ) + 1/2`` in between (C¹)."""
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t), torch.where(t >= gamma / 2, torch.ones_like(t), cubic))


class DSelectGate(nn.Module):
    """Selects (a convex mix of) ``k`` experts out of ``E`` through binary codes and a smooth step.

    Each selector ``i`` has ``m = ⌈log2 E⌉`` logits ``z_i``; expert ``e`` (binary code ``c_e``) gets
    ``r_i(e) = Π_j S(z_ij)^{c_ej} (1 − S(z_ij))^{1 − c_ej}``, which sums to one over the ``2^m``
    codes and becomes one-hot as the smooth step ``S`` saturates. The gate is ``Σ_i softmax(w)_i r_i``.
    When ``E`` is not a power of two the weights of the unused codes are dropped and the rest
    renormalised. ``per_example=True`` computes ``z`` and ``w`` from the input (the paper's
    per-example gate); otherwise they are parameters (static gate).

    Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong, Chi, "DSelect-k: Differentiable
    Selection in the Mixture of Experts with Applications to Multi-Task Learning", NeurIPS 2021.
    https://arxiv.org/abs/2106.03760
    """

    def __init__(self, in_features: int, experts: int, *, k: int, gamma: float, per_example: bool) -> None:
        super().__init__()
        self.experts, self.k, self.gamma, self.per_example = experts, k, gamma, per_example
        self.m = max(1, math.ceil(math.log2(experts)))
        codes = torch.tensor([[(e >> j) & 1 for j in range(self.m)] for e in range(2**self.m)], dtype=torch.float32)
        self.register_buffer("codes", codes, persistent=False)
        if per_example:
            self.z = nn.Linear(in_features, k * self.m)
            self.w = nn.Linear(in_features, k)
        else:
            self.z_param = nn.Parameter(torch.empty(k, self.m).uniform_(-gamma / 2, gamma / 2))
            self.w_param = nn.Parameter(torch.zeros(k))

    def selectors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``r`` ``[B, k, E]`` (each selector's distribution) and the selector weights ``[B, k]``."""
        b = x.shape[0]
        if self.per_example:
            z = self.z(x.flatten(1)).view(b, self.k, self.m)
            w = torch.softmax(self.w(x.flatten(1)), dim=-1)
        else:
            z = self.z_param.expand(b, self.k, self.m)
            w = torch.softmax(self.w_param, dim=-1).expand(b, self.k)
        s = smooth_step(z, self.gamma).unsqueeze(-2)  # [B, k, 1, m]
        codes: Tensor = self.codes  # type: ignore[assignment]
        r = torch.where(codes.bool(), s, 1 - s).prod(-1)[..., : self.experts]  # [B, k, E]
        r = r / r.sum(-1, keepdim=True).clamp_min(1e-12)
        return r, w

    def forward(self, x: Tensor) -> Tensor:
        r, w = self.selectors(x)
        return torch.einsum("bk,bke->be", w, r)

    def entropy(self, x: Tensor | None = None) -> Tensor:
        """Mean entropy of the selectors (0 once every selector picks one expert)."""
        if x is None:
            if self.per_example:
                raise ValueError("DSelectGate.entropy: a per-example gate needs the input x")
            x = self.z_param.new_zeros(1, 1)
        r, _ = self.selectors(x)
        return -(r * r.clamp_min(1e-12).log()).sum(-1).mean()


class DSelectK(MMoE):
    """MMoE with DSelect-k gates; the regulariser adds ``strength`` times the static gates' entropy.

    Hazimeh et al., NeurIPS 2021. https://arxiv.org/abs/2106.03760
    """

    def __init__(
        self,
        experts: Sequence[nn.Module],
        gates: dict[str, nn.Module],
        heads: dict[str, nn.Module],
        *,
        strength: float = 0.0,
    ) -> None:
        super().__init__(experts, gates, heads)
        if not strength >= 0:
            raise ValueError(f"DSelectK: strength={strength!r} must be >= 0")
        self.strength = float(strength)

    def regularizer(self) -> Tensor | None:
        gates = [g for g in self.gates.values() if isinstance(g, DSelectGate) and not g.per_example]
        if self.strength == 0.0 or not gates:
            return None
        return self.strength * torch.stack([g.entropy() for g in gates]).sum()


@ARCHITECTURES.register("dselect_k")
def dselect_k(
    *,
    input_shape: tuple[int, ...],
    tasks: list[Task],
    experts: int = 8,
    k: int = 2,
    gamma: float = 1.0,
    per_example: bool = False,
    entropy: float = 0.0,
    expert_hidden: Sequence[int] = (256, 128),
    head_hidden: Sequence[int] = (64,),
    activation: str = "relu",
    dropout: float = 0.0,
) -> DSelectK:
    """Mixture of experts with DSelect-k gates: each task picks k experts, differentiably (Hazimeh et al. 2021).

    Hazimeh et al., NeurIPS 2021. https://arxiv.org/abs/2106.03760

    Args:
        input_shape: shape of one input sample (flattened).
        tasks: the tasks; one gate and one tower each.
        experts: number of experts.
        k: number of selectors per gate (at most k experts per task once converged).
        gamma: width of the smooth step's transition.
        per_example: gates computed from the input (True) or static per task (False).
        entropy: weight of the static gates' entropy penalty (pushes selections to be sparse).
        expert_hidden: widths of each expert's layers.
        head_hidden: widths of each task tower's hidden layers.
        activation: "relu", "gelu", "tanh" or "silu".
        dropout: dropout after each hidden layer, in [0, 1).
    """
    expert_hidden = check_widths("dselect_k", "expert_hidden", expert_hidden, allow_empty=False)
    head_hidden = check_widths("dselect_k", "head_hidden", head_hidden)
    check_dropout("dselect_k", dropout)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"dselect_k: k={k!r} must be a positive integer")
    if not gamma > 0:
        raise ValueError(f"dselect_k: gamma={gamma!r} must be > 0")
    n_in = flat_size(input_shape)
    ex = experts_of(n_in, experts, expert_hidden, activation, dropout, "dselect_k")
    gates: dict[str, nn.Module] = {
        t.name: DSelectGate(n_in, experts, k=k, gamma=gamma, per_example=per_example) for t in tasks
    }
    heads = make_heads(tasks, expert_hidden[-1], head_hidden, activation=activation, dropout=dropout)
    return DSelectK(ex, gates, heads, strength=entropy)
