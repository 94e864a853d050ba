"""A small training loop: forward, per-task losses, engine step, optimizer, callbacks.

The trainer delegates every gradient decision to :class:`multitask.engine.Engine` and every side
effect (progress, logging) to callbacks. It checkpoints everything a resumed run needs to end with
exactly the parameters and metrics of an uninterrupted one: model, optimizer, weighting and engine
state, RNG state, position inside the epoch, running sums, best-validation state and history.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import __version__
from .aggregation.base import Aggregator
from .architectures.base import MultiTaskModel
from .callbacks.base import Callback
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data.base import MultiTaskData
from .data.batch import Batch, TensorSplit
from .distributed import Distributed
from .engine import Engine, NonFiniteLossError, parse_grad_mode
from .registry import UnknownNameError, unknown_name_message
from .tasks import Task
from .weighting.base import Weighting, create_weighting

__all__ = ["OPTIMIZERS", "PRECISIONS", "RngState", "Trainer", "evaluate", "rng_state", "set_rng_state"]

PRECISIONS = ("32", "bf16", "fp16")

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


def _check_positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Trainer: {name}={value!r} must be a positive integer")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tasks: Sequence[Task],
    split: TensorSplit,
    *,
    batch_size: int = 1024,
    device: str = "cpu",
    dist: Distributed | None = None,
) -> dict[str, dict[str, float]]:
    """Per-task loss and metrics of ``model`` on ``split``, on labelled rows only.

    Under ``dist`` each rank predicts its contiguous shard of the rows and the predictions are
    gathered (in order) before any metric is computed, so every rank gets the metrics of the whole
    split.

    Returns ``{task: {"loss": mean loss over labelled rows, metric: value, ...}}``.
    """
    was_training = model.training
    model.eval()
    outs: dict[str, list[Tensor]] = {t.name: [] for t in tasks}
    rows = split if dist is None else _shard_split(split, dist.shard(len(split)))
    for batch in rows.batches(batch_size):
        pred = model(batch.inputs.to(device))
        for t in tasks:
            outs[t.name].append(pred[t.name].detach().float())
    model.train(was_training)
    result: dict[str, dict[str, float]] = {}
    for t in tasks:
        o = torch.cat(outs[t.name]) if outs[t.name] else torch.empty(0, t.output_dim, device=device)
        if dist is not None:
            o, _ = dist.all_gather_rows(o, what="gathering validation predictions")
        o = o.cpu()
        target, mask = split.targets[t.name], split.masks[t.name]
        n = int(mask.sum())
        loss = float(t.compute_loss(o, target, mask)) if n else math.nan
        result[t.name] = {"loss": loss, **t.evaluate(o, target, mask)}
    return result


def _compile_parts(model: nn.Module) -> None:
    """``torch.compile`` the forward of every part of ``model`` in place (state_dict keys unchanged)."""
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    parts = []
    for child in model.children():
        parts += list(child.children()) if isinstance(child, nn.ModuleDict | nn.ModuleList) else [child]
    for part in parts:
        part.forward = torch.compile(part.forward)  # type: ignore[method-assign]


#: The random-number state a forward pass draws from: the CPU generator's and, on CUDA, the device's.
RngState = tuple[Tensor, Tensor | None]


def rng_state(device: str) -> RngState:
    """Snapshot of the generators a forward pass on ``device`` draws from (e.g. its dropout masks)."""
    cuda = torch.cuda.get_rng_state(torch.device(device)) if device.startswith("cuda") else None
    return torch.get_rng_state(), cuda


def set_rng_state(device: str, state: RngState) -> None:
    """Restore a :func:`rng_state` snapshot, so the next forward pass draws the same masks."""
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], torch.device(device))


def _shard_split(split: TensorSplit, part: slice) -> TensorSplit:
    return TensorSplit(
        split.inputs[part],
        {k: v[part] for k, v in split.targets.items()},
        {k: v[part] for k, v in split.masks.items()},
    )


def _shard_batch(batch: Batch, part: slice) -> Batch:
    return Batch(
        batch.inputs[part], {k: v[part] for k, v in batch.targets.items()}, {k: v[part] for k, v in batch.masks.items()}
    )


class Trainer:
    """Train a :class:`MultiTaskModel` on a set of tasks with a task-weighting method.

    Args:
        model: the multi-task model (``forward(x) -> {task: output}``).
        tasks: the tasks, in the order the weighting sees them.
        weighting: a :class:`Weighting`, an :class:`Aggregator` or a registered name ("equal", "mgda", ...).
        epochs: number of passes over the training split.
        batch_size: mini-batch size.
        lr: learning rate.
        optimizer: "adam", "adamw" or "sgd" (momentum 0.9).
        weight_decay: L2 penalty / decoupled weight decay of the optimizer.
        seed: seeds the shuffling order (and, in :func:`multitask.experiment.run`, the model init).
        grad_mode: "exact", "features", "every:K" or "features+every:K": how the engine gets the
            task gradients of gradient methods (see :mod:`multitask.engine`).
        chunk_size: at most this many Jacobian rows per batched backward through the trunk in
            "exact" mode (caps memory; None: all rows at once).
        checkpoint_path: where to write checkpoints (None: keep nothing on disk).
        checkpoint_every: also checkpoint every this many steps (0: only at epoch ends).
        metrics_path: a JSON-lines file that receives one record per epoch.
        callbacks: hooks called during training (progress bars, loggers, ...); under ``dist`` they run
            on every rank (``trainer.is_main`` tells rank 0).
        config: the resolved run config, stored inside every checkpoint.
        device: "cpu", "cuda", ... or "auto" (CUDA when available).
        precision: "32" (float32), "bf16" (bfloat16 autocast, e.g. on CPU) or "fp16" (float16
            autocast with a ``torch.amp.GradScaler``). The losses, the Gramian and the weights
            are computed in float32.
        accumulate: micro-batches per optimizer step: each batch is split in ``accumulate``
            parts processed one after another, with the update of the whole batch (see
            :class:`multitask.engine.Accumulation`; one extra forward pass per micro-batch).
        compile: ``torch.compile`` the forward of each part of the model (the trunk, each head),
            with AOTAutograd's donated buffers off (they forbid the retained graph that per-task
            gradients need). Supported when the trunk is backpropagated once per step: loss-only
            weightings, and gradient methods in "features" modes. Exact-mode Jacobians through a
            compiled trunk are wrong in torch 2.13 (measured: docs/distributed.md), so that
            combination is refused.
        dist: the process group for data-parallel training (see :mod:`multitask.distributed`).
            ``batch_size`` is then the *global* batch: each rank trains on its contiguous share of
            every batch, the engine reduces what the method needs, validation predictions are
            gathered before model selection, and only rank 0 writes checkpoints and metrics. The
            sequence of global batches does not depend on the number of ranks, so a run resumes
            on any number of them.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        tasks: Sequence[Task],
        weighting: Weighting | Aggregator | str = "equal",
        *,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        seed: int = 0,
        grad_mode: str = "exact",
        chunk_size: int | None = None,
        checkpoint_path: str | Path | None = None,
        checkpoint_every: int = 0,
        metrics_path: str | Path | None = None,
        callbacks: Sequence[Callback] = (),
        config: dict[str, Any] | None = None,
        device: str = "cpu",
        precision: str = "32",
        accumulate: int = 1,
        compile: bool = False,
        dist: Distributed | None = None,
    ) -> None:
        self.tasks = list(tasks)
        if not self.tasks:
            raise ValueError("Trainer: tasks is empty; give at least one Task")
        self.task_names = [t.name for t in self.tasks]
        out_names = getattr(model, "task_names", None)
        if out_names is not None and sorted(out_names) != sorted(self.task_names):
            raise ValueError(
                f"Trainer: the model has heads {sorted(out_names)} but the tasks are {sorted(self.task_names)}"
            )
        _check_positive_int("epochs", epochs)
        _check_positive_int("batch_size", batch_size)
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"Trainer: lr={lr!r} must be a finite number > 0")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"Trainer: weight_decay={weight_decay!r} must be >= 0")
        if optimizer not in OPTIMIZERS:
            raise UnknownNameError(unknown_name_message("optimizer", optimizer, list(OPTIMIZERS)))
        parse_grad_mode(grad_mode)  # validates, naming the value
        if precision not in PRECISIONS:
            raise ValueError(f"Trainer: precision={precision!r} must be one of {list(PRECISIONS)}")
        _check_positive_int("accumulate", accumulate)
        if checkpoint_every < 0:
            raise ValueError(f"Trainer: checkpoint_every={checkpoint_every!r} must be >= 0 (0: epoch ends only)")
        self.dist = dist if dist is not None and dist.world_size > 1 else None
        if self.dist is not None:
            device = self.dist.device(device)
            if batch_size < self.dist.world_size:
                raise ValueError(
                    f"Trainer: batch_size={batch_size} is the global batch, split over {self.dist.world_size} "
                    "processes; it must be at least the number of processes"
                )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model = model.to(device)
        if isinstance(weighting, str):
            weighting = create_weighting(weighting, len(self.tasks))
        if weighting.num_tasks != len(self.tasks):
            raise ValueError(
                f"Trainer: the weighting was built for num_tasks={weighting.num_tasks} but there are {len(self.tasks)} tasks"
            )
        self.weighting = weighting.to(device)
        self.engine = Engine(self.weighting, grad_mode=grad_mode, chunk_size=chunk_size, dist=self.dist)
        if self.engine.needs_gradients() and not any(p.requires_grad for p in model.shared_parameters()):
            raise ValueError(
                f"Trainer: {type(model).__name__} shares no parameters, so {type(self.weighting).__name__}, which "
                "balances the gradients of shared parameters, does not apply; use a loss-based weighting "
                "(equal, uncertainty, dwa, ...; see `multitask list weightings`)"
            )
        self.compiled = bool(compile)
        if compile and self.engine.needs_gradients() and self.engine.mode == "exact":
            raise ValueError(
                f"Trainer: compile=True with grad_mode={grad_mode!r} and {type(self.weighting).__name__}: exact-mode "
                "Jacobians through a torch.compile'd trunk come out wrong in torch 2.13; use grad_mode='features' "
                "(or 'features+every:K'), or compile=False"
            )
        if compile:
            _compile_parts(self.model)
        if accumulate > 1:
            self.engine.start_accumulation()  # refuses methods that cannot accumulate, naming them
            if batch_size < accumulate * (self.dist.world_size if self.dist is not None else 1):
                raise ValueError(
                    f"Trainer: batch_size={batch_size} cannot be split into accumulate={accumulate} micro-batches "
                    "on every process; lower accumulate or raise batch_size"
                )
        self.precision, self.accumulate = precision, accumulate
        device_type = torch.device(device).type
        self.autocast_dtype = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.device_type = device_type
        self.scaler = torch.amp.GradScaler(device_type) if precision == "fp16" else None
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, float(lr), seed
        self.optimizer_name, self.weight_decay = optimizer, float(weight_decay)
        params = list(self.model.parameters()) + list(self.weighting.parameters())
        kwargs: dict[str, Any] = {"lr": self.lr, "weight_decay": self.weight_decay}
        if optimizer == "sgd":
            kwargs["momentum"] = 0.9
        self.optimizer = OPTIMIZERS[optimizer](params, **kwargs)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.checkpoint_every = checkpoint_every
        self.is_main = self.dist is None or self.dist.is_main
        self.metrics_path = Path(metrics_path) if metrics_path and self.is_main else None
        self.callbacks = list(callbacks)
        self._batch_hooks: list[Any] = []
        self.config = config or {}
        # progress
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # batches completed in the current epoch
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_epoch = 0
        self.best_score = math.inf
        self.best_state: dict[str, Tensor] | None = None
        self._accum = self._empty_accum()
        self.finished = False
        self.last_state: dict[str, Tensor] | None = None  # parameters after the last epoch (fit loads the best)

    # --- public API --------------------------------------------------------------------------
    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise UnknownNameError(unknown_name_message("task", name, self.task_names))

    def fit(self, data: MultiTaskData | tuple[TensorSplit, TensorSplit], *, resume: bool = False) -> Trainer:
        """Train, validating after every epoch; ends with the best-validation parameters loaded.

        Model selection uses the validation split only: the criterion is the mean over the
        (non-auxiliary) tasks of the validation loss. With ``resume=True`` and an existing
        checkpoint the run continues exactly where it stopped.
        """
        train, val = (data.train, data.val) if isinstance(data, MultiTaskData) else data
        self._check_split(train, "train")
        self._check_split(val, "val")
        if self.dist is not None:
            # every rank starts from rank 0's parameters, as DistributedDataParallel does
            self.dist.broadcast_(
                [*self.model.state_dict().values(), *self.weighting.state_dict().values()],
                what="broadcasting the initial parameters",
            )
        if resume and self.checkpoint_path is not None:
            self._resume(self.checkpoint_path)
        if self.metrics_path is not None:
            self._rewrite_metrics()
        self._batch_hooks = [h for h in (getattr(cb, "on_batch_start", None) for cb in self.callbacks) if h is not None]
        every = [int(cb.gramian_every) for cb in self.callbacks if getattr(cb, "gramian_every", 0) > 0]
        self.engine.monitor_every = math.gcd(*every) if every else 0
        for cb in self.callbacks:
            cb.on_fit_start(self)
        if self.finished:
            return self
        shared = list(self.model.shared_parameters())
        try:
            while self.epoch < self.epochs:
                self._train_epoch(train, val, shared)
        except KeyboardInterrupt:
            if self.checkpoint_path is not None:
                self.save_checkpoint(self.checkpoint_path)
            raise
        except NonFiniteLossError as exc:
            where = (
                f"; the last good checkpoint is {str(self.checkpoint_path)!r}"
                if self.checkpoint_path is not None and self.checkpoint_path.exists()
                else ""
            )
            raise NonFiniteLossError(f"{exc}{where}", exc.tasks, exc.step) from None
        self.last_state = copy.deepcopy(self.model.state_dict())
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.finished = True
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self

    def evaluate(self, split: TensorSplit, *, batch_size: int = 1024) -> dict[str, dict[str, float]]:
        """Per-task loss and metrics on ``split`` (see :func:`evaluate`)."""
        return evaluate(self.model, self.tasks, split, batch_size=batch_size, device=self.device, dist=self.dist)

    # --- the loop ----------------------------------------------------------------------------
    def _check_split(self, split: TensorSplit, name: str) -> None:
        missing = [n for n in self.task_names if n not in split.targets]
        if missing:
            raise ValueError(f"Trainer: the {name} split has no targets for task(s) {missing}")
        if len(split) == 0:
            raise ValueError(f"Trainer: the {name} split is empty")

    def _empty_accum(self) -> dict[str, Tensor]:
        t = len(self.tasks)
        return {
            "loss_sum": torch.zeros(t, dtype=torch.float64),
            "loss_count": torch.zeros(t, dtype=torch.float64),
            "weight_sum": torch.zeros(t, dtype=torch.float64),
            "steps": torch.zeros((), dtype=torch.float64),
        }

    def _losses(self, batch: Batch, outputs: dict[str, Tensor]) -> tuple[list[Tensor], Tensor, Tensor]:
        """Per-task losses as a list (the engine walks each task's sub-graph on its own), presence, counts."""
        losses, counts = [], []
        for t in self.tasks:
            mask = batch.masks[t.name]
            losses.append(t.compute_loss(outputs[t.name], batch.targets[t.name], mask))
            counts.append(mask.sum())
        n = torch.stack(counts)
        return losses, n > 0, n

    def _forward(self, inputs: Tensor) -> tuple[dict[str, Tensor], Tensor | None, dict[str, Tensor] | None]:
        """The model's outputs (float32), shared features and per-task feature views, under autocast."""
        if self.autocast_dtype is None:
            return self.model.forward_task_features(inputs)
        with torch.autocast(self.device_type, dtype=self.autocast_dtype):
            outputs, features, views = self.model.forward_task_features(inputs)
        return {k: v.float() for k, v in outputs.items()}, features, views

    def _accumulated_step(self, batch: Batch, shared: list[nn.Parameter], other: Sequence[Tensor], scale: float) -> Any:
        """Two passes over ``accumulate`` micro-batches (see :class:`multitask.engine.Accumulation`)."""
        acc = self.engine.start_accumulation()
        n = len(batch)
        bounds = [(i * n) // self.accumulate for i in range(self.accumulate + 1)]
        micro = [_shard_batch(batch, slice(lo, hi)) for lo, hi in itertools.pairwise(bounds)]
        rng = []
        for mb in micro:
            rng.append(rng_state(self.device))
            if acc.gradients:
                outputs, features, views = self._forward(mb.inputs)
                losses, _, counts = self._losses(mb, outputs)
                acc.measure(
                    losses,
                    shared,
                    counts=counts,
                    features=features,
                    task_features=[views[t] for t in self.task_names] if views is not None else None,
                    loss_scale=scale,
                )
            else:
                with torch.no_grad():
                    outputs, _, _ = self._forward(mb.inputs)
                    losses, _, counts = self._losses(mb, outputs)
                acc.measure(losses, shared, counts=counts)
        acc.weights(task_names=self.task_names, step=self.global_step + 1, loss_scale=scale)
        after = rng_state(self.device)
        params = [*shared, *other]
        for mb, state in zip(micro, rng, strict=True):
            set_rng_state(self.device, state)  # the same dropout masks as in pass 1
            outputs, _, _ = self._forward(mb.inputs)
            losses, _, counts = self._losses(mb, outputs)
            acc.apply(losses, params, counts=counts, loss_scale=scale)
        set_rng_state(self.device, after)
        return acc.finish(params, loss_scale=scale, extra_loss=self.model.regularizer())

    def _train_epoch(self, train: TensorSplit, val: TensorSplit, shared: list[nn.Parameter]) -> None:
        shared_ids = {id(p) for p in shared}
        other = [p for p in self.model.parameters() if id(p) not in shared_ids] + list(self.weighting.parameters())
        epoch = self.epoch
        num_batches = train.num_batches(self.batch_size)
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch + 1, num_batches, self.batch_in_epoch)
        self.model.train()
        t0 = time.perf_counter()
        for batch in train.batches(
            self.batch_size, shuffle=True, seed=self.seed, epoch=epoch, start=self.batch_in_epoch
        ):
            if self.dist is not None:
                batch = _shard_batch(batch, self.dist.shard(len(batch)))
            batch = batch.to(self.device)
            for cb in self._batch_hooks:
                cb(self, batch)
            self.optimizer.zero_grad(set_to_none=True)
            # the engine multiplies the losses by the scaler's current scale S (scaler.scale(1) == S)
            scale = float(self.scaler.scale(torch.ones((), device=self.device))) if self.scaler is not None else 1.0
            if self.accumulate == 1:
                outputs, features, views = self._forward(batch.inputs)
                losses, present, counts = self._losses(batch, outputs)
                info = self.engine.backward(
                    losses,
                    shared,
                    other_params=other,
                    present=present,
                    counts=counts,
                    features=features if self.engine.needs_gradients() or self.engine.monitor_every else None,
                    task_features=[views[n] for n in self.task_names] if views is not None else None,
                    task_names=self.task_names,
                    step=self.global_step + 1,
                    loss_scale=scale,
                    extra_loss=self.model.regularizer(),
                )
            else:
                info = self._accumulated_step(batch, shared, other, scale)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.global_step += 1
            self.batch_in_epoch += 1
            p = info.present.cpu()
            self._accum["loss_sum"] += torch.where(p, info.losses.cpu().double(), 0.0)
            self._accum["loss_count"] += p.double()
            self._accum["weight_sum"] += info.weights.cpu().double()
            self._accum["steps"] += 1
            for cb in self.callbacks:
                cb.on_step_end(self, info)
            if self.checkpoint_every and self.global_step % self.checkpoint_every == 0 and self.checkpoint_path:
                self.save_checkpoint(self.checkpoint_path)
        self.weighting.on_epoch_end()
        record = self._epoch_record(val, time.perf_counter() - t0)
        for cb in self.callbacks:
            fields = getattr(cb, "epoch_fields", None)  # hooks added after 0.x: duck-typed callbacks may lack them
            if fields is not None:
                record.update(fields(self))
        self.history.append(record)
        if self.metrics_path is not None:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if record["val_loss"] < self.best_score:
            self.best_score = float(record["val_loss"])
            self.best_epoch = record["epoch"]
            self.best_state = copy.deepcopy(self.model.state_dict())
        self.epoch += 1
        self.batch_in_epoch = 0
        self._accum = self._empty_accum()
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)

    def _epoch_record(self, val: TensorSplit, seconds: float) -> dict[str, Any]:
        a = self._accum
        train_losses = (a["loss_sum"] / a["loss_count"].clamp_min(1)).tolist()
        val_metrics = self.evaluate(val)
        main = [t.name for t in self.tasks if not t.auxiliary] or self.task_names
        val_loss = sum(val_metrics[n]["loss"] for n in main) / len(main)
        return {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "train_loss": sum(train_losses) / len(train_losses),
            "train": dict(zip(self.task_names, train_losses, strict=True)),
            "weights": dict(zip(self.task_names, (a["weight_sum"] / a["steps"].clamp_min(1)).tolist(), strict=True)),
            "val_loss": val_loss if math.isfinite(val_loss) else math.inf,
            "val": val_metrics,
            "seconds": seconds,
        }

    def _rewrite_metrics(self) -> None:
        assert self.metrics_path is not None
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "w") as f:
            for record in self.history:
                f.write(json.dumps(record) + "\n")

    # --- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly (see the module docstring)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "weighting": self.weighting.state_dict(),
            "weighting_name": self.weighting.name,
            "engine": self.engine.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": torch.get_rng_state(),
            "progress": {
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "global_step": self.global_step,
                "finished": self.finished,
            },
            "accum": dict(self._accum),
            "best": {"epoch": self.best_epoch, "score": self.best_score, "state": self.best_state},
            "history": json.dumps(self.history),
            "tasks": json.dumps([t.to_dict() for t in self.tasks]),
            "config": json.dumps(self.config),
            "recipe": {
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "optimizer": self.optimizer_name,
                "weight_decay": self.weight_decay,
                "seed": self.seed,
                "grad_mode": self.engine.grad_mode,
                "precision": self.precision,
                "accumulate": self.accumulate,
            },
            "versions": {"multitask": __version__, "torch": str(torch.__version__)},
        }

    def save_checkpoint(self, path: str | Path) -> None:
        """Write the checkpoint (under ``dist``: rank 0 writes, every rank holds the same state)."""
        if self.is_main:
            save_checkpoint(path, self.state())

    def _resume(self, path: Path) -> None:
        """Load ``path`` if it exists; under ``dist`` rank 0 reads it and sends it to the other ranks."""
        if self.dist is None:
            if path.exists():
                self.load_checkpoint(path)
            return
        ckpt: dict[str, Any] | None = None
        error = ""
        if self.dist.is_main and path.exists():
            try:
                ckpt = load_checkpoint(path)
            except CheckpointError as exc:
                error = str(exc)
        ckpt, error = self.dist.broadcast_object((ckpt, error), what="sending the checkpoint")
        if error:
            raise CheckpointError(error)
        if ckpt is not None:
            self.load_checkpoint(path, ckpt=ckpt)

    def load_checkpoint(self, path: str | Path, *, ckpt: dict[str, Any] | None = None) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`; refuse an incompatible one.

        The checkpoint does not depend on the number of processes that wrote it: a run saved by
        ``N`` ranks resumes on ``M`` (global batches, model, optimizer and method state are the same).
        """
        if ckpt is None:
            ckpt = load_checkpoint(path)
        saved_tasks = [d["name"] for d in json.loads(ckpt["tasks"])]
        if saved_tasks != self.task_names:
            raise CheckpointError(f"checkpoint {str(path)!r} was trained on tasks {saved_tasks}, not {self.task_names}")
        if ckpt.get("weighting_name") != self.weighting.name:
            raise CheckpointError(
                f"checkpoint {str(path)!r} used weighting {ckpt.get('weighting_name')!r}, not {self.weighting.name!r}"
            )
        recipe = ckpt.get("recipe", {})
        mine = self.state()["recipe"]
        mine.pop("accumulate")  # the same updates with any number of micro-batches (or processes)
        recipe = {"precision": "32", **recipe}  # checkpoints older than the precision option
        diff = {k: (recipe.get(k), v) for k, v in mine.items() if recipe.get(k) != v}
        if diff:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written with a different recipe: "
                + ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in diff.items())
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.weighting.load_state_dict(ckpt["weighting"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not fit this model: {str(exc).splitlines()[0]}"
            ) from exc
        self.engine.load_state_dict(ckpt["engine"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"])
        prog = ckpt["progress"]
        self.epoch, self.batch_in_epoch = int(prog["epoch"]), int(prog["batch_in_epoch"])
        self.global_step, self.finished = int(prog["global_step"]), bool(prog["finished"])
        self._accum = {k: v.clone() for k, v in ckpt["accum"].items()}
        best = ckpt["best"]
        self.best_epoch, self.best_score, self.best_state = int(best["epoch"]), float(best["score"]), best["state"]
        self.history = json.loads(ckpt["history"])
