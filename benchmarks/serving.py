"""Serving throughput and latency: one T-head model against T single-task models, in-process and over HTTP.

Three measurements, every one in this run:

1. **In-process**: ``R`` requests of ``rows`` rows each answered by one hard-sharing model with ``T``
   heads (one ``Predictor.predict`` per request) against ``T`` single-task models with the same
   trunk (``T`` calls per request). The trunk (``d -> hidden -> hidden``) dominates the cost.
   ``torch.set_num_threads(1)``; the two are timed alternately, ``--repeats`` times; the ratio is
   single-task time / multi-task time (target >= 0.8 x T).
2. **HTTP**: the same requests over loopback: one ``multitask serve`` process with the T-head
   model against ``T`` processes, one per single-task model (each request is sent to all ``T``
   at once). The load comes from a second process (``--loadgen``, httpx) with ``--concurrency``
   requests in flight; servers and load generator run with one torch/OpenMP thread, every server
   pinned to CPU 0 and the load generator to CPU 1 (``--no-pin``: unpinned), so the T single-task
   servers get the same compute as the one T-head server.
3. **Latency under load**: a small tabular model trained by ``multitask train`` on a generated
   CSV, served with and without micro-batching; the load generator keeps ``--clients`` requests of
   1-16 rows in flight for ``--load-requests`` requests and reports p50/p99 latency, throughput
   and the number of failed valid requests (target 0), then sends a fixed set of malformed
   requests and reports their status codes (target: all 4xx).

    python benchmarks/serving.py                                   # T = 2, 4, 8
    python benchmarks/serving.py --tasks 2,4 --repeats 3 --json serving.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# servers on CPU 0, the load generator on CPU 1 (--no-pin: anywhere): the T single-task servers then
# share the one core the T-head server has, instead of spreading over more cores than it gets
PIN = {"server": {0}, "loadgen": {1}}


def _pinned(role: str) -> Any:
    cpus = PIN.get(role)
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, cpus)


ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


# --------------------------------------------------------------------------------------------
# the load generator (runs in its own process)
# --------------------------------------------------------------------------------------------
async def _load(urls: list[str], bodies: list[bytes], rows: list[int], concurrency: int, n: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(
        max_connections=concurrency * len(urls) + 4, max_keepalive_connections=concurrency * len(urls) + 4
    )
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for u in urls:  # warm the connections and the servers
            (await client.post(u, content=bodies[0], headers=headers)).raise_for_status()
        latencies: list[float] = []
        failures = 0
        statuses: Counter[int] = Counter()
        next_i = iter(range(n))

        async def one(url: str, body: bytes, expect: int) -> bool:
            nonlocal failures
            try:
                r = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                statuses[-1] += 1
                return False
            statuses[r.status_code] += 1
            if r.status_code != 200:
                return False
            outs = r.json()["outputs"]
            return bool(outs) and all(o["shape"][0] == expect for o in outs)

        async def worker() -> None:
            nonlocal failures
            for i in next_i:
                k = i % len(bodies)
                t0 = time.perf_counter()
                ok = await asyncio.gather(*(one(u, bodies[k], rows[k]) for u in urls))
                latencies.append(time.perf_counter() - t0)
                failures += sum(not o for o in ok)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    total_rows = sum(rows[i % len(bodies)] for i in range(n))
    return {
        "wall_s": wall,
        "requests": n,
        "rows": total_rows,
        "failures": failures,
        "statuses": dict(statuses),
        "latencies_s": latencies,
    }


async def _malformed(url: str, cases: list[tuple[str, str]]) -> dict[str, int]:
    import httpx

    out: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=60) as client:
        for what, body in cases:
            try:
                r = await client.post(url, content=body.encode("latin-1"), headers={"content-type": "application/json"})
                out[what] = r.status_code
            except httpx.HTTPError:
                out[what] = -1
        out["(server still ready)"] = (await client.get(url.split("/v2/")[0] + "/v2/health/ready")).status_code
    return out


def _loadgen_main(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args.loadgen).read_text())
    if "malformed" in spec:
        result: Any = asyncio.run(_malformed(spec["url"], [tuple(c) for c in spec["malformed"]]))
    else:
        bodies = [b.encode() for b in spec["bodies"]]
        result = asyncio.run(_load(spec["urls"], bodies, spec["rows"], spec["concurrency"], spec["requests"]))
    print(json.dumps(result))


def run_loadgen(spec: dict[str, Any], tmp: Path) -> Any:
    path = tmp / "loadgen.json"
    path.write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, __file__, "--loadgen", str(path)],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_pinned("loadgen"),
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr}")
    return json.loads(out.stdout)


# --------------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Servers:
    """``multitask serve`` subprocesses on loopback, one per model file."""

    def __init__(self, models: list[Path], *extra: str) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        for m in models:
            port = free_port()
            cmd = [sys.executable, "-m", "multitask", "serve", str(m), "--port", str(port), "--name", "m", *extra]
            self.procs.append(
                subprocess.Popen(
                    cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_pinned("server")
                )
            )
            self.urls.append(f"http://127.0.0.1:{port}")
        import httpx

        deadline = time.monotonic() + 180
        for proc, url in zip(self.procs, self.urls, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server failed: {proc.stderr.read().decode() if proc.stderr else ''}")
                try:
                    if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server {url} did not become ready")
                time.sleep(0.2)

    @property
    def infer_urls(self) -> list[str]:
        return [f"{u}/v2/models/m/infer" for u in self.urls]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)


# --------------------------------------------------------------------------------------------
# models and requests
# --------------------------------------------------------------------------------------------
def build_predictors(t: int, d: int, hidden: list[int], seed: int) -> tuple[Any, list[Any]]:
    import torch

    from multitask.architectures import build_model
    from multitask.artifact import Predictor
    from multitask.tasks import Task

    tasks = [Task(f"t{i}", "regression") for i in range(t)]
    torch.manual_seed(seed)

    def predictor(ts: list[Task]) -> Predictor:
        model = build_model("hard_sharing", (d,), ts, hidden=hidden)
        return Predictor(
            model, ts, architecture="hard_sharing", architecture_params={"hidden": hidden}, input_shape=(d,)
        )

    return predictor(tasks), [predictor([task]) for task in tasks]


def tensor_bodies(xs: list[Any]) -> list[str]:
    return [
        json.dumps(
            {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}
        )
        for x in xs
    ]


def summarize(times: list[float]) -> dict[str, float]:
    return {"min": min(times), "median": statistics.median(times)}


def in_process(mt: Any, sts: list[Any], xs: list[Any], repeats: int) -> dict[str, Any]:
    for x in xs[:2]:  # warm-up
        mt.predict(x)
        for p in sts:
            p.predict(x)
    t_mt: list[float] = []
    t_st: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in xs:
            mt.predict(x)
        t_mt.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for x in xs:
            for p in sts:
                p.predict(x)
        t_st.append(time.perf_counter() - t0)
    return {"multi": summarize(t_mt), "single": summarize(t_st)}


def over_http(
    mt_file: Path, st_files: list[Path], bodies: list[str], rows: list[int], repeats: int, concurrency: int, tmp: Path
) -> dict[str, Any]:
    extra = ("--max-batch", "256", "--max-wait-ms", "2", "--max-body-bytes", "10000000")
    servers = Servers([mt_file, *st_files], *extra)
    try:
        mt_urls, st_urls = servers.infer_urls[:1], servers.infer_urls[1:]
        t_mt: list[float] = []
        t_st: list[float] = []
        failures = 0
        for _ in range(repeats):
            for urls, times in ((mt_urls, t_mt), (st_urls, t_st)):
                spec = {
                    "urls": urls,
                    "bodies": bodies,
                    "rows": rows,
                    "concurrency": concurrency,
                    "requests": len(bodies),
                }
                res = run_loadgen(spec, tmp)
                times.append(res["wall_s"])
                failures += res["failures"]
    finally:
        servers.stop()
    return {"multi": summarize(t_mt), "single": summarize(t_st), "failures": failures}


# --------------------------------------------------------------------------------------------
# latency under load: a tabular model trained by `multitask train`
# --------------------------------------------------------------------------------------------
def train_table_model(tmp: Path) -> Path:
    import numpy as np
    import pandas as pd

    from multitask.cli import main

    rng = np.random.default_rng(0)
    n = 2000
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    s = x1 + 0.5 * x2 + (color == "red")
    df = pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "color": color,
            "buy": np.where(s > 0.5, "yes", "no"),
            "species": np.select([s < 0, s < 1], ["cat", "dog"], "eel"),
            "price": 100 + 20 * s + rng.normal(size=n),
        }
    )
    df.to_csv(tmp / "people.csv", index=False)
    args = ["train", "--data", str(tmp / "people.csv"), "--task", "buy:binary:yes", "--task", "species:multiclass"]
    args += [
        "--task",
        "price:regression",
        "--epochs",
        "3",
        "--no-baselines",
        "-q",
        "--out-dir",
        str(tmp),
        "--name",
        "people",
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # the training table is not part of this benchmark
        assert main(args) == 0
    return tmp / "people"


def table_bodies(count: int, seed: int) -> tuple[list[str], list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    bodies, rows = [], []
    for _ in range(count):
        n = int(rng.integers(1, 17))
        bodies.append(
            json.dumps(
                {
                    "inputs": [
                        {"name": "x1", "shape": [n], "datatype": "FP64", "data": rng.normal(size=n).tolist()},
                        {"name": "x2", "shape": [n], "datatype": "FP64", "data": rng.normal(size=n).tolist()},
                        {
                            "name": "color",
                            "shape": [n],
                            "datatype": "BYTES",
                            "data": rng.choice(["red", "green", "blue"], n).tolist(),
                        },
                    ]
                }
            )
        )
        rows.append(n)
    return bodies, rows


def malformed_cases(max_body: int) -> list[tuple[str, str]]:
    good = {
        "inputs": [
            {"name": "x1", "shape": [2], "datatype": "FP64", "data": [0.1, 0.2]},
            {"name": "x2", "shape": [2], "datatype": "FP64", "data": [0.3, 0.4]},
            {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
        ]
    }

    def change(i: int, **kw: Any) -> str:
        body = json.loads(json.dumps(good))
        body["inputs"][i].update(kw)
        return json.dumps(body)

    return [
        ("bad JSON", '{"inputs": ['),
        ("non-object body", "[1, 2, 3]"),
        ("empty inputs", '{"inputs": []}'),
        ("wrong datatype (BYTES for a number)", change(0, datatype="BYTES", data=["a", "b"])),
        ("wrong value type", change(1, data=[1.0, "x"])),
        ("wrong shape", change(0, shape=[3])),
        ("unknown column", change(0, name="x3")),
        ("missing column", json.dumps({"inputs": good["inputs"][:2]})),
        ("unknown task", json.dumps({**good, "outputs": [{"name": "byu"}]})),
        ("NaN without imputation", change(0, data=[None, 0.2])),
        ("too many rows", change(0, shape=[100_000])),
        (
            "oversize body",
            json.dumps({"inputs": [{"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.0] * (max_body // 4)}]}),
        ),
        ("invalid UTF-8", '{"inputs": "\xff\xfe"}'),
    ]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def latency_under_load(run_dir: Path, clients: int, n: int, rounds: int, tmp: Path) -> list[dict[str, Any]]:
    """Both servers run side by side; the load generator alternates between them, ``rounds`` runs of
    ``n // rounds`` requests each, so drifting background load hits both alike."""
    bodies, rows = table_bodies(200, 1)
    configs = (
        ("micro-batching (max_batch 64, max_wait 2 ms)", ("--max-batch", "64", "--max-wait-ms", "2")),
        ("no batching (max_batch 1)", ("--max-batch", "1", "--max-wait-ms", "0")),
    )
    servers = [Servers([run_dir], *extra, "--max-body-bytes", "100000") for _, extra in configs]
    runs: list[list[dict[str, Any]]] = [[] for _ in configs]
    try:
        per_round = max(1, n // rounds)
        for _ in range(rounds):
            for k, srv in enumerate(servers):
                spec = {
                    "urls": srv.infer_urls,
                    "bodies": bodies,
                    "rows": rows,
                    "concurrency": clients,
                    "requests": per_round,
                }
                runs[k].append(run_loadgen(spec, tmp))
        statuses = run_loadgen({"url": servers[0].infer_urls[0], "malformed": malformed_cases(100_000)}, tmp)
    finally:
        for srv in servers:
            srv.stop()
    out = []
    for (label, _), rs in zip(configs, runs, strict=True):
        lat = [v for r in rs for v in r["latencies_s"]]
        out.append(
            {
                "server": label,
                "p50_ms": 1000 * percentile(lat, 0.5),
                "p99_ms": 1000 * percentile(lat, 0.99),
                "req_per_s": statistics.median(r["requests"] / r["wall_s"] for r in rs),
                "rows_per_s": statistics.median(r["rows"] / r["wall_s"] for r in rs),
                "failures": sum(r["failures"] for r in rs),
                "requests": sum(r["requests"] for r in rs),
                "malformed": statuses,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="2,4,8", help="comma-separated T (default 2,4,8)")
    parser.add_argument("--features", type=int, default=64, help="input width d (default 64)")
    parser.add_argument("--hidden", default="2048,2048", help="trunk widths (default 2048,2048)")
    parser.add_argument("--rows", type=int, default=32, help="rows per request (default 32)")
    parser.add_argument("--requests", type=int, default=24, help="requests per measurement (default 24)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument("--concurrency", type=int, default=4, help="HTTP requests in flight (default 4)")
    parser.add_argument("--clients", type=int, default=8, help="latency part: requests in flight (default 8)")
    parser.add_argument("--load-requests", type=int, default=600, help="latency part: requests (default 600)")
    parser.add_argument("--rounds", type=int, default=5, help="latency part: alternating runs per server (default 5)")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the servers to CPU 0 and the load generator to CPU 1"
    )
    parser.add_argument("--skip-http", action="store_true", help="in-process part only")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--loadgen", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        _loadgen_main(args)
        return

    import torch

    torch.set_num_threads(1)
    if args.no_pin or (os.cpu_count() or 1) < 2:
        PIN.clear()
    ts = [int(t) for t in args.tasks.split(",")]
    hidden = [int(h) for h in args.hidden.split(",")]
    print(
        f"# trunk {args.features} -> {' -> '.join(map(str, hidden))}, linear heads, {args.requests} requests x "
        f"{args.rows} rows, 1 thread, {args.repeats} repeats; python {platform.python_version()}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs; "
        + ("HTTP servers pinned to CPU 0, the load generator to CPU 1" if PIN else "unpinned")
    )
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(args.rows, args.features, generator=g) for _ in range(args.requests)]
    bodies = tensor_bodies(xs)
    rows = [args.rows] * len(xs)
    results: dict[str, Any] = {"config": vars(args), "throughput": [], "latency": None}
    print(
        "\n| T | where | T-head model: requests/s (median, best) | T single-task models: requests/s (median, best) | speed-up (median; best/best) | target 0.8 x T (median) |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for t in ts:
            mt, sts = build_predictors(t, args.features, hidden, seed=t)
            rows_out = [("in-process", in_process(mt, sts, xs, args.repeats))]
            if not args.skip_http:
                mt_file = mt.save(tmp / f"mt{t}" / "model.mt")
                st_files = [p.save(tmp / f"st{t}-{i}" / "model.mt") for i, p in enumerate(sts)]
                rows_out.append(
                    (
                        f"HTTP, {args.concurrency} in flight",
                        over_http(mt_file, st_files, bodies, rows, args.repeats, args.concurrency, tmp),
                    )
                )
                for f in [mt_file, *st_files]:
                    f.unlink()
            for where, r in rows_out:
                n = args.requests
                speed = r["single"]["median"] / r["multi"]["median"]
                results["throughput"].append({"T": t, "where": where, **r, "speedup": speed})
                fail = f" ({r['failures']} failed)" if r.get("failures") else ""
                print(
                    f"| {t} | {where}{fail} | {n / r['multi']['median']:.1f} ({n / r['multi']['min']:.1f}) | "
                    f"{n / r['single']['median']:.1f} ({n / r['single']['min']:.1f}) | {speed:.2f}x; "
                    f"{r['single']['min'] / r['multi']['min']:.2f}x | "
                    f"{'met' if speed >= 0.8 * t else 'NOT met'} ({0.8 * t:.1f}x) |",
                    flush=True,
                )
        if not args.skip_http:
            run_dir = train_table_model(tmp)
            lat = latency_under_load(run_dir, args.clients, args.load_requests, args.rounds, tmp)
            results["latency"] = lat
            print(
                f"\n# latency: tabular model (3 features, 3 tasks, hard_sharing 256-128), {args.clients} requests in "
                f"flight from a second process, {args.load_requests} requests of 1-16 rows per server in {args.rounds} "
                "alternating rounds (throughput: median round)"
            )
            print("\n| server | p50 ms | p99 ms | requests/s | rows/s | failed valid requests |")
            print("|---|---|---|---|---|---|")
            for r in lat:
                print(
                    f"| {r['server']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['req_per_s']:.0f} | "
                    f"{r['rows_per_s']:.0f} | {r['failures']} of {r['requests']} |"
                )
            print("\n| malformed request | status |")
            print("|---|---|")
            for what, status in lat[0]["malformed"].items():
                print(f"| {what} | {status} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
