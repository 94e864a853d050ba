"""Model artifacts: one file per trained model, and the :class:`Predictor` that serves it.

A :class:`Predictor` is a trained multi-task model ready to predict on new data: the model, its
tasks with their label encodings (class names, the positive class, a regression target's mean and
standard deviation), the input preprocessing (the fitted
:class:`~multitask.data.tabular.TabularPreprocessor` for CSV/Parquet data; the input shape for
tensor datasets), the resolved run config and the versions that wrote it.

:meth:`Predictor.save` writes it as ONE file (``model.mt``; ``multitask train`` writes one into
every run directory) and :func:`load` restores it, refusing a corrupted, truncated, tampered or
incompatible file with an :class:`ArtifactError` that says what is wrong and how to fix it.

File format (version 1): a zip archive of three members (four with the optional training
reference), nothing in it ever unpickled::

    manifest.json   {"format": "multitask-model", "format_version": 1, "created": ISO time,
                     "versions": {multitask, torch, python, numpy, pandas},
                     "members": {name: {"sha256": hex digest, "bytes": size}}}
    spec.json       architecture name and parameters, input description (shape, dtype; table
                    columns, dtypes and the fitted preprocessor), every task (Task.to_dict),
                    the served tasks, the dataset name and the resolved run config
    weights.pt      the model's state dict, torch.save'd, read with torch.load(weights_only=True)
    reference.json  optional: the training reference of drift monitoring (see multitask.monitor);
                    listed in the manifest with its sha256 like the others. A file without it loads.

Compatibility: a file from a newer format version is refused (upgrade multitask); one written
with a newer torch *major* version than the one installed is refused (upgrade torch); an older
torch, any minor version and any multitask version with the same format are read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import pickle
import platform
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import Tensor

from . import __version__
from .architectures.base import MultiTaskModel, build_model
from .data.base import MultiTaskData
from .data.tabular import TabularPreprocessor, read_table
from .registry import UnknownNameError, closest, unknown_name_message
from .tasks import Task

__all__ = [
    "ARTIFACT_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "UNKNOWN_CATEGORY_POLICIES",
    "ArtifactError",
    "InputWarning",
    "Predictor",
    "TaskPrediction",
    "current_versions",
    "load",
    "read_inputs",
]

FORMAT = "multitask-model"
FORMAT_VERSION = 1
ARTIFACT_NAME = "model.mt"
UNKNOWN_CATEGORY_POLICIES: tuple[str, ...] = ("warn", "error", "ignore")
UnknownCategoryPolicy = Literal["warn", "error", "ignore"]

_MANIFEST = "manifest.json"
_SPEC = "spec.json"
_WEIGHTS = "weights.pt"
_REFERENCE = "reference.json"
_MEMBERS = (_SPEC, _WEIGHTS)
_OPTIONAL_MEMBERS = (_REFERENCE,)
_MANIFEST_KEYS = ("format", "format_version", "versions", "members")
_SPEC_KEYS = ("architecture", "architecture_params", "input", "tasks", "served_tasks", "config")
_ARRAY_SUFFIXES = (".npy", ".pt", ".pth")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same model gives the same members

InputData = pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]] | Tensor | NDArray[Any] | str | Path


class ArtifactError(ValueError):
    """A model artifact is missing, truncated, corrupted, tampered with or incompatible."""


class InputWarning(UserWarning):
    """Prediction input that was accepted but changed: unknown categories, imputed missing columns."""


def current_versions() -> dict[str, str]:
    """The versions an artifact written now records."""
    return {
        "multitask": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


# --------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TaskPrediction:
    """One task's predictions for ``N`` input rows.

    Attributes:
        name: the task.
        kind: ``binary``, ``multiclass`` or ``regression``.
        classes: label names in encoded order (``(negative, positive)`` for binary); None when the
            task was built without names (built-in tensor datasets: labels are class indices).
        labels: classification only, ``[N]``: the predicted label in the original encoding (the
            class name, or the class index when ``classes`` is None). Binary: the positive class
            when its probability is at least 0.5.
        proba: classification only: ``[N]`` probability of the positive class (binary) or
            ``[N, C]`` class probabilities in ``classes`` order (multiclass).
        values: regression only: ``[N]`` (or ``[N, D]`` for a vector target) in original units.
    """

    name: str
    kind: str
    classes: tuple[str, ...] | None = None
    labels: NDArray[Any] | None = None
    proba: NDArray[np.float64] | None = None
    values: NDArray[np.float64] | None = None

    def columns(self) -> dict[str, NDArray[Any]]:
        """The output columns of ``multitask predict``: ``<task>``, then ``<task>_proba`` (binary) or
        ``<task>_proba_<class>`` (multiclass); a vector regression target gives ``<task>_<i>``."""
        if self.kind == "regression":
            assert self.values is not None
            if self.values.ndim == 1:
                return {self.name: self.values}
            return {f"{self.name}_{i}": self.values[:, i] for i in range(self.values.shape[1])}
        assert self.labels is not None and self.proba is not None
        out: dict[str, NDArray[Any]] = {self.name: self.labels}
        if self.kind == "binary":
            out[f"{self.name}_proba"] = self.proba
        else:
            names = self.classes if self.classes is not None else tuple(str(i) for i in range(self.proba.shape[1]))
            for i, c in enumerate(names):
                out[f"{self.name}_proba_{c}"] = self.proba[:, i]
        return out


def _task_prediction(task: Task, outputs: Tensor) -> TaskPrediction:
    values = task.predict(outputs).double().numpy()
    if task.kind == "regression":
        return TaskPrediction(task.name, task.kind, values=values)
    index = (values >= 0.5) if task.kind == "binary" else values.argmax(axis=1)
    index = index.astype(np.int64)
    labels: NDArray[Any] = index if task.classes is None else np.asarray(task.classes, dtype=object)[index]
    return TaskPrediction(task.name, task.kind, task.classes, labels=labels, proba=values)


# --------------------------------------------------------------------------------------------
# the predictor
# --------------------------------------------------------------------------------------------
class Predictor:
    """A trained multi-task model with everything needed to predict on new data.

    Usually obtained with :func:`load` (from a run directory or a ``model.mt`` file). Build one
    directly to save a model trained in Python.

    Args:
        model: the trained model (put in eval mode; predictions run on its device, :func:`load`
            gives a CPU model).
        tasks: every task of the model, in output order (auxiliary tasks are kept in the model but
            not served).
        architecture: the registered architecture name that rebuilds ``model``
            (``multitask list architectures``).
        architecture_params: its parameters, as given to :func:`~multitask.architectures.build_model`.
        input_shape: the shape of one input sample.
        input_dtype: the dtype the model's inputs have (``"float32"`` for every built-in dataset).
        preprocessor: the fitted preprocessor of tabular data (None: the model takes tensors).
        config: the resolved run config (kept for reference).
        dataset: what the model was trained on (named in error messages).
        versions: the versions that wrote the model (default: the running ones).
        reference: the training reference of drift monitoring (:func:`multitask.monitor.build_reference`;
            :meth:`from_training` computes it), saved as ``reference.json``; None: none.

    Raises:
        ValueError: the tasks do not match the model's outputs, no task is served, or the
            preprocessor's output width differs from ``input_shape``.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        tasks: Sequence[Task],
        *,
        architecture: str,
        architecture_params: Mapping[str, Any] | None = None,
        input_shape: Sequence[int],
        input_dtype: str = "float32",
        preprocessor: TabularPreprocessor | None = None,
        config: Mapping[str, Any] | None = None,
        dataset: str | None = None,
        versions: Mapping[str, str] | None = None,
        reference: Mapping[str, Any] | None = None,
    ) -> None:
        names = [t.name for t in tasks]
        model_names = list(getattr(model, "task_names", names))
        if model_names != names:
            raise ValueError(
                f"Predictor: tasks={names!r} do not match the model's outputs {model_names!r}; pass the model's tasks in order"
            )
        served = tuple(t for t in tasks if not t.auxiliary)
        if not served:
            raise ValueError(f"Predictor: every task of {names!r} is auxiliary; there is nothing to serve")
        if preprocessor is not None and not isinstance(preprocessor, TabularPreprocessor):
            raise TypeError(
                f"Predictor: preprocessor must be a TabularPreprocessor or None, got {type(preprocessor).__name__}"
            )
        shape = tuple(int(s) for s in input_shape)
        if preprocessor is not None and shape != (preprocessor.n_features_out,):
            raise ValueError(
                f"Predictor: input_shape={list(shape)} but the preprocessor produces {preprocessor.n_features_out} "
                "features per row; pass the preprocessor the model was trained with"
            )
        if not hasattr(torch, input_dtype) or not isinstance(getattr(torch, input_dtype), torch.dtype):
            raise ValueError(f"Predictor: input_dtype={input_dtype!r} is not a torch dtype name such as 'float32'")
        self.model = model.eval()
        self.all_tasks: tuple[Task, ...] = tuple(tasks)
        self.tasks: tuple[Task, ...] = served
        self.architecture = architecture
        self.architecture_params: dict[str, Any] = dict(architecture_params or {})
        self.input_shape: tuple[int, ...] = shape
        self.input_dtype = input_dtype
        self.preprocessor = preprocessor
        self.config: dict[str, Any] = json.loads(json.dumps(dict(config or {})))
        self.dataset = dataset
        self.versions: dict[str, str] = dict(versions) if versions is not None else current_versions()
        self.reference: dict[str, Any] | None = (
            json.loads(json.dumps(dict(reference))) if reference is not None else None
        )

    @classmethod
    def from_training(cls, model: MultiTaskModel, data: MultiTaskData, config: Mapping[str, Any]) -> Predictor:
        """The predictor of ``model`` trained on ``data`` under the resolved ``config`` (``model.architecture``
        and its parameters rebuild it), with the training reference of drift monitoring computed from
        ``data``'s training split (:func:`multitask.monitor.build_reference`)."""
        from .config import component_params
        from .monitor import reference_from_encoded

        pre = data.preprocessor if isinstance(data.preprocessor, TabularPreprocessor) else None
        predictor = cls(
            model,
            data.tasks,
            architecture=str(config["model"]["architecture"]),
            architecture_params=component_params(config, "model"),
            input_shape=data.input_shape,
            input_dtype=str(data.train.inputs.dtype).removeprefix("torch."),
            preprocessor=pre,
            config=config,
            dataset=str(data.name),
        )
        try:
            predictor.reference = reference_from_encoded(predictor, data.train.inputs)
        except (ValueError, RuntimeError, TypeError) as exc:  # never lose the model over its monitoring reference
            warnings.warn(
                f"no training reference for drift monitoring could be computed ({_first_line(exc)}); the model is "
                "saved without one and `multitask monitor` will refuse it",
                RuntimeWarning,
                stacklevel=2,
            )
        return predictor

    # --- description ---------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        """The served tasks (auxiliary tasks excluded), in output order."""
        return [t.name for t in self.tasks]

    @property
    def input_columns(self) -> list[str] | None:
        """The feature columns the input table must have, or None for a tensor model."""
        return list(self.preprocessor.columns) if self.preprocessor is not None else None

    @property
    def input_schema(self) -> dict[str, dict[str, str]] | None:
        """``{column: {"kind": "numeric" | "categorical", "dtype": pandas dtype in training}}`` (tables only)."""
        pre = self.preprocessor
        if pre is None:
            return None
        return {
            c: {"kind": "numeric" if c in pre.numeric else "categorical", "dtype": pre.dtypes.get(c, "unknown")}
            for c in pre.columns
        }

    def task(self, name: str) -> Task:
        """The served task ``name`` (an auxiliary or unknown name raises, naming the served ones)."""
        for t in self.tasks:
            if t.name == name:
                return t
        if any(t.name == name for t in self.all_tasks):
            raise UnknownNameError(
                f"task {name!r} is auxiliary (trained to help the others) and is not served; "
                f"served tasks: {', '.join(self.task_names)}"
            )
        raise UnknownNameError(unknown_name_message("task", name, self.task_names))

    def _describe_input(self) -> str:
        what = f" {self.dataset!r}" if self.dataset else ""
        if self.preprocessor is not None:
            return f"this model was trained on the table{what} and takes a pandas DataFrame or a CSV/Parquet file"
        shape = ", ".join(str(s) for s in self.input_shape)
        return (
            f"this model was trained on the tensor dataset{what} and takes an array or tensor of shape "
            f"[N, {shape}] (a .npy or .pt file on the command line), preprocessed like the dataset's inputs"
        )

    def __repr__(self) -> str:
        inputs = (
            f"columns={len(self.preprocessor.columns)}"
            if self.preprocessor is not None
            else f"input_shape={list(self.input_shape)}"
        )
        return f"Predictor({self.architecture}, tasks={self.task_names}, {inputs})"

    # --- prediction ----------------------------------------------------------------------------
    def _select(self, tasks: str | Sequence[str] | None) -> list[Task]:
        if tasks is None:
            return list(self.tasks)
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        if not names:
            raise ValueError(f"tasks=[] selects nothing; pass None for every task or some of {self.task_names}")
        chosen: list[Task] = []
        for n in names:
            t = self.task(str(n))
            if t not in chosen:
                chosen.append(t)
        return chosen

    def encode(self, data: InputData, *, unknown_categories: UnknownCategoryPolicy = "warn") -> Tensor:
        """The model's input tensor for ``data``, after every check (see :meth:`predict`)."""
        if unknown_categories not in UNKNOWN_CATEGORY_POLICIES:
            raise UnknownNameError(
                unknown_name_message(
                    "unknown_categories policy", str(unknown_categories), list(UNKNOWN_CATEGORY_POLICIES)
                )
            )
        if self.preprocessor is not None:
            return self._encode_table(self._as_frame(data), unknown_categories)
        return self._as_tensor(data)

    def predict(
        self,
        data: InputData,
        tasks: str | Sequence[str] | None = None,
        *,
        unknown_categories: UnknownCategoryPolicy = "warn",
        batch_size: int = 4096,
    ) -> dict[str, TaskPrediction]:
        """Predict every served task (or ``tasks``) for each row of ``data``.

        Args:
            data: for a table model, a DataFrame, a CSV/Parquet path, a dict of columns (lists, or
                scalars for one row) or a list of row dicts: it must hold :attr:`input_columns`
                (extra columns, target columns included, are ignored). For a tensor model, a tensor
                or array ``[N, *input_shape]`` or a ``.npy``/``.pt`` path.
            tasks: a task name or names (default: every served task).
            unknown_categories: a categorical value never seen in training is encoded as all zeros
                (no category, as at validation time); ``"warn"`` (default) also emits an
                :class:`InputWarning` counting the rows per column, ``"error"`` raises instead,
                ``"ignore"`` says nothing.
            batch_size: rows per forward pass.

        Returns:
            ``{task: TaskPrediction}`` in the order asked: labels (original encoding) and
            probabilities for classification, values in original units for regression.

        Raises:
            UnknownNameError: an unknown or auxiliary task (names the served ones).
            ValueError: a missing feature column (unless imputation covers it), a non-numeric value
                in a numeric column, NaN/inf in a numeric column of a model trained with
                ``impute="error"``, unknown categories under ``"error"``, a tensor of the wrong
                shape or with NaN/inf.
            TypeError: data of a kind this model does not take.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        chosen = self._select(tasks)
        x = self.encode(data, unknown_categories=unknown_categories)
        outputs = self._forward(x, [t.name for t in chosen], batch_size)
        return {t.name: _task_prediction(t, outputs[t.name]) for t in chosen}

    def predict_frame(
        self,
        data: InputData,
        tasks: str | Sequence[str] | None = None,
        *,
        id_column: str | None = None,
        unknown_categories: UnknownCategoryPolicy = "warn",
        batch_size: int = 4096,
    ) -> pd.DataFrame:
        """:meth:`predict` as a table: one row per input row, the columns of ``multitask predict``.

        ``id_column`` (a column of a tabular input) is copied first, unchanged. Then, per task,
        ``<task>`` (label or value) and ``<task>_proba`` (binary: probability of the positive
        class) or ``<task>_proba_<class>`` (multiclass).
        """
        ids: pd.Series | None = None
        if id_column is not None:
            if self.preprocessor is None:
                raise ValueError(f"id_column={id_column!r} applies to tabular input only; {self._describe_input()}")
            data = self._as_frame(data)
            present = [str(c) for c in data.columns]
            if id_column not in present:
                raise UnknownNameError(unknown_name_message("id column", id_column, present, "(not in the data)"))
            ids = data[data.columns[present.index(id_column)]]
        preds = self.predict(data, tasks, unknown_categories=unknown_categories, batch_size=batch_size)
        columns: dict[str, Any] = {}
        if ids is not None and id_column is not None:
            columns[id_column] = ids.to_numpy()
        for p in preds.values():
            for name, values in p.columns().items():
                if name in columns:
                    raise ValueError(
                        f"output column {name!r} would appear twice (a task, class or id column name clashes); "
                        "choose another id column or a subset of tasks"
                    )
                columns[name] = values
        return pd.DataFrame(columns)

    def _forward(self, x: Tensor, names: list[str], batch_size: int) -> dict[str, Tensor]:
        n = int(x.shape[0])
        if n == 0:
            by_name = {t.name: t for t in self.tasks}
            return {name: torch.zeros(0, by_name[name].output_dim) for name in names}
        parts: dict[str, list[Tensor]] = {name: [] for name in names}
        device = next(iter(self.model.parameters()), x).device
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                out = self.model(x[start : start + batch_size].to(device))
                for name in names:
                    parts[name].append(out[name].float().cpu())
        return {name: torch.cat(chunks) for name, chunks in parts.items()}

    # --- inputs: tables --------------------------------------------------------------------------
    def _as_frame(self, data: InputData) -> pd.DataFrame:
        if isinstance(data, pd.DataFrame):
            return data
        if isinstance(data, (str, Path)):
            loaded = read_inputs(data)
            if not isinstance(loaded, pd.DataFrame):
                raise ValueError(f"{str(data)!r} is an array file; {self._describe_input()}")
            return loaded
        if isinstance(data, Mapping):
            values = dict(data)
            if values and all(np.ndim(v) == 0 for v in values.values()):
                return pd.DataFrame({k: [v] for k, v in values.items()})
            return pd.DataFrame(values)
        if isinstance(data, Sequence) and data and all(isinstance(r, Mapping) for r in data):
            return pd.DataFrame(list(data))
        raise TypeError(f"got {type(data).__name__}; {self._describe_input()}")

    def _encode_table(self, df: pd.DataFrame, unknown_categories: str) -> Tensor:
        pre = self.preprocessor
        assert pre is not None
        df = df.copy(deep=False)
        df.columns = pd.Index([str(c) for c in df.columns])
        present = list(df.columns)
        counts = Counter(present)
        dup = sorted(c for c in pre.columns if counts[c] > 1)
        if dup:
            raise ValueError(f"feature columns {dup!r} appear more than once in the data; keep one of each")
        missing = [c for c in pre.columns if c not in counts]
        if missing:
            df = self._fill_missing(df, missing, present)
        df = df[list(pre.columns)]
        bad = pre.nonfinite_counts(df)  # a non-numeric value in a numeric column raises, naming it
        if bad and pre.impute == "error":
            parts = ", ".join(f"{c!r} ({n} of {len(df)} rows)" for c, n in bad.items())
            raise ValueError(
                f"numeric feature columns hold NaN or infinite values: {parts}. This model was trained with "
                "data.impute='error', so it has no value to put there: fill or drop those rows, or retrain with "
                "--set data.impute=mean (or median)"
            )
        unknown = pre.unknown_categories(df)
        if unknown and unknown_categories != "ignore":
            parts = "; ".join(
                f"{c!r}: {sum(v.values())} rows ({', '.join(f'{k!r} x{n}' for k, n in list(v.items())[:5])}"
                f"{', ...' if len(v) > 5 else ''})"
                for c, v in unknown.items()
            )
            if unknown_categories == "error":
                raise ValueError(
                    f"categorical feature values never seen in training: {parts}. Map them to known categories "
                    "(Predictor.preprocessor.categorical lists them), or accept the all-zero 'unknown' encoding "
                    "with unknown_categories='warn' (--unknown-categories warn)"
                )
            warnings.warn(
                InputWarning(
                    f"categorical feature values never seen in training, encoded as all zeros (no category): {parts}"
                ),
                stacklevel=4,
            )
        return torch.from_numpy(pre.transform(df))

    def _fill_missing(self, df: pd.DataFrame, missing: list[str], present: list[str]) -> pd.DataFrame:
        pre = self.preprocessor
        assert pre is not None
        fillable = pre.impute != "error" and all(c in pre.numeric for c in missing)
        if not fillable:
            hints = []
            for c in missing:
                near = closest(c, [q for q in present if q not in set(pre.columns)])
                hints.append(f"{c!r}" + (f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""))
            why = (
                "the model was trained with data.impute='error', so every feature column is required"
                if pre.impute == "error"
                else f"imputation (data.impute={pre.impute!r}) covers numeric columns only; "
                f"{[c for c in missing if c not in pre.numeric]!r} are categorical"
            )
            raise ValueError(
                f"the data lacks the feature columns {', '.join(hints)}; {why}. Add them (the model's columns: "
                f"{', '.join(pre.columns)})"
            )
        warnings.warn(
            InputWarning(
                f"the data lacks the numeric feature columns {missing!r}; every row gets the training "
                f"{pre.impute} of the column (data.impute={pre.impute!r})"
            ),
            stacklevel=5,
        )
        return df.assign(**{c: np.nan for c in missing})

    # --- inputs: tensors -------------------------------------------------------------------------
    def _as_tensor(self, data: InputData) -> Tensor:
        source = "the inputs"
        if isinstance(data, (str, Path)):
            source = repr(str(data))
            loaded = read_inputs(data)
            if isinstance(loaded, pd.DataFrame):
                raise ValueError(f"{source} is a table; {self._describe_input()}")
            data = loaded
        if isinstance(data, np.ndarray):
            if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_) or np.iscomplexobj(data):
                raise ValueError(f"{source} have dtype {data.dtype}; {self._describe_input()}")
            data = torch.from_numpy(np.ascontiguousarray(data))
        if not isinstance(data, Tensor):
            raise TypeError(f"got {type(data).__name__}; {self._describe_input()}")
        if data.is_complex():
            raise ValueError(f"{source} are complex; {self._describe_input()}")
        shape = tuple(int(s) for s in data.shape)
        if shape[1:] != self.input_shape:
            hint = "; add a batch dimension (x[None])" if shape == self.input_shape else ""
            raise ValueError(f"{source} have shape {list(shape)}{hint}; {self._describe_input()}")
        x = data.detach().cpu()
        if x.is_floating_point() and x.numel():
            bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
            if bool(bad.any()):
                raise ValueError(
                    f"{source} hold NaN or infinite values in {int(bad.sum())} of {shape[0]} samples "
                    f"(first: row {int(bad.nonzero()[0, 0])}); fix or drop them"
                )
        return x.to(getattr(torch, self.input_dtype))

    # --- saving ----------------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """The JSON description stored as ``spec.json`` (everything but the weights)."""
        inputs: dict[str, Any] = {"shape": list(self.input_shape), "dtype": self.input_dtype}
        if self.preprocessor is not None:
            inputs["kind"] = "table"
            inputs["columns"] = self.input_schema
            inputs["preprocessor"] = self.preprocessor.to_dict()
        else:
            inputs["kind"] = "tensor"
        return {
            "architecture": self.architecture,
            "architecture_params": self.architecture_params,
            "input": inputs,
            "tasks": [t.to_dict() for t in self.all_tasks],
            "served_tasks": self.task_names,
            "dataset": self.dataset,
            "config": self.config,
        }

    def save(self, path: str | Path) -> Path:
        """Write the artifact to ``path`` (a file, e.g. ``model.mt``, or a directory: ``DIR/model.mt``).

        The write is atomic: a temporary file in the same directory, then a rename, so a crash never
        leaves a half-written artifact under the final name. Returns the file written.
        """
        path = Path(path)
        if path.is_dir():
            path = path / ARTIFACT_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        spec = json.dumps(self.spec(), indent=2).encode()
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, buf)
        weights = buf.getvalue()
        blobs = [(_SPEC, spec, zipfile.ZIP_DEFLATED), (_WEIGHTS, weights, zipfile.ZIP_STORED)]
        if self.reference is not None:
            blobs.append((_REFERENCE, json.dumps(self.reference).encode(), zipfile.ZIP_DEFLATED))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "versions": self.versions,
            "members": {
                name: {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)} for name, blob, _ in blobs
            },
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                with zipfile.ZipFile(f, "w") as zf:
                    for name, blob, method in (
                        (_MANIFEST, json.dumps(manifest, indent=2).encode(), zipfile.ZIP_DEFLATED),
                        *blobs,
                    ):
                        info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                        info.compress_type = method
                        zf.writestr(info, blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path


# --------------------------------------------------------------------------------------------
# reading inputs
# --------------------------------------------------------------------------------------------
def read_inputs(path: str | Path) -> pd.DataFrame | Tensor | NDArray[Any]:
    """Read prediction inputs: a CSV/Parquet table, a ``.npy`` array or a ``.pt`` tensor.

    Nothing is unpickled: ``.npy`` is read with ``allow_pickle=False`` and ``.pt`` with
    ``torch.load(weights_only=True)`` (it must hold one tensor).
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"data path {str(p)!r} is a directory; pass a .csv, .parquet, .npy or .pt file")
    if not p.name.lower().endswith(_ARRAY_SUFFIXES):
        return read_table(p)
    if not p.exists():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist")
    try:
        if p.name.lower().endswith(".npy"):
            array: NDArray[Any] = np.load(p, allow_pickle=False)
            return array
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (ValueError, OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read the array file {str(p)!r}: {_first_line(exc)}") from exc
    if not isinstance(obj, Tensor):
        raise ValueError(
            f"{str(p)!r} holds a {type(obj).__name__}, not a tensor; save one tensor [N, ...] with torch.save"
        )
    return obj


# --------------------------------------------------------------------------------------------
# loading artifacts
# --------------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        f = p / ARTIFACT_NAME
        if f.is_file():
            return f
        per_seed = sorted(p.glob(f"seed-*/{ARTIFACT_NAME}"))
        if per_seed:
            raise ArtifactError(
                f"{str(p)!r} holds one model per seed; pass one of: {', '.join(str(s.parent) for s in per_seed)}"
            )
        if (p / "config.yaml").is_file():
            raise ArtifactError(
                f"run directory {str(p)!r} has no {ARTIFACT_NAME}: its training has not finished (continue it with "
                f"`multitask train --resume {p}`), or it was trained by a multitask that wrote no artifact (write one "
                f"with `python -c \"from multitask.experiment import save_artifact; save_artifact('{p}')\"`)"
            )
        raise ArtifactError(f"{str(p)!r} is a directory without {ARTIFACT_NAME}; pass a run directory or a model file")
    if not p.exists():
        raise ArtifactError(f"model artifact {str(p)!r} does not exist; pass a run directory or its {ARTIFACT_NAME}")
    return p


def _major(version: str) -> int | None:
    head = str(version).split(".")[0]
    return int(head) if head.isdigit() else None


def _check_manifest(where: str, manifest: Any) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not a multitask model artifact (its manifest has no '{FORMAT}' marker)")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ArtifactError(f"{where} has an invalid format_version={version!r}; the file is damaged")
    if version > FORMAT_VERSION:
        writer = (
            manifest.get("versions", {}).get("multitask", "?") if isinstance(manifest.get("versions"), dict) else "?"
        )
        raise ArtifactError(
            f"{where} was written in multitask artifact format {version} (by multitask {writer}); this multitask "
            f"{__version__} reads format {FORMAT_VERSION}: upgrade multitask"
        )
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ArtifactError(f"{where} is incomplete: its manifest lacks {missing}; re-save the model")
    versions = manifest["versions"]
    if not isinstance(versions, dict) or not isinstance(manifest["members"], dict):
        raise ArtifactError(
            f"{where} has a malformed manifest (versions or members is not a mapping); re-save the model"
        )
    written, running = _major(str(versions.get("torch", ""))), _major(str(torch.__version__))
    if written is not None and running is not None and written > running:
        raise ArtifactError(
            f"{where} was written with torch {versions['torch']}, a newer major version than the installed torch "
            f"{torch.__version__}: upgrade torch to {written}.x or later"
        )
    return manifest


def load(path: str | Path) -> Predictor:
    """Restore a model saved by :meth:`Predictor.save`, e.g. by ``multitask train``.

    Args:
        path: a ``model.mt`` file or a run directory (its ``model.mt`` is read).

    Returns:
        The :class:`Predictor`: ``.predict(data, tasks=None)``, ``.tasks``, ``.config``,
        ``.versions``, ``.input_columns``.

    Raises:
        ArtifactError: the file is missing, empty, truncated, corrupted (a member fails its zip CRC
            or its sha256), not a multitask artifact (e.g. a training checkpoint), from a newer
            format or torch major version, incomplete (required members or keys absent), or its
            weights do not fit the architecture rebuilt from its spec. The message says which and
            how to fix it.
    """
    p = _resolve(path)
    where = repr(str(p))
    blob = p.read_bytes()
    damaged = "re-run training, or copy the file again"
    if not blob:
        raise ArtifactError(f"model artifact {where} is empty (0 bytes): it was truncated; {damaged}")
    if not blob.startswith(b"PK"):
        raise ArtifactError(
            f"{where} is not a multitask model artifact (not a zip archive); pass a run directory or its {ARTIFACT_NAME}"
        )
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ArtifactError(
            f"model artifact {where} is truncated or corrupted ({_first_line(exc)}, {len(blob)} bytes); {damaged}"
        ) from exc
    with zf:
        names = set(zf.namelist())
        if _MANIFEST not in names:
            looks = any(n.endswith("data.pkl") for n in names)
            hint = " (it looks like a torch.save file, e.g. a training checkpoint)" if looks else ""
            raise ArtifactError(
                f"{where} is not a multitask model artifact: no {_MANIFEST}{hint}; pass a run directory or its "
                f"{ARTIFACT_NAME}"
            )

        def member(name: str) -> bytes:
            try:
                return zf.read(name)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
                if "CRC" in str(exc):
                    raise ArtifactError(
                        f"model artifact {where} is corrupted: it fails its checksum: member {name!r} does not match "
                        f"its zip CRC-32; {damaged}"
                    ) from exc
                raise ArtifactError(
                    f"model artifact {where} is corrupted: member {name!r} cannot be read ({_first_line(exc)}); "
                    f"{damaged}"
                ) from exc

        try:
            manifest = json.loads(member(_MANIFEST))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"model artifact {where} has an unreadable {_MANIFEST} ({exc}); {damaged}") from exc
        manifest = _check_manifest(where, manifest)

        def verified(name: str, recorded: dict[str, Any]) -> bytes:
            data = member(name)
            digest = hashlib.sha256(data).hexdigest()
            if digest != recorded["sha256"]:
                raise ArtifactError(
                    f"model artifact {where} fails its checksum: member {name!r} has sha256 {digest[:12]}..., the "
                    f"manifest records {str(recorded['sha256'])[:12]}...; the file was altered or damaged: {damaged}"
                )
            return data

        blobs: dict[str, bytes] = {}
        for name in _MEMBERS:
            recorded = manifest["members"].get(name)
            if name not in names or not isinstance(recorded, dict) or "sha256" not in recorded:
                raise ArtifactError(f"model artifact {where} is incomplete: member {name!r} is missing; {damaged}")
            blobs[name] = verified(name, recorded)
        for name in _OPTIONAL_MEMBERS:
            recorded = manifest["members"].get(name)
            if recorded is None and name not in names:
                continue
            if name not in names or not isinstance(recorded, dict) or "sha256" not in recorded:
                what = "is missing" if name not in names else "is not listed in its manifest"
                raise ArtifactError(
                    f"model artifact {where} fails its integrity check: member {name!r} {what}; the file was "
                    f"altered or damaged: {damaged}"
                )
            blobs[name] = verified(name, recorded)
    reference: dict[str, Any] | None = None
    if _REFERENCE in blobs:
        try:
            reference = json.loads(blobs[_REFERENCE])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"model artifact {where} has an unreadable {_REFERENCE} ({exc}); {damaged}") from exc
        if not isinstance(reference, dict):
            raise ArtifactError(f"model artifact {where}: {_REFERENCE} is not a JSON object; {damaged}")
    try:
        spec = json.loads(blobs[_SPEC])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"model artifact {where} has an unreadable {_SPEC} ({exc}); {damaged}") from exc
    if not isinstance(spec, dict):
        raise ArtifactError(f"model artifact {where}: {_SPEC} is not a JSON object; {damaged}")
    missing = [k for k in _SPEC_KEYS if k not in spec]
    if missing:
        raise ArtifactError(f"model artifact {where} is incomplete: {_SPEC} lacks {missing}; re-save the model")
    try:
        weights = torch.load(io.BytesIO(blobs[_WEIGHTS]), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ArtifactError(
            f"model artifact {where}: the weights cannot be read safely ({_first_line(exc)}); {damaged}"
        ) from exc
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in weights.items()
    ):
        raise ArtifactError(f"model artifact {where}: {_WEIGHTS} is not a state dict of named tensors; {damaged}")
    return _rebuild(where, spec, weights, manifest["versions"], reference)


