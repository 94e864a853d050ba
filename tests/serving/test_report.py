"""``multitask report RUN``: a self-contained HTML report, parsed and rendered in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from serving_tables import make_two_task_table

from multitask.cli import main
from multitask.report import build_report, write_report

SECTIONS = ("summary", "curves", "weights", "relations", "config", "versions")


def train(tmp: Path, name: str, *extra: str) -> Path:
    csv = tmp / f"{name}.csv"
    make_two_task_table().to_csv(csv, index=False)
    args = ["train", "--data", str(csv), "--task", "buy:binary:yes", "--task", "price:regression", "--epochs", "3"]
    args += ["-q", "--set", "model.hidden=[16]", "--out-dir", str(tmp), "--name", name, *extra]
    assert main(args) == 0
    return tmp / name


class Page(HTMLParser):
    """Collects what the checks need: section ids, images, every attribute that may load a resource, notes."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict[str, str]] = []
        self.links: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "img":
            self.images.append(a)
        for key in ("src", "href", "srcset", "data", "poster", "action"):
            if key in a:
                self.links.append((tag, key, a[key]))


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Baselines (for the bars and Δm) and a gradient method (for the conflict heatmap)."""
    return train(tmp_path_factory.mktemp("report"), "full", "--weighting", "mgda")


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No baselines, a loss-only weighting: no bars, no Δm, no relations."""
    return train(tmp_path_factory.mktemp("report"), "bare", "--no-baselines")


@pytest.fixture(scope="module")
def full_report(full_run: Path) -> Path:
    assert main(["report", str(full_run)]) == 0
    return full_run / "report.html"


def test_report_has_every_section_and_inline_plots(full_run: Path, full_report: Path) -> None:
    text = full_report.read_text()
    page = parse(text)
    assert page.sections == list(SECTIONS)
    # 2 learning-curve plots, weights, cosine + conflict heatmaps + cosine over epochs, bars + relative change
    assert len(page.images) == 8
    for img in page.images:
        assert img["alt"]
        head, _, data = img["src"].partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(data, validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    alts = " | ".join(i["alt"] for i in page.images)
    for expected in ("learning curves of task buy", "learning curves of task price", "task weights over epochs"):
        assert expected in alts
    assert "gradient cosine, epoch 3" in alts and "conflict rate, epoch 3" in alts
    assert "multi-task vs single-task test metric per task" in alts
    assert re.search(r"Δm = [+-]\d+\.\d\d%", text)
    assert "weighting:\n  name: mgda" in text  # the config
    assert "torch" in text and "matplotlib" in text  # versions
    assert "No gradient relations" not in text and "--no-baselines" not in text


def test_report_is_self_contained(full_report: Path) -> None:
    page = parse(full_report.read_text())
    assert "link" not in page.tags and "iframe" not in page.tags
    for tag, key, value in page.links:
        assert value.startswith("data:"), f"<{tag} {key}> loads {value[:60]!r}"
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", full_report.read_text())
    assert "url(" not in full_report.read_text()  # no CSS fetches


def test_report_notes_missing_pieces(bare_run: Path, tmp_path: Path) -> None:
    out = write_report(bare_run, out=tmp_path / "sub" / "r.html")
    assert out == tmp_path / "sub" / "r.html"
    text = out.read_text()
    page = parse(text)
    assert page.sections == list(SECTIONS)
    assert len(page.images) == 3  # learning curves x 2, weights
    assert "No single-task baselines in this run" in text and "--no-baselines" in text
    assert "No gradient relations were recorded" in text
    assert "--set train.relations_every=N" in text and "--weighting mgda" in text
    assert "Δm =" not in text


def test_report_of_an_unfinished_run(bare_run: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(bare_run, partial)
    (partial / "summary.json").unlink()
    (partial / "multitask" / "metrics.jsonl").write_text(
        (bare_run / "multitask" / "metrics.jsonl").read_text().splitlines()[0] + "\n{truncated"
    )
    text = build_report(partial)
    assert "No <code>summary.json</code>: the run has not finished" in text
    assert "1 epochs recorded, 2 tasks: buy, price" in text


def test_report_with_undefined_delta_m(full_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "nan"
    shutil.copytree(full_run, run, ignore=shutil.ignore_patterns("report.html", "checkpoint.pt", "model.mt"))
    summary = json.loads((run / "summary.json").read_text())
    summary["delta_m"] = float("nan")
    summary["rows"][0]["relative_change"] = float("nan")
    (run / "summary.json").write_text(json.dumps(summary))
    text = build_report(run)
    assert "Δm is undefined for this run" in text and "Δm = " not in text
    assert "multi-task vs single-task test metric per task" in text  # the bars are still drawn


def test_report_errors(tmp_path: Path, full_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert f"error: report: run directory {str(tmp_path / 'nope')!r} does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a multitask run directory (no config.yaml nor multitask/metrics.jsonl)" in capsys.readouterr().err
    assert main(["report", str(full_run), "--out", str(tmp_path)]) == 2
    assert "is a directory; give a file name such as report.html" in capsys.readouterr().err


def _chromium(page: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    assert exe is not None
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def _console(stderr: str) -> list[str]:
    """Console messages (every level: the report logs nothing) and uncaught errors Chromium reports."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def chromium() -> Any:
    if shutil.which("chromium") is None:
        pytest.skip("the `chromium` binary is not installed (Debian package `chromium`): browser rendering not checked")


def test_report_renders_in_headless_chromium(chromium: Any, full_report: Path, tmp_path: Path) -> None:
    done = _chromium(full_report, tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    n = len(parse(full_report.read_text()).images)
    # the page's inline script marks the body once loaded: every image decoded with a non-zero size
    assert f'data-images-rendered="{n}/{n}"' in dom, dom[:500]
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in dom
    assert _console(done.stderr) == []


def test_chromium_check_sees_console_errors(chromium: Any, tmp_path: Path) -> None:
    """The check above would notice a broken page (so its empty result means something)."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA"><script>nope();</script></body></html>'
    )
    done = _chromium(bad, tmp_path / "profile")
    assert any("nope is not defined" in line for line in _console(done.stderr)), done.stderr[-2000:]
