"""`fedzo bench federation`: bytes per client-round and server cost vs fleet size.

Keys:

* ``uplink_bytes_per_client_round``: serialized uplink payload (RecordDict) for K = 10,
  q = 1 (target <= 200 B); ``uplink_message_bytes_per_client_round`` adds Flower's
  metadata; ``fedavg_smollm2_upload_bytes`` = 134.5 M params x 4 B and the ratio.
* ``server_time_ratio_1000_vs_10``: server aggregation + replay seconds per round with
  1000 vs 10 no-op clients (target <= 1.2). Reply validation (parsing each reply, linear
  in the number of clients by nature) is reported separately per client.
* ``replay_over_regenerations``: the server's aggregation + replay of K entries over K
  regenerations of one direction with the same generator (the server compiles the portable
  generator at this size: :func:`fedzo.zo.perturb.replay_compiled`; target <= 1.3). A
  regeneration is what a client does with a direction in its step, and what
  ``fedzo bench zo`` times as one: a :meth:`Perturber.apply` pass that generates the
  direction chunk by chunk and adds it to the weights in place.
  ``replay_over_generations`` is the stricter ratio over generating the direction into a
  buffer alone (no weights touched), which leaves the replay's add pass as its excess.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from fedzo.federation.catchup import derived_step_seeds as step_seeds
from fedzo.federation.server.aggregate import Contribution, make_aggregator
from fedzo.federation.wire.bytes import MessageSize, ensure_task_identity, payload_bytes
from fedzo.federation.wire.messages import Expected, Uplink, build_uplink, parse_uplink, seeds_digest
from fedzo.zo import NoiseSpec, ParamSet, PerturberRecipe, aggregate_entries, apply_entries
from fedzo.zo.noise import DirectionStream
from fedzo.zo.optimizers import ZOSGD
from fedzo.zo.perturb import replay_compiled

SMOLLM2_PARAMS = 134_515_008  # SmolLM2-135M (tied embeddings counted once)


def _uplink(k: int, client: int = 0) -> Uplink:
    seeds = step_seeds(0, 1, k)
    return Uplink(1, client, tuple(0.01 * (i + 1) for i in range(k)), seeds_digest(seeds), 16 * k,
                  0.6931, 0.6929, 12.5, 512 * 2**20)


def uplink_figures(k: int = 10) -> dict[str, Any]:
    """Measured uplink sizes for K steps, q = 1."""
    from flwr.app import Message

    ensure_task_identity()
    content = build_uplink(_uplink(k))
    down = Message(content, dst_node_id=2**62 + 12345, message_type="train", group_id="1")
    reply = Message(content, reply_to=down)
    payload = payload_bytes(content)
    fedavg = SMOLLM2_PARAMS * 4
    return {"uplink_bytes_per_client_round": payload,
            "uplink_message_bytes_per_client_round": MessageSize.of(reply, reply_to=down).message,
            "uplink_wire_bytes_per_client_round": MessageSize.of(reply, reply_to=down).wire,
            "fedavg_smollm2_upload_bytes": fedavg, "fedavg_over_zo_uplink_ratio": fedavg / payload}


def server_round_seconds(clients: int, numel: int, k: int = 10, repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` seconds for aggregation + replay (and validation) of one round."""
    params = ParamSet.from_tensors({"w": torch.zeros(numel)})
    spec = NoiseSpec("portable", "gaussian", 1 << 20)
    perturber = PerturberRecipe(spec).build(params, replay=True)  # as the server builds it
    seeds = step_seeds(0, 1, k)
    replies = [build_uplink(_uplink(k, c)) for c in range(clients)]
    agg = make_aggregator("mean")
    best_core, best_valid = float("inf"), float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        ups = [parse_uplink(r, Expected(1, c, seeds, 1)) for c, r in enumerate(replies)]
        t1 = time.perf_counter()
        grads = agg([Contribution(u.client, u.num_examples, u.scalars) for u in ups])
        apply_entries(perturber, aggregate_entries(1, seeds, 1, grads, 1e-6, ZOSGD()))
        t2 = time.perf_counter()
        best_valid, best_core = min(best_valid, t1 - t0), min(best_core, t2 - t1)
    return {"aggregate_replay_seconds": best_core, "validate_seconds": best_valid}


