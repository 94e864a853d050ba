"""Task affinity: label-space similarity, exact TAG lookahead affinity, and its cheap estimates.

Inter-task affinity (Fifty, Amid, Zhao, Yu, Anil, Finn, "Efficiently Identifying Task Groupings for
Multi-Task Learning", NeurIPS 2021, https://arxiv.org/abs/2109.04617) of task ``i`` onto task ``j``
at a training step is

    Z_{i->j} = 1 - L_j(θ_s - η g_i) / L_j(θ_s)

where ``θ_s`` are the shared parameters, ``g_i = ∇_{θ_s} L_i`` on the current batch and ``η`` the
lookahead step: how much a step on task ``i`` alone lowers task ``j``'s loss on the same batch
(positive: ``i`` helps ``j``). TAG averages it over training. Exact TAG costs, per measured step,
the ``T`` task gradients and ``T`` lookahead forward passes. :class:`AffinityProbe` measures it
together with three estimates on the same batches, each with its own measured cost:

* ``first_order``: ``η G_ij / L_j`` with ``G`` the Gramian of the shared-parameter gradients (the
  first-order Taylor expansion of ``Z``; free when a gradient method already computes ``G``);
* ``first_order_engine``: the same ``η G_ij / L_j`` read from the Gramian the weighting itself
  computes at that step (exact-mode gradient methods such as MGDA or UPGrad): no extra computation
  at all; not available (NaN) when training with a loss-only weighting;
* ``first_order_last``: the same with the Gramian of the gradients of the last shared layer only
  (the module owning the last shared parameter): autograd stops there, so the trunk is not
  backpropagated ``T`` times;
* ``first_order_features``: the same with the Gramian of ``∂L_t/∂Z`` at the shared representation
  ``Z`` (a backward pass through the heads only: what the engine's features mode computes);
* ``projected``: ``η Ĝ_ij / L_j`` with ``Ĝ = S Sᵀ / k`` and ``S[t, c] ≈ <g_t, r_c>`` for ``k``
  Gaussian directions ``r_c`` over the shared parameters, by central differences of the losses
  (``2k`` forward passes, no backward pass, no per-task gradient formed) (the random projection of per-task gradients behind Grad-TAG:
  Li, Sharma, Zhang, "Scalable Multitask Learning Using Gradient-based Estimation of Task
  Affinity", KDD 2024, https://arxiv.org/abs/2409.06091; unbiased, ``E[Ĝ] = G``).

:func:`label_similarity` is the label-space view: signed Pearson correlation between two scalar
targets (binary or regression), and the first canonical correlation when a multi-class or vector
target is involved, on the rows where both labels are present.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from ..callbacks.base import Callback
from ..data.batch import TensorSplit
from ..engine import jacobian
from ..tasks import Task
from ..trainer import RngState, Trainer, rng_state, set_rng_state

if TYPE_CHECKING:
    from ..data.batch import Batch
    from ..engine import StepInfo

__all__ = ["ESTIMATES", "AffinityProbe", "label_similarity", "spearman"]

#: The cheap estimates measured next to exact TAG, in report order.
ESTIMATES = ("first_order", "first_order_engine", "first_order_last", "first_order_features", "projected")


def _label_columns(task: Task, target: Tensor) -> np.ndarray:
    """A task's labels as numeric columns: one-hot for multi-class, as-is otherwise."""
    y = target.detach().cpu()
    if task.kind == "multiclass":
        k = int(task.num_classes or int(y.max()) + 1)
        return np.asarray(torch.nn.functional.one_hot(y.long(), k).double().numpy())
    arr = y.double().numpy()
    return arr.reshape(arr.shape[0], -1)


def _canonical_corr(a: np.ndarray, b: np.ndarray) -> float:
    """First canonical correlation of two column blocks (|Pearson| for single columns)."""

    def basis(x: np.ndarray) -> np.ndarray:
        x = x - x.mean(axis=0)
        x = x[:, np.linalg.norm(x, axis=0) > 1e-12]
        if x.shape[1] == 0:
            return x
        q, r = np.linalg.qr(x)
        keep = np.abs(np.diag(r)) > 1e-9 * max(1.0, float(np.abs(np.diag(r)).max()))
        return np.asarray(q[:, keep])

    qa, qb = basis(a), basis(b)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        return math.nan
    return float(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False)[0], 0.0, 1.0))


