"""A client in a Ray actor runs at most the CPUs Ray reserved for it."""

from __future__ import annotations

import sys
import types

import pytest

from fedzo.federation.client.threads import client_threads, reserved_cpus


def test_client_threads_are_capped_at_the_reserved_cpus() -> None:
    assert client_threads(2, None) == 2 and client_threads(None, None) is None  # outside Ray: as configured
    assert client_threads(2, 1.0) == 1 and client_threads(None, 1.0) == 1
    assert client_threads(2, 4.0) == 2 and client_threads(None, 3.0) == 3
    assert client_threads(4, 0.5) == 1  # a fraction of a CPU still runs one thread


def test_no_reservation_outside_a_ray_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert reserved_cpus() is None  # Ray never loaded (a SuperNode on a board)

    class Driver:
        def get_assigned_resources(self) -> dict[str, float]:
            raise AssertionError("This method is only available when the process is a worker")

    fake = types.SimpleNamespace(is_initialized=lambda: True, get_runtime_context=Driver)
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert reserved_cpus() is None


def test_a_ray_actor_sees_its_reserved_cpus() -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote(num_cpus=1)
        class Client:
            def threads(self) -> int | None:
                from fedzo.federation.client.threads import client_threads, reserved_cpus

                return client_threads(2, reserved_cpus())

        assert ray.get(Client.remote().threads.remote()) == 1  # type: ignore[attr-defined]
        assert reserved_cpus() is None  # the driver keeps runtime.threads
    finally:
        ray.shutdown()
