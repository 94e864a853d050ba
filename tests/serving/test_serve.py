"""HTTP serving: ``multitask serve`` / ``create_app`` on a real uvicorn server on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
import uvicorn  # noqa: E402
from serving_tables import TASKS  # noqa: E402
from serving_tables import make_table as _make_table  # noqa: E402

from multitask.artifact import Predictor, load  # noqa: E402
from multitask.cli import main  # noqa: E402
from multitask.serve import MicroBatcher, create_app  # noqa: E402
from multitask.tasks import Task  # noqa: E402

MAX_BODY = 20_000


def make_table(n: int, seed: int) -> pd.DataFrame:
    return _make_table(n, seed, ids=False)


def request_of(df: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    n = len(df)
    return {
        "inputs": [
            {"name": "x1", "shape": [n], "datatype": "FP64", "data": df["x1"].tolist()},
            {"name": "x2", "shape": [n], "datatype": "FP32", "data": df["x2"].tolist()},
            {"name": "color", "shape": [n], "datatype": "BYTES", "data": df["color"].tolist()},
        ],
        **extra,
    }


class Server:
    """A real uvicorn server in a background thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serve")
    csv = tmp / "people.csv"
    make_table(160, 0).to_csv(csv, index=False)
    args = ["train", "--data", str(csv), *TASKS, "--epochs", "2", "--no-baselines", "-q"]
    assert main([*args, "--set", "model.hidden=[16]", "--out-dir", str(tmp), "--name", "people"]) == 0
    return tmp / "people"


@pytest.fixture(scope="module")
def predictor(run: Path) -> Predictor:
    return load(run)


@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[Server]:
    s = Server(
        create_app(predictor, name="people", max_batch=16, max_wait_ms=5.0, max_body_bytes=MAX_BODY, max_rows=200)
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def outputs_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in body["outputs"]}


# --------------------------------------------------------------------------------------------
# health, metadata, OpenAPI
# --------------------------------------------------------------------------------------------
def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}
    assert client.get("/v2/models/people/ready").status_code == 200
    r = client.get("/v2/models/nobody/ready")
    assert r.status_code == 404 and "people" in r.json()["error"]


def test_metadata_names_inputs_and_one_output_per_task(client: httpx.Client, predictor: Predictor) -> None:
    meta = client.get("/v2/models/people").json()
    assert meta["name"] == "people"
    assert [i["name"] for i in meta["inputs"]] == predictor.input_columns == ["x1", "x2", "color"]
    assert [i["datatype"] for i in meta["inputs"]] == ["FP64", "FP64", "BYTES"]
    outs = {o["name"]: o for o in meta["outputs"]}
    assert list(outs) == ["buy", "buy_proba", "species", "species_proba", "price"]
    assert outs["species"]["datatype"] == "BYTES" and outs["species"]["parameters"]["classes"] == ["cat", "dog", "eel"]
    assert outs["species_proba"]["shape"] == [-1, 3] and outs["price"]["datatype"] == "FP64"


def test_openapi_schema_documents_the_endpoints(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v2/health/live", "/v2/health/ready", "/v2/models/{model}", "/v2/models/{model}/infer"} <= set(
        schema["paths"]
    )
    body = schema["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["inputs"]
    assert client.get("/docs").status_code == 200


# --------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------
def test_infer_every_task_equals_predictor_predict(client: httpx.Client, predictor: Predictor) -> None:
    df = make_table(7, 1)
    r = client.post("/v2/models/people/infer", json=request_of(df, id="req-1"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "people" and body["id"] == "req-1"
    out = outputs_by_name(body)
    assert list(out) == ["buy", "buy_proba", "species", "species_proba", "price"]
    expected = predictor.predict(df)
    assert out["buy"]["data"] == list(expected["buy"].labels) and out["buy"]["datatype"] == "BYTES"
    np.testing.assert_allclose(out["buy_proba"]["data"], expected["buy"].proba, rtol=1e-5, atol=1e-6)
    assert out["species_proba"]["shape"] == [7, 3]
    np.testing.assert_allclose(
        np.reshape(out["species_proba"]["data"], (7, 3)), expected["species"].proba, rtol=1e-5, atol=1e-6
    )
    assert out["species"]["data"] == list(expected["species"].labels)
    np.testing.assert_allclose(out["price"]["data"], expected["price"].values, rtol=1e-5)
    assert out["price"]["shape"] == [7]


def test_infer_a_subset_of_tasks(client: httpx.Client, predictor: Predictor) -> None:
    df = make_table(3, 2)
    r = client.post("/v2/models/people/infer", json=request_of(df, outputs=[{"name": "price"}, {"name": "buy_proba"}]))
    assert r.status_code == 200, r.text
    out = outputs_by_name(r.json())
    assert list(out) == ["price", "buy_proba"]
    np.testing.assert_allclose(out["price"]["data"], predictor.predict(df, "price")["price"].values, rtol=1e-5)
    r = client.post("/v2/models/people/infer", json=request_of(df, outputs=[{"name": "species"}]))
    assert list(outputs_by_name(r.json())) == ["species", "species_proba"]


def test_nested_data_and_column_shape_are_accepted(client: httpx.Client, predictor: Predictor) -> None:
    df = make_table(2, 3)
    req = request_of(df)
    req["inputs"][0] = {"name": "x1", "shape": [2, 1], "datatype": "FP64", "data": [[v] for v in df["x1"]]}
    r = client.post("/v2/models/people/infer", json=req)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        outputs_by_name(r.json())["price"]["data"], predictor.predict(df)["price"].values, rtol=1e-5
    )


def test_a_request_of_zero_rows_gets_empty_outputs(client: httpx.Client) -> None:
    r = client.post("/v2/models/people/infer", json=request_of(make_table(0, 4)))
    assert r.status_code == 200, r.text
    out = outputs_by_name(r.json())
    assert out["buy"]["data"] == [] and out["species_proba"]["shape"] == [0, 3]


def test_concurrent_requests_get_exactly_their_own_rows(server: Server, predictor: Predictor) -> None:
    frames = [make_table(1 + (i * 7) % 23, 100 + i) for i in range(40)]
    expected = [predictor.predict(df)["price"].values for df in frames]
    batcher: MicroBatcher = server.server.config.app.state.batcher  # type: ignore[attr-defined]
    before = batcher.batches

    def ask(i: int) -> list[float]:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.post("/v2/models/people/infer", json=request_of(frames[i], id=str(i)))
            assert r.status_code == 200, r.text
            assert r.json()["id"] == str(i)
            data: list[float] = outputs_by_name(r.json())["price"]["data"]
            return data

    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(ask, range(len(frames))))
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5)
    assert batcher.batches - before < len(frames), "concurrent requests were never batched together"


