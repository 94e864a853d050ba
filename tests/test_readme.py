"""The README's Python example runs as written (with fewer epochs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    code = blocks[0].replace("epochs=5", "epochs=1")
    assert len(code.strip().splitlines()) <= 25
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "'income'" in out and "'brier'" in out and "'auc'" in out


def test_readme_commands_match_ci() -> None:
    text = README.read_text()
    assert "make train" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call exactly the README's test command"
