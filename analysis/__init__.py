"""Analysis of fedzo run directories: readers, plots and HTML reports.

Everything here reads the files a run leaves on disk (``summary.json``,
``metrics.jsonl``, ``memory_frontier.json``, ``scenario.yaml``) and nothing else, so it
works on runs from any fedzo version or machine without importing training code.
"""

from __future__ import annotations

from analysis.rundir import ClientRecord, FrontierModel, MemoryFrontier, RoundRecord, Run, load_run

__all__ = [
    "ClientRecord",
    "FrontierModel",
    "MemoryFrontier",
    "RoundRecord",
    "Run",
    "load_run",
]
