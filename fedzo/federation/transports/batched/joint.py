"""Joint forward passes: the rows of many clients' loss requests, packed into few passes.

The batched engine (:mod:`fedzo.federation.transports.batched`) collects, at every turn, one loss
request per waiting client: the loss of that client's batch at its current parameters.
:class:`JointForward` answers them all. It splits every request into its rows, cuts each
row's trailing padding, sorts all rows by length and packs neighbours into passes, each
padded on the right to its own longest row. A client's rows may thus land in several
passes beside other clients' rows; its loss is the mean cross-entropy of its own rows'
scores, in its own order, as in its own forward.

Sorting rows rather than whole client batches removes most padding: a random batch of 8
Rotten Tomatoes prompts is padded to 1.22x its tokens (SmolLM2 tokenizer), a pass of
sorted rows to almost none. Three caps bound a pass: ``max_rows`` rows (its memory),
``max_padding`` (padded tokens over own tokens, minus one) and ``max_pass_mib`` of
activations (rows x width x the model's widest layer; on CUDA by default a share of the
device's free memory beside the clients' states,
:mod:`fedzo.federation.transports.batched.plan`): on a CPU a pass that stays in the caches
runs faster per token (SmolLM2-135M on 2 cores, 128 sorted rows: 16-row passes 1.29x,
128-row passes 0.64x the speed of separate 8-row batches; measured by ``fedzo bench
engines``'s forward ceiling).

Only trailing padding is cut: a left-padded row keeps its leading pads, so its positions
are those of its client's own batch. Causal attention never looks right, and the
classifier finds each row's answer position from its mask, so the tokens that count see
the same inputs; a different pass shape may round differently (float32 rounding of the
scores), which the engine's tolerance states.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.func import jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from fedzo.config.federation import BatchedConfig
from fedzo.federation.transports.batched.plan import cuda_pass_bytes, free_bytes
from fedzo.federation.transports.batched.promptcache import (
    NOT_PROMPT_TUNING,
    block_prompts,
    prompt_cache_reason,
    prompt_scores,
)
from fedzo.federation.transports.batched.rowstate import States, per_row_state, prompt_table_index
from fedzo.federation.transports.batched.stacked import Slot, pack_clients, stacked_layers
from fedzo.tasks.batching import Batch
from fedzo.tasks.classifiers import last_positions

Mode = Literal["shared", "rows", "sequential"]
Move = tuple[int, tuple[float, ...]]
Answer = float | tuple[float, float]  # a loss; or a loss and its derivative along the request's tangents
CPU_PASS_MIB = 8.0  # the default activation cap of one pass on a CPU (see the module doc)


class NotShareable(RuntimeError):
    """The clients' parameters differ at a loss request: no shared forward is possible."""


@dataclass(frozen=True)
class LossRequest:
    """One client's request: the loss of ``batch`` at its current parameters."""

    batch: Batch
    state: tuple[torch.Tensor, ...] = ()  # rows: the client's own trainable tensors
    moves: tuple[Move, ...] = ()  # shared: the moves the client made since its last request
    tangents: tuple[torch.Tensor, ...] = ()  # rows, forward gradients: a direction for each state tensor
    slot: Slot | None = None  # rows, full weights or LoRA: where ``state`` lives in its group's stacked copies


def row_lengths(batch: Batch) -> list[int]:
    """Each row's width without its trailing padding (its last real token, plus one)."""
    return [int(x) + 1 for x in last_positions(batch.attention_mask)]


def token_bytes(model: Any) -> int:
    """Bytes of one token's widest activation in ``model`` (its MLP, or 4x its hidden size)."""
    config = getattr(model, "config", None)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    widest = max(hidden, int(getattr(config, "intermediate_size", 0) or 4 * hidden), 1)
    param = next(iter(model.parameters()), None)
    return widest * (param.element_size() if param is not None else 4)


def pass_byte_cap(max_pass_mib: float | None, device: torch.device | str, states: float = 0.0) -> float:
    """The activation cap of one pass: the configured one, else 8 MiB on a CPU; on CUDA what
    the device has free beside ``states`` bytes of client states, over the activations a pass
    holds at once (:func:`fedzo.federation.transports.batched.plan.cuda_pass_bytes`); none elsewhere."""
    if max_pass_mib is not None:
        return max_pass_mib * 2**20
    dev = torch.device(device)
    if dev.type == "cpu":
        return CPU_PASS_MIB * 2**20
    return cuda_pass_bytes(free_bytes(dev), states) if dev.type == "cuda" else float("inf")


