"""A full disk: every command says so in one line, records land whole or not at all, and the
run resumes to the hash of an uninterrupted one."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import fedzo.atomic
from fedzo.cli import main


class _FullDisk:
    """``open`` for :mod:`fedzo.atomic` that lets ``allowed`` writes through, then writes
    half of each text and fails with ENOSPC (as a disk that fills mid-write)."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed

    def __call__(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115 - handed to the caller's with-block
        if "r" in mode:
            return f
        self.allowed -= 1
        if self.allowed >= 0:
            return f
        real = f.write

        def write(data: Any) -> int:
            real(data[: max(1, len(data) // 2)])
            f.flush()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        f.write = write
        return f


def _scenario(tmp_path: Path, fed_config: Any) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(fed_config(rounds=3).model_dump(mode="json")))
    return path


def _lines_whole(path: Path) -> None:
    for line in path.read_text().splitlines():
        json.loads(line)  # no half record


def test_a_full_disk_stops_a_run_cleanly_and_it_resumes_to_the_same_hash(tmp_path: Path, fed_config: Any,
                                                                          monkeypatch: Any, capsys: Any) -> None:
    scenario = _scenario(tmp_path, fed_config)
    assert main(["run", str(scenario), "--out", str(tmp_path / "whole"), "--no-progress", "--no-plots"]) == 0
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())["model_sha256"]
    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(fedzo.atomic, "open", _FullDisk(allowed=6), raising=False)
        assert main(["run", str(scenario), "--out", str(tmp_path / "full"), "--no-progress", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert f"permissions, then continue with: fedzo run --resume {tmp_path / 'full'}" in err
    run = tmp_path / "full"
    assert not (run / "summary.json").exists()
    _lines_whole(run / "metrics.jsonl")
    _lines_whole(run / "update_log.jsonl")
    assert main(["run", "--resume", str(run), "--no-progress", "--no-plots"]) == 0
    assert json.loads((run / "summary.json").read_text())["model_sha256"] == whole


@pytest.mark.parametrize("command", ["plot", "report"])
def test_plots_and_reports_are_written_whole_or_not_at_all(tmp_path: Path, fed_config: Any, monkeypatch: Any,
                                                           capsys: Any, command: str) -> None:
    scenario = _scenario(tmp_path, fed_config)
    run = tmp_path / "run"
    assert main(["run", str(scenario), "--out", str(run), "--no-progress", "--no-plots"]) == 0
    out = tmp_path / ("plots" if command == "plot" else "report.html")
    args = [command, str(run), "--out", str(out)]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in ([*out.iterdir()] if out.is_dir() else [out])}
    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(fedzo.atomic, "open", _FullDisk(allowed=0), raising=False)
        assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and str(out) in err
    after = {p.name: p.read_bytes() for p in ([*out.iterdir()] if out.is_dir() else [out])}
    assert after == before  # the old files, whole; no temporary file left behind


def test_an_unwritable_run_directory_is_one_clear_error(tmp_path: Path, fed_config: Any, monkeypatch: Any,
                                                        capsys: Any) -> None:
    scenario = _scenario(tmp_path, fed_config)

    def refuse(*_: Any, **__: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["run", str(scenario), "--out", str(tmp_path / "ro" / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error: cannot write" in err and "Permission denied" in err and "Traceback" not in err