def regeneration_seconds(numel: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` seconds of one regeneration as a client does it: one
    :meth:`Perturber.apply` pass over ``numel`` weights (generate each chunk, add it in
    place), with the generator the server's replay uses at that size."""
    spec = NoiseSpec("portable", "gaussian", 1 << 20)
    perturber = PerturberRecipe(spec).build(ParamSet.from_tensors({"w": torch.zeros(numel)}), replay=True)
    perturber.apply(6, (0.0,))  # the first call compiles
    best = float("inf")
    for r in range(repeats):
        t0 = time.perf_counter()
        perturber.apply(7 + r, (0.0,))
        best = min(best, time.perf_counter() - t0)
    return best


def generation_seconds(numel: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` seconds to generate one direction of ``numel`` elements into a
    chunk buffer, touching no weights (the generation part of a regeneration)."""
    spec = NoiseSpec("portable", "gaussian", 1 << 20)
    compiled = replay_compiled(spec, numel)
    buf = torch.empty(min(numel, spec.chunk_size))
    best = float("inf")
    for r in range(repeats + 1):  # the first call compiles
        t0 = time.perf_counter()
        stream = DirectionStream(spec, 7 + r, compiled=compiled)
        for start in range(0, numel, spec.chunk_size):
            stream.fill(0, start, buf[: min(spec.chunk_size, numel - start)])
        if r:
            best = min(best, time.perf_counter() - t0)
    return best


def run_bench(*, numel: int = 500_000, k: int = 10) -> dict[str, Any]:
    """All figures in one dict (the JSON report)."""
    small = server_round_seconds(10, numel, k)
    large = server_round_seconds(1000, numel, k)
    regen, gen = regeneration_seconds(numel), generation_seconds(numel)
    return {
        **uplink_figures(k), "k": k, "q": 1, "server_params": numel,
        "server_time_ratio_1000_vs_10": large["aggregate_replay_seconds"] / small["aggregate_replay_seconds"],
        "server_aggregate_replay_seconds_10": small["aggregate_replay_seconds"],
        "server_aggregate_replay_seconds_1000": large["aggregate_replay_seconds"],
        "server_validate_seconds_per_client": large["validate_seconds"] / 1000,
        "regeneration_seconds": regen, "replay_over_regenerations": small["aggregate_replay_seconds"] / (k * regen),
        "generation_seconds": gen, "replay_over_generations": small["aggregate_replay_seconds"] / (k * gen),
        "targets": {"uplink_bytes_per_client_round": "<= 200", "server_time_ratio_1000_vs_10": "<= 1.2",
                    "replay_over_regenerations": "<= 1.3"},
    }


def format_report(r: dict[str, Any]) -> str:
    """Human-readable lines."""
    return "\n".join([
        (f"uplink payload per client-round (K={r['k']}, q=1): {r['uplink_bytes_per_client_round']} B "
         f"(message {r['uplink_message_bytes_per_client_round']} B; target <= 200 B)"),
        (f"FedAvg SmolLM2 upload: {r['fedavg_smollm2_upload_bytes'] / 1e6:.1f} MB = "
         f"{r['fedavg_over_zo_uplink_ratio']:.3g} x the ZO uplink"),
        (f"server aggregation + replay per round ({r['server_params']} params): "
         f"{r['server_aggregate_replay_seconds_10'] * 1e3:.1f} ms (10 clients), "
         f"{r['server_aggregate_replay_seconds_1000'] * 1e3:.1f} ms (1000); ratio "
         f"{r['server_time_ratio_1000_vs_10']:.3f} (target <= 1.2)"),
        f"reply validation: {r['server_validate_seconds_per_client'] * 1e6:.0f} us per client (separate)",
        (f"replay of K entries over K regenerations ({r['regeneration_seconds'] * 1e3:.1f} ms each): "
         f"{r['replay_over_regenerations']:.2f} (target <= 1.3)"),
        (f"replay of K entries over K generations alone ({r['generation_seconds'] * 1e3:.1f} ms each, "
         f"no weights touched): {r['replay_over_generations']:.2f}"),
    ])
