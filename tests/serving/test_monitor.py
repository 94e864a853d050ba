"""Drift monitoring: the training reference in ``model.mt``, ``drift_report`` and ``multitask monitor``."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import ks_2samp

from multitask.architectures import build_model
from multitask.artifact import ARTIFACT_NAME, ArtifactError, Predictor, load
from multitask.cli import main
from multitask.monitor import (
    PSI_EPSILON,
    DriftReport,
    MissingReferenceError,
    _bins,
    _numeric_features,
    attach_reference,
    build_reference,
    drift_report,
    ks_test,
    psi,
    total_variation,
)
from multitask.tasks import Task

TASKS = ["--task", "buy:binary:yes", "--task", "species:multiclass", "--task", "price:regression"]


def make_table(n: int, seed: int) -> pd.DataFrame:
    """x1 drives every target, x2 a little, color (uneven shares) adds to the score."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n, p=[0.6, 0.3, 0.1])
    s = 2 * x1 + 0.3 * x2 + 0.5 * (color == "red")
    return pd.DataFrame(
        {
            "id": [f"row{i}" for i in range(n)],
            "x1": x1,
            "x2": x2,
            "color": color,
            "buy": np.where(s + 0.3 * rng.normal(size=n) > 0.3, "yes", "no"),
            "species": np.select([s < -1, s < 1], ["cat", "dog"], "eel"),
            "price": 100 + 20 * s + rng.normal(size=n),
        }
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("monitor")
    csv = tmp / "train.csv"
    make_table(800, 0).to_csv(csv, index=False)
    args = ["train", "--data", str(csv), *TASKS, "--epochs", "5", "--no-baselines", "-q", "--set", "data.drop=[id]"]
    args += ["--set", "model.hidden=[16]", "--out-dir", str(tmp), "--name", "run"]
    assert main(args) == 0
    return tmp / "run"


@pytest.fixture(scope="module")
def predictor(run: Path) -> Predictor:
    return load(run)


@pytest.fixture(scope="module")
def fresh() -> pd.DataFrame:
    return make_table(600, 1)


@pytest.fixture(scope="module")
def shifted(fresh: pd.DataFrame) -> pd.DataFrame:
    return fresh.assign(x1=fresh["x1"] + 2.0)  # mean + 2 sd


def monitor(run: Path, frame: pd.DataFrame, tmp: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    csv, out = tmp / "new.csv", tmp / "drift.json"
    frame.to_csv(csv, index=False)
    out.unlink(missing_ok=True)
    code = main(["monitor", str(run), "--data", str(csv), "--json", str(out), *extra])
    return code, json.loads(out.read_text()) if out.exists() else {}


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in (*report["features"], *report["predictions"])}


def without_reference(run: Path, dst: Path) -> Path:
    """The artifact as a multitask without monitoring wrote it: no reference.json, not in the manifest."""
    with zipfile.ZipFile(run / ARTIFACT_NAME) as zin, zipfile.ZipFile(dst, "w") as zout:
        manifest = json.loads(zin.read("manifest.json"))
        del manifest["members"]["reference.json"]
        zout.writestr("manifest.json", json.dumps(manifest))
        for name in ("spec.json", "weights.pt"):
            zout.writestr(name, zin.read(name))
    return dst


# --------------------------------------------------------------------------------------------
# the statistics, by hand
# --------------------------------------------------------------------------------------------
def test_psi_ks_and_total_variation_match_hand_computed_values() -> None:
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(3))
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    # an empty bin counts as PSI_EPSILON
    expected = -0.25 * math.log(0.5) + (0.25 - PSI_EPSILON) * math.log(0.25 / PSI_EPSILON)
    assert psi([0.5, 0.5, 0.0], [0.5, 0.25, 0.25]) == pytest.approx(expected)
    # ECDFs of {1,2,3,4} and {3,...,7}: the largest gap is at 4 (1.0 against 0.4)
    stat, p = ks_test([1, 2, 3, 4], [3, 4, 5, 6, 7])
    assert stat == pytest.approx(0.6)
    ref = ks_2samp([1, 2, 3, 4], [3, 4, 5, 6, 7])
    assert (stat, p) == pytest.approx((ref.statistic, ref.pvalue))
    r = np.random.default_rng(3)
    a, b = r.normal(size=300), r.normal(0.4, 1, size=500)
    assert ks_test(a, b) == pytest.approx(tuple(ks_2samp(a, b))[:2])
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 0.2, "c": 0.8}) == pytest.approx(0.8)
    # bins (-inf, 1], (1, 2], (2, inf)
    np.testing.assert_allclose(_bins([1.0, 2.0], np.array([0.0, 1.0, 1.5, 2.0, 3.0])), [0.4, 0.4, 0.2])
    with pytest.raises(ValueError, match="same length|one length"):
        psi([0.5, 0.5], [1.0])