def label_similarity(split: TensorSplit, tasks: Sequence[Task], *, min_rows: int = 3) -> np.ndarray:
    """``T x T`` similarity of the tasks' labels on ``split``, missing labels respected.

    Two scalar targets (binary, regression): Pearson correlation (signed). A multi-class or vector
    target: the first canonical correlation (in [0, 1]) between the two label blocks. Each pair uses
    the rows where both labels are present; NaN when fewer than ``min_rows`` or a constant label.
    The diagonal is 1.
    """
    t = len(tasks)
    out = np.eye(t)
    cols = [_label_columns(task, split.targets[task.name]) for task in tasks]
    masks = [split.masks[task.name].cpu().numpy() for task in tasks]
    for i in range(t):
        for j in range(i + 1, t):
            both = masks[i] & masks[j]
            if int(both.sum()) < min_rows:
                out[i, j] = out[j, i] = math.nan
                continue
            a, b = cols[i][both], cols[j][both]
            if a.shape[1] == 1 and b.shape[1] == 1:
                sa, sb = a[:, 0].std(), b[:, 0].std()
                value = math.nan if sa == 0 or sb == 0 else float(np.corrcoef(a[:, 0], b[:, 0])[0, 1])
            else:
                value = _canonical_corr(a, b)
            out[i, j] = out[j, i] = value
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the off-diagonal entries of two ``T x T`` matrices (NaNs dropped)."""
    from scipy.stats import spearmanr

    off = ~np.eye(a.shape[0], dtype=bool)
    x, y = np.asarray(a, dtype=float)[off], np.asarray(b, dtype=float)[off]
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    return float(spearmanr(x[ok], y[ok]).statistic)


def _last_layer(model: torch.nn.Module, shared: Sequence[Tensor]) -> list[Tensor]:
    """The shared parameters of the module that owns the last shared parameter (e.g. the last trunk layer)."""
    ids = {id(p) for p in shared}
    last = shared[-1]
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False)]
        if any(p is last for p in own):
            return [p for p in own if id(p) in ids and p.requires_grad]
    return [last]


class AffinityProbe(Callback):
    """Measure exact TAG affinity and its estimates on training batches, without changing training.

    Every ``every`` steps, before the optimizer step, on the same batch: the task losses, the
    shared-parameter gradients and the lookahead losses (exact TAG), and the estimates named in
    ``estimates``. Parameters, buffers (e.g. batch-norm statistics) and random-number state are
    restored, so the training run is the same with or without the probe. Each method's cost is
    the wall time of its own computation beyond the forward pass of the batch, which every method
    reuses from the training step (exact TAG needs the task gradients and ``T`` lookahead forward
    passes; the task gradients are counted for ``tag`` and ``first_order`` alike); the forward pass
    is timed separately (``forward_seconds``).

    The probe measures on the batch the trainer hands it: under ``torch.distributed`` that is this
    rank's share (each rank then holds its own estimate), and with ``train.accumulate > 1`` the
    whole batch before it is split into micro-batches.

    Args:
        every: measure every this many optimizer steps (1: every step, as TAG does).
        lr: lookahead step ``η`` (default: the trainer's learning rate); the lookahead is a plain
            gradient step on the shared parameters, as in TAG.
        projections: ``k``, random directions of the ``projected`` estimate.
        estimates: which cheap estimates to measure (subset of :data:`ESTIMATES`).
        seed: seeds the random directions.

    Attributes:
        matrices: per method, the ``T x T`` mean over measured steps (entry ``[i, j]``: ``i -> j``;
            a pair counts on steps where both tasks have labels).
        steps: the per-step matrices per method, in measurement order (for subsampling studies).
        seconds: per method, total seconds spent measuring it (``step_seconds``: per measured step),
            the shared forward pass excluded.
    """

    def __init__(
        self,
        *,
        every: int = 1,
        lr: float | None = None,
        projections: int = 4,
        estimates: Sequence[str] = ESTIMATES,
        seed: int = 0,
    ) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"AffinityProbe: every={every!r} must be an integer >= 1 (measure every N steps)")
        if lr is not None and not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"AffinityProbe: lr={lr!r} must be a positive lookahead step (or None for the trainer's)")
        if not isinstance(projections, int) or isinstance(projections, bool) or projections < 1:
            raise ValueError(f"AffinityProbe: projections={projections!r} must be an integer >= 1")
        unknown = [e for e in estimates if e not in ESTIMATES]
        if unknown:
            raise ValueError(
                f"AffinityProbe: estimates={list(estimates)!r}: unknown {unknown}; choose from {ESTIMATES}"
            )
        self.every = every
        self.lr = None if lr is None else float(lr)
        self.projections = projections
        self.estimates = tuple(estimates)
        self.seed = seed
        self.methods = ("tag", *self.estimates)
        self.steps: dict[str, list[np.ndarray]] = {m: [] for m in self.methods}
        self.pairs: list[np.ndarray] = []
        self.seconds: dict[str, float] = {m: 0.0 for m in self.methods}
        self.step_seconds: dict[str, list[float]] = {m: [] for m in self.methods}
        self.forward_seconds: list[float] = []
        self._pending = False
        self._gen = torch.Generator().manual_seed(seed)

    @property
    def matrices(self) -> dict[str, np.ndarray]:
        return {m: self.mean(m) for m in self.methods}

    def mean(self, method: str, *, take: slice | None = None) -> np.ndarray:
        """Mean ``T x T`` matrix of ``method`` over the measured steps (or the steps in ``take``)."""
        mats = self.steps[method][take] if take is not None else self.steps[method]
        pairs = self.pairs[take] if take is not None else self.pairs
        if not mats:
            raise ValueError(f"AffinityProbe: no step measured for {method!r}; train longer or lower `every`")
        valid = [p & np.isfinite(m) for m, p in zip(mats, pairs, strict=True)]
        total = np.sum([np.where(v, m, 0.0) for m, v in zip(mats, valid, strict=True)], axis=0)
        count = np.sum(valid, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def on_batch_start(self, trainer: Trainer, batch: Batch) -> None:
        if trainer.global_step % self.every != 0:
            return
        model = trainer.model
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        rng = rng_state(trainer.device)
        try:
            self._measure(trainer, batch)
        finally:
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
            set_rng_state(trainer.device, rng)

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        """``first_order_engine``: the first-order estimate from the Gramian the method just computed.

        Measured before the step on the same batch, parameters and dropout masks, an exact-mode
        gradient method's Gramian is the probe's own ``G``; reading it costs nothing extra.
        """
        if not self._pending:
            return
        self._pending = False
        if "first_order_engine" not in self.estimates or info.gramian is None or trainer.engine.mode != "exact":
            return
        t0 = time.perf_counter()
        g = info.gramian.detach().double().cpu().numpy()
        losses = info.losses.detach().double().cpu().numpy()
        denom = np.where(losses > 0, losses, np.nan)[None, :]
        eta = self.lr if self.lr is not None else float(trainer.lr)
        self.steps["first_order_engine"][-1] = np.where(self.pairs[-1], eta * g / denom, np.nan)
        cost = time.perf_counter() - t0
        self.step_seconds["first_order_engine"][-1] = cost
        self.seconds["first_order_engine"] += cost

    # --- one measurement -------------------------------------------------------------------
    def _losses(self, trainer: Trainer, batch: Batch, outputs: dict[str, Tensor]) -> Tensor:
        return torch.stack(trainer._losses(batch, outputs)[0])

    def _measure(self, trainer: Trainer, batch: Batch) -> None:
        model = trainer.model
        names = {id(p): n for n, p in model.named_parameters()}
        shared = [p for p in model.shared_parameters() if p.requires_grad]
        shared_names = [names[id(p)] for p in shared]
        rng = rng_state(trainer.device)
        present = torch.stack([batch.masks[t.name].any() for t in trainer.tasks]).cpu().numpy()
        pair = present[:, None] & present[None, :]
        t = len(trainer.tasks)
        eta = self.lr if self.lr is not None else float(trainer.lr)

        t0 = time.perf_counter()
        outputs, features, _ = model.forward_task_features(batch.inputs)
        losses = self._losses(trainer, batch, outputs)
        base = losses.detach().double().cpu().numpy()
        t_forward = time.perf_counter() - t0
        denom = np.where(base > 0, base, np.nan)[None, :]
        results: dict[str, np.ndarray] = {}
        costs: dict[str, float] = {}

        if "first_order_last" in self.estimates:
            t0 = time.perf_counter()
            last = _last_layer(model, shared)
            feats = features if features is not None and features.requires_grad else None
            rows_last = jacobian(losses, last, features=feats)
            flat = torch.cat([r.reshape(t, -1) for r in rows_last], dim=1).double()
            results["first_order_last"] = eta * (flat @ flat.T).cpu().numpy() / denom
            costs["first_order_last"] = time.perf_counter() - t0

        if "first_order_features" in self.estimates and features is not None and features.requires_grad:
            t0 = time.perf_counter()
            (dz,) = jacobian(losses, [features])
            flat = dz.reshape(t, -1).double()
            gz = (flat @ flat.T).cpu().numpy()
            results["first_order_features"] = eta * gz / denom
            costs["first_order_features"] = time.perf_counter() - t0

        if "projected" in self.estimates:
            t0 = time.perf_counter()
            sketch = self._sketch(trainer, batch, shared, shared_names, rng)
            g_hat = (sketch @ sketch.T / self.projections).cpu().numpy()
            results["projected"] = eta * g_hat / denom
            costs["projected"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows = jacobian(losses, shared, features=features if features is not None and features.requires_grad else None)
        flat_rows = torch.cat([r.reshape(t, -1) for r in rows], dim=1).double()
        g = (flat_rows @ flat_rows.T).cpu().numpy()
        t_grad = time.perf_counter() - t0
        if "first_order" in self.estimates:
            results["first_order"] = eta * g / denom
            costs["first_order"] = t_grad

        t0 = time.perf_counter()
        tag = np.full((t, t), np.nan)
        with torch.no_grad():
            for i in range(t):
                if not present[i]:
                    continue
                moved = {n: p.detach() - eta * r[i] for n, p, r in zip(shared_names, shared, rows, strict=True)}
                set_rng_state(trainer.device, rng)  # the same dropout masks as the base forward
                after = self._losses(trainer, batch, functional_call(model, moved, (batch.inputs,)))
                tag[i] = 1.0 - after.double().cpu().numpy() / denom[0]
        results["tag"] = tag
        costs["tag"] = t_grad + time.perf_counter() - t0
        self.forward_seconds.append(t_forward)

        for m in self.methods:
            self.steps[m].append(np.where(pair, results[m], np.nan) if m in results else np.full((t, t), np.nan))
            self.seconds[m] += costs.get(m, 0.0)
            self.step_seconds[m].append(costs.get(m, 0.0))
        self._pending = True
        self.pairs.append(pair & np.isfinite(denom))

    def _sketch(
        self, trainer: Trainer, batch: Batch, shared: Sequence[Tensor], names: list[str], rng: RngState
    ) -> Tensor:
        """``S[t, c] ≈ <g_t, r_c>`` by central differences along ``k`` random directions: forward passes only.

        ``(L(θ + ε r) - L(θ - ε r)) / 2ε`` with ``ε = 10⁻³ ||θ_s|| / ||r||``; no per-task gradient
        and no autograd graph is formed.
        """
        model = trainer.model
        theta = [p.detach() for p in shared]
        norm = float(torch.sqrt(sum((p.double() ** 2).sum() for p in theta)))  # type: ignore[arg-type]
        cols = []
        with torch.no_grad():
            for _ in range(self.projections):
                r = [torch.randn(p.shape, generator=self._gen, dtype=p.dtype).to(p.device) for p in theta]
                r_norm = float(torch.sqrt(sum((x.double() ** 2).sum() for x in r)))  # type: ignore[arg-type]
                eps = 1e-3 * (norm if norm > 0 else 1.0) / max(r_norm, 1e-12)
                ends = []
                for sign in (1.0, -1.0):
                    moved = {n: p + sign * eps * d for n, p, d in zip(names, theta, r, strict=True)}
                    set_rng_state(trainer.device, rng)
                    ends.append(self._losses(trainer, batch, functional_call(model, moved, (batch.inputs,))).double())
                cols.append((ends[0] - ends[1]) / (2 * eps))
        return torch.stack(cols, dim=1)

    def summary(self) -> dict[str, Any]:
        """Matrices (as lists), costs and the Spearman correlation of each estimate with exact TAG."""
        mats = self.matrices
        fwd = float(sum(self.forward_seconds))
        out: dict[str, Any] = {
            "measured_steps": len(self.pairs),
            "matrices": {m: mats[m].tolist() for m in self.methods},
            "seconds": dict(self.seconds),
            "forward_seconds": float(sum(self.forward_seconds)),
            "cost_vs_tag": {m: self.seconds[m] / self.seconds["tag"] if self.seconds["tag"] > 0 else math.nan
                            for m in self.methods},
            "cost_vs_tag_with_forward": {
                m: (self.seconds[m] + fwd) / (self.seconds["tag"] + fwd) if self.seconds["tag"] + fwd > 0 else math.nan
                for m in self.methods
            },
            "spearman_vs_tag": {m: spearman(mats[m], mats["tag"]) for m in self.estimates},
        }  # fmt: skip
        return out
