"""How an anchor client process reports: `ready` on stdout once it polls, then one JSON line
(polls, errors and its own CPU so far, and the time) each time it gets SIGUSR1.

Marks on demand let the benchmark take turns between the clients (SIGSTOP, SIGCONT) and measure
each one's windows next to the others', minutes apart at most: on a shared machine the speed of
a core drifts by half within minutes, and back-to-back runs measured that drift, not the
clients. The benchmark reads the simulator's CPU as each line arrives, so a window's client and
simulator figures cover the same stretch of time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from collections.abc import Callable

READY = "ready"


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """What every anchor client is told: the simulator's port, the project, the job ids."""
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--project-id", required=True)
    parser.add_argument("--ids-file", required=True, help="job ids, one a line")


def mark_line(polls: int, errors: int) -> str:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return json.dumps(
        {
            "polls": polls,
            "errors": errors,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "t": time.monotonic(),
        }
    )


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def serve_marks(counts: Callable[[], tuple[int, int]]) -> None:
    """For clients on threads: the main thread answers SIGUSR1 until SIGTERM ends the process."""
    signal.signal(signal.SIGUSR1, lambda *_: _emit(mark_line(*counts())))
    _emit(READY)
    while True:
        signal.pause()


async def serve_marks_async(counts: Callable[[], tuple[int, int]]) -> None:
    """For clients on an event loop: the loop answers SIGUSR1 until SIGTERM ends the process."""
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGUSR1, lambda: _emit(mark_line(*counts()))
    )
    _emit(READY)
    await asyncio.Event().wait()
