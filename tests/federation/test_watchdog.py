"""The ServerApp's watchdog: it ends the process when its SuperLink parent goes, and only
when the parent was a SuperLink."""

from __future__ import annotations

import threading

import pytest

from fedzo.federation.watchdog import EXIT_CODE, command_line, watch_superlink


@pytest.mark.parametrize("parent", [
    "/usr/bin/python flower-superlink --insecure",
    # Flower 1.2x: the SuperLink starts the ServerApp through a SuperExec, which exits with it
    "/usr/bin/python3 /venv/bin/flower-superexec --insecure --runtime-api-address 127.0.0.1:1 --parent-pid 9",
])
def test_the_serverapp_exits_when_its_superlink_parent_goes(parent: str) -> None:
    parents = [4242]
    exited: list[int] = []
    done = threading.Event()

    def exit_now(code: int) -> None:
        exited.append(code)
        done.set()

    thread = watch_superlink(interval=0.01, getppid=lambda: parents[0],
                             cmdline=lambda pid: parent, exit_now=exit_now)
    assert thread is not None and thread.daemon
    assert not done.wait(0.1)  # the parent is alive: nothing happens
    parents[0] = 1  # re-parented to init: the SuperLink died
    assert done.wait(5) and exited == [EXIT_CODE]


def test_a_serverapp_started_by_hand_is_not_watched() -> None:
    assert watch_superlink(getppid=lambda: 77, cmdline=lambda pid: "bash", exit_now=lambda code: None) is None


def test_command_line_of_this_process_and_of_none() -> None:
    import os
    import sys

    if sys.platform.startswith("linux"):  # /proc names this very interpreter
        assert "python" in command_line(os.getpid())
    assert command_line(2**22 + 12345) == ""  # no such process
