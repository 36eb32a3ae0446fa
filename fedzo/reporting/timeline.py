"""Per-device timeline of a federated run: when each client downloaded, computed, uploaded.

One horizontal lane per client (capped at :data:`MAX_CLIENTS`), one bar per round split
into the three phases from the client lines of ``metrics.jsonl``. Round ends (the
cumulative ``sim_seconds`` of round lines) are dashed vertical lines.
"""

from __future__ import annotations

from collections.abc import Callable

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fedzo.reporting.rundir import ClientRecord, Run, is_finite
from fedzo.units import time_unit

MAX_CLIENTS = 40

PHASES: tuple[tuple[str, str, str, str], ...] = (
    # (label, start field, end field, color)
    ("download", "sim_start", "sim_download_end", "#4c9be8"),
    ("compute", "sim_download_end", "sim_compute_end", "#f5a623"),
    ("upload", "sim_compute_end", "sim_end", "#3fb37f"),
)
UNSPLIT_COLOR = "#9e9e9e"  # a round whose phase boundaries were not recorded
FAILED_STATUSES = ("dropped", "failed")
ABSENT_STATUSES = ("excluded", "offline")


def _client_label(client: int | str, records: list[ClientRecord]) -> str:
    devices = sorted({r.device for r in records if r.device})
    return f"{client} · {', '.join(devices)}" if devices else str(client)


def _last_time(rec: ClientRecord) -> float | None:
    for key in ("sim_end", "sim_compute_end", "sim_download_end", "sim_start"):
        value = getattr(rec, key)
        if is_finite(value):
            return float(value)
    return None


def _transfer_share(records: list[ClientRecord]) -> float | None:
    """Fraction of the recorded client time spent downloading and uploading."""
    transfer = total = 0.0
    for r in records:
        times = [r.sim_start, r.sim_download_end, r.sim_compute_end, r.sim_end]
        known = [t for t in times if is_finite(t)]
        if len(known) == 4 and known[3] > known[0]:
            start, download_end, compute_end, end = known
            total += end - start
            transfer += (download_end - start) + (end - compute_end)
    return transfer / total if total > 0 else None


def _draw_record(ax: Axes, rec: ClientRecord, lane: int, scale: float, round_start: float) -> bool:
    """Draw one client-round on ``lane``; True if it had to be drawn as one grey bar."""
    bar_h = 0.7
    y = (lane - bar_h / 2, bar_h)
    faded = rec.status in FAILED_STATUSES
    hatch = "///" if rec.status == "late" else None
    drawn = unsplit = False
    for _, start_key, end_key, color in PHASES:
        start, end = getattr(rec, start_key), getattr(rec, end_key)
        if is_finite(start) and is_finite(end) and end >= start:
            ax.broken_barh(
                [(start / scale, (end - start) / scale)], y, facecolors=color,
                alpha=0.35 if faded else 1.0, hatch=hatch,
                edgecolor="#333333" if hatch else "white", linewidth=0.6,
            )
            drawn = True
    if not drawn and is_finite(rec.sim_start) and is_finite(rec.sim_end):
        start, end = rec.sim_start, rec.sim_end
        ax.broken_barh([(start / scale, (end - start) / scale)], y, facecolors=UNSPLIT_COLOR,
                       hatch=hatch, edgecolor="#333333" if hatch else "white", linewidth=0.6)
        unsplit = True
    if faded and (t := _last_time(rec)) is not None:
        ax.plot(t / scale, lane, marker="x", color="#c62828", markersize=7, mew=2)
    if rec.status in ABSENT_STATUSES:
        t0 = rec.sim_start if is_finite(rec.sim_start) else round_start
        ax.plot(t0 / scale, lane, marker="o", mfc="none", color="#757575", markersize=5)
    return unsplit


