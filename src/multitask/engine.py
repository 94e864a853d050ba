"""The engine: the only module that calls autograd.

One training step is: per-task losses -> (if the method needs it) the task Jacobian ``J`` or its
Gramian ``G = J Jᵀ`` -> task weights ``w`` (a :class:`~multitask.weighting.Weighting`) or an
update vector (an :class:`~multitask.aggregation.Aggregator`) -> the parameters' ``.grad``.

Grad modes (``grad_mode``):
    ``"exact"``: ``J`` and ``G`` of the task gradients with respect to the shared parameters.
        When the model exposes its shared features ``Z`` (all task outputs depend on the shared
        parameters only through ``Z``), the engine takes ``∂L_t/∂Z`` with one batched backward
        through the heads, then ``J`` with one batched backward through the trunk (``T`` rows,
        chunked by ``chunk_size``); the shared gradient is then ``wᵀJ`` (no further pass through
        the trunk) and the heads get one backward of ``Σ_t w_t L_t`` that stops at ``Z``.
    ``"features"``: ``G`` of the gradients with respect to the shared features ``Z`` (Sener &
        Koltun, NeurIPS 2018, "MGDA-UB"): the batched backward through the heads only, then one
        ordinary backward of ``Σ_t w_t L_t``. Much cheaper; an approximation of the exact method.
    ``"every:K"`` / ``"features+every:K"``: amortised: the Gramian and the weights are recomputed
        every ``K`` steps and reused in between (plain backward of ``Σ_t w_t L_t``). Loss-based
        methods ignore ``K``: their state is updated every step.

Missing labels: a task without a labelled row in the batch (``present[t] == False``) gets weight 0.
Loss-based and stateful methods see its last observed loss in place of the missing one (and a
zero row of the Gramian); a gradient method declared ``stateless`` is applied to the present
tasks only, which is exactly the method on the tasks the batch has (a zero gradient row would
otherwise distort methods such as MGDA, whose min-norm point it would become).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .aggregation.base import Aggregator
from .distributed import Distributed
from .weighting.base import Weighting

__all__ = [
    "GRAD_MODES",
    "Engine",
    "GradMode",
    "NonFiniteLossError",
    "StepInfo",
    "gramian",
    "jacobian",
    "parse_grad_mode",
]

GradMode = Literal["exact", "features"]
GRAD_MODES: tuple[str, ...] = ("exact", "features")
_GRAD_MODE_RE = re.compile(r"^(?:(exact|features)(?:\+every:(\d+))?|every:(\d+))$")


class NonFiniteLossError(FloatingPointError):
    """A task loss became NaN or infinite; names the task(s) and the step."""

    def __init__(self, message: str, tasks: list[str], step: int) -> None:
        super().__init__(message)
        self.tasks = tasks
        self.step = step


def parse_grad_mode(spec: str) -> tuple[GradMode, int]:
    """``"exact"`` -> ("exact", 1); ``"features"``; ``"every:10"`` -> ("exact", 10); ``"features+every:10"``."""
    m = _GRAD_MODE_RE.match(str(spec).strip())
    if not m:
        raise ValueError(
            f"grad_mode={spec!r} is not valid; use 'exact', 'features', 'every:K' (exact Gramian every K "
            "steps) or 'features+every:K'"
        )
    mode, every_a, every_b = m.groups()
    every = int(every_a or every_b or 1)
    if every < 1:
        raise ValueError(f"grad_mode={spec!r}: K must be >= 1")
    return ("exact" if mode is None else mode), every  # type: ignore[return-value]


@dataclass
class StepInfo:
    """What one engine step computed, exposed to callbacks.

    Attributes:
        losses: detached per-task losses ``[T]`` (last observed value for absent tasks).
        weights: detached task weights ``[T]`` (0 for absent tasks; ones for aggregators, whose
            heads get their own unweighted loss gradient).
        present: ``[T]`` bool, tasks with at least one labelled row in the batch.
        gramian: ``[T, T]`` Gramian of task gradients, when it was computed this step.
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
        n = self.gramian.diagonal().clamp_min(0).sqrt()
        denom = torch.outer(n, n).clamp_min(torch.finfo(self.gramian.dtype).tiny)
        return self.gramian / denom


def _vjp(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor],
    chunk_size: int | None,
) -> list[Tensor]:
    """Row-batched vector-Jacobian products: ``result[j][r] = Σ_o ⟨grad_outputs[o][r], ∂outputs[o]/∂inputs[j]⟩``.

    Rows are processed ``chunk_size`` at a time with ``is_grads_batched`` (vmap over the backward
    graph); operations that cannot be batched fall back to one backward per row.
    """
    rows = grad_outputs[0].shape[0]
    step = rows if not chunk_size else max(1, int(chunk_size))
    parts: list[list[Tensor]] = [[] for _ in inputs]
    for lo in range(0, rows, step):
        go = [g[lo : lo + step] for g in grad_outputs]
        try:
            res = torch.autograd.grad(
                list(outputs),
                list(inputs),
                grad_outputs=go,
                retain_graph=True,
                is_grads_batched=True,
                allow_unused=True,
            )
        except RuntimeError:
            per_row = [
                torch.autograd.grad(
                    list(outputs), list(inputs), grad_outputs=[g[r] for g in go], retain_graph=True, allow_unused=True
                )
                for r in range(go[0].shape[0])
            ]
            res = tuple(
                torch.stack([torch.zeros_like(p) if pr[j] is None else pr[j] for pr in per_row])  # type: ignore[misc]
                for j, p in enumerate(inputs)
            )
        for j, (r, p) in enumerate(zip(res, inputs, strict=True)):
            parts[j].append(torch.zeros((go[0].shape[0], *p.shape), dtype=p.dtype, device=p.device) if r is None else r)
    return [torch.cat(p) if len(p) > 1 else p[0] for p in parts]


