"""Choosing groups of tasks that should share a model, from a task-affinity matrix.

Input: a ``T x T`` matrix ``Z`` with ``Z[i, j]`` the affinity of task ``i`` ONTO task ``j`` (how much
training on ``i`` helps ``j``; may be negative; the diagonal is ignored), and a budget: at most ``k``
groups, or a ``cost`` per model (per group), or both. One model is trained per chosen group.

Objectives
----------
``objective="tag"`` (the default) is the network selection of TAG (Fifty, Amid, Zhao, Yu, Anil,
Finn, "Efficiently Identifying Task Groupings for Multi-Task Learning", NeurIPS 2021,
https://arxiv.org/abs/2109.04617, section 3.3), itself the selection step of Standley et al.
("Which Tasks Should Be Learned Together in Multi-task Learning?", ICML 2020,
https://arxiv.org/abs/1905.07553) with affinities in place of measured losses. Choose a set
``𝒢`` of groups (subsets of tasks; groups may overlap, so a task may be trained in several
models) such that every task is in at least one chosen group. The score of task ``j`` in group
``g`` is the mean affinity onto ``j`` from the other members::

    s(j, g) = 1/(|g| - 1) · Σ_{i ∈ g, i ≠ j} Z[i, j]        (|g| ≥ 2)
    s(j, {j}) = singleton                                  (trained alone; default 0.0)

and each task is *served* by the chosen group containing it that gives it the highest score::

    maximize   Σ_j max_{g ∈ 𝒢, j ∈ g} s(j, g) − cost · |𝒢|     subject to |𝒢| ≤ k.

``objective="partition"`` splits the tasks into disjoint groups (each task trained in exactly one
model) and maximizes the within-group affinity, counted both ways (a group of one is worth 0)::

    maximize   Σ_{g ∈ 𝒢} Σ_{i ≠ j ∈ g} Z[i, j] − cost · |𝒢|   subject to 𝒢 a partition, |𝒢| ≤ k.

Solvers
-------
``method="exact"`` is a dynamic program over subsets: ``F_m(S)`` = best value of the tasks ``S``
in at most ``m`` blocks, ``F_m(S) = max_{B ⊆ S, min S ∈ B} w(B) − cost + F_{m−1}(S \\ B)``, which
visits the ``(3^T − 1)/2`` pairs (block, rest) once per layer, vectorized with numpy. For
``partition`` the block weight is ``w(B) = Σ_{i ≠ j ∈ B} Z[i, j]``. For ``tag`` the same program is
exact with ``w(R) = max_{g ⊇ R} Σ_{j ∈ R} s(j, g)``, the best value of serving the tasks ``R``
by one group: the tasks served by each chosen group of an optimal selection form a partition
into at most ``k`` blocks whose value is at most ``Σ_R w(R) − cost · #blocks``; conversely
choosing the maximizing group of each block covers every task and is worth at least that
(``cost ≥ 0``). ``w`` is a maximum over the ``3^T`` pairs ``R ⊆ g``. Exact is proven optimal;
it handles up to :data:`EXACT_MAX_TASKS` tasks (memory and time grow as ``3^T``).

``method="greedy"`` (scalable) starts from agglomerative merging (merge the two groups whose
union gains most, while it gains, or while there are more than ``k`` groups), then runs a
best-improvement local search (``partition``: move a task, swap two tasks, open a group, merge two
groups; ``tag``: add a task to a group, remove it from one, move it, drop a group, merge two
groups, open a group of one or two tasks; every tag step is re-scored exactly before it is taken),
with spectral bisection of a group when no single step gains, then iterated local search: rounds
of random reassignment of a few tasks (or a random split) followed by local search, keeping the
best. Deterministic for a given ``seed``.

``method="spectral"`` starts instead from spectral clustering of the symmetric affinity
``Z + Zᵀ`` (eigenvectors of its largest eigenvalues, rows normalized, k-means++ with ``seed``),
then the same local search. For ``tag`` the spectral partition is the seed of the tag search.

``method="auto"`` is exact up to :data:`AUTO_EXACT_MAX_TASKS` tasks; above, it runs both
``greedy`` and ``spectral`` and keeps the better. Measured times and the heuristics' gaps to the
optimum are in ``docs/relations.md`` (``benchmarks/grouping.py``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from ..registry import UnknownNameError, unknown_name_message

__all__ = [
    "AUTO_EXACT_MAX_TASKS",
    "EXACT_MAX_TASKS",
    "METHODS",
    "OBJECTIVES",
    "Grouping",
    "group_tasks",
    "load_affinity",
    "read_affinity",
    "save_affinity",
    "score_groups",
]

OBJECTIVES: tuple[str, ...] = ("tag", "partition")
METHODS: tuple[str, ...] = ("auto", "exact", "greedy", "spectral")
EXACT_MAX_TASKS = 16
"""Largest ``T`` that ``method="exact"`` accepts (its work and memory grow as ``3^T``)."""
AUTO_EXACT_MAX_TASKS = 15
"""``method="auto"`` is exact up to this many tasks (at most ~1.5 s at ``T = 15`` on one core), heuristic above."""

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

_CHUNK = 1 << 21  # elements per vectorized slice of the subset enumerations


class _Timeout(Exception):
    """The exact solver ran past ``time_limit``."""


# --------------------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True)
class Grouping:
    """Chosen groups of tasks, one model per group.

    Attributes
    ----------
    groups : tuple of tuples of int
        Task indices (rows/columns of the affinity) of each group, sorted; groups sorted.
    served_by : tuple of int
        ``served_by[j]``: index into ``groups`` of the group that serves task ``j`` (its best
        group under ``tag``, its only group under ``partition``).
    task_scores : tuple of float
        ``task_scores[j]``: under ``tag``, the score ``s(j, g)`` of task ``j`` in its serving group;
        under ``partition``, the affinity onto ``j`` from its group, ``Σ_{i ∈ g, i ≠ j} Z[i, j]``.
    score : float
        The objective: ``sum(task_scores) − cost · len(groups)``.
    objective, method : str
        The objective, and the solver that produced the groups (``exact``, ``greedy`` or ``spectral``).
    optimal : bool
        True when the solver proved the groups optimal (``exact`` within its time limit).
    seconds : float
        Wall time of :func:`group_tasks`.
    task_names : tuple of str
        The name of every task (``task0``, ``task1``, ... when none were given).
    k : int or None
        The group budget asked for; ``cost`` the price of one model (0.0 when none was given).
    """

    groups: tuple[tuple[int, ...], ...]
    served_by: tuple[int, ...]
    task_scores: tuple[float, ...]
    score: float
    objective: str
    method: str
    optimal: bool
    seconds: float
    task_names: tuple[str, ...]
    k: int | None = None
    cost: float = 0.0

    @property
    def named_groups(self) -> tuple[tuple[str, ...], ...]:
        """The groups as task names."""
        return tuple(tuple(self.task_names[i] for i in g) for g in self.groups)

    @property
    def assignment(self) -> dict[str, int]:
        """Task name -> index of the group that serves it."""
        return {name: self.served_by[j] for j, name in enumerate(self.task_names)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``multitask group --json`` writes)."""
        return {
            "objective": self.objective,
            "method": self.method,
            "optimal": self.optimal,
            "score": self.score,
            "k": self.k,
            "cost": self.cost,
            "seconds": self.seconds,
            "tasks": list(self.task_names),
            "groups": [list(g) for g in self.named_groups],
            "served_by": {name: self.served_by[j] for j, name in enumerate(self.task_names)},
            "task_scores": {name: self.task_scores[j] for j, name in enumerate(self.task_names)},
        }

    def __str__(self) -> str:
        n = len(self.groups)
        proof = "optimal" if self.optimal else "not proven optimal"
        budget = [f"k={self.k}"] if self.k is not None else []
        if self.cost:
            budget.append(f"cost={self.cost:g} per model")
        lines = [
            f"{n} group{'s' if n != 1 else ''} ({self.objective} objective, {self.method}, {proof}; "
            f"{', '.join(budget) or 'no budget'}): score {self.score:.6g} in {self.seconds:.3f} s"
        ]
        lines += [f"  group {g}: {', '.join(names)}" for g, names in enumerate(self.named_groups)]
        width = max(len("task"), *(len(t) for t in self.task_names))
        lines.append(f"  {'task':<{width}}  served by  score")
        for j, name in enumerate(self.task_names):
            lines.append(f"  {name:<{width}}  {self.served_by[j]:>9}  {self.task_scores[j]:.6g}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# validation


def _check_affinity(affinity: ArrayLike) -> FloatArray:
    """The affinity as float64 with a zero diagonal; errors name the shape or the bad entry."""
    try:
        z = np.array(affinity, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"affinity: could not read it as a matrix of numbers ({exc}); pass a T x T array") from None
    if z.ndim != 2 or z.shape[0] != z.shape[1] or z.shape[0] == 0:
        raise ValueError(
            f"affinity: expected a square T x T matrix (rows = source task i, columns = target task j), "
            f"got shape {z.shape}; pass one matrix, e.g. load_affinity(path)[0]"
        )
    np.fill_diagonal(z, 0.0)  # ignored, may be NaN in files
    bad = np.argwhere(~np.isfinite(z))
    if len(bad):
        i, j = (int(v) for v in bad[0])
        raise ValueError(
            f"affinity: {len(bad)} off-diagonal entries are not finite (first: [{i}, {j}] = {z[i, j]}); "
            "replace them (e.g. with 0.0 for 'no effect') or recompute the affinity"
        )
    return z


def _check_names(task_names: Sequence[str] | None, t: int) -> tuple[str, ...]:
    if task_names is None:
        return tuple(f"task{i}" for i in range(t))
    if isinstance(task_names, str):
        raise ValueError(f"task_names={task_names!r}: give a list of {t} names, one per row/column")
    names = tuple(str(n) for n in task_names)
    if len(names) != t:
        raise ValueError(
            f"task_names: {len(names)} names for a {t} x {t} affinity; give exactly one name per row/column"
        )
    if len(set(names)) != t:
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"task_names: duplicated {dup}; every task needs its own name")
    return names


