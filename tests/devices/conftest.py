"""Shared helpers for device tests."""

from __future__ import annotations

from pathlib import Path

import pytest

VALID = """\
name: {name}
memory_budget: 1GB
flops_fp32: 1.0e9
uplink_bps: 8.0e6
downlink_bps: 16.0e6
latency_s: 0.5
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A catalog directory with one valid profile, ``dev``."""
    (tmp_path / "dev.yaml").write_text(VALID.format(name="dev"))
    return tmp_path