# --------------------------------------------------------------------------------------------
# the reference in the artifact
# --------------------------------------------------------------------------------------------
def test_the_artifact_holds_a_checksummed_training_reference(run: Path, predictor: Predictor) -> None:
    with zipfile.ZipFile(run / ARTIFACT_NAME) as zf:
        assert "reference.json" in zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
        blob = zf.read("reference.json")
    assert manifest["members"]["reference.json"]["sha256"] == hashlib.sha256(blob).hexdigest()
    ref = predictor.reference
    assert ref is not None and ref == json.loads(blob)
    assert ref["rows"] == 560 and ref["source"] == "training split"  # 70% of 800 rows
    x1 = ref["features"]["x1"]
    assert x1["kind"] == "numeric" and len(x1["edges"]) == 9 and len(x1["freq"]) == 10
    assert sum(x1["freq"]) == pytest.approx(1.0) and len(x1["sample"]) == 560
    color = ref["features"]["color"]
    assert color["kind"] == "categorical" and set(color["freq"]) == {"red", "green", "blue"}
    assert color["freq"]["red"] > color["freq"]["green"] > color["freq"]["blue"]
    preds = ref["predictions"]
    assert [preds[t]["kind"] for t in ("buy", "species", "price")] == ["binary", "multiclass", "regression"]
    assert preds["species"]["classes"] == ["cat", "dog", "eel"] and len(preds["species"]["mean_proba"]) == 3
    assert min(preds["buy"]["sample"]) >= 0 and max(preds["buy"]["sample"]) <= 1


def test_a_tampered_or_unlisted_reference_is_refused(run: Path, tmp_path: Path) -> None:
    src = run / ARTIFACT_NAME
    with zipfile.ZipFile(src) as zin:
        members = {n: zin.read(n) for n in zin.namelist()}
    ref = json.loads(members["reference.json"])
    ref["features"]["x1"]["edges"][0] += 1.0
    edited = dict(members, **{"reference.json": json.dumps(ref).encode()})
    with zipfile.ZipFile(tmp_path / "tampered.mt", "w") as zout:
        for n, b in edited.items():
            zout.writestr(n, b)
    with pytest.raises(ArtifactError, match=r"fails its checksum: member 'reference.json' has sha256"):
        load(tmp_path / "tampered.mt")
    # present but not in the manifest
    bare = without_reference(run, tmp_path / "bare.mt")
    with zipfile.ZipFile(bare, "a") as zf:
        zf.writestr("reference.json", members["reference.json"])
    with pytest.raises(ArtifactError, match=r"'reference.json' is not listed in its manifest"):
        load(bare)
    # listed but absent
    with zipfile.ZipFile(tmp_path / "absent.mt", "w") as zout:
        for n in ("manifest.json", "spec.json", "weights.pt"):
            zout.writestr(n, members[n])
    with pytest.raises(ArtifactError, match=r"'reference.json' is missing"):
        load(tmp_path / "absent.mt")