def jacobian(
    losses: Tensor,
    inputs: Sequence[Tensor],
    *,
    features: Tensor | None = None,
    chunk_size: int | None = None,
) -> list[Tensor]:
    """Per-input Jacobians ``[T, *input.shape]`` of the task ``losses`` with respect to ``inputs``.

    With ``features`` (a tensor through which the losses depend on ``inputs``), the rows are
    computed in two batched backward passes: heads (losses -> features), then trunk.
    """
    t = losses.shape[0]
    eye = torch.eye(t, dtype=losses.dtype, device=losses.device)
    if features is None:
        return _vjp([losses], inputs, [eye], chunk_size)
    (dz,) = _vjp([losses], [features], [eye], chunk_size)
    return _vjp([features], inputs, [dz], chunk_size)


def _gramian_of(rows: Sequence[Tensor], t: int) -> Tensor:
    acc_dtype = torch.promote_types(rows[0].dtype, torch.float32) if rows else torch.float32
    g = torch.zeros(t, t, dtype=acc_dtype, device=rows[0].device if rows else None)
    for r in rows:
        flat = r.reshape(t, -1).to(acc_dtype)
        g = g + flat @ flat.T
    return g


def gramian(losses: Tensor, inputs: Sequence[Tensor], *, features: Tensor | None = None) -> Tensor:
    """``G = J Jᵀ`` where row ``t`` of ``J`` is the gradient of ``losses[t]`` w.r.t. ``inputs``."""
    inputs = [p for p in inputs if p.requires_grad]
    if not inputs:
        raise ValueError("gramian: none of the given tensors requires grad")
    return _gramian_of(jacobian(losses, inputs, features=features), losses.shape[0])


Method = Weighting | Aggregator


@dataclass
class _TaskGrads:
    """Per-task gradients w.r.t. the shared features and the non-shared parameters.

    ``dz[t]`` is ``∂L_t/∂Z``; ``other[t][j]`` is ``∂L_t/∂other_params[j]`` (None where task ``t``
    does not reach that parameter, e.g. another task's head).
    """

    dz: Tensor
    other: list[list[Tensor | None]]


def _task_grads(losses: Sequence[Tensor], features: Tensor, other: Sequence[Tensor], present: list[bool]) -> _TaskGrads:
    """One small backward pass per present task, from its loss to ``Z`` and its own head.

    Each pass walks only the sub-graph of that task (its head and loss), so the heads are walked
    once in total, never ``T`` times each. Absent tasks get zero rows.
    """
    rows: list[Tensor] = []
    other_rows: list[list[Tensor | None]] = []
    for loss, here in zip(losses, present, strict=True):
        if not here or not loss.requires_grad:
            rows.append(torch.zeros_like(features))
            other_rows.append([None] * len(other))
            continue
        res = torch.autograd.grad(loss, [features, *other], retain_graph=True, allow_unused=True)
        rows.append(torch.zeros_like(features) if res[0] is None else res[0])
        other_rows.append(list(res[1:]))
    return _TaskGrads(torch.stack(rows), other_rows)


def _task_grads_batched(losses: Sequence[Tensor], task_features: Sequence[Tensor], present: list[bool]) -> Tensor:
    """``∂L_t/∂Z_t`` for every task from one backward pass: each head read its own alias ``Z_t``."""
    idx = [i for i, (loss, here) in enumerate(zip(losses, present, strict=True)) if here and loss.requires_grad]
    rows = [torch.zeros_like(z) for z in task_features]
    if idx:
        total = torch.stack([losses[i] for i in idx]).sum()
        grads = torch.autograd.grad(total, [task_features[i] for i in idx], retain_graph=True, allow_unused=True)
        for i, g in zip(idx, grads, strict=True):
            if g is not None:
                rows[i] = g
    return torch.stack(rows)


