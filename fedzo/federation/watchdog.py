"""The ServerApp exits when the SuperLink that started it is gone.

Flower's SuperLink starts ``flwr-serverapp`` as a child in a session of its own. When the
SuperLink is killed, that child is re-parented (to init or a subreaper), every one of its
threads keeps waiting on a connection that will never answer, and it ignores SIGTERM: an
orphan that outlives the run. :func:`watch_superlink` notices the change of parent and ends
the process. Nothing is lost by that: fedzo's records land whole or not at all, so the run
resumes (``--resume``) from its last complete round.

Flower 1.2x starts the ServerApp through a SuperExec (``flower-superexec``, a child of the
SuperLink that exits with it), so the ServerApp's parent is that SuperExec; Flower's own
``--parent-pid`` check then asks the ServerApp to stop, which it does not always do (seen:
the orphan above, in 1 of 3 kills under load). The watchdog is armed when the parent is a
SuperLink or a SuperExec (its command line names ``superlink`` or ``superexec``): a ServerApp
started by hand from a shell keeps its own lifetime.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

EXIT_CODE = 75  # EX_TEMPFAIL: the run can be resumed
PARENTS = ("superlink", "superexec")  # the parents whose going ends the ServerApp


def command_line(pid: int) -> str:
    """The command line of process ``pid`` ('' when it cannot be read, e.g. not on Linux)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def watch_superlink(*, interval: float = 2.0, getppid: Callable[[], int] = os.getppid,
                    cmdline: Callable[[int], str] = command_line,
                    exit_now: Callable[[int], None] = os._exit) -> threading.Thread | None:
    """Start a daemon thread that ends this process when its SuperLink parent goes; None
    (nothing started) when the parent is not a SuperLink."""
    parent = getppid()
    if not any(name in cmdline(parent) for name in PARENTS):
        return None

    def watch() -> None:
        while True:
            time.sleep(interval)
            if getppid() != parent:
                print(f"fedzo: the ServerApp's parent (pid {parent}, its SuperLink's) is gone; it exits. Start a new one and resume "
                      "the run (scripts/deploy_local.sh --resume, or run config resume=true)", file=sys.stderr,
                      flush=True)
                exit_now(EXIT_CODE)
                return

    thread = threading.Thread(target=watch, name="fedzo-superlink-watchdog", daemon=True)
    thread.start()
    return thread
