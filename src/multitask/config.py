"""Run configuration: TOML/YAML/JSON files, command-line overrides, validation, resolution.

A config has five sections. Fixed keys are listed below; every other key of ``[data]``,
``[model]`` and ``[weighting]`` is a parameter of the chosen dataset loader, architecture or
weighting, checked against its signature (an unknown key names the closest valid one)::

    [data]       dataset = "multidigits"  | path = "file.csv";  tasks = [...];  <loader params>
    [model]      architecture = "hard_sharing";  <architecture params>
    [weighting]  name = "equal";  <weighting params>
    [train]      epochs, batch_size, lr, optimizer, weight_decay, seed, grad_mode, chunk_size,
                 checkpoint_every, device, precision, accumulate, compile, dist_timeout
    [run]        out_dir, name, baselines, quiet
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .registry import UnknownNameError, signature_params, unknown_name_message

__all__ = ["DEFAULTS", "ConfigError", "apply_overrides", "dump_config", "load_config_file", "resolve_config"]


class ConfigError(ValueError):
    """A config file or override is malformed or names something unknown."""


DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"dataset": "multidigits", "path": None, "tasks": []},
    "model": {"architecture": "hard_sharing"},
    "weighting": {"name": "equal"},
    "train": {
        "epochs": 20,
        "batch_size": 128,
        "lr": 1e-3,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "seed": 0,
        "grad_mode": "exact",
        "chunk_size": None,
        "checkpoint_every": 0,
        "device": "cpu",
        "precision": "32",
        "accumulate": 1,
        "compile": False,
        "dist_timeout": 300.0,
    },
    "run": {"out_dir": "runs", "name": None, "baselines": True, "quiet": False},
}
PRECISIONS = ("32", "bf16", "fp16")
_OPEN_SECTIONS = {"data": "dataset", "model": "architecture", "weighting": "name"}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` config into a dict of sections."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {str(path)!r}: unknown extension {suffix!r}; use .toml, .yaml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid {suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of sections, got {type(data).__name__}")
    return data


def _set_path(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if not key or "." in key:
        raise ConfigError(f"override {dotted!r} must look like section.key=value, e.g. train.lr=0.01")
    if section not in DEFAULTS:
        raise UnknownNameError(unknown_name_message("config section", section, list(DEFAULTS)))
    cfg.setdefault(section, {})[key] = value


def apply_overrides(cfg: dict[str, Any], overrides: Mapping[str, Any] | Sequence[str]) -> dict[str, Any]:
    """A copy of ``cfg`` with overrides applied: ``{"train.lr": 0.01}`` or ``["train.lr=0.01"]``.

    String values of ``"k=v"`` overrides are parsed as YAML scalars/lists (``3`` -> int,
    ``[64, 32]`` -> list, ``true`` -> bool).
    """
    out = copy.deepcopy(cfg)
    if isinstance(overrides, Mapping):
        for k, v in overrides.items():
            _set_path(out, k, v)
        return out
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse the value {raw!r}: {exc}") from exc
        _set_path(out, key.strip(), value)
    return out


def _params_of(factory: Callable[..., Any], skip: tuple[str, ...]) -> dict[str, Any]:
    return {p.name: p.default for p in signature_params(factory) if p.name not in skip and not p.required}


def _normalise(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def resolve_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``cfg`` and fill in every default, including the chosen components' parameters.

    Raises:
        UnknownNameError: an unknown section, key, dataset, architecture, weighting (with the
            closest valid name).
        ConfigError: a malformed value.
    """
    from .architectures import ARCHITECTURES
    from .data import DATASETS, load_table
    from .weighting import WEIGHTINGS

    for section in cfg:
        if section not in DEFAULTS:
            raise UnknownNameError(unknown_name_message("config section", str(section), list(DEFAULTS)))
        if not isinstance(cfg[section], Mapping):
            raise ConfigError(f"config section [{section}] must be a table of key = value, got {cfg[section]!r}")
    out: dict[str, dict[str, Any]] = {}
    for section in ("train", "run"):
        given = dict(cfg.get(section, {}))
        for key in given:
            if key not in DEFAULTS[section]:
                raise UnknownNameError(unknown_name_message(f"key in [{section}]:", key, list(DEFAULTS[section])))
        out[section] = {**DEFAULTS[section], **given}

    data = {**DEFAULTS["data"], **dict(cfg.get("data", {}))}
    if data.get("path"):
        data["dataset"] = None
        loader: Callable[..., Any] = load_table
        skip: tuple[str, ...] = ("path", "tasks")
        if not data["tasks"]:
            raise ConfigError(
                "data.path is set but data.tasks is empty: name the target columns, e.g. "
                "--task income:binary --task age:regression"
            )
    else:
        if not data.get("dataset"):
            raise ConfigError("set data.dataset (a built-in dataset, see `multitask list datasets`) or data.path")
        loader = DATASETS.get(str(data["dataset"]))
        skip = ()
    if isinstance(data["tasks"], str):
        data["tasks"] = [data["tasks"]]
    out["data"] = _resolve_open("data", data, loader, skip)

    model = {**DEFAULTS["model"], **dict(cfg.get("model", {}))}
    out["model"] = _resolve_open(
        "model", model, ARCHITECTURES.get(str(model["architecture"])), ("input_shape", "tasks")
    )

    weighting = {**DEFAULTS["weighting"], **dict(cfg.get("weighting", {}))}
    name = str(weighting["name"])
    if "+" in name:  # a chain: one sub-table of parameters per stage
        stages = [s.strip() for s in name.split("+")]
        resolved_w: dict[str, Any] = {"name": name}
        for key in weighting:
            if key != "name" and key not in stages:
                raise UnknownNameError(unknown_name_message(f"key in [weighting] (stages of {name!r}):", key, stages))
        for stage in stages:
            given = weighting.get(stage, {})
            if not isinstance(given, Mapping):
                raise ConfigError(f"[weighting.{stage}] must be a table of parameters, got {given!r}")
            sub = _resolve_open("weighting", {"name": stage, **given}, WEIGHTINGS.get(stage), ("num_tasks",))
            resolved_w[stage] = {k: v for k, v in sub.items() if k != "name"}
        out["weighting"] = resolved_w
    else:
        out["weighting"] = _resolve_open("weighting", weighting, WEIGHTINGS.get(name), ("num_tasks",))

    _check_types(out)
    return out


def _resolve_open(
    section: str, given: dict[str, Any], factory: Callable[..., Any], skip: tuple[str, ...]
) -> dict[str, Any]:
    fixed = set(DEFAULTS[section])
    params = _params_of(factory, skip)
    required = [p.name for p in signature_params(factory) if p.required and p.name not in skip]
    for key in given:
        if key not in fixed and key not in params and key not in required:
            raise UnknownNameError(
                unknown_name_message(f"key in [{section}]:", key, sorted(fixed | set(params) | set(required)))
            )
    resolved = {k: given[k] for k in DEFAULTS[section] if k in given}
    for k, default in params.items():
        resolved[k] = _normalise(given.get(k, default))
    for k in required:
        if k not in given:
            raise ConfigError(f"[{section}] needs the parameter {k!r}")
        resolved[k] = given[k]
    return resolved


def _check_types(cfg: dict[str, dict[str, Any]]) -> None:
    from .engine import parse_grad_mode

    train = cfg["train"]
    try:
        parse_grad_mode(train["grad_mode"])
    except ValueError as exc:
        raise ConfigError(f"train.{exc}") from None
    for key in ("epochs", "batch_size", "seed", "checkpoint_every", "accumulate"):
        v = train[key]
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(f"train.{key}={v!r} must be an integer")
    for key in ("lr", "weight_decay"):
        v = train[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ConfigError(f"train.{key}={v!r} must be a number")
        train[key] = float(v)
    if train["accumulate"] < 1:
        raise ConfigError(f"train.accumulate={train['accumulate']!r} must be >= 1 (micro-batches per optimizer step)")
    train["precision"] = str(train["precision"])
    if train["precision"] not in PRECISIONS:
        raise ConfigError(f"train.precision={train['precision']!r} must be one of {list(PRECISIONS)}")
    timeout = train["dist_timeout"]
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise ConfigError(f"train.dist_timeout={timeout!r} must be a number of seconds > 0")
    train["dist_timeout"] = float(timeout)
    chunk = train["chunk_size"]
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise ConfigError(f"train.chunk_size={chunk!r} must be a positive integer (or null: all Jacobian rows at once)")
    if not isinstance(train["compile"], bool):
        raise ConfigError(f"train.compile={train['compile']!r} must be true or false")
    for key in ("baselines", "quiet"):
        if not isinstance(cfg["run"][key], bool):
            raise ConfigError(f"run.{key}={cfg['run'][key]!r} must be true or false")


def component_params(cfg: Mapping[str, Any], section: str) -> dict[str, Any]:
    """The parameters of the component of ``section`` (the section minus its fixed keys)."""
    return {k: v for k, v in cfg[section].items() if k not in DEFAULTS[section]}


def dump_config(cfg: Mapping[str, Any], path: str | Path) -> None:
    """Write a resolved config as YAML (readable back with :func:`load_config_file`)."""
    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(cfg)), sort_keys=False))