class Engine:
    """Turns per-task losses into parameter gradients, through a weighting or an aggregator.

    Args:
        method: a :class:`Weighting` (weights from losses and, optionally, the Gramian) or an
            :class:`Aggregator` (update vector from the Jacobian).
        grad_mode: "exact", "features", "every:K" or "features+every:K" (see the module docstring).
        chunk_size: at most this many Jacobian rows per batched backward pass through the trunk
            (caps memory); None computes all ``T`` rows at once.
        dist: the process group when training data-parallel (see :mod:`multitask.distributed`):
            every step then reduces what the method needs across the ranks, so the update equals
            single-process training on the union of the ranks' batches. ``backward`` must then get
            ``counts`` (labelled rows per task) and ``other_params``.
    """

    def __init__(
        self,
        method: Method,
        *,
        grad_mode: str = "exact",
        chunk_size: int | None = None,
        dist: Distributed | None = None,
    ) -> None:
        self.mode, self.every = parse_grad_mode(grad_mode)
        if isinstance(method, Aggregator) and self.every > 1:
            raise ValueError(
                f"grad_mode={grad_mode!r}: amortised modes reuse task weights, but {type(method).__name__} "
                "aggregates the Jacobian itself and has no weights to reuse; use 'exact' or 'features'"
            )
        if isinstance(method, Aggregator) and method.jacobian_state and self.mode == "features":
            raise ValueError(
                f"grad_mode={grad_mode!r}: {type(method).__name__} keeps running estimates of the task "
                "gradients, whose width must not change between steps; in features mode it changes with the "
                "batch size: use grad_mode='exact'"
            )
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} must be >= 1 (or None for all rows at once)")
        self.method = method
        self.grad_mode = grad_mode
        self.chunk_size = chunk_size
        self.dist = dist
        self._scale = 1.0
        t = method.num_tasks
        self.last_losses = torch.ones(t, dtype=torch.float64)
        self.cached_weights = torch.ones(t, dtype=torch.float64)
        self.steps_since_refresh = 0
        self.has_cache = False
        #: Also compute the Gramian every this many steps when the method does not (0: never), so
        #: that callbacks (e.g. :class:`multitask.callbacks.TaskRelations`) see gradient conflicts
        #: under loss-only methods too; the Trainer sets it from its callbacks' ``gramian_every``.
        self.monitor_every = 0

    @property
    def weighting(self) -> Method:
        return self.method

    def needs_gradients(self) -> bool:
        """Whether the method needs per-task gradients (Gramian or Jacobian)."""
        if isinstance(self.method, Aggregator):
            return True
        return self.method.needs_gramian()

    def state_dict(self) -> dict[str, Tensor]:
        return {
            "last_losses": self.last_losses.clone(),
            "cached_weights": self.cached_weights.clone(),
            "steps_since_refresh": torch.tensor(self.steps_since_refresh),
            "has_cache": torch.tensor(self.has_cache),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.last_losses = state["last_losses"].clone().to(torch.float64)
        if "cached_weights" in state:
            self.cached_weights = state["cached_weights"].clone().to(torch.float64)
            self.steps_since_refresh = int(state["steps_since_refresh"])
            self.has_cache = bool(state["has_cache"])

    # --- the step ----------------------------------------------------------------------------
    def backward(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_params: Sequence[Tensor],
        *,
        other_params: Sequence[Tensor] | None = None,
        present: Tensor | None = None,
        counts: Tensor | None = None,
        features: Tensor | None = None,
        task_features: Sequence[Tensor] | None = None,
        task_names: Sequence[str] | None = None,
        step: int = 0,
        loss_scale: float = 1.0,
        extra_loss: Tensor | None = None,
    ) -> StepInfo:
        """Weight or aggregate the task losses' gradients; gradients accumulate in ``.grad``.

        Args:
            losses: the ``T`` per-task losses still attached to the graph: a list of scalars
                (fastest: each task's sub-graph can be walked on its own) or a stacked ``[T]``.
            shared_params: the shared parameters.
            other_params: every other trainable parameter (task heads, the method's own
                parameters). With it and ``features``, gradient methods walk each head once and
                the trunk once (per ``T`` rows in exact mode) and write the gradients directly;
                without it, they do one more ordinary backward (same result, slower).
                Aggregators require it.
            present: ``[T]`` bool; absent tasks get weight 0 (default: all present).
            counts: ``[T]`` labelled rows per task in this batch (required under ``dist``: the
                global loss of task ``t`` is the count-weighted mean of the ranks' losses).
            features: the shared representation ``Z`` through which every task output depends on
                the shared parameters (required in "features" mode; speeds up "exact" mode).
            task_features: per-task aliases of ``features`` (``Z.view_as(Z)``), the one each head
                read (see ``MultiTaskModel.forward_task_features``): all ``∂L_t/∂Z`` then come
                from one backward pass through the heads instead of one per task.
            task_names: names used in error messages.
            step: global step, used in error messages.
            loss_scale: the mixed-precision loss scale ``S`` (``torch.amp.GradScaler``): every
                backward pass runs on ``S`` times the losses (so fp16 gradients do not underflow)
                and every gradient written is ``S`` times the true one, for the scaler to unscale;
                the method still sees the true losses and Gramian (``G / S²``, in float32).
            extra_loss: a penalty on the parameters added unweighted to the objective (e.g. the
                model's :meth:`~multitask.architectures.MultiTaskModel.regularizer`); it reaches
                no task's gradient and, depending only on the parameters, is not reduced under ``dist``.

        Raises:
            NonFiniteLossError: a present task's loss is NaN or infinite.
        """
        info = self._step(
            losses,
            shared_params,
            other_params=other_params,
            present=present,
            counts=counts,
            features=features,
            task_features=task_features,
            task_names=task_names,
            step=step,
            loss_scale=loss_scale,
        )
        if extra_loss is not None:
            self._backward_extra(extra_loss, [*shared_params, *(other_params or [])], loss_scale)
        return info

    def _backward_extra(self, extra: Tensor, params: Sequence[Tensor], loss_scale: float) -> None:
        targets = [p for p in self._model_only(params) if p.requires_grad]
        if targets and extra.requires_grad:
            torch.autograd.backward(extra * loss_scale if loss_scale != 1.0 else extra, inputs=targets)

    def _step(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_params: Sequence[Tensor],
        *,
        other_params: Sequence[Tensor] | None,
        present: Tensor | None,
        counts: Tensor | None,
        features: Tensor | None,
        task_features: Sequence[Tensor] | None,
        task_names: Sequence[str] | None,
        step: int,
        loss_scale: float,
    ) -> StepInfo:
        method = self.method
        t = method.num_tasks
        loss_list = list(losses) if not isinstance(losses, Tensor) else None
        stacked = torch.stack(loss_list) if loss_list is not None else losses
        assert isinstance(stacked, Tensor)
        if stacked.dim() != 1 or stacked.shape[0] != t:
            raise ValueError(f"engine: losses has shape {tuple(stacked.shape)}; expected ({t},)")
        if present is None:
            present = torch.ones(t, dtype=torch.bool, device=stacked.device)
        if self.dist is not None:
            if other_params is None:
                raise ValueError("engine: under torch.distributed pass other_params (every non-shared parameter)")
            stacked, loss_list, detached, present = self._globalise(stacked, loss_list, counts, present)
        else:
            detached = stacked.detach()
        present_cpu = present.cpu()
        bad = (~torch.isfinite(detached.cpu()) & present_cpu).nonzero(as_tuple=True)[0].tolist()
        if bad:
            names = [task_names[i] if task_names else str(i) for i in bad]
            vals = [float(detached[i]) for i in bad]
            raise NonFiniteLossError(
                f"loss of task(s) {names} became {vals} at step {step}; lower the learning rate, "
                "check the targets of these tasks, or use a weighting that normalises loss scales",
                names,
                step,
            )
        seen64 = torch.where(present_cpu, detached.to(torch.float64).cpu(), self.last_losses)
        self.last_losses = seen64
        seen = seen64.to(dtype=detached.dtype, device=detached.device)
        shared = [p for p in shared_params if p.requires_grad]

        model_params = [*shared, *(other_params or [])]
        if not (math.isfinite(loss_scale) and loss_scale > 0):
            raise ValueError(f"engine: loss_scale={loss_scale!r} must be a finite number > 0")
        self._scale = float(loss_scale)
        if self._scale != 1.0:
            stacked = stacked * self._scale
            loss_list = [loss * self._scale for loss in loss_list] if loss_list is not None else None

        if not self.needs_gradients():
            assert isinstance(method, Weighting)
            g = self._monitor_gramian(stacked, shared, features) if self._monitor_due(step) else None
            weights = self._weights(method, seen, None, present)
            self._weighted(method, stacked, seen, weights, model_params if self.dist is not None else None)
            return StepInfo(seen, weights.detach(), present.detach(), g)

        if isinstance(method, Weighting):
            refresh = not self.has_cache or self.steps_since_refresh >= self.every - 1
            if not refresh:
                self.steps_since_refresh += 1
                g = self._monitor_gramian(stacked, shared, features) if self._monitor_due(step) else None
                weights = torch.where(present, self.cached_weights.to(stacked), torch.zeros_like(stacked))
                self._weighted(method, stacked, seen, weights, model_params if self.dist is not None else None)
                return StepInfo(seen, weights.detach(), present.detach(), g)
            self.steps_since_refresh = 0

        if self.mode == "features" and features is None:
            raise ValueError("engine: grad_mode='features' needs the model's shared features")
        if isinstance(method, Aggregator) and other_params is None:
            raise ValueError(f"engine: {type(method).__name__} aggregates the Jacobian; pass other_params (the heads)")
        fast = features is not None and features.requires_grad and other_params is not None
        if fast:
            assert features is not None and other_params is not None
            return self._step_via_features(
                method,
                loss_list if loss_list is not None else list(stacked.unbind()),
                stacked,
                seen,
                present,
                shared,
                list(other_params),
                features,
                list(task_features) if task_features is not None else None,
                self._monitor_due(step),
            )
        # general path: batched VJPs from the stacked losses
        targets = [features] if self.mode == "features" and features is not None else shared
        rows = jacobian(stacked, targets, chunk_size=self.chunk_size)
        if isinstance(method, Aggregator):
            assert other_params is not None
            return self._aggregate_rows(
                method, rows, stacked, seen, present, shared, other_params, features, self._monitor_due(step)
            )
        g = self._global_gramian(rows, t)
        weights = self._weights(method, seen, g, present)
        self._remember(weights)
        if self.mode == "exact" and other_params is not None:
            w = weights.detach()
            for p, r in zip(shared, rows, strict=True):
                _accumulate(p, torch.tensordot(w.to(r.dtype), r, dims=1))
            self._weighted(method, stacked, seen, weights, other_params)
        else:
            self._weighted(method, stacked, seen, weights, model_params if self.dist is not None else None)
        return StepInfo(seen, weights.detach(), present.detach(), g.detach())

    # --- gradient accumulation -------------------------------------------------------------
    def start_accumulation(self) -> Accumulation:
        """Begin one optimizer step made of several micro-batches (see :class:`Accumulation`)."""
        if isinstance(self.method, Aggregator):
            raise ValueError(
                f"gradient accumulation: {type(self.method).__name__} aggregates the Jacobian itself (no task "
                "weights to apply micro-batch by micro-batch); use accumulate=1 with a larger batch or more processes"
            )
        gradients = self.needs_gradients() and (not self.has_cache or self.steps_since_refresh >= self.every - 1)
        return Accumulation(self, gradients)

    # --- paths -------------------------------------------------------------------------------
    def _step_via_features(
        self,
        method: Method,
        loss_list: list[Tensor],
        stacked: Tensor,
        seen: Tensor,
        present: Tensor,
        shared: list[Tensor],
        other: list[Tensor],
        features: Tensor,
        task_features: list[Tensor] | None = None,
        monitor: bool = False,
    ) -> StepInfo:
        """Heads walked once per task (``∂L_t/∂Z`` and head gradients), the trunk once per row.

        With ``task_features`` every ``∂L_t/∂Z`` comes from one backward pass through all heads, and
        the heads' own gradients from one more (weighted) pass through the heads only.
        """
        t = method.num_tasks
        if task_features is not None and len(task_features) == t:
            dz = _task_grads_batched(loss_list, task_features, present.tolist())
            tg = _TaskGrads(dz, [[None] * len(other) for _ in range(t)])
            heads_later = True
        else:
            tg = _task_grads(loss_list, features, other, present.tolist())
            heads_later = False
        rows = _vjp([features], shared, [tg.dz], self.chunk_size) if self.mode == "exact" else [tg.dz]
        if isinstance(method, Aggregator):
            ones = torch.where(present, torch.ones_like(seen), torch.zeros_like(seen))
            g = None
            if self.mode == "exact":
                self._reduce_rows(rows)
                g = self._global_gramian(rows, t, rows_reduced=True).detach() if monitor else None
                jac = torch.cat([r.reshape(t, -1) for r in rows], dim=1)
                self._write_shared(shared, rows, self._apply_aggregator(method, jac, seen, present))
            else:
                g = self._global_gramian(rows, t).detach() if monitor else None
                self._aggregate_features(method, tg.dz, features, shared, seen, present)
            if heads_later:
                self._weighted(method, stacked, seen, ones, other)
            else:
                self._write_other(other, tg, ones)
                self._finish_written(method, seen, ones, other)
            return StepInfo(seen, ones.detach(), present.detach(), g)
        g = self._global_gramian(rows, t)
        weights = self._weights(method, seen, g, present)
        self._remember(weights)
        w = weights.detach()
        if self.mode == "exact":
            for p, r in zip(shared, rows, strict=True):
                _accumulate(p, torch.tensordot(w.to(r.dtype), r, dims=1))
        else:
            gz = torch.tensordot(w.to(tg.dz.dtype), tg.dz, dims=1)
            torch.autograd.backward(features, grad_tensors=gz, inputs=shared)
            if self.dist is not None:
                self._sync(shared)
        if heads_later:
            self._weighted(method, stacked, seen, weights, other)
        else:
            self._write_other(other, tg, w)
            self._finish_written(method, seen, weights, other)
        return StepInfo(seen, w, present.detach(), g.detach())

    def _aggregate_rows(
        self,
        method: Aggregator,
        rows: list[Tensor],
        stacked: Tensor,
        seen: Tensor,
        present: Tensor,
        shared: list[Tensor],
        other: Sequence[Tensor],
        features: Tensor | None,
        monitor: bool = False,
    ) -> StepInfo:
        t = method.num_tasks
        g = None
        if self.mode == "features":
            assert features is not None
            g = self._global_gramian(rows, t).detach() if monitor else None
            self._aggregate_features(method, rows[0], features, shared, seen, present)
        else:
            self._reduce_rows(rows)
            g = self._global_gramian(rows, t, rows_reduced=True).detach() if monitor else None
            jac = torch.cat([r.reshape(t, -1) for r in rows], dim=1)
            self._write_shared(shared, rows, self._apply_aggregator(method, jac, seen, present))
        ones = torch.where(present, torch.ones_like(seen), torch.zeros_like(seen)).detach()
        self._weighted(method, stacked, seen, ones, other)
        return StepInfo(seen, ones, present.detach(), g)

    def _aggregate_features(
        self, method: Aggregator, dz: Tensor, features: Tensor, shared: list[Tensor], seen: Tensor, present: Tensor
    ) -> None:
        """Aggregate the Jacobian w.r.t. the shared features and backpropagate it through the trunk.

        Under ``dist`` the features of all ranks' samples are the coordinates of one global Jacobian:
        the rows are gathered (``T x B x d`` numbers per rank), aggregated identically everywhere, and
        each rank backpropagates its own samples' part.
        """
        t = method.num_tasks
        if self.dist is None:
            update = self._apply_aggregator(method, dz.reshape(t, -1), seen, present)
            torch.autograd.backward(features, grad_tensors=update.view_as(features).to(features.dtype), inputs=shared)
            return
        per_sample = dz.transpose(0, 1).contiguous()  # [B, T, ...]
        gathered, counts = self.dist.all_gather_rows(per_sample, what="gathering feature Jacobians")
        jac = gathered.transpose(0, 1).reshape(t, -1)
        update = self._apply_aggregator(method, jac, seen, present).view(gathered.shape[0], *features.shape[1:])
        lo = sum(counts[: self.dist.rank])
        mine = update[lo : lo + features.shape[0]]
        torch.autograd.backward(features, grad_tensors=mine.to(features.dtype), inputs=shared)
        self._sync(shared)

    # --- distributed -------------------------------------------------------------------------
    def _globalise(
        self, stacked: Tensor, loss_list: list[Tensor] | None, counts: Tensor | None, present: Tensor
    ) -> tuple[Tensor, list[Tensor] | None, Tensor, Tensor]:
        """Global losses from the ranks' count-weighted losses; local losses rescaled to sum to them.

        One all-reduce of ``[n_t L_t, n_t]`` (``2T`` numbers). Rank ``r``'s loss of task ``t`` is
        multiplied by ``n_rt / N_t``, so the ranks' gradients sum to the gradient of the global loss.
        """
        assert self.dist is not None
        t = stacked.shape[0]
        if counts is None:
            raise ValueError("engine: under torch.distributed pass counts (labelled rows per task in this batch)")
        if counts.shape != (t,):
            raise ValueError(f"engine: counts has shape {tuple(counts.shape)}; expected ({t},)")
        n = counts.detach().to(device=stacked.device, dtype=torch.float64)
        local = stacked.detach().to(torch.float64)
        buf = torch.cat([torch.where(n > 0, n * local, torch.zeros_like(local)), n])
        self.dist.all_reduce([buf], what="reducing task losses")
        total, big_n = buf[:t], buf[t:]
        glob = torch.where(big_n > 0, total / big_n.clamp_min(1), torch.zeros_like(total)).to(stacked.dtype)
        scale = torch.where(big_n > 0, n / big_n.clamp_min(1), torch.zeros_like(n)).to(stacked.dtype)
        scaled = stacked * scale
        scaled_list = [loss * scale[i] for i, loss in enumerate(loss_list)] if loss_list is not None else None
        return scaled, scaled_list, glob, (big_n > 0).to(present.device)

    def _reduce_rows(self, rows: list[Tensor]) -> None:
        """Exact mode: the global Jacobian is the sum of the ranks' Jacobians (``T x P_shared`` numbers)."""
        if self.dist is not None:
            self.dist.all_reduce(rows, what="reducing the task Jacobian")

    def _global_gramian(self, rows: list[Tensor], t: int, *, rows_reduced: bool = False) -> Tensor:
        """The Gramian of the global task gradients.

        Exact mode reduces the Jacobian (then every rank also holds the global shared gradient
        ``wᵀJ``) unless ``rows_reduced`` says an aggregator already did; features mode reduces only
        the ``T x T`` Gramian, since different samples' features are different coordinates.
        """
        if self.dist is not None and self.mode == "exact" and not rows_reduced:
            self._reduce_rows(rows)
        g = _gramian_of(rows, t)
        if self.dist is not None and self.mode != "exact":
            self.dist.all_reduce([g], what="reducing the Gramian")
        return g / self._scale**2 if self._scale != 1.0 else g

    def _sync(self, params: Sequence[Tensor]) -> None:
        """Sum the gradients of ``params`` over the ranks (a parameter no rank touched keeps no grad)."""
        assert self.dist is not None
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        dtype = params[0].dtype
        flags = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=params[0].device)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        self.dist.all_reduce([*grads, flags], what="reducing gradients")
        for p, g, f in zip(params, grads, flags.tolist(), strict=True):
            if f > 0 and p.grad is None:
                p.grad = g

    def _model_only(self, params: Sequence[Tensor]) -> list[Tensor]:
        own = {id(p) for p in self.method.parameters()}
        return [p for p in params if id(p) not in own]

    def _weighted(
        self, method: Method, stacked: Tensor, seen: Tensor, weights: Tensor, inputs: Sequence[Tensor] | None
    ) -> None:
        """One backward of ``Σ_t w_t L_t (+ the method's regularizer)`` into ``inputs`` (None: every leaf).

        Under ``dist`` the model's gradients come from the local (rescaled) losses and are summed over
        the ranks; the method's own parameters get theirs from the global losses, identical on every
        rank, so they are not reduced.
        """
        if self.dist is None:
            self._backward_weighted(stacked, weights, method.regularizer(), inputs=inputs)
            return
        assert inputs is not None
        model = self._model_only(inputs)
        self._backward_weighted(stacked, weights.detach(), None, inputs=model)
        self._sync(model)
        self._backward_method_params(method, seen, weights)

    def _finish_written(self, method: Method, seen: Tensor, weights: Tensor, other: Sequence[Tensor]) -> None:
        """After the heads' gradients were written from per-task passes: reduce them, then the method's."""
        if self.dist is not None:
            self._sync(self._model_only(other))
        self._backward_method_params(method, seen, weights)

    # --- monitoring --------------------------------------------------------------------------
    def _monitor_due(self, step: int) -> bool:
        return self.monitor_every > 0 and step % self.monitor_every == 0

    def _monitor_gramian(self, stacked: Tensor, shared: list[Tensor], features: Tensor | None) -> Tensor | None:
        """The Gramian for callbacks on a step where the method needs none (same mode as the engine's).

        Exact mode: ``T`` batched rows through the trunk (through ``features`` when given);
        features mode: ``∂L_t/∂Z`` only. The losses' graph is kept for the weighted backward.
        """
        if not stacked.requires_grad or not shared:
            return None
        t = stacked.shape[0]
        feats = features if features is not None and features.requires_grad else None
        if self.mode == "features" and feats is not None:
            rows = jacobian(stacked, [feats], chunk_size=self.chunk_size)
        else:
            rows = jacobian(stacked, shared, features=feats, chunk_size=self.chunk_size)
        return self._global_gramian(rows, t).detach()

    # --- helpers -----------------------------------------------------------------------------
    def _remember(self, weights: Tensor) -> None:
        self.cached_weights = weights.detach().to(torch.float64).cpu()
        self.has_cache = True

    def _weights(self, method: Weighting, losses: Tensor, g: Tensor | None, present: Tensor) -> Tensor:
        all_present = bool(present.all())
        if not all_present and g is not None and "stateless" in type(method).properties and bool(present.any()):
            idx = present.nonzero(as_tuple=True)[0]
            sub = method.for_tasks(int(idx.numel())).to(losses.device)
            w_sub = sub(losses[idx], g[idx][:, idx])
            weights = torch.zeros_like(losses).index_put((idx,), w_sub.to(losses.dtype))
        else:
            weights = method(losses, g)
        if weights.shape != (method.num_tasks,):
            raise ValueError(f"{type(method).__name__} returned weights of shape {tuple(weights.shape)}")
        return torch.where(present, weights, torch.zeros_like(weights))

    def _apply_aggregator(self, method: Aggregator, jac: Tensor, seen: Tensor, present: Tensor) -> Tensor:
        if self._scale != 1.0:
            jac = jac / self._scale
        if not bool(present.all()) and "stateless" in type(method).properties and bool(present.any()):
            idx = present.nonzero(as_tuple=True)[0]
            update = method.for_tasks(int(idx.numel())).to(jac.device)(jac[idx], seen[idx])
        else:
            update = method(jac, seen)
        if update.shape != (jac.shape[1],):
            raise ValueError(f"{type(method).__name__} returned an update of shape {tuple(update.shape)}")
        out: Tensor = update.detach()
        return out * self._scale if self._scale != 1.0 else out

    @staticmethod
    def _write_shared(shared: list[Tensor], rows: list[Tensor], update: Tensor) -> None:
        pieces = torch.split(update, [r[0].numel() for r in rows])
        for p, piece in zip(shared, pieces, strict=True):
            _accumulate(p, piece)

    @staticmethod
    def _write_other(other: list[Tensor], tg: _TaskGrads, weights: Tensor) -> None:
        """Head gradients ``Σ_t w_t ∂L_t/∂θ`` from the per-task passes (no further backward)."""
        w = weights.detach().tolist()
        for j, p in enumerate(other):
            total: Tensor | None = None
            for t, grads in enumerate(tg.other):
                g = grads[j]
                if g is None or w[t] == 0.0:
                    continue
                total = g * w[t] if total is None else total.add_(g, alpha=w[t])
            if total is not None:
                _accumulate(p, total)

    def _backward_method_params(self, method: Method, stacked: Tensor, weights: Tensor) -> None:
        """Gradients of the method's own parameters (e.g. learned loss scales), from detached losses."""
        reg = method.regularizer()
        if not weights.requires_grad and reg is None:
            return
        objective = (weights * stacked.detach()).sum()
        if reg is not None:
            objective = objective + reg
        if self._scale != 1.0:
            objective = objective * self._scale
        params = [p for p in method.parameters() if p.requires_grad]
        if params and objective.requires_grad:
            torch.autograd.backward(objective, inputs=params)

    def _backward_weighted(
        self, losses: Tensor, weights: Tensor, reg: Tensor | None, inputs: Sequence[Tensor] | None = None
    ) -> None:
        """Backward of ``Σ_t w_t L_t + S·reg`` (``losses`` already carry the loss scale ``S``)."""
        objective = (weights * losses).sum()
        if reg is not None:
            objective = objective + (reg * self._scale if self._scale != 1.0 else reg)
        if inputs is None:
            torch.autograd.backward(objective)
            return
        targets = [p for p in inputs if p.requires_grad]
        if targets and objective.requires_grad:
            torch.autograd.backward(objective, inputs=targets)


