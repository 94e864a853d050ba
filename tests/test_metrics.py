from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score, roc_auc_score

from multitask.metrics import accuracy, delta_m, f1, mae, r2, relative_change, rmse, roc_auc


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=4, max_value=60))
def test_auc_matches_sklearn_including_ties(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    scores = rng.integers(-3, 4, n).astype(float)  # many ties
    ours = roc_auc(torch.tensor(scores).unsqueeze(1), torch.tensor(y))
    assert ours == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_auc_single_class_is_nan() -> None:
    assert math.isnan(roc_auc(torch.randn(5, 1), torch.ones(5)))


def test_classification_and_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4))
    y = rng.integers(0, 4, 50)
    assert accuracy(torch.tensor(logits), torch.tensor(y)) == pytest.approx(accuracy_score(y, logits.argmax(1)))
    b_logit = rng.normal(size=(50, 1))
    yb = rng.integers(0, 2, 50)
    assert f1(torch.tensor(b_logit), torch.tensor(yb)) == pytest.approx(f1_score(yb, (b_logit[:, 0] > 0).astype(int)))
    pred, yr = rng.normal(size=(50, 1)), rng.normal(size=50)
    assert r2(torch.tensor(pred), torch.tensor(yr)) == pytest.approx(r2_score(yr, pred[:, 0]))
    assert mae(torch.tensor(pred), torch.tensor(yr)) == pytest.approx(mean_absolute_error(yr, pred[:, 0]))
    assert rmse(torch.tensor(pred), torch.tensor(yr)) == pytest.approx(float(np.sqrt(((pred[:, 0] - yr) ** 2).mean())))


def test_relative_change_sign_follows_direction() -> None:
    assert relative_change(0.9, 0.8, True) == pytest.approx(0.125)
    assert relative_change(0.9, 0.8, False) == pytest.approx(-0.125)
    assert math.isnan(relative_change(1.0, 0.0, True))


def test_delta_m_hand_computed() -> None:
    # task a: acc 0.9 vs 0.8 -> +12.5%; task b: rmse 1.1 vs 1.0 (lower better) -> -10%, mae 0.5 vs 0.5 -> 0%
    multi = {"a": {"acc": 0.9}, "b": {"rmse": 1.1, "mae": 0.5}}
    single = {"a": {"acc": 0.8}, "b": {"rmse": 1.0, "mae": 0.5}}
    dirs = {"a": {"acc": True}, "b": {"rmse": False, "mae": False}}
    # per-task: mean(+0.125, mean(-0.1, 0)) = (0.125 - 0.05) / 2
    assert delta_m(multi, single, dirs) == pytest.approx(0.0375)
    # per-metric: mean(+0.125, -0.1, 0)
    assert delta_m(multi, single, dirs, averaging="per-metric") == pytest.approx(0.025 / 3)
    with pytest.raises(ValueError, match="averaging"):
        delta_m(multi, single, dirs, averaging="mean")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="'c'"):
        delta_m(multi, single, {"c": {"acc": True}})