def test_an_artifact_without_reference_loads_and_monitor_says_how_to_fix_it(
    run: Path, tmp_path: Path, fresh: pd.DataFrame, predictor: Predictor, capsys: pytest.CaptureFixture[str]
) -> None:
    old = load(without_reference(run, tmp_path / "old.mt"))
    assert old.reference is None
    pd.testing.assert_frame_equal(old.predict_frame(fresh[:5]), predictor.predict_frame(fresh[:5]))
    with pytest.raises(MissingReferenceError, match=r"has no training reference.*save_artifact"):
        drift_report(old, fresh)
    fresh.to_csv(tmp_path / "new.csv", index=False)
    capsys.readouterr()
    assert main(["monitor", str(tmp_path / "old.mt"), "--data", str(tmp_path / "new.csv")]) == 2
    assert "error: this artifact has no training reference" in capsys.readouterr().err
    # attaching one and saving gives a file that monitors
    attach_reference(old, fresh)
    again = load(old.save(tmp_path / "again.mt"))
    assert again.reference == old.reference and drift_report(again, fresh).status == "ok"


# --------------------------------------------------------------------------------------------
# drift
# --------------------------------------------------------------------------------------------
def test_new_data_from_the_training_distribution_is_ok(
    run: Path, tmp_path: Path, fresh: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = monitor(run, fresh, tmp_path, "--fail-on", "warn")
    assert code == 0, capsys.readouterr().out
    assert report["status"] == "ok" and report["rows"] == 600 and report["fail_on"] == "warn"
    by = rows(report)
    assert list(by) == ["x1", "x2", "color", "buy", "species", "price"]
    assert all(r["status"] == "ok" for r in by.values())
    assert by["x1"]["psi"] < 0.1 and by["x1"]["ks_pvalue"] > 0.01 and by["color"]["tv_distance"] < 0.05
    out = capsys.readouterr().out
    assert "drift: 600 new rows against 560 training rows: OK" in out and "x1" in out


def test_the_training_data_itself_is_ok(run: Path, predictor: Predictor) -> None:
    train = pd.read_csv(run.parent / "train.csv")
    report = drift_report(predictor, train)
    assert report.status == "ok", report.table()


def test_a_shifted_numeric_column_alerts_with_its_predictions(
    run: Path, tmp_path: Path, shifted: pd.DataFrame, predictor: Predictor
) -> None:
    code, report = monitor(run, shifted, tmp_path)
    assert code == 1
    by = rows(report)
    assert by["x1"]["status"] == "alert" and by["x1"]["psi"] > 1.0 and by["x1"]["ks_pvalue"] < 1e-20
    assert by["x2"]["status"] == "ok" and by["color"]["status"] == "ok"
    assert by["buy"]["status"] == "alert" and by["price"]["status"] == "alert"
    assert report["status"] == "alert"
    # the row's numbers are the reference's bins and sample against the shifted values
    ref = predictor.reference
    assert ref is not None
    x = _numeric_features(predictor, predictor.encode(shifted))["x1"]
    r = ref["features"]["x1"]
    assert by["x1"]["psi"] == pytest.approx(psi(r["freq"], _bins(r["edges"], x)))
    expected = ks_2samp(r["sample"], x)
    assert (by["x1"]["ks_statistic"], by["x1"]["ks_pvalue"]) == pytest.approx((expected.statistic, expected.pvalue))


def test_categorical_shifts_are_flagged(predictor: Predictor, fresh: pd.DataFrame) -> None:
    purple = fresh.assign(color=np.where(np.arange(len(fresh)) % 4 == 0, "purple", fresh["color"]))
    row = {r.name: r for r in drift_report(predictor, purple).features}["color"]
    assert row.status == "alert" and row.tv_distance == pytest.approx(0.25, abs=0.05)
    assert list(row.new_categories) == ["purple"] and row.new_share == pytest.approx(0.25)
    swapped = fresh.assign(color=fresh["color"].map({"red": "blue", "blue": "red", "green": "green"}))
    row = {r.name: r for r in drift_report(predictor, swapped).features}["color"]
    assert row.status == "alert" and row.tv_distance > 0.4 and not row.new_categories
    # a few rows of a new category: a warning, not an alert
    few = fresh.assign(color=np.where(np.arange(len(fresh)) == 0, "purple", fresh["color"]))
    row = {r.name: r for r in drift_report(predictor, few).features}["color"]
    assert row.status == "warn" and "new categor" in row.reason


def test_thresholds_and_fail_on(run: Path, tmp_path: Path, shifted: pd.DataFrame, predictor: Predictor) -> None:
    lenient = ["--psi-alert", "100", "--prediction-psi-alert", "100", "--category-shift", "0.99"]
    code, report = monitor(run, shifted, tmp_path, *lenient)
    assert code == 0 and report["status"] == "warn" and report["thresholds"]["psi_alert"] == 100
    assert rows(report)["x1"]["status"] == "warn"
    code, _ = monitor(run, shifted, tmp_path, *lenient, "--fail-on", "warn")
    assert code == 1
    lax = {"psi_warn": 50.0, "psi_alert": 100.0, "prediction_psi_alert": 100.0, "category_shift": 0.99}
    report_obj = drift_report(predictor, shifted, **lax, ks_alpha=1e-300)
    assert isinstance(report_obj, DriftReport) and report_obj.features[0].name == "x1"
    assert report_obj.features[0].ks_pvalue > 1e-300
    assert report_obj.status == "ok" and not report_obj.exceeds("warn")
    report_obj = drift_report(predictor, shifted, **lax, ks_alpha=0.01)  # the KS test alone warns
    assert report_obj.features[0].status == "warn" and report_obj.features[0].reason == "KS p < 0.01"
    with pytest.raises(ValueError, match=r"psi_alert=-1 \(--psi-alert\) must be a number above 0"):
        drift_report(predictor, shifted, psi_alert=-1)
    with pytest.raises(ValueError, match=r"ks_alpha=2.0 \(--ks-alpha\) must be a number between 0 and 1"):
        drift_report(predictor, shifted, ks_alpha=2.0)
    with pytest.raises(ValueError, match=r"psi_warn=0.5 is above psi_alert=0.25.*lower psi_warn"):
        drift_report(predictor, shifted, psi_warn=0.5)


def test_bad_input_exits_2(run: Path, tmp_path: Path, fresh: pd.DataFrame, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = monitor(run, fresh.drop(columns=["color"]), tmp_path)
    assert code == 2 and "lacks the feature columns 'color'" in capsys.readouterr().err
    code, _ = monitor(run, fresh[:0], tmp_path)
    assert code == 2 and "no rows" in capsys.readouterr().err
    code, _ = monitor(run, fresh, tmp_path, "--ks-alpha", "0")
    assert code == 2 and "ks_alpha=0.0 (--ks-alpha) must be a number between 0 and 1" in capsys.readouterr().err
    assert main(["monitor", str(run), "--data", str(tmp_path / "nope.csv")]) == 2
    assert main(["monitor", str(run), "--data", str(tmp_path / "new.csv"), "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# tensor-input models
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [3, 40])
def test_tensor_models_get_a_reference_of_their_inputs(width: int, tmp_path: Path) -> None:
    tasks = [Task("a", "binary"), Task("m", "multiclass", num_classes=3), Task("v", "regression", target_dim=2)]
    torch.manual_seed(0)
    model = build_model("hard_sharing", [width], tasks, hidden=[8])
    pred = Predictor(
        model, tasks, architecture="hard_sharing", architecture_params={"hidden": [8]}, input_shape=[width]
    )
    train = torch.randn(400, width)
    reference = build_reference(pred, train)
    names = [f"x[{i}]" for i in range(width)] if width <= 16 else ["input_mean", "input_std", "input_min", "input_max"]
    assert list(reference["features"]) == names and reference["input"] == "tensor"
    assert list(reference["predictions"]) == ["a", "m", "v_0", "v_1"]
    assert reference["predictions"]["m"]["classes"] == ["0", "1", "2"]  # no class names: indices
    loaded = load(attach_reference(pred, train).save(tmp_path / "t.mt"))
    assert drift_report(loaded, torch.randn(300, width)).status in ("ok", "warn")
    assert drift_report(loaded, torch.randn(300, width) + 3).status == "alert"