def test_microbatcher_splits_a_batch_back_per_request(predictor: Predictor) -> None:
    import asyncio

    batcher = MicroBatcher(predictor, max_batch=10, max_wait_ms=50.0)
    frames = [make_table(n, n) for n in (1, 4, 3, 12, 2)]  # 12 > max_batch runs alone

    async def go() -> list[list[dict[str, Any]]]:
        await batcher.start()
        try:
            xs = [predictor.encode(df) for df in frames]
            return list(await asyncio.gather(*(batcher.submit(x, ["price"], ["price"]) for x in xs)))
        finally:
            await batcher.stop()

    results = asyncio.run(go())
    for df, r in zip(frames, results, strict=True):
        np.testing.assert_allclose(r[0]["data"], predictor.predict(df)["price"].values, rtol=1e-5)
    assert batcher.batches == 3 and batcher.rows == 22  # [1, 4, 3], [12], [2]


# --------------------------------------------------------------------------------------------
# malformed requests: 4xx with a message, the server stays up
# --------------------------------------------------------------------------------------------
def _good() -> dict[str, Any]:
    return request_of(make_table(2, 5))


def _with_input(i: int, **change: Any) -> dict[str, Any]:
    req = _good()
    req["inputs"][i] = {**req["inputs"][i], **change}
    return req


