from __future__ import annotations

from pathlib import Path

import pytest

from multitask.config import ConfigError, apply_overrides, load_config_file, resolve_config
from multitask.registry import UnknownNameError


def test_defaults_resolve_with_component_parameters() -> None:
    cfg = resolve_config({})
    assert cfg["data"]["dataset"] == "multidigits"
    assert cfg["data"]["layout"] == "side"  # a loader parameter, filled from its signature
    assert cfg["model"]["hidden"] == [256, 128]
    assert cfg["weighting"] == {"name": "equal"}
    assert cfg["train"]["epochs"] == 20


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"trian": {}}, "unknown config section 'trian'; did you mean 'train'"),
        ({"train": {"epoch": 3}}, "did you mean 'epochs'"),
        ({"data": {"dataset": "multidigit"}}, "unknown dataset 'multidigit'; did you mean 'multidigits'"),
        ({"weighting": {"name": "uncertainity"}}, "did you mean 'uncertainty'"),
        ({"weighting": {"name": "dwa", "temprature": 2}}, "did you mean 'temperature'"),
        ({"model": {"architecture": "hard_share"}}, "did you mean 'hard_sharing'"),
        ({"model": {"hiden": [3]}}, "did you mean 'hidden'"),
        ({"data": {"layot": "side"}}, "did you mean 'layout'"),
    ],
)
def test_unknown_names_get_closest_valid_name(cfg: dict, match: str) -> None:
    with pytest.raises(UnknownNameError, match=match):
        resolve_config(cfg)


def test_bad_values() -> None:
    with pytest.raises(ConfigError, match="train.epochs='ten' must be an integer"):
        resolve_config({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match="data.tasks is empty"):
        resolve_config({"data": {"path": "x.csv"}})
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["train.lr"])


def test_files_and_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nepochs = 3\nlr = 0.01\n[weighting]\nname = "dwa"\ntemperature = 3.0\n')
    yml = tmp_path / "run.yaml"
    yml.write_text("train:\n  epochs: 3\n  lr: 0.01\nweighting:\n  name: dwa\n  temperature: 3.0\n")
    a, b = load_config_file(toml), load_config_file(yml)
    assert resolve_config(a) == resolve_config(b)
    c = resolve_config(apply_overrides(a, ["train.epochs=5", "model.hidden=[32, 16]", "run.baselines=false"]))
    assert c["train"]["epochs"] == 5 and c["model"]["hidden"] == [32, 16] and c["run"]["baselines"] is False
    assert c["weighting"]["temperature"] == 3.0
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="unknown extension"):
        load_config_file(tmp_path.joinpath("x.ini")) if (tmp_path / "x.ini").write_text("") is not None else None


def test_grad_mode_and_chained_weighting() -> None:
    for ok in ("exact", "features", "every:10", "features+every:5"):
        assert resolve_config({"train": {"grad_mode": ok}})["train"]["grad_mode"] == ok
    with pytest.raises(ConfigError, match="train.grad_mode='evry:3' is not valid"):
        resolve_config({"train": {"grad_mode": "evry:3"}})
    cfg = resolve_config({"weighting": {"name": "static+dwa", "static": {"weights": [1.0, 2.0]}}})
    assert cfg["weighting"] == {"name": "static+dwa", "static": {"weights": [1.0, 2.0]}, "dwa": {"temperature": 2.0}}
    with pytest.raises(UnknownNameError, match="did you mean 'dwa'"):
        resolve_config({"weighting": {"name": "static+dwa", "dw": {}}})
    with pytest.raises(UnknownNameError, match="did you mean 'temperature'"):
        resolve_config({"weighting": {"name": "static+dwa", "dwa": {"temprature": 1.0}}})


def test_chunk_size() -> None:
    assert resolve_config({})["train"]["chunk_size"] is None
    assert resolve_config({"train": {"chunk_size": 4}})["train"]["chunk_size"] == 4
    with pytest.raises(ConfigError, match="train.chunk_size=0"):
        resolve_config({"train": {"chunk_size": 0}})
