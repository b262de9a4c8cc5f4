"""How an anchor client process reports: a JSON line per mark on stdout (polls, errors and its
own CPU so far, and the time), first after a warm-up, then once per window.

The benchmark reads the simulator's CPU as each line arrives, so a window's client and
simulator figures cover the same stretch of time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable


def add_mark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ids-file", required=True, help="job ids, one a line")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the first mark")
    parser.add_argument("--window", type=float, default=10.0, help="seconds between marks")
    parser.add_argument("--marks", type=int, default=4, help="marks to report, then exit")


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


def report_marks(args: argparse.Namespace, counts: Callable[[], tuple[int, int]]) -> None:
    """For clients on threads: the main thread sleeps and reports."""
    time.sleep(args.warmup)
    for index in range(args.marks):
        if index:
            time.sleep(args.window)
        _emit(mark_line(*counts()))


async def report_marks_async(
    args: argparse.Namespace, counts: Callable[[], tuple[int, int]]
) -> None:
    """For clients on an event loop: a task of the same loop reports."""
    await asyncio.sleep(args.warmup)
    for index in range(args.marks):
        if index:
            await asyncio.sleep(args.window)
        _emit(mark_line(*counts()))
