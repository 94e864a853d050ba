"""MLflow and TensorBoard loggers: a tiny model trained through the real CLI, read back through each tool's reader."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from serving_tables import make_two_task_table

from multitask.callbacks import MLflowLogger, TensorBoardLogger
from multitask.callbacks._tracking import epoch_scalars, flatten, relation_scalars
from multitask.callbacks.tensorboard import cosine_heatmap
from multitask.cli import main
from multitask.config import resolve_config

EPOCHS = 3


def make_csv(path: Path, n: int = 160, seed: int = 0) -> Path:
    make_two_task_table(n, seed).to_csv(path, index=False)
    return path


def train_args(tmp: Path, name: str, *extra: str) -> list[str]:
    csv = make_csv(tmp / f"{name}.csv")
    return [
        "train",
        "--data",
        str(csv),
        "--task",
        "buy:binary:yes",
        "--task",
        "price:regression",
        "--epochs",
        str(EPOCHS),
        "-q",
        "--set",
        "model.hidden=[16]",
        "--out-dir",
        str(tmp),
        "--name",
        name,
        *extra,
    ]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run with a gradient method (so cosines exist), baselines, both loggers and per-step logging."""
    tmp = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{tmp / 'store' / 'mlflow.db'}"
    (tmp / "store").mkdir()
    args = train_args(tmp, "run", "--weighting", "mgda", "--logger", "mlflow", "--logger", "tensorboard")
    args += ["--mlflow-uri", uri, "--set", "run.log_every=2"]
    assert main(args) == 0
    run_dir = tmp / "run"
    history = [json.loads(line) for line in (run_dir / "multitask" / "metrics.jsonl").read_text().splitlines()]
    return {"run_dir": run_dir, "uri": uri, "history": history}


@pytest.fixture(scope="module")
def mlflow_run(tracked: dict[str, Any]) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracked["uri"])
    exp = client.get_experiment_by_name("multitask")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, "only the multi-task model is tracked, not the single-task baselines"
    return client, runs[0]


def test_mlflow_params_tags_and_status(tracked: dict[str, Any], mlflow_run: Any) -> None:
    _, run = mlflow_run
    params = run.data.params
    assert params["weighting.name"] == "mgda"
    assert params["train.epochs"] == str(EPOCHS)
    assert params["model.hidden"] == "[16]"
    assert params["data.tasks"] == "['buy:binary:yes', 'price:regression']"
    assert run.data.tags["multitask.phase"] == "multitask"
    assert run.data.tags["multitask.tasks"] == "buy,price"
    assert run.data.tags["multitask.seed"] == "0"
    assert run.info.run_name == "run"
    assert run.info.status == "FINISHED"
    assert (tracked["run_dir"] / "multitask" / "mlflow_run_id").read_text().strip() == run.info.run_id


def test_mlflow_metric_histories_match_metrics_jsonl(tracked: dict[str, Any], mlflow_run: Any) -> None:
    client, run = mlflow_run
    history = tracked["history"]

    def series(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))

    def check(key: str, expected: list[float]) -> None:
        got = series(key)
        assert [s for s, _ in got] == [r["epoch"] for r in history], key
        assert [v for _, v in got] == pytest.approx(expected), key

    check("train/buy/loss", [r["train"]["buy"] for r in history])
    check("val/price/rmse", [r["val"]["price"]["rmse"] for r in history])
    check("val/buy/auc", [r["val"]["buy"]["auc"] for r in history])
    check("weight/price", [r["weights"]["price"] for r in history])
    # gradient relations (MGDA computes the Gramian at every step)
    cos = series("relations/mean_cosine")
    assert [s for s, _ in cos] == [1, 2, 3]
    assert cos[-1][1] == pytest.approx(history[-1]["relations"]["cosine"][0][1])
    assert all(0 <= v <= 1 for _, v in series("relations/conflict_rate"))
    # per-step values every 2 steps, at global steps
    steps = [s for s, _ in series("step/weight/buy")]
    assert steps and all(s % 2 == 0 for s in steps) and steps == sorted(set(steps))
    # test metrics of both models and Δm, logged after training
    summary = json.loads((tracked["run_dir"] / "summary.json").read_text())
    metrics = run.data.metrics
    assert metrics["delta_m"] == pytest.approx(summary["delta_m"])
    price = next(r for r in summary["rows"] if r["task"] == "price")
    assert metrics["test/price/rmse"] == pytest.approx(price["multi"])
    assert metrics["single_task/price/rmse"] == pytest.approx(price["single"])


