"""Cost of one gradient-balancing training step, against a plain ``sum(losses).backward()`` step.

The setup of docs/_bench_step_overhead.md and of the "Gradient-balancing step cost" anchor: a
shared MLP trunk 256->512->512->256 (ReLU, 525,568 parameters), ``T`` linear heads 256->1, batch
256, per-task MSE on random data, SGD, 2 threads. Every configuration (a method run by our engine
in one grad mode, or by a peer) has its own model copy (same initial weights) and optimizer; all
of them run in one process, their steps interleaved round-robin with plain steps, and each is
reported as its median step time over the median of the plain steps timed next to it::

    python benchmarks/step_overhead.py                                # T = 2, 8, 32
    python benchmarks/step_overhead.py --tasks 8 --methods equal,mgda,upgrad --steps 30
    python benchmarks/step_overhead.py --libmtl /tmp/libmtl --json step_overhead.json

Peers: torchjd (``autojac.mtl_backward`` + ``autojac.jac_to_grad`` with the aggregator; and the
``autogram.Engine`` + the matching ``XxxWeighting``) and, with ``--libmtl PATH`` (a LibMTL source
tree), LibMTL's weighting class composed with its ``HPS`` architecture on CPU, as its Trainer does
(the Trainer itself hard-codes ``cuda:0``). Peak memory of one step is read from torch's CPU
allocator through ``torch.profiler`` (``profile_memory=True``); see ``peak_step_bytes``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import functools
import gc
import importlib
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multitask.aggregation import Aggregator
from multitask.architectures.base import HardSharing, mlp
from multitask.engine import Engine
from multitask.registry import signature_params
from multitask.weighting import WEIGHTINGS, create_weighting

NUM_TASKS = "<T>"  # placeholder in peer hyperparameters, replaced by the number of tasks
DEFAULT_MODES = ("exact", "features", "every:10")
COSINE_FLAG = 0.9999


@dataclass(frozen=True)
class PeerSpec:
    """How one of our method names maps to the peers, with the same hyperparameters on every side.

    Attributes:
        torchjd: torchjd aggregator class (autojac), or None when torchjd lacks the method.
        torchjd_weighting: torchjd weighting class for the autogram engine (None: not Gramian-based).
        torchjd_kwargs: keyword arguments of both torchjd classes (``NUM_TASKS`` -> ``T``).
        ours: hyperparameters of our method; names our class does not take are reported and dropped.
        libmtl: LibMTL weighting class (file ``LibMTL/weighting/<name>.py``), or None.
        libmtl_kwargs: its ``weight_args`` (passed to ``backward``).
        libmtl_params: LibMTL runs it on the gradients of the shared parameters (``rep_grad=False``).
        libmtl_rep_grad: LibMTL runs it on the gradients of the shared representation
            (``rep_grad=True``), compared with our "features" mode.
        stochastic: the method draws random numbers (cosine checks compare two random draws).
    """

    torchjd: str | None = None
    torchjd_weighting: str | None = None
    torchjd_kwargs: Mapping[str, Any] = field(default_factory=dict)
    ours: Mapping[str, Any] = field(default_factory=dict)
    libmtl: str | None = None
    libmtl_kwargs: Mapping[str, Any] = field(default_factory=dict)
    libmtl_params: bool = True
    libmtl_rep_grad: bool = False
    stochastic: bool = False


_NASH = {"max_norm": 1.0, "update_weights_every": 1, "optim_niter": 20}

#: our name -> peers. torchjd defaults are written out so that both sides visibly use the same values.
PEERS: dict[str, PeerSpec] = {
    "equal": PeerSpec("Sum", "SumWeighting", libmtl="EW", libmtl_rep_grad=True),
    "mgda": PeerSpec(
        "MGDA",
        "MGDAWeighting",
        {"epsilon": 1e-3, "max_iters": 100},
        ours={"epsilon": 1e-3, "max_iters": 100},
        libmtl="MGDA",
        libmtl_kwargs={"mgda_gn": "none"},
        libmtl_rep_grad=True,
    ),
    "upgrad": PeerSpec(
        "UPGrad",
        "UPGradWeighting",
        ours={"norm_eps": 1e-4, "reg_eps": 1e-4},
        libmtl="UPGrad",
        libmtl_kwargs={"UPGrad_norm_eps": 1e-4, "UPGrad_reg_eps": 1e-4},
    ),
    "dualproj": PeerSpec("DualProj", "DualProjWeighting", ours={"norm_eps": 1e-4, "reg_eps": 1e-4}),
    "pcgrad": PeerSpec("PCGrad", "PCGradWeighting", libmtl="PCGrad", stochastic=True),
    "cagrad": PeerSpec(
        "CAGrad",
        "CAGradWeighting",
        {"c": 0.4, "norm_eps": 1e-4},
        ours={"c": 0.4},
        libmtl="CAGrad",
        libmtl_kwargs={"calpha": 0.4, "rescale": 1},
    ),
    "imtl_g": PeerSpec("IMTLG", "IMTLGWeighting", libmtl="IMTL", libmtl_rep_grad=True),
    "nash_mtl": PeerSpec(
        "NashMTL", None, {"n_tasks": NUM_TASKS, **_NASH}, ours=dict(_NASH), libmtl="Nash_MTL", libmtl_kwargs=dict(_NASH)
    ),
    "aligned_mtl": PeerSpec(
        "AlignedMTL",
        "AlignedMTLWeighting",
        {"scale_mode": "min"},
        ours={"scale_mode": "min"},
        libmtl="Aligned_MTL",
        libmtl_rep_grad=True,
    ),
    "graddrop": PeerSpec(
        "GradDrop",
        None,
        ours={"leak": 0.0},
        libmtl="GradDrop",
        libmtl_kwargs={"leak": 0.0},
        libmtl_params=False,
        libmtl_rep_grad=True,
        stochastic=True,
    ),
    "config": PeerSpec("ConFIG", None),
    "fairgrad": PeerSpec(
        "FairGrad",
        "FairGradWeighting",
        {"alpha": 1.0},
        ours={"alpha": 1.0},
        libmtl="FairGrad",
        libmtl_kwargs={"FairGrad_alpha": 1.0},
    ),
    "gradvac": PeerSpec(
        "GradVac",
        "GradVacWeighting",
        {"beta": 0.5, "eps": 1e-8},
        ours={"beta": 0.5},
        libmtl="GradVac",
        libmtl_kwargs={"GradVac_beta": 0.5, "GradVac_group_type": 0},
        stochastic=True,
    ),
    "excess_mtl": PeerSpec(
        "ExcessMTL",
        None,
        {"robust_step_size": 1e-2},
        ours={"robust_step_size": 1e-2},
        libmtl="ExcessMTL",
        libmtl_kwargs={"robust_step_size": 1e-2},
    ),
    "rlw": PeerSpec("Random", "RandomWeighting", libmtl="RLW", libmtl_rep_grad=True, stochastic=True),
    "gradnorm": PeerSpec(ours={"alpha": 1.5}, libmtl="GradNorm", libmtl_kwargs={"alpha": 1.5}, libmtl_rep_grad=True),
}

#: Always in the default method list (when registered), whether or not torchjd has them.
ALWAYS = ("equal", "gradnorm", "nash_mtl")


# --- the problem ---------------------------------------------------------------------------------
def build_model(in_dim: int, hidden: Sequence[int], num_tasks: int, seed: int) -> HardSharing:
    """Shared ReLU MLP trunk and ``num_tasks`` linear heads ``hidden[-1] -> 1``."""
    torch.manual_seed(seed)
    trunk = mlp(in_dim, hidden)
    heads: dict[str, nn.Module] = {f"t{i}": nn.Linear(hidden[-1], 1) for i in range(num_tasks)}
    return HardSharing(trunk, heads)


def make_batches(n: int, batch: int, in_dim: int, num_tasks: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed + 1)
    return [(torch.randn(batch, in_dim, generator=g), torch.randn(batch, num_tasks, generator=g)) for _ in range(n)]


def task_losses(outputs: Mapping[str, Tensor], y: Tensor) -> list[Tensor]:
    """Per-task MSE, in head order."""
    return [F.mse_loss(out[:, 0], y[:, i]) for i, out in enumerate(outputs.values())]


def trunk_grad(model: nn.Module) -> Tensor:
    """The shared parameters' gradient as one float64 vector."""
    trunk = model.trunk if hasattr(model, "trunk") else model.encoder
    return torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1).double() for p in trunk.parameters()]
    )


