"""benchmarks/step_overhead.py runs end to end on a tiny setting and its checks work."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from multitask.weighting import WEIGHTINGS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_overhead.py"
TINY = ["--tasks", "2", "--steps", "2", "--warmup", "1", "--in-dim", "8", "--hidden", "16,8", "--batch", "16"]
# a gradient method to run beside `equal`: the first one registered (torchjd has all but gradnorm)
GRADIENT_METHODS = ("mgda", "upgrad", "imtl_g", "cagrad", "config", "pcgrad", "graddrop", "gradnorm")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_step_overhead", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _has_torchjd() -> bool:
    return importlib.util.find_spec("torchjd") is not None


def test_tiny_run_prints_the_table_and_the_cosine_check(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    method = next(m for m in GRADIENT_METHODS if m in WEIGHTINGS)
    out = tmp_path / "bench.json"
    # --memory none: the profiler's first start costs seconds; peak_step_bytes has its own test
    argv = [*TINY, "--methods", f"equal,{method},not_a_method", "--memory", "none", "--json", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "| method | mode | T | ours/plain" in text
    assert "| equal | exact | 2 |" in text
    assert f"| {method} | exact | 2 |" in text
    assert "equal / plain (ours, exact)" in text
    assert "not_a_method: not registered" in text

    report = json.loads(out.read_text())
    ours = [r for r in report["results"] if r["impl"] == "ours"]
    assert {r["method"] for r in ours} == {"equal", method}
    assert all(r["error"] is None and r["steps"] == 2 and r["ratio_median"] > 0 for r in ours)
    modes = bench.our_modes(method, 2, bench.DEFAULT_MODES, {})
    assert {r["mode"] for r in ours if r["method"] == method} == set(modes)

    if not _has_torchjd():
        return
    assert "cosine ours vs peers, equal T=2: autojac 1.000000, autogram 1.000000" in text
    cos = {row["method"]: row for row in report["cosines"]}
    assert cos["equal"]["autojac"] == pytest.approx(1.0, abs=1e-6)
    if bench.PEERS[method].torchjd is not None:
        assert -1.0 <= cos[method]["autojac"] <= 1.0 + 1e-9
    assert any(r["impl"] == "autojac" and r["error"] is None for r in report["results"])


def test_peak_step_bytes_sees_an_allocation_made_during_the_step(bench: ModuleType) -> None:
    model = torch.nn.Linear(2, 2)
    kept: list[torch.Tensor] = []

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        kept.append(torch.ones(2**20))  # 4 MiB, still alive at the end of the step
        torch.ones(2**21).sum()  # 8 MiB, freed at once: only the peak sees it

    config = bench.Config("probe", "ours", "exact", model, step)
    first = bench.peak_step_bytes(config, torch.zeros(1), torch.zeros(1))
    assert 12 * 2**20 <= first < 13 * 2**20
    # blocks kept alive by an earlier probe do not raise the next one's figure
    assert bench.peak_step_bytes(config, torch.zeros(1), torch.zeros(1)) == first


def test_ours_params_parse_and_unknown_ones_are_reported(bench: ModuleType) -> None:
    assert bench._parse_ours_params(["cagrad:c=0.5", "nash_mtl:optim_niter=5", "x:mode=l2"]) == {
        "cagrad": {"c": 0.5},
        "nash_mtl": {"optim_niter": 5},
        "x": {"mode": "l2"},
    }
    notes: list[str] = []
    method = bench.our_method("gradnorm", 3, {"alpha": 0.5, "no_such": 1}, notes)
    assert method.alpha == 0.5
    assert any("no_such" in n for n in notes)
    assert math.isclose(bench.cosine(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])), 1.0)
