"""Model artifacts: ``model.mt`` written by ``multitask train``, ``multitask.load`` and ``multitask predict``."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from serving_tables import FEATURES, TASKS, make_table

import multitask
from multitask.architectures import build_model
from multitask.artifact import ARTIFACT_NAME, ArtifactError, InputWarning, Predictor, load
from multitask.checkpoint import load_checkpoint
from multitask.cli import main
from multitask.config import component_params, load_config_file, resolve_config
from multitask.data import mark_auxiliary
from multitask.data.base import MultiTaskData
from multitask.experiment import load_data, save_artifact
from multitask.registry import UnknownNameError


def train(tmp: Path, name: str, df: pd.DataFrame, *extra: str) -> Path:
    csv = tmp / f"{name}.csv"
    df.to_csv(csv, index=False)
    args = ["train", "--data", str(csv), *TASKS, "--epochs", "2", "--no-baselines", "-q"]
    args += ["--set", "data.drop=[id]", "--set", "model.hidden=[16]", "--out-dir", str(tmp), "--name", name, *extra]
    assert main(args) == 0
    return tmp / name


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("artifact"), "run", make_table(160, 0))


@pytest.fixture(scope="module")
def predictor(run: Path) -> Predictor:
    return load(run)


@pytest.fixture(scope="module")
def new_rows() -> pd.DataFrame:
    return make_table(12, 1)


def in_memory(run_dir: Path) -> tuple[torch.nn.Module, MultiTaskData]:
    """The trained model as training left it: rebuilt from the run's config and checkpoint, and its data."""
    cfg = resolve_config(load_config_file(run_dir / "config.yaml"))
    data = load_data(cfg)
    model = build_model(cfg["model"]["architecture"], data.input_shape, data.tasks, **component_params(cfg, "model"))
    model.load_state_dict(load_checkpoint(run_dir / "multitask" / "checkpoint.pt")["model"])
    return model.eval(), data


