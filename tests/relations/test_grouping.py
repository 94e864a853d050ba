"""Task grouping (``multitask.relations.grouping``): exact against brute force, heuristics valid and
close, planted groups recovered by every method, files, the ``multitask group`` command.

Brute-force bounds: ``partition`` enumerates every set partition (restricted growth strings) with at
most ``k`` blocks, up to T = 10 (Bell(10) = 115,975 partitions, vectorized); ``tag`` enumerates every
combination of at most ``k`` of the ``2^T - 1`` candidate groups, up to T = 7 with k <= 3 (C(127, 3)
= 333,375 triples).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multitask.cli import main
from multitask.registry import UnknownNameError
from multitask.relations import Grouping, group_tasks, load_affinity, save_affinity, score_groups
from multitask.relations.grouping import AUTO_EXACT_MAX_TASKS, EXACT_MAX_TASKS

TOL = 1e-9


# ---------------------------------------------------------------------------------------------
# brute force


def _set_partitions(t: int, k: int) -> np.ndarray:
    """Every partition of ``t`` tasks into at most ``k`` blocks, as restricted growth strings."""
    rgs = np.zeros((1, 1), dtype=np.int64)
    for _ in range(1, t):
        reps = np.minimum(rgs.max(axis=1) + 2, k)
        base = np.repeat(rgs, reps, axis=0)
        new = np.concatenate([np.arange(r) for r in reps])
        rgs = np.hstack([base, new[:, None]])
    return rgs


def brute_partition(z: np.ndarray, k: int, cost: float = 0.0) -> float:
    zd = z.copy()
    np.fill_diagonal(zd, 0.0)
    rgs = _set_partitions(len(z), k)
    same = rgs[:, :, None] == rgs[:, None, :]
    values = (same * zd).sum(axis=(1, 2)) - cost * (rgs.max(axis=1) + 1)
    return float(values.max())


def brute_tag(z: np.ndarray, k: int, cost: float = 0.0, singleton: float = 0.0) -> float:
    t = len(z)
    zd = z.copy()
    np.fill_diagonal(zd, 0.0)
    x = ((np.arange(1, 2**t)[:, None] >> np.arange(t)) & 1).astype(bool)
    n = x.sum(axis=1)
    mean = (x @ zd) / np.maximum(n - 1, 1)[:, None]
    p = np.where(x, np.where((n >= 2)[:, None], mean, singleton), -np.inf)
    best = -np.inf
    for m in range(1, k + 1):
        combos = np.array(list(itertools.combinations(range(len(x)), m)))
        served = p[combos].max(axis=1)  # -inf where a task is in none of the m groups
        best = max(best, float((served.sum(axis=1) - cost * m).max()))
    return best


def test_brute_force_counts() -> None:
    assert len(_set_partitions(10, 10)) == 115_975  # Bell(10)
    assert len(_set_partitions(6, 2)) == 2**5  # S(6,1) + S(6,2) = 1 + 31


def _random(t: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(t, t))


# ---------------------------------------------------------------------------------------------
# exact = brute force


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t", [3, 6, 8, 10])
def test_exact_partition_matches_brute_force(t: int, seed: int) -> None:
    z = _random(t, 100 * t + seed)
    for k in (1, 2, 3):
        g = group_tasks(z, k=k, objective="partition", method="exact")
        assert g.optimal and g.method == "exact" and len(g.groups) <= k
        assert g.score == pytest.approx(brute_partition(z, k), abs=TOL)
    g = group_tasks(z, cost=0.7, objective="partition", method="exact")
    assert g.score == pytest.approx(brute_partition(z, t, cost=0.7), abs=TOL)
    g = group_tasks(z, k=2, cost=0.3, objective="partition", method="exact")
    assert g.score == pytest.approx(brute_partition(z, 2, cost=0.3), abs=TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t", [3, 5, 6])
def test_exact_tag_matches_brute_force(t: int, seed: int) -> None:
    z = _random(t, 100 * t + seed)
    for k in (1, 2, 3):
        g = group_tasks(z, k=k, method="exact")
        assert g.optimal and len(g.groups) <= k
        assert g.score == pytest.approx(brute_tag(z, k), abs=TOL)
    g = group_tasks(z, k=3, cost=0.4, method="exact")
    assert g.score == pytest.approx(brute_tag(z, 3, cost=0.4), abs=TOL)
    g = group_tasks(z, k=2, singleton=0.5, method="exact")
    assert g.score == pytest.approx(brute_tag(z, 2, singleton=0.5), abs=TOL)


def test_exact_tag_matches_brute_force_seven_tasks() -> None:
    z = _random(7, 7)
    for k in (2, 3):
        assert group_tasks(z, k=k, method="exact").score == pytest.approx(brute_tag(z, k), abs=TOL)
    assert group_tasks(z, k=3, cost=0.2, method="exact").score == pytest.approx(brute_tag(z, 3, 0.2), abs=TOL)


def test_k_one_is_one_group_of_all_tasks() -> None:
    z = _random(6, 3)
    for objective in ("tag", "partition"):
        for method in ("exact", "greedy", "spectral"):
            g = group_tasks(z, k=1, objective=objective, method=method)
            assert g.groups == ((0, 1, 2, 3, 4, 5),), (objective, method)


def test_cost_only_can_keep_every_task_alone() -> None:
    z = -np.abs(_random(5, 4))  # every task hurts every other
    for objective in ("tag", "partition"):
        g = group_tasks(z, cost=0.0, objective=objective)
        assert g.groups == tuple((i,) for i in range(5)) and g.score == 0.0


# ---------------------------------------------------------------------------------------------
# heuristics: valid, scored as reported, never above exact


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    t=st.integers(2, 8),
    k=st.integers(1, 4),
    with_cost=st.booleans(),
    objective=st.sampled_from(["tag", "partition"]),
    method=st.sampled_from(["greedy", "spectral"]),
)
def test_heuristics_are_valid_and_below_exact(
    seed: int, t: int, k: int, with_cost: bool, objective: str, method: str
) -> None:
    z = _random(t, seed)
    k = min(k, t)
    cost = 0.3 if with_cost else None
    g = group_tasks(z, k=k, cost=cost, objective=objective, method=method, seed=seed)
    exact = group_tasks(z, k=k, cost=cost, objective=objective, method="exact")
    assert not g.optimal and g.method == method and len(g.groups) <= k
    members = [j for group in g.groups for j in group]
    assert set(members) == set(range(t))  # a cover
    if objective == "partition":
        assert len(members) == t  # disjoint
    for j in range(t):
        assert j in g.groups[g.served_by[j]]
    assert g.score == score_groups(z, g.groups, objective=objective, cost=cost or 0.0)
    assert g.score == pytest.approx(sum(g.task_scores) - (cost or 0.0) * len(g.groups))
    assert exact.score == score_groups(z, exact.groups, objective=objective, cost=cost or 0.0)
    assert g.score <= exact.score + TOL


def test_heuristics_near_exact_at_twelve_tasks() -> None:
    gaps = []
    for seed in range(3):
        z = _random(12, seed)
        for objective in ("tag", "partition"):
            exact = group_tasks(z, k=3, objective=objective, method="exact")
            for method in ("greedy", "spectral"):
                g = group_tasks(z, k=3, objective=objective, method=method)
                assert g.score <= exact.score + TOL
                gaps.append((exact.score - g.score) / abs(exact.score))
    assert max(gaps) < 0.15 and np.mean(gaps) < 0.03, gaps


def test_deterministic_for_a_seed() -> None:
    z = _random(20, 5)
    for objective in ("tag", "partition"):
        for method in ("greedy", "spectral"):
            a = group_tasks(z, k=4, objective=objective, method=method, seed=3)
            b = group_tasks(z, k=4, objective=objective, method=method, seed=3)
            assert (a.groups, a.score) == (b.groups, b.score)


def _two_blocks(t: int, seed: int = 0, noise: float = 0.02) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    """Tasks 0, 2, 4, ... help each other, as do 1, 3, 5, ...; across the blocks they hurt."""
    rng = np.random.default_rng(seed)
    block = np.arange(t) % 2
    z = np.where(block[:, None] == block[None, :], 1.0, -1.0) + noise * rng.uniform(-1, 1, (t, t))
    return z, (tuple(range(0, t, 2)), tuple(range(1, t, 2)))


@pytest.mark.parametrize("t", [8, 24])
def test_planted_blocks_recovered_by_every_method(t: int) -> None:
    # tag scores are means, so with many groups allowed and a small cost the best helpers of each
    # task would form subgroups; a model cost of 1 (the within-block affinity) rules that out
    z, truth = _two_blocks(t)
    methods = ["auto", "greedy", "spectral"] + (["exact"] if t <= EXACT_MAX_TASKS else [])
    for objective in ("tag", "partition"):
        for method in methods:
            for budget in ({"k": 2}, {"k": 5, "cost": 1.0}, {"cost": 1.0}):
                g = group_tasks(z, objective=objective, method=method, **budget)
                assert g.groups == truth, (objective, method, budget, g.groups)


def test_scalable_solver_on_one_hundred_tasks() -> None:
    z, truth = _two_blocks(100, seed=1, noise=0.0)
    z += np.random.default_rng(1).normal(scale=0.5, size=z.shape)
    for objective in ("tag", "partition"):
        start = time.perf_counter()
        g = group_tasks(z, k=4, objective=objective)  # auto: above the exact limit
        seconds = time.perf_counter() - start
        print(f"T=100 {objective} auto: {seconds:.2f} s, {len(g.groups)} groups, score {g.score:.3f}")
        assert g.method in ("greedy", "spectral") and not g.optimal
        assert seconds < 20, seconds  # < 10 s on one idle core; generous under load
        assert g.score >= score_groups(z, truth, objective=objective) - TOL


def test_auto_switches_at_the_documented_size() -> None:
    z = _random(AUTO_EXACT_MAX_TASKS + 1, 0)
    assert group_tasks(z[:8, :8], k=2).method == "exact"
    assert group_tasks(z, k=2, objective="partition").method in ("greedy", "spectral")


def test_time_limit_falls_back_to_greedy() -> None:
    z = _random(14, 0)
    g = group_tasks(z, k=3, method="exact", time_limit=1e-9)
    assert g.method == "greedy" and not g.optimal
    assert g.score == score_groups(z, g.groups)
    g = group_tasks(_random(60, 0), k=3, method="greedy", time_limit=0.05)
    assert g.seconds < 5 and set().union(*g.groups) == set(range(60))


# ---------------------------------------------------------------------------------------------
# result object, scoring helper, errors


def test_result_object() -> None:
    z, _ = _two_blocks(6)
    names = ["a", "b", "c", "d", "e", "f"]
    g = group_tasks(z, k=2, task_names=names)
    assert isinstance(g, Grouping)
    assert g.named_groups == (("a", "c", "e"), ("b", "d", "f"))
    assert g.assignment == {"a": 0, "b": 1, "c": 0, "d": 1, "e": 0, "f": 1}
    with pytest.raises(AttributeError):
        g.score = 0.0  # type: ignore[misc]
    text = str(g)
    assert "2 groups" in text and "optimal" in text and "group 0: a, c, e" in text
    d = g.to_dict()
    assert d["groups"] == [["a", "c", "e"], ["b", "d", "f"]] and d["served_by"]["d"] == 1
    json.dumps(d)
    assert score_groups(z, [["a", "c", "e"], ["b", "d", "f"]], task_names=names) == g.score
    default = group_tasks(z, k=2)
    assert default.task_names[:2] == ("task0", "task1")


def test_tag_overlap_and_serving() -> None:
    # task 2 helps both 0 and 1, which hurt each other: with k=2 it is trained in both groups
    z = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    g = group_tasks(z, k=2, method="exact")
    assert g.groups == ((0, 2), (1, 2)) and g.score == pytest.approx(2.0)
    assert g.served_by[0] == 0 and g.served_by[1] == 1
    assert group_tasks(z, k=2, objective="partition", method="exact").score == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"affinity": np.zeros((3, 4)), "k": 2}, r"square T x T.*\(3, 4\)"),
        ({"affinity": np.array([[0, np.nan], [1, 0]]), "k": 1}, r"not finite.*\[0, 1\]"),
        ({"affinity": np.zeros((3, 3)), "k": 0}, r"k=0.*between 1 and the number of tasks \(3\)"),
        ({"affinity": np.zeros((3, 3)), "k": 4}, r"k=4"),
        ({"affinity": np.zeros((3, 3))}, r"give k=.*or cost="),
        ({"affinity": np.zeros((3, 3)), "cost": -1.0}, r"cost=-1.0.*>= 0"),
        ({"affinity": np.zeros((3, 3)), "k": 2, "task_names": ["a", "b"]}, r"2 names for a 3 x 3"),
        ({"affinity": np.zeros((3, 3)), "k": 2, "task_names": ["a", "a", "b"]}, r"duplicated \['a'\]"),
        ({"affinity": np.zeros((3, 3)), "k": 2, "objective": "partition", "singleton": 1.0}, r"singleton=1.0"),
        ({"affinity": np.zeros((3, 3)), "k": 2, "time_limit": 0}, r"time_limit=0"),
        (
            {"affinity": np.zeros((EXACT_MAX_TASKS + 1,) * 2), "k": 2, "method": "exact"},
            rf"{EXACT_MAX_TASKS + 1} tasks.*limit of {EXACT_MAX_TASKS}.*method='greedy'",
        ),
    ],
)
def test_errors_name_the_parameter(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        group_tasks(**kwargs)  # type: ignore[arg-type]


def test_unknown_names_suggest_the_closest() -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean 'partition'"):
        group_tasks(np.zeros((3, 3)), k=2, objective="partiton")
    with pytest.raises(UnknownNameError, match=r"did you mean 'greedy'"):
        group_tasks(np.zeros((3, 3)), k=2, method="greddy")


def test_score_groups_validates_groups() -> None:
    z = _random(4, 0)
    with pytest.raises(ValueError, match=r"tasks \[3\] are in no group"):
        score_groups(z, [[0, 1], [2]])
    with pytest.raises(ValueError, match=r"several groups.*objective='tag'"):
        score_groups(z, [[0, 1], [1, 2, 3]], objective="partition")
    served = [z[1, 0], max(z[0, 1], (z[2, 1] + z[3, 1]) / 2), (z[1, 2] + z[3, 2]) / 2, (z[1, 3] + z[2, 3]) / 2]
    assert score_groups(z, [[0, 1], [1, 2, 3]], cost=0.5) == pytest.approx(sum(served) - 2 * 0.5)
    within = z[0, 1] + z[1, 0] + z[2, 3] + z[3, 2]
    assert score_groups(z, [[0, 1], [2, 3]], objective="partition") == pytest.approx(within)


# ---------------------------------------------------------------------------------------------
# files


NAMES = ["depth", "normals", "edges", "seg", "keypoints"]


def test_json_round_trip_and_matrix_choice(tmp_path: Path) -> None:
    z = _random(5, 0)
    z[np.diag_indices(5)] = np.nan  # undefined self-affinity: written as null
    path = tmp_path / "aff.json"
    save_affinity(path, {"first_order": z.T, "tag": z}, NAMES)
    raw = json.loads(path.read_text())
    assert raw["tasks"] == NAMES and raw["matrices"]["tag"][0][0] is None
    loaded, names = load_affinity(path)
    assert names == NAMES and np.array_equal(loaded, z, equal_nan=True)  # "tag" by default
    assert np.array_equal(load_affinity(path, matrix="first_order")[0], z.T, equal_nan=True)
    with pytest.raises(UnknownNameError, match=r"'first'.*Valid: first_order, tag"):
        load_affinity(path, matrix="first")
    raw["matrices"] = {"lookahead": raw["matrices"]["tag"], "tag2": raw["matrices"]["first_order"]}
    raw["other"] = {"ignored": True}
    path.write_text(json.dumps(raw))
    assert np.array_equal(load_affinity(path)[0], z, equal_nan=True)  # no "tag": the first
    g = group_tasks(*load_affinity(path)[:1], k=2, task_names=load_affinity(path)[1])
    assert set().union(*g.named_groups) == set(NAMES)


def test_csv_round_trip_and_checks(tmp_path: Path) -> None:
    z = _random(5, 1)
    path = tmp_path / "aff.csv"
    save_affinity(path, z, NAMES)
    lines = path.read_text().splitlines()
    assert lines[0] == "source,depth,normals,edges,seg,keypoints" and lines[2].startswith("normals,")
    loaded, names = load_affinity(path)
    assert names == NAMES and np.array_equal(loaded, z)
    swapped = [lines[0], lines[2], lines[1], *lines[3:]]
    path.write_text("\n".join(swapped) + "\n")
    with pytest.raises(ValueError, match=r"row 2 is task 'normals' but column 1 is 'depth'.*same order"):
        load_affinity(path)
    path.write_text("task,a,b\na,0,1\nb,1,0\n")
    with pytest.raises(ValueError, match=r"header source,"):
        load_affinity(path)
    path.write_text("source,a,b\na,0,x\nb,1,0\n")
    with pytest.raises(ValueError, match=r"'x' is not a number"):
        load_affinity(path)
    with pytest.raises(ValueError, match=r"holds one matrix"):
        load_affinity(path, matrix="tag")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_affinity(tmp_path / "missing.json")
    bad = tmp_path / "aff.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match=r"unknown type '.txt'.*\.json or \.csv"):
        load_affinity(bad)
    bad = tmp_path / "aff.json"
    bad.write_text(json.dumps({"tasks": ["a", "b"], "matrices": {"tag": [[0, 1]]}}))
    with pytest.raises(ValueError, match=r"'tag' must be 2 x 2"):
        load_affinity(bad)


# ---------------------------------------------------------------------------------------------
# the command


def test_cli_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    z, _ = _two_blocks(6)
    path = tmp_path / "aff.json"
    save_affinity(path, {"tag": z}, ["a", "b", "c", "d", "e", "f"])
    out_json = tmp_path / "groups.json"
    assert main(["group", str(path), "--k", "2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "group 0: a, c, e" in out and "group 1: b, d, f" in out and "optimal" in out and "served by" in out
    written = json.loads(out_json.read_text())
    assert written["groups"] == [["a", "c", "e"], ["b", "d", "f"]] and written["matrix"] == "tag"
    assert written["optimal"] is True and written["served_by"]["b"] == 1
    csv_path = tmp_path / "aff.csv"
    save_affinity(csv_path, z, ["a", "b", "c", "d", "e", "f"])
    args = ["group", str(csv_path), "--cost", "0.1", "--objective", "partition", "--method", "greedy", "--seed", "1"]
    assert main(args) == 0
    assert "partition objective, greedy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--k", "2", "--matrix", "tg"], "did you mean 'tag'"),
        ([], "give --k K"),
        (["--k", "9"], "k=9"),
        (["--k", "2", "--method", "exactly"], "did you mean 'exact'"),
        (["--k", "2", "--objective", "tags"], "did you mean 'tag'"),
    ],
)
def test_cli_group_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    path = tmp_path / "aff.json"
    save_affinity(path, _random(4, 0), ["a", "b", "c", "d"])
    assert main(["group", str(path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_group_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["group", str(tmp_path / "nope.json"), "--k", "2"]) == 2
    assert "not found" in capsys.readouterr().err
