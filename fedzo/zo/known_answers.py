"""Known-answer vectors of the seeds and of the portable direction generator.

Server and clients never exchange directions, only seeds, so every machine must turn a
seed into bitwise the same direction. ``known_answers.json`` (next to this module, shipped
with the package) holds golden outputs made once: derived seeds, raw 32-bit hashes, and
Gaussian and Rademacher chunks for several seeds, tensor indices, offsets (past 2**32
included) and lengths, float32 values stored as their bit patterns. A change to the
generator that alters every direction on every platform at once is then caught, and a new
board or accelerator can prove it agrees::

    python -m fedzo.zo.known_answers                   # check on the CPU
    python -m fedzo.zo.known_answers --device cuda     # check on a GPU
    python -m fedzo.zo.known_answers --compiled        # check the torch.compile kernel

Each check also fills every chunk in two pieces (a different chunking must not change a
value). ``--write`` regenerates the file; only do that for a deliberate, announced change
of the generator, since it breaks agreement with every older client.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any

import torch

from fedzo.zo.noise import DirectionStream, Distribution, NoiseSpec, portable_bits
from fedzo.zo.seeds import derive_seed

VECTORS = Path(__file__).with_name("known_answers.json")
FORMAT = 1

SEEDS = (0, 1, 12345, (1 << 62) + 987654321)
TENSORS = (0, 7)
OFFSETS = (0, 1024, (1 << 33) + 64)  # the last one exercises the high 32 bits of the counter
LENGTHS = {"gaussian": 48, "rademacher": 96}
DERIVE_PATHS = ((), (0,), (1, 2), (2, 1), (0x57E9, 3, 4))
BITS_KEYS = (0, 1, (1 << 63) - 1)


def _hex(values: torch.Tensor) -> str:
    """float32 values as their big-endian bit patterns, 8 hex digits each (exact, platform-free)."""
    return "".join(struct.pack(">f", v).hex() for v in values.tolist())


def _chunk(distribution: str, seed: int, tensor: int, start: int, n: int, device: str, compiled: bool,
           split: int | None = None) -> torch.Tensor:
    """Elements ``[start, start + n)`` of ``tensor``'s direction for ``seed``, optionally in two fills."""
    stream = DirectionStream(NoiseSpec("portable", Distribution(distribution)), seed, compiled=compiled)
    out = torch.empty(n, dtype=torch.float32, device=device)
    if split is None:
        stream.fill(tensor, start, out)
    else:
        stream.fill(tensor, start, out[:split])
        stream.fill(tensor, start + split, out[split:])
    return out.cpu()


def compute(device: str = "cpu", compiled: bool = False) -> dict[str, Any]:
    """The vectors as this machine computes them on ``device``."""
    chunks = []
    for distribution, n in LENGTHS.items():
        for seed in SEEDS:
            for tensor in TENSORS:
                for start in OFFSETS:
                    values = _chunk(distribution, seed, tensor, start, n, device, compiled)
                    chunks.append({"distribution": distribution, "seed": seed, "tensor": tensor, "start": start,
                                   "n": n, "float32_bits": _hex(values)})
    return {
        "format": FORMAT,
        "derive_seed": [{"seed": s, "path": list(p), "value": derive_seed(s, *p)} for s in SEEDS for p in DERIVE_PATHS],
        "portable_bits": [{"key": k, "start": st, "n": 8,
                           "value": portable_bits(k, st, 8, torch.device(device)).tolist()}
                          for k in BITS_KEYS for st in (0, (1 << 32) - 4)],
        "chunks": chunks,
    }


def check(device: str = "cpu", compiled: bool = False, path: Path | None = None) -> list[str]:
    """Every mismatch between ``device``'s output and the vectors in ``path`` (default: the
    committed ones); empty when all agree."""
    path = path or VECTORS
    want = json.loads(path.read_text(encoding="utf-8"))
    got = compute(device, compiled)
    problems = [f"{what}: {w} expected, {g} computed"
                for what in ("derive_seed", "portable_bits")
                for w, g in zip(want[what], got[what], strict=True) if w != g]
    for w, g in zip(want["chunks"], got["chunks"], strict=True):
        label = f"{w['distribution']} seed {w['seed']} tensor {w['tensor']} start {w['start']}"
        if w["float32_bits"] != g["float32_bits"]:
            first = next(i for i, (a, b) in enumerate(zip(w["float32_bits"], g["float32_bits"], strict=True)) if a != b)
            e = first // 8
            problems.append(f"{label}: element {e} is {g['float32_bits'][8 * e:8 * e + 8]}, "
                            f"expected {w['float32_bits'][8 * e:8 * e + 8]}")
        split = 2 if w["distribution"] == "gaussian" else 32  # a chunk boundary inside the group walk
        if _hex(_chunk(w["distribution"], w["seed"], w["tensor"], w["start"], w["n"], device, compiled, split)) \
                != g["float32_bits"]:
            problems.append(f"{label}: filled in two pieces it differs from one piece")
    if len(want["chunks"]) != len(got["chunks"]):
        problems.append(f"{path}: {len(want['chunks'])} chunks committed, {len(got['chunks'])} computed")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check (default) or ``--write`` the vectors; exit 1 on a mismatch."""
    p = argparse.ArgumentParser(prog="python -m fedzo.zo.known_answers", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="torch device to check (cpu, cuda, mps, ...)")
    p.add_argument("--compiled", action="store_true", help="check the torch.compile kernel instead of eager")
    p.add_argument("--write", action="store_true", help=f"regenerate {VECTORS.name} (breaks older clients)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    if a.write:
        VECTORS.write_text(json.dumps(compute(), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {VECTORS}")
        return 0
    problems = check(a.device, a.compiled)
    n = len(json.loads(VECTORS.read_text(encoding="utf-8"))["chunks"])
    if a.json:
        print(json.dumps({"device": a.device, "compiled": a.compiled, "chunks": n, "ok": not problems,
                          "problems": problems}))
    elif problems:
        print(f"{len(problems)} mismatch(es) on {a.device}:", *problems[:20], sep="\n  ", file=sys.stderr)
    else:
        print(f"known-answer vectors: {n} chunks, seeds and hashes agree on {a.device}"
              f"{' (compiled)' if a.compiled else ''}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
