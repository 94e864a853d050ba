"""``multitask export``: TorchScript and ONNX files verified output by output, and the ONNX Runtime path."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from serving_tables import FEATURES, TASKS, make_table
from torch import Tensor, nn

import multitask.export as export_mod
from multitask.architectures import ARCHITECTURES, MultiTaskModel, build_model
from multitask.artifact import ArtifactError, Predictor, load
from multitask.cli import main
from multitask.data.base import MissingDependencyError
from multitask.export import ExportError, OnnxPredictor, export_model, read_sidecar
from multitask.tasks import Task

NAMES = ["buy", "species", "price"]


def train(tmp: Path, name: str, *model: str) -> Path:
    csv = tmp / f"{name}.csv"
    make_table(120, 0).to_csv(csv, index=False)
    args = ["train", "--data", str(csv), *TASKS, "--epochs", "1", "--no-baselines", "-q", "--set", "data.drop=[id]"]
    assert main([*args, *model, "--out-dir", str(tmp), "--name", name]) == 0
    return tmp / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("export")
    return {
        "hard_sharing": train(tmp, "hs", "--set", "model.hidden=[16]"),
        "mmoe": train(
            tmp,
            "mmoe",
            "--architecture",
            "mmoe",
            "--set",
            "model.experts=2",
            "--set",
            "model.expert_hidden=[16]",
            "--set",
            "model.head_hidden=[8]",
        ),
    }


@pytest.fixture(scope="module")
def run(runs: dict[str, Path]) -> Path:
    return runs["hard_sharing"]


@pytest.fixture(scope="module")
def onnx_exports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each run exported to ONNX once (the slow part: about a second per model)."""
    out = tmp_path_factory.mktemp("onnx")
    return {arch: export_model(r, out / f"{arch}.onnx", format="onnx").path for arch, r in runs.items()}


@pytest.fixture(scope="module")
def new_rows() -> pd.DataFrame:
    return make_table(13, 1)


def eager_outputs(predictor: Predictor, x: Tensor) -> dict[str, Tensor]:
    with torch.no_grad():
        out = predictor.model(x)
    return {n: out[n] for n in predictor.task_names}


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------
# export and verification
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["hard_sharing", "mmoe"])
def test_onnx_outputs_are_named_by_task_and_match_the_eager_model(
    arch: str, runs: dict[str, Path], onnx_exports: dict[str, Path], new_rows: pd.DataFrame
) -> None:
    path = onnx_exports[arch]
    predictor = load(runs[arch])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == NAMES
    [inp] = session.get_inputs()
    assert inp.name == "input" and isinstance(inp.shape[0], str) and inp.shape[1:] == [predictor.input_shape[0]]
    x = predictor.encode(new_rows)
    for rows in (x[:1], x[:7], x):  # a dynamic batch axis
        got = dict(zip(NAMES, session.run(None, {"input": rows.numpy()}), strict=True))
        want = eager_outputs(predictor, rows)
        for name in NAMES:
            np.testing.assert_allclose(got[name], want[name].numpy(), rtol=1e-5, atol=1e-6)


def test_report_and_sidecar_describe_the_export(run: Path, tmp_path: Path) -> None:
    report = export_model(run, tmp_path / "m.onnx", format="onnx", batch_sizes=[1, 7])
    assert report.path == tmp_path / "m.onnx" and report.sidecar == tmp_path / "m.onnx.json"
    assert report.task_order == tuple(NAMES) and report.batch_sizes == (1, 7)
    assert [c.name for c in report.checks] == NAMES
    for c in report.checks:
        assert c.ok and c.best_match == c.name and c.max_abs_diff < 1e-5
    assert [c.shape for c in report.checks] == [(1,), (3,), (1,)]
    table = report.table()
    assert "max abs diff" in table and all(n in table for n in NAMES)
    assert listing(tmp_path) == ["m.onnx", "m.onnx.json"]  # no temporary file left

    side = read_sidecar(report.path)
    predictor = load(run)
    assert side["export_format"] == "onnx" and side["task_order"] == side["output_names"] == NAMES
    assert side["opset"] == report.opset and isinstance(report.opset, int)
    outputs = {o["name"]: o for o in side["outputs"]}
    assert outputs["buy"]["classes"] == ["no", "yes"] and outputs["buy"]["postprocess"] == "sigmoid"
    assert outputs["species"]["classes"] == ["cat", "dog", "eel"] and outputs["species"]["kind"] == "multiclass"
    price = predictor.task("price")
    assert outputs["price"]["target_mean"] == price.target_mean and outputs["price"]["target_std"] == price.target_std
    assert side["input"]["columns"] == FEATURES and side["input"]["shape"][1:] == list(predictor.input_shape)
    assert side["input"]["preprocessor"] == predictor.spec()["input"]["preprocessor"]
    assert side["versions"]["exported_with"]["onnxruntime"] == onnxruntime.__version__
    assert side["versions"]["trained_with"]["torch"] == predictor.versions["torch"]
    assert set(side["verification"]["max_abs_diff"]) == set(NAMES)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("arch", ["hard_sharing", "mmoe"])
