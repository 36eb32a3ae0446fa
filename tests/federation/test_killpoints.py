"""Kill anywhere: a run SIGKILLed at any kill point (fedzo/killpoints.py) and resumed ends
bitwise equal to the uninterrupted run, with no metrics record lost or duplicated.

Each case runs `fedzo run` in a fresh process with FEDZO_KILL_AT=POINT@ROUND, checks the
process really died by SIGKILL at that point, resumes the run directory with
`fedzo run --resume` (a fresh process again), and compares it with an uninterrupted run of
the same scenario, also made in a fresh process. A subset runs by default;
`pytest -m slow tests/federation/test_killpoints.py` runs every point of both protocols,
of the seeds-and-scalars protocol on the batched engine, and of both on the simulation
(Ray) engine.
On the simulation engine the client points run inside Ray's workers, where a SIGKILL
takes down a worker, not the run: those are left out. The killed driver's Ray processes
linger for a few seconds and exit; the resumed run starts a Ray of its own. Its node ids
are new random numbers whose wire size differs by a byte or so, so there the byte counts
and transfer times are compared only through the model hash and the other fields.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from fedzo.killpoints import ENV, POINTS
from fedzo.records import HOST_MEASURED_KEYS
from fedzo.runs import RunDir

SCENARIO = {
    "version": 2, "name": "kill", "seed": 0,
    "model": {"name": "tiny-llama"},
    "data": {"task": "synthetic-sentiment", "train_examples": 96, "eval_examples": 32, "batch_size": 8},
    "zo": {"eps": 1e-3}, "optimizer": {"lr": 1e-3}, "runtime": {"device": "cpu", "threads": 1},
    # 2 of 4 clients per round: returning clients catch up on the rounds they missed
    "federation": {"num_clients": 4, "clients_per_round": 2, "rounds": 3, "local_steps": 2, "eval_every": 1},
    "fleet": {"devices": [{"profile": "laptop-cpu", "count": 4}]},
}
FEDAVG = {"optimizer": {"name": "fo-sgd", "lr": 1e-2}, "federation": {**SCENARIO["federation"], "fo_local_epochs": 1}}
# the batched engine with prompt tuning: every local step of a round in joint forward passes
BATCHED = {"model": {"name": "tiny-llama", "peft": "prompt"}, "federation": {**SCENARIO["federation"], "engine": "batched"}}
# Flower's simulation engine on a local Ray, one client at a time (slow: a Ray start per process)
SIMULATION = {"federation": {**SCENARIO["federation"], "engine": "simulation", "simulation": {"max_concurrent": 1}}}
FEDAVG_SIMULATION = {**FEDAVG, "federation": {**FEDAVG["federation"], **SIMULATION["federation"]}}
VARIANTS = {"zo": {}, "zo-batched": BATCHED, "fedavg": FEDAVG, "zo-sim": SIMULATION, "fedavg-sim": FEDAVG_SIMULATION}
CLIENT_POINTS = {"client-caught-up", "client-trained", "client-setup-stored"}
# reached outside the rounds (before the first, or at the end): killed the first time
ONCE = {"handshake-done", "client-setup-stored", "fleet-recorded", "round0-evaluated", "summary-temp-written"}
ZO_ONLY = {"zo-log-torn", "zo-log-appended", "zo-model-applied"}
FEDAVG_ONLY = {"fedavg-aggregated", "fedavg-checkpoint-written"}
DEFAULT = {("zo", "zo-log-torn"), ("zo", "zo-log-appended"), ("zo", "evaluating"), ("zo", "client-caught-up"),
           ("zo-batched", "client-trained"), ("zo-batched", "zo-log-appended"),
           ("fedavg", "fedavg-checkpoint-written"), ("fedavg", "metrics-torn"), ("fedavg", "committed")}


def _cases() -> list[object]:
    cases = []
    for protocol in VARIANTS:
        for point in POINTS:
            fedavg = protocol.startswith("fedavg")
            if (not fedavg and point in FEDAVG_ONLY) or (fedavg and point in ZO_ONLY):
                continue
            if protocol.endswith("-sim") and point in CLIENT_POINTS:
                continue
            marks = () if (protocol, point) in DEFAULT else (pytest.mark.slow,)
            cases.append(pytest.param(protocol, point, marks=marks, id=f"{protocol}-{point}"))
    return cases


def _scenario(tmp: Path, protocol: str) -> Path:
    path = tmp / f"{protocol}.yaml"
    path.write_text(yaml.safe_dump({**SCENARIO, **VARIANTS[protocol]}), encoding="utf-8")
    return path


def _node_id_sized(key: str) -> bool:
    """Fields that follow the size of Flower's random node ids on the wire (a resumed
    simulation is a new Flower run with new ids): the bytes and the transfer times."""
    return key.startswith(("bytes_", "sim_", "round_sim")) or key in ("sim_seconds",)


def _records(run: Path, *, node_ids_fixed: bool = True) -> Counter[str]:
    """The run's metric records without host-measured fields, as a multiset (without the
    fields sized by the node ids, unless those are fixed, as in the in-process engines)."""
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return Counter(json.dumps({k: v for k, v in json.loads(x).items() if k not in HOST_MEASURED_KEYS
                               and (node_ids_fixed or not _node_id_sized(k))}, sort_keys=True) for x in lines)


def _fedzo_run(*args: str, kill: str | None = None) -> subprocess.CompletedProcess[str]:
    """`fedzo run ARGS` in a fresh process (every run of a case starts from the same state)."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if kill:
        env[ENV] = kill
    return subprocess.run([sys.executable, "-m", "fedzo", "run", *args, "--no-progress", "--no-plots"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)


class References(dict[str, tuple[Path, Path]]):
    """Per protocol: (scenario file, uninterrupted run directory), made when first asked for."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, protocol: str) -> tuple[Path, Path]:
        scen = _scenario(self.root, protocol)
        proc = _fedzo_run(str(scen), "--out", str(self.root / protocol))
        assert proc.returncode == 0, proc.stderr[-1500:]
        self[protocol] = (scen, self.root / protocol)
        return self[protocol]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> References:
    """The uninterrupted runs, one per protocol that a selected case needs."""
    return References(tmp_path_factory.mktemp("kill-ref"))


def test_every_kill_point_is_placed_in_the_code() -> None:
    root = Path(__file__).resolve().parents[2] / "fedzo"
    src = "".join(p.read_text(encoding="utf-8") for p in root.rglob("*.py"))
    for point in POINTS:
        assert f'kill_point("{point}"' in src or f'write_torn("{point}"' in src, point


@pytest.mark.parametrize("protocol,point", _cases())
def test_a_run_killed_at_a_point_resumes_to_the_same_model(protocol: str, point: str, tmp_path: Path,
                                                          reference: References) -> None:
    scen, ref = reference[protocol]
    run = tmp_path / "run"
    proc = _fedzo_run(str(scen), "--out", str(run), kill=f"{point}@{1 if point in ONCE else 2}")
    assert proc.returncode == -signal.SIGKILL, f"{point} not reached (exit {proc.returncode}): {proc.stderr[-1500:]}"
    proc = _fedzo_run("--resume", str(run))
    assert proc.returncode == 0, proc.stderr[-1500:]
    want, got = RunDir.open(ref).read_summary(), RunDir.open(run).read_summary()
    assert want is not None and got is not None and got.model_sha256 == want.model_sha256
    fixed = not protocol.endswith("-sim")
    have, expected = _records(run, node_ids_fixed=fixed), _records(ref, node_ids_fixed=fixed)
    assert have - expected == Counter(), "records duplicated or changed"
    assert expected - have == Counter(), "records lost"


def test_interrupt_at_raises_in_process_only_at_its_point_and_round() -> None:
    from fedzo.killpoints import Interrupted, interrupt_at, kill_point

    with interrupt_at("round-start", 3):
        kill_point("round-start", 2)  # another round: nothing
        kill_point("committed", 3)  # another point: nothing
        with pytest.raises(Interrupted, match="round-start@3"):
            kill_point("round-start", 3)
    kill_point("round-start", 3)  # disarmed on leaving the block
    with pytest.raises(ValueError, match="unknown kill point"), interrupt_at("no-such-point"):
        pass
