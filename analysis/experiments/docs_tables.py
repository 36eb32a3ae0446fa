"""The tables docs show, regenerated from the committed results they come from.

A generated block in a docs page sits between ``<!-- generated: NAME -->`` and
``<!-- end generated: NAME -->``; :data:`BLOCKS` says how each NAME is made from its
committed JSON. ``python -m analysis.experiments.docs_tables`` rewrites every block;
``--check`` exits 1 naming each block that differs (``tests/analysis/test_docs_tables.py``
runs it), so a table in the docs is always the one its JSON gives.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BYZANTINE = "analysis/results/byzantine"


def _json(path: str) -> Any:
    return json.loads((ROOT / path).read_text(encoding="utf-8"))


def _byzantine(name: str) -> Callable[[], str]:
    def make() -> str:
        from analysis.experiments.byzantine import format_table

        return format_table(_json(f"{BYZANTINE}/{name}/results.json"))

    return make


def _resume() -> str:
    from fedzo.bench.faults import markdown_resume_table

    return markdown_resume_table(_json(f"{BYZANTINE}/faults_resume.json"))


BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {  # name: (docs page, maker)
    "faults-resume": ("docs/faults.md", _resume),
    "byzantine-f0.2": ("docs/faults.md", _byzantine("persistent-f0.2")),
    "byzantine-f0.3": ("docs/faults.md", _byzantine("persistent-f0.3")),
    "byzantine-threshold0-f0.2": ("docs/faults.md", _byzantine("threshold0-f0.2")),
    "byzantine-threshold0-f0.3": ("docs/faults.md", _byzantine("threshold0-f0.3")),
}


def _pattern(name: str) -> re.Pattern[str]:
    n = re.escape(name)
    return re.compile(rf"(<!-- generated: {n} -->\n)(.*?)(<!-- end generated: {n} -->)", re.DOTALL)


def render(text: str, name: str, body: str) -> str:
    """``text`` with block ``name``'s content replaced by ``body``; ValueError if the page has no such block."""
    pattern = _pattern(name)
    if not pattern.search(text):
        raise ValueError(f"no block '<!-- generated: {name} -->' ... '<!-- end generated: {name} -->'")
    return pattern.sub(lambda m: m.group(1) + body + m.group(3), text)


def stale(write: bool) -> list[str]:
    """The blocks whose page differs from what their JSON gives (rewritten when ``write``)."""
    out = []
    for name, (page, make) in BLOCKS.items():
        path = ROOT / page
        text = path.read_text(encoding="utf-8")
        try:
            new = render(text, name, make())
        except ValueError as e:
            out.append(f"{page}: {e}")
            continue
        if new != text:
            out.append(f"{page}: block {name}")
            if write:
                path.write_text(new, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated blocks, or with ``--check`` list the stale ones."""
    p = argparse.ArgumentParser(prog="python -m analysis.experiments.docs_tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    a = p.parse_args(argv)
    found = stale(write=not a.check)
    for line in found:
        print(("stale: " if a.check else "rewritten: ") + line)
    return 1 if a.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
