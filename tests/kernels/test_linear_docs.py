"""The docstring examples of multitask.kernels.linear run, and every estimator cites its papers."""

from __future__ import annotations

import doctest
import importlib

import pytest

import multitask.kernels.linear as linear

MODULES = ["trace_norm", "l21", "clustered", "mean_regularized"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(f"multitask.kernels.linear.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.parametrize("name", linear.__all__)
def test_every_estimator_cites_its_papers(name: str) -> None:
    doc = getattr(linear, name).__doc__
    assert "References\n    ----------" in doc
    assert "https://" in doc.split("References")[1]
    for section in ("Parameters", "Attributes"):
        assert f"{section}\n    ---" in doc