# --- configurations ------------------------------------------------------------------------------
StepFn = Callable[[Tensor, Tensor], None]


@dataclass
class Config:
    """One way of taking a step, with its own model copy; accumulates timings."""

    method: str
    impl: str  # plain | ours | autojac | autogram | libmtl
    mode: str  # ours: the grad mode; libmtl: "params" or "rep_grad"; peers: "exact"
    model: nn.Module
    step: StepFn
    times: list[float] = field(default_factory=list)
    plain_times: list[float] = field(default_factory=list)
    peak_bytes: float | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method}/{self.impl}/{self.mode}"

    def ratios(self) -> dict[str, float]:
        if not self.times or not self.plain_times:
            return {}
        med_plain = statistics.median(self.plain_times)
        return {
            "min": min(self.times) / min(self.plain_times),
            "median": statistics.median(self.times) / med_plain,
            "mean": statistics.fmean(self.times) / med_plain,
        }


def plain_config(base: HardSharing, lr: float) -> Config:
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        outputs, _ = model.forward_features(x)
        torch.stack(task_losses(outputs, y)).sum().backward()
        opt.step()

    return Config("plain", "plain", "-", model, step)


def our_method(name: str, num_tasks: int, extra: Mapping[str, Any], notes: list[str]) -> nn.Module:
    """Our method ``name`` with the shared hyperparameters it accepts (others are reported)."""
    cls = WEIGHTINGS.get(name)
    accepted = {p.name for p in signature_params(cls)} - {"num_tasks"}
    wanted = {**PEERS.get(name, PeerSpec()).ours, **extra}
    dropped = sorted(set(wanted) - accepted)
    if dropped:
        note = f"ours {name}: takes no hyperparameter {dropped}; its defaults are used for them"
        if note not in notes:
            notes.append(note)
    return create_weighting(name, num_tasks, **{k: v for k, v in wanted.items() if k in accepted})


