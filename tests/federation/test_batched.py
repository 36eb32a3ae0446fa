"""The batched engine: a round's clients share forward passes; results match in-process.

Tolerance, derived from the arithmetic: a joint forward pass may round differently from one
client's own (another batch shape, so another order of float32 sums), so each of a client's
losses may move by a few units in the last place (ulps). A finite-difference scalar divides
a difference of two such losses by eps, so it may move by ``LOSS_ULPS`` ulps of the loss over
eps (:func:`_grad_bound`), however small the scalar is; a value computed directly (a
forward-mode derivative) moves by at most ``RTOL`` of itself. Seeds and learning rates agree
exactly. On the tiny model the engines often agree bitwise; the tests say so when they do and
fail only beyond the bound, and :func:`test_the_bound_is_not_vacuous` fails a coefficient
moved by 10 times it.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from fedzo.config.scenario import Scenario, load_scenario
from fedzo.errors import ConfigError
from fedzo.federation.run import run_federated
from fedzo.federation.transports.batched import NotShareable, RecordingPerturber
from fedzo.federation.transports.batched.joint import blocks, gather, pack, pass_byte_cap, row_lengths, token_bytes
from fedzo.federation.transports.batched.lockstep import Abandoned, run_lockstep
from fedzo.tasks.batching import Batch
from fedzo.zo import NoiseSpec, ParamSet, Perturber

RTOL = 1e-4  # a value computed directly in float32: about 1,700 roundings of 2**-24
LOSS_ULPS = 8  # each of the two losses of a scalar may round by 4 ulps in a pass of another shape


def _scenario(fed_config: Any, peft: str, *, zo: dict[str, Any] | None = None, optimizer: str = "zo-sgd",
              faults: dict[str, Any] | None = None, **fed: Any) -> Scenario:
    data = fed_config(optimizer=optimizer, **fed).model_dump()
    data["model"]["peft"] = peft
    data["zo"] |= zo or {}
    if faults:
        data["faults"] = faults
    return Scenario.model_validate(data)


def _entries(run: Path) -> list[Any]:
    lines = [json.loads(x)["data"] for x in (run / "update_log.jsonl").read_text().splitlines()]
    return [e for line in lines for e in line.get("entries", [])]


def _batching(run: Path) -> list[str | None]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r.get("batching") for r in recs if r["kind"] == "round" and r["round"] > 0]


def _loss_scale(run: Path) -> float:
    """The largest training loss of a run's rounds (the losses that the scalars difference)."""
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [abs(r["train_loss"]) for r in recs if r["kind"] == "round" and r.get("train_loss") is not None]
    return max(losses, default=1.0)


def _grad_bound(sc: Scenario, loss: float = 1.0) -> float:
    """How far a finite-difference scalar (L(w + eps z) - L(w -/+ ...)) / (c eps), c = 1 or 2,
    may move when its two float32 losses near ``loss`` each round by up to LOSS_ULPS / 2 ulps."""
    ulp = 2.0 ** (math.floor(math.log2(max(loss, 2.0**-126))) - 23)  # float32 ulp at the loss
    return LOSS_ULPS * ulp / sc.zo.eps


def _close(a: list[Any], b: list[Any], grad_bound: float) -> bool:
    """Same seeds and learning rates; projected gradients within ``grad_bound`` (plus RTOL of
    themselves) and each move along a direction within the learning rate times that bound. A
    sign optimizer's move may flip only where the gradient itself lies within the bound."""
    if len(a) != len(b):
        return False
    for (seed_a, alphas_a, grad_a, lr_a), (seed_b, alphas_b, grad_b, lr_b) in zip(a, b, strict=True):
        if seed_a != seed_b or lr_a != lr_b or len(alphas_a) != len(alphas_b):
            return False
        undecided = grad_a is not None and abs(grad_a) <= grad_bound
        if grad_a is not None and not math.isclose(grad_a, grad_b, rel_tol=RTOL, abs_tol=grad_bound):
            return False
        scale = abs(lr_a) if lr_a is not None else 1.0
        for x, y in zip(alphas_a, alphas_b, strict=True):
            if not (undecided or math.isclose(x, y, rel_tol=RTOL, abs_tol=scale * grad_bound)):
                return False
    return True


CASES = {  # name: (peft, zo, optimizer, federation keys, expected mode)
    "prompt-K3": ("prompt", {}, "zo-sgd", {}, "rows"),
    "prompt-K2-q2-sign": ("prompt", {"q": 2}, "zo-sgd-sign", {"local_steps": 2}, "rows"),
    "prompt-K1-fzoo": ("prompt", {"estimator": "fzoo", "q": 3}, "zo-sgd", {"local_steps": 1}, "shared"),
    "full-K1": ("full", {}, "zo-sgd-sign", {"local_steps": 1}, "shared"),
    "lora-K1-fzoo": ("lora", {"estimator": "fzoo", "q": 2}, "zo-sgd", {"local_steps": 1}, "shared"),
    "prefix-K1": ("prefix", {}, "zo-sgd", {"local_steps": 1}, "shared"),
    "full-K1-q2": ("full", {"q": 2}, "zo-sgd", {"local_steps": 1}, "rows"),
    "full-K2": ("full", {}, "zo-sgd", {"local_steps": 2}, "rows"),
    "full-K2-q2-sign": ("full", {"q": 2}, "zo-sgd-sign", {"local_steps": 2}, "rows"),
    "prefix-K3": ("prefix", {}, "zo-sgd", {}, "rows"),
    "prefix-K2-q2-sign": ("prefix", {"q": 2}, "zo-sgd-sign", {"local_steps": 2}, "rows"),
    "lora-K3": ("lora", {}, "zo-sgd", {}, "rows"),
    "lora-K2-q2-sign": ("lora", {"q": 2}, "zo-sgd-sign", {"local_steps": 2}, "rows"),
    "prompt-K1-forward-grad": ("prompt", {"estimator": "forward-grad"}, "zo-sgd", {"local_steps": 1}, "rows"),
    "lora-K2-forward-grad": ("lora", {"estimator": "forward-grad"}, "zo-sgd", {"local_steps": 2}, "rows"),
    "prefix-K2-forward-grad": ("prefix", {"estimator": "forward-grad"}, "zo-sgd", {"local_steps": 2}, "rows"),
    "full-K2-forward-grad": ("full", {"estimator": "forward-grad"}, "zo-sgd", {"local_steps": 2}, "rows"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_batched_equals_in_process(tmp_path: Path, fed_config: Any, name: str) -> None:
    peft, zo, opt, fed, mode = CASES[name]
    # the plain joint forward (prompt tuning's shared virtual tokens: the test below)
    sc = _scenario(fed_config, peft, zo=zo, optimizer=opt, clients_per_round=3, batched={"share_prompt": False}, **fed)
    ref = run_federated(sc, tmp_path / "inprocess", engine="inprocess")
    got = run_federated(sc, tmp_path / "batched", engine="batched")
    assert got.engine == "batched" and got.peak_client_memory_bytes is None
    notes = _batching(tmp_path / "batched")
    assert all(n is not None and n.startswith(f"{mode}:") for n in notes), notes
    if mode != "sequential":
        assert all("3 clients" in str(n) for n in notes), notes
    if peft == "prompt" and mode != "sequential":
        assert all(str(n).endswith("; virtual tokens per row (share_prompt off)") for n in notes), notes
    stacked = peft in ("full", "lora") and mode == "rows" and zo.get("estimator") != "forward-grad"
    assert all(("whole clients with stacked weights" in str(n)) == stacked for n in notes), notes
    if mode == "rows" and zo.get("estimator") == "forward-grad":  # on a CPU a tangent pass holds one batch of rows
        for n in notes:
            turns, passes = (int(str(n).split(f" {w}")[0].split()[-1]) for w in ("joint turns", "forward passes"))
            assert passes >= 3 * turns, n
    a, b = _entries(tmp_path / "inprocess"), _entries(tmp_path / "batched")
    bound = _grad_bound(sc, _loss_scale(tmp_path / "inprocess"))
    assert _close(a, b, bound), f"{name}: coefficients differ beyond {bound:.3g} (+ rtol {RTOL})"
    if a == b:  # same arithmetic: the runs agree bitwise, final accuracy included
        assert got.final_accuracy == ref.final_accuracy
    # the clock, the bytes and the messages are the in-process engine's
    assert (got.sim_seconds, got.bytes_up, got.bytes_down) == (ref.sim_seconds, ref.bytes_up, ref.bytes_down)


def test_forward_gradients_in_one_pass_use_the_tangents_not_the_stacked_copies(
        tmp_path: Path, fed_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a CPU a forward-gradient turn is one forward-mode pass over all rows. Under full
    weights the clients' slots of the stacked copies hold their primal values only: the pass
    must run on the jvp's dual tensors, or every derivative would be zero."""
    from fedzo.federation.transports.batched import joint

    init = joint.JointForward.__init__

    def as_on_a_gpu(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.cpu = False  # no one-batch cap on a forward-mode pass, as on CUDA

    monkeypatch.setattr(joint.JointForward, "__init__", as_on_a_gpu)
    peft, zo, opt, fed, _ = CASES["full-K2-forward-grad"]
    sc = _scenario(fed_config, peft, zo=zo, optimizer=opt, clients_per_round=3, **fed)
    run_federated(sc, tmp_path / "inprocess", engine="inprocess")
    run_federated(sc, tmp_path / "batched", engine="batched")
    assert all(str(n).startswith("rows: 3 clients") for n in _batching(tmp_path / "batched"))
    a, b = _entries(tmp_path / "inprocess"), _entries(tmp_path / "batched")
    assert _close(a, b, _grad_bound(sc, _loss_scale(tmp_path / "inprocess")))


def test_clients_with_batches_of_other_sizes_take_passes_of_their_own(tmp_path: Path, fed_config: Any) -> None:
    """Stacked copies run whole clients of equal batch sizes per pass: with 16 training
    examples over 3 clients (batches of 6, 5 and 5 rows) every turn takes two passes, the
    6-row client's and the two 5-row clients', and the scalars agree with in-process."""
    data = _scenario(fed_config, "full", num_clients=3, clients_per_round=3, local_steps=2, rounds=1).model_dump()
    data["data"]["train_examples"] = 16
    sc = Scenario.model_validate(data)
    run_federated(sc, tmp_path / "inprocess", engine="inprocess")
    run_federated(sc, tmp_path / "batched", engine="batched")
    recs = [json.loads(x) for x in (tmp_path / "batched" / "metrics.jsonl").read_text().splitlines()]
    assert sorted({b[0] for r in recs if r["kind"] == "client" for b in r.get("batches") or []}) == [5, 6]
    assert _batching(tmp_path / "batched") == [
        "rows: 3 clients, 4 joint turns, 8 forward passes; 8 of them whole clients with stacked weights"]
    a, b = _entries(tmp_path / "inprocess"), _entries(tmp_path / "batched")
    assert _close(a, b, _grad_bound(sc, _loss_scale(tmp_path / "inprocess")))


def test_the_bound_is_not_vacuous(tmp_path: Path, fed_config: Any) -> None:
    """A run agrees with itself, and one projected gradient or one move off by 10 times the
    bound is caught; the bound is also well below the scalars it guards."""
    import copy

    sc = _scenario(fed_config, "prompt", clients_per_round=3, batched={"share_prompt": False})
    run_federated(sc, tmp_path / "inprocess", engine="inprocess")
    a = _entries(tmp_path / "inprocess")
    bound = _grad_bound(sc, _loss_scale(tmp_path / "inprocess"))
    grads = sorted(abs(e[2]) for e in a)
    assert _close(a, a, bound) and bound < 0.1 * grads[len(grads) // 2], (bound, grads)
    i = max(range(len(a)), key=lambda k: abs(a[k][2]))
    moved = copy.deepcopy(a)
    moved[i][2] += 10 * (bound + RTOL * abs(a[i][2]))
    assert not _close(a, moved, bound)
    moved = copy.deepcopy(a)
    moved[i][1][0] += 10 * (abs(a[i][3]) * bound + RTOL * abs(a[i][1][0]))
    assert not _close(a, moved, bound)


@pytest.mark.parametrize("name", ["prompt-K3", "prompt-K2-q2-sign", "prompt-K1-forward-grad"])
def test_shared_virtual_tokens_keep_each_clients_scalars(tmp_path: Path, fed_config: Any, name: str) -> None:
    """Prompt tuning's virtual tokens run once per client and pass (the default): a pass of
    another shape rounds the losses differently, so a central-difference scalar may move by a
    few float32 ulps of the loss over 2 eps; the clock and the bytes are unchanged."""
    peft, zo, opt, fed, mode = CASES[name]
    sc = _scenario(fed_config, peft, zo=zo, optimizer=opt, clients_per_round=3, **fed)
    assert sc.federation.batched.share_prompt
    ref = run_federated(sc, tmp_path / "inprocess", engine="inprocess")
    got = run_federated(sc, tmp_path / "batched", engine="batched")
    assert all(str(n).startswith(f"{mode}: 3 clients") and str(n).endswith("; virtual tokens once per client and pass")
               for n in _batching(tmp_path / "batched"))
    a, b = _entries(tmp_path / "inprocess"), _entries(tmp_path / "batched")
    assert _close(a, b, _grad_bound(sc, _loss_scale(tmp_path / "inprocess")))
    assert (got.sim_seconds, got.bytes_up, got.bytes_down) == (ref.sim_seconds, ref.bytes_up, ref.bytes_down)


def test_shared_virtual_tokens_score_as_the_full_forward(fed_config: Any) -> None:
    """The cached virtual tokens give the scores of the plain joint forward: left-padded rows
    of different widths, each block with its own client's table."""
    from fedzo.federation.transports.batched.promptcache import block_prompts, prompt_cache_reason, prompt_scores
    from fedzo.federation.transports.batched.rowstate import per_row_state, prompt_table_index
    from fedzo.tasks.objective import build_objective

    sc = fed_config()
    obj = build_objective(sc.model.model_copy(update={"peft": "prompt"}), sc.data, sc.runtime, 0)
    clf, work = obj.classifier, ParamSet.from_module(obj.classifier)
    assert prompt_cache_reason(clf) is None and clf.tokenizer.padding_side == "left"
    k = prompt_table_index(clf.model, work)
    torch.manual_seed(0)
    rows = [3, 1, 4]
    states = [[t + 0.05 * torch.randn_like(t) for t in work.tensors] for _ in rows]
    examples = obj.train[: sum(rows)]
    batch = next(iter(clf.batches(examples, len(examples))))
    assert len(set(batch.attention_mask.sum(1).tolist())) > 1  # rows of several lengths, left-padded
    with torch.no_grad():
        with per_row_state(clf, work, states, rows):
            plain = clf.logits(batch)
        cached = prompt_scores(clf, batch, block_prompts(clf, [s[k] for s in states]), rows)
    torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(cached[:3], cached[3:4].expand(3, -1))  # the blocks' tables matter


def test_batched_with_faults_catch_up_and_a_row_cap(tmp_path: Path, fed_config: Any) -> None:
    """Crashes, dropouts, duplicates and stale replies around joint forwards of at most one
    client's batch (``max_rows`` = batch size), with clients catching up by replay."""
    faults = {"seed": 1, "crash_before": 0.15, "dropout": 0.15, "duplicate": 0.15, "stale": 0.15}
    sc = _scenario(fed_config, "prompt", faults=faults, num_clients=6, clients_per_round=4, rounds=4,
                   batched={"max_rows": 8})
    ref = run_federated(sc, tmp_path / "inprocess", engine="inprocess")
    got = run_federated(sc, tmp_path / "batched", engine="batched")
    bound = _grad_bound(sc, _loss_scale(tmp_path / "inprocess"))
    assert _close(_entries(tmp_path / "inprocess"), _entries(tmp_path / "batched"), bound)
    assert got.faults == ref.faults and got.faults is not None and sum(got.faults["injected"].values()) > 0
    for note in _batching(tmp_path / "batched"):
        assert note is not None
        turns = int(note.split(" joint turns")[0].rsplit(" ", 1)[1])
        clients = int(note.split(" clients")[0].rsplit(" ", 1)[1])
        passes = int(note.split(" forward passes")[0].rsplit(" ", 1)[1])
        assert passes >= turns * clients  # the cap holds every pass to one batch's rows


def test_one_clients_catch_up_equals_the_shared_state(tmp_path: Path, fed_config: Any) -> None:
    """The batched engine serves every participant from one synced model; a fresh worker that
    replays a newcomer's whole catch-up (every entry since round 0) reaches the same weights."""
    import fedzo.federation.client.worker as client_mod
    from fedzo.federation.setup import ClientSetup
    from fedzo.zo import UpdateLog, apply_entries

    sc = _scenario(fed_config, "prompt", num_clients=4, clients_per_round=2, rounds=3)
    run_federated(sc, tmp_path / "batched", engine="batched")
    shared = client_mod._WORKER
    assert shared is not None and shared.round == 2  # synced to global(2) for round 3
    fresh = client_mod.Worker(ClientSetup.from_json(shared.setup.to_json()))
    log, _ = UpdateLog.load(tmp_path / "batched" / "update_log.jsonl")
    apply_entries(fresh.clean_perturber, log.entries(after=0, upto=2))
    assert all(torch.equal(a, b) for a, b in zip(fresh.clean.tensors, shared.clean.tensors, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(fresh.initial.values(), shared.clean.tensors, strict=True))


def test_batched_refuses_a_clock_from_measured_host_time(tmp_path: Path, fed_config: Any) -> None:
    data = fed_config().model_dump()
    data["fleet"] = {"compute_model": "measured"}
    sc = Scenario.model_validate(data)
    with pytest.raises(ConfigError, match="compute_model"):
        run_federated(sc, tmp_path / "run", engine="batched")


def test_row_lengths_cut_only_trailing_padding() -> None:
    # right-padded rows lose their pads; a left-padded row keeps its leading ones (its positions)
    b = Batch(torch.tensor([[5, 6, 0, 0], [0, 7, 8, 9], [1, 2, 3, 4]]),
              torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]]), torch.tensor([0, 1, 0]))
    assert row_lengths(b) == [2, 4, 4]


def test_a_pass_gathers_rows_cut_or_padded_to_its_width() -> None:
    a = Batch(torch.tensor([[5, 6, 0, 0], [7, 8, 9, 0]]), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]), torch.tensor([0, 1]))
    b = Batch(torch.tensor([[1, 2]]), torch.tensor([[1, 1]]), torch.tensor([1]))
    owner = [(0, 0), (0, 1), (1, 0)]
    parts = blocks([0, 2], owner)
    assert parts == [(0, [0]), (1, [0])]
    j = gather([a, b], parts, 2, pad_id=0)  # a's row cut to 2 (its own pads beyond), b's as is
    assert j.input_ids.tolist() == [[5, 6], [1, 2]] and j.attention_mask.tolist() == [[1, 1], [1, 1]]
    j = gather([a, b], blocks([1, 2], owner), 3, pad_id=0)  # b's row padded on the right to 3
    assert j.input_ids.tolist() == [[7, 8, 9], [1, 2, 0]] and j.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert j.labels.tolist() == [1, 1]


def test_rows_are_packed_by_length_under_every_cap() -> None:
    lengths = [50, 40, 20, 42, 21]
    # sorted 20, 21 | 40, 42 | 50 under 2 rows a pass; each pass lists its rows in index order
    assert pack(lengths, 2, 10.0, math.inf) == [[2, 4], [1, 3], [0]]
    assert pack(lengths, 8, 10.0, math.inf) == [[0, 1, 2, 3, 4]]
    # padding: 20, 21 together (42 <= 1.25 x 41); 40 would pad 20 and 21 to 40
    assert pack(lengths, 8, 0.25, math.inf) == [[2, 4], [0, 1, 3]]
    assert pack([30, 30, 31], 8, 0.0, math.inf) == [[0, 1], [2]]
    # tokens: at most 84 padded tokens a pass; a row longer than the cap still gets its own pass
    assert pack(lengths, 8, 10.0, 84) == [[2, 4], [1, 3], [0]]
    assert pack([100], 8, 0.0, 10) == [[0]]


def test_pass_cap_defaults_to_cache_sized_passes_on_a_cpu_only() -> None:
    assert pass_byte_cap(None, "cpu") == 8 * 2**20
    assert pass_byte_cap(None, "meta") == math.inf
    assert pass_byte_cap(2.0, "meta") == 2 * 2**20
    lin = torch.nn.Linear(4, 4)
    lin.config = type("C", (), {"hidden_size": 64, "intermediate_size": 128})()  # type: ignore[assignment]
    assert token_bytes(lin) == 128 * 4


def test_recording_perturber_records_and_refuses_hooks() -> None:
    params = ParamSet.from_tensors({"w": torch.zeros(4)})
    rec = RecordingPerturber(Perturber(params, NoiseSpec("portable", "gaussian", 1024)))
    rec.apply(3, (0.5, -1.0))
    assert rec.take() == ((3, (0.5, -1.0)),) and rec.take() == ()
    assert torch.equal(params.tensors[0], torch.zeros(4))  # nothing moved
    with pytest.raises(NotShareable):
        rec.apply(3, (1.0,), final=lambda *a: None)


def test_lockstep_answers_every_turn_jointly_in_order() -> None:
    calls: list[list[int]] = []
    running: list[str] = []

    def job(i: int, asks: int) -> Any:
        def run(ask: Any) -> float:
            total = 0.0
            for k in range(asks):
                running.append(threading.current_thread().name)
                total += ask(10 * i + k)
            return total
        return run

    def answer(reqs: list[int]) -> list[float]:
        calls.append(reqs)
        return [r / 2 for r in reqs]

    out, turns = run_lockstep([job(0, 2), job(1, 3), job(2, 1)], answer)
    assert [o.value for o in out] == [(0 + 1) / 2, (10 + 11 + 12) / 2, 20 / 2]
    assert calls == [[0, 10, 20], [1, 11], [12]] and turns == 3
    assert running[:3] == ["fedzo-lockstep-0", "fedzo-lockstep-1", "fedzo-lockstep-2"]


def test_lockstep_keeps_one_jobs_error_and_abandons_a_failed_turn() -> None:
    def fine(ask: Any) -> float:
        return ask(1) + ask(2)

    def broken(ask: Any) -> float:
        ask(1)
        raise FloatingPointError("loss at x + eps z is not finite")

    out, _ = run_lockstep([fine, broken], lambda reqs: [0.0] * len(reqs))
    assert out[0].value == 0.0 and isinstance(out[1].error, FloatingPointError)

    def fail(reqs: list[int]) -> list[float]:
        raise RuntimeError("out of memory")

    out, turns = run_lockstep([fine, fine], fail)
    assert turns == 1 and all(isinstance(o.error, Abandoned) for o in out)


def test_an_interrupted_batched_run_resumes_bitwise(tmp_path: Path, fed_config: Any, interrupt_and_resume: Any,
                                                    strip_timings: Any) -> None:
    sc = _scenario(fed_config, "prompt", engine="batched", clients_per_round=3)
    whole = run_federated(sc, tmp_path / "whole")
    resumed = interrupt_and_resume(sc, tmp_path / "resumed", 2)
    assert resumed.engine == "batched"
    assert _entries(tmp_path / "whole") == _entries(tmp_path / "resumed")
    assert strip_timings(tmp_path / "whole") == strip_timings(tmp_path / "resumed")
    assert whole.final_accuracy == resumed.final_accuracy


def test_bench_batched_reports_both_engines(tmp_path: Path) -> None:
    from fedzo.bench.batched import format_report, run_bench

    # the plain joint forward: on AVX-512 kernels its arithmetic on the tiny model is the
    # in-process engine's; on AVX2 kernels the losses may round apart by a few ulps
    path = Path(__file__).parents[2] / "scenarios" / "batched-tiny.yaml"
    report = run_bench(str(path), [3], rounds=2, batched={"share_prompt": False})
    (row,) = report["results"]
    diff = row["scalars_max_difference"]
    assert row["participants"] == 3 and row["update_logs_bitwise_equal"] == (diff == 0.0)
    assert diff <= _grad_bound(load_scenario(path)), diff  # the bound at a loss below 1
    assert len(row["batching"]) == 1 and row["batching"][0].startswith("rows: 3 clients, 8 joint turns")
    assert row["inprocess_over_batched"] == row["inprocess_seconds_per_round"] / row["batched_seconds_per_round"]
    assert "speed-up" in format_report(report)


@pytest.mark.parametrize("name", ["tiny", "quickstart"])
def test_committed_bench_tables_match_their_data(name: str) -> None:
    """analysis/results/batched/NAME.md is what `fedzo bench batched` prints for NAME.json."""
    from fedzo.bench.batched import format_report

    root = Path(__file__).parents[2] / "analysis" / "results" / "batched"
    report = json.loads((root / f"{name}.json").read_text(encoding="utf-8"))
    assert (root / f"{name}.md").read_text(encoding="utf-8") == format_report(report) + "\n"
    assert all(r["update_logs_bitwise_equal"] or report["model"] != "tiny-llama" for r in report["results"])


@pytest.mark.parametrize(("model", "peft", "reason"), [
    ("tiny-llama", "lora", None),
    ("tiny-llama", "prompt", None),
    ("tiny-bert", "lora", None),  # its classifier head trains too, per row like the adapters
    ("tiny-llama", "prefix", None),
    ("tiny-bert", "prefix", "prompt or prefix tuning of a causal LM"),
    ("tiny-llama", "full", None),  # every trained layer runs each block with its client's weights
    ("tiny-bert", "full", None),
])
def test_which_tunings_carry_per_row_client_state(fed_config: Any, model: str, peft: str, reason: str | None) -> None:
    from fedzo.federation.transports.batched.rowstate import rows_reason
    from fedzo.tasks.objective import build_objective

    sc = fed_config()
    clf = build_objective(sc.model.model_copy(update={"name": model, "peft": peft}), sc.data, sc.runtime, 0).classifier
    got = rows_reason(clf, ParamSet.from_module(clf))
    assert got == reason if reason is None else (got is not None and reason in got)


@pytest.mark.parametrize("peft", ["lora", "full"])
def test_an_encoders_lora_and_head_batch_per_row(tmp_path: Path, fed_config: Any, peft: str) -> None:
    """tiny-bert under LoRA also trains its classifier head: each client's rows get its own
    adapters and its own head, K = 3; under full weights every layer's (its position
    embeddings, broadcast over the batch, per block too)."""
    data = _scenario(fed_config, peft, clients_per_round=3).model_dump()
    data["model"]["name"] = "tiny-bert"
    sc = Scenario.model_validate(data)
    ref = run_federated(sc, tmp_path / "inprocess", engine="inprocess")
    got = run_federated(sc, tmp_path / "batched", engine="batched")
    notes = _batching(tmp_path / "batched")
    assert all(n is not None and n.startswith("rows: 3 clients") for n in notes), notes
    a, b = _entries(tmp_path / "inprocess"), _entries(tmp_path / "batched")
    assert _close(a, b, _grad_bound(sc, _loss_scale(tmp_path / "inprocess")))
    if a == b:
        assert got.model_sha256 == ref.model_sha256


def test_half_precision_clients_share_passes_only_when_asked(tmp_path: Path, fed_config: Any) -> None:
    """bf16 clients run one at a time by default (a joint pass would not reproduce each one's
    scalars); with half_precision: joint they share passes: the same seeds, learning rates,
    clock and bytes as in-process, scalars from the joint passes' rounding."""
    def bf16(**batched: Any) -> Scenario:
        data = _scenario(fed_config, "prompt", clients_per_round=3, batched=batched).model_dump()
        data["model"]["dtype"] = "bf16"
        return Scenario.model_validate(data)

    ref = run_federated(bf16(), tmp_path / "inprocess", engine="inprocess")
    run_federated(bf16(), tmp_path / "default", engine="batched")
    assert all(str(n).startswith("sequential: model.dtype bf16") and "half_precision: joint" in str(n)
               for n in _batching(tmp_path / "default"))
    assert _entries(tmp_path / "default") == _entries(tmp_path / "inprocess")  # one at a time: the same arithmetic
    got = run_federated(bf16(half_precision="joint"), tmp_path / "joint", engine="batched")
    notes = _batching(tmp_path / "joint")
    assert all(str(n).startswith("rows: 3 clients") and "bf16 joint passes" in str(n) for n in notes), notes
    a, b = _entries(tmp_path / "inprocess"), _entries(tmp_path / "joint")
    assert [(e[0], e[3]) for e in a] == [(e[0], e[3]) for e in b]  # seeds and learning rates
    assert all(math.isfinite(e[2]) for e in b) and a != b  # the joint passes' own rounding
    same = run_federated(bf16(half_precision="joint"), tmp_path / "inprocess-joint", engine="inprocess")
    assert _entries(tmp_path / "inprocess-joint") == a  # in-process, the option changes nothing
    assert (got.sim_seconds, got.bytes_up, got.bytes_down) == (same.sim_seconds, same.bytes_up, same.bytes_down)
    assert ref.sim_seconds == got.sim_seconds


def test_full_weight_layers_score_each_block_with_its_clients_weights(fed_config: Any) -> None:
    """Per-row full weights give each block the scores of its client's own forward (rows of
    several lengths, tied embeddings), and the blocks' weights matter."""
    from fedzo.federation.transports.batched.rowstate import per_row_state
    from fedzo.tasks.objective import build_objective

    sc = fed_config()
    obj = build_objective(sc.model.model_copy(update={"peft": "full"}), sc.data, sc.runtime, 0)
    clf, work = obj.classifier, ParamSet.from_module(obj.classifier)
    torch.manual_seed(0)
    rows = [3, 1, 4]
    states = [[t + 0.05 * torch.randn_like(t) for t in work.tensors] for _ in rows]
    examples = obj.train[: sum(rows)]
    batch = next(iter(clf.batches(examples, len(examples))))
    original = [t.clone() for t in work.tensors]
    with torch.no_grad():
        with per_row_state(clf, work, states, rows):
            joint = clf.logits(batch)
        own, start = [], 0
        for state, n in zip(states, rows, strict=True):
            for t, x in zip(work.tensors, state, strict=True):
                t.copy_(x)
            own.append(clf.logits(Batch(batch.input_ids[start:start + n], batch.attention_mask[start:start + n],
                                        batch.labels[start:start + n])))
            start += n
        for t, x in zip(work.tensors, original, strict=True):
            t.copy_(x)
        plain = clf.logits(batch)
    torch.testing.assert_close(joint, torch.cat(own), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(joint, plain)  # the model's own weights were not used
    assert all(torch.equal(t, x) for t, x in zip(work.tensors, original, strict=True))


def test_state_groups_are_the_fewest_that_fit() -> None:
    from fedzo.federation.transports.batched.plan import (
        MIB,
        StateTooLarge,
        cuda_pass_bytes,
        make_plan,
        plan_groups,
        state_budget,
        state_bytes,
    )

    assert plan_groups(100, 10, 250) == [25, 25, 25, 25]
    assert plan_groups(100, 10, 1000) == [100]
    assert plan_groups(10, 3, 10) == [3, 3, 2, 2]  # 3 fit; 4 groups, sizes differing by at most one
    assert plan_groups(7, 5, 5) == [1] * 7
    assert plan_groups(5, 8, math.inf) == [5] and plan_groups(5, 0, 0.0) == [5] and plan_groups(0, 8, 8) == []
    with pytest.raises(StateTooLarge, match="exceeds the budget"):
        plan_groups(3, 11, 10)
    assert state_bytes([torch.zeros(4, 2), torch.zeros(3, dtype=torch.float16)]) == 38
    assert state_bytes([torch.zeros(4)], tangents=True) == 32
    assert state_bytes([torch.zeros(4), torch.zeros(10)], chunk=8) == 56 + 32  # a scratch chunk of 8 elements
    assert state_bytes([torch.zeros(4), torch.zeros(10)], chunk=1 << 20) == 56 + 40  # at most the largest tensor
    assert state_budget(2.0, "cpu") == 2 * MIB
    assert state_budget(None, "cpu", usable=1000.0) == 500.0 and state_budget(None, "cuda", usable=1000.0) == 750.0
    plan = make_plan(100, 10 * MIB, None, "cuda", usable=1000 * MIB)
    assert plan.groups == (50, 50) and plan.note() == "in 2 groups of <= 50 (device memory)"  # 75 fit
    assert make_plan(3, 1, 1.0, "cpu").note() == ""
    assert cuda_pass_bytes(1000.0, 200.0) == 200.0 and cuda_pass_bytes(100.0, 200.0) == 0.0


def test_a_state_budget_splits_the_round_into_groups_with_the_same_results(tmp_path: Path, fed_config: Any) -> None:
    """Full weights, K = 2: a budget of two clients' states runs 3 participants as groups of
    2 and 1, with the scalars of one group; below one client's state the round runs one
    client at a time, and says why."""
    def full(**batched: Any) -> Scenario:
        return _scenario(fed_config, "full", clients_per_round=3, local_steps=2, batched=batched)

    one = run_federated(full(), tmp_path / "one", engine="batched")
    from fedzo.federation.transports.batched.plan import MIB, state_bytes
    from fedzo.tasks.objective import build_objective

    sc = full()
    obj = build_objective(sc.model, sc.data, sc.runtime, 0)
    per = state_bytes(ParamSet.from_module(obj.classifier).tensors, chunk=sc.zo.chunk_size) / MIB
    two = run_federated(full(max_state_mib=2.5 * per), tmp_path / "two", engine="batched")
    assert all(str(n).startswith("rows: 3 clients, ") for n in _batching(tmp_path / "one"))
    notes = _batching(tmp_path / "two")
    assert all(str(n).startswith("rows: 3 clients in 2 groups of <= 2 (max_state_mib), ") for n in notes), notes
    a, b = _entries(tmp_path / "one"), _entries(tmp_path / "two")
    assert _close(a, b, _grad_bound(sc, _loss_scale(tmp_path / "one")))
    if a == b:
        assert one.model_sha256 == two.model_sha256
    run_federated(full(max_state_mib=0.5 * per), tmp_path / "none", engine="batched")
    notes = _batching(tmp_path / "none")
    assert all(str(n).startswith("sequential: one client's state") and "federation.batched.max_state_mib" in str(n)
               for n in notes), notes
    assert _entries(tmp_path / "none") == _entries(tmp_path / "one") or _close(
        _entries(tmp_path / "none"), a, _grad_bound(sc, _loss_scale(tmp_path / "one")))


@pytest.mark.parametrize("value", [0, -1.5, "lots"])
def test_a_bad_state_budget_names_its_key(fed_config: Any, value: Any) -> None:
    from fedzo.config.scenario import scenario_from_dict
    from fedzo.errors import ScenarioError

    data = fed_config().model_dump()
    data["federation"]["batched"]["max_state_mib"] = value
    with pytest.raises(ScenarioError, match=r"federation\.batched\.max_state_mib"):
        scenario_from_dict(data, "test.yaml")