def _accumulate(p: Tensor, g: Tensor) -> None:
    """``p.grad += g`` (or set it), as an ordinary backward would."""
    g = g.to(p.dtype).reshape(p.shape)
    if p.grad is None:
        p.grad = g.clone()
    else:
        p.grad.add_(g)


class Accumulation:
    """One optimizer step over ``k`` micro-batches, with the update of the union batch.

    Task weights depend on the whole batch (its losses, or its per-task gradients), so they are
    known only after the last micro-batch. The step therefore makes two passes:

    1. :meth:`measure` each micro-batch: its per-task losses and labelled-row counts, and for a
       gradient method its contribution to the task Jacobian ("exact" mode: ``T x P_shared``
       numbers, summed) or to the Gramian of the feature gradients ("features" mode: ``T x T``);
       no parameter gradient is written. Loss-only methods need only the losses (the trainer runs
       this forward pass without a graph).
    2. :meth:`weights` (reduced across processes under ``dist``), then :meth:`apply` to each
       micro-batch with ``Σ_t w_t (n_mt / N_t) L_mt``: the gradients sum to those of the union
       batch, and :meth:`finish` reduces them across processes and updates the method's own
       parameters.

    Cost: one extra forward pass per micro-batch (plus, for gradient methods, the Jacobian or
    feature-Gramian pass of pass 1); memory stays that of one micro-batch (plus ``T x P_shared``
    in exact mode, as without accumulation).
    """

    def __init__(self, engine: Engine, gradients: bool) -> None:
        self.engine = engine
        self.gradients = gradients
        t = engine.method.num_tasks
        self.weighted_losses = torch.zeros(t, dtype=torch.float64)
        self.counts = torch.zeros(t, dtype=torch.float64)
        self.rows: list[Tensor] | None = None
        self.gram: Tensor | None = None
        self.global_counts: Tensor | None = None
        self.info: StepInfo | None = None

    def measure(
        self,
        losses: Sequence[Tensor],
        shared_params: Sequence[Tensor],
        *,
        counts: Tensor,
        features: Tensor | None = None,
        task_features: Sequence[Tensor] | None = None,
        loss_scale: float = 1.0,
    ) -> None:
        """Record one micro-batch's losses (and, for gradient methods, its task-gradient contribution)."""
        eng = self.engine
        stacked = torch.stack(list(losses))
        n = counts.detach().to(torch.float64).cpu()
        local = stacked.detach().to(torch.float64).cpu()
        self.weighted_losses += torch.where(n > 0, n * local, torch.zeros_like(local))
        self.counts += n
        if not self.gradients:
            return
        t = stacked.shape[0]
        factor = (n * loss_scale).to(dtype=stacked.dtype, device=stacked.device)
        scaled = [loss * factor[i] for i, loss in enumerate(losses)]
        present = (n > 0).tolist()
        if eng.mode == "features":
            if features is None:
                raise ValueError("engine: grad_mode='features' needs the model's shared features")
            if task_features is not None and len(task_features) == t:
                dz = _task_grads_batched(scaled, task_features, present)
            else:
                dz = jacobian(torch.stack(scaled), [features])[0]
            g = _gramian_of([dz], t)
            self.gram = g if self.gram is None else self.gram + g
            return
        shared = [p for p in shared_params if p.requires_grad]
        if features is not None and features.requires_grad:
            if task_features is not None and len(task_features) == t:
                dz = _task_grads_batched(scaled, task_features, present)
            else:
                dz = jacobian(torch.stack(scaled), [features])[0]
            rows = _vjp([features], shared, [dz], eng.chunk_size)
        else:
            rows = jacobian(torch.stack(scaled), shared, chunk_size=eng.chunk_size)
        if self.rows is None:
            self.rows = [r.detach() for r in rows]
        else:
            for acc, r in zip(self.rows, rows, strict=True):
                acc.add_(r)

    def weights(self, *, task_names: Sequence[str] | None = None, step: int = 0, loss_scale: float = 1.0) -> Tensor:
        """The task weights of the union batch (every process gets the same); updates the method's state."""
        eng = self.engine
        method = eng.method
        assert isinstance(method, Weighting)
        t = method.num_tasks
        buf = torch.cat([self.weighted_losses, self.counts])
        if eng.dist is not None:
            eng.dist.all_reduce([buf], what="reducing task losses")
        big_n = buf[t:]
        self.global_counts = big_n
        losses = torch.where(big_n > 0, buf[:t] / big_n.clamp_min(1), torch.zeros(t, dtype=torch.float64))
        present = big_n > 0
        bad = (~torch.isfinite(losses) & present).nonzero(as_tuple=True)[0].tolist()
        if bad:
            names = [task_names[i] if task_names else str(i) for i in bad]
            raise NonFiniteLossError(
                f"loss of task(s) {names} became {[float(losses[i]) for i in bad]} at step {step}; lower the learning "
                "rate, check the targets of these tasks, or use a weighting that normalises loss scales",
                names,
                step,
            )
        seen = torch.where(present, losses, eng.last_losses)
        eng.last_losses = seen
        device = next((p.device for p in method.buffers()), torch.device("cpu"))
        seen_t = seen.to(dtype=torch.float32, device=device)
        present_t = present.to(device)
        g: Tensor | None = None
        if eng.needs_gradients() and not self.gradients:
            eng.steps_since_refresh += 1
            weights = torch.where(present_t, eng.cached_weights.to(seen_t), torch.zeros_like(seen_t))
        else:
            if self.gradients:
                eng.steps_since_refresh = 0
                inv = torch.where(big_n > 0, 1.0 / big_n.clamp_min(1), torch.zeros_like(big_n)) / loss_scale
                if eng.mode == "features":
                    assert self.gram is not None
                    if eng.dist is not None:
                        eng.dist.all_reduce([self.gram], what="reducing the Gramian")
                    d = inv.to(self.gram)
                    g = self.gram * torch.outer(d, d)
                else:
                    assert self.rows is not None
                    if eng.dist is not None:
                        eng.dist.all_reduce(self.rows, what="reducing the task Jacobian")
                    d = inv.to(self.rows[0])
                    g = _gramian_of([r * d.view(-1, *([1] * (r.dim() - 1))) for r in self.rows], t)
                g = g.to(seen_t)
            weights = eng._weights(method, seen_t, g, present_t)
            if self.gradients:
                eng._remember(weights)
        self.info = StepInfo(seen_t, weights.detach(), present_t, None if g is None else g.detach())
        self._weights = weights
        self.rows, self.gram = None, None  # free the Jacobian before pass 2
        return weights

    def apply(
        self, losses: Sequence[Tensor], params: Sequence[Tensor], *, counts: Tensor, loss_scale: float = 1.0
    ) -> None:
        """Pass 2 for one micro-batch: gradients of ``Σ_t w_t (n_mt / N_t) L_mt`` into ``params``."""
        assert self.global_counts is not None, "call weights() after measuring every micro-batch"
        stacked = torch.stack(list(losses))
        n = counts.detach().to(torch.float64).cpu()
        big_n = self.global_counts
        share = torch.where(big_n > 0, n / big_n.clamp_min(1), torch.zeros_like(n)) * loss_scale
        w = self._weights.detach().to(stacked) * share.to(stacked)
        targets = [p for p in self.engine._model_only(params) if p.requires_grad]
        objective = (w * stacked).sum()
        if targets and objective.requires_grad:
            torch.autograd.backward(objective, inputs=targets)

    def finish(
        self, params: Sequence[Tensor], *, loss_scale: float = 1.0, extra_loss: Tensor | None = None
    ) -> StepInfo:
        """Reduce the model's gradients across processes; the method's own parameters; ``extra_loss`` once."""
        eng = self.engine
        assert self.info is not None
        if eng.dist is not None:
            eng._sync(eng._model_only(params))
        if extra_loss is not None:
            eng._backward_extra(extra_loss, params, loss_scale)
        eng._scale = float(loss_scale)
        eng._backward_method_params(eng.method, self.info.losses, self._weights)
        eng._scale = 1.0
        return self.info