@functools.cache
def engine_takes_list() -> bool:
    """Whether our engine accepts the losses as a list of scalars (it can then walk each task's
    sub-graph on its own); older versions take only a stacked ``[T]`` tensor."""
    theta = torch.ones(2, requires_grad=True)
    try:
        Engine(create_weighting("equal", 2)).backward([theta[0] * 1.0, theta[1] * 2.0], [theta])
    except (TypeError, ValueError, AttributeError, RuntimeError):
        return False
    return theta.grad is not None and theta.grad.tolist() == [1.0, 2.0]


def ours_config(
    name: str, mode: str, base: HardSharing, num_tasks: int, lr: float, extra: Mapping[str, Any], notes: list[str]
) -> Config:
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    engine = Engine(our_method(name, num_tasks, extra, notes), grad_mode=mode)
    shared = list(model.shared_parameters())
    heads = [p for n in model.task_names for p in model.task_parameters(n)]
    as_list = engine_takes_list()

    def step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        outputs, z, views = model.forward_task_features(x)
        losses = task_losses(outputs, y)
        engine.backward(
            losses if as_list else torch.stack(losses),
            shared,
            other_params=heads,
            features=z,
            task_features=[views[n] for n in model.task_names] if views is not None and as_list else None,
        )
        opt.step()

    return Config(name, "ours", mode, model, step)


def our_modes(name: str, num_tasks: int, modes: Sequence[str], extra: Mapping[str, Any]) -> list[str]:
    """The grad modes that differ for this method: one for loss-based ones, no ``every`` for aggregators."""
    method = our_method(name, num_tasks, extra, [])
    if isinstance(method, Aggregator):
        # amortised modes reuse weights, which aggregators do not have; aggregators with state as
        # wide as the Jacobian need a fixed width, which only the exact mode has
        return [m for m in modes if "every" not in m and not (method.jacobian_state and m.startswith("features"))]
    if not method.needs_gramian():
        return [modes[0]] if modes else []
    return list(modes)


def _torchjd() -> tuple[Any, Any, Any] | None:
    try:
        return (
            importlib.import_module("torchjd.aggregation"),
            importlib.import_module("torchjd.autojac"),
            importlib.import_module("torchjd.autogram"),
        )
    except ImportError:
        return None


def _torchjd_kwargs(spec: PeerSpec, num_tasks: int) -> dict[str, Any]:
    return {k: (num_tasks if v == NUM_TASKS else v) for k, v in spec.torchjd_kwargs.items()}


