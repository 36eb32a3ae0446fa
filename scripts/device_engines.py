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


def on_device(scenario: str, out: Path, device: str, model: str | None = None,
              changes: dict[str, Any] | None = None) -> str:
    """A copy of ``scenario`` with ``runtime.device`` (and ``model.name``) replaced and the
    sections' keys in ``changes`` set."""
    data = yaml.safe_load((ROOT / scenario).read_text(encoding="utf-8"))
    data["runtime"] = {**data.get("runtime", {}), "device": device}
    if model is not None:
        data["model"] = {**data["model"], "name": model}
    for section, keys in (changes or {}).items():  # None drops a section (e.g. the fleet)
        data[section] = None if keys is None else {**(data.get(section) or {}), **keys}
    out.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(out)


# issue 39's fleet figures: SmolLM2-135M at batch 8 x 64 tokens, one local step per client
# (bf16 clients share joint passes only when asked: federation.batched.half_precision)
FLEET = {"bf16": {"model": {"dtype": "bf16"}, "data": {"batch_size": 8, "max_length": 64},
                  "federation": {"batched": {"half_precision": "joint"}}},
         "fp32": {"model": {"dtype": "fp32"}, "data": {"batch_size": 8, "max_length": 64}},
         "full": {"model": {"dtype": "fp32", "peft": "full"}, "data": {"batch_size": 8, "max_length": 64}}}


def device_kind(device: str) -> str:
    """The device type that names the headline keys: ``cuda`` for any CUDA device, else its type."""
    return "cuda" if device.startswith("cuda") else device.split(":")[0]


def fleet_keys(report: dict[str, Any], device: str) -> dict[str, float | None]:
    """The headline keys of the fleet cases: client-steps per second of the batched engine at
    the largest participant count, and the full-parameter case's batched / in-process ratio
    (named after the device type: ``client_steps_per_second_cuda_100`` on a GPU)."""
    kind = device_kind(device)
    out: dict[str, float | None] = {}
    for variant in FLEET:
        rows = [r for r in report.get("results", []) if r["case"] == f"smollm2-{variant}"]
        if not rows:
            continue
        row = max(rows, key=lambda r: r["participants"])
        suffix = "" if variant == "bf16" else f"_{variant}"
        batched = row["engines"].get("batched", {})
        out[f"client_steps_per_second_{kind}_{row['participants']}{suffix}"] = batched.get("client_steps_per_host_second")
        out[f"inprocess_client_steps_per_second_{kind}_{row['participants']}{suffix}"] = (
            row["engines"]["inprocess"]["client_steps_per_host_second"])
        if variant == "full":
            out[f"batched_over_inprocess_{kind}_{row['participants']}_full"] = batched.get("inprocess_over_engine")
    return out


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
    fleet = {v: on_device("scenarios/quickstart.yaml", work / f"quickstart-{v}-device.yaml", device, model, changes)
             for v, changes in FLEET.items()}
    tiny_sc = on_device("scenarios/batched-tiny.yaml", work / "batched-tiny-device.yaml", device)
    run_bench(tuple(Case(f"warmup-{v}", sc, (2,), rounds=1, local_steps=1) for v, sc in fleet.items()),
              ("inprocess", "batched"), 1)
    prepared = time.perf_counter() - t0
    cases = (Case("tiny", tiny_sc, (tiny,), rounds=3),
             *(Case(f"smollm2-{v}", fleet[v], participants, rounds=1, local_steps=1) for v in ("bf16", "fp32")))
    report = run_bench(cases, ("inprocess", "batched"), repeats)
    full = run_bench((Case("smollm2-full", fleet["full"], participants[-1:], rounds=1, local_steps=1),),
                     ("inprocess", "batched"), 1)  # the slowest case: one repeat
    report["results"] += full["results"]
    report |= {k: v for k, v in full.items() if k.startswith("batched_over_inprocess")}
    report |= fleet_keys(report, device)
    from fedzo.federation.client.worker import reset_worker

    reset_worker()  # a process keeps its last client worker (and its model) for the next message: free it
    report["model_weights"] = "smollm2-135m: random (seed 0) from its config, real tokenizer; tiny-llama: built"
    report["setup_and_warmup_seconds"] = prepared
    report["seconds"] = time.perf_counter() - t0
    print(format_report(report), flush=True)
    return report


def full_rows_check(device: str, work: Path, participants: int = 32, local_steps: int = 2,
                    scenario: str = "scenarios/quickstart.yaml", smollm2: bool = True) -> dict[str, Any]:
    """Full-parameter ZO with ``local_steps`` local steps (batch 8 x 64, fp32), in-process
    against batched engine, one round after a warm-up round of 2 participants: every client
    moves its own copy of the whole model, so the batched engine runs ``rows`` mode with the
    group's copies stacked, whole clients per pass and one batched call per layer
    (fedzo/federation/transports/batched/stacked.py). Keys ``client_steps_per_second_cuda_32_full_k2``,
    ``batched_over_inprocess_cuda_32_full_k2`` (named after the device type, the participants
    and K) and the batching note. ``scenario`` and ``smollm2`` (False: the scenario's own
    model) make a smoke run on a tiny model."""
    lacking = missing()
    if lacking:
        return {"skipped": f"not installed here: {', '.join(lacking)} (carry them as wheels: README, GPU checks)"}
    os.environ.setdefault("FEDZO_CACHE", str(CARRY / "cache"))
    from fedzo.bench.engines import Case, run_bench

    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    model = work / "smollm2-135m-random"
    if smollm2 and not (model / "config.json").exists():
        random_smollm2(model)
    sc = on_device(scenario, work / "full-rows-device.yaml", device, str(model) if smollm2 else None, FLEET["full"])
    engines = ("inprocess", "batched")
    run_bench((Case("warmup-full-rows", sc, (2,), rounds=1, local_steps=local_steps),), engines, 1)
    report = run_bench((Case(f"smollm2-full-k{local_steps}", sc, (participants,), rounds=1, local_steps=local_steps),),
                       engines, 1)
    (row,) = report["results"]
    batched, kind = row["engines"]["batched"], device_kind(device)
    suffix = f"{kind}_{participants}_full_k{local_steps}"
    return {f"client_steps_per_second_{suffix}": batched["client_steps_per_host_second"],
            f"inprocess_client_steps_per_second_{suffix}": row["engines"]["inprocess"]["client_steps_per_host_second"],
            f"batched_over_inprocess_{suffix}": batched["inprocess_over_engine"],
            "batching": row["batching"], "results": report["results"], "seconds": time.perf_counter() - t0,
            "model_weights": "smollm2-135m: random (seed 0) from its config" if smollm2 else scenario}


