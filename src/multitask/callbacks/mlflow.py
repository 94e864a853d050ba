"""``MLflowLogger``: per-task losses, metrics, task weights, gradient relations, config and artifacts in MLflow.

Uses :class:`mlflow.tracking.MlflowClient` only (no global active run), on rank 0 only. The default
backend is a local SQLite file (``sqlite:///<run_dir>/mlflow.db`` under ``multitask train``, else
``./mlruns.db``) with artifacts beside it (``mlartifacts/``); ``tracking_uri`` may name any MLflow
backend, e.g. a tracking server ``http://host:5000``. Browse with
``mlflow ui --backend-store-uri sqlite:///runs/NAME/mlflow.db``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._tracking import TRACKING_EXTRA, epoch_scalars, flatten, safe_name
from .base import Callback

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from ..engine import StepInfo
    from ..trainer import Trainer

__all__ = ["MLflowLogger", "default_mlflow_uri"]


def default_mlflow_uri(run_dir: str | Path | None = None) -> str:
    """``sqlite:///<run_dir>/mlflow.db`` (absolute path), or ``sqlite:///<cwd>/mlruns.db`` without a run directory."""
    db = Path(run_dir) / "mlflow.db" if run_dir is not None else Path("mlruns.db")
    return "sqlite:///" + str(db.resolve())


def _client_class() -> type[MlflowClient]:
    from ..data.base import MissingDependencyError

    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MissingDependencyError(
            f"the mlflow logger needs the mlflow package ({exc}); install it with: {TRACKING_EXTRA}"
        ) from None
    return MlflowClient