def _check_choice(kind: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UnknownNameError(unknown_name_message(kind, str(value), choices))
    return value


def _check_budget(k: int | None, cost: float | None, t: int) -> tuple[int, float]:
    """The group limit (``T`` when only a cost is given) and the cost (0.0 when only ``k``)."""
    if k is None and cost is None:
        raise ValueError(
            "give k= (the most groups, i.e. models to train, e.g. k=2) or cost= (the price of one model "
            "in affinity units, e.g. cost=0.1), or both; with neither, every task would pick its own "
            "best group and the grouping would say nothing"
        )
    if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= t):
        raise ValueError(
            f"k={k!r}: give an integer between 1 and the number of tasks ({t}); "
            "k=1 trains one model on all tasks, or use k=None with cost= for a per-model price"
        )
    c = 0.0 if cost is None else float(cost)
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"cost={cost!r}: give a finite cost >= 0 per model (in the units of the affinity)")
    return (t if k is None else int(k)), c


def _tolerance(z: FloatArray) -> float:
    return 1e-10 * max(1.0, float(np.abs(z).max())) * int(z.shape[0])


# --------------------------------------------------------------------------------------------------
# evaluation


def _membership(groups: Sequence[Sequence[int]], t: int) -> BoolArray:
    x = np.zeros((len(groups), t), dtype=bool)
    for g, members in enumerate(groups):
        x[g, list(members)] = True
    return x


def _tag_scores(z: FloatArray, x: BoolArray, c: FloatArray, singleton: float) -> FloatArray:
    """``P[g, j] = s(j, g)`` where ``j ∈ g``, ``-inf`` elsewhere (``c = x @ z``)."""
    n = x.sum(axis=1)
    mean = c / np.maximum(n - 1, 1)[:, None]
    return np.where(x, np.where((n >= 2)[:, None], mean, singleton), -np.inf)


def _evaluate(
    z: FloatArray, groups: Sequence[Sequence[int]], objective: str, cost: float, singleton: float
) -> tuple[float, tuple[int, ...], tuple[float, ...]]:
    """Score, serving group of every task and per-task scores of explicit groups (validated)."""
    t = z.shape[0]
    for g, members in enumerate(groups):
        if len(members) == 0:
            raise ValueError(f"groups: group {g} is empty; every group needs at least one task")
        if len(set(members)) != len(members):
            raise ValueError(f"groups: group {g} lists a task twice: {list(members)}")
        for i in members:
            if not 0 <= int(i) < t:
                raise ValueError(f"groups: task index {i} in group {g} is outside 0..{t - 1}")
    x = _membership(groups, t)
    counts = x.sum(axis=0)
    if (counts == 0).any():
        missing = [int(j) for j in np.flatnonzero(counts == 0)]
        raise ValueError(f"groups: tasks {missing} are in no group; every task must be in a group")
    c = x.astype(np.float64) @ z
    cols = np.arange(t)
    if objective == "partition":
        if (counts > 1).any():
            raise ValueError(
                f"groups: tasks {[int(j) for j in np.flatnonzero(counts > 1)]} are in several groups; "
                "objective='partition' needs disjoint groups (use objective='tag' for overlapping ones)"
            )
        served = x.argmax(axis=0)
        per_task = c[served, cols]
    else:
        p = _tag_scores(z, x, c, singleton)
        served = p.argmax(axis=0)
        per_task = p[served, cols]
    score = float(per_task.sum()) - cost * len(groups)
    return score, tuple(int(s) for s in served), tuple(float(v) for v in per_task)


