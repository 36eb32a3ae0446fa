"""The documented hashes hold: the stored known hashes are of the present lock, and the tiny
smoke scenario gives this host's stored hash (keyed by the CPU capability torch dispatches to;
a capability with no stored hash is reported as a skip, not failed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis.experiments.known_hashes import LOCK, RESULTS, load, lock_digest
from fedzo.config.scenario import load_scenario
from fedzo.environment import cpu_capability
from fedzo.federation.run import run_federated

ROOT = Path(__file__).resolve().parents[1]


def test_known_hashes_are_of_the_present_lock() -> None:
    data = load()
    assert data["lock_sha256"] == lock_digest(LOCK), (
        f"{RESULTS} holds hashes measured under another constraints.txt; after scripts/lock.sh, rerun "
        "`python -m analysis.experiments.known_hashes` (and with --emulate AVX2) in the same commit")
    assert {"AVX2", "AVX512"} <= set(data["scenarios"]["smoke-tiny"])


def test_the_readme_states_the_stored_quickstart_hashes() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stored = load()["scenarios"]["quickstart"]
    for cap, entry in stored.items():
        assert re.search(rf"{cap}[^\n]*`{entry['model_sha256'][:8]}", readme), \
            f"README.md does not state the quickstart's {cap} hash {entry['model_sha256'][:8]}… from {RESULTS}"


def test_smoke_tiny_gives_this_hosts_known_hash(tmp_path: Path) -> None:
    cap = cpu_capability()
    entry = load()["scenarios"]["smoke-tiny"].get(cap)
    sc = load_scenario(ROOT / "scenarios" / "smoke-tiny.yaml")
    if entry is not None:  # the thread count it was measured with (other tests change torch's)
        sc = sc.model_copy(update={"runtime": sc.runtime.model_copy(update={"threads": entry["torch_threads"]})})
    got = run_federated(sc, tmp_path / "run").model_sha256
    if entry is None:
        pytest.skip(f"no known smoke-tiny hash for CPU capability {cap}; this host gives {got} "
                    f"(record it: python -m analysis.experiments.known_hashes --scenario smoke-tiny)")
    assert got == entry["model_sha256"], (
        f"smoke-tiny on {cap} gave {got}, not the known {entry['model_sha256']} ({RESULTS}); "
        "the locked environment or the arithmetic of a run changed")
