"""The main job: a multi-task model and its single-task baselines, trained with one recipe, and Δm.

:func:`run` trains, in one run directory:

* ``multitask/``: the multi-task model (the chosen architecture and weighting, every task);
* ``single/<task>/``: one single-task baseline per (non-auxiliary) task, with the same
  architecture and trunk shape, the same epochs, batch size, optimizer, learning rate, seed and
  splits, and a single head;

then evaluates each model once on the test split with its best-validation parameters and writes
the per-task comparison and Δm. An interrupted run resumes phase by phase (finished phases are
skipped; the interrupted one continues from its checkpoint).

Run directory layout::

    config.yaml         the resolved config
    data.json           dataset summary (sizes, tasks, labelled rows)
    model.mt            the multi-task model, ready to predict (see :mod:`multitask.artifact`)
    multitask/          metrics.jsonl (one line per epoch), checkpoint.pt, result.json
    single/<task>/      the same for each single-task baseline
    baselines.json      the single-task results
    summary.json        per-task table, Δm, timings
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch

from .architectures import build_model
from .artifact import ARTIFACT_NAME, Predictor
from .callbacks.base import Callback
from .callbacks.progress import ProgressBar
from .callbacks.relations import TaskRelations
from .checkpoint import CheckpointError, load_checkpoint
from .config import SOURCE_KEYS, ConfigError, component_params, dump_config, load_config_file, resolve_config
from .data import (
    DATASETS,
    add_reconstruction,
    combine,
    create_sampler,
    is_multi_input,
    load_table,
    mark_auxiliary,
    set_sampler,
)
from .data.base import MultiTaskData
from .distributed import Distributed
from .metrics import delta_m, relative_change
from .trainer import Trainer
from .weighting import create_weighting

__all__ = [
    "check_logger_packages",
    "dataset_label",
    "format_summary",
    "load_data",
    "make_loggers",
    "on_main",
    "run",
    "save_artifact",
    "train_one",
]


def on_main(dist: Distributed | None, fn: Callable[[], Any]) -> Any:
    """``fn()`` on rank 0 only, its result (or its error) shared with every rank.

    Decisions that read the clock or the file system (the run directory's name, whether a phase has
    already finished) are taken once, so that the ranks cannot disagree; file writes happen once.
    """
    if dist is None:
        return fn()
    value: Any = None
    error: BaseException | None = None
    if dist.is_main:
        try:
            value = fn()
        except (ConfigError, CheckpointError, ValueError, OSError) as exc:
            error = exc
    value, error = dist.broadcast_object((value, error), what="sharing rank 0's decision")
    if error is not None:
        raise error
    return value


def _load_one(d: dict[str, Any], params: dict[str, Any]) -> MultiTaskData:
    if d.get("path"):
        return load_table(d["path"], list(d["tasks"]), **params)
    data: MultiTaskData = DATASETS.get(d["dataset"])(**params)
    if d.get("tasks"):
        data = data.select_tasks(list(d["tasks"]))
    return data


def load_data(cfg: dict[str, Any]) -> MultiTaskData:
    """Load the data a resolved config names, restricted to its tasks, with its sampler and auxiliary tasks.

    ``data.combine`` joins several sources into a multi-input dataset (see
    :func:`multitask.data.combine`); ``data.sampler`` sets how a multi-input dataset's training
    batches are drawn; ``data.auxiliary`` marks tasks auxiliary; ``data.auxiliary_reconstruction``
    adds an input-reconstruction auxiliary task.
    """
    d = cfg["data"]
    if d.get("combine"):
        sources = {
            name: _load_one(src, {k: v for k, v in src.items() if k not in SOURCE_KEYS})
            for name, src in d["combine"].items()
        }
        data = combine(sources)
        if d.get("tasks"):
            data = data.select_tasks(list(d["tasks"]))
    else:
        data = _load_one(d, component_params(cfg, "data"))
    if d.get("sampler"):
        if not is_multi_input(data):
            raise ConfigError(
                f"data.sampler is set but dataset {data.name!r} is not multi-input; a sampler applies to "
                "data.combine or a multi-input built-in such as 'multidigits_split'"
            )
        params = {k: v for k, v in d["sampler"].items() if k != "name"}
        data = set_sampler(data, create_sampler(d["sampler"]["name"], **params))
    if d.get("auxiliary"):
        data = mark_auxiliary(data, list(d["auxiliary"]))
    if d.get("auxiliary_reconstruction"):
        data = add_reconstruction(data)
    return data


def dataset_label(cfg: dict[str, Any]) -> str:
    """What a resolved config trains on: the dataset name, the file's stem or the combined sources."""
    d = cfg["data"]
    if d.get("combine"):
        return "+".join(d["combine"])
    return str(d["dataset"] or Path(str(d["path"])).stem)


