"""The documented hashes: what ``model_sha256`` a scenario gives under the locked environment,
per CPU capability.

A run's bits depend on the packages (``constraints.txt``), on the CPU kernels torch and MKL
pick by the processor's vector capability (AVX2 and AVX-512 hosts round the forward passes
differently, so the scalars and the model differ in the last bits), and on the thread count.
This script runs each scenario with ``fedzo run`` in a fresh process and stores its hash under
the capability it ran on::

    python -m analysis.experiments.known_hashes                      # this host's capability
    python -m analysis.experiments.known_hashes --emulate AVX2       # AVX2 kernels on an AVX-512 host
    python -m analysis.experiments.known_hashes --scenario smoke-tiny

``--emulate AVX2`` makes torch (``ATEN_CPU_CAPABILITY``), MKL (``MKL_ENABLE_INSTRUCTIONS``) and
oneDNN (``DNNL_MAX_CPU_ISA``) run their AVX2 code on a host that has AVX-512; the entry says it
was emulated. Entries are merged into ``analysis/results/reproducibility/known_hashes.json``
with the digest of the ``constraints.txt`` they hold for: after ``scripts/lock.sh`` refreshes
the lock, rerun this (each capability) in the same commit; ``tests/test_known_hashes.py`` fails
while the stored lock digest is not the present one, and checks this host's smoke-tiny hash.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "analysis" / "results" / "reproducibility" / "known_hashes.json"
LOCK = ROOT / "constraints.txt"
SCENARIOS = ("smoke-tiny", "quickstart")
EMULATION = {"AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}}


def lock_digest(path: Path = LOCK) -> str:
    """sha256 of the lock file's pins (comment lines, such as its date, left out)."""
    pins = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()


def load(path: Path = RESULTS) -> dict[str, Any]:
    """The stored known hashes (an empty table when none are stored yet)."""
    if not path.is_file():
        return {"lock_sha256": None, "scenarios": {}}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def measure(scenario: str, emulate: str | None) -> dict[str, Any]:
    """Run ``scenarios/SCENARIO.yaml`` in a fresh process; its hash and environment."""
    env = dict(os.environ) | EMULATION.get(emulate or "", {})
    if emulate:  # inductor's on-disk cache does not key on ATEN_CPU_CAPABILITY: a native run's kernels crash
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"fedzo-inductor-{emulate}"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / scenario
        cmd = [sys.executable, "-m", "fedzo", "run", str(ROOT / "scenarios" / f"{scenario}.yaml"), "--out", str(out),
               "--force", "--no-progress", "--no-plots"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"{scenario}: `fedzo run` failed (exit {proc.returncode}): {tail}")
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        recorded = json.loads((out / "environment.json").read_text(encoding="utf-8"))
    return {
        "model_sha256": summary["model_sha256"],
        "cpu_capability": recorded["cpu_capability"],
        "final_accuracy": summary.get("final_accuracy"),
        "torch_threads": recorded["torch_threads"],
        "cpu_model": recorded["cpu_model"],
        "emulated": emulate is not None,
        "kernel_env": recorded.get("kernel_env", {}),
        "packages": recorded["packages"],
        "measured": dt.date.today().isoformat(),
        "host_seconds": round(time.perf_counter() - t0, 1),
    }


def table(data: dict[str, Any]) -> str:
    """The Markdown table of the stored hashes."""
    lines = ["| scenario | CPU capability | model_sha256 | final accuracy | threads | measured on |",
             "|---|---|---|---|---|---|"]
    for name, by_cap in sorted(data["scenarios"].items()):
        for cap, e in sorted(by_cap.items()):
            how = f"{e['cpu_model']}, {'emulated (' + ', '.join(f'{k}={v}' for k, v in e['kernel_env'].items()) + ')' if e['emulated'] else 'native'}"
            lines.append(f"| {name} | {cap} | `{e['model_sha256']}` | {e['final_accuracy']} | {e['torch_threads']} | "
                         f"{how}, {e['measured']} |")
    return "\n".join(lines) + f"\n\nUnder the lock `constraints.txt` with pins digest `{data['lock_sha256']}`.\n"


def main(argv: list[str] | None = None) -> int:
    """Measure and store the known hashes of the chosen scenarios."""
    p = argparse.ArgumentParser(prog="python -m analysis.experiments.known_hashes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="scenario to measure (default: all)")
    p.add_argument("--emulate", choices=sorted(EMULATION), help="run another capability's kernels on this host")
    p.add_argument("--out", type=Path, default=RESULTS, help="the JSON to merge into")
    args = p.parse_args(argv)
    data = load(args.out)
    digest = lock_digest()
    if data.get("lock_sha256") != digest:  # a new lock: the old hashes hold for the old one only
        data = {"lock_sha256": digest, "scenarios": {}}
    cap = args.emulate or _capability()
    for name in args.scenario or SCENARIOS:
        entry = measure(name, args.emulate)
        if entry.pop("cpu_capability") != cap:
            raise SystemExit(f"{name}: the run's torch dispatched to another capability than {cap}")
        data["scenarios"].setdefault(name, {})[cap] = entry
        print(f"{name} [{cap}{' emulated' if args.emulate else ''}]: {entry['model_sha256']} "
              f"({entry['host_seconds']} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    args.out.with_name("table.md").write_text(table(data), encoding="utf-8")
    return 0


def _capability() -> str:
    from fedzo.environment import cpu_capability

    return cpu_capability()


if __name__ == "__main__":
    raise SystemExit(main())
