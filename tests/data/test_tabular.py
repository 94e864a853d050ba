"""The CSV/Parquet loader: task specs, target encoding, the preprocessor and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from multitask.data import (
    MissingDependencyError,
    MultiTaskData,
    TabularPreprocessor,
    TaskSpec,
    from_frame,
    load_table,
    parse_task_spec,
)
from multitask.data import tabular as tabular_module
from multitask.registry import UnknownNameError


def make_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income_k": rng.normal(50, 10, n).round(2),
            "city": rng.choice(["paris", "lyon", "nice"], n),
            "smoker": rng.choice([True, False], n),
            "churn": rng.choice(["no", "yes"], n),
            "segment": rng.choice(["a", "b", "c"], n),
            "spend": rng.normal(100, 20, n),
        }
    )


TASKS = ["churn:binary", "segment:multiclass", "spend:regression"]


# --- task specs ------------------------------------------------------------------------------
def test_parse_task_spec_forms() -> None:
    assert parse_task_spec("income:binary") == TaskSpec("income", "binary", None)
    assert parse_task_spec("income:binary:>50K") == ("income", "binary", ">50K")
    assert parse_task_spec("y:Multiclass") == ("y", "multiclass", None)
    assert parse_task_spec("price:regression").kind == "regression"
    column, kind, positive = parse_task_spec("t:binary:a:b")
    assert (column, kind, positive) == ("t", "binary", "a:b")


def test_parse_task_spec_errors() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'binary'"):
        parse_task_spec("income:binray")
    with pytest.raises(ValueError, match="has no kind; write 'income:binary'"):
        parse_task_spec("income")
    with pytest.raises(ValueError, match="only binary tasks take a positive class"):
        parse_task_spec("price:regression:3")
    with pytest.raises(ValueError, match="empty column name"):
        parse_task_spec(":binary")


# --- targets -----------------------------------------------------------------------------------
def test_tasks_and_shapes() -> None:
    data = from_frame(make_frame(), TASKS, name="toy")
    assert isinstance(data, MultiTaskData)
    assert data.task_names == ["churn", "segment", "spend"]
    churn, segment, spend = data.tasks
    assert churn.kind == "binary" and churn.classes == ("no", "yes")
    assert segment.kind == "multiclass" and segment.num_classes == 3 and segment.classes == ("a", "b", "c")
    assert spend.kind == "regression"
    assert len(data.train) + len(data.val) + len(data.test) == 60
    # age, income_k + city (3) + smoker (2)
    assert data.input_shape == (7,)
    assert data.feature_names == [
        "age",
        "income_k",
        "city=lyon",
        "city=nice",
        "city=paris",
        "smoker=False",
        "smoker=True",
    ]
    assert data.train.targets["churn"].dtype == torch.float32
    assert data.train.targets["segment"].dtype == torch.int64
    assert data.train.targets["spend"].dtype == torch.float32


def test_missing_label_masks_one_task_and_keeps_the_others() -> None:
    df = make_frame()
    df["churn"] = df["churn"].astype(object)
    df.loc[[0, 5, 9], "churn"] = None
    df.loc[[1, 5], "segment"] = ""
    df.loc[[2, 5], "spend"] = np.nan
    data = from_frame(df, TASKS, val_fraction=0.1, test_fraction=0.1)
    missing = {"churn": {0, 5, 9}, "segment": {1, 5}, "spend": {2, 5}}
    # rebuild the row order of the splits to compare with the frame
    pre = data.preprocessor
    targets, masks = pre.encode_targets(df)
    for task, rows in missing.items():
        assert set(np.nonzero(~masks[task].numpy())[0]) == rows
        assert torch.all(targets[task][~masks[task]] == 0)
        assert not torch.isnan(targets[task].float()).any()
    # row 0 lost only its churn label
    assert bool(masks["segment"][0]) and bool(masks["spend"][0])
    for split in (data.train, data.val, data.test):
        for task in data.task_names:
            assert not torch.isnan(split.targets[task].float()).any()
            assert torch.all(split.targets[task][~split.masks[task]] == 0)
    total_missing = {t: sum(int((~s.masks[t]).sum()) for s in (data.train, data.val, data.test)) for t in missing}
    assert total_missing == {"churn": 3, "segment": 2, "spend": 2}
    assert data.info["labels"]["churn"]["missing"] == 3


def test_binary_encoding_rules() -> None:
    n = 30
    df = pd.DataFrame(
        {
            "x": np.arange(n, dtype=float),
            "num01": [0, 1] * 15,
            "flag": [True, False, False] * 10,
            "words": ["yes", "no", "no"] * 10,
            "two": [3, 7, 7] * 10,
            "label": [">50K", "<=50K", "<=50K"] * 10,
        }
    )
    data = from_frame(
        df,
        ["num01:binary", "flag:binary", "words:binary", "two:binary", "label:binary:<=50K"],
        val_fraction=0.2,
        test_fraction=0.2,
    )
    t, _ = data.preprocessor.encode_targets(df)
    assert data.task("num01").classes == ("0", "1")
    assert t["num01"][:2].tolist() == [0.0, 1.0]
    assert data.task("flag").classes == ("False", "True")
    assert t["flag"][:3].tolist() == [1.0, 0.0, 0.0]
    assert data.task("words").classes == ("no", "yes")
    assert t["words"][:3].tolist() == [1.0, 0.0, 0.0]
    assert data.task("two").classes == ("3", "7")  # sorted numerically, second is positive
    assert t["two"][:3].tolist() == [0.0, 1.0, 1.0]
    assert data.task("label").classes == (">50K", "<=50K")
    assert t["label"][:3].tolist() == [0.0, 1.0, 1.0]


def test_binary_errors() -> None:
    df = make_frame()
    with pytest.raises(ValueError, match=r"'segment' has 3 distinct values.*'segment:multiclass'"):
        from_frame(df, ["segment:binary"])
    with pytest.raises(ValueError, match="positive class 'maybe' never occurs"):
        from_frame(df, ["churn:binary:maybe"])
    df["const"] = "x"
    with pytest.raises(ValueError, match="'const' has only the value 'x'"):
        from_frame(df, ["const:binary"])


def test_multiclass_classes_sorted_over_the_whole_file() -> None:
    df = make_frame()
    df["grade"] = [10, 9, 2] * 20
    data = from_frame(df, ["grade:multiclass"])
    assert data.task("grade").classes == ("2", "9", "10")
    targets, _ = data.preprocessor.encode_targets(df)
    assert targets["grade"][:3].tolist() == [2, 1, 0]
    df["one"] = "z"
    with pytest.raises(ValueError, match="'one' has only one distinct value"):
        from_frame(df, ["one:multiclass"])


def test_regression_standardised_with_train_statistics() -> None:
    df = make_frame()
    data = from_frame(df, ["spend:regression"], split_seed=4)
    task = data.task("spend")
    train_idx, _, _ = tabular_module.split_indices(60, seed=4, val_fraction=0.15, test_fraction=0.15)
    train_spend = df["spend"].to_numpy()[train_idx]
    assert task.target_mean == pytest.approx(train_spend.mean())
    assert task.target_std == pytest.approx(train_spend.std())
    restored = task.unscale(data.train.targets["spend"]).numpy()
    np.testing.assert_allclose(restored, train_spend, rtol=1e-5)


def test_regression_non_numeric_value_is_named() -> None:
    df = make_frame()
    df["spend"] = df["spend"].astype(object)
    df.loc[3, "spend"] = "twelve"
    with pytest.raises(ValueError, match=r"column 'spend' holds the non-numeric value 'twelve'"):
        from_frame(df, ["spend:regression"])


# --- preprocessor -------------------------------------------------------------------------------
def test_preprocessor_fits_on_train_rows_only() -> None:
    train = pd.DataFrame({"a": [1.0, 2.0, 3.0], "k": [5, 5, 5], "c": ["x", "y", None]})
    test = pd.DataFrame({"a": [100.0], "k": [7], "c": ["never-seen"]})
    pre = TabularPreprocessor().fit(train)
    assert pre.feature_names_out == ["a", "k", "c=<missing>", "c=x", "c=y"]
    out = pre.transform(train)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], (np.array([1, 2, 3]) - 2) / np.std([1, 2, 3]), rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], [0, 0, 0])  # constant column: std 1
    np.testing.assert_array_equal(out[:, 2:], [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    t = pre.transform(test)
    assert t[0, 1] == 2.0
    np.testing.assert_array_equal(t[0, 2:], [0, 0, 0])  # unseen category: all zeros


def test_preprocessor_round_trip_is_identical() -> None:
    df = make_frame()
    data = from_frame(df, TASKS, impute="median")
    pre = data.preprocessor
    blob = json.dumps(pre.to_dict())
    again = TabularPreprocessor.from_dict(json.loads(blob))
    np.testing.assert_array_equal(pre.transform(df), again.transform(df))
    assert again.feature_names_out == pre.feature_names_out
    assert again.to_dict() == pre.to_dict()
    t1, m1 = pre.encode_targets(df)
    t2, m2 = again.encode_targets(df)
    for name in t1:
        assert torch.equal(t1[name], t2[name]) and torch.equal(m1[name], m2[name])
    assert [e.task() for e in again.targets.values()] == data.tasks


def test_transform_missing_column_is_named() -> None:
    pre = TabularPreprocessor().fit(make_frame()[["age", "city"]])
    with pytest.raises(KeyError, match="feature column 'city'"):
        pre.transform(make_frame()[["age"]])


def test_nan_and_inf_features_error_names_columns_and_counts() -> None:
    df = make_frame()
    df.loc[[1, 2], "age"] = np.nan
    df.loc[4, "income_k"] = np.inf
    with pytest.raises(ValueError, match=r"'age' \(2 of 60 rows\), 'income_k' \(1 of 60 rows\).*impute='mean'") as info:
        from_frame(df, TASKS)
    assert "impute='median'" in str(info.value)


@pytest.mark.parametrize("impute", ["mean", "median"])
def test_impute_uses_train_statistics(impute: str) -> None:
    train = pd.DataFrame({"a": [1.0, 2.0, 9.0, np.nan, np.inf]})
    pre = TabularPreprocessor(impute=impute).fit(train)
    fill = 4.0 if impute == "mean" else 2.0
    assert pre.numeric["a"]["fill"] == fill
    out = pre.transform(pd.DataFrame({"a": [np.nan, fill]}))
    assert out[0, 0] == out[1, 0]
    assert np.isfinite(pre.transform(train)).all()
    with pytest.raises(UnknownNameError, match="did you mean 'median'"):
        TabularPreprocessor(impute="medain")


def test_from_frame_impute_and_unsupported_dtype() -> None:
    df = make_frame()
    df.loc[[1, 2], "age"] = np.nan
    data = from_frame(df, TASKS, impute="mean")
    assert torch.isfinite(data.train.inputs).all()
    df["when"] = pd.Timestamp("2020-01-01")
    with pytest.raises(TypeError, match="'when' has dtype datetime64"):
        from_frame(df, TASKS, impute="mean")


# --- features and errors ---------------------------------------------------------------------
def test_features_and_drop() -> None:
    df = make_frame()
    data = from_frame(df, TASKS, drop=["city", "smoker"])
    assert data.feature_names == ["age", "income_k"]
    data = from_frame(df, TASKS, features=["income_k", "city"])
    assert data.feature_names == ["income_k", "city=lyon", "city=nice", "city=paris"]
    with pytest.raises(KeyError, match="unknown feature column 'incom'; did you mean 'income_k'"):
        from_frame(df, TASKS, features=["incom"])
    with pytest.raises(KeyError, match="unknown drop column 'cty'"):
        from_frame(df, TASKS, drop=["cty"])
    with pytest.raises(ValueError, match=r"\['churn'\] are listed both as features and as task targets"):
        from_frame(df, TASKS, features=["age", "churn"])


def test_missing_target_column_names_the_closest() -> None:
    with pytest.raises(KeyError, match="unknown target column 'chrun'; did you mean 'churn'"):
        from_frame(make_frame(), ["chrun:binary"])


def test_duplicate_task() -> None:
    with pytest.raises(ValueError, match="duplicate task 'churn'"):
        from_frame(make_frame(), ["churn:binary", "churn:binary:yes"])


def test_all_labels_missing() -> None:
    df = make_frame()
    df["spend"] = np.nan
    with pytest.raises(ValueError, match="'spend' has no labelled training rows"):
        from_frame(df, ["churn:binary", "spend:regression"])
    df["churn"] = None
    with pytest.raises(ValueError, match="target column 'churn' has no labels"):
        from_frame(df, ["churn:binary"])


def test_all_labels_missing_in_training_split() -> None:
    df = make_frame()
    train_idx, _, _ = tabular_module.split_indices(len(df), seed=0, val_fraction=0.15, test_fraction=0.15)
    df["churn"] = df["churn"].astype(object)
    df.loc[train_idx, "churn"] = None
    with pytest.raises(ValueError, match=r"task 'churn' has no labelled rows in the training split \(18 labelled"):
        from_frame(df, ["churn:binary", "segment:multiclass"])


def test_empty_frame() -> None:
    with pytest.raises(ValueError, match="no rows"):
        from_frame(make_frame().iloc[:0], TASKS)


# --- files -------------------------------------------------------------------------------------
def test_csv_tsv_gz_and_parquet_load_the_same(tmp_path: Path) -> None:
    df = make_frame()
    df.to_csv(tmp_path / "toy.csv", index=False)
    df.to_csv(tmp_path / "toy.tsv", index=False, sep="\t")
    df.to_csv(tmp_path / "toy.csv.gz", index=False)
    df.to_parquet(tmp_path / "toy.parquet", index=False)
    ref = load_table(tmp_path / "toy.csv", TASKS)
    assert ref.name == "toy"
    assert ref.info["source"] == str(tmp_path / "toy.csv")
    assert ref.info["rows"]["total"] == 60
    for name in ("toy.tsv", "toy.csv.gz", "toy.parquet"):
        other = load_table(tmp_path / name, TASKS)
        assert other.name == "toy"
        assert other.tasks == ref.tasks
        for a, b in ((ref.train, other.train), (ref.test, other.test)):
            torch.testing.assert_close(a.inputs, b.inputs)
            for t in ref.task_names:
                torch.testing.assert_close(a.targets[t], b.targets[t])
                assert torch.equal(a.masks[t], b.masks[t])


def test_parquet_round_trip_keeps_missing_labels(tmp_path: Path) -> None:
    df = make_frame()
    df["churn"] = df["churn"].astype(object)
    df.loc[[0, 3], "churn"] = None
    df.to_parquet(tmp_path / "t.pq", index=False)
    data = load_table(tmp_path / "t.pq", TASKS, name="custom")
    assert data.name == "custom"
    assert data.info["labels"]["churn"]["missing"] == 2


def test_parquet_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_frame().to_parquet(tmp_path / "t.parquet", index=False)
    monkeypatch.setattr(tabular_module, "_module_available", lambda name: name != "pyarrow")
    with pytest.raises(MissingDependencyError, match=r"pip install 'multitask\[parquet\]'"):
        load_table(tmp_path / "t.parquet", TASKS)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_table(tmp_path / "nope.csv", TASKS)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_table(tmp_path / "empty.csv", TASKS)
    (tmp_path / "header.csv").write_text("a,b,churn\n")
    with pytest.raises(ValueError, match="has a header but no rows"):
        load_table(tmp_path / "header.csv", ["churn:binary"])
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(ValueError, match="unsupported extension"):
        load_table(tmp_path / "data.xlsx", TASKS)


def test_csv_empty_strings_are_missing_labels(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "x,a,b\n" + "".join(f"{i},{i % 2},{'' if i == 0 else i * 0.5}\n" for i in range(20))
    )
    data = load_table(tmp_path / "m.csv", ["a:binary", "b:regression"])
    assert data.info["labels"]["b"]["missing"] == 1
    assert data.info["labels"]["a"]["missing"] == 0
