"""Export a trained model to TorchScript or ONNX, verified output by output before it is written.

:func:`export_model` takes a :class:`~multitask.artifact.Predictor` (or a run directory /
``model.mt``) and writes the model's forward pass, from the *preprocessed* input tensor to the raw
per-task outputs (logits for classification, standardised values for regression), as one file:

* ``format="torchscript"``: ``torch.jit.trace`` of the model, saved with ``torch.jit.save``;
* ``format="onnx"``: ``torch.onnx.export`` (the ``torch.export`` based exporter) with one input
  named ``input`` whose batch axis is dynamic and one output per served task, named by the task.

A multi-task model returns a ``dict``; ONNX export of dict outputs can silently give the outputs
the wrong names (PyTorch issue #165758). So the exported graph returns a *tuple* in a fixed,
recorded task order, every output is named explicitly, and before anything is written under the
final name the exported file (written to a temporary name in the same directory) is loaded back
(``torch.jit.load`` / ``onnxruntime.InferenceSession``), run on sample inputs at several batch
sizes, and every output is compared by name with the eager model's output for that task. An output
that does not match its own task, or that matches another task's output better, is refused with an
:class:`ExportError`; nothing is left at ``out``.

Next to the model file a JSON sidecar ``<out>.json`` records the task order, the output names, each
task's kind, class names and regression target mean/std, the input columns and the fitted
preprocessing, the verification result and the versions, so a consumer can reproduce labels.
:class:`OnnxPredictor` reads both and predicts like :func:`multitask.load` (same preprocessing code,
same labels, probabilities and values) with ONNX Runtime instead of torch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from .architectures.base import MultiTaskModel
from .artifact import ArtifactError, InputData, Predictor, current_versions, load
from .data.base import MissingDependencyError
from .data.tabular import TabularPreprocessor
from .registry import unknown_name_message
from .tasks import Task

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "EXPORT_FORMATS",
    "SIDECAR_FORMAT",
    "ExportError",
    "ExportReport",
    "OnnxPredictor",
    "TaskCheck",
    "default_export_path",
    "export_model",
    "read_sidecar",
]

ExportFormat = Literal["onnx", "torchscript"]
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 7, 64)
SIDECAR_FORMAT = "multitask-export"
SIDECAR_VERSION = 1
INPUT_NAME = "input"
_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
_INSTALL = "pip install 'multitask[export]'"


class ExportError(ValueError):
    """A model could not be exported, or its exported file does not reproduce the eager model."""


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskCheck:
    """How one exported output compares with the eager model.

    Attributes:
        name: the output's name, which is its task's name.
        kind: the task's kind.
        shape: one row's output shape (``[1]`` binary and scalar regression, ``[C]`` multiclass).
        max_abs_diff: the largest absolute difference to the eager output of the same task, over
            every sample batch.
        best_match: the eager task output closest to this exported output (its own name when the
            output is labelled correctly).
        ok: within ``rtol``/``atol`` of its own task and not closer to another task's output.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    max_abs_diff: float
    best_match: str
    ok: bool


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_model` wrote and how the exported file compared with the eager model."""

    path: Path
    sidecar: Path
    format: str
    task_order: tuple[str, ...]
    checks: tuple[TaskCheck, ...]
    batch_sizes: tuple[int, ...]
    rtol: float
    atol: float
    opset: int | None

    def table(self) -> str:
        """The per-task verification table ``multitask export`` prints."""
        rows = [("output", "kind", "shape", "max abs diff", "best match", "ok")]
        for c in self.checks:
            rows.append(
                (c.name, c.kind, str(list(c.shape)), f"{c.max_abs_diff:.3g}", c.best_match, "yes" if c.ok else "NO")
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the exported module
# --------------------------------------------------------------------------------------------
class _TupleOutputs(nn.Module):
    """The model with its dict output turned into a tuple in ``task_order`` (what gets exported)."""

    def __init__(self, model: nn.Module, task_order: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.task_order = list(task_order)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        return tuple(out[name] for name in self.task_order)


def _wrap(model: nn.Module, task_order: Sequence[str]) -> nn.Module:
    return _TupleOutputs(model, task_order).eval()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _require(fmt: str, *modules: str) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingDependencyError(
                f"format={fmt!r} needs the package {name!r}, which is not installed ({exc}); install it with: {_INSTALL}"
            ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def default_export_path(model_path: str | Path, format: str) -> Path:
    """Where ``multitask export`` writes without ``--out``: next to ``model.mt``, ``model.onnx`` or
    ``model.torchscript.pt``."""
    p = Path(model_path)
    folder = p if p.is_dir() else p.parent
    return folder / f"model{_SUFFIX.get(format, '.' + format)}"


def _check_out(out: str | Path) -> Path:
    path = Path(out)
    if str(out) == "" or path.name in ("", ".", ".."):
        raise ExportError(f"out={str(out)!r} is not a file name; give one such as model.onnx")
    if path.is_dir():
        raise ExportError(
            f"out={str(path)!r} is a directory; give a file name inside it, such as {path / 'model.onnx'}"
        )
    parent = path.parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ExportError(
                    f"out={str(path)!r}: {str(folder)!r} is a file, not a directory; choose another output path"
                )
            if not os.access(folder, os.W_OK):
                raise ExportError(f"out={str(path)!r}: the directory {str(folder)!r} is not writable")
            break
    return path


def _check_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ExportError(f"batch_sizes={list(sizes)!r} must be positive integers, e.g. [1, 7, 64]")
    return tuple(dict.fromkeys(sizes))


def _check_tolerance(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise ExportError(f"{name}={value!r} must be a finite number >= 0, e.g. {name}=1e-4")
    return float(value)


def _samples(predictor: Predictor, sample: InputData | None, batch_sizes: tuple[int, ...]) -> list[Tensor]:
    """One input batch per batch size: rows of ``sample`` (cycled), or zeros then seeded random rows."""
    dtype = getattr(torch, predictor.input_dtype)
    if sample is not None:
        base = predictor.encode(sample, unknown_categories="ignore")
        if base.shape[0] == 0:
            raise ExportError("sample has 0 rows; give at least one row, or sample=None to draw inputs")
        batches = []
        for b in batch_sizes:
            idx = torch.arange(b) % base.shape[0]
            batches.append(base.index_select(0, idx).contiguous())
        return batches
    gen = torch.Generator().manual_seed(0)
    batches = []
    for b in batch_sizes:
        x = torch.randn(b, *predictor.input_shape, generator=gen)
        x[0] = 0.0  # the all-zeros row: every numeric column at its training mean, no category
        batches.append(x.to(dtype))
    return batches


# --------------------------------------------------------------------------------------------
# exporting
# --------------------------------------------------------------------------------------------
def _export_torchscript(module: nn.Module, example: Tensor, path: Path, arch: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the deprecation: the verification below is what counts
        try:
            traced = torch.jit.trace(module, (example,), check_trace=False)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ExportError(
                f"architecture {arch!r} cannot be traced to TorchScript with torch {torch.__version__}: "
                f"{_first_line(exc)}. Export it with --format onnx instead"
            ) from exc
        torch.jit.save(traced, str(path))


def _run_torchscript(path: Path, batches: list[Tensor]) -> list[list[Tensor]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript; it still works
        loaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    results = []
    with torch.inference_mode():
        for x in batches:
            out = loaded(x)
            results.append([t.detach().float() for t in (out if isinstance(out, (tuple, list)) else [out])])
    return results


def _unsupported_op(exc: BaseException) -> str | None:
    text = str(exc)
    for pattern in (r"op='(\w+\.[\w.]+)'", r"torch\.ops\.(\w+\.[\w]+)", r"\b(aten::\w+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    return None


def _export_onnx(
    module: nn.Module, example: Tensor, path: Path, task_order: list[str], opset: int | None, arch: str
) -> int:
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the exporter logs about optional packages (torchvision ops)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=task_order,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        op = _unsupported_op(exc)
        what = f"the operator {op} has no ONNX translation" if op else _first_line(exc)
        raise ExportError(
            f"architecture {arch!r} cannot be exported to ONNX with torch {torch.__version__}"
            f"{f' at opset {opset}' if opset else ''}: {what}. Export it with --format torchscript instead"
            + (", or try another --opset" if op else "")
        ) from exc
    finally:
        logger.setLevel(level)
    del program
    import onnx

    written = next(
        (
            int(i.version)
            for i in onnx.load(str(path), load_external_data=False).opset_import
            if i.domain in ("", "ai.onnx")
        ),
        None,
    )
    if written is None:
        raise ExportError(f"the ONNX exporter of torch {torch.__version__} wrote a file without a default-domain opset")
    if opset is not None and written != opset:
        raise ExportError(
            f"opset={opset} was asked, but the ONNX exporter of torch {torch.__version__} wrote opset {written} "
            f"(it cannot convert this model to {opset}); nothing was written: choose another --opset, e.g. {written}"
        )
    return written


def _onnx_session(path: str | Path, providers: Sequence[str] | None = None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
    )


def _run_onnx(path: Path, batches: list[Tensor], names: list[str]) -> list[list[Tensor]]:
    session = _onnx_session(path)
    got_names = [o.name for o in session.get_outputs()]
    if got_names != names:
        raise ExportError(
            f"the ONNX file names its outputs {got_names!r}, expected {names!r} (the recorded task order); "
            "nothing was written"
        )
    results = []
    for x in batches:
        out = session.run(names, {INPUT_NAME: x.numpy()})
        results.append([torch.from_numpy(np.asarray(o)).float() for o in out])
    return results


def _eager(model: nn.Module, batches: list[Tensor], names: list[str]) -> list[dict[str, Tensor]]:
    results = []
    with torch.inference_mode():
        for x in batches:
            out = model(x)
            results.append({n: out[n].detach().float().cpu() for n in names})
    return results


def _verify(
    names: list[str],
    tasks: Mapping[str, Task],
    exported: list[list[Tensor]],
    eager: list[dict[str, Tensor]],
    *,
    rtol: float,
    atol: float,
) -> tuple[TaskCheck, ...]:
    n = len(names)
    # diff[i][j]: largest |exported output i - eager output of task j| over the batches (inf: shapes differ)
    diff = np.zeros((n, n))
    close = np.ones((n, n), dtype=bool)
    eager_close = np.ones((n, n), dtype=bool)  # the eager outputs of tasks j and k themselves agree
    for got, want in zip(exported, eager, strict=True):
        if len(got) != n:
            raise ExportError(f"the exported model returned {len(got)} outputs for the {n} tasks {names!r}")
        for i in range(n):
            for j in range(n):
                a, b = got[i], want[names[j]]
                if a.shape != b.shape:
                    diff[i, j], close[i, j] = np.inf, False
                else:
                    diff[i, j] = max(diff[i, j], float((a - b).abs().max()) if a.numel() else 0.0)
                    close[i, j] &= bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False))
                c, d = want[names[i]], want[names[j]]
                eager_close[i, j] &= c.shape == d.shape and bool(torch.allclose(c, d, rtol=rtol, atol=atol))
    checks = []
    for i, name in enumerate(names):
        best = int(np.argmin(diff[i]))
        if diff[i, best] == diff[i, i]:
            best = i
        mislabelled = best != i and not eager_close[i, best]
        shape = tuple(int(s) for s in exported[0][i].shape[1:])
        checks.append(
            TaskCheck(
                name, tasks[name].kind, shape, float(diff[i, i]), names[best], bool(close[i, i]) and not mislabelled
            )
        )
    return tuple(checks)


def _mismatch_message(fmt: str, checks: tuple[TaskCheck, ...], rtol: float, atol: float) -> str:
    parts = []
    for c in checks:
        if c.ok:
            continue
        if c.best_match != c.name:
            parts.append(
                f"output {c.name!r} holds task {c.best_match!r}'s values (max abs diff to {c.name!r}: {c.max_abs_diff:.3g})"
            )
        else:
            parts.append(f"output {c.name!r} differs from the eager model by up to {c.max_abs_diff:.3g}")
    return (
        f"the {fmt} export does not reproduce the eager model (rtol={rtol:g}, atol={atol:g}): {'; '.join(parts)}. "
        "Nothing was written. Outputs labelled with the wrong task are the known dict-output trap (PyTorch issue "
        "#165758); a small difference may only need a looser --rtol/--atol"
    )


def _sidecar(
    predictor: Predictor,
    *,
    fmt: str,
    path: Path,
    digest: str,
    names: list[str],
    checks: tuple[TaskCheck, ...],
    batch_sizes: tuple[int, ...],
    rtol: float,
    atol: float,
    opset: int | None,
) -> dict[str, Any]:
    exported = current_versions()
    for module in ("onnx", "onnxruntime", "onnxscript") if fmt == "onnx" else ():
        exported[module] = str(getattr(importlib.import_module(module), "__version__", "?"))
    by_name = {t.name: t for t in predictor.tasks}
    check_by = {c.name: c for c in checks}
    outputs = []
    for name in names:
        t = by_name[name]
        post = {"binary": "sigmoid", "multiclass": "softmax"}.get(t.kind, "value * target_std + target_mean")
        outputs.append(
            {
                "name": name,
                "task": name,
                "kind": t.kind,
                "shape": ["batch", *check_by[name].shape],
                "classes": list(t.classes) if t.classes is not None else None,
                "target_mean": t.target_mean if t.kind == "regression" else None,
                "target_std": t.target_std if t.kind == "regression" else None,
                "postprocess": post,
            }
        )
    spec = predictor.spec()
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "export_format": fmt,
        "file": path.name,
        "sha256": digest,
        "opset": opset,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", *predictor.input_shape],
            "dtype": predictor.input_dtype,
            "kind": spec["input"]["kind"],
            "columns": predictor.input_columns,
            "preprocessor": spec["input"].get("preprocessor"),
        },
        "task_order": names,
        "output_names": names,
        "outputs": outputs,
        "verification": {
            "rtol": rtol,
            "atol": atol,
            "batch_sizes": list(batch_sizes),
            "max_abs_diff": {c.name: c.max_abs_diff for c in checks},
        },
        "artifact": spec,
        "versions": {"trained_with": predictor.versions, "exported_with": exported},
    }


def export_model(
    predictor_or_path: Predictor | str | Path,
    out: str | Path | None = None,
    *,
    format: ExportFormat = "onnx",
    sample: InputData | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    opset: int | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> ExportReport:
    """Export a trained model to TorchScript or ONNX after checking every output by task name.

    The exported function maps the preprocessed input tensor ``[batch, *input_shape]`` (what
    :meth:`Predictor.encode` returns) to one raw output per served task, in
    ``report.task_order``: logits for binary ``[batch, 1]`` and multiclass ``[batch, C]`` tasks,
    standardised values ``[batch, D]`` for regression (``value * target_std + target_mean`` gives
    the original units; the sidecar records both).

    Args:
        predictor_or_path: a :class:`~multitask.artifact.Predictor`, a run directory or a
            ``model.mt`` file.
        out: the file to write (default: ``model.onnx`` or ``model.torchscript.pt`` next to the
            artifact; required for a Predictor built in memory). Missing parent directories are
            created. A sidecar ``<out>.json`` is written next to it.
        format: ``"onnx"`` or ``"torchscript"``.
        sample: inputs to verify on, in any form :meth:`Predictor.predict` takes (a DataFrame, a
            CSV path, an array); its rows are cycled to fill each batch size. Default: an all-zeros
            row then seeded standard-normal rows in the preprocessed space.
        batch_sizes: the batch sizes verified (the ONNX batch axis is dynamic).
        opset: the ONNX opset (default: the exporter's); ignored for TorchScript.
        rtol: relative tolerance of the output comparison.
        atol: absolute tolerance of the output comparison.

    Returns:
        An :class:`ExportReport`: the paths written, the task order, and per task the largest
        absolute difference to the eager model.

    Raises:
        ExportError: an unknown format, a bad ``out``, an architecture the format cannot express
            (naming the operator), or an exported output that does not match its task's eager
            output or matches another task's better. Nothing is written at ``out`` then.
        MissingDependencyError: ONNX export without onnx, onnxscript or onnxruntime installed.
        ArtifactError: ``predictor_or_path`` is not a readable model.
    """
    if format not in EXPORT_FORMATS:
        raise ExportError(unknown_name_message("export format", str(format), list(EXPORT_FORMATS)))
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ExportError(f"opset={opset!r} must be an ONNX opset number such as 18 (7 or more), or None")
    sizes = _check_batch_sizes(batch_sizes)
    rtol, atol = _check_tolerance("rtol", rtol), _check_tolerance("atol", atol)
    if format == "onnx":
        _require(format, "onnx", "onnxscript", "onnxruntime")
    if isinstance(predictor_or_path, Predictor):
        predictor = predictor_or_path
        if out is None:
            raise ExportError("out=None: a Predictor built in memory has no run directory; give out, e.g. 'model.onnx'")
    elif isinstance(predictor_or_path, (str, Path)):
        predictor = load(predictor_or_path)
        if out is None:
            out = default_export_path(predictor_or_path, format)
    else:
        raise TypeError(
            f"predictor_or_path is a {type(predictor_or_path).__name__}; pass a Predictor, a run directory or a model.mt"
        )
    path = _check_out(out)
    names = predictor.task_names
    model = predictor.model.eval()
    devices = sorted({str(p.device) for p in model.parameters()} - {"cpu"})
    if devices:
        raise ExportError(
            f"the model is on {devices[0]}; export runs on the CPU: call predictor.model.cpu() first "
            "(multitask.load gives a CPU model)"
        )
    batches = _samples(predictor, sample, sizes)
    wrapped = _wrap(model, names)
    sidecar_path = path.with_name(path.name + ".json")
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # removed again on failure
    path.parent.mkdir(parents=True, exist_ok=True)
    done = False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_side = sidecar_path.with_name(f".{sidecar_path.name}.{os.getpid()}.tmp")
    try:
        opset_used: int | None = None
        if format == "torchscript":
            _export_torchscript(wrapped, batches[-1], tmp, predictor.architecture)
            exported = _run_torchscript(tmp, batches)
        else:
            opset_used = _export_onnx(wrapped, batches[-1], tmp, names, opset, predictor.architecture)
            exported = _run_onnx(tmp, batches, names)
        eager = _eager(model, batches, names)
        checks = _verify(names, {t.name: t for t in predictor.tasks}, exported, eager, rtol=rtol, atol=atol)
        if not all(c.ok for c in checks):
            raise ExportError(_mismatch_message(format, checks, rtol, atol))
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        side = _sidecar(
            predictor,
            fmt=format,
            path=path,
            digest=digest,
            names=names,
            checks=checks,
            batch_sizes=sizes,
            rtol=rtol,
            atol=atol,
            opset=opset_used,
        )
        tmp_side.write_text(json.dumps(side, indent=2) + "\n")
        os.replace(tmp, path)
        os.replace(tmp_side, sidecar_path)
        done = True
    finally:
        for leftover in (tmp, tmp_side):
            if leftover.exists():
                leftover.unlink()
        for folder in created if not done else ():
            with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile
                folder.rmdir()
    return ExportReport(path, sidecar_path, format, tuple(names), checks, sizes, rtol, atol, opset_used)


# --------------------------------------------------------------------------------------------
# the ONNX Runtime inference path
# --------------------------------------------------------------------------------------------
def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar ``<model file>.json`` of an exported model, checked to describe that file."""
    p = Path(path)
    side = p.with_name(p.name + ".json")
    if not p.is_file():
        raise ExportError(f"exported model {str(p)!r} does not exist; write one with `multitask export RUN`")
    if not side.is_file():
        raise ExportError(
            f"exported model {str(p)!r} has no sidecar {side.name!r} (task order, labels, preprocessing); "
            "export it again with `multitask export RUN`, which writes both"
        )
    try:
        data = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"sidecar {str(side)!r} is not valid JSON ({exc}); export the model again") from exc
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ExportError(f"{str(side)!r} is not a multitask export sidecar (no '{SIDECAR_FORMAT}' marker)")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ExportError(f"sidecar {str(side)!r} has an invalid format_version={version!r}; export the model again")
    if version > SIDECAR_VERSION:
        raise ExportError(
            f"sidecar {str(side)!r} has format version {data.get('format_version')}; this multitask reads "
            f"{SIDECAR_VERSION}: upgrade multitask"
        )
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != data.get("sha256"):
        raise ExportError(
            f"sidecar {str(side)!r} describes another file (sha256 {str(data.get('sha256'))[:12]}..., "
            f"{p.name} has {digest[:12]}...): the model was replaced or the sidecar copied from another export; "
            "export the model again"
        )
    return data


class _OnnxModel(MultiTaskModel):
    """An ONNX Runtime session behind the :class:`MultiTaskModel` interface (forward only)."""

    def __init__(self, session: Any, all_names: list[str], output_names: list[str]) -> None:
        super().__init__()
        self.session = session
        self.task_names = all_names
        self.output_names = output_names

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        out = self.session.run(self.output_names, {INPUT_NAME: x.detach().cpu().numpy()})
        return {n: torch.from_numpy(np.asarray(o)) for n, o in zip(self.output_names, out, strict=True)}, None

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())


class OnnxPredictor(Predictor):
    """Predict with an exported ``.onnx`` file and ONNX Runtime, exactly like :func:`multitask.load`.

    Reads the file and its sidecar ``<path>.json`` (written by :func:`export_model`). Inputs go
    through the same checks and preprocessing as :class:`~multitask.artifact.Predictor` (it *is*
    one, with ONNX Runtime in place of the torch model), and outputs become the same labels,
    probabilities and values: ``predict``, ``predict_frame``, ``encode``, ``task_names``,
    ``input_columns`` behave identically. torch is still used for the pre- and post-processing.

    Args:
        path: the ``.onnx`` file.
        providers: ONNX Runtime execution providers (default ``["CPUExecutionProvider"]``).

    Raises:
        ExportError: the file or its sidecar is missing, the sidecar describes another file, or is
            not a TorchScript/ONNX sidecar of format 1, or the file's outputs are not the recorded ones.
        MissingDependencyError: onnxruntime is not installed.
    """

    def __init__(self, path: str | Path, *, providers: Sequence[str] | None = None) -> None:
        _require("onnx", "onnxruntime")
        side = read_sidecar(path)
        where = repr(str(path))
        if side.get("export_format") != "onnx":
            raise ExportError(
                f"{where} is a {side.get('export_format')!r} export; OnnxPredictor reads ONNX exports "
                "(load a TorchScript file with torch.jit.load)"
            )
        try:
            spec = side["artifact"]
            tasks = [Task.from_dict(d) for d in spec["tasks"]]
            inputs = spec["input"]
            pre = TabularPreprocessor.from_dict(inputs["preprocessor"]) if inputs.get("kind") == "table" else None
            names = [str(n) for n in side["output_names"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportError(
                f"the sidecar of {where} is incomplete ({_first_line(exc)}); export the model again"
            ) from exc
        session = _onnx_session(path, providers)
        got = [o.name for o in session.get_outputs()]
        served = [t.name for t in tasks if not t.auxiliary]
        if got != names or names != served:
            raise ExportError(
                f"{where} has outputs {got!r}; its sidecar records {names!r} for the served tasks {served!r}; "
                "export the model again"
            )
        versions = side.get("versions", {}).get("trained_with", {})
        super().__init__(
            _OnnxModel(session, [t.name for t in tasks], names),
            tasks,
            architecture=str(spec["architecture"]),
            architecture_params=spec.get("architecture_params"),
            input_shape=[int(s) for s in inputs["shape"]],
            input_dtype=str(inputs.get("dtype", "float32")),
            preprocessor=pre,
            config=spec.get("config"),
            dataset=spec.get("dataset"),
            versions={str(k): str(v) for k, v in versions.items()},
        )
        self.path = Path(path)
        self.sidecar = side

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, tasks={self.task_names})"

    def save(self, path: str | Path) -> Path:
        """Not available: an ONNX model has no torch weights to put in a ``model.mt``."""
        raise ArtifactError(
            f"OnnxPredictor.save({str(path)!r}): an ONNX export cannot be turned back into a model.mt; "
            "save the original Predictor (multitask.load(run)) instead"
        )
