"""Every public component is registered and documented with its paper."""

from __future__ import annotations

import inspect
import re

import pytest

import multitask
from multitask.architectures import ARCHITECTURES
from multitask.data import DATASETS
from multitask.registry import Registry, UnknownNameError, first_doc_line
from multitask.weighting import WEIGHTINGS, Weighting

PAPER = re.compile(r"(19|20)\d\d.*(https?://|doi)", re.S)


def test_every_method_class_is_registered() -> None:
    import multitask.aggregation as a
    import multitask.weighting as w
    from multitask.aggregation import Aggregator
    from multitask.weighting.chain import Chain

    public = {
        obj
        for module in (w, a)
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Weighting | Aggregator) and obj not in (Weighting, Aggregator, Chain)
    }
    assert public == {WEIGHTINGS.get(n) for n in WEIGHTINGS.names()}


@pytest.mark.parametrize(
    ("kind", "name"), [("w", n) for n in WEIGHTINGS.names()] + [("a", n) for n in ARCHITECTURES.names()]
)
def test_methods_cite_their_paper(kind: str, name: str) -> None:
    obj = WEIGHTINGS.get(name) if kind == "w" else ARCHITECTURES.get(name)
    doc = inspect.getdoc(obj) or ""
    assert first_doc_line(obj), f"{name} has no one-line description"
    assert PAPER.search(doc), f"{name}'s docstring must cite its paper with a year and a link"


@pytest.mark.parametrize("name", DATASETS.names())
def test_datasets_are_described(name: str) -> None:
    assert first_doc_line(DATASETS.get(name))


def test_registry_errors_and_duplicates() -> None:
    reg: Registry[int] = Registry("thing", list_hint="Run `x list`.")
    reg.add("alpha", 1)
    with pytest.raises(
        UnknownNameError, match=r"unknown thing 'alpah'; did you mean 'alpha'\? Valid: alpha. Run `x list`."
    ):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("alpha", 2)
    assert "alpha" in reg and len(reg) == 1


def test_top_level_api() -> None:
    for name in multitask.__all__:
        assert hasattr(multitask, name), name