def test_torchscript_export_matches_the_eager_model(
    arch: str, runs: dict[str, Path], tmp_path: Path, new_rows: pd.DataFrame
) -> None:
    report = export_model(runs[arch], tmp_path / "m.pt", format="torchscript")
    assert report.format == "torchscript" and all(c.ok for c in report.checks)
    scripted = torch.jit.load(str(report.path))
    predictor = load(runs[arch])
    x = predictor.encode(new_rows)
    for rows in (x[:1], x[:7], x):
        with torch.no_grad():
            got = dict(zip(report.task_order, scripted(rows), strict=True))
        for name, want in eager_outputs(predictor, rows).items():
            torch.testing.assert_close(got[name], want)
    assert json.loads(report.sidecar.read_text())["export_format"] == "torchscript"


def test_default_path_is_next_to_the_artifact_and_a_sample_can_be_given(
    run: Path, new_rows: pd.DataFrame, tmp_path: Path
) -> None:
    report = export_model(run, format="torchscript", sample=new_rows, batch_sizes=[1, 20])
    try:
        assert report.path == run / "model.torchscript.pt" and report.path.is_file()
        assert report.batch_sizes == (1, 20)  # 13 rows, cycled to fill 20
    finally:
        report.path.unlink()
        report.sidecar.unlink()
    with pytest.raises(ExportError, match="0 rows"):
        export_model(run, tmp_path / "m.pt", format="torchscript", sample=new_rows.iloc[:0])
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------
# mislabelled or wrong exports are refused, nothing written
# --------------------------------------------------------------------------------------------
def permuted(model: nn.Module, task_order: list[str]) -> nn.Module:
    """The exported tuple in a wrong order while the outputs keep their names: the dict-output trap."""
    return export_mod._TupleOutputs(model, [task_order[2], task_order[1], task_order[0]]).eval()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_mislabelled_export_is_caught_and_nothing_is_written(
    fmt: str, run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_mod, "_wrap", permuted)
    out = tmp_path / "sub" / f"m.{fmt}"
    with pytest.raises(ExportError) as info:
        export_model(run, out, format=fmt, batch_sizes=[1, 7])
    msg = str(info.value)
    # buy [N, 1] and price [N, 1] swapped: each holds the other's values; species is still right
    assert "output 'buy' holds task 'price'" in msg and "output 'price' holds task 'buy'" in msg
    assert "'species'" not in msg and "#165758" in msg and "Nothing was written" in msg
    assert not out.exists() and not out.with_name(out.name + ".json").exists()
    assert not out.parent.exists()  # the directory made for it is removed again


