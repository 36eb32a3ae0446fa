"""An experiment's run directories packed into one runs.zip read back as the directories did."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from fedzo.archives import archive_of, expand, locate, main, pack, unpack
from fedzo.cli import main as fedzo_main
from fedzo.errors import ConfigError
from fedzo.reporting.rundir import load_run
from fedzo.runs import RunDir


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDZO_CACHE", str(tmp_path / "cache"))


def _run(root: Path, name: str, accuracy: float) -> Path:
    """A minimal finished run directory (scenario, two round records, summary)."""
    run = root / name
    run.mkdir(parents=True)
    (run / "scenario.yaml").write_text(f"kind: federated\nname: {name}\n", encoding="utf-8")
    rounds = [{"kind": "round", "round": r, "sim_seconds": 10.0 * r, "eval_accuracy": accuracy - 0.1 * (1 - r),
               "eval_n": 50, "bytes_up": 100 * r, "bytes_down": 200 * r} for r in (0, 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds), encoding="utf-8")
    (run / "summary.json").write_text(json.dumps({"name": name, "final_accuracy": accuracy}), encoding="utf-8")
    return run


def _experiment(tmp_path: Path) -> Path:
    runs = tmp_path / "exp" / "runs"
    _run(runs / "seed0", "zo", 0.8)
    _run(runs / "seed1", "zo", 0.7)
    _run(runs / "seed0", "bp", 0.6)
    (runs / "seed0" / "zo.test.json").write_text('{"accuracy": 0.81, "n": 1000}\n', encoding="utf-8")
    return runs


def test_a_packed_run_reads_as_it_did_on_disk(tmp_path: Path) -> None:
    runs = _experiment(tmp_path)
    before = load_run(runs / "seed0" / "zo")
    packed = pack(runs)
    assert packed == tmp_path / "exp" / "runs.zip" and not runs.exists()
    assert archive_of(runs / "seed0" / "zo") == (packed, "seed0/zo")
    after = load_run(runs / "seed0" / "zo")
    assert after.path == runs / "seed0" / "zo"  # the path given, not the cache's
    assert after.summary == before.summary and after.rounds == before.rounds
    assert json.loads(locate(runs / "seed0" / "zo.test.json").read_text())["accuracy"] == 0.81
    assert RunDir.read(runs / "seed1" / "zo").config()["name"] == "zo"
    assert locate(runs / "seed9" / "zo") == runs / "seed9" / "zo"  # not archived: the path itself


def test_packing_is_reproducible_and_merges(tmp_path: Path) -> None:
    runs = _experiment(tmp_path)
    first = pack(runs, remove=False).read_bytes()
    assert pack(runs).read_bytes() == first  # the same files give the same bytes
    _run(runs / "seed2", "zo", 0.75)  # the experiment extended: new runs on disk beside the archive
    assert load_run(runs / "seed2" / "zo").summary["final_accuracy"] == 0.75
    assert load_run(runs / "seed0" / "bp").summary["final_accuracy"] == 0.6
    merged = pack(runs)
    with zipfile.ZipFile(merged) as z:
        names = set(z.namelist())
    assert {"seed0/zo/metrics.jsonl", "seed2/zo/summary.json", "seed0/zo.test.json"} <= names


def test_a_differing_copy_is_not_merged_over(tmp_path: Path) -> None:
    runs = _experiment(tmp_path)
    pack(runs)
    _run(runs / "seed0", "zo", 0.5)  # same run name, other contents
    with pytest.raises(ConfigError, match=r"seed0/zo/.*differs from the copy in .*runs\.zip"):
        pack(runs)
    assert runs.exists()  # nothing removed


def test_unpack_restores_the_files_and_resume_asks_for_it(tmp_path: Path) -> None:
    runs = _experiment(tmp_path)
    original = {p.relative_to(runs): p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    packed = pack(runs)
    with pytest.raises(ConfigError, match=r"kept in the archive .*python -m fedzo.archives unpack"):
        RunDir.open(runs / "seed0" / "zo")  # what --resume opens: never the read-only cache copy
    assert unpack(packed) == runs and not packed.exists()
    assert {p.relative_to(runs): p.read_bytes() for p in runs.rglob("*") if p.is_file()} == original


def test_shell_patterns_expand_inside_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pack(_experiment(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert expand(["exp/runs/seed*/zo"]) == ["exp/runs/seed0/zo", "exp/runs/seed1/zo"]
    assert expand(["exp/runs/seed0/*"]) == ["exp/runs/seed0/bp", "exp/runs/seed0/zo"]
    assert expand(["exp/runs/none*/zo", "plain"]) == ["exp/runs/none*/zo", "plain"]  # no match: left to fail


def test_report_reads_archived_runs_and_writes_outside_them(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pack(_experiment(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert fedzo_main(["report", "exp/runs/seed*/zo"]) == 0
    assert (tmp_path / "report.html").is_file() and not (tmp_path / "exp" / "runs").exists()


def test_a_member_pointing_outside_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "runs.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.txt", "x")
    with pytest.raises(ConfigError, match="points outside the archive"):
        locate(tmp_path / "runs" / "evil.txt")
    assert not (tmp_path / "evil.txt").exists()


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _experiment(tmp_path)
    assert main(["pack", str(runs)]) == 0
    assert main(["list", str(runs) + ".zip"]) == 0
    assert capsys.readouterr().out.split("\n")[-4:-1] == ["seed0/bp", "seed0/zo", "seed1/zo"]
    assert main(["unpack", str(tmp_path / "nothing.zip")]) == 2
    assert "not a run archive" in capsys.readouterr().err


def test_an_experiment_script_reuses_its_archived_runs(tmp_path: Path) -> None:
    from analysis.experiments.common import cached_evaluation, run_scenario

    runs = _experiment(tmp_path)
    pack(runs)
    # a finished run is read from the archive: nothing runs (the scenario file does not even exist)
    assert run_scenario(tmp_path / "missing.yaml", runs / "seed0" / "zo")["final_accuracy"] == 0.8
    assert cached_evaluation(runs / "seed0" / "zo.test.json", runs / "seed0" / "zo")["accuracy"] == 0.81
