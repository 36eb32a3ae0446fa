"""The batched engine: a round's ZO participants share their forward passes on one device.

In a round of the seeds-and-scalars protocol every participant starts from the same
global model and probes it along the same server-chosen seeds; only its data differs.
:class:`BatchedTransport` delivers a round's train messages like the in-process engine
(real Flower messages, the same handshake, catch-up and replies), but runs the
participants' local steps together (:func:`fedzo.federation.transports.batched.lockstep.run_lockstep`): each
client runs its own unchanged :meth:`Worker.local_steps`, and every time all of them wait
for a loss, joint forward passes over all their rows, sorted by length, answer them
(:class:`fedzo.federation.transports.batched.joint.JointForward`, under the caps of ``federation.batched``).
Two ways to share a pass:

* ``shared``: every client's parameters are the same at each loss request (one local
  step): the clients' moves are recorded, checked equal (a guard: the engine predicts
  this), and applied once to the worker's model. Any tuning kind (full, LoRA, prompt, prefix), any estimator whose
  directions are all probed before any update (q = 1, or ``fzoo``).
* ``rows``: full weights, prompt, prefix and LoRA tuning with any number of local steps,
  directions and estimators: each client keeps its own copy of its trainable tensors (the
  whole model, for full weights), and each row of the joint forward gets its own client's
  (:mod:`fedzo.federation.transports.batched.rowstate`,
  :mod:`fedzo.federation.transports.batched.fullrows`); a group's copies of full weights or
  LoRA adapters are kept stacked, so a pass holds whole clients and each trained layer runs
  them all in one batched call (:mod:`fedzo.federation.transports.batched.stacked`). The clients' copies are planned
  against a memory budget (:mod:`fedzo.federation.transports.batched.plan`,
  ``federation.batched.max_state_mib``): participants that do not fit together run in
  groups that each fit, one group's lockstep after another (:func:`run_groups`).

Forward gradients (``forward-grad``) run in ``rows`` mode: one forward-mode pass
(:func:`torch.func.jvp`) carries every client's tangent along its own rows, and gives each
client its loss and its derivative. Otherwise (a model whose trained tensors cannot be
given per row, a client whose state alone exceeds the budget, and a half-precision model,
whose joint forward would round the loss differences far beyond the tolerance) the round
runs one client at a time, as in-process, and its record says why (``batching``). A pass's shape differs from a client's own batch, so it may round
differently: scalars agree with the in-process engine's to float32 rounding of the
losses, not bitwise. The server side (aggregation, replay) is the same code.

Three more host-side shares, none of which changes what a client computes: prompt tuning's
virtual tokens run once per client and pass, their keys and values shared by the client's
rows (:mod:`fedzo.federation.transports.batched.promptcache`, ``federation.batched.share_prompt``); the
clients' perturbers read the round's directions from one store
(:mod:`fedzo.zo.shared_directions`), generated once rather than by every client for every
move; and the texts of all the round's batches are tokenized in one call.

Each client is still priced for its own work on its own device: the simulated clock,
the messages and their bytes are those of the in-process engine. A reply's measured host
seconds are the client's catch-up plus its share (by examples) of the joint steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from flwr.app import Error, Message

from fedzo.config.federation import BatchedConfig
from fedzo.federation.client import worker as client_mod
from fedzo.federation.client.memory import peak_memory_bytes
from fedzo.federation.client.worker import LocalSteps, Worker
from fedzo.federation.transports.batched.joint import Answer, JointForward, LossRequest, Mode, Move, NotShareable
from fedzo.federation.transports.batched.lockstep import Abandoned, Ask, Outcome, run_lockstep
from fedzo.federation.transports.batched.plan import Plan, StateTooLarge, make_plan, state_bytes
from fedzo.federation.transports.batched.rowstate import rows_reason, stackable
from fedzo.federation.transports.batched.stacked import Slot, slot_state, stack_states
from fedzo.federation.transports.inprocess import InProcessTransport
from fedzo.federation.wire.fedavg import is_fedavg_downlink
from fedzo.federation.wire.messages import Downlink, build_uplink, parse_downlink
from fedzo.killpoints import kill_point
from fedzo.tasks.batching import Batch
from fedzo.zo import EstimatorConfig, ParamSet, Perturber
from fedzo.zo.forward_grad import Along
from fedzo.zo.perturb import ChunkHook
from fedzo.zo.shared_directions import SharedDirections


class RecordingPerturber(Perturber):
    """Records a client's moves instead of making them (``shared`` mode): the coordinator
    checks that every client made the same ones and applies them once to the shared model."""

    def __init__(self, like: Perturber) -> None:
        super().__init__(like.params, like.spec, mask=like.mask, blocks=like.blocks)
        self.moves: list[Move] = []

    def apply(self, seed: int, alphas: Sequence[float], final: ChunkHook | None = None) -> None:
        """Record ``theta += a * z(seed)``; a per-chunk hook (optimizer state) cannot be shared."""
        if final is not None:
            raise NotShareable("the optimizer keeps per-client state along the direction")
        self.moves.append((seed, tuple(float(a) for a in alphas)))

    def take(self) -> tuple[Move, ...]:
        """The moves since the last call."""
        out, self.moves = tuple(self.moves), []
        return out


def choose_mode(worker: Worker, downlinks: Sequence[Downlink], half_precision: str = "sequential") -> tuple[Mode, str]:
    """How a round's local steps can run together, and why (``half_precision``:
    ``federation.batched.half_precision``)."""
    if len(downlinks) < 2:
        return "sequential", "one participant"
    d = downlinks[0]
    if any(x.catch_up.to_round != d.catch_up.to_round or x.seeds != d.seeds for x in downlinks):
        return "sequential", "participants start from different rounds or seeds"
    est = worker.estimator(d)
    mode, why = _joint_mode(worker, d, est)
    dtype = worker.scenario.model.dtype
    if dtype == "fp32" or mode == "sequential":
        return mode, why
    if half_precision != "joint":
        # a joint forward rounds differently from a client's own; at 8 significant bits the
        # loss differences, and so the scalars, then differ by far more than rounding (tiny
        # model in bf16: up to 52x)
        return "sequential", (f"model.dtype {dtype}: a joint forward would not reproduce each client's scalars "
                              "(federation.batched.half_precision: joint shares the passes anyway)")
    return mode, why  # the scalars then come from the joint passes' rounding, not each client's own


def _joint_mode(worker: Worker, d: Downlink, est: EstimatorConfig) -> tuple[Mode, str]:
    """The joint mode of a round whose clients start alike, whatever the dtype."""
    if est.tangent_forwards_per_step:  # each client's tangent is along its own state: rows only
        rows = rows_reason(worker.objective.classifier, worker.work)
        if rows is None:
            return "rows", f"estimator {est.kind!r}: each row carries its own client's state and tangent"
        return "sequential", f"estimator {est.kind!r} differentiates each client's own state, and {rows}"
    why = []
    if len(d.seeds) > 1:
        why.append(f"K = {len(d.seeds)} local steps")
    if d.q > 1 and not est.estimator.normalized:
        why.append(f"q = {d.q} directions updated one after another")
    if not why:
        return "shared", "every client probes the same parameters"
    rows = rows_reason(worker.objective.classifier, worker.work)
    if rows is None:
        return "rows", "each row carries its own client's trainable state"
    return "sequential", f"{'; '.join(why)} (clients' parameters diverge) and {rows}"


def _job(worker: Worker, d: Downlink, mode: Mode, shared: SharedDirections, slot: Slot | None = None) -> Any:
    """One client's local steps, asking the lockstep coordinator for every loss (and, for
    forward gradients, its derivative along the client's tangents); in ``rows`` mode its
    perturber reads the round's directions from ``shared``, and its own copy of the
    trainable tensors is ``slot`` of its group's stacked copies (else a clone of its own)."""
    def job(ask: Ask[LossRequest, Answer]) -> LocalSteps:
        def loss(request: LossRequest) -> float:
            answer = ask(request)
            assert isinstance(answer, float)
            return answer

        if mode == "shared":
            rec = RecordingPerturber(worker.work_perturber)
            return worker.local_steps(d, rec, lambda b: loss(LossRequest(b, moves=rec.take())))
        own = ParamSet(worker.clean.names,
                       slot_state(slot) if slot is not None else tuple(t.clone() for t in worker.clean.tensors))
        pert = worker.parts.perturbers.build(own, like=worker.work_perturber, shared=shared)

        def along(b: Batch) -> Along:
            def derivative(tangents: Sequence[torch.Tensor]) -> tuple[float, float]:
                answer = ask(LossRequest(b, state=own.tensors, tangents=tuple(tangents)))
                assert isinstance(answer, tuple)
                return answer
            return derivative

        return worker.local_steps(d, pert, lambda b: loss(LossRequest(b, state=own.tensors, slot=slot)), along)
    return job