def test_a_numerical_mismatch_is_refused_with_its_size(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export_mod._run_torchscript

    def off(path: Path, batches: list[Tensor]) -> list[list[Tensor]]:
        return [[t + 0.01 if i == 1 else t for i, t in enumerate(ts)] for ts in real(path, batches)]

    monkeypatch.setattr(export_mod, "_run_torchscript", off)
    with pytest.raises(ExportError, match=r"output 'species' differs from the eager model by up to 0\.01"):
        export_model(run, tmp_path / "m.pt", format="torchscript")
    assert listing(tmp_path) == []
    report = export_model(run, tmp_path / "m.pt", format="torchscript", atol=0.02)  # looser tolerance accepts it
    assert report.checks[1].max_abs_diff == pytest.approx(0.01, rel=1e-3)


def test_an_existing_file_is_kept_when_the_new_export_fails(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m.pt"
    export_model(run, out, format="torchscript")
    before = out.read_bytes(), out.with_name("m.pt.json").read_bytes()
    monkeypatch.setattr(export_mod, "_wrap", permuted)
    with pytest.raises(ExportError):
        export_model(run, out, format="torchscript")
    assert (out.read_bytes(), out.with_name("m.pt.json").read_bytes()) == before
    assert listing(tmp_path) == ["m.pt", "m.pt.json"]


# --------------------------------------------------------------------------------------------
# the ONNX Runtime inference path
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["hard_sharing", "mmoe"])
def test_onnx_predictor_predicts_like_the_eager_predictor(
    arch: str, runs: dict[str, Path], onnx_exports: dict[str, Path], new_rows: pd.DataFrame
) -> None:
    eager, served = load(runs[arch]), OnnxPredictor(onnx_exports[arch])
    assert served.task_names == eager.task_names and served.input_columns == eager.input_columns
    a, b = served.predict(new_rows), eager.predict(new_rows)
    assert list(a) == NAMES
    for name in NAMES:
        p, q = a[name], b[name]
        assert p.kind == q.kind and p.classes == q.classes
        if p.kind == "regression":
            assert p.values is not None and q.values is not None
            np.testing.assert_allclose(p.values, q.values, rtol=1e-5)
        else:
            assert p.labels is not None and q.labels is not None and p.proba is not None and q.proba is not None
            np.testing.assert_array_equal(p.labels, q.labels)
            np.testing.assert_allclose(p.proba, q.proba, rtol=1e-5, atol=1e-6)
    frame_a = served.predict_frame(new_rows, ["species", "price"], id_column="id", batch_size=5)
    frame_b = eager.predict_frame(new_rows, ["species", "price"], id_column="id")
    pd.testing.assert_frame_equal(frame_a, frame_b, rtol=1e-5)
    # the same input checks: a missing feature column is refused by name
    with pytest.raises(ValueError, match="'color'"):
        served.predict(new_rows.drop(columns=["color"]))
    assert len(served.predict(new_rows.iloc[:0])["price"].values) == 0  # type: ignore[arg-type]


def test_onnx_predictor_refuses_a_missing_or_foreign_sidecar(
    run: Path, onnx_exports: dict[str, Path], tmp_path: Path
) -> None:
    src = onnx_exports["hard_sharing"]
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(src.read_bytes())
    with pytest.raises(ExportError, match="has no sidecar 'lonely.onnx.json'"):
        OnnxPredictor(lonely)
    # the mmoe sidecar next to the hard-sharing file: another model
    (tmp_path / "lonely.onnx.json").write_bytes(onnx_exports["mmoe"].with_name("mmoe.onnx.json").read_bytes())
    with pytest.raises(ExportError, match="describes another file"):
        OnnxPredictor(lonely)
    (tmp_path / "lonely.onnx.json").write_text("{not json")
    with pytest.raises(ExportError, match="not valid JSON"):
        OnnxPredictor(lonely)
    with pytest.raises(ExportError, match="does not exist"):
        OnnxPredictor(tmp_path / "missing.onnx")
    ts = export_model(run, tmp_path / "m.pt", format="torchscript", batch_sizes=[1])
    with pytest.raises(ExportError, match="'torchscript' export"):
        OnnxPredictor(ts.path)
    with pytest.raises(ArtifactError, match="cannot be turned back"):
        OnnxPredictor(src).save(tmp_path / "x.mt")


# --------------------------------------------------------------------------------------------
# a tensor model built in Python, and an architecture ONNX cannot express
# --------------------------------------------------------------------------------------------
class CumMax(MultiTaskModel):
    """A model with an operator (``torch.cummax``) that has no ONNX translation in torch 2.13."""

    def __init__(self) -> None:
        super().__init__()
        self.task_names = ["y"]
        self.lin = nn.Linear(4, 1)

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        return {"y": self.lin(torch.cummax(x, dim=1).values)}, None

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.lin.parameters())


def test_an_operator_onnx_lacks_is_named_and_torchscript_still_works(tmp_path: Path) -> None:
    predictor = Predictor(CumMax(), [Task("y", "regression")], architecture="cummax_demo", input_shape=[4])
    with pytest.raises(ExportError) as info:
        export_model(predictor, tmp_path / "m.onnx", format="onnx", batch_sizes=[2])
    msg = str(info.value)
    assert "architecture 'cummax_demo' cannot be exported to ONNX" in msg
    assert "aten.cummax" in msg and "--format torchscript" in msg
    assert listing(tmp_path) == []
    report = export_model(predictor, tmp_path / "m.pt", format="torchscript")
    assert report.checks[0].ok


class BatchDependent(CumMax):
    """Python control flow on the batch size: tracing freezes the branch taken by the traced batch."""

    def forward_features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor | None]:
        y = self.lin(x)
        return {"y": y * 2 if x.shape[0] > 3 else y}, None


def test_a_trace_frozen_at_one_batch_size_is_caught(tmp_path: Path) -> None:
    predictor = Predictor(BatchDependent(), [Task("y", "regression")], architecture="branchy", input_shape=[4])
    with pytest.raises(ExportError, match="output 'y' differs from the eager model"):
        export_model(predictor, tmp_path / "m.pt", format="torchscript", batch_sizes=[1, 7])
    assert listing(tmp_path) == []