def train_one(
    cfg: dict[str, Any],
    data: MultiTaskData,
    out: Path,
    *,
    label: str,
    weighting: str | None = None,
    weighting_params: dict[str, Any] | None = None,
    resume: bool = False,
    stream: TextIO | None = None,
    dist: Distributed | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train one model on ``data`` under the recipe of ``cfg``; write and return its result.

    The model is initialised from ``torch.manual_seed(train.seed)``, so every phase of a run
    starts from the same seed. Under ``dist`` every rank trains its share and rank 0 writes.
    ``callbacks`` run after the progress bar and the :class:`TaskRelations` recorder, which
    writes ``relations.jsonl`` whenever a Gramian is available (``train.relations_every``).
    """
    result_path = out / "result.json"

    def finished() -> dict[str, Any] | None:
        out.mkdir(parents=True, exist_ok=True)
        done: dict[str, Any] | None = json.loads(result_path.read_text()) if resume and result_path.exists() else None
        return done

    previous = on_main(dist, finished)
    if previous is not None:
        result: dict[str, Any] = previous
        return result
    tr = cfg["train"]
    torch.manual_seed(tr["seed"])
    model = build_model(cfg["model"]["architecture"], data.input_shape, data.tasks, **component_params(cfg, "model"))
    name = weighting or cfg["weighting"]["name"]
    params = component_params(cfg, "weighting") if weighting_params is None else weighting_params
    quiet = cfg["run"]["quiet"] or (dist is not None and not dist.is_main)
    all_callbacks: list[Callback] = [] if quiet else [ProgressBar(label, stream=stream)]
    all_callbacks.append(TaskRelations(gramian_every=tr["relations_every"], path=out / "relations.jsonl"))
    all_callbacks.extend(callbacks)
    trainer = Trainer(
        model,
        data.tasks,
        create_weighting(name, len(data.tasks), **params),
        epochs=tr["epochs"],
        batch_size=tr["batch_size"],
        lr=tr["lr"],
        optimizer=tr["optimizer"],
        weight_decay=tr["weight_decay"],
        seed=tr["seed"],
        grad_mode=tr["grad_mode"],
        chunk_size=tr["chunk_size"],
        checkpoint_path=out / "checkpoint.pt",
        checkpoint_every=tr["checkpoint_every"],
        metrics_path=out / "metrics.jsonl",
        callbacks=all_callbacks,
        config=cfg,
        device=tr["device"],
        precision=tr["precision"],
        accumulate=tr["accumulate"],
        compile=tr["compile"],
        dist=dist,
    )
    t0 = time.perf_counter()
    trainer.fit(data, resume=resume)
    seconds = time.perf_counter() - t0
    test = trainer.evaluate(data.test)  # once, with the best-validation parameters
    test_last = test
    if trainer.last_state is not None and trainer.best_epoch != len(trainer.history):
        best_state = copy.deepcopy(model.state_dict())
        model.load_state_dict(trainer.last_state)
        test_last = trainer.evaluate(data.test)  # the last epoch, for protocols that report it
        model.load_state_dict(best_state)
    best = trainer.history[trainer.best_epoch - 1] if trainer.best_epoch else trainer.history[-1]
    result = {
        "label": label,
        "tasks": data.task_names,
        "weighting": name,
        "best_epoch": trainer.best_epoch,
        "epochs": trainer.epochs,
        "steps": trainer.global_step,
        "val": best["val"],
        "test": test,
        "test_last": test_last,
        "last_epoch_val": trainer.history[-1]["val"],
        "seconds": seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "processes": 1 if dist is None else dist.world_size,
    }
    on_main(dist, lambda: result_path.write_text(json.dumps(result, indent=2)))
    return result


def save_artifact(run_dir: str | Path, cfg: dict[str, Any] | None = None, data: MultiTaskData | None = None) -> Path:
    """Write ``run_dir/model.mt``: the multi-task model at its best-validation epoch, ready to predict.

    The weights come from ``run_dir/multitask/checkpoint.pt`` (which ends training holding the
    best-validation parameters), so this works after a resumed run too. ``cfg`` and ``data``
    default to the run's ``config.yaml`` and the data it names (re-read, so the training file must
    still be there): that writes the artifact of a run trained before artifacts existed.
    """
    rdir = Path(run_dir)
    if cfg is None:
        if not (rdir / "config.yaml").is_file():
            raise CheckpointError(f"{str(rdir)!r} is not a multitask run directory (no config.yaml)")
        cfg = resolve_config(load_config_file(rdir / "config.yaml"))
    if data is None:
        data = load_data(cfg)
    ckpt = load_checkpoint(rdir / "multitask" / "checkpoint.pt")
    if not ckpt.get("progress", {}).get("finished", False):
        raise CheckpointError(
            f"the multi-task model of {str(rdir)!r} has not finished training; continue it with "
            f"`multitask train --resume {rdir}`"
        )
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the run's RNG alone
        model = build_model(
            cfg["model"]["architecture"], data.input_shape, data.tasks, **component_params(cfg, "model")
        )
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint of {str(rdir)!r} does not fit the model its config builds: {str(exc).splitlines()[0]}"
        ) from exc
    return Predictor.from_training(model, data, cfg).save(rdir / ARTIFACT_NAME)


def make_loggers(cfg: dict[str, Any], run_dir: str | Path) -> list[Callback]:
    """The tracking callbacks ``run.loggers`` names, for the multi-task model of the run in ``run_dir``.

    ``mlflow``: :class:`~multitask.callbacks.mlflow.MLflowLogger` on ``run.mlflow_uri`` (default
    ``sqlite:///<run_dir>/mlflow.db``), experiment ``run.mlflow_experiment``, MLflow run named after
    the run directory (``NAME-seed-S`` under ``--seeds``; its id kept in ``multitask/mlflow_run_id`` so a resumed run continues it).
    ``tensorboard``: :class:`~multitask.callbacks.tensorboard.TensorBoardLogger` writing to
    ``run.tensorboard_dir`` (default ``<run_dir>/tensorboard``). Both log every ``run.log_every``
    steps as well (0: per epoch only). A missing package raises an error naming the extra.
    """
    rdir = Path(run_dir)
    r = cfg["run"]
    loggers: list[Callback] = []
    for name in r.get("loggers") or []:
        if name == "mlflow":
            from .callbacks.mlflow import MLflowLogger

            loggers.append(
                MLflowLogger(
                    tracking_uri=r["mlflow_uri"],
                    experiment=r["mlflow_experiment"],
                    run_name=f"{rdir.parent.name}-{rdir.name}" if rdir.name.startswith("seed-") else rdir.name,
                    run_dir=rdir,
                    log_every=r["log_every"],
                    tags={"multitask.phase": "multitask", "multitask.seed": str(cfg["train"]["seed"])},
                    run_id_path=rdir / "multitask" / "mlflow_run_id",
                )
            )
        elif name == "tensorboard":
            from .callbacks.tensorboard import TensorBoardLogger

            log_dir = r["tensorboard_dir"] if r["tensorboard_dir"] else rdir / "tensorboard"
            loggers.append(TensorBoardLogger(log_dir=log_dir, log_every=r["log_every"]))
        else:
            raise ConfigError(f"run.loggers: unknown logger {name!r}; valid: mlflow, tensorboard")
    return loggers


def check_logger_packages(cfg: dict[str, Any]) -> None:
    """Raise :class:`~multitask.data.base.MissingDependencyError` (naming the extra) for a logger whose package is missing."""
    names = cfg["run"].get("loggers") or []
    if "mlflow" in names:
        from .callbacks.mlflow import _client_class

        _client_class()
    if "tensorboard" in names:
        from .callbacks.tensorboard import _writer_class

        _writer_class()


def _finish_loggers(loggers: Sequence[Callback], run_dir: Path, summary: dict[str, Any]) -> None:
    """Attach the run's outputs to the MLflow run: model.mt, summary.json, config.yaml, test metrics and Δm."""
    from .callbacks._tracking import safe_name

    metrics: dict[str, float] = {}
    for row in summary.get("rows", []):
        for metric, values in row.get("all_metrics", {}).items():
            for which, prefix in (("multi", "test"), ("single", "single_task")):
                v = values.get(which)
                if isinstance(v, int | float) and math.isfinite(v):
                    metrics[f"{prefix}/{safe_name(row['task'])}/{safe_name(metric)}"] = float(v)
    for key in ("delta_m", "delta_m_all_metrics"):
        if isinstance(summary.get(key), float) and math.isfinite(summary[key]):
            metrics[key] = summary[key]
    for logger in loggers:
        log_files = getattr(logger, "log_files", None)
        if log_files is not None:
            log_files([run_dir / ARTIFACT_NAME, run_dir / "summary.json", run_dir / "config.yaml"], metrics=metrics)


def _new_run_dir(cfg: dict[str, Any]) -> Path:
    base = Path(cfg["run"]["out_dir"])
    name = cfg["run"]["name"]
    if not name:
        what = dataset_label(cfg)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{what}-{cfg['model']['architecture']}-{cfg['weighting']['name']}-{stamp}"
    run_dir = base / str(name)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"run directory {str(run_dir)!r} already exists and is not empty; choose another run.name, "
            f"or continue it with --resume {run_dir}"
        )
    return run_dir


