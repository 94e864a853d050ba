"""The ``multitask`` command: train, predict, serve, export, monitor, report, bench, affinity, group, list.

``multitask train --nproc N`` re-runs itself under ``torchrun``; under ``torchrun`` (``WORLD_SIZE``
set) every rank trains its share of each batch and rank 0 prints and writes.

Every subcommand is callable in-process: ``main(["train", "--epochs", "2"])`` returns the exit
code (0 success, 2 bad input, 130 interrupted; ``monitor``: 1 drift at or above ``--fail-on``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .distributed import Distributed
    from .relations import Grouping

__all__ = ["build_parser", "main"]


def _add_recipe_args(p: argparse.ArgumentParser, *, weighting: str, prefix: str = "") -> None:
    """The data, model and recipe options that ``affinity`` and ``group --train`` share with ``train``."""
    p.add_argument("--config", metavar="FILE", help=f"{prefix}a TOML, YAML or JSON config (options override it)")
    p.add_argument("--dataset", metavar="NAME", help=f"{prefix}a built-in dataset (see `multitask list datasets`)")
    p.add_argument("--data", metavar="FILE", help=f"{prefix}your own CSV or Parquet file (needs --task)")
    p.add_argument("--task", action="append", metavar="SPEC", help=f"{prefix}COLUMN:KIND for --data (repeat per task)")
    p.add_argument("--architecture", metavar="NAME", help=f"{prefix}model architecture (default hard_sharing)")
    p.add_argument("--weighting", metavar="NAME", help=f"{prefix}{weighting}")
    p.add_argument("--epochs", type=int, help=f"{prefix}training epochs")
    p.add_argument("--batch-size", type=int, help=f"{prefix}mini-batch size")
    p.add_argument("--lr", type=float, help=f"{prefix}learning rate")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"{prefix}any config value",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multitask",
        description="Multi-task learning: train, compare against single-task baselines, predict, list methods.",
    )
    parser.add_argument("--version", action="version", version=f"multitask {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser(
        "train",
        help="train a multi-task model and its single-task baselines, print the table and Δm",
        description="Train a multi-task model and, with the same recipe, one single-task baseline per task; "
        "print the per-task test table and Δm and write a run directory. With no options it trains on the "
        "built-in `multidigits` dataset.",
    )
    tr.add_argument("--config", metavar="FILE", help="a TOML, YAML or JSON config (command-line options override it)")
    tr.add_argument("--dataset", metavar="NAME", help="a built-in dataset (see `multitask list datasets`)")
    tr.add_argument("--data", metavar="FILE", help="your own CSV or Parquet file (needs --task)")
    tr.add_argument(
        "--task",
        action="append",
        metavar="SPEC",
        help="COLUMN:KIND with KIND binary|multiclass|regression for --data (repeat per task); "
        "for a built-in dataset, a task name to keep",
    )
    tr.add_argument("--architecture", metavar="NAME", help="model architecture (default hard_sharing)")
    tr.add_argument(
        "--weighting",
        metavar="NAME",
        help="task weighting method (default equal); chain stages with +, e.g. normalize_gradients+mgda",
    )
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--optimizer", metavar="NAME", help="adam, adamw or sgd")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--seeds", metavar="LIST", help="comma-separated seeds: one full run per seed, then mean ± std Δm")
    tr.add_argument(
        "--grad-mode",
        metavar="MODE",
        help="how gradient methods get the task gradients: exact (shared parameters), features (shared "
        "representation, cheap), every:K (exact weights recomputed every K steps) or features+every:K",
    )
    tr.add_argument("--device", metavar="DEVICE", help="cpu, cuda or auto")
    tr.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="data-parallel training on N local processes (launches torchrun; gloo on CPU, nccl on GPU); "
        "train.batch_size stays the global batch",
    )
    tr.add_argument("--precision", metavar="P", help="32 (default), bf16 (autocast) or fp16 (autocast + GradScaler)")
    tr.add_argument(
        "--accumulate", type=int, metavar="K", help="split every batch into K micro-batches (same update, less memory)"
    )
    tr.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the model's parts (loss-only weightings and features grad modes)",
    )
    tr.add_argument("--out-dir", metavar="DIR", help="parent directory of run directories (default runs)")
    tr.add_argument("--name", metavar="NAME", help="run directory name (default: dataset-architecture-weighting-time)")
    tr.add_argument("--no-baselines", action="store_true", help="skip the single-task baselines (no Δm)")
    tr.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any config value, e.g. --set model.hidden=[512,256] --set weighting.temperature=2",
    )
    tr.add_argument(
        "--logger",
        action="append",
        metavar="NAME",
        help="track the multi-task model with mlflow or tensorboard (repeat for both; run.loggers); "
        "needs pip install 'multitask[tracking]'",
    )
    tr.add_argument(
        "--mlflow-uri", metavar="URI", help="MLflow backend (default sqlite:///RUN_DIR/mlflow.db; run.mlflow_uri)"
    )
    tr.add_argument(
        "--tensorboard-dir", metavar="DIR", help="TensorBoard event directory (default RUN_DIR/tensorboard)"
    )
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its directory")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress output; print only the final table")
    tr.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")

    pr = sub.add_parser(
        "predict",
        help="predict with a trained model: one output row per input row, labels and probabilities",
        description="Load a trained model (a run directory or its model.mt) and predict every task, or --tasks, "
        "for each row of --data: <task> is the label (original encoding) or the value (original units), "
        "<task>_proba the positive-class probability (binary), <task>_proba_<class> each class's (multiclass). "
        "Extra columns are ignored; a missing feature column, a non-numeric value in a numeric column or NaN "
        "without imputation is an error (exit status 2). See docs/serving.md.",
    )
    pr.add_argument("model", metavar="RUN_OR_ARTIFACT", help="a run directory of `multitask train` or a model.mt file")
    pr.add_argument(
        "--data",
        metavar="FILE",
        required=True,
        help="CSV or Parquet with the model's feature columns; for a model trained on a built-in tensor "
        "dataset, a .npy or .pt array [N, ...] of preprocessed inputs",
    )
    pr.add_argument("--tasks", metavar="LIST", help="comma-separated tasks to predict (default: every task)")
    pr.add_argument("--out", metavar="FILE", help="output file (default: CSV on stdout)")
    pr.add_argument(
        "--format", choices=["csv", "parquet", "json"], help="output format (default: from --out's extension, else csv)"
    )
    pr.add_argument(
        "--id-column", metavar="COLUMN", help="a column of --data copied unchanged as the first output column"
    )
    pr.add_argument(
        "--unknown-categories",
        choices=["warn", "error", "ignore"],
        default="warn",
        help="categorical values never seen in training are encoded as all zeros (no category); warn (default) "
        "prints a count per column, error refuses the file, ignore says nothing",
    )
    pr.add_argument("--batch-size", type=int, default=4096, metavar="N", help="rows per forward pass (default 4096)")

    mo = sub.add_parser(
        "monitor",
        help="drift of new data and of the model's predictions against the training reference in the artifact",
        description="Compare --data with the training reference stored in the model's artifact: per numeric "
        "feature the PSI over training-decile bins and a KS test, per categorical feature the total variation "
        "distance of category shares and the categories never seen in training, per task the drift of the "
        "predictions. Prints a table, writes --json, and exits 0 when no row reaches --fail-on, 1 when one "
        "does (drift detected), 2 on bad input or usage. See docs/serving.md.",
    )
    mo.add_argument("model", metavar="RUN_OR_ARTIFACT", help="a run directory of `multitask train` or a model.mt file")
    mo.add_argument(
        "--data",
        metavar="FILE",
        required=True,
        help="CSV or Parquet with the model's feature columns (a .npy or .pt array for a tensor model)",
    )
    mo.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    mo.add_argument("--psi-warn", type=float, default=0.1, metavar="X", help="PSI warn level (default 0.1)")
    mo.add_argument(
        "--psi-alert", type=float, default=0.25, metavar="X", help="PSI alert level of features (default 0.25)"
    )
    mo.add_argument(
        "--prediction-psi-alert",
        type=float,
        default=0.25,
        metavar="X",
        help="PSI alert level of binary/regression predictions (default 0.25)",
    )
    mo.add_argument(
        "--ks-alpha", type=float, default=0.01, metavar="P", help="KS test significance: warn below (default 0.01)"
    )
    mo.add_argument(
        "--category-shift",
        type=float,
        default=0.1,
        metavar="TV",
        help="total variation alert level of category and predicted-class shares; warn at half (default 0.1)",
    )
    mo.add_argument(
        "--fail-on",
        choices=["warn", "alert"],
        default="alert",
        help="exit 1 when any row is at or above this level (default alert)",
    )
    ex = sub.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript, every output checked against the eager model",
        description="Export a trained model (a run directory or its model.mt) from the preprocessed input tensor to "
        "the raw per-task outputs (logits, standardised values), one output per task named by the task, with a "
        "dynamic batch axis. The file is written to a temporary name, loaded back (ONNX Runtime or torch.jit.load) "
        "and every output compared by name with the eager model on sample inputs at each --batch-sizes; on any "
        "mismatch nothing is written (exit status 2). A sidecar FILE.json records the task order, labels, target "
        "scaling and preprocessing. See docs/serving.md.",
    )
    ex.add_argument("model", metavar="RUN_OR_ARTIFACT", help="a run directory of `multitask train` or a model.mt file")
    ex.add_argument(
        "--format",
        default="onnx",
        metavar="FORMAT",
        help="onnx (default; needs pip install 'multitask[export]') or torchscript",
    )
    ex.add_argument(
        "--out", metavar="FILE", help="output file (default: model.onnx or model.torchscript.pt next to model.mt)"
    )
    ex.add_argument("--opset", type=int, metavar="N", help="ONNX opset version (default: the exporter's)")
    ex.add_argument(
        "--batch-sizes",
        default="1,7,64",
        metavar="LIST",
        help="comma-separated batch sizes the export is verified at (default 1,7,64)",
    )
    ex.add_argument(
        "--data",
        metavar="FILE",
        help="verify on these inputs (CSV/Parquet, or .npy/.pt for a tensor model) instead of drawn rows",
    )
    ex.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of the comparison (default 1e-4)")
    ex.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance of the comparison (default 1e-5)")

    be = sub.add_parser(
        "bench",
        help="a grid of datasets x architectures x weightings x seeds against single-task baselines",
        description="Train every (dataset, architecture, weighting, seed) cell and single-task baselines with one "
        "recipe per dataset, select on validation, and write results.csv, summary.md (Δm, mean rank, wall time) and "
        "delta_m.png to OUT. Finished cells are skipped, so rerunning the command resumes the grid.",
    )
    be.add_argument("--config", metavar="FILE", help="a TOML/YAML/JSON grid (keys of multitask.bench.Grid)")
    be.add_argument("--datasets", metavar="LIST", help="comma-separated built-in datasets")
    be.add_argument("--architectures", metavar="LIST", help="comma-separated architectures (default hard_sharing)")
    be.add_argument(
        "--weightings",
        metavar="LIST",
        help="comma-separated weightings; tuned_static = scalarization tuned on validation",
    )
    be.add_argument("--seeds", metavar="LIST", help="comma-separated seeds (default 0,1,2)")
    be.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train.KEY=V for every dataset, data.DATASET.KEY=V, model.ARCH.KEY=V (e.g. --set train.epochs=5 "
        "--set data.qm9.subset=20000)",
    )
    be.add_argument("--out", metavar="DIR", required=True, help="output directory (rerun to resume)")
    be.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    af = sub.add_parser(
        "affinity",
        help="which tasks help or hurt each other: label similarity, exact TAG affinity and cheap estimates",
        description="Train the all-tasks model of a config (the same options as `train`) while measuring, every "
        "--every steps, the exact lookahead affinity of TAG (Fifty et al. 2021) and its cheap estimates (first "
        "order from the Gramian, first order at the shared features, random projections), with their costs; add "
        "label similarity and, with --pairwise, pairwise transfer gains from short trainings. Writes "
        "affinity.json, one CSV and one heatmap per matrix (for `multitask group`) to OUT.",
    )
    _add_recipe_args(af, weighting="weighting of the measured training run (default equal)")
    af.add_argument("--optimizer", metavar="NAME")
    af.add_argument("--seed", type=int)
    af.add_argument("--grad-mode", metavar="MODE")
    af.add_argument("--device", metavar="DEVICE")
    af.add_argument("--every", type=int, default=1, metavar="N", help="measure every N training steps (default 1)")
    af.add_argument("--lookahead-lr", type=float, metavar="ETA", help="lookahead step (default: the learning rate)")
    af.add_argument("--projections", type=int, default=4, metavar="K", help="random directions (default 4)")
    af.add_argument(
        "--pairwise", action="store_true", help="also train every task alone and every pair (T(T+1)/2 trainings)"
    )
    af.add_argument("--out", metavar="DIR", required=True, help="output directory")
    af.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    af.add_argument("--json", action="store_true", help="print affinity.json instead of the table")

    gr = sub.add_parser(
        "group",
        help="choose groups of tasks to train together (one model per group) from a task-affinity file",
        description="Read a task-affinity matrix (Z[i, j] = how much training on task i helps task j; a JSON or "
        "CSV file, see docs/relations.md) and choose groups of tasks, one model per group: TAG's network "
        "selection (groups may overlap, each task is served by its best group) or a partition into disjoint "
        "groups. Exact (proven optimal) up to 15 tasks with --method auto, local search above. Give --k, --cost "
        "or both.",
    )
    gr.add_argument("affinity", metavar="AFFINITY_FILE", help="a .json or .csv affinity file (rows = source task)")
    gr.add_argument("--matrix", metavar="NAME", help="the matrix of a JSON file to use (default: tag, else the first)")
    gr.add_argument("--k", type=int, metavar="K", help="at most K groups (models to train)")
    gr.add_argument("--cost", type=float, metavar="C", help="price of one model, subtracted once per group")
    gr.add_argument(
        "--objective",
        default="tag",
        metavar="NAME",
        help="tag (default: TAG network selection, overlapping groups) or partition (disjoint groups)",
    )
    gr.add_argument(
        "--method",
        default="auto",
        metavar="NAME",
        help="auto (default: exact up to 15 tasks, else local search), exact, greedy or spectral",
    )
    gr.add_argument(
        "--singleton", type=float, default=0.0, metavar="S", help="score of a task trained alone (tag; default 0)"
    )
    gr.add_argument("--seed", type=int, default=0, help="seed of the local search (default 0)")
    gr.add_argument("--time-limit", type=float, metavar="SECONDS", help="stop searching after this many seconds")
    gr.add_argument("--json", metavar="OUT.json", help="also write the grouping as JSON to this file")
    gr.add_argument(
        "--train",
        action="store_true",
        help="then train one model per group, one with all tasks and one per task (same recipe; give the data "
        "with --dataset/--data/--config) and compare them on the test split",
    )
    _add_recipe_args(gr, weighting="weighting of the multi-task models (default equal)", prefix="with --train: ")
    gr.add_argument("--train-seed", dest="train_seed", type=int, help="with --train: training seed")
    gr.add_argument("--out", metavar="DIR", help="with --train: where the models go (rerun to reuse finished ones)")
    gr.add_argument("-q", "--quiet", action="store_true", help="with --train: no progress output")

    rp = sub.add_parser(
        "report",
        help="a self-contained HTML report of a run: learning curves, task weights, gradient conflicts, Δm",
        description="Write one HTML file (plots inlined, no external resources) from a run directory of "
        "`multitask train`: per-task learning curves, task weights over epochs, the gradient-cosine and conflict "
        "heatmaps (when relations.jsonl was recorded), multi-task vs single-task bars and Δm (when baselines ran), "
        "the config and versions. Needs matplotlib (pip install 'multitask[tracking]').",
    )
    rp.add_argument("run_dir", metavar="RUN", help="a run directory of `multitask train`")
    rp.add_argument("--out", metavar="FILE", help="output file (default RUN/report.html)")
    sv = sub.add_parser(
        "serve",
        help="serve a trained model over HTTP (KServe v2-style JSON, micro-batching; needs multitask[serve])",
        description="Serve a trained model (a run directory or its model.mt) with uvicorn: GET /v2/health/live, "
        "/v2/health/ready, /v2/models/NAME (metadata), POST /v2/models/NAME/infer, /docs (OpenAPI). Concurrent "
        "requests are answered by one batched forward pass. See docs/serving.md.",
    )
    sv.add_argument("model", metavar="RUN_OR_ARTIFACT", help="a run directory of `multitask train` or a model.mt file")
    sv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    sv.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    sv.add_argument("--name", metavar="NAME", help="model name in the URLs (default: the run directory's name)")
    sv.add_argument("--max-batch", type=int, default=64, metavar="N", help="most rows per batched forward (default 64)")
    sv.add_argument(
        "--max-wait-ms", type=float, default=2.0, metavar="MS", help="wait for a batch to fill (default 2.0 ms)"
    )
    sv.add_argument(
        "--max-body-bytes", type=int, default=1_000_000, metavar="N", help="larger bodies get 413 (default 1000000)"
    )
    sv.add_argument("--max-rows", type=int, default=10_000, metavar="N", help="most rows per request (default 10000)")
    sv.add_argument(
        "--unknown-categories",
        choices=["warn", "error", "ignore"],
        default="ignore",
        help="unseen categorical values: encoded as all zeros (ignore, default; warn also logs) or refused (error, 422)",
    )
    sv.add_argument("--workers", type=int, default=1, metavar="N", help="server processes (default 1)")

    ls = sub.add_parser("list", help="list weightings, architectures, datasets or samplers with their parameters")
    ls.add_argument("what", choices=["weightings", "architectures", "datasets", "samplers"])
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from .config import apply_overrides, load_config_file

    cfg: dict[str, Any] = load_config_file(args.config) if args.config else {}
    flat: dict[str, Any] = {}
    if args.data:
        flat["data.path"] = args.data
        flat["data.dataset"] = None
        flat["data.combine"] = None
    if args.dataset:
        flat["data.dataset"] = args.dataset
        flat["data.path"] = None
        flat["data.combine"] = None
    if args.task:
        flat["data.tasks"] = list(args.task)
    for flag, key in (
        ("architecture", "model.architecture"),
        ("weighting", "weighting.name"),
        ("epochs", "train.epochs"),
        ("batch_size", "train.batch_size"),
        ("lr", "train.lr"),
        ("optimizer", "train.optimizer"),
        ("seed", "train.seed"),
        ("grad_mode", "train.grad_mode"),
        ("device", "train.device"),
        ("precision", "train.precision"),
        ("accumulate", "train.accumulate"),
        ("compile", "train.compile"),
        ("out_dir", "run.out_dir"),
        ("name", "run.name"),
        ("mlflow_uri", "run.mlflow_uri"),
        ("tensorboard_dir", "run.tensorboard_dir"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            flat[key] = value
    if getattr(args, "logger", None):
        flat["run.loggers"] = list(args.logger)
    if getattr(args, "no_baselines", False):
        flat["run.baselines"] = False
    if args.quiet:
        flat["run.quiet"] = True
    # a component change drops parameters that belonged to the previous component
    for section, key in (("model", "architecture"), ("weighting", "name")):
        new = flat.get(f"{section}.{key}")
        if new is not None and cfg.get(section, {}).get(key, new) != new:
            cfg[section] = {key: new}
    cfg = apply_overrides(cfg, flat)
    return apply_overrides(cfg, args.overrides)


def _launch(argv: Sequence[str], nproc: int) -> int:
    """Re-run this command under ``torchrun`` on ``nproc`` local processes; return its exit code."""
    import subprocess

    rest = list(argv)
    i = rest.index("--nproc") if "--nproc" in rest else -1
    if i >= 0:
        del rest[i : i + 2]
    else:
        rest = [a for a in rest if not a.startswith("--nproc=")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "multitask", *rest]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


def _train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .config import resolve_config
    from .distributed import env_world_size, init_from_env

    if args.nproc is not None:
        if args.nproc < 1:
            raise ValueError(f"--nproc {args.nproc}: give a number of processes >= 1")
        if args.nproc > 1 and env_world_size() == 1:
            return _launch(argv, args.nproc)
    cfg: dict[str, Any] = {}
    if args.resume:
        dist = init_from_env(device=args.device or "cpu")
    else:
        cfg = resolve_config(_config_from_args(args))
        dist = init_from_env(device=cfg["train"]["device"], timeout_s=cfg["train"]["dist_timeout"])
    ok = False
    try:
        code = _resume(args, dist) if args.resume else _train_seeds(args, cfg, dist)
        ok = code == 0
        return code
    finally:
        if dist is not None:
            dist.close(wait=ok)


def _resume(args: argparse.Namespace, dist: Distributed | None) -> int:
    from .experiment import format_summary, run

    run_dir = Path(args.resume)
    try:
        summary = run({"run": {"quiet": bool(args.quiet)}}, run_dir=run_dir, resume=True, dist=dist)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: multitask train --resume {run_dir}", file=sys.stderr)
        return 130
    if dist is None or dist.is_main:
        print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _train_seeds(args: argparse.Namespace, cfg: dict[str, Any], dist: Distributed | None) -> int:
    from .experiment import _new_run_dir, format_summary, on_main, run, seeds_summary

    main_rank = dist is None or dist.is_main
    seeds = [cfg["train"]["seed"]]
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"error: --seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
    base_dir: Path = on_main(dist, lambda: _new_run_dir(cfg))
    summaries = []
    for seed in seeds:
        cfg["train"]["seed"] = seed
        run_dir = base_dir / f"seed-{seed}" if args.seeds else base_dir
        try:
            summary = run(cfg, run_dir=run_dir, dist=dist)
        except KeyboardInterrupt:
            print(f"\ninterrupted; continue with: multitask train --resume {run_dir}", file=sys.stderr)
            return 130
        summaries.append(summary)
        if main_rank:
            print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if not main_rank:
        return 0
    if len(seeds) > 1:
        stats = seeds_summary(summaries)
        if stats:
            line = (
                f"Δm over seeds {seeds}: {100 * stats['mean']:+.2f}% ± {100 * stats['std']:.2f}% "
                "(mean ± sample std of per-seed Δm)"
            )
            print(line)
            (base_dir / "seeds.json").write_text(json.dumps({"seeds": seeds, "delta_m": stats}, indent=2))
    return 0


def _affinity(args: argparse.Namespace) -> int:
    from .config import resolve_config
    from .relations.study import format_affinity, run_affinity

    cfg = resolve_config(_config_from_args(args))
    stream = None if args.quiet else sys.stderr
    report = run_affinity(
        cfg,
        args.out,
        every=args.every,
        lr=args.lookahead_lr,
        projections=args.projections,
        pairwise=args.pairwise,
        stream=stream,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_affinity(report))
        print(
            f"written to {args.out}: affinity.json, affinity_<matrix>.csv" + (", heatmaps" if report["plots"] else "")
        )
    return 0


def _bench(args: argparse.Namespace) -> int:
    import yaml

    from .bench import Grid, run_bench
    from .config import ConfigError, load_config_file

    spec: dict[str, Any] = load_config_file(args.config) if args.config else {}
    for flag in ("datasets", "architectures", "weightings"):
        value = getattr(args, flag)
        if value:
            spec[flag] = [v.strip() for v in value.split(",") if v.strip()]
    if args.seeds:
        try:
            spec["seeds"] = [int(v) for v in args.seeds.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or parts[0] not in ("train", "data", "model") or len(parts) != (2 if parts[0] == "train" else 3):
            raise ConfigError(
                f"--set {item!r}: use train.KEY=VALUE, data.DATASET.KEY=VALUE or model.ARCHITECTURE.KEY=VALUE"
            )
        value = yaml.safe_load(raw) if raw.strip() else None
        table = spec.setdefault(parts[0], {})
        if parts[0] != "train":
            table = table.setdefault(parts[1], {})
        table[parts[-1]] = value
    if "datasets" not in spec:
        raise ConfigError("bench: give --datasets (or datasets in --config)")
    grid = Grid.from_dict(spec)
    try:
        run_bench(grid, args.out, stream=None if args.quiet else sys.stderr)
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished cells are kept: rerun the same command to resume ({args.out})", file=sys.stderr)
        return 130
    print((Path(args.out) / "summary.md").read_text())
    return 0


def _grouping_from_args(args: argparse.Namespace) -> tuple[Grouping, dict[str, Any]]:
    """The grouping the ``group`` options ask for, and where its affinity came from."""
    from .relations import group_tasks
    from .relations.grouping import read_affinity

    if args.k is None and args.cost is None:
        raise ValueError("group: give --k K (the most groups, i.e. models to train) or --cost C (per model), or both")
    affinity, names, matrix = read_affinity(args.affinity, matrix=args.matrix)
    grouping = group_tasks(
        affinity,
        k=args.k,
        cost=args.cost,
        objective=args.objective,
        method=args.method,
        task_names=names,
        singleton=args.singleton,
        seed=args.seed,
        time_limit=args.time_limit,
    )
    return grouping, {"affinity_file": str(args.affinity), "matrix": matrix}


def _group(args: argparse.Namespace) -> int:
    grouping, source = _grouping_from_args(args)
    matrix = f", matrix {source['matrix']!r}" if source["matrix"] else ""
    print(f"affinity: {source['affinity_file']}{matrix}, {len(grouping.task_names)} tasks")
    print(grouping)
    if args.json:
        Path(args.json).write_text(json.dumps({**source, **grouping.to_dict()}, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.train:
        return _group_train(args, grouping)
    return 0


def _group_train(args: argparse.Namespace, grouping: Grouping) -> int:
    from .config import resolve_config
    from .relations.study import format_group_comparison, train_groups

    if not args.out:
        raise ValueError("group --train: give --out DIR, where the per-group, all-tasks and single-task models go")
    if not (args.config or args.dataset or args.data):
        raise ValueError("group --train: give the data the affinity was measured on (--dataset, --data or --config)")
    ns = argparse.Namespace(**vars(args))
    ns.seed = args.train_seed  # --seed is the local search's
    cfg = resolve_config(_config_from_args(ns))
    result = train_groups(
        cfg,
        grouping.named_groups,
        args.out,
        served_by=grouping.assignment,
        stream=None if args.quiet else sys.stderr,
    )
    Path(args.out, "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    print(format_group_comparison(result))
    print(f"wrote {Path(args.out, 'comparison.json')}")
    return 0


_OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}


def _predict(args: argparse.Namespace) -> int:
    import warnings

    from .artifact import load
    from .data.base import MissingDependencyError
    from .data.tabular import _module_available

    fmt = args.format
    if fmt is None:
        fmt = _OUTPUT_FORMATS.get(Path(args.out).suffix.lower(), "csv") if args.out else "csv"
    if fmt == "parquet" and not args.out:
        raise ValueError("--format parquet writes a binary file: give --out FILE.parquet")
    if fmt == "parquet" and not _module_available("pyarrow"):
        raise MissingDependencyError("writing Parquet needs pyarrow; install it with: pip install 'multitask[parquet]'")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks is not None else None
    if tasks == []:
        raise ValueError(f"--tasks {args.tasks!r} names no task; give comma-separated task names, e.g. --tasks a,b")
    predictor = load(args.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = predictor.predict_frame(
            args.data,
            tasks,
            id_column=args.id_column,
            unknown_categories=args.unknown_categories,
            batch_size=args.batch_size,
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.out is None:
        if fmt == "json":
            print(frame.to_json(orient="records", double_precision=15))
        else:
            frame.to_csv(sys.stdout, index=False)
        return 0
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {args.out!r} is a directory; give a file name such as predictions.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(out, index=False)
    elif fmt == "json":
        out.write_text(frame.to_json(orient="records", double_precision=15) + "\n")
    else:
        frame.to_parquet(out, index=False)
    chosen = tasks if tasks is not None else predictor.task_names
    print(f"wrote {out}: {len(frame)} rows, tasks {', '.join(chosen)}")
    return 0


def _monitor(args: argparse.Namespace) -> int:
    import warnings

    from .artifact import load
    from .monitor import drift_report

    if args.json is not None and Path(args.json).is_dir():
        raise ValueError(f"--json {args.json!r} is a directory; give a file name such as drift.json")
    predictor = load(args.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = drift_report(
            predictor,
            args.data,
            psi_warn=args.psi_warn,
            psi_alert=args.psi_alert,
            ks_alpha=args.ks_alpha,
            category_shift=args.category_shift,
            prediction_psi_alert=args.prediction_psi_alert,
        )
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(report.table())
    if args.json is not None:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({"data": str(args.data), "fail_on": args.fail_on, **report.to_dict()}, indent=2) + "\n"
        )
        print(f"wrote {out}")
    return 1 if report.exceeds(args.fail_on) else 0


def _report(args: argparse.Namespace) -> int:
    from .report import write_report

    out = write_report(args.run_dir, out=args.out)
    print(f"wrote {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_model

    sizes: list[int] = []
    for part in str(args.batch_sizes).split(","):
        try:
            sizes.append(int(part.strip()))
        except ValueError:
            raise ValueError(
                f"--batch-sizes {args.batch_sizes!r} must be comma-separated positive integers, e.g. 1,7,64"
            ) from None
    report = export_model(
        args.model,
        args.out,
        format=args.format,
        sample=args.data,
        batch_sizes=sizes,
        opset=args.opset,
        rtol=args.rtol,
        atol=args.atol,
    )
    print(
        f"verified {report.format} export against the eager model at batch sizes "
        f"{', '.join(str(b) for b in report.batch_sizes)} (rtol={report.rtol:g}, atol={report.atol:g}):"
    )
    print(report.table())
    print(f"wrote {report.path} (outputs in task order: {', '.join(report.task_order)})")
    print(f"wrote {report.sidecar}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(
        args.model,
        host=args.host,
        port=args.port,
        name=args.name,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_body_bytes=args.max_body_bytes,
        max_rows=args.max_rows,
        unknown_categories=args.unknown_categories,
        workers=args.workers,
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from .architectures import ARCHITECTURES
    from .data import DATASETS, SAMPLERS
    from .weighting import WEIGHTINGS

    skip = {"weightings": ("num_tasks",), "architectures": ("input_shape", "tasks")}.get(args.what, ())
    registry: Any = {
        "weightings": WEIGHTINGS,
        "architectures": ARCHITECTURES,
        "datasets": DATASETS,
        "samplers": SAMPLERS,
    }[args.what]
    entries = [(n, d, [p for p in ps if p.name not in skip]) for n, d, ps in registry.describe()]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": n,
                        "description": d,
                        "parameters": [{"name": p.name, "type": p.annotation, "default": p.default} for p in ps],
                        **({"needs": _needs(registry.get(n))} if args.what == "weightings" else {}),
                    }
                    for n, d, ps in entries
                ],
                indent=2,
                default=repr,
            )
        )
        return 0
    for n, d, ps in entries:
        needs = f" [needs: {_needs(registry.get(n))}]" if args.what == "weightings" else ""
        print(f"{n}: {d}{needs}")
        for p in ps:
            print(f"    {p.render()}")
    return 0


def _needs(cls: Any) -> str:
    """What a method reads: the losses only, the Gramian of task gradients, or the Jacobian."""
    if getattr(cls, "requires_jacobian", False):
        return "jacobian"
    return "gramian" if getattr(cls, "requires_gramian", False) else "losses"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``multitask`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data.base import MissingDependencyError
    from .distributed import DistributedError
    from .engine import NonFiniteLossError
    from .registry import UnknownNameError

    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _train(args, argv)
        if args.command == "predict":
            return _predict(args)
        if args.command == "monitor":
            return _monitor(args)
        if args.command == "export":
            return _export(args)
        if args.command == "affinity":
            return _affinity(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "group":
            return _group(args)
        if args.command == "report":
            return _report(args)
        if args.command == "serve":
            return _serve(args)
        return _list(args)
    except DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, UnknownNameError, CheckpointError, MissingDependencyError, NonFiniteLossError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
