"""HTTP serving: a trained model behind a KServe v2-style JSON API (FastAPI + uvicorn).

:func:`create_app` wraps a :class:`~multitask.artifact.Predictor` in an ASGI app::

    GET  /v2/health/live                  200 while the process runs
    GET  /v2/health/ready                 200 once the model is loaded and warmed up, else 503
    GET  /v2/models/{name}                metadata: inputs (feature columns, datatypes), outputs (per task)
    GET  /v2/models/{name}/ready          as /v2/health/ready
    POST /v2/models/{name}/infer          {"inputs": [...], "outputs": [...] (optional subset), "id": ...}
    GET  /openapi.json, /docs             the OpenAPI schema and its browser UI

Concurrent requests are queued and answered by one batched forward pass (up to ``max_batch``
rows, waiting at most ``max_wait_ms`` for more), run in a worker thread so the event loop keeps
answering. Bodies larger than ``max_body_bytes`` are refused with 413 before they are parsed.
Every malformed request gets a 4xx JSON ``{"error": message}``; an internal error gets a 500 and
the server keeps running. :func:`serve` runs the app under uvicorn (``multitask serve``).

Needs the ``serve`` extra: ``pip install 'multitask[serve]'``.
"""

import asyncio
import json
import math
import os
import traceback
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .artifact import UNKNOWN_CATEGORY_POLICIES, Predictor, TaskPrediction, _task_prediction, load
from .data.base import MissingDependencyError
from .registry import UnknownNameError, unknown_name_message

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["InferenceError", "MicroBatcher", "create_app", "serve"]

NUMERIC_DATATYPES: tuple[str, ...] = (
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
)
DATATYPES: tuple[str, ...] = (*NUMERIC_DATATYPES, "BYTES")
TENSOR_INPUT = "input"
_CONFIG_ENV = "MULTITASK_SERVE_CONFIG"


class InferenceError(ValueError):
    """A request the server refuses: ``status`` is the HTTP status (4xx) and the message says why."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _require_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"HTTP serving needs fastapi and uvicorn ({exc}); install them with: pip install 'multitask[serve]'"
        ) from exc


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


# --------------------------------------------------------------------------------------------
# micro-batching
# --------------------------------------------------------------------------------------------
@dataclass
class _Pending:
    x: Tensor
    tasks: tuple[str, ...]
    outputs: tuple[str, ...]
    future: asyncio.Future[list[dict[str, Any]]] = field(repr=False)

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


class MicroBatcher:
    """Dynamic batching: concurrent requests become one forward pass, results split back per request.

    Requests queue up; the batcher takes the first one, waits up to ``max_wait_ms`` for more until
    ``max_batch`` rows are queued, runs them as one batch in a worker thread, and hands every request
    exactly its own rows. A request larger than ``max_batch`` runs alone.

    Args:
        predictor: the model.
        max_batch: the most rows of one batched forward pass.
        max_wait_ms: how long the first queued request waits for others to join its batch.
    """

    def __init__(self, predictor: Predictor, *, max_batch: int = 64, max_wait_ms: float = 2.0) -> None:
        self.predictor = predictor
        self.max_batch = _positive_int("max_batch", max_batch)
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or not 0 <= max_wait_ms < 1e5:
            raise ValueError(f"max_wait_ms={max_wait_ms!r} must be a number of milliseconds >= 0, e.g. 2.0")
        self.max_wait = float(max_wait_ms) / 1000.0
        self.batches = 0  # forward passes run (for tests and monitoring)
        self.rows = 0
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the batching loop and its worker thread (in the running event loop)."""
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="multitask-infer")
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop; queued requests get an error."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._loop_task
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def run_sync(self, x: Tensor, tasks: Sequence[str], outputs: Sequence[str]) -> list[dict[str, Any]]:
        """One request's outputs without queueing (used for the warm-up)."""
        return self._infer([(x, tuple(tasks), tuple(outputs))])[0]

    async def submit(self, x: Tensor, tasks: Sequence[str], outputs: Sequence[str]) -> list[dict[str, Any]]:
        """Queue ``x`` (encoded rows) and wait for its outputs: KServe v2 output tensors."""
        if self._wakeup is None or self._loop_task is None:
            raise RuntimeError("MicroBatcher.submit before start(): the app's lifespan has not run")
        if self._loop_task.done():
            raise RuntimeError("the batching loop has stopped; restart the server")
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(x, tuple(tasks), tuple(outputs), future))
        self._wakeup.set()
        return await future

    def _queued_rows(self) -> int:
        return sum(p.rows for p in self._queue)

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = loop.time() + self.max_wait
            while self._queued_rows() < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch: list[_Pending] = []
            rows = 0
            while self._queue and (not batch or rows + self._queue[0].rows <= self.max_batch):
                p = self._queue.popleft()
                if p.future.done():  # the client went away
                    continue
                batch.append(p)
                rows += p.rows
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(
                    self._executor, self._infer, [(p.x, p.tasks, p.outputs) for p in batch]
                )
            except Exception as exc:  # the model failed: every request of the batch gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.batches += 1
            self.rows += rows
            for p, r in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(r)

    def _infer(self, requests: list[tuple[Tensor, tuple[str, ...], tuple[str, ...]]]) -> list[list[dict[str, Any]]]:
        """Worker thread: one forward pass over every request's rows, then per-request output tensors."""
        pred = self.predictor
        wanted = {t for _, tasks, _ in requests for t in tasks}
        names = [t.name for t in pred.tasks if t.name in wanted]
        x = torch.cat([r[0] for r in requests]) if len(requests) > 1 else requests[0][0]
        raw = pred._forward(x, names, max(int(x.shape[0]), 1))
        by_task = {t.name: t for t in pred.tasks}
        full = {name: _task_prediction(by_task[name], raw[name]) for name in names}
        results: list[list[dict[str, Any]]] = []
        start = 0
        for xi, _, outputs in requests:
            stop = start + int(xi.shape[0])
            results.append([_output_tensor(full, name, start, stop) for name in outputs])
            start = stop
        return results