def pack(lengths: Sequence[int], max_rows: int, max_padding: float, max_tokens: float) -> list[list[int]]:
    """Rows (by index) packed into passes: sorted by length, neighbours together, a pass
    closed when one more row would break a cap (``max_rows`` rows, padded tokens above
    ``1 + max_padding`` times its rows' own, more than ``max_tokens`` padded tokens).
    Every pass holds at least one row; each pass lists its rows in index order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    out: list[list[int]] = []
    n = own = 0  # rows and own tokens of the open pass
    for i in order:
        width = lengths[i]  # the longest so far: rows come sorted
        if out and n + 1 <= max_rows and (n + 1) * width <= min((1 + max_padding) * (own + width), max_tokens):
            out[-1].append(i)
            n, own = n + 1, own + width
        else:
            out.append([i])
            n, own = 1, width
    return [sorted(p) for p in out]


Block = tuple[int, list[int]]  # (request, its rows in this pass)


def blocks(rows: Sequence[int], owner: Sequence[tuple[int, int]]) -> list[Block]:
    """The flat rows of one pass (in index order) as runs of one request's rows;
    ``owner[k]`` is flat row ``k``'s (request, row)."""
    out: list[Block] = []
    for k in rows:
        i, j = owner[k]
        if out and out[-1][0] == i:
            out[-1][1].append(j)
        else:
            out.append((i, [j]))
    return out


def gather(batches: Sequence[Batch], parts: Sequence[Block], width: int, pad_id: int) -> Batch:
    """One pass ``width`` tokens wide of the rows ``parts`` name: each request's rows cut (or
    padded on the right) to that width. Beyond a row's length lie its own trailing pads,
    which are what padding would put there."""
    ids, mask, labels = [], [], []
    for i, js in parts:
        b = batches[i]
        idx = torch.tensor(js, device=b.input_ids.device)  # index_select wants both on one device
        x, m = b.input_ids.index_select(0, idx), b.attention_mask.index_select(0, idx)
        extra = width - x.shape[1]
        ids.append(x[:, :width] if extra <= 0 else F.pad(x, (0, extra), value=pad_id))
        mask.append(m[:, :width] if extra <= 0 else F.pad(m, (0, extra), value=0))
        labels.append(b.labels.index_select(0, idx))
    return Batch(torch.cat(ids), torch.cat(mask), torch.cat(labels))


def _prompt_note(why: str | None, shared: bool, share_prompt: bool) -> str | None:
    """How a pass ran prompt tuning's virtual tokens, for the round's batching note."""
    if why == NOT_PROMPT_TUNING:
        return None
    if shared:
        return "virtual tokens once per client and pass"
    if not share_prompt:
        return "virtual tokens per row (share_prompt off)"
    return f"virtual tokens per row ({why})"