def test_mlflow_artifacts(tracked: dict[str, Any], mlflow_run: Any, tmp_path: Path) -> None:
    client, run = mlflow_run
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.mt", "summary.json", "config.json", "config.yaml", "relations"} <= names
    epochs = {a.path for a in client.list_artifacts(run.info.run_id, "relations")}
    assert epochs == {f"relations/epoch_{e}.json" for e in range(1, EPOCHS + 1)}
    local = Path(client.download_artifacts(run.info.run_id, "model.mt", str(tmp_path)))
    assert local.read_bytes() == (tracked["run_dir"] / "model.mt").read_bytes()
    rel = json.loads(
        Path(client.download_artifacts(run.info.run_id, "relations/epoch_3.json", str(tmp_path))).read_text()
    )
    assert rel["cosine"] == tracked["history"][-1]["relations"]["cosine"]
    config = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path))).read_text())
    assert config["weighting"]["name"] == "mgda"
    assert config["run"]["loggers"] == ["mlflow", "tensorboard"]


def test_tensorboard_scalars_images_histograms(tracked: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tracked["run_dir"] / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/buy/loss", "train/price/loss", "val/buy/auc", "val/price/rmse", "weight/buy", "weight/price"} <= set(
        tags["scalars"]
    )
    assert {"relations/mean_cosine", "relations/conflict_rate", "step/loss/buy", "step/weight/price"} <= set(
        tags["scalars"]
    )
    history = tracked["history"]
    epochs = [r["epoch"] for r in history]
    loss = acc.Scalars("train/price/loss")
    assert [e.step for e in loss] == epochs
    assert [e.value for e in loss] == pytest.approx([r["train"]["price"] for r in history], rel=1e-6)
    weight = acc.Scalars("weight/buy")
    assert [e.step for e in weight] == epochs
    assert [e.value for e in weight] == pytest.approx([r["weights"]["buy"] for r in history], rel=1e-6)
    assert "relations/cosine" in tags["images"]
    images = acc.Images("relations/cosine")
    assert [i.step for i in images] == [1, 2, 3]
    assert images[-1].width == images[-1].height == 2 * 16
    assert "relations/cosines" in tags["histograms"]
    assert "config/text_summary" in tags["tensors"]


def test_unknown_logger_names_the_closest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(train_args(tmp_path, "bad", "--logger", "mlfow")) == 2
    err = capsys.readouterr().err
    assert "error: unknown logger in run.loggers: 'mlfow'; did you mean 'mlflow'?" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("run.loggers", 3, "run.loggers=3 must be a list of logger names"),
        ("run.log_every", -1, "run.log_every=-1 must be an integer >= 0"),
        ("run.mlflow_uri", "", "run.mlflow_uri='' must be a non-empty string"),
        ("run.mlflow_experiment", " ", "run.mlflow_experiment=' ' must be a non-empty experiment name"),
    ],
)
def test_config_validation(key: str, value: Any, message: str) -> None:
    section, name = key.split(".")
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        resolve_config({section: {name: value}})


def test_config_defaults_and_single_name() -> None:
    run = resolve_config({"run": {"loggers": "tensorboard"}})["run"]
    assert run["loggers"] == ["tensorboard"]
    assert resolve_config({})["run"]["loggers"] == []


@pytest.mark.parametrize(
    ("logger", "module"), [("mlflow", "mlflow.tracking"), ("tensorboard", "torch.utils.tensorboard")]
)
def test_missing_package_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, logger: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import of it raises ImportError
    assert main(train_args(tmp_path, "nopkg", "--logger", logger)) == 2
    err = capsys.readouterr().err
    assert f"the {logger} logger needs" in err
    assert "pip install 'multitask[tracking]'" in err
    assert not (tmp_path / "nopkg").exists(), "fails before the run directory is created"