def _output_tensor(full: dict[str, TaskPrediction], name: str, start: int, stop: int) -> dict[str, Any]:
    """Output tensor ``name`` (``<task>`` or ``<task>_proba``) of rows ``start:stop`` of the batch."""
    proba = name.endswith("_proba") and name not in full
    task = name[: -len("_proba")] if proba else name
    p = full[task]
    if p.kind == "regression":
        assert p.values is not None
        values = p.values[start:stop]
        return {"name": name, "datatype": "FP64", "shape": list(values.shape), "data": values.reshape(-1).tolist()}
    assert p.proba is not None and p.labels is not None
    if proba:
        values = p.proba[start:stop]
        out: dict[str, Any] = {
            "name": name,
            "datatype": "FP64",
            "shape": list(values.shape),
            "data": values.reshape(-1).tolist(),
        }
        if p.classes is not None:
            out["parameters"] = {"classes": list(p.classes) if p.kind == "multiclass" else [p.classes[1]]}
        return out
    labels = p.labels[start:stop]
    datatype = "INT64" if p.classes is None else "BYTES"
    data = [int(v) for v in labels] if p.classes is None else [str(v) for v in labels]
    return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}


# --------------------------------------------------------------------------------------------
# the protocol: requests -> encoded rows
# --------------------------------------------------------------------------------------------
def _output_names(predictor: Predictor) -> list[str]:
    names: list[str] = []
    for t in predictor.tasks:
        names.append(t.name)
        if t.kind != "regression":
            names.append(f"{t.name}_proba")
    return names