class JointForward:
    """Answers a turn's loss requests with passes of sorted rows (see the module doc)."""

    def __init__(self, worker: Any, mode: Mode, config: BatchedConfig, states: float = 0.0) -> None:
        """``states``: bytes the clients' own states will take beside the passes (``rows`` mode)."""
        self.worker = worker
        self.mode = mode
        self.max_rows = config.max_rows
        self.max_padding = config.max_padding
        clf = worker.objective.classifier
        cap = pass_byte_cap(config.max_pass_mib, worker.objective.device, states)
        self.max_tokens = cap / token_bytes(clf.model)
        self.cpu = torch.device(worker.objective.device).type == "cpu"
        self.forwards = 0
        self.stacked_passes = 0  # passes of whole clients with stacked copies (module stacked)
        self.seconds = 0.0  # host seconds spent in calls (the joint passes and their losses)
        # prompt tuning: which state tensor holds a client's virtual tokens, when they are shared per block
        why = prompt_cache_reason(clf)
        self.prompt_table = (prompt_table_index(clf.model, worker.work) if mode != "sequential"
                             and config.share_prompt and why is None else None)
        self.prompt_note = _prompt_note(why, self.prompt_table is not None, config.share_prompt)

    def __call__(self, requests: list[LossRequest]) -> list[Answer]:
        t0 = time.perf_counter()
        try:
            return self._answer(requests)
        finally:
            self.seconds += time.perf_counter() - t0

    def _answer(self, requests: list[LossRequest]) -> list[Answer]:
        if self.mode == "shared":
            moves = {r.moves for r in requests}
            if len(moves) != 1:
                raise NotShareable("clients made different moves before a loss request")
            for seed, alphas in requests[0].moves:
                self.worker.work_perturber.apply(seed, alphas)
        along = [bool(r.tangents) for r in requests]
        if not any(along):
            with torch.no_grad():
                return [float(x) for x in self._losses(requests, [r.state for r in requests])]
        if not all(along) or self.mode != "rows":
            raise NotShareable("forward gradients need every request's tangents and per-row client state")
        return self._along(requests)

    def _along(self, requests: Sequence[LossRequest]) -> list[Answer]:
        """Each request's loss and its exact derivative along its own tangents, from one
        forward-mode pass over all the rows (:func:`torch.func.jvp`; a client's loss depends
        on its own state only, so the derivative of the stacked losses is each client's own).

        On a CPU a forward-mode pass holds at most one client's batch of rows (sorted by
        length, so still with less padding): larger ones ran slower than the clients' own
        passes (SmolLM2-135M prompt tuning, 8 clients x 2 steps, `fedzo bench batched`: 0.88x
        with the engine's caps, 1.06x with passes of 8 rows)."""
        n = len(requests[0].state)
        primals = tuple(t for r in requests for t in r.state)
        tangents = tuple(t for r in requests for t in r.tangents)

        rows = max(len(r.batch) for r in requests) if self.cpu else None

        def losses(*flat: torch.Tensor) -> torch.Tensor:  # the dual tensors, not the stacked copies, carry the tangents
            return self._losses(requests, [flat[i * n:(i + 1) * n] for i in range(len(requests))], rows, stacked=False)

        # PyTorch's fused CPU attention has no forward-mode derivative (as fedzo.zo.forward_grad)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            out = jvp(losses, primals, tangents)
        return [(float(v), float(d)) for v, d in zip(out[0], out[1], strict=True)]

    def _client_passes(self, requests: Sequence[LossRequest]) -> list[tuple[list[int], int]] | None:
        """Passes of whole clients (request indices, and the pass's width) when every
        request's state is a slot of one group's stacked copies (module stacked), else None."""
        slots = [r.slot for r in requests if r.slot is not None]
        if self.mode != "rows" or not slots or len(slots) < len(requests) or any(
                s.stacks is not slots[0].stacks for s in slots):
            return None
        widths = [max(row_lengths(r.batch)) for r in requests]
        passes = pack_clients([len(r.batch) for r in requests], widths, [s.index for s in slots],
                              self.max_rows, self.max_padding, self.max_tokens)
        return [(p, max(widths[i] for i in p)) for p in passes]

    def _losses(self, requests: Sequence[LossRequest], states: States, max_rows: int | None = None,
                stacked: bool = True) -> torch.Tensor:
        """Every request's mean cross-entropy over its own rows (stacked), from packed passes
        of at most ``max_rows`` rows (default: the engine's cap): passes of whole clients when
        ``stacked`` allows and ``states`` are the requests' slots of stacked copies, else of
        rows sorted by length."""
        clients = self._client_passes(requests) if stacked else None
        if clients is not None:
            scores = torch.cat([self._forward_clients(requests, p, w) for p, w in clients])  # in request order
        else:
            lengths = [n for r in requests for n in row_lengths(r.batch)]
            owner = [(i, j) for i, r in enumerate(requests) for j in range(len(r.batch))]
            passes = pack(lengths, min(self.max_rows, max_rows or self.max_rows), self.max_padding, self.max_tokens)
            scores = torch.cat([self._forward(requests, states, blocks(p, owner), max(lengths[k] for k in p))
                                for p in passes])
            order = torch.tensor([k for p in passes for k in p], device=scores.device)
            scores = scores[torch.argsort(order)]  # back in request order
        out, start = [], 0
        for r in requests:
            out.append(F.cross_entropy(scores[start:start + len(r.batch)], r.batch.labels))
            start += len(r.batch)
        return torch.stack(out)

    def _gather(self, requests: Sequence[LossRequest], parts: Sequence[Block], width: int) -> Batch:
        """One pass of the rows ``parts`` name (counted as a forward)."""
        pad_id = self.worker.objective.classifier.tokenizer.pad_token_id
        assert pad_id is not None  # the classifier refuses tokenizers without one
        self.forwards += 1
        return gather([r.batch for r in requests], parts, width, int(pad_id))

    def _forward_clients(self, requests: Sequence[LossRequest], clients: Sequence[int], width: int) -> torch.Tensor:
        """Class scores of the whole batches of ``clients`` (consecutive slots of one group's
        stacked copies, equal batch sizes), in their order, in one pass ``width`` tokens wide."""
        slot, rows = requests[clients[0]].slot, len(requests[clients[0]].batch)
        assert slot is not None
        joint = self._gather(requests, [(i, list(range(rows))) for i in clients], width)
        self.stacked_passes += 1
        clf = self.worker.objective.classifier
        stacks = [s.narrow(0, slot.index, len(clients)) for s in slot.stacks]
        with stacked_layers(clf, self.worker.work, stacks, rows), clf.eager():
            return clf.logits(joint)

    def _forward(self, requests: Sequence[LossRequest], states: States, parts: Sequence[Block],
                 width: int) -> torch.Tensor:
        """Class scores of the rows ``parts`` name, in their order, in one pass."""
        clf = self.worker.objective.classifier
        joint = self._gather(requests, parts, width)
        if self.prompt_table is not None:  # each block's virtual tokens run once (promptcache)
            if self.mode == "rows":
                tables, rows = [states[i][self.prompt_table] for i, _ in parts], [len(js) for _, js in parts]
            else:  # shared: one table for the whole pass
                tables, rows = [self.worker.work.tensors[self.prompt_table]], [len(joint)]
            return prompt_scores(clf, joint, block_prompts(clf, tables), rows)
        if self.mode != "rows":
            return clf.logits(joint)
        # per-row state patches module code for the call: it runs eager whatever runtime.forward says
        with (per_row_state(clf, self.worker.work, [states[i] for i, _ in parts], [len(js) for _, js in parts]),
              clf.eager()):
            return clf.logits(joint)