@contextlib.contextmanager
def _quiet_store() -> Iterator[None]:
    """Silence MLflow's INFO lines while it creates or migrates a SQLite store (progress output is ours)."""
    loggers = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic.runtime.migration")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class MLflowLogger(Callback):
    """Log a training to MLflow: params, per-epoch metrics, gradient relations, config and artifacts.

    Per epoch (step = epoch): ``train/<task>/loss``, ``val/<task>/<metric>``, ``weight/<task>``,
    ``train_loss``, ``val_loss`` and, when the epoch recorded gradient relations (a gradient
    weighting, or ``train.relations_every``), ``relations/mean_cosine`` and
    ``relations/conflict_rate`` as metrics and the full matrices as the artifact
    ``relations/epoch_<k>.json``. Every ``log_every`` steps (step = global step): ``step/loss/<task>``
    and ``step/weight/<task>``. The flattened config becomes the params and ``config.json`` an
    artifact. :meth:`log_files` adds files after training (``multitask train`` adds ``model.mt``
    and ``summary.json``).

    Args:
        tracking_uri: the MLflow backend (default: :func:`default_mlflow_uri` of ``run_dir``).
        experiment: the MLflow experiment name (created when missing).
        run_name: the MLflow run's name (default: MLflow's generated one).
        run_dir: the multitask run directory, for the default URI (and logged as a tag).
        log_every: also log per-step task losses and weights every this many steps (0: per epoch only).
        tags: extra run tags, e.g. ``{"phase": "multitask"}``.
        run_id_path: a file remembering the MLflow run id; a logger given an existing one (a resumed
            training) continues that run instead of starting a new one.
    """

    def __init__(
        self,
        *,
        tracking_uri: str | None = None,
        experiment: str = "multitask",
        run_name: str | None = None,
        run_dir: str | Path | None = None,
        log_every: int = 0,
        tags: Mapping[str, str] | None = None,
        run_id_path: str | Path | None = None,
    ) -> None:
        if tracking_uri is not None and (not isinstance(tracking_uri, str) or not tracking_uri.strip()):
            raise ValueError(
                f"MLflowLogger: tracking_uri={tracking_uri!r} must be an MLflow URI such as "
                "'sqlite:///mlflow.db' or 'http://host:5000' (or None for a SQLite file in the run directory)"
            )
        if not isinstance(experiment, str) or not experiment.strip():
            raise ValueError(f"MLflowLogger: experiment={experiment!r} must be a non-empty experiment name")
        if not isinstance(log_every, int) or isinstance(log_every, bool) or log_every < 0:
            raise ValueError(f"MLflowLogger: log_every={log_every!r} must be an integer >= 0 (0: per epoch only)")
        self.tracking_uri = tracking_uri if tracking_uri is not None else default_mlflow_uri(run_dir)
        self.experiment = experiment
        self.run_name = run_name
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.log_every = log_every
        self.tags = dict(tags or {})
        self.run_id_path = None if run_id_path is None else Path(run_id_path)
        self.run_id: str | None = None
        self._client: MlflowClient | None = None
        _client_class()  # fail now, not after the first epoch, when mlflow is missing

    @property
    def client(self) -> MlflowClient:
        """The MLflow client (created on first use)."""
        if self._client is None:
            with _quiet_store():
                client = _client_class()(tracking_uri=self.tracking_uri)
                client.search_experiments(max_results=1)  # opens (creates, migrates) the store now, quietly
            self._client = client
        return self._client

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.tracking_uri.startswith("sqlite:///"):  # artifacts beside the database, not in the cwd
            location = (Path(self.tracking_uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
        return str(self.client.create_experiment(self.experiment, artifact_location=location))

    def _log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        assert self.run_id is not None
        now = int(time.time() * 1000)
        items = [Metric(key=k, value=float(v), timestamp=now, step=step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def _log_epoch(self, record: Mapping[str, Any]) -> None:
        assert self.run_id is not None
        epoch = int(record.get("epoch", 0))
        self._log(epoch_scalars(record), epoch)
        if isinstance(record.get("relations"), Mapping):
            self.client.log_dict(self.run_id, dict(record["relations"]), f"relations/epoch_{epoch}.json")

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.is_main:
            return
        from mlflow.entities import Param

        if self.run_id is None and self.run_id_path is not None and self.run_id_path.is_file():
            self.run_id = self.run_id_path.read_text().strip() or None
            if self.run_id is not None:
                self.client.update_run(self.run_id, status="RUNNING")
                return
        tags = {"multitask.tasks": ",".join(trainer.task_names), **self.tags}
        if self.run_dir is not None:
            tags["multitask.run_dir"] = str(self.run_dir.resolve())
        run = self.client.create_run(self._experiment_id(), run_name=self.run_name, tags=tags)
        self.run_id = str(run.info.run_id)
        if self.run_id_path is not None:
            self.run_id_path.parent.mkdir(parents=True, exist_ok=True)
            self.run_id_path.write_text(self.run_id + "\n")
        params = [Param(k, v) for k, v in flatten(trainer.config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.client.log_dict(self.run_id, json.loads(json.dumps(trainer.config, default=str)), "config.json")
        for record in trainer.history:  # a resumed training whose earlier epochs this run has not seen
            self._log_epoch(record)

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        if not trainer.is_main or self.run_id is None or not self.log_every or trainer.global_step % self.log_every:
            return
        metrics: dict[str, float] = {}
        losses, weights, present = info.losses.tolist(), info.weights.tolist(), info.present.tolist()
        for name, loss, weight, here in zip(trainer.task_names, losses, weights, present, strict=True):
            if here:
                metrics[f"step/loss/{safe_name(name)}"] = float(loss)
            metrics[f"step/weight/{safe_name(name)}"] = float(weight)
        self._log(metrics, trainer.global_step)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.is_main and self.run_id is not None:
            self._log_epoch(record)

    def on_fit_end(self, trainer: Trainer) -> None:
        if trainer.is_main and self.run_id is not None:
            self._log({"best_epoch": float(trainer.best_epoch)}, trainer.global_step)
            self.client.set_terminated(self.run_id, status="FINISHED")

    def log_files(self, paths: list[Path], *, metrics: Mapping[str, float] | None = None) -> None:
        """After training: attach the existing files of ``paths`` and final ``metrics`` (step 0) to the run."""
        if self.run_id is None and self.run_id_path is not None and self.run_id_path.is_file():
            self.run_id = self.run_id_path.read_text().strip() or None  # a resumed run whose training had finished
        if self.run_id is None:
            return
        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        if metrics:
            self._log(metrics, 0)