# DeComFL's setting (OPT-125M on SST-2 there, SmolLM2-135M here): 8 clients, 2 a round, 5
# directions, one local step of 32 x 64 tokens, fp32, the model evaluated every 25 rounds
DECOMFL: dict[str, Any] = {"model": {"peft": "full", "dtype": "fp32"},
           "data": {"batch_size": 32, "max_length": 64, "eval_examples": 100, "eval_batch_size": 50},
           "zo": {"q": 5}, "fleet": None,
           "federation": {"num_clients": 8, "clients_per_round": 2, "local_steps": 1, "eval_every": 25,
                          "engine": "inprocess"}}


def decomfl_check(device: str, work: Path, rounds: int = 200, seconds: float = 60.0,
                  scenario: str = "scenarios/quickstart.yaml", smollm2: bool = True, forward: str = "eager",
                  from_round: int = 0, warmup_seconds: float = 150.0) -> dict[str, Any]:
    """A DeComFL-shaped run through fedzo's round engine and Flower messages (`fedzo run`, the
    in-process engine): the wall seconds of each round as its record lands (evaluation, replay
    and checkpoint included), ``rounds`` at most or as many as ``seconds`` allow after round
    ``from_round`` has landed (at most ``warmup_seconds`` for that: with ``forward`` compiled
    or graphs, round 1 compiles the training shape, round 0's evaluation the evaluation
    shapes, so ``from_round`` 1 leaves compilation out of the measured rounds); the key is
    2,000 x the measured seconds a round, a projection from the rounds measured. ``scenario``
    and ``smollm2`` (False: the scenario's own model) make a smoke run on a tiny model."""
    import json
    import subprocess
    import sys

    lacking = missing()
    if lacking:
        return {"skipped": f"not installed here: {', '.join(lacking)} (carry them as wheels: README, GPU checks)"}
    os.environ.setdefault("FEDZO_CACHE", str(CARRY / "cache"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "smollm2-135m-random"
    if smollm2 and not (model / "config.json").exists():
        random_smollm2(model)
    changes = {**DECOMFL, "federation": {**DECOMFL["federation"], "rounds": rounds + from_round},
               "runtime": {"forward": forward}}
    sc = on_device(scenario, work / "decomfl-device.yaml", device, str(model) if smollm2 else None, changes)
    out = work / "decomfl-run"
    proc = subprocess.Popen([sys.executable, "-m", "fedzo", "run", sc, "--out", str(out), "--force", "--no-progress",
                             "--no-plots"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    landed: dict[int, float] = {}
    t0 = time.perf_counter()

    def running() -> bool:  # within the warm-up cap until from_round lands, then ``seconds`` from there
        start = landed.get(from_round)
        now = time.perf_counter()
        return now - t0 < warmup_seconds + seconds if start is None else now - start < seconds

    while proc.poll() is None and running():
        time.sleep(0.05)
        landed |= _new_rounds(out / "metrics.jsonl", landed, time.perf_counter())
    if proc.poll() is None:
        proc.kill()
    err = proc.communicate()[1]
    landed |= _new_rounds(out / "metrics.jsonl", landed, time.perf_counter()) if proc.returncode == 0 else {}
    landed = {r: t for r, t in landed.items() if r >= from_round}
    if len(landed) < 3:
        return {"error": f"fewer than 2 rounds after round {from_round} in {seconds:g} s (exit {proc.returncode}): "
                         f"{err[-2000:]}"}
    first, last = min(landed), max(landed)
    per_round = (landed[last] - landed[first]) / (last - first)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    host = [r for r in recs if r.get("kind") == "round" and r["round"] > 0]
    return {"setting": changes, "forward": forward, "rounds_measured": last - first, "seconds_per_round": per_round,
            "host_seconds_per_round_without_evaluation": host[-1]["host_seconds"] / len(host) if host else None,
            "decomfl_2000_rounds_seconds": 2000 * per_round,
            "label": f"projection: 2000 x the wall seconds a round over {last - first} measured rounds "
                     f"(rounds {first + 1}-{last}, runtime.forward {forward})",
            "compiled_shapes": host[-1].get("compiled_shapes") if host else None,
            "setup_seconds": landed[first] - t0,
            "model_weights": "smollm2-135m: random (seed 0) from its config" if smollm2 else scenario}


def _new_rounds(metrics: Path, landed: dict[int, float], now: float) -> dict[int, float]:
    """Round records in ``metrics`` not in ``landed``, stamped ``now``."""
    import json

    if not metrics.exists():
        return {}
    new = {}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        if not line.endswith("}"):  # a line being written
            continue
        rec = json.loads(line)
        if rec.get("kind") == "round" and rec["round"] not in landed:
            new[rec["round"]] = now
    return new


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
