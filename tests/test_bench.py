"""``multitask bench``: the grid runs, resumes without retraining, and reruns identically."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from multitask.bench import Grid, run_bench, static_candidates
from multitask.cli import main
from multitask.config import ConfigError

SMALL = {
    "datasets": ["multidigits"],
    "architectures": ["hard_sharing"],
    "weightings": ["equal"],
    "extra": [{"architectures": ["hard_sharing"], "weightings": ["tuned_static"]}],
    "seeds": [0, 1],
    "train": {"epochs": 1},
    "data": {"multidigits": {"pairs_per_image": 1}},
    "model": {"hard_sharing": {"hidden": [32]}},
    "static_candidates": 3,
}


def test_static_candidates() -> None:
    two = static_candidates(2, 5)
    assert two[0] == pytest.approx([1.0, 1.0]) and len(two) == 5
    assert all(sum(w) == pytest.approx(2.0) and min(w) > 0 for w in two)
    many = static_candidates(4, 6)
    assert many[0] == [1.0] * 4 and len({tuple(w) for w in many}) == 6
    assert all(sum(w) == pytest.approx(4.0) for w in many)
    assert many == static_candidates(4, 6)  # the same for every seed and configuration


def test_grid_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'seeds'"):
        Grid.from_dict({"datasets": ["adult"], "seed": [0]})
    with pytest.raises(ConfigError, match="duplicates"):
        Grid(datasets=["adult"], seeds=[0, 0])


def test_grid_extra_blocks() -> None:
    grid = Grid.from_dict(
        {
            "datasets": ["adult"],
            "architectures": ["hard_sharing", "mmoe"],
            "weightings": ["equal", "mgda"],
            "extra": [{"architectures": ["hard_sharing"], "weightings": ["pcgrad", "equal", "upgrad"]}],
        }
    )
    assert grid.cells() == [
        ("hard_sharing", "equal"),
        ("hard_sharing", "mgda"),
        ("mmoe", "equal"),
        ("mmoe", "mgda"),
        ("hard_sharing", "pcgrad"),
        ("hard_sharing", "upgrad"),
    ]
    with pytest.raises(ConfigError, match=r"extra\[0\].*exactly the keys"):
        Grid(datasets=["adult"], extra=[{"weightings": ["pcgrad"]}])
    with pytest.raises(ConfigError, match=r"extra\[0\].weightings=\[\] must be a non-empty list"):
        Grid(datasets=["adult"], extra=[{"architectures": ["mmoe"], "weightings": []}])


def test_bench_runs_resumes_and_reruns_identically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = run_bench(Grid.from_dict(dict(SMALL)), tmp_path / "a")
    configs = summary["datasets"]["multidigits"]["configs"]
    assert set(configs) == {"hard_sharing + equal", "hard_sharing + tuned_static"}
    with open(tmp_path / "a" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["seed"] for r in rows} == {"0", "1"}
    md = (tmp_path / "a" / "summary.md").read_text()
    assert "| hard_sharing + tuned_static |" in md and "per-metric" in md
    tuned = configs["hard_sharing + tuned_static"]
    assert len(tuned["static_weights"]) == 2
    assert all(w in static_candidates(10, 3) or len(w) == 2 for w in tuned["static_weights"])
    assert sorted(c["mean_rank"] for c in configs.values()) in ([1.0, 2.0], [1.5, 1.5])
    # resume: a rerun trains nothing and gives the same summary
    from multitask.trainer import Trainer

    def no_training(self: Trainer, *args: object, **kwargs: object) -> Trainer:
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(Trainer, "fit", no_training)
    assert run_bench(Grid.from_dict(dict(SMALL)), tmp_path / "a") == summary
    monkeypatch.undo()
    # the same seed on CPU gives identical metrics in a fresh directory
    fresh = run_bench(Grid.from_dict(dict(SMALL)), tmp_path / "b")
    for key, agg in fresh["datasets"]["multidigits"]["configs"].items():
        assert agg["delta_m_per_seed"] == configs[key]["delta_m_per_seed"]


def test_cli_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--datasets", "multidigits", "--weightings", "equal", "--seeds", "0,1", "--out", str(tmp_path)]
    args += ["--set", "train.epochs=1", "--set", "data.multidigits.pairs_per_image=1", "-q"]
    assert main(args) == 0
    assert "### multidigits" in capsys.readouterr().out
    assert main(["bench", "--datasets", "multidigits", "--set", "epochs=1", "--out", str(tmp_path)]) == 2
    assert "train.KEY=VALUE" in capsys.readouterr().err
