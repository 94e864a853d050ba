"""torch.distributed glue used by the engine and the trainer.

Data-parallel training here does not wrap the model in ``DistributedDataParallel``: DDP's reducer
all-reduces every parameter's gradient inside each backward pass, which is both wrong for gradient
methods (they need the *global* per-task gradients before the weights exist) and fragile (several
backward passes per step trip its "mark a variable ready only once" check). Instead every rank runs
the engine on its shard of the global batch and the engine reduces, once per step, exactly what the
method needs (see :mod:`multitask.engine` and docs/distributed.md):

* the per-task losses and labelled-row counts (``2T`` numbers, every method);
* loss-only methods: nothing more than plain DDP: one all-reduce of the weighted gradient;
* gradient methods in "features" mode: the ``T x T`` Gramian of the feature gradients (the shared
  features of different samples are different coordinates, so the global Gramian is the sum of the
  ranks' Gramians), then the weighted gradient;
* gradient methods in "exact" mode: the ``T x P_shared`` Jacobian of the shared parameters (the
  Gramian of a sum is not the sum of Gramians), then only the heads' gradients, since every rank
  already holds the global shared gradient ``wᵀJ``.

:class:`Distributed` wraps a process group and counts the bytes each collective carries.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Distributed", "DistributedError", "env_world_size", "init_from_env"]

_BUCKET_BYTES = 25 * 1024 * 1024  # like DDP's default bucket cap


class DistributedError(RuntimeError):
    """A collective failed: another worker died, timed out, or the ranks disagree about a step."""


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(*, device: str = "cpu", timeout_s: float = 300.0) -> Distributed | None:
    """Join the process group ``torchrun`` describes in the environment; None for a single process.

    The backend is gloo on CPU and nccl on CUDA devices. ``timeout_s`` bounds how long a collective
    waits for a rank that stopped answering before the job fails with :class:`DistributedError`.
    """
    if env_world_size() <= 1 and not dist.is_initialized():
        return None
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=float(timeout_s)))
    return Distributed()


class Distributed:
    """A process group seen by one rank, with byte-counted collectives.

    Attributes:
        rank: this process's rank.
        world_size: number of processes.
        local_rank: rank on this node (``LOCAL_RANK``), used to pick the CUDA device.
        bytes_communicated: payload bytes this rank has put into collectives (a ring all-reduce
            sends about ``2 (R - 1) / R`` times the payload over the wire).
    """

    def __init__(self, group: Any = None) -> None:
        if not dist.is_initialized():
            raise DistributedError(
                "Distributed: torch.distributed is not initialised; launch with `torchrun --nproc-per-node N "
                "-m multitask train ...` or call torch.distributed.init_process_group first"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))
        self.backend = str(dist.get_backend(group))
        self.bytes_communicated = 0
        self.collectives = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """The device of this rank: ``cuda:<local_rank>`` for CUDA requests, else ``requested``."""
        if requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available()):
            return f"cuda:{self.local_rank}"
        return "cpu" if requested == "auto" else requested

    # --- collectives -------------------------------------------------------------------------
    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RuntimeError, dist.DistBackendError) as exc:
            raise DistributedError(
                f"rank {self.rank}/{self.world_size}: {what} failed ({str(exc).splitlines()[0][:200]}); another "
                "worker probably died or timed out, so the whole job stops (see that worker's log; resume from "
                "the last checkpoint with --resume)"
            ) from exc

    def all_reduce(self, tensors: Sequence[Tensor], *, what: str = "all_reduce") -> None:
        """Sum ``tensors`` over the ranks, in place, packed into flat buckets (one collective each)."""
        by_dtype: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault((t.dtype, t.device), []).append(t)
        for group in by_dtype.values():
            bucket: list[Tensor] = []
            size = 0
            for t in group:
                bucket.append(t)
                size += t.numel() * t.element_size()
                if size >= _BUCKET_BYTES:
                    self._reduce_bucket(bucket, what)
                    bucket, size = [], 0
            if bucket:
                self._reduce_bucket(bucket, what)

    def _reduce_bucket(self, bucket: list[Tensor], what: str) -> None:
        flat = torch.cat([t.reshape(-1) for t in bucket]) if len(bucket) > 1 else bucket[0].reshape(-1).clone()
        with self._guard(what):
            dist.all_reduce(flat, group=self.group)
        self.bytes_communicated += flat.numel() * flat.element_size()
        self.collectives += 1
        offset = 0
        for t in bucket:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n

    def all_gather_rows(self, x: Tensor, *, what: str = "all_gather") -> tuple[Tensor, list[int]]:
        """Every rank's ``x`` concatenated along dim 0 in rank order, and each rank's row count.

        Ranks may hold different row counts (the rows are padded for the collective, then trimmed).
        """
        n = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        with self._guard(what):
            dist.all_gather(sizes, n, group=self.group)
        counts = [int(s) for s in sizes]
        longest = max(counts)
        padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        with self._guard(what):
            dist.all_gather(parts, padded, group=self.group)
        self.bytes_communicated += padded.numel() * padded.element_size() + 8
        self.collectives += 2
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]), counts

    def broadcast_object(self, obj: Any, *, src: int = 0, what: str = "broadcast") -> Any:
        """``obj`` of rank ``src`` on every rank (pickled; for small control data and checkpoints)."""
        box = [obj if self.rank == src else None]
        with self._guard(what):
            dist.broadcast_object_list(box, src=src, group=self.group)
        self.bytes_communicated += len(pickle.dumps(obj)) if self.rank == src else 0
        return box[0]

    def broadcast_(self, tensors: Sequence[Tensor], *, src: int = 0, what: str = "broadcast") -> None:
        """Overwrite ``tensors`` on every rank with rank ``src``'s values."""
        with self._guard(what):
            for t in tensors:
                dist.broadcast(t, src=src, group=self.group)

    def barrier(self) -> None:
        with self._guard("barrier"):
            dist.barrier(group=self.group)

    def close(self, *, wait: bool = True) -> None:
        """Leave the process group (after a barrier when ``wait``, so no rank exits while others still talk).

        Destroying the group before the interpreter exits matters: a gloo group left to the interpreter's
        teardown can abort the process ("terminate called without an active exception") after a run
        that succeeded. Pass ``wait=False`` on an error path, where the other ranks may never arrive.
        """
        if not dist.is_initialized():
            return
        try:
            if wait:
                self.barrier()
        finally:
            if self.group is None:
                dist.destroy_process_group()

    # --- data --------------------------------------------------------------------------------
    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` rows (sizes differ by at most one; may be empty)."""
        base, extra = divmod(n, self.world_size)
        lo = self.rank * base + min(self.rank, extra)
        return slice(lo, lo + base + (1 if self.rank < extra else 0))