def _parse_outputs(predictor: Predictor, spec: Any) -> tuple[list[str], list[str]]:
    """``(tasks, output tensor names)`` asked for by the request's ``outputs`` (default: all)."""
    valid = _output_names(predictor)
    if spec is None:
        return predictor.task_names, valid
    if not isinstance(spec, list) or not spec:
        raise InferenceError(
            f"'outputs' must be a non-empty list of {{\"name\": ...}} objects (or left out for every task); "
            f"got {_short(spec)}; valid names: {', '.join(valid)}"
        )
    outputs: list[str] = []
    for i, o in enumerate(spec):
        name = o.get("name") if isinstance(o, dict) else None
        if not isinstance(name, str):
            raise InferenceError(f"outputs[{i}] must be an object with a string 'name'; got {_short(o)}")
        if name not in valid:
            base = name.removesuffix("_proba")
            try:
                predictor.task(base)  # raises the predictor's own message (unknown / auxiliary task)
            except UnknownNameError as exc:
                raise InferenceError(f"outputs[{i}]: {exc}") from exc
            raise InferenceError(f"outputs[{i}]: {name!r}: task {base!r} is a regression task and has no _proba output")
        chosen = [name]
        if name in predictor.task_names and f"{name}_proba" in valid:
            chosen.append(f"{name}_proba")  # a task name asks for its label and its probabilities
        outputs += [c for c in chosen if c not in outputs]
    tasks = [t for t in predictor.task_names if t in outputs or f"{t}_proba" in outputs]
    return tasks, outputs


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_shape(i: int, name: str, shape: Any) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise InferenceError(
            f"inputs[{i}] ({name!r}): 'shape' must be a list of non-negative integers; got {_short(shape)}"
        )
    return shape


def _flat_data(i: int, name: str, data: Any, shape: list[int]) -> list[Any]:
    if not isinstance(data, list):
        raise InferenceError(f"inputs[{i}] ({name!r}): 'data' must be a JSON list; got {_short(data)}")
    flat: list[Any] = data
    while flat and any(isinstance(v, list) for v in flat):  # nested (row-major) data is flattened
        if not all(isinstance(v, list) for v in flat):
            raise InferenceError(f"inputs[{i}] ({name!r}): 'data' mixes lists and scalars; send a flat list")
        flat = [w for v in flat for w in v]
    expected = math.prod(shape)
    if len(flat) != expected:
        raise InferenceError(
            f"inputs[{i}] ({name!r}): 'data' has {len(flat)} values but shape {shape} needs {expected}; "
            "send prod(shape) values in row-major order"
        )
    return flat


def _check_values(i: int, name: str, datatype: str, values: list[Any]) -> None:
    if datatype == "BYTES":
        bad = next((v for v in values if not isinstance(v, str) and v is not None), _MISSING)
        what = "strings"
    elif datatype == "BOOL":
        bad = next((v for v in values if not isinstance(v, bool)), _MISSING)
        what = "true/false"
    elif datatype.startswith(("INT", "UINT")):
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, int)), _MISSING)
        what = "integers"
    else:
        bad = next(
            (v for v in values if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))), _MISSING
        )
        what = "numbers (or null for a missing value)"
    if bad is not _MISSING:
        raise InferenceError(
            f"inputs[{i}] ({name!r}): datatype {datatype} takes {what}; got {_short(bad)} "
            f"({type(bad).__name__}); send the right values or datatype"
        )


_MISSING = object()


