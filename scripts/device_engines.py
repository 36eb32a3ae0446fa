"""The engines check of scripts/device_check.py: `fedzo bench engines` on the lent device.

Times the in-process and batched engines (Ray is not there, so no simulation engine) on
the device with the same code path as ``fedzo bench engines``: the tiny model
(``scenarios/batched-tiny.yaml``) at 100 participants and SmolLM2-135M prompt tuning
(``scenarios/quickstart.yaml``, one local step, one round) at 10 and 100 participants,
each scenario moved to ``runtime.device: cuda``. The embedded SmolLM2 weights are too large
to travel with the tree, so its architecture is built from its config with random weights
(seed 0) and saved beside the real tokenizer in a local folder: a round's work and its
timing do not depend on the weights' values, its accuracy does (none is reported).

Needs Flower and pydantic, which the lent machine lacks: ``scripts/device_check.sh``
installs them from carried wheels (``.whl``, see the README's "GPU checks"), and the
corpus and the tokenizer travel in ``.devcarry`` (``python scripts/device_engines.py
--prepare``, run here, fills it). Without them the check is recorded as skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".devcarry"
TOKENIZER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "chat_template.jinja")


def prepare(cache: Path | None = None) -> Path:
    """Here, before a device run: copy the corpus asset and SmolLM2's config and tokenizer
    (not its weights) from the fedzo cache into ``.devcarry``; returns that folder."""
    from fedzo import assets
    from fedzo.models.loading import fp32_cache_dir, load_model, smollm2_cached

    if not smollm2_cached(cache):
        load_model("smollm2-135m", cache_dir=cache)  # fetches the asset and builds the fp32 cache once
    hf = fp32_cache_dir(cache)
    tok = CARRY / "smollm2-135m-tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (hf / name).exists():
            shutil.copy2(hf / name, tok / name)
    assets.ensure("vader-corpora", cache_dir=cache)
    dst = CARRY / "cache" / "vader-corpora"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(assets.asset_dir("vader-corpora", cache), dst)
    return CARRY


def random_smollm2(out: Path) -> Path:
    """SmolLM2-135M built from the carried config with random weights (seed 0), saved with
    the carried tokenizer as a local model folder that ``model.name`` can name."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    src = CARRY / "smollm2-135m-tokenizer"
    if not (src / "tokenizer.json").exists():
        raise FileNotFoundError(f"{src}: no tokenizer; run `python scripts/device_engines.py --prepare` here first")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src)).save_pretrained(out)
    for f in src.iterdir():
        if f.name != "config.json":
            shutil.copy2(f, out / f.name)
    return out


def on_device(scenario: str, out: Path, device: str, model: str | None = None) -> str:
    """A copy of ``scenario`` with ``runtime.device`` (and ``model.name``) replaced."""
    data = yaml.safe_load((ROOT / scenario).read_text(encoding="utf-8"))
    data["runtime"] = {**data.get("runtime", {}), "device": device}
    if model is not None:
        data["model"] = {**data["model"], "name": model}
    out.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(out)


def missing() -> list[str]:
    """The packages the engines need that this Python lacks."""
    return [m for m in ("flwr", "pydantic", "datasets", "flwr_datasets") if importlib.util.find_spec(m) is None]


def engines_check(device: str, work: Path, participants: tuple[int, ...] = (10, 100), tiny: int = 100,
                  repeats: int = 2) -> dict[str, Any]:
    """In-process against batched engine on ``device``; a warm-up run first (CUDA context,
    kernels, allocator), so no engine pays the device's start in its timed rounds."""
    lacking = missing()
    if lacking:
        return {"skipped": f"not installed here: {', '.join(lacking)} (carry them as wheels: README, GPU checks)"}
    if not (CARRY / "smollm2-135m-tokenizer" / "tokenizer.json").exists():
        return {"skipped": f"{CARRY}: no SmolLM2 tokenizer or corpus; run `python scripts/device_engines.py "
                           "--prepare` before the device run (README, GPU checks)"}
    os.environ.setdefault("FEDZO_CACHE", str(CARRY / "cache"))
    from fedzo.bench.engines import Case, format_report, run_bench

    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    model = str(random_smollm2(work / "smollm2-135m-random"))
    smol = on_device("scenarios/quickstart.yaml", work / "quickstart-device.yaml", device, model)
    tiny_sc = on_device("scenarios/batched-tiny.yaml", work / "batched-tiny-device.yaml", device)
    run_bench((Case("warmup", smol, (2,), rounds=1, local_steps=1),), ("inprocess", "batched"), 1)
    prepared = time.perf_counter() - t0
    cases = (Case("tiny", tiny_sc, (tiny,), rounds=3), Case("smollm2", smol, participants, rounds=1, local_steps=1))
    report = run_bench(cases, ("inprocess", "batched"), repeats)
    from fedzo.federation.client.worker import reset_worker

    reset_worker()  # a process keeps its last client worker (and its model) for the next message: free it
    report["model_weights"] = "smollm2-135m: random (seed 0) from its config, real tokenizer; tiny-llama: built"
    report["setup_and_warmup_seconds"] = prepared
    report["seconds"] = time.perf_counter() - t0
    print(format_report(report), flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """``--prepare`` here; otherwise run the check and print its JSON (a smoke run on CPU)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepare", action="store_true", help="fill .devcarry from the fedzo cache (run here)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--participants", type=int, nargs="+", default=[2])
    p.add_argument("--tiny", type=int, default=4)
    p.add_argument("--work", default="/tmp/fedzo-device-engines")
    a = p.parse_args(argv)
    if a.prepare:
        print(prepare())
        return 0
    import json

    print(json.dumps(engines_check(a.device, Path(a.work), tuple(a.participants), a.tiny, 1), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
