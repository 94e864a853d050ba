"""``TaskRelations``: gradient conflict and first-order task affinity from the engine's Gramian.

Nearly free: every quantity is a function of the ``T x T`` Gramian ``G`` of the task gradients
(``G_ij = <g_i, g_j>``) and the task losses, which gradient methods compute at every step anyway;
with a loss-only weighting the engine computes ``G`` every ``gramian_every`` steps for it (one
batched ``T``-row backward through the trunk in exact mode; through the heads only in features
mode, where ``g_t = ∂L_t/∂Z`` is the gradient with respect to the shared representation).

Per epoch, over the steps that had a Gramian (pairs counted on steps where both tasks had labels):

* ``cosine[i][j]``: mean cosine similarity ``G_ij / sqrt(G_ii G_jj)``;
* ``conflict[i][j]``: fraction of steps with a negative cosine (the tasks' gradients disagree);
* ``grad_norm_ratio[i]``: mean of ``||g_i|| / mean_k ||g_k||`` (which task dominates the update);
* ``lookahead[i][j]``: first-order TAG affinity of task ``i`` onto task ``j``,
  ``η G_ij / L_j``: the relative decrease of ``L_j`` predicted, to first order, after a gradient
  step ``θ - η g_i`` on task ``i`` alone (Fifty et al., "Efficiently Identifying Task Groupings
  for Multi-Task Learning", NeurIPS 2021, https://arxiv.org/abs/2109.04617, define the exact
  ``Z_{i->j} = 1 - L_j(θ - η g_i) / L_j(θ)``; :mod:`multitask.relations.affinity` measures it).

Each epoch's summary goes into the epoch's metrics record under ``"relations"`` (``metrics.jsonl``;
every callback's ``on_epoch_end`` sees it), into ``history``, and on rank 0 as one JSON line into
``path``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .base import Callback

if TYPE_CHECKING:
    from ..engine import StepInfo
    from ..trainer import Trainer

__all__ = ["TaskRelations"]


class TaskRelations(Callback):
    """Aggregate gradient cosines, conflicts, norm ratios and first-order affinity per epoch.

    Args:
        gramian_every: with a weighting that computes no Gramian, have the engine compute one every
            this many steps (0: use only the Gramians the method computes; then a loss-only run
            records nothing).
        lr: the step size ``η`` of the first-order lookahead (default: the trainer's learning rate).
        path: a JSON-lines file receiving one summary per epoch (rank 0 only); None keeps them in
            memory (``history``).
    """

    def __init__(self, *, gramian_every: int = 0, lr: float | None = None, path: str | Path | None = None) -> None:
        if not isinstance(gramian_every, int) or isinstance(gramian_every, bool) or gramian_every < 0:
            raise ValueError(
                f"TaskRelations: gramian_every={gramian_every!r} must be an integer >= 0 (0: only free ones)"
            )
        if lr is not None and not (isinstance(lr, int | float) and lr > 0):
            raise ValueError(f"TaskRelations: lr={lr!r} must be a positive step size (or None for the trainer's)")
        self.gramian_every = gramian_every
        self.lr = None if lr is None else float(lr)
        self.path = None if path is None else Path(path)
        self.history: list[dict[str, Any]] = []
        self._sums: dict[str, Tensor] = {}

    def _reset(self, t: int) -> None:
        z = torch.zeros(t, t, dtype=torch.float64)
        self._sums = {
            "cosine": z.clone(),
            "conflict": z.clone(),
            "lookahead": z.clone(),
            "pairs": z.clone(),
            "ratio": torch.zeros(t, dtype=torch.float64),
            "ratio_n": torch.zeros(t, dtype=torch.float64),
            "steps": torch.zeros((), dtype=torch.float64),
        }

    def on_fit_start(self, trainer: Trainer) -> None:
        self._reset(len(trainer.task_names))
        # a resumed run starts from the epochs its history holds (no duplicated lines)
        self.history = [
            {"epoch": r.get("epoch"), "tasks": list(trainer.task_names), **r["relations"]}
            for r in trainer.history
            if "relations" in r
        ]
        if self.path is not None and trainer.is_main and (self.history or self.path.exists()):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w") as f:
                for line in self.history:
                    f.write(json.dumps(line) + "\n")

    def on_epoch_start(self, trainer: Trainer, epoch: int, num_batches: int, start: int) -> None:
        self._reset(len(trainer.task_names))

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        if info.gramian is None:
            return
        g = info.gramian.detach().to(device="cpu", dtype=torch.float64)
        here = info.present.detach().cpu()
        norms = g.diagonal().clamp_min(0).sqrt()
        ok = here & (norms > 0)
        if not bool(ok.any()):
            return
        pair = (ok[:, None] & ok[None, :]).to(torch.float64)
        cos = g / torch.outer(norms, norms).clamp_min(torch.finfo(torch.float64).tiny)
        losses = info.losses.detach().to(device="cpu", dtype=torch.float64)
        eta = self.lr if self.lr is not None else float(trainer.lr)
        look = eta * g / losses.clamp_min(torch.finfo(torch.float64).tiny)[None, :]
        s = self._sums
        s["cosine"] += torch.where(pair > 0, cos, 0.0)
        s["conflict"] += torch.where(pair > 0, (cos < 0).to(torch.float64), 0.0)
        s["lookahead"] += torch.where(pair > 0, look, 0.0)
        s["pairs"] += pair
        s["ratio"] += torch.where(ok, norms / norms[ok].mean(), 0.0)
        s["ratio_n"] += ok.to(torch.float64)
        s["steps"] += 1

    def summary(self) -> dict[str, Any] | None:
        """The current epoch's aggregates (None when no step had a Gramian)."""
        s = self._sums
        if not s or float(s["steps"]) == 0:
            return None
        n = s["pairs"]

        def mean(x: Tensor) -> list[list[float | None]]:
            m = x / n.clamp_min(1)
            return [[float(m[i, j]) if n[i, j] > 0 else None for j in range(m.shape[1])] for i in range(m.shape[0])]

        ratio = s["ratio"] / s["ratio_n"].clamp_min(1)
        return {
            "steps": int(s["steps"]),
            "cosine": mean(s["cosine"]),
            "conflict": mean(s["conflict"]),
            "lookahead": mean(s["lookahead"]),
            "grad_norm_ratio": [float(r) if c > 0 else None for r, c in zip(ratio, s["ratio_n"], strict=True)],
        }

    def epoch_fields(self, trainer: Trainer) -> dict[str, Any]:
        summary = self.summary()
        return {} if summary is None else {"relations": summary}

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if "relations" not in record:
            return
        summary = {"epoch": record.get("epoch"), "tasks": list(trainer.task_names), **record["relations"]}
        self.history.append(summary)
        if self.path is not None and trainer.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(summary) + "\n")