def run(
    cfg: dict[str, Any],
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    stream: TextIO | None = None,
    on_phase: Callable[[str], None] | None = None,
    dist: Distributed | None = None,
) -> dict[str, Any]:
    """Train the multi-task model and its single-task baselines; return the summary.

    Args:
        cfg: a config (resolved here; see :mod:`multitask.config`).
        run_dir: the run directory (default: ``run.out_dir/run.name`` or a timestamped name).
        resume: continue the run in ``run_dir`` (its saved config is used; ``cfg`` is ignored).
        stream: where progress goes (default stderr).
        on_phase: called with each phase label before it starts (used by tests).
        dist: the process group when launched by ``torchrun`` (rank 0 names the run directory
            and writes every file; all ranks train).
    """
    if resume:
        if run_dir is None:
            raise ConfigError("resume needs the run directory to continue")
        resume_dir = Path(run_dir)

        def saved_config() -> dict[str, Any]:
            if not (resume_dir / "config.yaml").is_file():
                raise CheckpointError(f"{str(resume_dir)!r} is not a multitask run directory (no config.yaml)")
            return load_config_file(resume_dir / "config.yaml")

        quiet = cfg.get("run", {}).get("quiet", False) if cfg else False
        cfg = resolve_config(on_main(dist, saved_config))
        cfg["run"]["quiet"] = quiet
        rdir = resume_dir
    else:
        cfg = resolve_config(cfg)
        check_logger_packages(cfg)  # before the run directory is created
        chosen = Path(run_dir) if run_dir is not None else None

        def new_dir() -> Path:
            d = chosen if chosen is not None else _new_run_dir(cfg)
            if d.exists() and any(d.iterdir()):
                raise ConfigError(f"run directory {str(d)!r} is not empty; use --resume to continue it")
            d.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, d / "config.yaml")
            return d

        rdir = on_main(dist, new_dir)

    loggers = make_loggers(cfg, rdir)  # before the data: a missing package fails at once
    data = load_data(cfg)
    on_main(dist, lambda: (rdir / "data.json").write_text(json.dumps(data.summary(), indent=2, default=str)))
    if on_phase:
        on_phase("multitask")
    mtl = train_one(
        cfg, data, rdir / "multitask", label="multi-task", resume=resume, stream=stream, dist=dist, callbacks=loggers
    )
    on_main(dist, lambda: save_artifact(rdir, cfg, data))
    single: dict[str, dict[str, Any]] = {}
    main_tasks = [t for t in data.tasks if not t.auxiliary]
    if cfg["run"]["baselines"]:
        for task in main_tasks:
            if on_phase:
                on_phase(f"single/{task.name}")
            single[task.name] = train_one(
                cfg,
                data.select_tasks([task.name]),
                rdir / "single" / task.name,
                label=f"single:{task.name}",
                weighting="equal",
                weighting_params={},
                resume=resume,
                stream=stream,
                dist=dist,
            )
        on_main(dist, lambda: (rdir / "baselines.json").write_text(json.dumps(single, indent=2)))
    summary = _summarise(cfg, data, mtl, single, rdir)
    summary["processes"] = 1 if dist is None else dist.world_size
    on_main(dist, lambda: (rdir / "summary.json").write_text(json.dumps(summary, indent=2)))
    if loggers:
        on_main(dist, lambda: _finish_loggers(loggers, rdir, summary))
    return summary


