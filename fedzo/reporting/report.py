"""One self-contained HTML page comparing runs: a table of totals and the figures.

Figures are embedded as base64 PNG ``data:`` URIs and the style sheet is inline, so the
page has no external file, stylesheet, script or network reference. All text taken from
run directories is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

import fedzo
from fedzo.atomic import write_whole
from fedzo.errors import ConfigError
from fedzo.reporting.plots import PNG_DPI, RC_PARAMS, NamedFigure, Note, build_figures, print_note
from fedzo.reporting.rundir import Run, display_names, load_run
from fedzo.units import format_accuracy, format_bytes, format_duration, format_interval, format_memory

_CAPTIONS = {
    "accuracy_vs_time": "Eval accuracy against cumulative simulated wall-clock on the devices (band: 95 % interval).",
    "accuracy_vs_host_time": "Eval accuracy against this machine's wall-clock (band: 95 % interval).",
    "accuracy_vs_bytes": "Eval accuracy against cumulative bytes communicated (up + down).",
    "accuracy_vs_round": "Eval accuracy against round.",
    "memory_frontier": "Largest model trainable within each device memory budget, BP vs ZO.",
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.9em; }
figure { margin: 2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.notes { color: #555; font-size: 0.9em; }
"""

# (header, summary key, formatter, numeric?)
_COLUMNS: tuple[tuple[str, str, Any, bool], ...] = (
    ("model", "model", str, False),
    ("optimizer", "optimizer", str, False),
    ("method", "method", str, False),
    ("final accuracy", "final_accuracy", format_accuracy, True),
    ("95 % interval", "final_accuracy_interval", format_interval, True),
    ("examples", "eval_n", str, True),
    ("best accuracy", "best_accuracy", format_accuracy, True),
    ("simulated time", "sim_seconds", format_duration, True),
    ("time basis", "sim_time_basis", str, False),
    ("host time", "host_seconds", format_duration, True),
    ("bytes up", "bytes_up", format_bytes, True),
    ("bytes down", "bytes_down", format_bytes, True),
    ("peak client memory", "peak_client_memory_bytes", format_memory, True),
)


def _cell(value: Any, formatter: Any) -> str:
    if value is None:
        return "–"
    try:
        return str(formatter(value))
    except (TypeError, ValueError):  # a field of an unexpected type: show it as written
        return str(value)


def comparison_table(runs: Sequence[Run]) -> str:
    """The HTML ``<table>`` of run totals (one row per run), every value escaped."""
    labels = display_names(list(runs))
    head = ["run"] + [c[0] for c in _COLUMNS] + ["model sha256"]
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for run, label in zip(runs, labels, strict=True):
        cells = [f'<td title="{html.escape(str(run.path))}">{html.escape(label)}</td>']
        for _, key, formatter, numeric in _COLUMNS:
            text = html.escape(_cell(run.summary.get(key), formatter))
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        sha = run.summary.get("model_sha256")
        short = html.escape(str(sha)[:12]) if sha else "–"
        title = html.escape(str(sha)) if sha else ""
        cells.append(f'<td><code title="{title}">{short}</code></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def environment_table(runs: Sequence[Run]) -> str:
    """The HTML ``<table>`` of what each run computed on (``environment.json``): the versions,
    the CPU capability and the device that decide whether two runs can agree bit for bit."""
    labels = display_names(list(runs))
    head = ["run", "python", "torch", "transformers", "peft", "flwr", "numpy", "CPU capability", "CPU",
            "device", "dtype", "threads"]
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for run, label in zip(runs, labels, strict=True):
        env = run.environment
        values: list[Any]
        if env is None:
            values = ["not recorded (run made before fedzo recorded its environment)"]
        else:
            pkgs = env.get("packages") or {}
            device = env.get("device") if not env.get("gpu") else f"{env.get('device')} ({env.get('gpu')})"
            values = [env.get("python"), *(pkgs.get(n) for n in ("torch", "transformers", "peft", "flwr", "numpy")),
                      env.get("cpu_capability"), env.get("cpu_model"), device, env.get("dtype"),
                      env.get("torch_threads")]
        cells = "".join(f"<td>{html.escape(_cell(v, str))}</td>" for v in values)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _png_data_uri(named: NamedFigure) -> str:
    buf = io.BytesIO()
    with matplotlib.rc_context(RC_PARAMS):
        named.figure.savefig(buf, format="png", dpi=PNG_DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _caption(stem: str) -> str:
    if stem.startswith("timeline"):
        return "Per-device timeline: download, compute and upload phases of each client."
    return _CAPTIONS.get(stem, stem)


def render_report(runs: Sequence[Run], note: Note = print_note) -> str:
    """The complete HTML page for ``runs`` (table, figures, notes on skipped figures)."""
    notes: list[str] = []

    def collect(message: str) -> None:
        notes.append(message)
        note(message)

    with matplotlib.rc_context(RC_PARAMS):
        figures = build_figures(runs, collect)
    names = ", ".join(display_names(list(runs)))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>fedzo report: {html.escape(names)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>fedzo report: {html.escape(names)}</h1>",
        "<h2>Comparison</h2>",
        comparison_table(runs),
        "<h2>Environment</h2>",
        environment_table(runs),
        "<h2>Figures</h2>",
    ]
    for named in figures:
        caption = html.escape(_caption(named.stem))
        parts.append(
            f'<figure id="{html.escape(named.stem)}"><img alt="{caption}" '
            f'src="{_png_data_uri(named)}"><figcaption>{caption}</figcaption></figure>'
        )
    if not figures:
        parts.append("<p>No figure could be drawn from these runs.</p>")
    if notes:
        parts.append('<h2>Notes</h2><ul class="notes">')
        parts.extend(f"<li>{html.escape(n)}</li>" for n in notes)
        parts.append("</ul>")
    parts.append(
        f'<p class="notes">Generated by fedzo {html.escape(fedzo.__version__)} from: '
        + ", ".join(f"<code>{html.escape(str(r.path))}</code>" for r in runs)
        + "</p></body></html>"
    )
    return "\n".join(parts) + "\n"


def write_report(
    run_dirs: Sequence[str | Path], out: str | Path, *, note: Note = print_note
) -> Path:
    """Load ``run_dirs`` and write their HTML report to ``out``; returns the path.

    Raises:
        ConfigError: a run directory is missing or malformed, or ``out`` cannot be written.
    """
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise ConfigError("no run directories given; expected at least one RUN")
    page = render_report(runs, note)
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the report ({exc})") from exc
    write_whole(path, page)  # a failed write leaves the old report, never a truncated one
    return path
