"""Run configuration: TOML/YAML/JSON files, command-line overrides, validation, resolution.

A config has five sections. Fixed keys are listed below; every other key of ``[data]``,
``[model]`` and ``[weighting]`` is a parameter of the chosen dataset loader, architecture or
weighting, checked against its signature (an unknown key names the closest valid one)::

    [data]       dataset = "multidigits"  | path = "file.csv" | combine = {source = {dataset, ...}, ...};
                 tasks = [...];  sampler = "name" | {name, <sampler params>};  auxiliary = [...];
                 auxiliary_reconstruction = false;  <loader params>
    [model]      architecture = "hard_sharing";  <architecture params>
    [weighting]  name = "equal";  <weighting params>
    [train]      epochs, batch_size, lr, optimizer, weight_decay, seed, grad_mode, chunk_size,
                 checkpoint_every, device, precision, accumulate, compile, dist_timeout, relations_every
    [run]        out_dir, name, baselines, quiet, loggers (["mlflow", "tensorboard"]), mlflow_uri,
                 mlflow_experiment, tensorboard_dir, log_every
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

__all__ = ["DEFAULTS", "LOGGERS", "ConfigError", "apply_overrides", "dump_config", "load_config_file", "resolve_config"]


class ConfigError(ValueError):
    """A config file or override is malformed or names something unknown."""


DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "dataset": "multidigits",
        "path": None,
        "tasks": [],
        "combine": None,
        "sampler": None,
        "auxiliary": [],
        "auxiliary_reconstruction": False,
    },
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
        "relations_every": 0,
    },
    "run": {
        "out_dir": "runs",
        "name": None,
        "baselines": True,
        "quiet": False,
        "loggers": [],
        "mlflow_uri": None,
        "mlflow_experiment": "multitask",
        "tensorboard_dir": None,
        "log_every": 0,
    },
}
LOGGERS = ("mlflow", "tensorboard")
PRECISIONS = ("32", "bf16", "fp16")
_OPEN_SECTIONS = {"data": "dataset", "model": "architecture", "weighting": "name"}
SOURCE_KEYS = ("dataset", "path", "tasks")  # the fixed keys of one source of data.combine


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

    out["data"] = _resolve_data(dict(cfg.get("data", {})), out["train"])

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


def _resolve_source(where: str, given: dict[str, Any], *, fixed: Sequence[str]) -> dict[str, Any]:
    """A dataset choice (``dataset`` or ``path``, ``tasks``, loader parameters) with every default filled."""
    from .data import DATASETS, load_table

    if given.get("path"):
        given["dataset"] = None
        loader: Callable[..., Any] = load_table
        skip: tuple[str, ...] = ("path", "tasks")
        if not given.get("tasks"):
            raise ConfigError(
                f"{where}.path is set but {where}.tasks is empty: name the target columns, e.g. "
                "--task income:binary --task age:regression"
            )
    else:
        if not given.get("dataset"):
            raise ConfigError(
                f"set {where}.dataset (a built-in dataset, see `multitask list datasets`) or {where}.path"
            )
        loader = DATASETS.get(str(given["dataset"]))
        skip = ()
    if isinstance(given.get("tasks"), str):
        given["tasks"] = [given["tasks"]]
    return _resolve_open("data", given, loader, skip, fixed=fixed)


def _resolve_sampler(value: Any, train: Mapping[str, Any]) -> dict[str, Any] | None:
    """``data.sampler``: a name or a table ``{name, <params>}`` -> the table with every parameter filled."""
    from .data.samplers import SAMPLERS

    if value is None:
        return None
    given = {"name": value} if isinstance(value, str) else value
    if not isinstance(given, Mapping) or not isinstance(given.get("name"), str):
        raise ConfigError(
            f"data.sampler={value!r} must be a sampler name (e.g. 'temperature') or a table "
            "{name = 'temperature', temperature = 2.0}; see `multitask list samplers`"
        )
    given = dict(given)
    cls = SAMPLERS.get(given["name"])
    names = [p.name for p in signature_params(cls)]
    if "epochs" in names and "epochs" not in given:
        given["epochs"] = train["epochs"]  # an annealing horizon defaults to the run's length
    params = {p.name: p for p in signature_params(cls)}
    for key in given:
        if key != "name" and key not in params:
            raise UnknownNameError(unknown_name_message(f"parameter of sampler {given['name']!r}:", key, list(params)))
    resolved: dict[str, Any] = {"name": given["name"]}
    for name, p in params.items():
        if name not in given and p.required:
            raise ConfigError(f"data.sampler {given['name']!r} needs the parameter {name!r}")
        resolved[name] = _normalise(given.get(name, p.default))
    try:
        cls(**{k: v for k, v in resolved.items() if k != "name"})  # validates the values, naming them
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.sampler: {exc}") from None
    return resolved


def _resolve_data(raw: dict[str, Any], train: Mapping[str, Any]) -> dict[str, Any]:
    data = {**DEFAULTS["data"], **raw}
    combine = data.get("combine")
    if combine:
        if not isinstance(combine, Mapping):
            raise ConfigError(
                f"data.combine must be a table of sources, e.g. {{left = {{dataset = 'multidigits', tasks = ['left']}}}}, "
                f"got {combine!r}"
            )
        if raw.get("dataset") or raw.get("path"):
            raise ConfigError("data.combine replaces data.dataset and data.path: set one of them, not both")
        for key in data:
            if key not in DEFAULTS["data"]:
                raise UnknownNameError(
                    unknown_name_message(
                        "key in [data] (loader parameters go in each source of data.combine):",
                        key,
                        list(DEFAULTS["data"]),
                    )
                )
        sources = {}
        for name, src in combine.items():
            if not isinstance(src, Mapping):
                raise ConfigError(
                    f"data.combine.{name} must be a table {{dataset = ..., tasks = [...], ...}}, got {src!r}"
                )
            sources[str(name)] = _resolve_source(f"data.combine.{name}", dict(src), fixed=SOURCE_KEYS)
        resolved: dict[str, Any] = {k: data[k] for k in DEFAULTS["data"]}
        resolved.update(dataset=None, path=None, combine=sources)
    else:
        resolved = _resolve_source("data", data, fixed=tuple(DEFAULTS["data"]))
        resolved["combine"] = None
    if isinstance(resolved["tasks"], str):
        resolved["tasks"] = [resolved["tasks"]]
    resolved["sampler"] = _resolve_sampler(resolved.get("sampler"), train)
    aux = resolved.get("auxiliary") or []
    if isinstance(aux, str):
        aux = [aux]
    if not isinstance(aux, list) or not all(isinstance(a, str) for a in aux):
        raise ConfigError(f"data.auxiliary={resolved.get('auxiliary')!r} must be a list of task names")
    resolved["auxiliary"] = aux
    if not isinstance(resolved.get("auxiliary_reconstruction"), bool):
        raise ConfigError(
            f"data.auxiliary_reconstruction={resolved.get('auxiliary_reconstruction')!r} must be true or false"
        )
    return resolved


def _resolve_open(
    section: str,
    given: dict[str, Any],
    factory: Callable[..., Any],
    skip: tuple[str, ...],
    *,
    fixed: Sequence[str] | None = None,
) -> dict[str, Any]:
    fixed_keys = list(DEFAULTS[section]) if fixed is None else list(fixed)
    fixed_set = set(fixed_keys)
    params = _params_of(factory, skip)
    required = [p.name for p in signature_params(factory) if p.required and p.name not in skip]
    for key in given:
        if key not in fixed_set and key not in params and key not in required:
            raise UnknownNameError(
                unknown_name_message(f"key in [{section}]:", key, sorted(fixed_set | set(params) | set(required)))
            )
    resolved = {k: given[k] for k in fixed_keys if k in given}
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
    for key in ("epochs", "batch_size", "seed", "checkpoint_every", "accumulate", "relations_every"):
        v = train[key]
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(f"train.{key}={v!r} must be an integer")
    for key in ("lr", "weight_decay"):
        v = train[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ConfigError(f"train.{key}={v!r} must be a number")
        train[key] = float(v)
    if train["relations_every"] < 0:
        raise ConfigError(
            f"train.relations_every={train['relations_every']!r} must be >= 0 (0: record gradient relations only "
            "when the weighting computes the Gramian anyway; N: also compute it every N steps)"
        )
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
    _check_run_tracking(cfg["run"])


def _check_run_tracking(run: dict[str, Any]) -> None:
    loggers = run["loggers"]
    if isinstance(loggers, str):
        loggers = [loggers]
    if not isinstance(loggers, list) or not all(isinstance(n, str) for n in loggers):
        raise ConfigError(
            f'run.loggers={run["loggers"]!r} must be a list of logger names, e.g. ["mlflow", "tensorboard"]'
        )
    for name in loggers:
        if name not in LOGGERS:
            raise UnknownNameError(unknown_name_message("logger in run.loggers:", name, list(LOGGERS)))
    run["loggers"] = list(dict.fromkeys(loggers))
    for key in ("mlflow_uri", "tensorboard_dir"):
        v = run[key]
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise ConfigError(
                f"run.{key}={v!r} must be a non-empty string (or null for the default inside the run directory)"
            )
    if not isinstance(run["mlflow_experiment"], str) or not run["mlflow_experiment"].strip():
        raise ConfigError(f"run.mlflow_experiment={run['mlflow_experiment']!r} must be a non-empty experiment name")
    v = run["log_every"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError(
            f"run.log_every={v!r} must be an integer >= 0 (0: loggers record per epoch only; N: also every N steps)"
        )


def component_params(cfg: Mapping[str, Any], section: str) -> dict[str, Any]:
    """The parameters of the component of ``section`` (the section minus its fixed keys)."""
    return {k: v for k, v in cfg[section].items() if k not in DEFAULTS[section]}


def dump_config(cfg: Mapping[str, Any], path: str | Path) -> None:
    """Write a resolved config as YAML (readable back with :func:`load_config_file`)."""
    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(cfg)), sort_keys=False))
