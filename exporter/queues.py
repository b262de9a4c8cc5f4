"""Queue health: whether the queues an account's jobs wait in are paused.

A paused CI queue schedules no new jobs: its waiting jobs stop moving while running ones finish.
Without this, the user sees jobs that stop moving and no reason.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from exporter.model import ProviderError, Queue
from exporter.periodic import paced, repeat
from exporter.providers.base import QueuePage
from exporter.ratelimit import RateLimiter
from exporter.store import Store

log = logging.getLogger(__name__)
# The most queues one request may name (`queueIds`, docs 1045/72923, 436/54045).
MAX_QUEUE_IDS = 10
# Seconds from start to the first read: new jobs are first polled within two (poller.py).
FIRST_READ_AFTER = 3.0
# A bound on pages per request, not a limit anyone should reach.
MAX_QUEUE_PAGES = 10


@runtime_checkable
class QueueLister(Protocol):
    provider: str
    account: str

    async def list_queues(self, queue_ids: Sequence[str], page: int = 1) -> QueuePage:
        """One page of the named queues (at most MAX_QUEUE_IDS)."""
        ...


def watched_queue_ids(store: Store, account: str, extra: Sequence[str] = ()) -> list[str]:
    """The queues the account's tracked jobs are in, and `extra` (discovery's queue)."""
    ids = set(extra)
    for key in store.job_keys():
        if key.account == account:
            state = store.get(key)
            if state is not None and state.snapshot is not None and state.snapshot.queue_id:
                ids.add(state.snapshot.queue_id)
    return sorted(ids)


class QueueWatch:
    """Reads one account's queues every `interval` and records them in the store."""

    def __init__(
        self,
        lister: QueueLister,
        limiter: RateLimiter,
        store: Store,
        interval: float,
        extra: Sequence[str] = (),
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lister = lister
        self._limiter = limiter
        self._store = store
        self._interval = interval
        self._extra = tuple(extra)
        self._wall = wall
        self._monotonic = monotonic
        # Paused as last recorded (a reload starts a new watch: no second `queue_paused`).
        last = store.queue_status(self.account, lister.provider)
        self._paused = {q.queue_id for q in last.queues if q.paused} if last is not None else set()

    @property
    def account(self) -> str:
        return self._lister.account

    async def _page(self, queue_ids: Sequence[str], number: int) -> QueuePage:
        return await paced(
            self._limiter,
            self._store,
            self.account,
            self._lister.provider,
            functools.partial(self._lister.list_queues, queue_ids, number),
            monotonic=self._monotonic,
        )

    async def read_once(self) -> int:
        """Read every watched queue, ten ids a request, every page; returns how many were read.

        While no job names a queue nothing is asked, and an empty read is recorded (the queues
        of jobs since forgotten must not stay exported). A failure records the read as failed,
        keeping the queues last read, and raises.
        """
        queue_ids = watched_queue_ids(self._store, self.account, self._extra)
        found: dict[str, Queue] = {}
        try:
            for start in range(0, len(queue_ids), MAX_QUEUE_IDS):
                chunk = queue_ids[start : start + MAX_QUEUE_IDS]
                read = 0
                for number in range(1, MAX_QUEUE_PAGES + 1):
                    page = await self._page(chunk, number)
                    found.update((queue.queue_id, queue) for queue in page.queues)
                    read += len(page.queues)
                    if not page.queues or read >= page.total:
                        break
        except ProviderError:
            self._store.record_queues(self.account, self._lister.provider, None, at=self._wall())
            raise
        queues = tuple(found[queue_id] for queue_id in sorted(found))
        self._store.record_queues(self.account, self._lister.provider, queues, at=self._wall())
        self._log_changes(queues)
        return len(queues)

    def _log_changes(self, queues: tuple[Queue, ...]) -> None:
        """`queue_paused` when a queue pauses, `queue_resumed` when it resumes: once each."""
        paused = {queue.queue_id for queue in queues if queue.paused}
        for queue in queues:
            if queue.queue_id in paused ^ self._paused:
                event, level = (
                    ("queue_paused", logging.WARNING)
                    if queue.paused
                    else ("queue_resumed", logging.INFO)
                )
                context = {"account": self.account, "queue_id": queue.queue_id}
                log.log(level, event, extra={**context, "queue_name": queue.name})
        self._paused = paused

    async def run(self) -> None:
        """A read every `interval` seconds until cancelled; a failed read is logged. The first
        comes a moment after start-up, once the jobs' first polls have named their queues."""
        await asyncio.sleep(min(self._interval, FIRST_READ_AFTER))
        await repeat(
            self.read_once,
            account=self.account,
            what="queue_read",
            interval=self._interval,
            from_start=True,
            logger=log,
            monotonic=self._monotonic,
        )