def _canonical(groups: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Sorted members, sorted groups, duplicates removed."""
    return sorted({tuple(sorted(int(i) for i in g)) for g in groups if len(g)})


def _groups_from_labels(labels: IntArray) -> list[tuple[int, ...]]:
    return _canonical([tuple(np.flatnonzero(labels == g)) for g in np.unique(labels)])


def _groups_from_membership(x: BoolArray) -> list[tuple[int, ...]]:
    return _canonical([tuple(np.flatnonzero(row)) for row in x])


def score_groups(
    affinity: ArrayLike,
    groups: Sequence[Sequence[int | str]],
    *,
    objective: str = "tag",
    cost: float = 0.0,
    singleton: float = 0.0,
    task_names: Sequence[str] | None = None,
) -> float:
    """The objective value of given groups (indices, or names with ``task_names``).

    The same formula :func:`group_tasks` maximizes (see the module docstring); handy to compare a
    hand-made grouping with the chosen one. ``tag`` needs every task in some group, ``partition``
    needs disjoint groups covering every task.
    """
    z = _check_affinity(affinity)
    names = _check_names(task_names, z.shape[0])
    _check_choice("objective", objective, OBJECTIVES)
    index = {n: i for i, n in enumerate(names)}
    resolved: list[list[int]] = []
    for members in groups:
        row = []
        for m in members:
            if isinstance(m, str):
                if m not in index:
                    raise UnknownNameError(unknown_name_message("task", m, names))
                row.append(index[m])
            else:
                row.append(int(m))
        resolved.append(row)
    _, c = _check_budget(None, cost, z.shape[0])
    return _evaluate(z, resolved, objective, c, float(singleton))[0]


# --------------------------------------------------------------------------------------------------
# exact: dynamic program over subsets


def _ternary(width: int) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """All pairs of disjoint bit masks ``(a, b)`` over ``width`` bits (``3^width`` of them).

    The first ``3^w`` pairs are those over the low ``w`` bits, for every ``w <= width``.
    """
    a = np.zeros(1, dtype=np.int32)
    b = np.zeros(1, dtype=np.int32)
    for i in range(width):
        bit = np.int32(1 << i)
        a = np.concatenate([a, a + bit, a])
        b = np.concatenate([b, b, b + bit])
    return a, b


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.perf_counter() > deadline:
        raise _Timeout


def _submasks(mask: int) -> IntArray:
    """Every submask of ``mask`` (including 0 and ``mask``)."""
    bits = [i for i in range(mask.bit_length()) if mask >> i & 1]
    subs = np.zeros(1, dtype=np.int64)
    for i in bits:
        subs = np.concatenate([subs, subs | (1 << i)])
    return subs


def _partition_dp(weight: FloatArray, t: int, k: int, deadline: float | None) -> list[int]:
    """Blocks (bit masks) of a partition of ``t`` tasks into at most ``k`` blocks maximizing Σ weight.

    ``weight[mask]`` is the value of one block (``cost`` already subtracted).
    """
    full = (1 << t) - 1
    ah, bh = _ternary(t - 1)
    layers = [np.full(1 << t, -np.inf)]
    layers[0][0] = 0.0
    for _ in range(k):
        prev = layers[-1]
        f = np.full(1 << t, -np.inf)
        f[0] = 0.0
        for low in range(t):  # blocks whose lowest task is `low`, for sets whose lowest task is `low`
            n = 3 ** (t - 1 - low)
            for s in range(0, n, _CHUNK):
                e = min(n, s + _CHUNK)
                a = (ah[s:e] << (low + 1)) | (1 << low)
                rest = bh[s:e] << (low + 1)
                np.maximum.at(f, a | rest, weight[a] + prev[rest])
            _check_deadline(deadline)
        layers.append(f)
        if np.array_equal(f, prev):  # one more block helps no set: later layers are equal
            break
    blocks = []
    mask, m = full, len(layers) - 1
    while mask:
        low = mask & -mask
        cand = low | _submasks(mask ^ low)
        vals = weight[cand] + layers[m - 1][mask ^ cand]
        best = int(cand[int(np.argmax(vals))])
        blocks.append(best)
        mask ^= best
        m -= 1
    return blocks


def _bits(masks: IntArray, t: int) -> BoolArray:
    return ((masks[:, None] >> np.arange(t)) & 1).astype(bool)


def _subset_tables(z: FloatArray) -> tuple[BoolArray, FloatArray]:
    """Membership of every mask (``2^T x T``) and column sums ``C[mask, j] = Σ_{i ∈ mask} Z[i, j]``."""
    t = z.shape[0]
    c = np.zeros((1 << t, t))
    for b in range(t):
        c[1 << b : 2 << b] = c[: 1 << b] + z[b]
    return _bits(np.arange(1 << t, dtype=np.int64), t), c


def _exact_partition(z: FloatArray, k: int, cost: float, deadline: float | None) -> list[tuple[int, ...]]:
    t = z.shape[0]
    x, c = _subset_tables(z)
    weight = np.where(x, c, 0.0).sum(axis=1) - cost  # Σ_{j ∈ B} Σ_{i ∈ B} Z[i, j]
    blocks = _partition_dp(weight, t, k, deadline)
    return _canonical([tuple(np.flatnonzero(x[b])) for b in blocks])


def _exact_tag(z: FloatArray, k: int, cost: float, singleton: float, deadline: float | None) -> list[tuple[int, ...]]:
    t = z.shape[0]
    x, c = _subset_tables(z)
    p = _tag_scores(z, x, c, singleton)  # s(j, g) for every group g
    sizes = x.sum(axis=1)
    served = np.full(1 << t, -np.inf)  # served[R] = max_{g ⊇ R} Σ_{j ∈ R} s(j, g)
    for size in range(1, t + 1):
        groups = np.flatnonzero(sizes == size)
        pos = np.nonzero(x[groups])[1].reshape(len(groups), size)
        rows = max(1, _CHUNK >> size)
        for s in range(0, len(groups), rows):
            g, q = groups[s : s + rows], pos[s : s + rows]
            vals = p[g[:, None], q]
            sums = np.zeros((len(g), 1 << size))
            subs = np.zeros((len(g), 1 << size), dtype=np.int64)
            for i in range(size):
                sums[:, 1 << i : 2 << i] = sums[:, : 1 << i] + vals[:, i : i + 1]
                subs[:, 1 << i : 2 << i] = subs[:, : 1 << i] | (np.int64(1) << q[:, i : i + 1])
            np.maximum.at(served, subs[:, 1:].ravel(), sums[:, 1:].ravel())
        _check_deadline(deadline)
    served[0] = 0.0
    blocks = _partition_dp(served - cost, t, k, deadline)
    chosen = []
    full = (1 << t) - 1
    for r in blocks:  # the group that serves block r best
        supersets = r | _submasks(full ^ r)
        members = np.flatnonzero(x[r])
        chosen.append(int(supersets[int(np.argmax(p[supersets][:, members].sum(axis=1)))]))
    return _canonical([tuple(np.flatnonzero(x[g])) for g in chosen])


# --------------------------------------------------------------------------------------------------
# scalable: agglomerative start, spectral start, local search


def _relabel(labels: IntArray) -> IntArray:
    """Labels ``0..G-1`` in order of first appearance."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return np.asarray(order[inverse], dtype=np.int64)


def _agglomerate(
    pair_sum: FloatArray, value: Callable[[FloatArray, IntArray], FloatArray], k: int, cost: float, tol: float
) -> IntArray:
    """Merge the two groups with the best gain while it gains or while there are more than ``k``.

    ``pair_sum[a, b]`` is the symmetric affinity between groups ``a`` and ``b`` and its diagonal the
    within-group affinity; ``value(within, sizes)`` the worth of groups with those sums and sizes.
    """
    t = pair_sum.shape[0]
    u = pair_sum.copy()
    labels = np.arange(t, dtype=np.int64)
    ids = np.arange(t)
    sizes = np.ones(t, dtype=np.int64)
    while len(ids) > 1:
        within = np.diag(u).copy()
        merged = within[:, None] + within[None, :] + u
        np.fill_diagonal(merged, 0.0)
        gain = value(merged, sizes[:, None] + sizes[None, :]) - value(within, sizes)[:, None]
        gain = gain - value(within, sizes)[None, :] + cost
        np.fill_diagonal(gain, -np.inf)
        a, b = divmod(int(np.argmax(gain)), len(ids))
        if len(ids) <= k and gain[a, b] <= tol:
            break
        a, b = min(a, b), max(a, b)
        u[a, :] += u[b, :]
        u[:, a] += u[:, b]
        u[a, a] = merged[a, b]
        u = np.delete(np.delete(u, b, axis=0), b, axis=1)
        sizes[a] += sizes[b]
        sizes = np.delete(sizes, b)
        labels[labels == ids[b]] = ids[a]
        ids = np.delete(ids, b)
    return _relabel(labels)


def _partition_value(s: FloatArray, labels: IntArray, cost: float) -> float:
    same = labels[:, None] == labels[None, :]
    return 0.5 * float(np.where(same, s, 0.0).sum()) - cost * (int(labels.max()) + 1)


def _bisection(s: FloatArray, members: IntArray) -> IntArray:
    """One side of the sign split of the top eigenvector of ``s`` on ``members``, centred so that
    the constant vector (no split) is excluded: the relaxation of ``max xᵀ s x``, ``x ∈ {±1}``,
    ``x ≠ ±1``, i.e. of the split with the most negative affinity between its two sides."""
    sub = s[np.ix_(members, members)]
    sub = sub - sub.mean(axis=0)[None, :] - sub.mean(axis=1)[:, None] + sub.mean()
    _, vecs = np.linalg.eigh(sub)
    side = vecs[:, -1] >= 0
    raw = s[np.ix_(members, members)]
    for _ in range(len(members)):  # then single flips while the affinity across the split falls
        x = np.where(side, 1.0, -1.0)
        gain = -x * (raw @ x)  # a quarter of the rise of xᵀ s x (fall of the cross sum) per flip
        i = int(np.argmax(gain))
        if gain[i] <= 1e-12 or (side.sum() if side[i] else (~side).sum()) < 2:
            break
        side[i] = ~side[i]
    return members[side] if 0 < side.sum() < len(members) else members[:0]


def _best_split(s: FloatArray, labels: IntArray, cost: float, tol: float) -> IntArray | None:
    """Tasks to move to a new group: the spectral bisection of some group that gains most, if any."""
    best, gain = None, tol
    for g in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == g)
        if len(members) < 2:
            continue
        part = _bisection(s, members)
        rest = np.setdiff1d(members, part)
        if len(part):
            g_new = -float(s[np.ix_(part, rest)].sum()) - cost
            if g_new > gain:
                best, gain = part, g_new
    return best