def autojac_config(name: str, base: HardSharing, num_tasks: int, lr: float) -> Config | None:
    tj = _torchjd()
    spec = PEERS.get(name)
    if tj is None or spec is None or spec.torchjd is None:
        return None
    aggregation, autojac, _ = tj
    aggregator = getattr(aggregation, spec.torchjd)(**_torchjd_kwargs(spec, num_tasks))
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    shared = list(model.shared_parameters())
    tasks_params = [list(model.task_parameters(n)) for n in model.task_names]

    def step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        outputs, z = model.forward_features(x)
        autojac.mtl_backward(task_losses(outputs, y), features=z, tasks_params=tasks_params, shared_params=shared)
        autojac.jac_to_grad(shared, aggregator)
        opt.step()

    return Config(name, "autojac", "exact", model, step)


def autogram_config(name: str, base: HardSharing, num_tasks: int, lr: float) -> Config | None:
    tj = _torchjd()
    spec = PEERS.get(name)
    if tj is None or spec is None or spec.torchjd_weighting is None:
        return None
    aggregation, _, autogram = tj
    weighting = getattr(aggregation, spec.torchjd_weighting)(**_torchjd_kwargs(spec, num_tasks))
    model = copy.deepcopy(base)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    # the losses are batch means: no batch dimension (as in torchjd's own multi-task examples)
    engine = autogram.Engine(model.trunk, batch_dim=None)

    def step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        outputs, _ = model.forward_features(x)
        losses = torch.stack(task_losses(outputs, y))
        weights = weighting(engine.compute_gramian(losses))
        losses.backward(weights)
        opt.step()

    return Config(name, "autogram", "exact", model, step)


def load_libmtl(path: str | Path) -> types.ModuleType:
    """LibMTL's ``weighting`` and ``architecture`` subpackages from a source tree, on CPU.

    ``import LibMTL`` would run its ``__init__``, which imports the Trainer (torch_geometric,
    cvxpy, a hard-coded ``cuda:0``); empty parent packages pointing at the tree let the weighting
    and architecture modules be imported one by one instead.
    """
    root = Path(path).expanduser().resolve()
    pkg = root / "LibMTL" if (root / "LibMTL").is_dir() else root
    if not (pkg / "weighting" / "abstract_weighting.py").is_file():
        raise FileNotFoundError(f"--libmtl {path}: no LibMTL/weighting/abstract_weighting.py under it")
    for name, sub in (
        ("LibMTL", pkg),
        ("LibMTL.weighting", pkg / "weighting"),
        ("LibMTL.architecture", pkg / "architecture"),
    ):
        mod = types.ModuleType(name)
        mod.__path__ = [str(sub)]
        sys.modules[name] = mod
    # LibMTL's Aligned_MTL calls torch.symeig, removed from torch (it raises since 2.0); eigh is
    # its documented replacement (eigenvalues ascending, same as symeig).
    torch.symeig = _symeig  # type: ignore[attr-defined]
    return importlib.import_module("LibMTL.architecture.HPS")


def _symeig(matrix: Tensor, eigenvectors: bool = False, upper: bool = True) -> tuple[Tensor, Tensor]:
    values, vectors = torch.linalg.eigh(matrix, UPLO="U" if upper else "L")
    return values, vectors if eigenvectors else torch.empty(0)


def libmtl_config(
    name: str, rep_grad: bool, base: HardSharing, num_tasks: int, lr: float, libmtl: str | Path
) -> Config | None:
    spec = PEERS.get(name)
    if spec is None or spec.libmtl is None or not (spec.libmtl_rep_grad if rep_grad else spec.libmtl_params):
        return None
    hps = load_libmtl(libmtl).HPS
    weighting_cls = getattr(importlib.import_module(f"LibMTL.weighting.{spec.libmtl}"), spec.libmtl)

    class MTLModel(hps, weighting_cls):  # type: ignore[misc, valid-type]
        """What LibMTL's Trainer._prepare_model builds, on CPU."""

        def __init__(self, trunk: nn.Module, heads: nn.ModuleDict) -> None:
            super().__init__(list(heads), lambda: trunk, heads, rep_grad, False, torch.device("cpu"))
            self.init_param()

    src = copy.deepcopy(base)
    model = MTLModel(src.trunk, src.heads)
    model.epoch = 1  # GradNorm (and DWA) read the epoch and the first epoch's mean losses
    model.train_loss_buffer = torch.ones(num_tasks, 2).numpy()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    weight_args = dict(spec.libmtl_kwargs)

    def step(x: Tensor, y: Tensor) -> None:
        opt.zero_grad(set_to_none=False)  # as LibMTL's Trainer
        outputs = model(x)
        losses = torch.zeros(num_tasks)
        for i, loss in enumerate(task_losses(outputs, y)):
            losses[i] = loss
        model.backward(losses, **weight_args)
        opt.step()

    return Config(name, "libmtl", "rep_grad" if rep_grad else "params", model, step)