def _rebuild(
    where: str,
    spec: dict[str, Any],
    weights: dict[str, Tensor],
    versions: dict[str, Any],
    reference: dict[str, Any] | None = None,
) -> Predictor:
    inputs = spec["input"]
    try:
        tasks = [Task.from_dict(d) for d in spec["tasks"]]
        shape = [int(s) for s in inputs["shape"]]
        pre = TabularPreprocessor.from_dict(inputs["preprocessor"]) if inputs.get("kind") == "table" else None
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(
            f"model artifact {where} has an invalid spec ({_first_line(exc)}); re-save the model"
        ) from exc
    served = [t.name for t in tasks if not t.auxiliary]
    if spec["served_tasks"] != served:
        raise ArtifactError(
            f"model artifact {where} is inconsistent: served tasks {spec['served_tasks']!r} but non-auxiliary tasks "
            f"{served!r}; re-save the model"
        )
    arch = str(spec["architecture"])
    try:
        with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
            model = build_model(arch, shape, tasks, **dict(spec["architecture_params"]))
    except UnknownNameError as exc:
        raise ArtifactError(
            f"model artifact {where} (written by multitask {versions.get('multitask', '?')}) cannot be rebuilt by "
            f"this multitask {__version__}: {str(exc).rstrip('.')}. Install the multitask version that wrote it"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ArtifactError(
            f"model artifact {where}: architecture {arch!r} cannot be rebuilt from its parameters "
            f"({_first_line(exc)}); it was written by multitask {versions.get('multitask', '?')}, this is {__version__}"
        ) from exc
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshaped = [
        f"{k} {list(weights[k].shape)} (the model has {list(v.shape)})"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                parts.append(f"{label} {items[:5]}" + (f" and {len(items) - 5} more" if len(items) > 5 else ""))
        raise ArtifactError(
            f"model artifact {where}: the weights do not fit architecture {arch!r} rebuilt from its spec: "
            f"{'; '.join(parts)}. The file was edited or mixes two models: re-save the model, or re-run training"
        )
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ArtifactError(f"model artifact {where}: weights {bad[:5]} hold NaN or infinite values; re-run training")
    model.load_state_dict(weights)
    dataset = spec.get("dataset")
    return Predictor(
        model,
        tasks,
        architecture=arch,
        architecture_params=spec["architecture_params"],
        input_shape=shape,
        input_dtype=str(inputs.get("dtype", "float32")),
        preprocessor=pre,
        config=spec["config"],
        dataset=str(dataset) if dataset is not None else None,
        versions={str(k): str(v) for k, v in versions.items()},
        reference=reference,
    )