def plan_rows(worker: Worker, downlinks: Sequence[Downlink], config: BatchedConfig,
              device: torch.device | str) -> tuple[Plan | None, str]:
    """The groups in which a ``rows`` round's clients hold their own states (the
    :mod:`~fedzo.federation.transports.batched.plan` budget), or None and why the round
    runs one client at a time instead."""
    tangents = bool(worker.estimator(downlinks[0]).tangent_forwards_per_step)
    per_client = state_bytes(worker.clean.tensors, tangents=tangents, chunk=worker.work_perturber.spec.chunk_size)
    try:
        return make_plan(len(downlinks), per_client, config.max_state_mib, device), ""
    except StateTooLarge as exc:
        source = ("federation.batched.max_state_mib" if config.max_state_mib is not None
                  else "the device's free memory; federation.batched.max_state_mib sets it")
        return None, f"{exc} for the clients' own copies ({source})"


def run_groups(worker: Worker, downlinks: Sequence[Downlink], groups: Sequence[int], mode: Mode,
               shared: SharedDirections, joint: JointForward) -> tuple[list[Outcome[LocalSteps]], int]:
    """Each group of consecutive clients' local steps in a lockstep of its own, one group
    after another (stopping after a group whose joint forward failed); the outcomes in
    client order and the joint turns of all groups. In ``rows`` mode under full weights or LoRA a
    group's copies of the model are stacked (:mod:`~fedzo.federation.transports.batched.stacked`),
    and freed before the next group's are made."""
    outcomes: list[Outcome[LocalSteps]] = []
    turns = start = 0
    stack = mode == "rows" and stackable(worker.objective.classifier)
    for size in groups:
        stacks = stack_states(worker.clean.tensors, size) if stack else None
        jobs = [_job(worker, d, mode, shared, None if stacks is None else Slot(stacks, j))
                for j, d in enumerate(downlinks[start:start + size])]
        del stacks  # held by the jobs only: gone with them
        got, t = run_lockstep(jobs, joint)
        del jobs
        outcomes, turns, start = outcomes + got, turns + t, start + size
        if any(isinstance(o.error, Abandoned) for o in got):
            break
    return outcomes, turns