def _summarise(
    cfg: dict[str, Any], data: MultiTaskData, mtl: dict[str, Any], single: dict[str, dict[str, Any]], run_dir: Path
) -> dict[str, Any]:
    rows = []
    main_tasks = [t for t in data.tasks if not t.auxiliary]
    for t in main_tasks:
        m = t.main_metric
        multi_v = mtl["test"][t.name][m.name]
        row: dict[str, Any] = {
            "task": t.name,
            "metric": m.name,
            "higher_is_better": m.higher_is_better,
            "multi": multi_v,
        }
        if t.name in single:
            single_v = single[t.name]["test"][t.name][m.name]
            row["single"] = single_v
            row["relative_change"] = relative_change(multi_v, single_v, m.higher_is_better)
        row["all_metrics"] = {
            name: {
                "multi": mtl["test"][t.name][name],
                **({"single": single[t.name]["test"][t.name][name]} if t.name in single else {}),
            }
            for name in t.directions
        }
        rows.append(row)
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "dataset": cfg["data"]["dataset"] or cfg["data"]["path"] or dataset_label(cfg),
        "architecture": cfg["model"]["architecture"],
        "weighting": cfg["weighting"]["name"],
        "seed": cfg["train"]["seed"],
        "epochs": cfg["train"]["epochs"],
        "split": "test (each model at its best-validation epoch)",
        "rows": rows,
        "multitask_seconds": mtl["seconds"],
        "multitask_best_epoch": mtl["best_epoch"],
        "multitask_parameters": mtl["parameters"],
    }
    if single:
        mtl_test = {t.name: mtl["test"][t.name] for t in main_tasks}
        stl_test = {t.name: single[t.name]["test"][t.name] for t in main_tasks}
        summary["delta_m"] = delta_m(
            mtl_test, stl_test, {t.name: {t.main_metric.name: t.main_metric.higher_is_better} for t in main_tasks}
        )
        summary["delta_m_all_metrics"] = delta_m(mtl_test, stl_test, {t.name: t.directions for t in main_tasks})
        summary["delta_m_averaging"] = (
            "delta_m: mean over tasks of the signed relative change of each task's main metric; "
            "delta_m_all_metrics: relative changes averaged within each task over all its metrics, then over tasks"
        )
        summary["single_task_seconds"] = sum(s["seconds"] for s in single.values())
        summary["single_task_parameters"] = sum(s["parameters"] for s in single.values())
    return summary


