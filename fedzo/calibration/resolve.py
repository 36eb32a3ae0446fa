"""Finding a scenario's calibration, and keeping the copy a run uses in its directory."""

from __future__ import annotations

from pathlib import Path

from fedzo.calibration.model import Calibration, load_calibration

SUFFIX = ".calibration.json"
RUN_COPY = "calibration.json"


def calibration_path(value: str) -> Path:
    """``fleet.calibration`` as a path: a bare name is a file of the device catalog."""
    from fedzo.devices.profiles import default_clients_dir

    if "/" not in value and not value.endswith(".json"):
        return default_clients_dir() / f"{value}{SUFFIX}"
    return Path(value).expanduser()


def run_calibration(run_dir: Path, value: str | None, *, resume: bool) -> tuple[Calibration | None, str]:
    """The calibration a run prices with, and its source.

    A fresh run reads ``value`` and copies it into the run directory; a resumed run reads
    that copy, so its simulated times never change under it.
    """
    copy = run_dir / RUN_COPY
    if resume and copy.is_file():
        return load_calibration(copy), str(copy)
    if value is None:
        copy.unlink(missing_ok=True)
        return None, ""
    path = calibration_path(value)
    cal = load_calibration(path)
    copy.write_text(cal.to_json(), encoding="utf-8")
    return cal, str(path)
