"""Architecture rules, checked on the source: only the engine calls autograd; weightings import only torch."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "multitask"
AUTOGRAD_CALLS = {"backward", "grad", "vjp", "jacrev", "jacfwd"}


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _is_engine(node: ast.expr) -> bool:
    """``engine.backward(...)`` / ``self.engine.backward(...)`` call the engine, which is allowed."""
    return (isinstance(node, ast.Name) and node.id == "engine") or (
        isinstance(node, ast.Attribute) and node.attr == "engine"
    )


def test_only_the_engine_calls_autograd() -> None:
    offenders = []
    for path in _modules():
        if path.name == "engine.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {"backward", "autograd"} and not _is_engine(node.value):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} uses .{node.attr}")
            if isinstance(node, ast.Attribute) and node.attr == "grad" and isinstance(node.ctx, ast.Load):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} reads .grad")
    assert not offenders, "\n".join(offenders)


def test_weightings_import_only_torch_and_the_standard_library() -> None:
    allowed = {"torch", "__future__"} | set(sys.stdlib_module_names)
    offenders = []
    for path in sorted((SRC / "weighting").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:  # sibling modules of weighting/
                    continue
                names = [node.module or ""]
                if node.level == 2 and node.module == "registry":
                    continue  # the shared registry helper
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] not in allowed]
    assert not offenders, offenders