class _Protocol:
    """Turns a KServe v2 request body into the Predictor's input, checking its structure first."""

    def __init__(self, predictor: Predictor, *, max_rows: int) -> None:
        self.predictor = predictor
        self.max_rows = max_rows
        self.columns = predictor.input_columns
        schema = predictor.input_schema or {}
        self.numeric = {c for c, s in schema.items() if s["kind"] == "numeric"}

    def parse(self, body: Any) -> tuple[Any, list[str], list[str], Any]:
        """``(predictor input, tasks, output names, request id)``."""
        if not isinstance(body, dict):
            raise InferenceError(
                f'the request body must be a JSON object {{"inputs": [...]}}; got a JSON {type(body).__name__}'
            )
        unknown = sorted(set(body) - {"id", "inputs", "outputs", "parameters"})
        if unknown:
            raise InferenceError(
                f"unknown request fields {unknown}; a request has 'inputs', 'outputs', 'id', 'parameters'"
            )
        rid = body.get("id")
        if rid is not None and not isinstance(rid, str):
            raise InferenceError(f"'id' must be a string; got {_short(rid)}")
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise InferenceError(
                f'\'inputs\' must be a non-empty list of input tensors {{"name", "shape", "datatype", "data"}}; '
                f"got {_short(inputs)}"
            )
        tasks, outputs = _parse_outputs(self.predictor, body.get("outputs"))
        data = self._tensor(inputs) if self.columns is None else self._table(inputs)
        return data, tasks, outputs, rid

    def _one(self, i: int, tensor: Any) -> tuple[str, list[int], str, list[Any]]:
        if not isinstance(tensor, dict):
            raise InferenceError(
                f"inputs[{i}] must be an object with name, shape, datatype and data; got {_short(tensor)}"
            )
        missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
        if missing:
            raise InferenceError(f"inputs[{i}] lacks {missing}; every input has name, shape, datatype and data")
        name, datatype = tensor["name"], tensor["datatype"]
        if not isinstance(name, str):
            raise InferenceError(f"inputs[{i}]: 'name' must be a string; got {_short(name)}")
        if datatype not in DATATYPES:
            raise InferenceError(
                f"inputs[{i}] ({name!r}): unknown datatype {_short(datatype)}; use one of {', '.join(DATATYPES)}"
            )
        shape = _check_shape(i, name, tensor["shape"])
        if shape and shape[0] > self.max_rows:
            raise InferenceError(
                f"inputs[{i}] ({name!r}) has {shape[0]} rows; this server takes at most max_rows={self.max_rows} "
                "rows per request: split the request",
                status=413,
            )
        return name, shape, datatype, _flat_data(i, name, tensor["data"], shape)

    def _table(self, inputs: list[Any]) -> pd.DataFrame:
        assert self.columns is not None
        columns: dict[str, list[Any]] = {}
        rows: int | None = None
        for i, tensor in enumerate(inputs):
            name, shape, datatype, values = self._one(i, tensor)
            if name not in self.columns:
                raise InferenceError(f"inputs[{i}]: {unknown_name_message('input column', name, self.columns)}")
            if name in columns:
                raise InferenceError(f"inputs[{i}]: input {name!r} appears twice; send each column once")
            if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
                raise InferenceError(
                    f"inputs[{i}] ({name!r}): shape {shape} is not one column; a table input has shape [N] (or [N, 1])"
                )
            if rows is not None and shape[0] != rows:
                raise InferenceError(
                    f"inputs[{i}] ({name!r}) has {shape[0]} rows but the inputs before it have {rows}; "
                    "send every column with the same number of rows"
                )
            rows = shape[0]
            if name in self.numeric and datatype == "BYTES":
                raise InferenceError(
                    f"inputs[{i}] ({name!r}) is a numeric feature column; datatype BYTES given: send FP32/FP64/INT64 numbers"
                )
            _check_values(i, name, datatype, values)
            columns[name] = [math.nan if v is None else v for v in values] if name in self.numeric else values
        return pd.DataFrame(columns)

    def _tensor(self, inputs: list[Any]) -> Tensor:
        if len(inputs) != 1:
            raise InferenceError(f"this model takes one input tensor named {TENSOR_INPUT!r}; got {len(inputs)} inputs")
        name, shape, datatype, values = self._one(0, inputs[0])
        full = [-1, *self.predictor.input_shape]
        if name != TENSOR_INPUT:
            raise InferenceError(f"inputs[0]: the input is named {TENSOR_INPUT!r}, not {name!r}")
        if datatype == "BYTES":
            raise InferenceError(f"inputs[0] ({name!r}): datatype BYTES given; this model takes numbers (FP32)")
        if len(shape) != len(full) or list(shape[1:]) != full[1:]:
            raise InferenceError(f"inputs[0] ({name!r}): shape {shape} given; this model takes shape {full} (N rows)")
        _check_values(0, name, datatype, values)
        array = np.asarray([math.nan if v is None else v for v in values], dtype=np.float64).reshape(shape)
        return torch.from_numpy(array)