def _fmt(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def format_summary(summary: dict[str, Any]) -> str:
    """The per-task table and Δm as printed by ``multitask train``."""
    lines = [
        f"{summary['dataset']}: {summary['architecture']} + {summary['weighting']}, "
        f"{summary['epochs']} epochs, seed {summary['seed']}; {summary['split']}",
    ]
    header = ("task", "metric", "single-task", "multi-task", "rel. change")
    table = [header]
    for r in summary["rows"]:
        arrow = "↑" if r["higher_is_better"] else "↓"
        change = r.get("relative_change")
        table.append(
            (
                r["task"],
                f"{r['metric']} {arrow}",
                _fmt(r["single"]) if "single" in r else "-",
                _fmt(r["multi"]),
                "-" if change is None or math.isnan(change) else f"{100 * change:+.2f}%",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        lines.append(
            "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if "delta_m" in summary:
        lines.append(
            f"Δm = {100 * summary['delta_m']:+.2f}%  (mean over tasks of each task's main-metric relative change; "
            "positive = multi-task better)"
        )
        lines.append(
            f"Δm over all metrics = {100 * summary['delta_m_all_metrics']:+.2f}%  (averaged within each task, then over tasks)"
        )
        lines.append(
            f"cost: multi-task {summary['multitask_seconds']:.1f}s, {summary['multitask_parameters']:,} params; "
            f"single-task total {summary['single_task_seconds']:.1f}s, {summary['single_task_parameters']:,} params"
        )
    lines.append(f"run directory: {summary['run_dir']}")
    return "\n".join(lines)


def seeds_summary(summaries: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean and sample standard deviation of Δm over several runs (e.g. seeds)."""
    vals = [s["delta_m"] for s in summaries if "delta_m" in s]
    if not vals:
        return {}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "n": float(len(vals))}