def _error(msg: Message, exc: BaseException) -> Message:
    return Message(Error(code=1, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)


class BatchedTransport(InProcessTransport):
    """The in-process transport whose ZO train messages of one exchange run together.

    ``last_batching`` says how the latest exchange ran and ``last_joint_seconds`` the host
    seconds its joint forward passes took (both read into the round record).
    """

    def __init__(self, num_nodes: int, config: BatchedConfig, *, run_id: int = 1) -> None:
        super().__init__(num_nodes, run_id=run_id)
        self.config = config
        self.last_batching: str | None = None
        self.last_joint_seconds: float | None = None

    def exchange(self, messages: Sequence[Message], timeout: float) -> list[Message]:
        """Setup and FedAvg messages one by one; the ZO train messages together."""
        self.last_joint_seconds = None
        replies: dict[int, Message] = {}
        trains: list[tuple[int, Downlink]] = []
        worker: Worker | None = None
        for i, msg in enumerate(messages):
            try:
                if is_fedavg_downlink(msg.content):
                    raise LookupError("not a ZO message")
                d = parse_downlink(msg.content)
                w = None if d.op != "train" else client_mod.train_worker(d, self.contexts[msg.metadata.dst_node_id])
            except Exception:  # noqa: BLE001 - delivered alone: the in-process path reports it
                w = None
            if w is None or (worker is not None and w is not worker):
                replies[i] = super().exchange([msg], timeout)[0]
            else:
                worker = w
                trains.append((i, d))
        if worker is not None:
            replies.update(self._train(worker, [(i, messages[i], d) for i, d in trains]))
        return [replies[i] for i in range(len(messages))]

    def _train(self, worker: Worker, items: list[tuple[int, Message, Downlink]]) -> dict[int, Message]:
        """Replies (by message index) to one worker's train messages: catch-up one by one,
        then the local steps together (or one client at a time, when they cannot share)."""
        out: dict[int, Message] = {}
        ready: list[tuple[int, Message, Downlink, float]] = []
        for i, msg, d in items:
            t0 = time.perf_counter()
            try:
                worker.check_client(d)
                worker.catch_up(d)
                kill_point("client-caught-up", d.round)
            except Exception as exc:  # noqa: BLE001 - a failing client is an error reply, as in-process
                out[i] = _error(msg, exc)
                continue
            ready.append((i, msg, d, time.perf_counter() - t0))
        mode, why = choose_mode(worker, [d for _, _, d, _ in ready], self.config.half_precision)
        plan = None
        if mode == "rows":
            plan, refused = plan_rows(worker, [d for _, _, d, _ in ready], self.config, worker.objective.device)
            mode, why = ("sequential", refused) if plan is None else (mode, why)
        if mode != "sequential":
            worker.reset_work()
            groups = plan.groups if plan is not None else (len(ready),)
            joint = JointForward(worker, mode, self.config, max(groups) * plan.per_client_bytes if plan else 0.0)
            t0 = time.perf_counter()
            shared = SharedDirections()  # the round's directions, generated once for all its clients
            worker.prefetch([d for _, _, d, _ in ready])
            outcomes, turns = run_groups(worker, [d for _, _, d, _ in ready], groups, mode, shared, joint)
            seconds = time.perf_counter() - t0
            self.last_joint_seconds = (self.last_joint_seconds or 0.0) + joint.seconds
            if any(isinstance(o.error, Abandoned) for o in outcomes):
                mode, why = "sequential", f"the joint forward failed ({next(o.error for o in outcomes if o.error)})"
            else:
                total = sum(o.value.examples for o in outcomes if o.value is not None) or 1
                for (i, msg, d, catch_up_s), o in zip(ready, outcomes, strict=True):
                    if o.error is not None or o.value is None:
                        out[i] = _error(msg, o.error or RuntimeError("no result"))
                        continue
                    kill_point("client-trained", d.round)
                    up = o.value.uplink(d, catch_up_s + seconds * o.value.examples / total,
                                        peak_memory_bytes(worker.objective.device))
                    out[i] = Message(build_uplink(up), reply_to=msg)
                grouped = f" {plan.note()}" if plan is not None and plan.note() else ""
                why = f"{len(ready)} clients{grouped}, {turns} joint turns, {joint.forwards} forward passes"
                why += f"; {joint.prompt_note}" if joint.prompt_note else ""
                why += (f"; {joint.stacked_passes} of them whole clients with stacked weights"
                        if joint.stacked_passes else "")
                dtype = worker.scenario.model.dtype
                why += f"; {dtype} joint passes (half_precision: joint)" if dtype != "fp32" else ""
            worker.reset_work()
        if mode == "sequential":
            for i, msg, _, _ in ready:
                out[i] = super().exchange([msg], 0.0)[0]
        self.last_batching = f"{mode}: {why}"
        return out
