"""The README and the docs stay true to the repository: every relative link names a file that
exists, every anchor names a heading of its page, every `fedzo` command the README shows is
a registered sub-command whose --help works, every `python -m` module it shows exists, and the
README stays short (issue 41)."""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

from fedzo import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "scripts" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 300

_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _outside_fences(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return out


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    return [_CODE_SPAN.sub("", line) for line in _outside_fences(text)]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but '-' and '_'), spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _outside_fences(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = _slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        anchors.add(base if n == 0 else f"{base}-{n}")
    return frozenset(anchors)


def _links(path: Path) -> list[str]:
    targets = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        targets += _LINK.findall(line) + _IMAGE.findall(line)
    return targets


def _is_external(target: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_name_existing_files_and_headings(page: Path) -> None:
    assert page.exists(), f"{_rel(page)} is missing"
    problems = []
    links = [t for t in _links(page) if not _is_external(t)]
    for target in links:
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            problems.append(f"{target}: {file_part} does not exist")
            continue
        if anchor and dest.suffix == ".md" and dest.is_file() and anchor not in _anchors(dest):
            problems.append(f"{target}: no heading '#{anchor}' in {_rel(dest)}")
    assert not problems, f"{_rel(page)}: " + "; ".join(problems)


def _bash_lines(text: str) -> list[str]:
    """The lines of the ```bash blocks (a trailing backslash joins the next line)."""
    out, block, joined = [], None, ""
    for line in text.splitlines():
        stripped = line.strip()
        if block is None:
            if re.match(r"^```\s*(bash|sh|shell|console)\b", stripped):
                block = []
            continue
        if stripped.startswith("```"):
            out += block
            block = None
            continue
        joined += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            block.append(joined.strip())
            joined = ""
    return out


def _readme_commands() -> tuple[set[str], set[str]]:
    """The fedzo sub-commands and the `python -m` modules that the README shows: in its bash
    blocks, and in inline code that starts with `fedzo ` or `python -m `."""
    text = README.read_text(encoding="utf-8")
    spans = [m.group(2).strip() for line in _outside_fences(text) for m in _CODE_SPAN.finditer(line)]
    commands = _bash_lines(text) + spans
    subs, modules = set(), set()
    for command in commands:
        command = re.sub(r"^(\$\s*|[A-Z_]+=\S+\s+)+", "", command)  # a prompt or env assignments
        m = re.match(r"^fedzo\s+([a-z][a-z-]*)", command)
        if m:
            subs.add(m.group(1))
        m = re.match(r"^python3?\s+-m\s+([\w.]+)", command)
        if m and re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*", m.group(1)):  # NAME placeholders skipped
            modules.add(m.group(1))
    return subs, modules


def _registered() -> set[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def test_the_readme_shows_only_registered_commands_whose_help_works(capsys: pytest.CaptureFixture[str]) -> None:
    subs, _ = _readme_commands()
    assert {"run", "evaluate", "plot", "report"} <= subs, f"the README's commands were not found: {sorted(subs)}"
    registered = _registered()
    unknown = subs - registered
    assert not unknown, f"README.md shows fedzo sub-commands that do not exist: {sorted(unknown)}; known: {sorted(registered)}"
    for sub in sorted(subs):
        with pytest.raises(SystemExit) as exit_:
            cli.main([sub, "--help"])
        assert exit_.value.code in (0, None), f"fedzo {sub} --help exited with {exit_.value.code}"
        assert f"usage: fedzo {sub}" in capsys.readouterr().out


def test_the_readme_commands_table_lists_every_sub_command() -> None:
    text = README.read_text(encoding="utf-8")
    rows = {m.group(1) for m in re.finditer(r"^\|\s*`fedzo ([a-z][a-z-]*)", text, re.MULTILINE)}
    assert rows == _registered(), f"README.md's commands table lists {sorted(rows)}, fedzo has {sorted(_registered())}"


def test_the_readme_python_modules_exist() -> None:
    _, modules = _readme_commands()
    missing = [m for m in sorted(modules) if importlib.util.find_spec(m) is None]
    assert not missing, f"README.md shows `python -m` of modules that do not exist: {missing}"


def test_the_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move depth into docs/ (at most {MAX_README_LINES})"