def test_loggers_write_nothing_off_rank_zero(tmp_path: Path) -> None:
    trainer = SimpleNamespace(is_main=False, task_names=["a"], config={}, history=[], global_step=2, best_epoch=1)
    info = SimpleNamespace(losses=torch.ones(1), weights=torch.ones(1), present=torch.ones(1, dtype=torch.bool))
    record = {"epoch": 1, "train": {"a": 1.0}, "weights": {"a": 1.0}, "val": {"a": {"loss": 1.0}}}
    ml = MLflowLogger(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", log_every=1, run_id_path=tmp_path / "id")
    tb = TensorBoardLogger(log_dir=tmp_path / "tb", log_every=1)
    for cb in (ml, tb):
        cb.on_fit_start(trainer)  # type: ignore[arg-type]
        cb.on_step_end(trainer, info)  # type: ignore[arg-type]
        cb.on_epoch_end(trainer, record)  # type: ignore[arg-type]
        cb.on_fit_end(trainer)  # type: ignore[arg-type]
    ml.log_files([tmp_path / "id"])
    assert list(tmp_path.iterdir()) == []


def test_logger_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"MLflowLogger: log_every=-2 must be an integer >= 0"):
        MLflowLogger(log_every=-2)
    with pytest.raises(ValueError, match=r"MLflowLogger: tracking_uri='' must be an MLflow URI"):
        MLflowLogger(tracking_uri="")
    with pytest.raises(ValueError, match=r"TensorBoardLogger: log_every=1.5 must be an integer"):
        TensorBoardLogger(log_dir=tmp_path, log_every=1.5)  # type: ignore[arg-type]
    assert MLflowLogger(run_dir=tmp_path).tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_scalars_helpers() -> None:
    record = {
        "epoch": 2,
        "train_loss": 1.5,
        "val_loss": float("inf"),
        "train": {"a b": 1.0, "c?": 2.0},
        "weights": {"a b": 0.5, "c?": 0.5},
        "val": {"a b": {"loss": 1.0, "acc": 0.5}},
        "relations": {"cosine": [[1.0, -0.5], [-0.5, 1.0]], "conflict": [[0.0, 1.0], [1.0, None]]},
    }
    out = epoch_scalars(record)
    assert out["train/a b/loss"] == 1.0 and out["train/c_/loss"] == 2.0
    assert "val_loss" not in out  # non-finite values are left out
    assert out["val/a b/acc"] == 0.5 and out["weight/c_"] == 0.5
    assert out["relations/mean_cosine"] == -0.5 and out["relations/conflict_rate"] == 1.0
    assert relation_scalars({"cosine": [[None]]}) == {}
    assert flatten({"a": {"b": [1, 2], "c": None, "d": {}}, "e": "x" * 600}) == {
        "a.b": "[1, 2]",
        "a.c": "null",
        "a.d": "{}",
        "e": "x" * 497 + "...",
    }


def test_cosine_heatmap_colours() -> None:
    img = cosine_heatmap([[1.0, -1.0], [0.0, None]], cell=2)
    assert img.shape == (3, 4, 4)
    assert img[:, 0, 0].tolist() == [1.0, 0.0, 0.0]  # +1 red
    assert img[:, 0, 3].tolist() == [0.0, 0.0, 1.0]  # -1 blue
    assert img[:, 3, 0].tolist() == [1.0, 1.0, 1.0]  # 0 white
    assert img[:, 3, 3].tolist() == [0.5, 0.5, 0.5]  # unknown grey


def test_mlflow_resume_continues_the_same_run(tracked: dict[str, Any], tmp_path: Path) -> None:
    """A logger given the run-id file of an interrupted training continues that MLflow run."""
    from mlflow.tracking import MlflowClient

    uri = tracked["uri"]  # an existing store (creating one costs seconds); experiment "resume" of its own
    record = {"epoch": 1, "train": {"a": 2.0}, "weights": {"a": 1.0}, "val": {"a": {"loss": 1.0}}}
    first = SimpleNamespace(is_main=True, task_names=["a"], config={"train": {"lr": 0.1}}, history=[], best_epoch=1)
    ml = MLflowLogger(tracking_uri=uri, experiment="resume", run_id_path=tmp_path / "id", run_name="r")
    ml.on_fit_start(first)  # type: ignore[arg-type]
    ml.on_epoch_end(first, record)  # type: ignore[arg-type]  # then the process dies
    again = MLflowLogger(tracking_uri=uri, experiment="resume", run_id_path=tmp_path / "id", run_name="r")
    resumed = SimpleNamespace(**{**vars(first), "history": [record], "global_step": 4})
    again.on_fit_start(resumed)  # type: ignore[arg-type]
    again.on_epoch_end(resumed, {**record, "epoch": 2, "train": {"a": 1.0}})  # type: ignore[arg-type]
    again.on_fit_end(resumed)  # type: ignore[arg-type]
    assert again.run_id == ml.run_id
    client = MlflowClient(tracking_uri=uri)
    assert len(client.search_runs([client.get_experiment_by_name("resume").experiment_id])) == 1
    history = sorted((m.step, m.value) for m in client.get_metric_history(again.run_id, "train/a/loss"))
    assert history == [(1, 2.0), (2, 1.0)]
    assert client.get_run(again.run_id).info.status == "FINISHED"
    assert client.get_run(again.run_id).data.params == {"train.lr": "0.1"}
