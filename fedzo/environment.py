"""The software and hardware a run computed on, and what of it decides its bits.

A run's ``model_sha256`` is reproducible bit for bit only under the same environment: the
same Python packages (the locked ``constraints.txt``), the same CPU kernels (torch picks
them by the processor's vector capability: AVX2 and AVX-512 hosts round differently), the
same device, precision and thread count. Every run directory records this in
``environment.json``; ``--resume`` and ``evaluate --run`` compare the recorded one with
the present one and say what differs, since a bitwise match is then not promised.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

ENVIRONMENT = "environment.json"
PACKAGES = ("fedzo", "torch", "transformers", "peft", "flwr", "numpy", "tokenizers", "safetensors", "accelerate")
# what decides the bits of a run (cpu_model is informative: the capability picks the kernels)
DECISIVE = ("python", "packages", "cpu_capability", "device", "gpu", "dtype", "torch_threads")


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels dispatch to (``AVX2``, ``AVX512``, ...)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``), or what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def capture(*, device: str, dtype: str, threads: int | None = None) -> dict[str, Any]:
    """The present environment of a run on ``device`` (``cpu``, ``cuda`` or ``auto``) in
    ``dtype`` with ``threads`` torch threads (``None``: torch's present count)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "packages": {name: _version(name) for name in PACKAGES},
        "cpu_capability": cpu_capability(),
        "cpu_model": cpu_model(),
        "device": device,
        "gpu": gpu,
        "dtype": dtype,
        "torch_threads": int(threads or torch.get_num_threads()),
        # the kernel-choice overrides, when set (they change the bits like another processor would)
        "kernel_env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                                                  "DNNL_MAX_CPU_ISA", "MKL_CBWR") if k in os.environ},
    }


def differences(recorded: Mapping[str, Any], present: Mapping[str, Any]) -> list[str]:
    """``key: recorded -> present`` for each decisive key that differs (packages one by one)."""
    out: list[str] = []
    for key in DECISIVE:
        old, new = recorded.get(key), present.get(key)
        if key == "packages" and isinstance(old, dict) and isinstance(new, dict):
            out += [f"{name}: {old.get(name)} -> {new.get(name)}"
                    for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)]
        elif old != new:
            out.append(f"{key}: {old} -> {new}")
    return out


def write(run_dir: str | os.PathLike[str], env: Mapping[str, Any]) -> None:
    """Write ``environment.json`` into a run directory (atomically)."""
    from fedzo.atomic import write_whole

    write_whole(Path(run_dir) / ENVIRONMENT, json.dumps(dict(env), indent=2, sort_keys=True) + "\n")


def read(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The recorded environment of a run, or None (runs made before fedzo recorded it)."""
    path = Path(run_dir) / ENVIRONMENT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def compare(run_dir: str | os.PathLike[str], present: Mapping[str, Any], action: str) -> list[str]:
    """Say on stderr when ``present`` differs from the environment recorded in ``run_dir``
    (``action``: what is about to happen, e.g. "resuming"); returns the differences."""
    recorded = read(run_dir)
    if recorded is None:
        print(f"fedzo: note: {run_dir} records no environment (made before fedzo recorded one); {action} "
              "cannot check that it computes bit for bit as the run did", file=sys.stderr)
        return []
    diffs = differences(recorded, present)
    if diffs:
        print(f"fedzo: warning: {action} {run_dir} in another environment than the run's own "
              f"({'; '.join(diffs)}); results may differ in the last bits, so model_sha256 need not match "
              f"(recorded in {Path(run_dir) / ENVIRONMENT})", file=sys.stderr)
    return diffs