# --------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------
def _metadata(predictor: Predictor, name: str) -> dict[str, Any]:
    inputs: list[dict[str, Any]]
    if predictor.input_schema is not None:
        inputs = [
            {
                "name": c,
                "datatype": "FP64" if s["kind"] == "numeric" else "BYTES",
                "shape": [-1],
                "parameters": {"kind": s["kind"], "dtype": s["dtype"]},
            }
            for c, s in predictor.input_schema.items()
        ]
    else:
        inputs = [{"name": TENSOR_INPUT, "datatype": "FP32", "shape": [-1, *predictor.input_shape]}]
    outputs: list[dict[str, Any]] = []
    for t in predictor.tasks:
        params: dict[str, Any] = {"kind": t.kind}
        if t.kind == "regression":
            shape = [-1] if t.output_dim == 1 else [-1, t.output_dim]
            outputs.append({"name": t.name, "datatype": "FP64", "shape": shape, "parameters": params})
            continue
        if t.classes is not None:
            params["classes"] = list(t.classes)
        outputs.append(
            {"name": t.name, "datatype": "BYTES" if t.classes else "INT64", "shape": [-1], "parameters": params}
        )
        pshape = [-1] if t.kind == "binary" else [-1, t.output_dim]
        outputs.append({"name": f"{t.name}_proba", "datatype": "FP64", "shape": pshape, "parameters": params})
    return {
        "name": name,
        "versions": [],
        "platform": "multitask_pytorch",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "architecture": predictor.architecture,
            "tasks": predictor.task_names,
            "dataset": predictor.dataset,
        },
    }


_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "description": "a feature column (tables) or 'input' (tensor models)"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "example": [2]},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "data": {"type": "array", "items": {}, "description": "prod(shape) values, row-major (nested lists allowed)"},
    },
}
_INFER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "description": "a subset of the outputs: a task name (its label/value and probabilities) or '<task>_proba'",
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        },
        "parameters": {"type": "object"},
    },
}