def test_a_tensor_model_round_trips_through_onnx(tmp_path: Path) -> None:
    tasks = [Task("a", "binary"), Task("b", "multiclass", num_classes=4), Task("c", "regression", target_mean=3.0)]
    torch.manual_seed(0)
    model = build_model("cross_stitch", [6], tasks, hidden=[8])
    predictor = Predictor(
        model, tasks, architecture="cross_stitch", architecture_params={"hidden": [8]}, input_shape=[6]
    )
    with pytest.raises(ExportError, match="out=None"):
        export_model(predictor, format="onnx")
    with pytest.raises(ExportError, match="opset=9 was asked, but the ONNX exporter .* wrote opset 18"):
        export_model(predictor, tmp_path / "m.onnx", format="onnx", batch_sizes=[1], opset=9)
    assert listing(tmp_path) == []
    report = export_model(predictor, tmp_path / "m.onnx", format="onnx", batch_sizes=[1, 7], opset=18)
    assert report.opset == 18 and all(c.ok for c in report.checks)
    x = np.random.default_rng(0).normal(size=(9, 6)).astype(np.float32)
    a, b = OnnxPredictor(report.path).predict(x), predictor.predict(x)
    np.testing.assert_array_equal(a["b"].labels, b["b"].labels)  # type: ignore[arg-type]
    np.testing.assert_allclose(a["c"].values, b["c"].values, rtol=1e-5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \[9, 5\]"):
        OnnxPredictor(report.path).predict(x[:, :5])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES.names()))
def test_every_builtin_architecture_exports(arch: str, fmt: str, tmp_path: Path) -> None:
    tasks = [Task("a", "binary"), Task("b", "multiclass", num_classes=3), Task("c", "regression")]
    shape = [1, 8, 8] if arch == "mtan" else [8]
    torch.manual_seed(0)
    predictor = Predictor(build_model(arch, shape, tasks), tasks, architecture=arch, input_shape=shape)
    report = export_model(predictor, tmp_path / f"m.{fmt}", format=fmt)  # type: ignore[arg-type]
    assert [c.best_match for c in report.checks] == ["a", "b", "c"] and all(c.ok for c in report.checks)
    if fmt == "onnx":
        x = torch.randn(5, *shape).numpy()
        a, b = OnnxPredictor(report.path).predict(x), predictor.predict(x)
        np.testing.assert_allclose(a["b"].proba, b["b"].proba, rtol=1e-4, atol=1e-6)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# bad arguments
# --------------------------------------------------------------------------------------------
def test_bad_arguments_are_refused_by_name(run: Path, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"format": "onxx"}, "unknown export format 'onxx'; did you mean 'onnx'"),
        ({"batch_sizes": [1, 0]}, r"batch_sizes=\[1, 0\] must be positive integers"),
        ({"batch_sizes": []}, "batch_sizes=.* must be positive"),
        ({"opset": 3}, "opset=3 must be an ONNX opset number"),
        ({"rtol": -1.0}, "rtol=-1.0 must be a finite number >= 0"),
        ({"atol": float("nan")}, "atol=nan must be a finite number"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ExportError, match=match):
            export_model(run, tmp_path / "m.onnx", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="is a directory; give a file name inside it"):
        export_model(run, tmp_path, format="torchscript")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="is a file, not a directory"):
        export_model(run, blocker / "m.pt", format="torchscript")
    with pytest.raises(ArtifactError, match="does not exist"):
        export_model(tmp_path / "nope", tmp_path / "m.pt", format="torchscript")
    with pytest.raises(TypeError, match="pass a Predictor, a run directory or a model.mt"):
        export_model(42, tmp_path / "m.pt")  # type: ignore[arg-type]
    assert listing(tmp_path) == ["file"]


def test_onnx_without_its_packages_names_the_extra(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript raises ImportError
    with pytest.raises(
        MissingDependencyError, match=r"needs the package 'onnxscript'.*pip install 'multitask\[export\]'"
    ):
        export_model(run, tmp_path / "m.onnx")
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'multitask[export]'" in capsys.readouterr().err
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------
def test_cli_export_prints_the_verification_table(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli" / "model.pt"
    assert (
        main(["export", str(run / "model.mt"), "--format", "torchscript", "--out", str(out), "--batch-sizes", "1,7"])
        == 0
    )
    text = capsys.readouterr().out
    assert "at batch sizes 1, 7" in text and "max abs diff" in text
    for name in NAMES:
        assert any(line.startswith(name) and line.rstrip().endswith("yes") for line in text.splitlines())
    assert f"wrote {out} (outputs in task order: buy, species, price)" in text and out.is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "unknown export format 'tflite'"),
        (["--batch-sizes", "1,x"], "--batch-sizes '1,x' must be comma-separated positive integers"),
        (["--batch-sizes", "0"], "batch_sizes=[0] must be positive"),
    ],
)
def test_cli_export_errors_exit_2(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx"), *args]) == 2
    assert message in capsys.readouterr().err
    assert listing(tmp_path) == []


def test_cli_export_of_a_missing_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope"), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model artifact") and "does not exist" in err
