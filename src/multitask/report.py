"""``multitask report RUN``: one self-contained HTML file describing a run directory.

The report holds, from the files of :mod:`multitask.experiment`'s run directory:

* the per-task test table and Δm (``summary.json``; a note when the run has no baselines);
* per-task learning curves: train and validation loss and the validation main metric per epoch
  (``multitask/metrics.jsonl``);
* the task weights over epochs (the mean weight of each epoch);
* the gradient cosine and conflict heatmaps of the last epoch and the mean cosine over epochs
  (``multitask/relations.jsonl``; a note saying how to record it when absent);
* multi-task vs single-task bars per task and the relative changes with the Δm line;
* the resolved config and the versions of Python and the main packages.

Plots are PNG images inlined as ``data:`` URIs (matplotlib, no pyplot state); the page loads no
external resource (no URL, no CDN), so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["build_report", "write_report"]

REPORT_NAME = "report.html"
_RELATIONS_HINT = (
    "No gradient relations were recorded for this run. They are recorded whenever the weighting computes the "
    "Gramian of the task gradients (a gradient method such as <code>--weighting mgda</code>, <code>pcgrad</code>, "
    "<code>cagrad</code>) or, with any weighting, every N steps with <code>--set train.relations_every=N</code>."
)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted write
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _fmt(v: Any) -> str:
    f = _num(v)
    return "-" if math.isnan(f) else f"{f:.4g}"


def _png(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _main_metrics(
    summary: dict[str, Any] | None, history: list[dict[str, Any]], tasks: Sequence[str]
) -> dict[str, str]:
    chosen = {r["task"]: r["metric"] for r in (summary or {}).get("rows", []) if "task" in r and "metric" in r}
    last_val = history[-1].get("val", {}) if history else {}
    for t in tasks:
        if t not in chosen:
            names = [m for m in last_val.get(t, {}) if m != "loss"]
            if names:
                chosen[t] = names[0]
    return chosen


def _curves(history: list[dict[str, Any]], tasks: Sequence[str], main: dict[str, str]) -> str:
    if not history:
        return _note("No epochs recorded yet (<code>multitask/metrics.jsonl</code> is missing or empty).")
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]
    parts = []
    for t in tasks:
        fig = _figure(4.6, 3.0)
        ax = fig.add_subplot()
        ax.plot(epochs, [_num(r.get("train", {}).get(t)) for r in history], marker="o", label="train loss")
        ax.plot(epochs, [_num(r.get("val", {}).get(t, {}).get("loss")) for r in history], marker="s", label="val loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(t)
        lines, labels = ax.get_legend_handles_labels()
        metric = main.get(t)
        if metric:
            ax2 = ax.twinx()
            vals = [_num(r.get("val", {}).get(t, {}).get(metric)) for r in history]
            (line,) = ax2.plot(epochs, vals, color="tab:green", marker="^", linestyle="--")
            ax2.set_ylabel(f"val {metric}")
            lines, labels = [*lines, line], [*labels, f"val {metric}"]
        ax.legend(lines, labels, fontsize="small", loc="best")
        parts.append(_png(fig, f"learning curves of task {t}"))
    return '<div class="grid">' + "".join(parts) + "</div>"


def _weights(history: list[dict[str, Any]], tasks: Sequence[str]) -> str:
    if not history or not any(r.get("weights") for r in history):
        return _note("No task weights recorded.")
    epochs = [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    for t in tasks:
        ax.plot(epochs, [_num(r.get("weights", {}).get(t)) for r in history], marker="o", label=t)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean task weight")
    ax.set_title("task weights (mean over each epoch's steps)")
    ax.legend(fontsize="small", ncols=2 if len(tasks) > 6 else 1)
    return _png(fig, "task weights over epochs")


def _heatmap(matrix: list[list[Any]], tasks: Sequence[str], title: str, *, vmin: float, vmax: float, cmap: str) -> str:
    import numpy as np

    m = np.array([[_num(v) for v in row] for row in matrix], dtype=float)
    size = max(3.4, 0.45 * len(tasks) + 2.2)
    fig = _figure(size + 0.8, size)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(m), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(len(tasks)), labels=list(tasks), rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), labels=list(tasks))
    if len(tasks) <= 10:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if not math.isnan(m[i, j]):
                    dark = abs((m[i, j] - vmin) / (vmax - vmin) - (0.5 if vmin < 0 else 0.0)) > (
                        0.3 if vmin < 0 else 0.6
                    )
                    color = "white" if dark else "black"
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize="small", color=color)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig, title)


def _relations(relations: list[dict[str, Any]], tasks: Sequence[str]) -> str:
    usable = [r for r in relations if r.get("cosine")]
    if not usable:
        return _note(_RELATIONS_HINT)
    last = usable[-1]
    names = list(last.get("tasks") or tasks)
    parts = [
        _heatmap(last["cosine"], names, f"gradient cosine, epoch {last.get('epoch')}", vmin=-1, vmax=1, cmap="RdBu_r"),
    ]
    if last.get("conflict"):
        parts.append(
            _heatmap(last["conflict"], names, f"conflict rate, epoch {last.get('epoch')}", vmin=0, vmax=1, cmap="Reds")
        )
    fig = _figure(4.6, 3.0)
    ax = fig.add_subplot()
    epochs: list[int] = []
    means: list[float] = []
    for r in usable:
        off = [
            _num(v)
            for i, row in enumerate(r["cosine"])
            for j, v in enumerate(row)
            if i != j and not math.isnan(_num(v))
        ]
        if off:
            epochs.append(int(r.get("epoch") or len(epochs) + 1))
            means.append(sum(off) / len(off))
    ax.plot(epochs, means, marker="o")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean off-diagonal cosine")
    ax.set_title("gradient agreement over epochs")
    parts.append(_png(fig, "mean gradient cosine over epochs"))
    text = (
        f"Mean over the {last.get('steps', '?')} steps of the last recorded epoch that had a Gramian. A negative "
        "cosine means the two tasks' gradients pull the shared parameters apart; the conflict rate is the fraction "
        "of such steps."
    )
    return _note(text) + '<div class="grid">' + "".join(parts) + "</div>"


def _comparison(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return _note(
            "No <code>summary.json</code>: the run has not finished (continue it with "
            "<code>multitask train --resume RUN</code>)."
        )
    rows = summary.get("rows", [])
    head = "<tr><th>task</th><th>metric</th><th>single-task</th><th>multi-task</th><th>relative change</th></tr>"
    body = []
    for r in rows:
        arrow = "↑" if r.get("higher_is_better") else "↓"
        change = _num(r.get("relative_change"))
        body.append(
            f"<tr><td>{html.escape(str(r.get('task')))}</td><td>{html.escape(str(r.get('metric')))} {arrow}</td>"
            f"<td>{_fmt(r.get('single'))}</td><td>{_fmt(r.get('multi'))}</td>"
            f"<td>{'-' if math.isnan(change) else f'{100 * change:+.2f}%'}</td></tr>"
        )
    table = f"<table>{head}{''.join(body)}</table>"
    dm = _num(summary.get("delta_m"))
    with_single = [r for r in rows if "single" in r]
    if with_single and math.isnan(dm):
        dm_text = _note("Δm is undefined for this run (a task's metric is NaN, e.g. an AUC on a one-class test split).")
    elif math.isnan(dm):
        return table + _note(
            "No single-task baselines in this run (trained with <code>--no-baselines</code>), so there are no "
            "multi-task vs single-task bars and no Δm. Train without <code>--no-baselines</code> to get them."
        )
    else:
        dm_all = _num(summary.get("delta_m_all_metrics"))
        dm_text = (
            f'<p class="delta">Δm = {100 * dm:+.2f}% <span class="small">(mean over tasks of each task\'s main-metric '
            "relative change; positive = multi-task better)</span>"
            + ("" if math.isnan(dm_all) else f"<br>Δm over all metrics = {100 * dm_all:+.2f}%")
            + "</p>"
        )
    n = len(with_single)
    fig = _figure(max(4.0, 2.2 * n), 3.0)
    axes = fig.subplots(1, max(n, 1), squeeze=False)[0]
    for ax, r in zip(axes, with_single, strict=False):
        values = [_num(r.get("single")), _num(r.get("multi"))]
        bars = ax.bar(["single", "multi"], values, color=["tab:grey", "tab:blue"])
        ax.bar_label(bars, fmt="%.3g", fontsize="small")
        ax.set_title(f"{r.get('task')}\n{r.get('metric')} {'↑' if r.get('higher_is_better') else '↓'}")
    bars_img = _png(fig, "multi-task vs single-task test metric per task")
    fig2 = _figure(max(4.0, 0.9 * n + 2.0), 3.0)
    ax = fig2.add_subplot()
    changes = [100 * _num(r.get("relative_change")) for r in with_single]
    changes = [0.0 if math.isnan(c) else c for c in changes]
    ax.bar(
        [str(r.get("task")) for r in with_single],
        changes,
        color=["tab:green" if c >= 0 else "tab:red" for c in changes],
    )
    if not math.isnan(dm):
        ax.axhline(100 * dm, color="black", linestyle="--", label=f"Δm = {100 * dm:+.2f}%")
        ax.legend(fontsize="small")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_ylabel("relative change (%)")
    ax.set_title("multi-task vs single-task (positive = better)")
    change_img = _png(fig2, "relative change per task and delta m")
    return table + dm_text + '<div class="grid">' + bars_img + change_img + "</div>"


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("multitask", "torch", "numpy", "pandas", "matplotlib", "mlflow", "tensorboard"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    if "multitask" not in out:
        from . import __version__

        out["multitask"] = __version__
    return out


_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; } td { text-align: right; } td:first-child, td:nth-child(2) { text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
img.plot { max-width: 100%; border: 1px solid #eee; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 0.8em; }
.delta { font-size: 1.2em; font-weight: bold; } .small { font-size: 0.75em; font-weight: normal; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""
# marks the page once every image has decoded (lets a headless browser check the rendering)
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.setAttribute("data-images-rendered", ok + "/" + imgs.length);
});
"""