def create_app(
    predictor: Predictor,
    *,
    name: str = "model",
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    max_body_bytes: int = 1_000_000,
    max_rows: int = 10_000,
    unknown_categories: str = "ignore",
) -> "FastAPI":
    """The ASGI app serving ``predictor`` with a KServe v2-style JSON protocol.

    Args:
        predictor: the model (:func:`multitask.load`).
        name: the model's name in the URLs (``/v2/models/{name}/infer``).
        max_batch: the most rows of one batched forward pass (concurrent requests are merged).
        max_wait_ms: how long a request waits for others to join its batch.
        max_body_bytes: bodies larger than this are refused with 413, before parsing.
        max_rows: the most rows of one request (more: 413).
        unknown_categories: categorical values never seen in training are encoded as all zeros
            (``"ignore"``, the default, and ``"warn"``, which also writes a warning to the server's
            stderr) or refused with 422 (``"error"``).

    Returns:
        A FastAPI app; run it with uvicorn (:func:`serve` does).

    Raises:
        ValueError: a parameter out of range.
        MissingDependencyError: fastapi is not installed (``pip install 'multitask[serve]'``).
    """
    _require_serve_extra()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    if not isinstance(predictor, Predictor):
        raise TypeError(
            f"create_app: predictor must be a multitask Predictor (multitask.load(path)); got {type(predictor).__name__}"
        )
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"create_app: name={name!r} must be a non-empty string without '/', e.g. 'model'")
    _positive_int("max_body_bytes", max_body_bytes)
    _positive_int("max_rows", max_rows)
    if unknown_categories not in UNKNOWN_CATEGORY_POLICIES:
        raise ValueError(
            f"create_app: unknown_categories={unknown_categories!r}; use one of {', '.join(UNKNOWN_CATEGORY_POLICIES)}"
        )
    batcher = MicroBatcher(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms)
    protocol = _Protocol(predictor, max_rows=max_rows)
    state: dict[str, bool] = {"ready": False}
    policy: Any = unknown_categories

    @asynccontextmanager
    async def lifespan(app: "FastAPI") -> AsyncIterator[None]:
        await batcher.start()
        warm = torch.zeros(1, *predictor.input_shape, dtype=getattr(torch, predictor.input_dtype))
        await asyncio.to_thread(batcher.run_sync, warm, predictor.task_names, _output_names(predictor))
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()

    app = FastAPI(
        title=f"multitask model {name!r}",
        description=f"KServe v2-style inference for {predictor!r}. Tasks: {', '.join(predictor.task_names)}.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.predictor = predictor

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def not_found(model: str) -> JSONResponse:
        return error(404, f"unknown model {model!r}; this server serves {name!r}")

    @app.get("/v2/health/live", summary="liveness: 200 while the server runs")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", summary="readiness: 200 once the model is loaded and warmed up, else 503")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    @app.get("/v2/models/{model}/ready", summary="the model's readiness")
    async def model_ready(model: str) -> JSONResponse:
        if model != name:
            return not_found(model)
        return JSONResponse({"name": name, "ready": state["ready"]}, status_code=200 if state["ready"] else 503)

    meta = _metadata(predictor, name)

    @app.get("/v2/models/{model}", summary="model metadata: inputs (feature columns) and outputs (per task)")
    async def metadata(model: str) -> JSONResponse:
        if model != name:
            return not_found(model)
        return JSONResponse(meta)

    @app.post(
        "/v2/models/{model}/infer",
        summary="predict: named inputs in, one output per task (label or value) and '<task>_proba'",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _INFER_SCHEMA}}}},
        responses={
            400: {"description": "malformed request"},
            413: {"description": "body or rows over the limit"},
            422: {"description": "input the model refuses"},
        },
    )
    async def infer(model: str, request: Request) -> JSONResponse:
        if model != name:
            return not_found(model)
        try:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
                return error(
                    413, f"request body of {declared} bytes exceeds max_body_bytes={max_body_bytes}; split the request"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    return error(413, f"request body exceeds max_body_bytes={max_body_bytes}; split the request")
                chunks.append(chunk)
            try:
                body = json.loads(b"".join(chunks))
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
                return error(400, f"the request body is not valid JSON: {type(exc).__name__}: {exc}")
            try:
                data, tasks, outputs, rid = protocol.parse(body)
                x = await asyncio.to_thread(predictor.encode, data, unknown_categories=policy)
            except InferenceError as exc:
                return error(exc.status, str(exc))
            except UnknownNameError as exc:
                return error(400, str(exc))
            except (ValueError, TypeError) as exc:  # the predictor's own input checks
                return error(422, str(exc))
            results = await batcher.submit(x, tasks, outputs)
            response: dict[str, Any] = {"model_name": name, **({"id": rid} if rid is not None else {})}
            response["outputs"] = results
            return JSONResponse(response)
        except Exception as exc:  # never take the server down
            traceback.print_exc()
            return error(500, f"internal error: {type(exc).__name__}: {exc}")

    return app


# --------------------------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------------------------
def _model_name(path: str | Path) -> str:
    p = Path(path)
    name = p.name if p.is_dir() else (p.parent.name if p.parent.name else p.stem)
    return name.replace("/", "_") or "model"


def _app_from_env() -> "FastAPI":
    """uvicorn factory for ``workers > 1``: every worker process loads the model itself."""
    cfg = json.loads(os.environ[_CONFIG_ENV])
    path = cfg.pop("path")
    return create_app(load(path), **cfg)


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    name: str | None = None,
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    max_body_bytes: int = 1_000_000,
    max_rows: int = 10_000,
    unknown_categories: str = "ignore",
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Load the model at ``model`` (a run directory or ``model.mt``) and serve it with uvicorn until stopped.

    ``workers > 1`` starts that many processes, each with its own copy of the model; the other
    arguments are those of :func:`create_app`. The model is loaded (and checked) before the server
    starts, so a bad artifact fails here with an :class:`~multitask.artifact.ArtifactError`.
    """
    _require_serve_extra()
    import uvicorn

    _positive_int("workers", workers)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port={port!r} must be an integer in 0..65535")
    predictor = load(model)
    options: dict[str, Any] = {
        "name": name or _model_name(model),
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        "max_body_bytes": max_body_bytes,
        "max_rows": max_rows,
        "unknown_categories": unknown_categories,
    }
    app = create_app(predictor, **options)  # validates the options before any worker starts
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    os.environ[_CONFIG_ENV] = json.dumps({"path": str(Path(model).resolve()), **options})
    uvicorn.run(
        "multitask.serve:_app_from_env", factory=True, host=host, port=port, workers=workers, log_level=log_level
    )
