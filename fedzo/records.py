"""The run-directory records: one typed schema that every engine writes and ``fedzo.reporting``
(plots, reports) and the experiment scripts read.

``metrics.jsonl`` holds one JSON object per line, told apart by ``kind``:

* ``round`` (:class:`RoundRecord`): one per completed round (federated) or logging point
  (centralized); round 0 is the evaluation before training.
* ``client`` (:class:`ClientRecord`): one per client and round attempt: its outcome,
  bytes and simulated timeline.
* ``fleet`` (:class:`FleetRecord`): once per run: devices, memory verdicts, clock settings.

``summary.json`` is a :class:`Summary`. Every record carries the schema version ``v``
(lines without it were written by schema 1, which had the same fields). Readers ignore
keys they do not know, so a newer run stays readable; writers cannot misspell a key.
This module imports nothing heavy (no torch, no Flower).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from fedzo.stats import wilson_interval

SCHEMA_VERSION = 2
ClientStatus = Literal["ok", "late", "dropped", "failed", "excluded", "offline"]
CLIENT_STATUSES: tuple[str, ...] = ("ok", "late", "dropped", "failed", "excluded", "offline")

# Fields measured on the host (time, memory, the host process's compiled graphs): they differ
# between two runs of the same configuration (a resumed run's process starts with no graph),
# unlike every other field, which a rerun or a resume reproduces.
HOST_MEASURED_KEYS = frozenset({"host_seconds", "host_compute_seconds", "peak_memory_bytes",
                                "server_replay_seconds", "reference_seconds", "joint_forward_seconds",
                                "compiled_shapes", "measured_client_memory_bytes", "measured_client_model_bytes"})


class Record(BaseModel):
    """Base of the records: frozen, every field named (a misspelt key is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = Field(SCHEMA_VERSION, description="schema version")

    def to_json(self) -> str:
        """One line of JSON (sorted keys)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


class RoundRecord(Record):
    """One round of a federated run, or one logging point of a centralized run.

    Per-round quantities are this round's own; ``*_total`` and ``sim_seconds`` /
    ``host_seconds`` are cumulative up to the end of this round.
    """

    kind: Literal["round"] = "round"
    round: int
    sim_seconds: float | None = Field(None, description="cumulative simulated wall-clock, s")
    host_seconds: float | None = Field(None, description="cumulative host wall-clock, s")
    server_replay_seconds: float | None = Field(None, description="host s the server spent applying this round")
    batching: str | None = Field(None, description="engine: batched: how the round's local steps ran (shared or "
                                 "per-row joint forward passes, or one client at a time and why)")
    joint_forward_seconds: float | None = Field(None, description="engine: batched: host s the round's joint forward "
                                                "passes took (their losses and moves included)")
    compiled_shapes: int | None = Field(None, description="runtime.forward: compiled or graphs: the batch shapes "
                                        "(compiled graphs) the server's process has run so far, the in-process and "
                                        "batched engines' clients included; null when every forward ran eager")
    bytes_up: int = Field(0, description="this round's bytes, clients -> server: every message as Flower "
                          "carries it on the wire (fedzo.federation.wire.bytes, wire)")
    bytes_down: int = Field(0, description="this round's bytes, server -> clients")
    bytes_up_total: int | None = Field(None, description="cumulative bytes up")
    bytes_down_total: int | None = Field(None, description="cumulative bytes down")
    payload_bytes_up: int = Field(0, description="this round's record payloads up (without metadata)")
    payload_bytes_down: int = Field(0, description="this round's record payloads down")
    bytes_by_kind: dict[str, tuple[int, int]] = Field(
        default_factory=dict, description="this round's (up, down) bytes by kind of message: setup (the "
        "handshake), train, catch_up (the catch-up part of train messages), retry (a second attempt's "
        "messages), duplicate (surplus replies)")
    train_loss: float | None = Field(None, description="mean training loss of the kept clients")
    eval_accuracy: float | None = Field(None, description="accuracy in [0, 1] on evaluation rounds")
    eval_n: int | None = Field(None, description="examples the accuracy was measured on")
    eval_accuracy_low: float | None = Field(None, description="95 % Wilson interval of eval_accuracy, low end")
    eval_accuracy_high: float | None = Field(None, description="95 % Wilson interval of eval_accuracy, high end")
    eval_macro_f1: float | None = None
    participants: int = Field(0, description="clients whose update was applied")
    round_sim_seconds: float | None = Field(None, description="simulated duration of this round, s")
    late: list[int] = Field(default_factory=list, description="clients past the deadline")
    offline: list[int] = Field(default_factory=list, description="clients that went offline")
    rejected: dict[int, str] = Field(default_factory=dict, description="client -> rejection code")
    skipped: str | None = Field(None, description="why the round applied no update")
    history_entries: int = Field(0, description="catch-up entries the server holds")
    distrusted: list[int] = Field(default_factory=list, description="clients whose valid replies were left out "
                                  "of the aggregate for a low reputation (federation.reputation)")
    reference_seconds: float | None = Field(None, description="host s the server spent on its own scalars on its root "
                                            "set (federation.reputation_reference: server; part of "
                                            "server_replay_seconds)")
    faults_injected: dict[str, int] = Field(default_factory=dict)
    extra_replies: dict[str, int] = Field(default_factory=dict)
    estimated_transport_bytes_per_message_labelled_estimate: float | None = None
    estimated_transport_bytes_labelled_estimate: float | None = None
    estimated_polling_bytes_labelled_estimate: float | None = None

    @model_validator(mode="after")
    def _totals(self) -> RoundRecord:
        # schema-1 centralized records had per-round bytes only (always 0)
        if self.bytes_up_total is None:
            object.__setattr__(self, "bytes_up_total", self.bytes_up)
        if self.bytes_down_total is None:
            object.__setattr__(self, "bytes_down_total", self.bytes_down)
        return self

    @property
    def bytes_total(self) -> int:
        """Cumulative bytes in both directions."""
        return (self.bytes_up_total or 0) + (self.bytes_down_total or 0)


class ClientRecord(Record):
    """One client's part in one attempt of a round (times are simulated seconds)."""

    kind: Literal["client"] = "client"
    round: int
    client: int
    device: str | None = None
    status: ClientStatus = "ok"
    reason: str | None = None
    attempt: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    payload_bytes_up: int = 0
    payload_bytes_down: int = 0
    sim_start: float | None = None
    sim_download_end: float | None = None
    sim_replay_end: float | None = None
    sim_compute_end: float | None = None
    sim_end: float | None = None
    catch_up_entries: int = 0
    catch_up_bytes_down: int = Field(0, description="the catch-up's share of bytes_down")
    batches: list[tuple[int, int]] = Field(default_factory=list, description="(rows, padded width) of each "
                                           "training step, as the clock priced them")
    synced: bool = False
    examples: int | None = None
    host_compute_seconds: float | None = None
    peak_memory_bytes: int | None = Field(None, description="peak memory of the process the client ran in, as "
                                          "it reported it (in-process: the whole simulator, server included)")
    fault: str | None = None
    extra_replies: list[str] = Field(default_factory=list)


class DeviceFit(BaseModel):
    """The memory verdict of one device profile of a fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clients: list[int]
    needed_bytes: int
    available_bytes: int
    fits: bool
    modelled_client_memory_bytes: int
    peak_phase: str
    accelerator: str
    message: str
    speed_ratio: float | None = Field(None, description="device seconds per reference-host second")
    speed_basis: str | None = Field(None, description="benchmark, relative or estimate (fedzo.devices.speed)")
    speed_chain: list[str] = Field(default_factory=list, description="where the speed ratio comes from")


class FleetRecord(Record):
    """The fleet of a federated run, written once before round 1 (no host measurements)."""

    kind: Literal["fleet"] = "fleet"
    round: int = 0
    model: str
    mode: Literal["zo", "bp"]
    batch: int
    seq: int
    peft: str
    dtype: str
    n_params: int
    trainable_params: int
    forwards_per_step: int
    memory_policy: str
    compute_model: str
    clock: Literal["calibrated", "flops-estimate", "measured-host"] | None = Field(
        None, description="where simulated compute seconds come from")
    calibration_sha256: str | None = Field(None, description="the calibration the clock used (calibration.json)")
    measured_client_memory_bytes: int | None = Field(
        None, description="peak RSS of one client's real step in an isolated process (fleet.measure_memory)")
    measured_client_model_bytes: int | None = Field(
        None, description="the same peak less the process's size after imports: the model-attributable part")
    deadline_seconds: float | None
    over_commit: float
    devices: dict[str, DeviceFit]
    excluded_clients: list[int]
    label_histograms: list[list[int]]


MetricRecord = Annotated[RoundRecord | ClientRecord | FleetRecord, Field(discriminator="kind")]
_METRIC = TypeAdapter(MetricRecord)
_FIELDS = {cls.model_fields["kind"].default: set(cls.model_fields) for cls in (RoundRecord, ClientRecord, FleetRecord)}


class Summary(Record):
    """``summary.json``: the final figures of a run."""

    name: str
    model: str
    optimizer: str
    method: Literal["zo", "bp", "zo-federated"]
    peft: str | None = None
    dtype: str | None = Field(None, description="precision of the trained model (fp32, bf16, fp16)")
    engine: str | None = None
    catch_up: str | None = None
    rounds: int | None = None
    rounds_trained: int | None = Field(None, description="rounds in which at least one client's update was "
                                       "applied (federated runs)")
    steps: int | None = None
    fo_local_epochs: int | None = None
    initial_accuracy: float | None = None
    final_accuracy: float | None = None
    best_accuracy: float | None = None
    eval_n: int | None = Field(None, description="examples each accuracy was measured on")
    initial_accuracy_interval: tuple[float, float] | None = Field(None, description="95 % Wilson interval")
    final_accuracy_interval: tuple[float, float] | None = Field(None, description="95 % Wilson interval")
    sim_seconds: float | None = None
    sim_time_basis: Literal["calibrated", "flops-estimate", "measured-host"] | None = Field(
        None, description="calibrated: priced by a measured calibration; flops-estimate: FLOPs over assumed "
        "device rates; measured-host: host seconds scaled")
    host_seconds: float | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_by_kind: dict[str, tuple[int, int]] = Field(default_factory=dict, description="(up, down) by kind")
    peak_client_memory_bytes: int | None = Field(
        None, description="the largest peak the clients' own processes reported (simulation, deployment; "
        "centralized: the training process); None in-process, where clients share the server's process")
    server_peak_rss_bytes: int | None = Field(None, description="peak RSS of the server's (simulator's) process")
    modelled_client_memory_bytes: dict[str, int] = Field(default_factory=dict, description="the memory model's "
                                                         "peak of one client, per device profile")
    measured_client_memory_bytes: int | None = Field(
        None, description="peak of one client's real step measured in an isolated process (fleet.measure_memory)")
    excluded_clients: list[int] = Field(default_factory=list)
    reputation: dict[int, float] | None = Field(None, description="each client's final reputation z-score "
                                                "(federation.reputation): about 0 for noise, < 0 for a sign flip")
    faults: dict[str, dict[str, int]] | None = None
    model_sha256: str | None = None


class RecordError(ValueError):
    """A record line or summary does not follow the schema."""


def parse_record(obj: Mapping[str, Any]) -> RoundRecord | ClientRecord | FleetRecord | None:
    """A metrics line as its record; None for a kind this version does not know.

    Keys this version does not know are dropped (a newer fedzo may write more).
    """
    kind = obj.get("kind")
    if kind not in _FIELDS:
        if kind is None:
            raise RecordError("line has no 'kind'; expected one of round, client, fleet")
        return None
    data = {k: v for k, v in obj.items() if k in _FIELDS[kind]}
    data.setdefault("v", 1)  # lines without a version were written by schema 1
    try:
        return _METRIC.validate_python(data)
    except ValidationError as exc:
        raise RecordError(_first_error(exc)) from None


def parse_summary(obj: Mapping[str, Any]) -> Summary:
    """``summary.json`` content as a :class:`Summary` (unknown keys dropped)."""
    data = {k: v for k, v in obj.items() if k in Summary.model_fields}
    data.setdefault("v", 1)
    try:
        return Summary.model_validate(data)
    except ValidationError as exc:
        raise RecordError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    if loc and loc[0] in _FIELDS:  # the tag of the record kind
        loc = loc[1:]
    where = ".".join(loc) or "(record)"
    if err.get("type") == "missing":
        return f"no {where!r} field"
    return f"{where!r} is {err.get('input')!r}: {err.get('msg')}"


def eval_fields(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """Round-record fields of an evaluation (``Classifier.evaluate``'s metrics), with the
    accuracy's 95 % interval; all None when the round did not evaluate."""
    if metrics is None:
        return {}
    low, high = wilson_interval(float(metrics["accuracy"]), int(metrics["n"]))
    return {"eval_accuracy": metrics["accuracy"], "eval_macro_f1": metrics["macro_f1"], "eval_n": int(metrics["n"]),
            "eval_accuracy_low": low, "eval_accuracy_high": high}


def bytes_by_kind(records: Iterable[RoundRecord | ClientRecord | FleetRecord]) -> dict[str, tuple[int, int]]:
    """Total (up, down) bytes by kind of message over a run's round records."""
    out: dict[str, tuple[int, int]] = {}
    for r in records:
        if isinstance(r, RoundRecord):
            for kind, (up, down) in r.bytes_by_kind.items():
                u, d = out.get(kind, (0, 0))
                out[kind] = (u + up, d + down)
    return dict(sorted(out.items()))


def accuracy_summary(records: Iterable[RoundRecord | ClientRecord | FleetRecord]) -> dict[str, Any]:
    """``initial_accuracy``, ``final_accuracy`` and ``best_accuracy`` of a run's round records,
    with the examples they were measured on and the 95 % intervals of the first and last."""
    evals = [r for r in records if isinstance(r, RoundRecord) and r.eval_accuracy is not None]
    accs = [r.eval_accuracy for r in evals if r.eval_accuracy is not None]
    if not evals:
        return {"initial_accuracy": None, "final_accuracy": None, "best_accuracy": None}

    def interval(r: RoundRecord) -> tuple[float, float] | None:
        return None if r.eval_n is None or r.eval_accuracy is None else wilson_interval(r.eval_accuracy, r.eval_n)

    return {"initial_accuracy": accs[0], "final_accuracy": accs[-1], "best_accuracy": max(accs),
            "eval_n": evals[-1].eval_n, "initial_accuracy_interval": interval(evals[0]),
            "final_accuracy_interval": interval(evals[-1])}