def _local_search_partition(
    s: FloatArray, labels: IntArray, k: int, cost: float, tol: float, deadline: float | None
) -> IntArray:
    """Best-improvement moves, swaps, new groups and merges on a partition (``s = Z + Zᵀ``)."""
    t = s.shape[0]
    labels = _relabel(labels)
    rows = np.arange(t)
    for _ in range(20 * t + 100):
        if deadline is not None and time.perf_counter() > deadline:
            break
        g = int(labels.max()) + 1
        onehot = np.zeros((t, g))
        onehot[rows, labels] = 1.0
        m = s @ onehot  # m[t, g] = Σ_{i ∈ g} s[t, i]
        sizes = onehot.sum(axis=0)
        cur = m[rows, labels]
        move = m - cur[:, None] + cost * (sizes[labels] == 1)[:, None]
        move[rows, labels] = -np.inf
        fresh = np.where(sizes[labels] > 1, -cur - cost, -np.inf) if g < k else np.full(t, -np.inf)
        ml = m[:, labels]
        swap = ml - cur[:, None] + ml.T - cur[None, :] - 2 * s
        swap[labels[:, None] == labels[None, :]] = -np.inf
        merge = onehot.T @ m + cost
        merge[np.tril_indices(g)] = -np.inf
        best = [float(move.max()), float(fresh.max()), float(swap.max()), float(merge.max())]
        kind = int(np.argmax(best))
        if best[kind] <= tol:
            split = _best_split(s, labels, cost, tol) if g < k else None
            if split is None:
                break
            labels = labels.copy()
            labels[split] = g
            labels = _relabel(labels)
            continue
        labels = labels.copy()
        if kind == 0:
            i, j = divmod(int(np.argmax(move)), g)
            labels[i] = j
        elif kind == 1:
            labels[int(np.argmax(fresh))] = g
        elif kind == 2:
            i, j = divmod(int(np.argmax(swap)), t)
            labels[i], labels[j] = labels[j], labels[i]
        else:
            a, b = divmod(int(np.argmax(merge)), g)
            labels[labels == b] = a
        labels = _relabel(labels)
    return labels


class _TagState:
    """Overlapping groups as a membership matrix ``x`` (groups x tasks) with ``c = x @ z``."""

    def __init__(self, z: FloatArray, x: BoolArray, singleton: float, cost: float) -> None:
        self.z, self.singleton, self.cost = z, singleton, cost
        self.x = x[x.any(axis=1)]
        self.c = self.x.astype(np.float64) @ z

    def value(self) -> float:
        p = _tag_scores(self.z, self.x, self.c, self.singleton)
        return float(p.max(axis=0).sum()) - self.cost * len(self.x)

    def copy(self) -> _TagState:
        new = object.__new__(_TagState)
        new.z, new.singleton, new.cost = self.z, self.singleton, self.cost
        new.x, new.c = self.x.copy(), self.c.copy()
        return new

    def add(self, task: int, group: int) -> None:
        self.x[group, task] = True
        self.c[group] += self.z[task]

    def remove(self, task: int, group: int) -> None:
        self.x[group, task] = False
        self.c[group] -= self.z[task]

    def drop(self, group: int) -> None:
        self.x = np.delete(self.x, group, axis=0)
        self.c = np.delete(self.c, group, axis=0)

    def open(self, tasks: Sequence[int]) -> None:
        row = np.zeros((1, self.x.shape[1]), dtype=bool)
        row[0, list(tasks)] = True
        self.x = np.vstack([self.x, row])
        self.c = np.vstack([self.c, self.z[list(tasks)].sum(axis=0, keepdims=True)])

    def prune(self) -> None:
        keep = self.x.any(axis=1)
        self.x, self.c = self.x[keep], self.c[keep]


