"""Named registries with helpful errors.

Every pluggable piece of the library (weightings, architectures, datasets) is looked up by
name in a :class:`Registry`. An unknown name raises :class:`UnknownNameError`, which names the
value seen, the closest valid names, and how to list them all.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["ParamInfo", "Registry", "UnknownNameError", "closest", "signature_params"]


class UnknownNameError(KeyError, ValueError):
    """An unknown name was asked of a registry, a config section or a column list."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def closest(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    """The valid names closest to ``name`` (at most three, best first)."""
    options = sorted(choices)
    found = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    if not found:
        lowered = {c.lower(): c for c in options}
        found = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
    return found


def unknown_name_message(kind: str, name: str, choices: list[str] | tuple[str, ...] | set[str], hint: str = "") -> str:
    """A one-line error: the unknown value, the closest valid names and the full list."""
    near = closest(name, choices)
    msg = f"unknown {kind} {name!r}"
    if near:
        msg += f"; did you mean {' or '.join(repr(n) for n in near)}?"
    msg += f" Valid: {', '.join(sorted(choices)) or '(none)'}."
    if hint:
        msg += f" {hint}"
    return msg


@dataclass(frozen=True)
class ParamInfo:
    """One keyword-only hyperparameter as read from a signature."""

    name: str
    annotation: str
    default: Any
    required: bool

    def render(self) -> str:
        if self.required:
            return f"{self.name}: {self.annotation} (required)"
        return f"{self.name}: {self.annotation} = {self.default!r}"


def signature_params(obj: Callable[..., Any]) -> list[ParamInfo]:
    """The keyword parameters of a class ``__init__`` (or a function), in declaration order."""
    target = obj.__init__ if inspect.isclass(obj) else obj  # type: ignore[misc]
    sig = inspect.signature(target)
    params = []
    for p in sig.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation
        if ann is inspect.Parameter.empty:
            ann_s = "Any"
        elif isinstance(ann, str):
            ann_s = ann
        else:
            ann_s = getattr(ann, "__name__", repr(ann))
        required = p.default is inspect.Parameter.empty
        params.append(ParamInfo(p.name, ann_s, None if required else p.default, required))
    return params


def first_doc_line(obj: object) -> str:
    """The first line of an object's docstring (empty if it has none)."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """A name -> factory mapping with "did you mean" errors.

    Args:
        kind: what the entries are, used in error messages ("weighting", "dataset", ...).
        list_hint: how a user lists every entry, appended to errors.
    """

    def __init__(self, kind: str, *, list_hint: str = "") -> None:
        self.kind = kind
        self.list_hint = list_hint
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers an entry under ``name``."""

        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name`` (non-decorator form)."""
        self.register(name)(obj)

    def get(self, name: str) -> T:
        """The entry called ``name``; an :class:`UnknownNameError` names the closest ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, list(self._entries), self.list_hint)) from None

    def create(self, name: str, **params: Any) -> Any:
        """Call the entry ``name`` with keyword ``params``, checking their names first."""
        factory = self.get(name)
        check_params(f"{self.kind} {name!r}", factory, params)  # type: ignore[arg-type]
        return factory(**params)  # type: ignore[operator]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self) -> list[tuple[str, str, list[ParamInfo]]]:
        """(name, one-line description, parameters) for every entry, derived from the code."""
        return [(n, first_doc_line(o), signature_params(o)) for n, o in self.items()]  # type: ignore[arg-type]


def check_params(what: str, factory: Callable[..., Any], params: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Raise :class:`UnknownNameError` if ``params`` holds a name ``factory`` does not accept."""
    valid = [p.name for p in signature_params(factory) if p.name not in skip]
    for key in params:
        if key not in valid:
            raise UnknownNameError(unknown_name_message(f"parameter of {what}:", key, valid))
