"""The locked environment: constraints.txt pins every package, agrees with pyproject.toml's
ranges, and is what this environment has installed (scripts/test.sh installs from it)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for no, line in enumerate((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines(), start=1):
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"constraints.txt:{no}: {line!r} is not NAME==VERSION"
        key = canonicalize_name(name)
        assert key not in pins, f"constraints.txt:{no}: {name} pinned twice"
        pins[key] = version
    return pins


def test_every_requirement_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = _pins()
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    for req in reqs:
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"constraints.txt pins no version of {req.name}; rerun scripts/lock.sh"
        assert req.specifier.contains(version, prereleases=True), \
            f"constraints.txt pins {req.name}=={version}, outside pyproject.toml's {req}"
    assert pins["torch"] == "2.13.0"  # the local CPU build (no +cpu label, no CUDA build)


def test_this_environment_is_the_locked_one() -> None:
    """What is installed here is what the lock says (a drift means the install skipped it)."""
    drift = []
    for name, version in _pins().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # pip, setuptools and platform-only packages may be absent from a venv
        if have.split("+")[0] != version:
            drift.append(f"{name} {have} (locked {version})")
    assert not drift, ("installed versions differ from constraints.txt: " + ", ".join(drift)
                       + '; install with `pip install -c constraints.txt -e ".[test]"` (scripts/test.sh does)')
