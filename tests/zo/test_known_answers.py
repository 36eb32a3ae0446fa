"""Known-answer vectors: the committed golden outputs hold, and a pure-Python reference
implementation of the portable generator (integers and math only, no torch) agrees with them."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from statistics import NormalDist

import pytest

from fedzo.zo import known_answers
from fedzo.zo.known_answers import VECTORS, check, main

M32, M64 = 0xFFFFFFFF, (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _derive(seed: int, *path: int) -> int:
    x = _splitmix64(seed)
    for p in path:
        x = _splitmix64(x ^ _splitmix64((p & M64) + 0x632BE59BD9B4E019))
    return x & ((1 << 63) - 1)


def _mix32(x: int) -> int:  # murmur3's 32-bit finaliser
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & M32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & M32
    return x ^ (x >> 16)


def _bits(key: int, counter: int) -> int:
    k0, k1 = key & M32, (key >> 32) & M32
    x = _mix32((counter & M32) ^ k0)
    return _mix32(x ^ (((counter >> 32) + ((0x9E3779B9 * (k1 + 1)) & M32)) & M32))


def _element(distribution: str, key: int, i: int) -> float:
    """Element ``i`` of a direction: a Rademacher sign, or a quantile of the 65,536-point Gaussian."""
    if distribution == "rademacher":
        return float(2 * ((_bits(key, i // 32) >> (i % 32)) & 1) - 1)
    h = _bits(key, i // 2)
    half = h & 0xFFFF if i % 2 == 0 else h >> 16
    z = NormalDist().inv_cdf((half + 0.5) / 65536)
    return float(struct.unpack(">f", struct.pack(">f", z))[0])  # rounded to float32


def _committed() -> dict:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def test_the_committed_vectors_hold_on_the_cpu_in_any_chunking() -> None:
    assert check("cpu") == []
    assert main([]) == 0


def test_a_pure_python_reference_agrees_with_the_vectors() -> None:
    v = _committed()
    assert all(_derive(c["seed"], *c["path"]) == c["value"] for c in v["derive_seed"])
    assert all([_bits(c["key"], c["start"] + j) for j in range(c["n"])] == c["value"] for c in v["portable_bits"])
    for c in v["chunks"]:
        key = _derive(c["seed"], c["tensor"])
        want = [struct.unpack(">f", bytes.fromhex(c["float32_bits"][8 * j:8 * j + 8]))[0] for j in range(c["n"])]
        assert [_element(c["distribution"], key, c["start"] + j) for j in range(c["n"])] == want, c
    assert {c["distribution"] for c in v["chunks"]} == {"gaussian", "rademacher"}
    assert any(c["start"] >= 1 << 32 for c in v["chunks"])  # the counter's high word is covered


def test_a_changed_generator_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    v = _committed()
    c = v["chunks"][5]
    c["float32_bits"] = "00000000" + c["float32_bits"][8:]  # element 0 of one chunk altered
    v["derive_seed"][0]["value"] += 1
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(v))
    problems = check("cpu", path=path)
    assert len(problems) == 2
    assert problems[0].startswith("derive_seed:")
    assert f"seed {c['seed']} tensor {c['tensor']} start {c['start']}: element 0 is " in problems[1]
    monkeypatch.setattr(known_answers, "VECTORS", path)
    assert main([]) == 1 and "2 mismatch(es) on cpu" in capsys.readouterr().err