def _top(values: FloatArray, n: int) -> list[tuple[float, int]]:
    flat = values.ravel()
    n = min(n, flat.size)
    idx = np.argpartition(-flat, n - 1)[:n] if n < flat.size else np.arange(flat.size)
    return [(float(flat[i]), int(i)) for i in idx if flat[i] > -np.inf]


def _tag_split(state: _TagState, s: FloatArray, k: int, value: float, tol: float) -> _TagState | None:
    """The best improving spectral bisection of one group into two (``None`` if none gains)."""
    if len(state.x) >= k:
        return None
    best, best_value = None, value + tol
    for g in range(len(state.x)):
        members = np.flatnonzero(state.x[g])
        if len(members) < 4:  # smaller groups: the single-task steps already try every split
            continue
        part = _bisection(s, members)
        if not len(part):
            continue
        trial = state.copy()
        for task in part:
            trial.remove(int(task), g)
        trial.open([int(v) for v in part])
        v = trial.value()
        if v > best_value:
            best, best_value = trial, v
    return best


def _segment_sums(a: FloatArray, starts: IntArray) -> FloatArray:
    """Sums of the row blocks ``a[starts[i]:starts[i + 1]]`` (by differences of a cumulative sum)."""
    cs = np.zeros((a.shape[0] + 1, *a.shape[1:]))
    np.cumsum(a, axis=0, out=cs[1:])
    ends = np.append(starts[1:], a.shape[0])
    sums: FloatArray = cs[ends] - cs[starts]
    return sums


def _tag_step(state: _TagState, kind: str, i: int, gm: IntArray, jm: IntArray) -> _TagState | None:
    """A copy of ``state`` after one local-search step (``None`` if it would leave a task uncovered).

    ``i`` is the flat index into the gain array of that kind; ``gm, jm`` the memberships.
    """
    g, t = state.x.shape
    trial = state.copy()
    if kind == "add":
        task, grp = divmod(i, g)
        trial.add(task, grp)
    elif kind == "remove":
        trial.remove(int(jm[i]), int(gm[i]))
        trial.prune()
    elif kind == "move":
        mi, target = divmod(i, g)
        trial.add(int(jm[mi]), target)
        trial.remove(int(jm[mi]), int(gm[mi]))
        trial.prune()
    elif kind == "drop":
        trial.drop(i)
    elif kind == "merge":
        ga, gb = divmod(i, g)
        for task in np.flatnonzero(trial.x[gb] & ~trial.x[ga]):
            trial.add(int(task), ga)
        trial.drop(gb)
    elif kind == "single":
        trial.open([i])
    else:  # pair
        trial.open(list(divmod(i, t)))
    return trial if trial.x.any(axis=0).all() else None


def _local_search_tag(state: _TagState, k: int, tol: float, deadline: float | None) -> _TagState:
    """Best-improvement add / remove / move / drop / merge / open steps, then spectral splits; each
    step is checked exactly before it is taken."""
    z, singleton, cost = state.z, state.singleton, state.cost
    t = z.shape[0]
    cols = np.arange(t)
    value = state.value()
    s_sym = z + z.T
    zt = np.ascontiguousarray(z.T)  # zt[j] = affinities onto j
    for _ in range(20 * t + 100):
        if deadline is not None and time.perf_counter() > deadline:
            break
        x, c = state.x, state.c
        g = x.shape[0]
        n = x.sum(axis=1)
        p = _tag_scores(z, x, c, singleton)
        arg1 = p.argmax(axis=0)
        best = p[arg1, cols]
        p2 = p.copy()
        p2[arg1, cols] = -np.inf
        second = p2.max(axis=0)
        other = np.where(np.arange(g)[:, None] == arg1[None, :], second[None, :], best[None, :])
        gm, jm = np.nonzero(x)  # memberships (group, task)
        other_m, best_m, c_m = other[gm, jm], best[jm], c[gm, jm]
        starts = np.searchsorted(gm, np.arange(g))  # memberships are sorted by group, no group is empty
        # add task t to group h: the members' new scores, then t's own
        gains = np.maximum(other_m[:, None], (c_m[:, None] + zt[jm]) / n[gm][:, None]) - best_m[:, None]
        members_add = _segment_sums(gains, starts).T  # (tasks, groups)
        add = members_add + np.maximum(best[:, None], (c / n[:, None]).T) - best[:, None]
        add[x.T] = -np.inf
        # remove membership (h, t): the other members' new scores (a group of one disappears)
        size_m = n[gm]
        m1 = np.repeat(np.arange(len(gm)), size_m)  # pairs of memberships of one group
        m2 = np.repeat(starts[gm], size_m) + np.arange(len(m1)) - np.repeat(np.cumsum(size_m) - size_m, size_m)
        nm = size_m[m2]
        left = np.where(nm >= 3, (c_m[m2] - z[jm[m1], jm[m2]]) / np.maximum(nm - 2, 1), singleton)
        terms = np.where(m1 != m2, np.maximum(other_m[m2], left) - best_m[m2], 0.0)
        members_rem = np.bincount(m1, weights=terms, minlength=len(gm)) + np.where(size_m == 1, cost, 0.0)
        remove = members_rem + other_m - best_m
        # move membership (h, t) to group h2
        own_move = np.maximum(other_m[:, None], (c[:, jm] / n[:, None]).T) - best_m[:, None]
        move = members_rem[:, None] + members_add[jm, :] + own_move
        move[x[:, jm].T] = -np.inf
        drop = np.where(x, other - best[None, :], 0.0).sum(axis=1) + cost
        # merge groups a and b (estimated as if disjoint): their members' scores in the union
        union = (c_m[:, None] + c[:, jm].T) / (n[gm][:, None] + n[None, :] - 1)
        half = _segment_sums(np.maximum(other_m[:, None], union) - best_m[:, None], starts)
        merge = half + half.T + cost
        merge[np.tril_indices(g)] = -np.inf
        if g < k:
            single = np.maximum(best, singleton) - best - cost
            gain = np.maximum(best[:, None], z.T) - best[:, None]
            pair = gain + gain.T - cost
            np.fill_diagonal(pair, -np.inf)
        else:
            single, pair = np.full(t, -np.inf), np.full((1, 1), -np.inf)
        kinds = {"add": add, "remove": remove, "move": move, "drop": drop, "merge": merge, "single": single}
        kinds["pair"] = pair
        # the best step of each kind first; the next few of each only if none of those checks out
        first = sorted(((float(v.max()), kind, int(np.argmax(v))) for kind, v in kinds.items()), key=lambda e: -e[0])
        improved = False
        for tier in range(2):
            if tier == 1:
                if improved or first[0][0] <= tol:
                    break
                seen = {(kind, i) for _, kind, i in first}
                more = [(d, kind, i) for kind, v in kinds.items() for d, i in _top(v, 4) if (kind, i) not in seen]
                steps = sorted(more, key=lambda e: -e[0])[:6]
            else:
                steps = first
            for delta, kind, i in steps:
                if delta <= tol:
                    break
                trial = _tag_step(state, kind, i, gm, jm)
                if trial is None:
                    continue
                new_value = trial.value()
                if new_value > value + tol:
                    state, value, improved = trial, new_value, True
                    break
        if not improved:  # no single step gains: spectral bisections of the groups
            split = _tag_split(state, s_sym, k, value, tol)
            if split is None:
                break
            state, value = split, split.value()
    return state


