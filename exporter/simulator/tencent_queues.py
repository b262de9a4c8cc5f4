"""Queues of the Tencent CI simulator: what DescribeAIProcessQueues and DescribeMediaProcessQueues
report about each, the queries they take, and the demo's pause-and-resume cycle.

A paused queue schedules no new jobs: running ones finish, waiting ones show `Pause` until it
is resumed. The simulator holds each job itself (`TencentCISimulator.pause_queue`); this module
only keeps the queue's own fields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

ACTIVE = "Active"
PAUSED = "Paused"
QUEUE_STATES = (ACTIVE, PAUSED)
# DescribeMediaProcessQueues' `category`; `CateAll` means every category, the others are a
# queue's own.
CATEGORY_ALL = "CateAll"
CATEGORIES = (CATEGORY_ALL, "Transcoding", "SpeedTranscoding")
DEFAULT_CATEGORY = "Transcoding"
# What a queue created without figures of its own reports.
DEFAULT_MAX_SIZE = 10000
DEFAULT_MAX_CONCURRENT = 10
MAX_QUEUE_IDS = 10
DEFAULT_QUEUE_PAGE_SIZE = 10
MAX_QUEUE_PAGE_SIZE = 100


@dataclass(slots=True)
class Queue:
    """One queue's fields as the queue APIs report them; times are epoch seconds."""

    queue_id: str
    name: str
    max_concurrent: int
    max_size: int
    category: str
    created: float
    updated: float
    paused_since: float | None = None

    @property
    def state(self) -> str:
        return ACTIVE if self.paused_since is None else PAUSED


def _whole_number(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """The parameter `name` (an empty value is the default); ValueError names it if bad."""
    value = query.get(name) or str(default)
    # isascii: str.isdigit also accepts digits such as "²" that int() refuses.
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}")
    return int(value)


@dataclass(frozen=True, slots=True)
class QueueQuery:
    """The queue APIs' parameters: `queueIds`, `state`, `pageNumber`, `pageSize`, `category`."""

    queue_ids: tuple[str, ...]
    state: str | None  # None: every state
    category: str | None  # None: every category
    page_number: int
    page_size: int

    @classmethod
    def parse(cls, query: Mapping[str, str], *, with_category: bool) -> QueueQuery:
        """Read a queue query; ValueError names the first bad parameter.

        The Python SDK sends empty values for what the caller left out, so empty means the
        default. Without `category` every category is listed: the simulator keeps AI and media
        queues together, and a default category would hide some of them.
        """
        ids = tuple(dict.fromkeys(part for part in query.get("queueIds", "").split(",") if part))
        if len(ids) > MAX_QUEUE_IDS:
            raise ValueError(f"queueIds takes at most {MAX_QUEUE_IDS} ids, separated by commas")
        state = query.get("state") or "All"
        if state not in ("All", *QUEUE_STATES):
            raise ValueError("state must be All, Active or Paused")
        category = (query.get("category") or CATEGORY_ALL) if with_category else CATEGORY_ALL
        if category not in CATEGORIES:
            raise ValueError(f"category must be one of {', '.join(CATEGORIES)}")
        return cls(
            queue_ids=ids,
            state=None if state == "All" else state,
            category=None if category == CATEGORY_ALL else category,
            page_number=_whole_number(query, "pageNumber", 1, 1, 2**31 - 1),
            page_size=_whole_number(
                query, "pageSize", DEFAULT_QUEUE_PAGE_SIZE, 1, MAX_QUEUE_PAGE_SIZE
            ),
        )

    def matches(self, queue: Queue) -> bool:
        return (
            (not self.queue_ids or queue.queue_id in self.queue_ids)
            and (self.state is None or queue.state == self.state)
            and (self.category is None or queue.category == self.category)
        )


class PausableQueues(Protocol):
    def pause_queue(self, queue_id: str) -> None: ...

    def resume_queue(self, queue_id: str) -> None: ...


async def cycle_queue(
    sim: PausableQueues,
    queue_id: str,
    *,
    every: float = 300.0,
    paused_for: float = 90.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Pause `queue_id` for the last `paused_for` seconds of every `every` (wall time) until
    cancelled, so the demo shows a queue stopping and starting again; a cancelled cycle leaves
    the queue active."""
    if not 0 < paused_for < every:
        raise ValueError("paused_for must be positive and shorter than every")
    while True:
        await sleep(every - paused_for)
        sim.pause_queue(queue_id)
        try:
            await sleep(paused_for)
        finally:
            sim.resume_queue(queue_id)


# The demo's cycle task, named so that it can be told apart in a task dump.
CYCLE_TASK_NAME = "tencent-ci-simulator-queue-cycle"


def start_queue_cycle(
    sim: PausableQueues,
    queue_id: str,
    *,
    every: float = 300.0,
    paused_for: float = 90.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Callable[[], Awaitable[None]]:
    """Run `cycle_queue` as a task on the running loop; the returned function stops it (the
    queue is left active) and may be awaited more than once."""
    task = asyncio.create_task(
        cycle_queue(sim, queue_id, every=every, paused_for=paused_for, sleep=sleep),
        name=CYCLE_TASK_NAME,
    )

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop
