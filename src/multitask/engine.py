"""The engine: the only module that calls autograd.

One training step is: per-task losses -> (if the weighting needs it) the Gramian ``G = J Jᵀ`` of
the task gradients -> weights ``w = weighting(losses, G)`` -> one ordinary backward of
``Σ_t w_t L_t + regularizer``.

Grad modes:
    ``"exact"``: ``G`` of the gradients with respect to the shared parameters.
    ``"features"``: ``G`` of the gradients with respect to the shared features (the trunk's
        output; Sener & Koltun, NeurIPS 2018, "MGDA-UB"), much cheaper: no extra pass through
        the trunk.

Tasks without a labelled row in the batch (``present[t] == False``) get weight 0; the weighting
sees their last observed loss in place of the missing one, so no NaN reaches any method or state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .weighting.base import Weighting

__all__ = ["GRAD_MODES", "Engine", "GradMode", "NonFiniteLossError", "StepInfo", "gramian"]

GradMode = Literal["exact", "features"]
GRAD_MODES: tuple[str, ...] = ("exact", "features")


class NonFiniteLossError(FloatingPointError):
    """A task loss became NaN or infinite; names the task(s) and the step."""

    def __init__(self, message: str, tasks: list[str], step: int) -> None:
        super().__init__(message)
        self.tasks = tasks
        self.step = step


@dataclass
class StepInfo:
    """What one engine step computed, exposed to callbacks.

    Attributes:
        losses: detached per-task losses ``[T]`` (last observed value for absent tasks).
        weights: detached task weights ``[T]`` actually used (0 for absent tasks).
        present: ``[T]`` bool, tasks with at least one labelled row in the batch.
        gramian: ``[T, T]`` Gramian of task gradients, when it was computed.
    """

    losses: Tensor
    weights: Tensor
    present: Tensor
    gramian: Tensor | None = None

    @property
    def grad_norms(self) -> Tensor | None:
        """Per-task gradient norms ``sqrt(G_tt)`` (None without a Gramian)."""
        if self.gramian is None:
            return None
        return self.gramian.diagonal().clamp_min(0).sqrt()

    @property
    def cosines(self) -> Tensor | None:
        """Pairwise cosine similarity of task gradients (None without a Gramian)."""
        if self.gramian is None:
            return None
        n = self.grad_norms
        assert n is not None
        denom = torch.outer(n, n).clamp_min(torch.finfo(self.gramian.dtype).tiny)
        return self.gramian / denom


def gramian(losses: Tensor, inputs: Sequence[Tensor], *, retain_graph: bool = True) -> Tensor:
    """``G = J Jᵀ`` where row ``t`` of ``J`` is the gradient of ``losses[t]`` w.r.t. ``inputs``.

    Uses one batched vector-Jacobian product (``is_grads_batched``) and falls back to a loop of
    ``T`` products for operations that cannot be batched. Computed in float32 or wider.
    """
    t = losses.shape[0]
    eye = torch.eye(t, dtype=losses.dtype, device=losses.device)
    inputs = [p for p in inputs if p.requires_grad]
    if not inputs:
        raise ValueError("gramian: none of the given tensors requires grad")
    try:
        rows = torch.autograd.grad(
            losses, inputs, grad_outputs=eye, retain_graph=retain_graph, is_grads_batched=True, allow_unused=True
        )
    except RuntimeError:
        per_task = [torch.autograd.grad(losses[i], inputs, retain_graph=True, allow_unused=True) for i in range(t)]
        rows = tuple(
            torch.stack([torch.zeros_like(p) if g[j] is None else g[j] for g in per_task])  # type: ignore[misc]
            for j, p in enumerate(inputs)
        )
    acc_dtype = torch.promote_types(losses.dtype, torch.float32)
    g = torch.zeros(t, t, dtype=acc_dtype, device=losses.device)
    for r in rows:
        if r is None:
            continue
        flat = r.reshape(t, -1).to(acc_dtype)
        g = g + flat @ flat.T
    return g


class Engine:
    """Turns per-task losses into one backward pass, weighted by a :class:`Weighting`.

    Args:
        weighting: the task-weighting method.
        grad_mode: "exact" (Gramian over shared parameters) or "features" (over shared features).
    """

    def __init__(self, weighting: Weighting, *, grad_mode: GradMode = "exact") -> None:
        if grad_mode not in GRAD_MODES:
            from .registry import UnknownNameError, unknown_name_message

            raise UnknownNameError(unknown_name_message("grad_mode", str(grad_mode), list(GRAD_MODES)))
        self.weighting = weighting
        self.grad_mode = grad_mode
        self.last_losses = torch.ones(weighting.num_tasks, dtype=torch.float64)

    def state_dict(self) -> dict[str, Tensor]:
        return {"last_losses": self.last_losses.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.last_losses = state["last_losses"].clone().to(torch.float64)

    def backward(
        self,
        losses: Tensor,
        shared_params: Sequence[Tensor],
        *,
        present: Tensor | None = None,
        features: Tensor | None = None,
        task_names: Sequence[str] | None = None,
        step: int = 0,
    ) -> StepInfo:
        """Weight the task losses and backpropagate once; gradients accumulate in ``.grad``.

        Args:
            losses: ``[T]`` per-task losses still attached to the graph.
            shared_params: the shared parameters (Gramian in "exact" mode).
            present: ``[T]`` bool; absent tasks get weight 0 (default: all present).
            features: the shared representation (required in "features" mode).
            task_names: names used in error messages.
            step: global step, used in error messages.

        Raises:
            NonFiniteLossError: a present task's loss is NaN or infinite.
        """
        t = self.weighting.num_tasks
        if losses.dim() != 1 or losses.shape[0] != t:
            raise ValueError(f"engine: losses has shape {tuple(losses.shape)}; expected ({t},)")
        if present is None:
            present = torch.ones(t, dtype=torch.bool, device=losses.device)
        detached = losses.detach()
        finite = torch.isfinite(detached)
        bad = (~finite & present).nonzero(as_tuple=True)[0].tolist()
        if bad:
            names = [task_names[i] if task_names else str(i) for i in bad]
            vals = [float(detached[i]) for i in bad]
            raise NonFiniteLossError(
                f"loss of task(s) {names} became {vals} at step {step}; lower the learning rate, "
                "check the targets of these tasks, or use a weighting that normalises loss scales",
                names,
                step,
            )
        last = self.last_losses.to(detached.device)
        seen = torch.where(present, detached.to(torch.float64), last)
        self.last_losses = seen.detach().cpu()
        seen = seen.to(detached.dtype)

        g: Tensor | None = None
        if self.weighting.requires_gramian:
            if self.grad_mode == "features":
                if features is None:
                    raise ValueError("engine: grad_mode='features' needs the model's shared features")
                g = gramian(losses, [features])
            else:
                g = gramian(losses, list(shared_params))
        weights = self.weighting(seen, g)
        if weights.shape != (t,):
            raise ValueError(f"{type(self.weighting).__name__} returned weights of shape {tuple(weights.shape)}")
        weights = torch.where(present, weights, torch.zeros_like(weights))
        objective = (weights * losses).sum()
        reg = self.weighting.regularizer()
        if reg is not None:
            objective = objective + reg
        torch.autograd.backward(objective)
        return StepInfo(losses=seen.detach(), weights=weights.detach(), present=present.detach(), gramian=g)