def build_report(run_dir: str | Path) -> str:
    """The HTML text of the report of ``run_dir`` (see the module docstring).

    Raises:
        ValueError: ``run_dir`` is not a run directory of ``multitask train``.
        MissingDependencyError: matplotlib is not installed.
    """
    from .data.base import MissingDependencyError

    rdir = Path(run_dir)
    if not rdir.is_dir():
        raise ValueError(f"report: run directory {str(rdir)!r} does not exist; give a directory of `multitask train`")
    if not (rdir / "config.yaml").is_file() and not (rdir / "multitask" / "metrics.jsonl").is_file():
        raise ValueError(
            f"report: {str(rdir)!r} is not a multitask run directory (no config.yaml nor multitask/metrics.jsonl); "
            "give a directory written by `multitask train`"
        )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "multitask report draws its plots with matplotlib; install it with: pip install 'multitask[tracking]'"
        ) from None
    history = _read_jsonl(rdir / "multitask" / "metrics.jsonl")
    relations = _read_jsonl(rdir / "multitask" / "relations.jsonl")
    summary = _read_json(rdir / "summary.json")
    config_text = (rdir / "config.yaml").read_text() if (rdir / "config.yaml").is_file() else ""
    tasks: list[str] = list(history[-1].get("train", {})) if history else []
    if not tasks and summary:
        tasks = [str(r["task"]) for r in summary.get("rows", [])]
    main = _main_metrics(summary, history, tasks)
    title = f"multitask report: {rdir.resolve().name}"
    facts = []
    if summary:
        facts.append(
            f"{html.escape(str(summary.get('dataset')))}: {html.escape(str(summary.get('architecture')))} + "
            f"{html.escape(str(summary.get('weighting')))}, {summary.get('epochs')} epochs, seed {summary.get('seed')}; "
            f"best validation epoch {summary.get('multitask_best_epoch')}; "
            f"{html.escape(str(summary.get('split')))}"
        )
    facts.append(f"{len(history)} epochs recorded, {len(tasks)} tasks: {html.escape(', '.join(tasks))}")
    versions = _versions()
    sections = [
        ("summary", "Multi-task vs single-task and Δm", _comparison(summary)),
        ("curves", "Per-task learning curves", _curves(history, tasks, main)),
        ("weights", "Task weights over time", _weights(history, tasks)),
        ("relations", "Gradient conflicts", _relations(relations, tasks)),
        (
            "config",
            "Config",
            f"<pre>{html.escape(config_text)}</pre>" if config_text else _note("No config.yaml in the run directory."),
        ),
        (
            "versions",
            "Versions",
            "<table>"
            + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in versions.items())
            + "</table>",
        ),
    ]
    body = "".join(f'<section id="{sid}"><h2>{name}</h2>{content}</section>' for sid, name, content in sections)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>"
        f'<p>{"<br>".join(facts)}<br><span class="small">run directory {html.escape(str(rdir.resolve()))}, '
        f"report written {stamp}</span></p>{body}<script>{_SCRIPT}</script></body></html>\n"
    )


def write_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``run_dir`` to ``out`` (default ``<run_dir>/report.html``); return its path."""
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    if path.is_dir():
        raise ValueError(f"report: --out {str(path)!r} is a directory; give a file name such as report.html")
    text = build_report(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
