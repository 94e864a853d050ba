"""CLI tests: ``main([...])`` in-process, plus one end-to-end run of the real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from multitask.cli import main

FAST = ["--epochs", "2", "--set", "data.pairs_per_image=1", "--set", "model.hidden=[32]", "-q"]


def test_list_commands_are_derived_from_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "weightings"]) == 0
    out = capsys.readouterr().out
    assert "dwa:" in out and "temperature: float = 2.0" in out and "num_tasks" not in out
    assert main(["list", "architectures"]) == 0
    assert "hard_sharing:" in capsys.readouterr().out
    assert main(["list", "datasets", "--json"]) == 0
    names = {d["name"] for d in json.loads(capsys.readouterr().out)}
    assert {"multidigits", "adult", "yeast"} <= names


def test_train_writes_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *FAST, "--out-dir", str(tmp_path), "--name", "r"]) == 0
    out = capsys.readouterr().out
    assert "single-task" in out and "Δm =" in out and "mean over tasks" in out
    run = tmp_path / "r"
    for f in [
        "config.yaml",
        "data.json",
        "summary.json",
        "baselines.json",
        "model.mt",
        "multitask/checkpoint.pt",
        "multitask/metrics.jsonl",
        "multitask/result.json",
        "single/left/result.json",
        "single/right/checkpoint.pt",
    ]:
        assert (run / f).is_file(), f
    summary = json.loads((run / "summary.json").read_text())
    assert {r["task"] for r in summary["rows"]} == {"left", "right"}
    assert len((run / "multitask/metrics.jsonl").read_text().splitlines()) == 2
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 2 and cfg["data"]["pairs_per_image"] == 1


def test_config_file_with_overrides_and_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "run.toml"
    conf.write_text('[train]\nepochs = 5\n[weighting]\nname = "dwa"\ntemperature = 2.5\n[data]\npairs_per_image = 1\n')
    code = main(
        [
            "train",
            "--config",
            str(conf),
            "--epochs",
            "1",
            "--seeds",
            "0,1",
            "-q",
            "--set",
            "model.hidden=[16]",
            "--out-dir",
            str(tmp_path),
            "--name",
            "s",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Δm over seeds [0, 1]" in out
    for seed in (0, 1):
        cfg = yaml.safe_load((tmp_path / "s" / f"seed-{seed}" / "config.yaml").read_text())
        assert cfg["train"]["epochs"] == 1 and cfg["weighting"]["temperature"] == 2.5 and cfg["train"]["seed"] == seed


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--weighting", "famoo"], "did you mean 'famo'"),
        (["--dataset", "yaest"], "did you mean 'yeast'"),
        (["--set", "train.epoch=2"], "did you mean 'epochs'"),
        (["--dataset", "multidigits", "--task", "lefty"], "did you mean 'left'"),
    ],
)
def test_bad_names_exit_2_with_hint(
    args: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *args, "--out-dir", str(tmp_path), "-q"]) == 2
    assert match in capsys.readouterr().err


def test_csv_with_missing_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    n = 300
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    df = pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "color": color,
            "income": np.where(x1 + 0.3 * rng.normal(size=n) > 0, ">50K", "<=50K"),
            "age": 40 + 10 * x2 + rng.normal(size=n),
            "kind": np.where(x1 > 0.5, "a", np.where(x1 < -0.5, "b", "c")),
        }
    )
    df.loc[df.index[::4], "income"] = None  # a quarter of the rows miss one label
    df.loc[df.index[1::5], "age"] = np.nan
    path = tmp_path / "people.csv"
    df.to_csv(path, index=False)
    code = main(
        [
            "train",
            "--data",
            str(path),
            "--task",
            "income:binary",
            "--task",
            "age:regression",
            "--task",
            "kind:multiclass",
            "--epochs",
            "3",
            "-q",
            "--out-dir",
            str(tmp_path),
            "--name",
            "csv",
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "csv" / "summary.json").read_text())
    assert [r["metric"] for r in summary["rows"]] == ["auc", "rmse", "accuracy"]
    data = json.loads((tmp_path / "csv" / "data.json").read_text())
    assert data["labelled_train_rows"]["income"] < data["rows"]["train"]
    pq = tmp_path / "people.parquet"
    df.to_parquet(pq)
    assert (
        main(
            [
                "train",
                "--data",
                str(pq),
                "--task",
                "income:binary",
                "--epochs",
                "1",
                "-q",
                "--no-baselines",
                "--set",
                "data.drop=[kind]",
                "--set",
                "data.impute=mean",
                "--out-dir",
                str(tmp_path),
                "--name",
                "pq",
            ]
        )
        == 0
    )
    assert main(["train", "--data", str(path), "--task", "incme:binary", "-q", "--out-dir", str(tmp_path)]) == 2
    assert "income" in capsys.readouterr().err


def test_resume_from_cli_matches_uninterrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["train", *FAST, "--epochs", "3", "--out-dir", str(tmp_path)]
    assert main([*args, "--name", "full"]) == 0
    # interrupt the first baseline in the middle of its second epoch
    import multitask.trainer as trainer_mod

    original = trainer_mod.Trainer._train_epoch
    calls = {"n": 0}

    def interrupting(self: trainer_mod.Trainer, *a: object) -> None:
        if self.task_names == ["left"] and self.epoch == 1:
            calls["n"] += 1
            self.checkpoint_every = 1  # save after each step, then stop mid-epoch
            from multitask.callbacks import Callback

            class Stop(Callback):
                def on_step_end(self, trainer: trainer_mod.Trainer, info: object) -> None:
                    if trainer.batch_in_epoch == 3:
                        raise KeyboardInterrupt

            self.callbacks.append(Stop())
        original(self, *a)

    monkeypatch.setattr(trainer_mod.Trainer, "_train_epoch", interrupting)
    assert main([*args, "--name", "part"]) == 130
    assert calls["n"] == 1 and not (tmp_path / "part" / "single" / "left" / "result.json").exists()
    monkeypatch.setattr(trainer_mod.Trainer, "_train_epoch", original)
    assert main(["train", "--resume", str(tmp_path / "part"), "-q"]) == 0
    full = json.loads((tmp_path / "full" / "summary.json").read_text())
    part = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert full["rows"] == part["rows"] and full["delta_m"] == part["delta_m"]
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "nothing"), "-q"]) == 2
    assert "not a multitask run directory" in capsys.readouterr().err
    # the resolved config travels inside the checkpoint
    ckpt = torch.load(tmp_path / "part" / "multitask" / "checkpoint.pt", weights_only=True)
    assert json.loads(ckpt["config"])["train"]["epochs"] == 3
    # a corrupted checkpoint of an unfinished phase is refused on resume, naming the file
    (tmp_path / "part" / "single" / "right" / "result.json").unlink()
    ckpt_path = tmp_path / "part" / "single" / "right" / "checkpoint.pt"
    ckpt_path.write_bytes(ckpt_path.read_bytes()[:1000])
    assert main(["train", "--resume", str(tmp_path / "part"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "corrupted or truncated" in err and "right" in err


def test_end_to_end_real_command(tmp_path: Path) -> None:
    """The real `multitask` executable, as a user runs it."""
    exe = Path(sys.executable).with_name("multitask")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "multitask"]
    proc = subprocess.run(
        [
            *cmd,
            "train",
            "--epochs",
            "2",
            "--set",
            "data.pairs_per_image=1",
            "--out-dir",
            str(tmp_path),
            "--name",
            "e2e",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Δm =" in proc.stdout and "left" in proc.stdout and "right" in proc.stdout
    assert "[multi-task] epoch 2/2" in proc.stderr  # progress lines when not quiet


@pytest.mark.parametrize(
    "extra",
    [
        ["--weighting", "mgda", "--grad-mode", "features"],
        ["--weighting", "nash_mtl", "--grad-mode", "every:3"],
        ["--weighting", "upgrad", "--set", "train.chunk_size=1"],
        ["--weighting", "graddrop"],
        ["--weighting", "normalize_gradients+mgda", "--set", "weighting.normalize_gradients={mode: l2}"],
    ],
)
def test_gradient_methods_and_grad_modes_from_the_cli(extra: list[str], tmp_path: Path) -> None:
    assert (
        main(["train", *FAST, "--epochs", "1", "--no-baselines", *extra, "--out-dir", str(tmp_path), "--name", "g"])
        == 0
    )
    cfg = yaml.safe_load((tmp_path / "g" / "config.yaml").read_text())
    assert cfg["weighting"]["name"] == extra[1]
    record = json.loads((tmp_path / "g" / "multitask" / "metrics.jsonl").read_text().splitlines()[0])
    assert all(isinstance(v, float) for v in record["weights"].values())


def test_bad_grad_mode_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *FAST, "--grad-mode", "evry:3", "--out-dir", str(tmp_path)]) == 2
    assert "grad_mode='evry:3' is not valid" in capsys.readouterr().err