# --- measurement ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines) for the block."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run_rounds(
    plain: Config, configs: list[Config], batches: Sequence[tuple[Tensor, Tensor]], warmup: int, steps: int
) -> None:
    """``warmup + steps`` rounds; in each, every config takes one step right after a plain step.

    The order of the configs rotates from round to round. A config whose step raises is dropped
    (its error kept).
    """
    live = [c for c in configs if c.error is None]
    for r in range(warmup + steps):
        x, y = batches[r % len(batches)]
        shift = r % max(1, len(live))
        with _gc_paused():
            for c in live[shift:] + live[:shift]:
                if c.error is not None:
                    continue
                t0 = time.perf_counter()
                plain.step(x, y)
                t1 = time.perf_counter()
                try:
                    c.step(x, y)
                except Exception as exc:  # a peer that cannot run here: report, keep going
                    c.error = f"{type(exc).__name__}: {exc}"
                    continue
                t2 = time.perf_counter()
                if r >= warmup:
                    c.plain_times.append(t1 - t0)
                    c.times.append(t2 - t1)


def peak_step_bytes(config: Config, x: Tensor, y: Tensor, steps: int = 1) -> float:
    """Peak bytes held by tensors allocated during ``steps`` steps (torch's CPU allocator).

    ``torch.profiler.profile(profile_memory=True)`` makes the CPU allocator report every
    allocation and free (address, bytes, time). Replaying them in order and counting only the
    blocks allocated inside the profiled step gives the live bytes of the step at every moment;
    its maximum is the step's peak above what was allocated before it. (The allocator's own
    "Total Allocated" column is not used: it also carries blocks allocated in earlier profiling
    sessions and still alive.) Gradients are set to None first, so that every configuration
    allocates its own. Not seen: memory outside torch's allocator (numpy/cvxpy/scipy work of some
    methods, Python objects, allocator caching and fragmentation, which a process's RSS would show).
    Amortised modes ("every:K") are probed over ``K`` steps, so that one of them recomputes the
    weights.
    """
    from torch.profiler import ProfilerActivity, profile

    config.model.zero_grad(set_to_none=True)
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            config.step(x, y)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text()).get("traceEvents", [])
    memory = [e for e in events if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0]
    memory.sort(key=lambda e: (e.get("ts", 0.0), e["args"].get("Ev Idx", 0)))
    live: dict[int, int] = {}
    current = peak = 0
    for e in memory:
        addr, nbytes = int(e["args"].get("Addr", 0)), int(e["args"].get("Bytes", 0))
        if nbytes > 0:
            live[addr] = live.get(addr, 0) + nbytes
            current += nbytes
            peak = max(peak, current)
        elif nbytes < 0 and addr in live:  # frees of blocks from before the step are not counted
            current -= live.pop(addr)
    return float(peak)


def amortised_every(mode: str) -> int:
    """``K`` of an "every:K" grad mode, else 1."""
    m = re.search(r"every:(\d+)", mode)
    return int(m.group(1)) if m else 1


def cosine(a: Tensor, b: Tensor) -> float:
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else float("nan")


