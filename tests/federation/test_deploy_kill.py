"""A dying node and then a dying server, for real: ``scripts/deploy_local.sh`` runs a SuperLink
and 3 SuperNodes on loopback; one SuperNode is killed after round 1, the SuperLink after round
3; the script must stop with a resume hint and leave no process behind, and ``--resume`` must
finish the run with every round recorded once and a final model equal to a replay of the run's
own update log (which rounds the dead node missed depends on timing, so an uninterrupted
run's hash is not the reference). Round 2 waits for Flower to mark the dead node offline (its
heartbeat interval, 30 s, times a patience of 2: fixed in flwr 1.41), round 3 goes on without
it at once. About 3 minutes on 2 cores (a round takes about 15 s); marked ``deploy``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fedzo.federation.server.global_model import load_global_model

SCENARIO = """\
version: 2
name: deploy-kill
model: {name: tiny-llama}
data: {task: synthetic-sentiment, train_examples: 96, eval_examples: 16, batch_size: 8}
optimizer: {lr: 0.001}
runtime: {device: cpu, threads: 1}
federation:
  num_clients: 3
  rounds: 5
  local_steps: 2
  round_timeout: 300
fleet:
  default_profile: rpi5-8gb
"""
DEPLOY_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "deploy_local.sh"


def _tree(roots: set[int]) -> set[int]:
    """``roots`` and every live descendant (by the parent PIDs in /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, grew = set(roots), True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in out} - out
        out |= more
        grew = bool(more)
    return out


class _Script:
    """``deploy_local.sh`` in its own session, its output collected as it comes."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.proc = subprocess.Popen(["bash", str(DEPLOY_SCRIPT), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def pids(self, timeout: float = 120) -> list[int]:
        """The SuperLink's and the SuperNodes' PIDs, as the script prints them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith("deploy_local: pids "):
                    return [int(p) for p in line.split()[2:]]
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail("deploy_local.sh printed no pids:\n" + "\n".join(self.lines))

    def finish(self, timeout: float) -> int:
        """Wait for the script (its trap stops what it started); its exit status."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            pytest.fail("deploy_local.sh did not end:\n" + "\n".join(self.lines))
        self._reader.join(timeout=5)
        return self.proc.returncode


def _rounds_done(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        return 0
    rounds = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return max((r["round"] for r in rounds if r.get("kind") == "round"), default=0)


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot; None when it is gone): with the
    PID it names one process, since a PID is reused once it dies (pid_max may be 32768)."""
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _note(seen: dict[int, int], pids: set[int]) -> None:
    """Add each process of ``pids`` not seen yet, with its start time."""
    for pid in pids - set(seen):
        if (started := _start_time(pid)) is not None:
            seen[pid] = started


def _wait_for_round(run: Path, round_: int, script: _Script, seen: dict[int, int], timeout: float = 240) -> None:
    """Wait for ``round_`` to be recorded, collecting into ``seen`` every process the
    script's processes start (the ServerApp, the per-message ClientApps)."""
    deadline = time.monotonic() + timeout
    while _rounds_done(run) < round_:
        if script.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"round {round_} never came:\n" + "\n".join(script.lines))
        _note(seen, _tree({script.proc.pid, *seen}))
        time.sleep(0.2)


def _still_alive(procs: dict[int, int], seconds: float = 30) -> dict[int, str]:
    """Which of ``procs`` (PID: start time) are alive after up to ``seconds``, with their
    command lines (the ServerApp's watchdog notices a dead SuperLink within a few seconds).
    A PID now held by a process started later is another process: not counted."""
    deadline = time.monotonic() + seconds
    while True:
        left = {p for p, started in procs.items() if _start_time(p) == started and not _zombie(p)}
        if not left or time.monotonic() > deadline:
            return {p: _command(p) for p in sorted(left)}
        time.sleep(0.5)


def _command(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def _zombie(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.mark.deploy
def test_a_killed_supernode_and_a_killed_superlink_lose_nothing_and_leave_nothing(tmp_path: Path) -> None:
    scenario = tmp_path / "deploy-kill.yaml"
    scenario.write_text(SCENARIO)
    run, logs = tmp_path / "run", tmp_path / "logs"
    first = _Script(str(scenario), "--out", str(run), "--logs", str(logs), "--timeout", "400")
    link, *nodes = first.pids()
    assert len(nodes) == 3
    seen: dict[int, int] = {}
    _note(seen, {link, *nodes})
    _wait_for_round(run, 1, first, seen)
    os.kill(nodes[1], signal.SIGKILL)  # a board gone: the run goes on without it
    _wait_for_round(run, 3, first, seen)
    _note(seen, _tree(set(seen)))
    os.kill(link, signal.SIGKILL)  # the server gone: the script stops and says how to resume
    assert first.finish(timeout=120) != 0
    output = "\n".join(first.lines)
    assert "SuperNode 1" in output and "the run goes on without it" in output
    assert "resume with --resume" in output
    assert not any(_start_time(p) == seen[p] and not _zombie(p) for p in (link, *nodes))
    assert len(seen) > 6  # the ServerApp and ClientApps were seen too
    assert _still_alive({p: t for p, t in seen.items() if p != first.proc.pid}) == {}, \
        "a process of the first run outlived it"

    done_before = _rounds_done(run)
    assert 3 <= done_before < 5
    second = _Script(str(scenario), "--out", str(run), "--logs", str(logs), "--timeout", "400", "--resume")
    seen = {}
    _note(seen, set(second.pids()))
    _wait_for_round(run, 5, second, seen)
    assert second.finish(timeout=400) == 0, "\n".join(second.lines)
    assert _still_alive(seen) == {}, "a process of the resumed run outlived it"

    records: list[dict[str, Any]] = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
                                     if x.strip()]
    rounds = [r["round"] for r in records if r.get("kind") == "round"]
    assert rounds == list(range(6))  # the initial evaluation and every round once: none lost, none twice
    clients = [(r["round"], r["client"], r["attempt"]) for r in records if r.get("kind") == "client"]
    assert len(clients) == len(set(clients))
    summary = json.loads((run / "summary.json").read_text())
    rebuilt = load_global_model(run)
    assert rebuilt.rounds == 5 and rebuilt.model_sha256 == summary["model_sha256"]
