"""``multitask train --nproc 2`` end to end: the same results as one process, written once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multitask import load
from multitask.cli import main


def test_nproc_2_trains_like_one_process(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    common = ["train", "--epochs", "1", "--no-baselines", "-q", "--out-dir", str(tmp_path), "--grad-mode", "features"]
    common += ["--weighting", "mgda", "--set", "data.pairs_per_image=1"]
    assert main([*common, "--name", "one"]) == 0
    assert main([*common, "--name", "two", "--nproc", "2"]) == 0
    captured = capfd.readouterr()
    out = captured.out
    assert "terminate called" not in captured.err, "every rank must leave the process group before exiting"
    assert out.count("run directory:") == 2, "rank 1 must not print"
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)
    for a, b in zip(one["rows"], two["rows"], strict=True):
        assert a["multi"] == pytest.approx(b["multi"], abs=1e-6)
    assert not list((tmp_path / "two").glob("*.tmp"))
    x = torch.rand(5, *load(tmp_path / "one").input_shape)
    p1, p2 = load(tmp_path / "one").predict(x), load(tmp_path / "two").predict(x)  # rank 0 wrote the model
    for name in p1:
        np.testing.assert_allclose(p1[name].proba, p2[name].proba, atol=1e-5)


def test_nproc_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--nproc", "0"]) == 2
    assert "--nproc 0" in capsys.readouterr().err