def check_cosines(
    names: Sequence[str],
    base: HardSharing,
    num_tasks: int,
    batch: tuple[Tensor, Tensor],
    libmtl: str | None,
    extra: Mapping[str, Mapping[str, Any]],
    notes: list[str],
    seed: int,
) -> list[dict[str, Any]]:
    """Cosine between our exact-mode shared-parameter update and each peer's, on the first batch.

    Fresh model copies (same initial weights) and fresh method instances on every side; the
    shared parameters' gradient after one step is compared (the heads' gradients differ by design:
    autojac gives every head its own task's unweighted gradient).
    """
    rows = []
    x, y = batch
    for name in names:
        spec = PEERS.get(name)
        if spec is None or (spec.torchjd is None and spec.libmtl is None):
            continue
        peers: dict[str, Config | None] = {
            "autojac": autojac_config(name, base, num_tasks, lr=0.0),
            "autogram": autogram_config(name, base, num_tasks, lr=0.0),
        }
        if libmtl:
            peers["libmtl"] = libmtl_config(name, False, base, num_tasks, 0.0, libmtl)
        grads: dict[str, Tensor] = {}
        for impl, cfg in [("ours", ours_config(name, "exact", base, num_tasks, 0.0, extra.get(name, {}), notes))] + [
            (k, v) for k, v in peers.items() if v is not None
        ]:
            torch.manual_seed(seed)
            try:
                cfg.step(x, y)
            except Exception as exc:
                notes.append(f"cosine check {name}/{impl}: {type(exc).__name__}: {exc}")
                continue
            grads[impl] = trunk_grad(cfg.model)
        if "ours" not in grads:
            continue
        row: dict[str, Any] = {"method": name, "T": num_tasks, "stochastic": spec.stochastic}
        for impl, g in grads.items():
            if impl != "ours":
                row[impl] = cosine(grads["ours"], g)
        rows.append(row)
    return rows


# --- reporting -----------------------------------------------------------------------------------
def describe_methods(
    names: Sequence[str], num_tasks: int, extra: Mapping[str, Mapping[str, Any]], torchjd: bool, libmtl: bool
) -> list[dict[str, Any]]:
    """The hyperparameters each side runs with (ours as read back from the instance)."""
    rows = []
    for name in names:
        spec = PEERS.get(name, PeerSpec())
        ours = our_method(name, num_tasks, extra.get(name, {}), [])
        row: dict[str, Any] = {"method": name, "ours": {k: repr(v) for k, v in ours.hyperparameters().items()}}
        if torchjd and spec.torchjd:
            kwargs = ", ".join(f"{k}={v!r}" for k, v in _torchjd_kwargs(spec, num_tasks).items())
            row["torchjd"] = f"{spec.torchjd}({kwargs})" + (
                f" / {spec.torchjd_weighting}" if spec.torchjd_weighting else ""
            )
        if libmtl and spec.libmtl:
            row["libmtl"] = f"{spec.libmtl} {dict(spec.libmtl_kwargs)}"
        rows.append(row)
    return rows


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "x") -> str:
    return "-" if value is None or math.isnan(value) else f"{value:{spec}}{suffix}"


def _mib(b: float | None) -> float | None:
    return None if b is None else b / 2**20


def summarize(configs: list[Config], plain_peak: float | None) -> list[dict[str, Any]]:
    out = []
    for c in configs:
        r = c.ratios()
        out.append(
            {
                "method": c.method,
                "impl": c.impl,
                "mode": c.mode,
                "ratio_min": r.get("min"),
                "ratio_median": r.get("median"),
                "ratio_mean": r.get("mean"),
                "median_s": statistics.median(c.times) if c.times else None,
                "plain_median_s": statistics.median(c.plain_times) if c.plain_times else None,
                "steps": len(c.times),
                "peak_mib": _mib(c.peak_bytes),
                "peak_over_plain_mib": None
                if c.peak_bytes is None or plain_peak is None
                else _mib(c.peak_bytes - plain_peak),
                "error": c.error,
            }
        )
    return out


def _cell(row: Mapping[str, Any], key: str = "ratio_median") -> str:
    return "error" if row.get("error") else _fmt(row.get(key))


