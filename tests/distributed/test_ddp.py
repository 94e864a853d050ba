"""Data-parallel training on 2 gloo processes equals single-process training on the union batch.

The workers run under the real ``torchrun`` launcher (see ``_ddp_worker.py``); the single-process
reference runs in this process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from multitask.distributed import env_world_size

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_ddp_worker.py"
sys.path.insert(0, str(HERE))
import _ddp_worker as worker  # noqa: E402

TIMEOUT = 240


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(*args: str, nproc: int = 2, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(WORKER)]
    proc = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=TIMEOUT, env=_env(), cwd=HERE, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def equivalence_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp-equivalence")
    assert env_world_size() == 1
    worker.main(["equivalence", str(out)])  # 1 process, global batch 16
    torchrun("equivalence", str(out))  # 2 processes x 8 rows of each global batch
    return out


@pytest.mark.parametrize(("method", "mode"), worker.CASES)
def test_two_processes_equal_one_process_on_the_union_batch(equivalence_runs: Path, method: str, mode: str) -> None:
    one = torch.load(equivalence_runs / f"{method}-{mode}-w1-rank0.pt")
    r0 = torch.load(equivalence_runs / f"{method}-{mode}-w2-rank0.pt")
    r1 = torch.load(equivalence_runs / f"{method}-{mode}-w2-rank1.pt")
    torch.manual_seed(0)
    trainer, _ = worker.make_trainer(method, mode, None)
    init = worker.flat_params(trainer)
    assert float((one - init).abs().max()) > 1e-2, "training did not move the parameters: the test would be vacuous"
    assert torch.equal(r0, r1), "the ranks' parameters diverged"
    assert float((r0 - one).abs().max()) <= 1e-5


@pytest.mark.parametrize(("method", "mode"), worker.ACCUMULATE_CASES)
def test_accumulation_under_two_processes_equals_one_process(equivalence_runs: Path, method: str, mode: str) -> None:
    """2 processes x 2 micro-batches of 4 rows == 1 process x 2 micro-batches of 8 rows == the plain 16-row step."""
    one = torch.load(equivalence_runs / f"{method}-{mode}-acc2-w1-rank0.pt")
    two = torch.load(equivalence_runs / f"{method}-{mode}-acc2-w2-rank0.pt")
    assert torch.equal(two, torch.load(equivalence_runs / f"{method}-{mode}-acc2-w2-rank1.pt"))
    assert float((two - one).abs().max()) <= 1e-5
    plain, data = worker.make_trainer(method, mode, None)
    plain.fit(data)
    assert float((worker.flat_params(plain) - one).abs().max()) <= 1e-5


def test_per_rank_methods_would_differ(equivalence_runs: Path) -> None:
    """The check above can fail: the same method on half the batch (what naive DDP does per rank) differs."""
    from multitask.trainer import Trainer

    trainer, data = worker.make_trainer("mgda", "exact", None)
    half = Trainer(
        trainer.model, data.tasks, "mgda", epochs=1, batch_size=worker.GLOBAL_BATCH // 2, lr=0.05, optimizer="sgd"
    )
    half.fit(data)
    one = torch.load(equivalence_runs / "mgda-exact-w1-rank0.pt")
    assert float((worker.flat_params(half) - one).abs().max()) > 1e-3


def test_resume_on_one_rank_from_a_two_rank_checkpoint(tmp_path: Path) -> None:
    torchrun("interrupt", str(tmp_path / "split"), "13")  # 2 ranks, stopped mid-epoch 2 (10 steps per epoch)
    assert (tmp_path / "split" / "checkpoint.pt").is_file()
    assert worker.main(["resume", str(tmp_path / "split")]) == 0  # finish on 1 rank
    assert worker.main(["resume", str(tmp_path / "straight")]) == 0  # uninterrupted, 1 rank
    resumed = torch.load(tmp_path / "split" / "resume-w1-rank0.pt")
    straight = torch.load(tmp_path / "straight" / "resume-w1-rank0.pt")
    assert float((resumed - straight).abs().max()) <= 1e-5


def test_a_dead_worker_stops_the_job_under_torchrun(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = torchrun("die", str(tmp_path), "3", check=False)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 120
    assert "exitcode  : 3" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_survivor_of_a_dead_worker_fails_with_a_clear_error(tmp_path: Path) -> None:
    """Without torchrun's agent to kill it (e.g. the other node of a multi-node job), rank 0 must not hang."""
    env = _env() | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "die", str(tmp_path), "3"],
            env=env | {"RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE,
        )
        for r in (0, 1)
    ]
    t0 = time.monotonic()
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert time.monotonic() - t0 < 120
    assert procs[1].returncode == 3
    assert procs[0].returncode != 0
    assert "DistributedError" in outs[0][1] and "another worker probably died" in outs[0][1]