def rewrite(src: Path, dst: Path, **members: bytes) -> None:
    """Copy the artifact ``src`` to ``dst`` with some members replaced (the manifest is not re-hashed)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, members.get(name, zin.read(name)))


def manifest_of(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as zf:
        result: dict[str, Any] = json.loads(zf.read("manifest.json"))
        return result


# --------------------------------------------------------------------------------------------
# the file and the round trip
# --------------------------------------------------------------------------------------------
def test_train_writes_one_self_describing_file(run: Path) -> None:
    path = run / ARTIFACT_NAME
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["manifest.json", "spec.json", "weights.pt", "reference.json"]
        manifest = json.loads(zf.read("manifest.json"))
        for name, entry in manifest["members"].items():
            assert hashlib.sha256(zf.read(name)).hexdigest() == entry["sha256"]
        spec = json.loads(zf.read("spec.json"))
    assert manifest["format"] == "multitask-model" and manifest["format_version"] == 1
    assert set(manifest["versions"]) >= {"multitask", "torch", "python"}
    assert spec["architecture"] == "hard_sharing" and spec["architecture_params"]["hidden"] == [16]
    assert spec["input"]["kind"] == "table" and list(spec["input"]["columns"]) == FEATURES
    assert spec["served_tasks"] == ["buy", "species", "price"]
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_load_round_trip_gives_the_in_memory_models_predictions(run: Path, predictor: Predictor) -> None:
    df = pd.read_csv(run.parent / "run.csv")
    model, data = in_memory(run)
    with torch.no_grad():
        outputs = model(torch.from_numpy(data.preprocessor.transform(df)))
    from_file = load(run / ARTIFACT_NAME).predict(df)
    for preds in (predictor.predict(df), from_file):  # the run directory and the file give the same model
        for task in data.tasks:
            expected = task.predict(outputs[task.name]).double().numpy()
            got = preds[task.name].values if task.kind == "regression" else preds[task.name].proba
            np.testing.assert_array_equal(got, expected)
    assert predictor.task_names == ["buy", "species", "price"]
    assert predictor.input_columns == FEATURES
    assert predictor.input_schema is not None and predictor.input_schema["color"]["kind"] == "categorical"
    assert predictor.config["train"]["epochs"] == 2 and predictor.versions["torch"] == str(torch.__version__)
    assert multitask.load is load


def test_python_save_and_load_round_trip(run: Path, tmp_path: Path, new_rows: pd.DataFrame) -> None:
    model, data = in_memory(run)
    cfg = resolve_config(load_config_file(run / "config.yaml"))
    mine = Predictor.from_training(model, data, cfg)
    written = mine.save(tmp_path)  # a directory: DIR/model.mt
    assert written == tmp_path / ARTIFACT_NAME
    back = load(written)
    assert back.spec() == mine.spec()
    for name, p in mine.predict(new_rows).items():
        q = back.predict(new_rows)[name]
        for field in ("labels", "proba", "values"):
            a, b = getattr(p, field), getattr(q, field)
            assert (a is None and b is None) or np.array_equal(a, b)


def test_labels_come_back_in_the_original_encoding(predictor: Predictor, new_rows: pd.DataFrame) -> None:
    preds = predictor.predict(new_rows)
    buy, species, price = preds["buy"], preds["species"], preds["price"]
    assert buy.classes == ("no", "yes") and set(buy.labels) <= {"no", "yes"}
    assert buy.proba is not None and np.all((buy.proba >= 0) & (buy.proba <= 1))
    assert list(buy.labels) == ["yes" if p >= 0.5 else "no" for p in buy.proba]
    assert species.proba is not None and species.proba.shape == (12, 3)
    np.testing.assert_allclose(species.proba.sum(axis=1), 1.0, rtol=1e-6)
    assert list(species.labels) == [species.classes[i] for i in species.proba.argmax(axis=1)]
    task = predictor.task("price")
    assert 90 < task.target_mean < 110 and task.target_std > 5  # the original units of the training file
    assert price.values is not None and price.labels is None and price.values.shape == (12,)
    assert np.all(np.abs(price.values - task.target_mean) < 5 * task.target_std)


def test_rows_as_dicts_files_and_empty_frames(predictor: Predictor, new_rows: pd.DataFrame, tmp_path: Path) -> None:
    expected = predictor.predict_frame(new_rows)
    records = new_rows[FEATURES].to_dict(orient="records")
    pd.testing.assert_frame_equal(predictor.predict_frame(records), expected)
    one = predictor.predict_frame(records[3])  # a dict of scalars: one row
    pd.testing.assert_frame_equal(one, expected.iloc[[3]].reset_index(drop=True))
    new_rows.to_parquet(tmp_path / "rows.parquet")
    pd.testing.assert_frame_equal(predictor.predict_frame(tmp_path / "rows.parquet"), expected)
    empty = predictor.predict_frame(new_rows.iloc[:0], id_column="id")
    assert len(empty) == 0 and list(empty.columns) == ["id", *expected.columns]
    with pytest.raises(TypeError, match="takes a pandas DataFrame or a CSV/Parquet file"):
        predictor.predict(torch.zeros(2, 5))


# --------------------------------------------------------------------------------------------
# multitask predict
# --------------------------------------------------------------------------------------------
def test_cli_predict_writes_labels_and_probabilities(
    run: Path, predictor: Predictor, new_rows: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "new.csv"
    new_rows.to_csv(src, index=False)  # target columns present: ignored
    out = tmp_path / "out" / "predictions.csv"
    assert main(["predict", str(run), "--data", str(src), "--id-column", "id", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    got = pd.read_csv(out)
    assert list(got.columns) == [
        "id",
        "buy",
        "buy_proba",
        "species",
        "species_proba_cat",
        "species_proba_dog",
        "species_proba_eel",
        "price",
    ]
    assert list(got["id"]) == list(new_rows["id"]) and len(got) == 12
    expected = predictor.predict_frame(new_rows, id_column="id")
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    assert main(["predict", str(run / ARTIFACT_NAME), "--data", str(src)]) == 0  # CSV on stdout
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    pd.testing.assert_frame_equal(printed, expected.drop(columns="id"), check_exact=False, rtol=1e-12)
    assert main(["predict", str(run), "--data", str(src), "--out", str(tmp_path / "p.json")]) == 0
    records = json.loads((tmp_path / "p.json").read_text())
    assert records[0]["species"] in {"cat", "dog", "eel"} and set(records[0]) == set(expected.columns) - {"id"}
    assert main(["predict", str(run), "--data", str(src), "--out", str(tmp_path / "p.parquet")]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "p.parquet"), expected.drop(columns="id"))


def test_cli_predict_a_subset_of_tasks(
    run: Path, new_rows: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "new.csv"
    new_rows[FEATURES].to_csv(src, index=False)
    assert main(["predict", str(run), "--data", str(src), "--tasks", "price,buy"]) == 0
    got = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(got.columns) == ["price", "buy", "buy_proba"] and len(got) == 12


def test_unknown_task_is_refused_naming_the_valid_ones(
    run: Path, predictor: Predictor, new_rows: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "new.csv"
    new_rows.to_csv(src, index=False)
    assert main(["predict", str(run), "--data", str(src), "--tasks", "byu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown task 'byu'; did you mean 'buy'?") and "buy, price, species" in err
    with pytest.raises(UnknownNameError, match="Valid: buy, price, species"):
        predictor.predict(new_rows, tasks=["price", "colour"])


def test_missing_feature_column_is_an_error_naming_it(
    run: Path, predictor: Predictor, new_rows: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=r"lacks the feature columns 'x1'.*impute='error'"):
        predictor.predict(new_rows.drop(columns=["x1"]))
    src = tmp_path / "no_color.csv"
    new_rows.drop(columns=["color"]).rename(columns={"id": "colour"}).to_csv(src, index=False)
    assert main(["predict", str(run), "--data", str(src)]) == 2
    err = capsys.readouterr().err
    assert "'color' (did you mean 'colour'?)" in err and "the model's columns: x1, x2, color" in err


def test_unknown_categories_warn_by_default_and_encode_as_no_category(
    run: Path, predictor: Predictor, new_rows: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = new_rows.copy()
    rows.loc[[0, 3], "color"] = "purple"
    rows.loc[5, "color"] = None  # an empty cell: "<missing>", unseen in training
    with pytest.warns(InputWarning, match=r"'color': 3 rows \('purple' x2, '<missing>' x1\)"):
        x = predictor.encode(rows)
    assert predictor.preprocessor is not None
    names = predictor.preprocessor.feature_names_out
    block = [i for i, n in enumerate(names) if n.startswith("color=")]
    assert torch.all(x[[0, 3, 5]][:, block] == 0) and torch.all(x[[1, 2, 4]][:, block].sum(dim=1) == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictor.predict(rows, unknown_categories="ignore")
    with pytest.raises(ValueError, match="never seen in training: 'color': 3 rows"):
        predictor.predict(rows, unknown_categories="error")
    src = tmp_path / "unk.csv"
    rows.to_csv(src, index=False)
    assert main(["predict", str(run), "--data", str(src)]) == 0
    captured = capsys.readouterr()
    assert "warning: categorical feature values never seen in training" in captured.err
    assert len(pd.read_csv(io.StringIO(captured.out))) == 12
    assert main(["predict", str(run), "--data", str(src), "--unknown-categories", "error"]) == 2


def test_nan_and_non_numeric_values_without_imputation_are_errors(predictor: Predictor, new_rows: pd.DataFrame) -> None:
    rows = new_rows.copy()
    rows.loc[[1, 2], "x2"] = np.nan
    rows.loc[4, "x1"] = np.inf
    with pytest.raises(ValueError, match=r"'x1' \(1 of 12 rows\), 'x2' \(2 of 12 rows\).*data.impute=mean"):
        predictor.predict(rows)
    rows = new_rows.astype({"x1": object})
    rows.loc[0, "x1"] = "abc"
    with pytest.raises(ValueError, match="numeric feature column 'x1' holds the non-numeric value 'abc'"):
        predictor.predict(rows)


def test_imputation_fills_nan_and_missing_numeric_columns(tmp_path: Path) -> None:
    df = make_table(160, 0)
    df.loc[::7, "x2"] = np.nan
    pred = load(train(tmp_path, "imputed", df, "--set", "data.impute=median"))
    assert pred.preprocessor is not None
    fill = pred.preprocessor.numeric["x2"]["fill"]
    rows = make_table(6, 2)
    filled = rows.assign(x2=fill)
    expected = pred.predict_frame(filled)
    pd.testing.assert_frame_equal(pred.predict_frame(rows.assign(x2=np.nan)), expected)  # no warning: the policy
    with pytest.warns(InputWarning, match=r"lacks the numeric feature columns \['x2'\].*training median"):
        pd.testing.assert_frame_equal(pred.predict_frame(rows.drop(columns=["x2"])), expected)
    with pytest.raises(ValueError, match=r"lacks the feature columns 'color'.*covers numeric columns only"):
        pred.predict(rows.drop(columns=["color"]))


# --------------------------------------------------------------------------------------------
# refused artifacts
# --------------------------------------------------------------------------------------------
def test_truncated_and_empty_files_are_refused(run: Path, tmp_path: Path) -> None:
    blob = (run / ARTIFACT_NAME).read_bytes()
    (tmp_path / "half.mt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ArtifactError, match="truncated or corrupted.*copy the file again"):
        load(tmp_path / "half.mt")
    (tmp_path / "empty.mt").write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"empty \(0 bytes\)"):
        load(tmp_path / "empty.mt")


def test_a_flipped_byte_fails_the_checksum(run: Path, tmp_path: Path) -> None:
    path = run / ARTIFACT_NAME
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("weights.pt")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    blob[start + info.compress_size // 2] ^= 0x01
    (tmp_path / "flipped.mt").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="fails its checksum: member 'weights.pt'.*zip CRC"):
        load(tmp_path / "flipped.mt")


def test_a_member_replaced_without_its_sha256_is_refused(run: Path, tmp_path: Path) -> None:
    model, _ = in_memory(run)
    state = {k: v + 1.0 for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    rewrite(run / ARTIFACT_NAME, tmp_path / "tampered.mt", **{"weights.pt": buf.getvalue()})
    with pytest.raises(ArtifactError, match="fails its checksum: member 'weights.pt' has sha256"):
        load(tmp_path / "tampered.mt")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {"format_version": 2},
            r"format 2 \(by multitask 0.1.0\); this multitask 0.1.0 reads format 1: upgrade multitask",
        ),
        ({"format": "something-else"}, "not a multitask model artifact"),
        ({"versions": {"multitask": "9.0", "torch": "99.1.0"}}, "torch 99.1.0.*upgrade torch to 99.x"),
        ({"members": {"weights.pt": {}}}, "member 'spec.json' is missing"),
    ],
)
def test_incompatible_manifests_are_refused(run: Path, tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    manifest = {**manifest_of(run / ARTIFACT_NAME), **edit}
    rewrite(run / ARTIFACT_NAME, tmp_path / "edited.mt", **{"manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(ArtifactError, match=message):
        load(tmp_path / "edited.mt")


def test_an_older_torch_major_is_read(run: Path, tmp_path: Path, new_rows: pd.DataFrame, predictor: Predictor) -> None:
    manifest = manifest_of(run / ARTIFACT_NAME)
    manifest["versions"]["torch"] = "1.13.1"
    rewrite(run / ARTIFACT_NAME, tmp_path / "old.mt", **{"manifest.json": json.dumps(manifest).encode()})
    old = load(tmp_path / "old.mt")
    assert old.versions["torch"] == "1.13.1"
    pd.testing.assert_frame_equal(old.predict_frame(new_rows), predictor.predict_frame(new_rows))


def rehashed(run: Path, dst: Path, name: str, blob: bytes) -> Path:
    """The artifact with member ``name`` replaced and its sha256 updated: a consistent but wrong file."""
    manifest = manifest_of(run / ARTIFACT_NAME)
    manifest["members"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    rewrite(run / ARTIFACT_NAME, dst, **{name: blob, "manifest.json": json.dumps(manifest).encode()})
    return dst


def test_weights_that_do_not_fit_the_architecture_are_refused(run: Path, tmp_path: Path) -> None:
    model, _ = in_memory(run)
    state = dict(model.state_dict())
    first, second = list(state)[:2]
    del state[first]
    state[second] = torch.zeros(3, 3)
    state["extra.weight"] = torch.zeros(1)
    buf = io.BytesIO()
    torch.save(state, buf)
    bad = rehashed(run, tmp_path / "mismatch.mt", "weights.pt", buf.getvalue())
    with pytest.raises(
        ArtifactError, match=rf"do not fit architecture 'hard_sharing'.*missing \['{first}'\].*unexpected "
    ):
        load(bad)
    with pytest.raises(ArtifactError, match=rf"mis-shaped \['{second} \[3, 3\] \(the model has"):
        load(bad)


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("unpickled!",))


def test_weights_are_never_unpickled(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.BytesIO()
    torch.save({"x": _Evil()}, buf)
    with pytest.raises(ArtifactError, match="the weights cannot be read safely"):
        load(rehashed(run, tmp_path / "evil.mt", "weights.pt", buf.getvalue()))
    assert "unpickled!" not in capsys.readouterr().out


def test_incomplete_spec_and_foreign_files_are_refused(run: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(run / ARTIFACT_NAME) as zf:
        spec = json.loads(zf.read("spec.json"))
    del spec["architecture"]
    with pytest.raises(ArtifactError, match=r"incomplete: spec.json lacks \['architecture'\]"):
        load(rehashed(run, tmp_path / "nospec.mt", "spec.json", json.dumps(spec).encode()))
    spec["architecture"] = "hard_sharingg"
    with pytest.raises(ArtifactError, match=r"cannot be rebuilt by this multitask 0.1.0: unknown architecture 'hard_"):
        load(rehashed(run, tmp_path / "arch.mt", "spec.json", json.dumps(spec).encode()))
    with pytest.raises(ArtifactError, match="looks like a torch.save file, e.g. a training checkpoint"):
        load(run / "multitask" / "checkpoint.pt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="not a zip archive"):
        load(tmp_path / "notes.txt")
    with pytest.raises(ArtifactError, match="does not exist"):
        load(tmp_path / "nowhere.mt")


def test_a_run_directory_without_an_artifact_says_how_to_write_one(
    run: Path, tmp_path: Path, predictor: Predictor, new_rows: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    (old / ARTIFACT_NAME).unlink()
    with pytest.raises(ArtifactError, match="has no model.mt.*save_artifact"):
        load(old)
    assert main(["predict", str(old), "--data", str(run.parent / "run.csv")]) == 2
    assert "error: run directory" in capsys.readouterr().err
    save_artifact(old)  # reads config.yaml, the training file and the checkpoint
    pd.testing.assert_frame_equal(load(old).predict_frame(new_rows), predictor.predict_frame(new_rows))


# --------------------------------------------------------------------------------------------
# models trained on tensors
# --------------------------------------------------------------------------------------------
def test_tensor_models_take_arrays_of_the_training_shape(
    synthetic: MultiTaskData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    model = build_model("hard_sharing", synthetic.input_shape, synthetic.tasks, hidden=[8])
    cfg = {"model": {"architecture": "hard_sharing", "hidden": [8]}}
    path = Predictor.from_training(model, synthetic, cfg).save(tmp_path / "tensor.mt")
    pred = load(path)
    x = synthetic.test.inputs
    preds = pred.predict(x)
    with torch.no_grad():
        out = model(x)
    np.testing.assert_array_equal(preds["reg"].values, synthetic.tasks[0].predict(out["reg"]).double().numpy())
    assert preds["cls"].labels is not None and preds["cls"].labels.dtype == np.int64  # no class names: indices
    assert pred.input_columns is None and pred.input_shape == (6,)
    with pytest.raises(ValueError, match=r"shape \[6\]; add a batch dimension"):
        pred.predict(x[0])
    with pytest.raises(ValueError, match=r"shape \[4, 5\]; this model was trained on the tensor dataset 'synthetic'"):
        pred.predict(np.zeros((4, 5)))
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values in 1 of"):
        pred.predict(bad)
    with pytest.raises(TypeError, match="takes an array or tensor"):
        pred.predict(pd.DataFrame(x.numpy()))
    np.save(tmp_path / "x.npy", x.numpy())
    assert main(["predict", str(path), "--data", str(tmp_path / "x.npy"), "--tasks", "cls"]) == 0
    got = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(got.columns) == ["cls", "cls_proba_0", "cls_proba_1", "cls_proba_2"] and len(got) == len(x)
    torch.save(x, tmp_path / "x.pt")
    assert main(["predict", str(path), "--data", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o.csv")]) == 0
    assert main(["predict", str(path), "--data", str(tmp_path / "x.npy"), "--id-column", "id"]) == 2
    assert "id_column='id' applies to tabular input only" in capsys.readouterr().err
    pd.DataFrame({"a": [1.0]}).to_csv(tmp_path / "t.csv", index=False)
    assert main(["predict", str(path), "--data", str(tmp_path / "t.csv")]) == 2
    assert "is a table; this model was trained on the tensor dataset" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------
_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6).filter(lambda s: s not in FEATURES)


@settings(max_examples=20, deadline=None)
@given(
    order=st.permutations([*FEATURES, "id", "buy", "species", "price"]),
    extra=st.dictionaries(_NAMES, st.one_of(st.floats(allow_nan=True), st.text(max_size=3)), max_size=3),
    rows=st.lists(st.integers(0, 11), min_size=1, max_size=12),
)
def test_predictions_ignore_column_order_and_extra_columns_and_are_per_row(
    predictor: Predictor, new_rows: pd.DataFrame, order: list[str], extra: dict[str, Any], rows: list[int]
) -> None:
    expected = predictor.predict_frame(new_rows)
    shuffled = new_rows[order].assign(**{f"extra_{k}": v for k, v in extra.items()})
    got = predictor.predict_frame(shuffled.iloc[rows])
    pd.testing.assert_frame_equal(got, expected.iloc[rows].reset_index(drop=True), check_exact=False, rtol=1e-5)


def test_auxiliary_tasks_stay_in_the_model_but_are_not_served(synthetic: MultiTaskData, tmp_path: Path) -> None:
    data = mark_auxiliary(synthetic, ["reg"])
    model = build_model("hard_sharing", data.input_shape, data.tasks, hidden=[4])
    cfg = {"model": {"architecture": "hard_sharing", "hidden": [4]}}
    pred = load(Predictor.from_training(model, data, cfg).save(tmp_path / "aux.mt"))
    assert pred.task_names == ["bin", "cls"] and [t.name for t in pred.all_tasks] == ["reg", "bin", "cls"]
    assert set(pred.predict(data.test.inputs)) == {"bin", "cls"}
    with pytest.raises(UnknownNameError, match="task 'reg' is auxiliary.*served tasks: bin, cls"):
        pred.predict(data.test.inputs, tasks="reg")