def table(results: list[dict[str, Any]], num_tasks: int, modes: Sequence[str]) -> list[str]:
    """One Markdown row per (method, our grad mode).

    torchjd has one (exact) mode: its columns sit on our exact row, and ``ours/torchjd`` divides
    every row by the faster of its two engines. LibMTL's parameter-gradient mode sits on the exact
    row, its ``rep_grad`` mode on the features row. Peak memory: MiB over the plain step's peak.
    """
    by = {(r["method"], r["impl"], r["mode"]): r for r in results}
    lines = [
        "| method | mode | T | ours/plain min / median (mean) | torchjd autojac/plain | torchjd autogram/plain "
        "| LibMTL/plain | ours/torchjd | peak MiB over plain: ours / autojac / autogram / LibMTL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    none: dict[str, Any] = {}
    methods = list(dict.fromkeys(r["method"] for r in results if r["impl"] == "ours"))
    for name in methods:
        aj = by.get((name, "autojac", "exact"), none)
        ag = by.get((name, "autogram", "exact"), none)
        tj = [v for v in (aj.get("ratio_median"), ag.get("ratio_median")) if v is not None]
        for mode in [m for m in modes if (name, "ours", m) in by]:
            ours = by[(name, "ours", mode)]
            exact = mode == "exact"
            lib = none
            if exact:
                lib = by.get((name, "libmtl", "params"), none)
            elif mode == "features":
                lib = by.get((name, "libmtl", "rep_grad"), none)
            lib_txt = _cell(lib) + (" (rep_grad)" if lib.get("mode") == "rep_grad" and not lib.get("error") else "")
            vs_tj = ours["ratio_median"] / min(tj) if tj and ours["ratio_median"] is not None else None
            peers = (aj, ag) if exact else (none, none)
            mem = " / ".join(_fmt(d.get("peak_over_plain_mib"), ".1f", "") for d in (ours, *peers, lib))
            lines.append(
                f"| {name} | {mode} | {num_tasks} | {_fmt(ours['ratio_min'])} / {_cell(ours)} "
                f"({_fmt(ours['ratio_mean'])}) | {_cell(peers[0])} | {_cell(peers[1])} | {lib_txt} "
                f"| {_fmt(vs_tj)} | {mem} |"
            )
    return lines


# --- driver --------------------------------------------------------------------------------------
def default_methods() -> list[str]:
    tj = _torchjd() is not None
    names = [n for n in PEERS if n in ALWAYS or (tj and PEERS[n].torchjd is not None)]
    return names


def _parse_ours_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        try:
            method, rest = item.split(":", 1)
            key, raw = rest.split("=", 1)
        except ValueError:
            raise SystemExit(f"--ours-param {item!r}: expected METHOD:KEY=VALUE, e.g. cagrad:c=0.4") from None
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.setdefault(method.strip(), {})[key.strip()] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tasks", default="2,8,32", help="numbers of tasks T, comma-separated (default: 2,8,32)")
    p.add_argument("--methods", default=None, help="our method names, comma-separated (default: see the docs)")
    p.add_argument("--modes", default=",".join(DEFAULT_MODES), help="our grad modes (default: exact,features,every:10)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per config (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up steps per config (default 5)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--in-dim", type=int, default=256)
    p.add_argument("--hidden", default="512,512,256", help="trunk widths (default 512,512,256)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--libmtl", default=None, metavar="PATH", help="a LibMTL source tree (GitHub HEAD) to compare with")
    p.add_argument("--no-torchjd", action="store_true", help="leave torchjd out")
    p.add_argument("--memory", choices=("profiler", "none"), default="profiler", help="peak-memory probe")
    p.add_argument("--no-cosine", action="store_true", help="skip the on-the-fly cosine check")
    p.add_argument("--ours-param", action="append", default=[], metavar="METHOD:KEY=VALUE")
    p.add_argument("--json", default=None, metavar="FILE", help="also write every figure to FILE")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark; print the tables; return everything (also written to ``--json``)."""
    torch.set_num_threads(args.threads)
    hidden = [int(h) for h in str(args.hidden).split(",") if h]
    task_counts = [int(t) for t in str(args.tasks).split(",") if t]
    modes = [m.strip() for m in str(args.modes).split(",") if m.strip()]
    extra = _parse_ours_params(args.ours_param)
    use_torchjd = not args.no_torchjd and _torchjd() is not None
    notes: list[str] = []
    if not args.no_torchjd and not use_torchjd:
        notes.append("torchjd is not installed: its columns are empty")
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else default_methods()
    names = []
    for n in wanted:
        if n in WEIGHTINGS:
            names.append(n)
        else:
            notes.append(f"{n}: not registered in multitask.weighting.WEIGHTINGS yet, skipped")
    if args.libmtl:
        load_libmtl(args.libmtl)

    report: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items()},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchjd": _version("torchjd") if use_torchjd else None,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "methods": names,
        "results": [],
        "cosines": [],
        "summary": {},
        "notes": notes,
    }
    report["hyperparameters"] = describe_methods(names, 2, extra, use_torchjd, bool(args.libmtl))
    print("Hyperparameters (ours | torchjd | LibMTL):")
    for row in report["hyperparameters"]:
        ours_hp = ", ".join(f"{k}={v}" for k, v in row["ours"].items()) or "-"
        print(f"- {row['method']}: {ours_hp} | {row.get('torchjd', '-')} | {row.get('libmtl', '-')}")
    for num_tasks in task_counts:
        base = build_model(args.in_dim, hidden, num_tasks, args.seed)
        batches = make_batches(4, args.batch, args.in_dim, num_tasks, args.seed)
        plain = plain_config(base, args.lr)
        configs: list[Config] = []
        for name in names:
            for mode in our_modes(name, num_tasks, modes, extra.get(name, {})):
                configs.append(ours_config(name, mode, base, num_tasks, args.lr, extra.get(name, {}), notes))
            if use_torchjd:
                for maker in (autojac_config, autogram_config):
                    c = maker(name, base, num_tasks, args.lr)
                    if c is not None:
                        configs.append(c)
            if args.libmtl:
                for rep in (False, True):
                    c = libmtl_config(name, rep, base, num_tasks, args.lr, args.libmtl)
                    if c is not None:
                        configs.append(c)
        n_trunk = sum(p.numel() for p in base.shared_parameters())
        print(f"\nT={num_tasks}: {len(configs)} configs, trunk {n_trunk:,} params, batch {args.batch}", flush=True)
        gc.collect()
        gc.freeze()  # the set-up's objects: later collections (one per round) skip them
        t0 = time.perf_counter()
        run_rounds(plain, configs, batches, args.warmup, args.steps)
        plain_peak = None
        if args.memory == "profiler":
            x, y = batches[0]
            plain_peak = peak_step_bytes(plain, x, y)
            for c in configs:
                if c.error is None:
                    try:
                        c.peak_bytes = peak_step_bytes(c, x, y, steps=amortised_every(c.mode))
                    except Exception as exc:
                        c.error = f"memory probe: {type(exc).__name__}: {exc}"
        gc.unfreeze()
        for c in configs:
            if c.error:
                notes.append(f"T={num_tasks} {c.label}: {c.error}")
        results = summarize(configs, plain_peak)
        for r in results:
            r["T"] = num_tasks
        report["results"] += results
        plain_row = {"T": num_tasks, "peak_mib": _mib(plain_peak), "median_s": None}
        all_plain = [t for c in configs for t in c.plain_times]
        if all_plain:
            plain_row["median_s"] = statistics.median(all_plain)
        report.setdefault("plain", []).append(plain_row)
        print(
            f"plain step: median {_fmt(plain_row['median_s'] and plain_row['median_s'] * 1e3, '.1f', ' ms')}, "
            f"peak {_fmt(plain_row['peak_mib'], '.1f', ' MiB')}; measured in {time.perf_counter() - t0:.0f} s"
        )
        print("\n".join(table(results, num_tasks, modes)), flush=True)
        if not args.no_cosine and (use_torchjd or args.libmtl):
            cos = check_cosines(names, base, num_tasks, batches[0], args.libmtl, extra, notes, args.seed)
            report["cosines"] += cos
            for row in cos:
                parts = []
                for impl in ("autojac", "autogram", "libmtl"):
                    if impl in row:
                        flag = "" if row[impl] >= COSINE_FLAG else (" (random)" if row["stochastic"] else " <-- LOW")
                        parts.append(f"{impl} {row[impl]:.6f}{flag}")
                print(f"cosine ours vs peers, {row['method']} T={num_tasks}: {', '.join(parts) or '-'}")
        by = {(r["method"], r["impl"], r["mode"]): r for r in results}
        mode0 = modes[0] if modes else "exact"
        eq = by.get(("equal", "ours", mode0), {}).get("ratio_median")
        nash = by.get(("nash_mtl", "ours", mode0), {}).get("ratio_median")
        mgda = by.get(("mgda", "ours", mode0), {}).get("ratio_median")
        summary = {
            "equal_over_plain": eq,
            "nash_mtl_over_mgda": nash / mgda if nash and mgda else None,
        }
        report["summary"][str(num_tasks)] = summary
        print(
            f"T={num_tasks}: equal / plain (ours, {mode0}) = {_fmt(eq, '.3f')}; "
            f"nash_mtl / mgda (ours, {mode0}) = {_fmt(summary['nash_mtl_over_mgda'], '.2f')}"
        )
    if notes:
        print("\nNotes:")
        for n in dict.fromkeys(notes):
            print(f"- {n}")
    report["notes"] = list(dict.fromkeys(notes))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
    return report


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