MALFORMED: list[tuple[str, Any, int, str]] = [
    ("bad JSON", b'{"inputs": [', 400, "not valid JSON"),
    ("invalid UTF-8", b'{"inputs": "\xff\xfe"}', 400, "not valid JSON"),
    ("too deeply nested JSON", b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
    ("non-object body", [1, 2, 3], 400, "JSON object"),
    ("empty inputs", {"inputs": []}, 400, "non-empty list"),
    ("no inputs", {"outputs": [{"name": "buy"}]}, 400, "'inputs'"),
    ("unknown field", {**_good(), "input": []}, 400, "unknown request fields"),
    ("wrong datatype", _with_input(0, datatype="BYTES", data=["a", "b"]), 400, "numeric feature column"),
    ("unknown datatype", _with_input(0, datatype="FLOAT"), 400, "unknown datatype"),
    ("value of the wrong type", _with_input(1, data=[1.0, "x"]), 400, "takes numbers"),
    ("data does not fit shape", _with_input(0, shape=[3]), 400, "needs 3"),
    ("rows differ between inputs", _with_input(0, shape=[1], data=[0.5]), 400, "same number of rows"),
    ("not one column", _with_input(0, shape=[1, 2]), 400, "not one column"),
    ("negative shape", _with_input(0, shape=[-2]), 400, "non-negative"),
    ("unknown input column", _with_input(0, name="x3"), 400, "x3"),
    ("input twice", {"inputs": [_good()["inputs"][0]] * 2}, 400, "twice"),
    ("missing column", {"inputs": _good()["inputs"][:2]}, 422, "color"),
    ("NaN in a numeric column", _with_input(0, data=[None, 1.0]), 422, "NaN"),
    ("unknown task", {**_good(), "outputs": [{"name": "byu"}]}, 400, "did you mean 'buy'"),
    ("no _proba for regression", {**_good(), "outputs": [{"name": "price_proba"}]}, 400, "regression"),
    ("outputs not a list", {**_good(), "outputs": "buy"}, 400, "'outputs'"),
    ("id not a string", {**_good(), "id": 3}, 400, "'id'"),
    ("too many rows", _with_input(0, shape=[500]), 413, "max_rows"),
    (
        "oversize body",
        {"inputs": [{"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.0] * 5000}]},
        413,
        "max_body_bytes",
    ),
]


@pytest.mark.parametrize(("what", "body", "status", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_a_4xx_with_a_message(
    client: httpx.Client, what: str, body: Any, status: int, message: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v2/models/people/infer", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, (what, r.text)
    assert message in r.json()["error"], r.json()
    assert client.get("/v2/health/ready").status_code == 200


def test_oversize_streamed_body_without_content_length_is_refused(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": [{"name": "x1", "shape": [1], "datatype": "FP64", "data": ['
        for _ in range(MAX_BODY // 10):
            yield b"0.0000000,"
        yield b"0.0]}]}"

    r = client.post("/v2/models/people/infer", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]
    assert client.get("/v2/health/live").status_code == 200


def test_unknown_model_and_method(client: httpx.Client) -> None:
    r = client.post("/v2/models/other/infer", json=_good())
    assert r.status_code == 404 and "'people'" in r.json()["error"]
    assert client.get("/v2/models/people/infer").status_code == 405


def test_an_internal_error_is_a_500_and_the_server_survives(server: Server, client: httpx.Client) -> None:
    pred: Predictor = server.server.config.app.state.predictor  # type: ignore[attr-defined]
    original = pred._forward

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    pred._forward = broken  # type: ignore[method-assign]
    try:
        r = client.post("/v2/models/people/infer", json=_good())
    finally:
        pred._forward = original  # type: ignore[method-assign]
    assert r.status_code == 500 and "boom" in r.json()["error"]
    assert client.post("/v2/models/people/infer", json=_good()).status_code == 200


# --------------------------------------------------------------------------------------------
# tensor models, options, the CLI
# --------------------------------------------------------------------------------------------
def test_tensor_model_takes_one_input_with_the_full_shape() -> None:
    from multitask.architectures import build_model

    tasks = [Task("digit", "multiclass", num_classes=3), Task("size", "regression")]
    torch.manual_seed(0)
    model = build_model("hard_sharing", (2, 3), tasks, hidden=[8])
    pred = Predictor(model, tasks, architecture="hard_sharing", architecture_params={"hidden": [8]}, input_shape=(2, 3))
    s = Server(create_app(pred, max_wait_ms=0.0))
    try:
        x = torch.randn(4, 2, 3)
        with httpx.Client(base_url=s.url, timeout=30) as c:
            req = {"inputs": [{"name": "input", "shape": [4, 2, 3], "datatype": "FP32", "data": x.flatten().tolist()}]}
            r = c.post("/v2/models/model/infer", json=req)
            assert r.status_code == 200, r.text
            out = outputs_by_name(r.json())
            expected = pred.predict(x)
            assert out["digit"]["datatype"] == "INT64" and out["digit"]["data"] == expected["digit"].labels.tolist()
            np.testing.assert_allclose(out["size"]["data"], expected["size"].values, rtol=1e-5)
            bad = {"inputs": [{"name": "input", "shape": [4, 6], "datatype": "FP32", "data": x.flatten().tolist()}]}
            r = c.post("/v2/models/model/infer", json=bad)
            assert r.status_code == 400 and "[-1, 2, 3]" in r.json()["error"]
            assert c.get("/v2/models/model").json()["inputs"][0]["shape"] == [-1, 2, 3]
    finally:
        s.stop()


def test_unknown_categories_error_policy_refuses_with_422(predictor: Predictor) -> None:
    s = Server(create_app(predictor, unknown_categories="error", max_wait_ms=0.0))
    try:
        req = request_of(make_table(2, 6))
        req["inputs"][2]["data"] = ["red", "purple"]
        r = httpx.post(f"{s.url}/v2/models/model/infer", json=req, timeout=30)
        assert r.status_code == 422 and "purple" in r.json()["error"]
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("max_batch", 0, "max_batch=0"),
        ("max_wait_ms", -1.0, "max_wait_ms=-1.0"),
        ("max_body_bytes", 0, "max_body_bytes=0"),
        ("unknown_categories", "loud", "unknown_categories='loud'"),
        ("name", "a/b", "name='a/b'"),
    ],
)
def test_create_app_rejects_bad_options(predictor: Predictor, option: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        create_app(predictor, **{option: value})


def test_cli_serve_refuses_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_serve_runs_the_real_server(run: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    cmd = [sys.executable, "-m", "multitask", "serve", str(run), "--port", str(port), "--max-batch", "8"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "multitask serve did not become ready"
            time.sleep(0.1)
        r = httpx.post(f"{url}/v2/models/people/infer", json=request_of(make_table(2, 9)), timeout=10)
        assert r.status_code == 200 and r.json()["model_name"] == "people"
    finally:
        proc.terminate()
        proc.wait(10)