def _kmeans(points: FloatArray, n_clusters: int, rng: np.random.Generator, n_init: int = 4) -> IntArray:
    """Lloyd's k-means with k-means++ seeding; the best of ``n_init`` runs."""
    n = len(points)
    sq = (points**2).sum(axis=1)
    best_labels, best_inertia = np.zeros(n, dtype=np.int64), np.inf
    for _ in range(n_init):
        picks = [int(rng.integers(n))]
        d2 = np.maximum(sq - 2 * points @ points[picks[0]] + sq[picks[0]], 0.0)
        for _ in range(1, n_clusters):
            total = float(d2.sum())
            pick = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
            picks.append(pick)
            d2 = np.minimum(d2, np.maximum(sq - 2 * points @ points[pick] + sq[pick], 0.0))
        centers = points[picks].copy()
        labels = np.full(n, -1, dtype=np.int64)
        for _ in range(100):
            dist = sq[:, None] - 2 * points @ centers.T + (centers**2).sum(axis=1)[None, :]
            new = dist.argmin(axis=1).astype(np.int64)
            if np.array_equal(new, labels):
                break
            labels = new
            for j in range(n_clusters):
                if (labels == j).any():
                    centers[j] = points[labels == j].mean(axis=0)
        inertia = float(((points - centers[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return _relabel(best_labels)


def _spectral_labels(s: FloatArray, n_clusters: int, rng: np.random.Generator) -> IntArray:
    t = s.shape[0]
    if n_clusters <= 1:
        return np.zeros(t, dtype=np.int64)
    _, vecs = np.linalg.eigh(s)
    emb = vecs[:, -n_clusters:]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return _kmeans(emb, n_clusters, rng)


def _cluster_counts(t: int, k: int, given: bool) -> list[int]:
    """Numbers of spectral clusters to try: ``k`` when it was given, else 1, 2, 3, 4, 6, 9, ...
    (x1.5) up to ``min(T, 2 sqrt(T) + 2)`` (the local search then opens or merges groups)."""
    if given:
        return [k]
    counts, c = [], 1.0
    while round(c) <= min(k, t, 2 * math.sqrt(t) + 2):
        counts.append(round(c))
        c = max(c + 1, c * 1.5)
    return sorted(set(counts))


def _spectral_starts(
    s: FloatArray, counts: list[int], rng: np.random.Generator, value: Callable[[IntArray], float], keep: int = 2
) -> list[IntArray]:
    """Spectral partitions for each number of clusters; the ``keep`` best by ``value``."""
    labels = [_spectral_labels(s, n, rng) for n in counts]
    order = np.argsort([-value(lab) for lab in labels], kind="stable")
    return [labels[i] for i in order[:keep]]


def _perturbation_size(t: int) -> int:
    """At most this many tasks are reassigned per perturbation: 15% of them, between 2 and 12."""
    return max(2, min(12, math.ceil(0.15 * t)))


def _perturb(labels: IntArray, k: int, rng: np.random.Generator) -> IntArray:
    """Reassign a few random tasks to random groups, or split a random group in two."""
    t = len(labels)
    g = int(labels.max()) + 1
    new = labels.copy()
    if g < k and rng.random() < 0.3:
        members = np.flatnonzero(labels == int(rng.integers(g)))
        if len(members) >= 2:
            half = rng.permutation(members)[: len(members) // 2]
            new[half] = g
            return _relabel(new)
    r = int(rng.integers(1, _perturbation_size(t) + 1))
    chosen = rng.choice(t, size=min(r, t), replace=False)
    new[chosen] = rng.integers(0, min(g + 1, k), size=len(chosen))
    return _relabel(new)


def _perturb_tag(state: _TagState, k: int, rng: np.random.Generator) -> _TagState:
    """Move a few random tasks out of all their groups into a random one (the other overlaps
    stay), or split a random group in two."""
    x = state.x.copy()
    g, t = x.shape
    if g < k and rng.random() < 0.3:
        members = np.flatnonzero(x[int(rng.integers(g))])
        if len(members) >= 2:
            half = rng.permutation(members)[: len(members) // 2]
            row = np.zeros((1, t), dtype=bool)
            row[0, half] = True
            x[:, half] = False
            return _TagState(state.z, np.vstack([x, row]), state.singleton, state.cost)
    r = int(rng.integers(1, _perturbation_size(t) + 1))
    x = np.vstack([x, np.zeros((1, t), dtype=bool)]) if g < k else x
    for task in rng.choice(t, size=min(r, t), replace=False):
        x[:, task] = False
        x[int(rng.integers(len(x))), task] = True
    return _TagState(state.z, x, state.singleton, state.cost)


_PATIENCE = 100  # iterated local search stops after this many rounds without a better result


def _rounds(t: int) -> int:
    """Iterated-local-search rounds after the first local search (fewer for large ``T``)."""
    return max(5, min(150, 6000 // t))


def _search_partition(
    z: FloatArray, k: int, k_given: bool, cost: float, start: str, seed: int, deadline: float | None, rounds: int
) -> list[tuple[int, ...]]:
    s = z + z.T
    tol = _tolerance(z)
    rng = np.random.default_rng(seed)

    def value(labels: IntArray) -> float:
        return _partition_value(s, labels, cost)

    if start == "spectral":
        starts = _spectral_starts(s, _cluster_counts(z.shape[0], k, k_given), rng, value)
    else:
        starts = [_agglomerate(s, lambda w, n: w, k, cost, tol)]
    found = [_local_search_partition(s, lab, k, cost, tol, deadline) for lab in starts]
    values = [value(lab) for lab in found]
    best, best_value = found[int(np.argmax(values))], max(values)
    current, current_value = best, best_value
    stale = 0
    for _ in range(rounds):
        if (deadline is not None and time.perf_counter() > deadline) or stale >= _PATIENCE:
            break
        stale += 1
        cand = _local_search_partition(s, _perturb(current, k, rng), k, cost, tol, deadline)
        cand_value = value(cand)
        if cand_value >= current_value - tol:  # sideways steps let the search walk along plateaus
            current, current_value = cand, cand_value
        if cand_value > best_value + tol:
            best, best_value, stale = cand, cand_value, 0
    return _groups_from_labels(best)


def _search_tag(
    z: FloatArray,
    k: int,
    k_given: bool,
    cost: float,
    singleton: float,
    start: str,
    seed: int,
    deadline: float | None,
    rounds: int,
) -> list[tuple[int, ...]]:
    t = z.shape[0]
    tol = _tolerance(z)
    rng = np.random.default_rng(seed)

    def disjoint_value(within: FloatArray, sizes: IntArray) -> FloatArray:
        return np.where(sizes >= 2, within / np.maximum(sizes - 1, 1), singleton * sizes)

    def from_labels(labels: IntArray) -> _TagState:
        x = np.zeros((int(labels.max()) + 1, t), dtype=bool)
        x[labels, np.arange(t)] = True
        return _TagState(z, x, singleton, cost)

    if start == "spectral":
        counts = _cluster_counts(t, k, k_given)
        starts = _spectral_starts(z + z.T, counts, rng, lambda lab: from_labels(lab).value())
    else:
        # disjoint groups are worth Σ_{i ≠ j ∈ g} Z[i, j] / (|g| − 1) each: agglomerate on that
        starts = [_agglomerate(z + z.T, disjoint_value, k, cost, tol)]
    found = [_local_search_tag(from_labels(lab), k, tol, deadline) for lab in starts]
    values = [f.value() for f in found]
    best, best_value = found[int(np.argmax(values))], max(values)
    current, current_value = best, best_value
    stale = 0
    for _ in range(rounds):
        if (deadline is not None and time.perf_counter() > deadline) or stale >= _PATIENCE:
            break
        stale += 1
        cand = _local_search_tag(_perturb_tag(current, k, rng), k, tol, deadline)
        cand_value = cand.value()
        if cand_value >= current_value - tol:  # sideways steps let the search walk along plateaus
            current, current_value = cand, cand_value
        if cand_value > best_value + tol:
            best, best_value, stale = cand, cand_value, 0
    return _groups_from_membership(best.x)


# --------------------------------------------------------------------------------------------------
# public entry point


def group_tasks(
    affinity: ArrayLike,
    *,
    k: int | None = None,
    cost: float | None = None,
    objective: str = "tag",
    method: str = "auto",
    task_names: Sequence[str] | None = None,
    singleton: float = 0.0,
    seed: int = 0,
    time_limit: float | None = None,
) -> Grouping:
    """Choose groups of tasks, one model per group, maximizing the total affinity.

    Parameters
    ----------
    affinity : array-like of shape (T, T)
        ``affinity[i, j]``: how much training on task ``i`` helps task ``j`` (rows = source,
        columns = target); any sign; the diagonal is ignored (it may be NaN).
    k : int, optional
        At most this many groups (models), ``1 <= k <= T``.
    cost : float, optional
        Price of one model, subtracted once per group (``>= 0``, in the units of the affinity).
        Give ``k``, ``cost`` or both; with only ``cost`` there is no limit on the number of groups.
    objective : {"tag", "partition"}
        ``tag``: TAG's network selection, overlapping groups, each task served by its best group
        (Fifty et al., NeurIPS 2021). ``partition``: disjoint groups, within-group affinity.
        Formulas in the module docstring and ``docs/relations.md``.
    method : {"auto", "exact", "greedy", "spectral"}
        ``exact``: dynamic program over subsets, proven optimal, ``T <= EXACT_MAX_TASKS``.
        ``greedy``: agglomerative merging + local search (scales to hundreds of tasks).
        ``spectral``: spectral clustering of ``Z + Zᵀ`` + the same local search.
        ``auto``: exact for ``T <= AUTO_EXACT_MAX_TASKS``; above, greedy and spectral, the better.
    task_names : sequence of str, optional
        One name per row/column, used in the result.
    singleton : float
        Score of a task trained alone (``tag`` only; ``partition`` groups of one are worth 0).
    seed : int
        Seed of the random restarts and of k-means (the result is deterministic for a seed).
    time_limit : float, optional
        Seconds. The local search stops at the limit and returns the best groups found; an exact
        solve that runs past it returns the greedy groups instead, with ``optimal=False``.

    Returns
    -------
    Grouping
        The groups, which group serves each task, the score and whether it is proven optimal.
    """
    start = time.perf_counter()
    z = _check_affinity(affinity)
    t = z.shape[0]
    names = _check_names(task_names, t)
    _check_choice("objective", objective, OBJECTIVES)
    _check_choice("method", method, METHODS)
    k_max, c = _check_budget(k, cost, t)
    singleton = float(singleton)
    if not math.isfinite(singleton):
        raise ValueError(f"singleton={singleton!r}: give a finite score for a task trained alone (default 0.0)")
    if objective == "partition" and singleton != 0.0:
        raise ValueError(
            f"singleton={singleton!r}: only objective='tag' scores a task trained alone; "
            "a partition's group of one is worth 0 (drop singleton or use objective='tag')"
        )
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise ValueError(f"time_limit={time_limit!r}: give a number of seconds > 0, or None for no limit")
    if method == "exact" and t > EXACT_MAX_TASKS:
        raise ValueError(
            f"method='exact': {t} tasks is more than the exact solver's limit of {EXACT_MAX_TASKS} "
            f"(its time and memory grow as 3^T); use method='greedy' (or 'auto')"
        )
    deadline = None if time_limit is None else start + float(time_limit)
    with threadpool_limits(limits=1, user_api="blas"):  # small matrices: threads only contend
        groups, solver, optimal = _solve(z, objective, method, k_max, k is not None, c, singleton, seed, deadline)
    score, served, per_task = _evaluate(z, groups, objective, c, singleton)
    return Grouping(
        groups=tuple(groups),
        served_by=served,
        task_scores=per_task,
        score=score,
        objective=objective,
        method=solver,
        optimal=optimal,
        seconds=time.perf_counter() - start,
        task_names=names,
        k=None if k is None else int(k),
        cost=c,
    )


def _solve(
    z: FloatArray,
    objective: str,
    method: str,
    k: int,
    k_given: bool,
    cost: float,
    singleton: float,
    seed: int,
    deadline: float | None,
) -> tuple[list[tuple[int, ...]], str, bool]:
    """Groups, the solver that found them, and whether they are proven optimal."""
    t = z.shape[0]
    if t == 1:
        return [(0,)], "exact", True
    if method == "exact" or (method == "auto" and t <= AUTO_EXACT_MAX_TASKS):
        try:
            if objective == "partition":
                return _exact_partition(z, k, cost, deadline), "exact", True
            return _exact_tag(z, k, cost, singleton, deadline), "exact", True
        except _Timeout:
            return _search(z, objective, k, k_given, cost, singleton, "agglomerative", seed, None, 0), "greedy", False
    rounds = _rounds(t)
    if method != "auto":
        start = "spectral" if method == "spectral" else "agglomerative"
        return _search(z, objective, k, k_given, cost, singleton, start, seed, deadline, rounds), method, False
    # auto above the exact limit: both starting points, the better result
    found = []
    for start, name in (("agglomerative", "greedy"), ("spectral", "spectral")):
        groups = _search(z, objective, k, k_given, cost, singleton, start, seed, deadline, rounds)
        found.append((_evaluate(z, groups, objective, cost, singleton)[0], groups, name))
    _, groups, name = max(found, key=lambda f: f[0])  # ties: greedy, listed first
    return groups, name, False


def _search(
    z: FloatArray,
    objective: str,
    k: int,
    k_given: bool,
    cost: float,
    singleton: float,
    start: str,
    seed: int,
    deadline: float | None,
    rounds: int,
) -> list[tuple[int, ...]]:
    if objective == "partition":
        return _search_partition(z, k, k_given, cost, start, seed, deadline, rounds)
    return _search_tag(z, k, k_given, cost, singleton, start, seed, deadline, rounds)


# --------------------------------------------------------------------------------------------------
# files


def _to_float(value: Any, where: str) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None


def load_affinity(path: str | os.PathLike[str], *, matrix: str | None = None) -> tuple[FloatArray, list[str]]:
    """Read an affinity file: ``(Z, task_names)`` with ``Z[i, j]`` the affinity of task i onto task j.

    - ``.json``: ``{"tasks": [...], "matrices": {"tag": [[...], ...], "first_order": ..., ...}}``
      (other keys ignored); ``matrix`` picks one, by default ``"tag"`` if present, else the first.
      ``null`` entries (e.g. on the diagonal) read as NaN.
    - ``.csv``: header ``source,<task1>,<task2>,...`` then one row per source task
      ``<task_i>,<Z[i,0]>,...``; rows and columns must list the tasks in the same order.
    """
    z, names, _ = read_affinity(path, matrix=matrix)
    return z, names


def read_affinity(
    path: str | os.PathLike[str], *, matrix: str | None = None
) -> tuple[FloatArray, list[str], str | None]:
    """:func:`load_affinity` plus the name of the matrix read (``None`` for CSV)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"affinity file {str(p)!r} not found")
    suffix = p.suffix.lower()
    if suffix == ".json":
        return _load_json(p, matrix)
    if suffix == ".csv":
        if matrix is not None:
            raise ValueError(f"matrix={matrix!r}: a CSV affinity file holds one matrix; drop the matrix name")
        return (*_load_csv(p), None)
    raise ValueError(f"affinity file {str(p)!r}: unknown type {suffix or '(none)'!r}; give a .json or .csv file")


def _load_json(p: Path, matrix: str | None) -> tuple[FloatArray, list[str], str]:
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "tasks" not in data or "matrices" not in data:
        raise ValueError(f'{p}: expected an object {{"tasks": [...], "matrices": {{"tag": [[...]], ...}}}}')
    tasks, matrices = data["tasks"], data["matrices"]
    if not isinstance(tasks, list) or not all(isinstance(n, str) for n in tasks):
        raise ValueError(f'{p}: "tasks" must be a list of task names')
    if not isinstance(matrices, dict) or not matrices:
        raise ValueError(f'{p}: "matrices" must map a name to a T x T matrix, e.g. {{"tag": [[...]]}}')
    name = matrix if matrix is not None else ("tag" if "tag" in matrices else next(iter(matrices)))
    if name not in matrices:
        raise UnknownNameError(unknown_name_message(f"matrix in {p.name}:", name, list(matrices)))
    rows = matrices[name]
    t = len(tasks)
    if not isinstance(rows, list) or len(rows) != t or any(not isinstance(r, list) or len(r) != t for r in rows):
        raise ValueError(f'{p}: matrix {name!r} must be {t} x {t} (one row and one column per task in "tasks")')
    z = np.array(
        [[_to_float(v, f"{p}: matrix {name!r} [{i}, {j}]") for j, v in enumerate(r)] for i, r in enumerate(rows)]
    )
    return z.reshape(t, t), list(tasks), name


def _load_csv(p: Path) -> tuple[FloatArray, list[str]]:
    with p.open(newline="") as fh:
        rows = [[cell.strip() for cell in row] for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    if not rows or rows[0][0].lower() != "source":
        raise ValueError(f"{p}: the first row must be the header source,<task1>,<task2>,...")
    tasks = rows[0][1:]
    body = rows[1:]
    if len(body) != len(tasks):
        raise ValueError(f"{p}: {len(tasks)} task columns but {len(body)} rows; give one row per source task")
    for i, row in enumerate(body):
        if len(row) != len(tasks) + 1:
            raise ValueError(f"{p}: row {i + 2} has {len(row) - 1} values, expected {len(tasks)}")
        if row[0] != tasks[i]:
            raise ValueError(
                f"{p}: row {i + 2} is task {row[0]!r} but column {i + 1} is {tasks[i]!r}; "
                "rows (sources) and columns (targets) must list the tasks in the same order"
            )
    z = np.array(
        [[_to_float(v, f"{p}: row {i + 2} column {j + 2}") for j, v in enumerate(r[1:])] for i, r in enumerate(body)]
    )
    return z.reshape(len(tasks), len(tasks)), tasks


def save_affinity(
    path: str | os.PathLike[str], affinity: ArrayLike | Mapping[str, ArrayLike], task_names: Sequence[str]
) -> None:
    """Write affinities in the format :func:`load_affinity` reads (``.json`` or ``.csv``).

    ``affinity`` is one ``T x T`` matrix (saved as ``"tag"`` in JSON) or a mapping name -> matrix
    (JSON only). Non-finite entries are written as ``null`` (JSON) or ``nan`` (CSV).
    """
    p = Path(path)
    names = list(_check_names(list(task_names), len(task_names)))
    mats = dict(affinity) if isinstance(affinity, Mapping) else {"tag": affinity}
    arrays = {}
    for key, value in mats.items():
        a = np.asarray(value, dtype=np.float64)
        if a.shape != (len(names), len(names)):
            raise ValueError(f"affinity {key!r}: shape {a.shape} does not match {len(names)} task names")
        arrays[key] = a
    suffix = p.suffix.lower()
    if suffix == ".json":
        payload = {
            "tasks": names,
            "matrices": {
                key: [[float(v) if math.isfinite(v) else None for v in row] for row in a.tolist()]
                for key, a in arrays.items()
            },
        }
        p.write_text(json.dumps(payload, indent=1))
    elif suffix == ".csv":
        if len(arrays) != 1:
            raise ValueError(f"{p}: a CSV file holds one matrix, got {len(arrays)} ({', '.join(arrays)}); use .json")
        (a,) = arrays.values()
        with p.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["source", *names])
            for name, row in zip(names, a.tolist(), strict=True):
                w.writerow([name, *(repr(float(v)) for v in row)])
    else:
        raise ValueError(f"affinity file {str(p)!r}: unknown type {suffix or '(none)'!r}; give a .json or .csv file")
