"""Profile catalog: the shipped files load; errors name the file, the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fedzo.devices.availability import TraceAvailability
from fedzo.devices.profiles import get_profile, load_profile, load_profiles
from fedzo.errors import ConfigError
from fedzo.units import parse_bitrate, parse_bytes

from .conftest import VALID

REQUIRED = {"rpi5-8gb", "jetson-orin-nano-8gb", "phone-midrange", "phone-flagship",
            "laptop-cpu", "datacenter-gpu"}


def test_shipped_catalog_loads() -> None:
    profiles = load_profiles()
    assert REQUIRED <= set(profiles)
    flagship = profiles["phone-flagship"]
    assert isinstance(flagship.availability, TraceAvailability)
    assert flagship.availability.trace is not None
    assert profiles["rpi5-8gb"].memory_budget == 6_500_000_000


def test_every_shipped_figure_has_a_source_comment() -> None:
    for path in Path(load_profiles.__globals__["default_clients_dir"]()).glob("*.yaml"):
        text = path.read_text()
        for key in ("memory_budget", "flops_fp32", "uplink_bps", "latency_s"):
            if f"\n{key}:" in text:
                assert "#" in text, f"{path}: {key} has no source comment"


def test_units() -> None:
    assert parse_bytes("6GB") == 6_000_000_000
    assert parse_bytes("1.5 GiB") == int(1.5 * 2**30)
    assert parse_bytes(123) == 123
    assert parse_bitrate("20Mbps") == 20e6
    assert parse_bitrate("1 Gbit/s") == 1e9
    with pytest.raises(ValueError, match="GiB"):
        parse_bytes("6 parsecs")


def test_negative_uplink_names_file_key_and_value(catalog: Path) -> None:
    bad = catalog / "rpi5.yaml"
    bad.write_text(VALID.format(name="rpi5").replace("uplink_bps: 8.0e6", "uplink_bps: -3"))
    with pytest.raises(ConfigError) as err:
        load_profile(bad)
    msg = str(err.value)
    assert f"{bad}: uplink_bps: -3 must be greater than 0" in msg


def test_all_errors_reported_at_once(catalog: Path) -> None:
    bad = catalog / "x.yaml"
    text = VALID.format(name="x").replace("latency_s: 0.5", "latency_s: -1\ncolour: red")
    bad.write_text(text.replace("memory_budget: 1GB", "memory_budget: lots"))
    with pytest.raises(ConfigError) as err:
        load_profile(bad)
    msg = str(err.value)
    assert "latency_s" in msg and "colour: unknown key (allowed:" in msg
    assert "memory_budget: 'lots'" in msg and "GiB" in msg


def test_bad_availability_probability(catalog: Path) -> None:
    bad = catalog / "flaky.yaml"
    bad.write_text(VALID.format(name="flaky") + "availability: {kind: bernoulli, p: 1.5}\n")
    with pytest.raises(ConfigError, match=r"flaky.yaml: availability.p: 1.5 must be less than"):
        load_profile(bad)


def test_bad_trace_names_the_trace_file(catalog: Path) -> None:
    (catalog / "t.yaml").write_text("intervals: [[10, 5]]\n")
    bad = catalog / "p.yaml"
    bad.write_text(VALID.format(name="p") + "availability: {kind: trace, file: t.yaml}\n")
    with pytest.raises(ConfigError, match=r"availability.file: .*t.yaml: .*start < end"):
        load_profile(bad)


def test_speed_required(catalog: Path) -> None:
    bad = catalog / "slow.yaml"
    bad.write_text(VALID.format(name="slow").replace("flops_fp32: 1.0e9\n", ""))
    with pytest.raises(ConfigError, match="speed_ratio"):
        load_profile(bad)


def test_unknown_profile_lists_known_names(catalog: Path) -> None:
    assert get_profile("dev", catalog).latency_s == 0.5
    with pytest.raises(ConfigError, match=r"'nope' is unknown \(known: dev\)"):
        get_profile("nope", catalog)


def test_profiles_are_frozen(catalog: Path) -> None:
    profile = get_profile("dev", catalog)
    with pytest.raises(ValidationError):
        profile.latency_s = 1.0  # type: ignore[misc]


def test_dir_overridable_by_environment(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDZO_CLIENTS_DIR", str(catalog))
    assert set(load_profiles()) == {"dev"}
