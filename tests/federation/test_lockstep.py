"""Turn-taking threads (fedzo/federation/transports/batched/lockstep.py): order, answers and failures."""

from __future__ import annotations

from collections.abc import Callable

from fedzo.federation.transports.batched.lockstep import Abandoned, Ask, run_lockstep


def _job(name: str, asks: int, log: list[str]) -> Callable[[Ask[str, int]], int]:
    def job(ask: Ask[str, int]) -> int:
        total = 0
        for k in range(asks):
            log.append(f"{name}{k}")
            total += ask(f"{name}{k}")
        return total
    return job


def test_jobs_take_turns_in_order_and_each_gets_its_own_answer() -> None:
    log: list[str] = []
    turns: list[list[str]] = []

    def answer(requests: list[str]) -> list[int]:
        turns.append(list(requests))
        return [len(r) * 10 + int(r[-1]) for r in requests]

    outcomes, n = run_lockstep([_job("a", 3, log), _job("bb", 1, log), _job("c", 2, log)], answer)
    assert n == 3 and turns == [["a0", "bb0", "c0"], ["a1", "c1"], ["a2"]]
    assert log == ["a0", "bb0", "c0", "a1", "c1", "a2"]  # one thread at a time, in a fixed order
    assert [o.value for o in outcomes] == [20 + 21 + 22, 30, 20 + 21] and all(o.error is None for o in outcomes)


def test_a_failed_answer_abandons_every_waiting_job_and_a_failed_job_is_reported() -> None:
    def boom(ask: Ask[str, int]) -> int:
        raise ValueError("job failed")

    def answer(requests: list[str]) -> list[int]:
        raise RuntimeError("forward failed")

    outcomes, n = run_lockstep([_job("a", 2, []), boom, _job("c", 1, [])], answer)
    assert n == 1
    assert isinstance(outcomes[0].error, Abandoned) and "forward failed" in str(outcomes[0].error)
    assert isinstance(outcomes[1].error, ValueError) and isinstance(outcomes[2].error, Abandoned)


def test_an_answer_of_the_wrong_length_is_an_error_for_the_jobs() -> None:
    outcomes, _ = run_lockstep([_job("a", 1, []), _job("b", 1, [])], lambda requests: [1])
    assert all(isinstance(o.error, Abandoned) and "1 values for 2 requests" in str(o.error) for o in outcomes)