def _draw_lanes(ax: Axes, run: Run, by_client: dict[int | str, list[ClientRecord]],
                shown: list[int | str], scale: float) -> tuple[set[str], bool]:
    """Draw every client-round of the ``shown`` clients, one lane each.

    Returns the statuses seen and whether some round had to be drawn as one grey bar.
    """
    round_start = {r.round + 1: r.sim_seconds for r in run.rounds if is_finite(r.sim_seconds)}
    statuses: set[str] = set()
    unsplit = False
    for lane, client in enumerate(shown):
        for rec in by_client[client]:
            statuses.add(rec.status)
            unsplit |= _draw_record(ax, rec, lane, scale, round_start.get(rec.round, 0.0))
    return statuses, unsplit


def _title(run: Run, label: str, shown: int, clients: int) -> str:
    """The figure title, with remarks on hidden clients and too-thin transfer phases."""
    title = f"Per-device timeline: {label}"
    remarks = []
    if clients > shown:
        remarks.append(f"showing the first {shown} of {clients} clients")
    share = _transfer_share(run.clients)
    if share is not None and share < 0.01:
        remarks.append(f"download + upload are {100 * share:.2g} % of client time, too thin to see")
    if remarks:
        title += "\n(" + "; ".join(remarks) + ")"
    return title


def _legend_handles(statuses: set[str], unsplit: bool, round_ends: bool) -> list[Patch | Line2D]:
    """Legend entries: the phases, then only the markers that appear in the figure."""
    handles: list[Patch | Line2D] = [Patch(facecolor=c, edgecolor="#333333", label=n)
                                     for n, _, _, c in PHASES]
    if unsplit:
        handles.append(Patch(facecolor=UNSPLIT_COLOR, label="round (phases not recorded)"))
    if "late" in statuses:
        handles.append(Patch(facecolor="white", edgecolor="#333333", hatch="///",
                             label="late (past deadline)"))
    if statuses & set(FAILED_STATUSES):
        handles.append(Line2D([], [], marker="x", color="#c62828", mew=2, linestyle="",
                              label="dropped / failed"))
    if statuses & set(ABSENT_STATUSES):
        handles.append(Line2D([], [], marker="o", mfc="none", color="#757575", linestyle="",
                              label="excluded / offline"))
    if round_ends:
        handles.append(Line2D([], [], color="#616161", linestyle="--", linewidth=0.7,
                              label="round end"))
    return handles


def timeline_figure(run: Run, label: str, note: Callable[[str], None]) -> Figure | None:
    """The per-device timeline of ``run``, or None (with a note) if it has no client lines."""
    if not run.clients:
        note(f"{label}: no client lines in metrics.jsonl; per-device timeline skipped")
        return None
    by_client: dict[int | str, list[ClientRecord]] = {}
    for rec in run.clients:
        by_client.setdefault(rec.client, []).append(rec)
    order = sorted(by_client, key=lambda c: (0, c) if isinstance(c, int) else (1, str(c)))
    shown = order[:MAX_CLIENTS]
    ends = [t for recs in by_client.values() for r in recs if (t := _last_time(r)) is not None]
    ends += [r.sim_seconds for r in run.rounds if is_finite(r.sim_seconds)]
    if not ends:
        note(f"{label}: client lines carry no simulated times; per-device timeline skipped")
        return None
    unit, scale = time_unit(max(ends))

    height = max(3.0, 0.28 * len(shown) + 1.8)
    fig = Figure(figsize=(11.0, height), layout="constrained")
    ax = fig.add_subplot()
    statuses, unsplit = _draw_lanes(ax, run, by_client, shown, scale)
    round_ends = [r.sim_seconds for r in run.rounds if is_finite(r.sim_seconds) and r.round > 0]
    for end in round_ends:
        ax.axvline(end / scale, color="#616161", linestyle="--",
                   linewidth=0.7, zorder=0)
    ax.set_yticks(range(len(shown)), [_client_label(c, by_client[c]) for c in shown],
                  fontsize=8 if len(shown) <= 20 else 6)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlim(left=0)
    ax.set_xlabel(f"simulated wall-clock ({unit})")
    ax.set_ylabel("client · device")
    ax.set_title(_title(run, label, len(shown), len(order)))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=_legend_handles(statuses, unsplit, bool(round_ends)), loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig
