"""Server optimizers: FedAvgM and FedAdam over a round's seeded move, replayable from the log."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedzo.errors import ConfigError
from fedzo.zo import LogEntry, NoiseSpec, ParamSet, Perturber, UpdateLog, apply_entries, param_digest
from fedzo.zo.server_optimizers import SERVER_OPTIMIZERS, make_server_optimizer, split_state

SPEC = NoiseSpec("portable", "gaussian", 1024)  # "a" spans three chunks


def _params() -> ParamSet:
    g = torch.Generator().manual_seed(3)
    return ParamSet.from_tensors({"a": torch.randn(2500, generator=g), "b": torch.randn(4, 9, generator=g)})


def _rounds(n: int, empty: int | None = None) -> list[list[LogEntry]]:
    rng = np.random.default_rng(5)
    return [[] if r == empty else
            [LogEntry(r, int(rng.integers(0, 2**62)), (float(rng.normal() * 1e-2),)) for _ in range(3)]
            for r in range(1, n + 1)]


def _dense(params: ParamSet, entries: list[LogEntry]) -> list[torch.Tensor]:
    """The round's move sum_j c_j z_j, in float64, from materialized directions."""
    out = [torch.zeros(t.shape, dtype=torch.float64) for t in params.tensors]
    for e in entries:
        for acc, z in zip(out, Perturber(params, SPEC).direction(e.seed), strict=True):
            acc += e.coefficient * z.double()
    return out


def test_momentum_matches_its_formula_on_materialized_directions() -> None:
    params = _params()
    ref = [t.double().clone() for t in params.tensors]
    m = [torch.zeros_like(t) for t in ref]
    opt = make_server_optimizer("momentum", Perturber(params, SPEC), lr=0.5, momentum=0.8)
    for entries in _rounds(4):
        delta = _dense(params, entries)
        opt.apply_round(entries)
        for i, d in enumerate(delta):
            m[i] = 0.8 * m[i] + d
            ref[i] += 0.5 * m[i]
    for t, r in zip(params.tensors, ref, strict=True):
        torch.testing.assert_close(t.double(), r, rtol=1e-5, atol=1e-6)
    assert opt.steps == 4


def test_adam_matches_its_formula_on_materialized_directions() -> None:
    params = _params()
    ref = [t.double().clone() for t in params.tensors]
    m = [torch.zeros_like(t) for t in ref]
    v = [torch.zeros_like(t) for t in ref]
    opt = make_server_optimizer("adam", Perturber(params, SPEC), lr=1e-2, beta1=0.9, beta2=0.99, tau=1e-4)
    for step, entries in enumerate(_rounds(3), start=1):
        delta = _dense(params, entries)
        opt.apply_round(entries)
        for i, d in enumerate(delta):
            m[i] = 0.9 * m[i] + 0.1 * d
            v[i] = 0.99 * v[i] + 0.01 * d * d
            ref[i] += 1e-2 * (m[i] / (1 - 0.9**step)) / ((v[i] / (1 - 0.99**step)).sqrt() + 1e-4)
    for t, r in zip(params.tensors, ref, strict=True):
        torch.testing.assert_close(t.double(), r, rtol=1e-5, atol=1e-6)


def test_plain_server_is_apply_entries_and_momentum_zero_is_close_to_it() -> None:
    plain, flat, mom = _params(), _params(), _params()
    server = make_server_optimizer("none", Perturber(plain, SPEC))
    zero = make_server_optimizer("momentum", Perturber(mom, SPEC), lr=1.0, momentum=0.0)
    rounds = _rounds(3)
    for entries in rounds:
        server.apply_round(entries)
        zero.apply_round(entries)
    apply_entries(Perturber(flat, SPEC), [e for r in rounds for e in r])
    assert param_digest(plain) == param_digest(flat) and not server.stateful and server.state_tensors() == {}
    for a, b in zip(plain.tensors, mom.tensors, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # the same move, summed in another order


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_state_round_trips_and_replay_from_the_log_is_bitwise(name: str) -> None:
    rounds = _rounds(5, empty=3)
    server_params = _params()
    server = make_server_optimizer(name, Perturber(server_params, SPEC))
    log = UpdateLog.create({})
    for r, entries in enumerate(rounds, start=1):
        server.apply_round(entries)
        log.append_round(r, entries)
    assert server.steps == 4  # the empty round 3 moved nothing
    # a third party replays the whole log
    third_params = _params()
    make_server_optimizer(name, Perturber(third_params, SPEC)).replay(log, 0, 5)
    assert param_digest(third_params) == param_digest(server_params)
    # a client that kept (weights, buffers) at round 2 continues from there
    client_params = _params()
    early = make_server_optimizer(name, Perturber(client_params, SPEC))
    early.replay(log, 0, 2)
    saved = {**dict(zip(client_params.names, client_params.tensors, strict=True)), **early.state_tensors()}
    saved = {k: v.clone() for k, v in saved.items()}
    fresh_params = _params()
    fresh = make_server_optimizer(name, Perturber(fresh_params, SPEC))
    weights, state = split_state(saved)
    fresh_params.load(weights)
    fresh.load_state(state)
    fresh.replay(log, 2, 5)
    assert param_digest(fresh_params) == param_digest(server_params)
    for k, t in server.state_tensors().items():
        assert torch.equal(t, fresh.state_tensors()[k]), k
    # without the buffers the continuation differs: they carry information
    bare_params = _params()
    bare_params.load(weights)
    make_server_optimizer(name, Perturber(bare_params, SPEC)).replay(log, 2, 5)
    assert param_digest(bare_params) != param_digest(server_params)


def test_missing_state_and_bad_settings_are_clear_errors() -> None:
    opt = make_server_optimizer("adam", Perturber(_params(), SPEC))
    with pytest.raises(ConfigError, match="lacks"):
        opt.load_state({})
    with pytest.raises(ConfigError, match="momentum: 1.0 is out of range"):
        make_server_optimizer("momentum", Perturber(_params(), SPEC), momentum=1.0)
    with pytest.raises(ConfigError, match="bad settings"):
        make_server_optimizer("momentum", Perturber(_params(), SPEC), beta1=0.5)
    with pytest.raises(ConfigError, match="allowed: none, momentum, adam"):
        SERVER_OPTIMIZERS.get("nesterov")
