"""Bulk refresh (`refresh: list`): one list request refreshes up to a hundred jobs.

Each round lists the account's non-terminal jobs of its discover queue and tags and records
every tracked job found there as polled; the jobs it covered that are no longer listed have
ended (or left the window), so each gets one look-up by id to read its final state. Jobs the
list cannot cover keep their own polls: never polled yet, terminal, in another queue or tag,
or created before the lookback window (the list asks for jobs created after it).

If the list fails for longer than `STALE_ROUNDS` rounds, the covered jobs fall back to their
own polls until a round succeeds again: a broken list API must not freeze every job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from exporter.config import Discovery
from exporter.discovery import JobLister, list_pages
from exporter.lifecycle import Lifecycle
from exporter.model import JobSnapshot
from exporter.periodic import repeat
from exporter.poller import Poller
from exporter.store import JobKey, JobState, Store

log = logging.getLogger(__name__)

# The states CI lists as not finished (`states=` of `GET /jobs`, docs 1045/50305, 460/48235).
NON_TERMINAL_STATES = ("Submitted", "Running", "Pause")
# Covered jobs fall back to their own polls once no round has succeeded for this many rounds.
STALE_ROUNDS = 3


class BulkRefresh:
    """One account's refresh rounds, and which of its jobs they cover."""

    def __init__(
        self,
        lister: JobLister,
        spec: Discovery,
        poller: Poller,
        lifecycle: Lifecycle,
        store: Store,
        interval: float,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lister = lister
        self._spec = spec
        self._poller = poller
        self._lifecycle = lifecycle
        self._store = store
        self._interval = interval
        self._wall = wall
        self._monotonic = monotonic
        self._tags = frozenset(spec.tag_list)
        self._last_success: float | None = None  # monotonic

    @property
    def account(self) -> str:
        return self._lister.account

    def covers(self, state: JobState) -> bool:
        """Whether the rounds keep this job fresh, so that it needs no poll of its own."""
        snapshot = state.snapshot
        if snapshot is None or snapshot.terminal or self._last_success is None:
            return False
        if self._monotonic() - self._last_success > STALE_ROUNDS * self._interval:
            return False
        return (
            snapshot.queue_id == self._spec.queue_id
            and snapshot.job_type in self._tags
            and snapshot.created_at is not None
            and snapshot.created_at > self._wall() - self._spec.lookback
        )

    def _covered_keys(self) -> list[JobKey]:
        return [
            key
            for key in self._store.job_keys()
            if key.account == self.account
            and (state := self._store.get(key)) is not None
            and self.covers(state)
        ]

    async def refresh_once(self) -> int:
        """One round; returns how many covered jobs had left the list (and are looked up).

        Raises the ProviderError of a failed page; pages before it are recorded all the same.
        """
        before = self._covered_keys()
        since = self._wall() - self._spec.lookback
        listed: set[str] = set()
        complete = True
        limiter = self._poller.limiter(self.account)
        for tag in self._spec.tag_list:
            last_token = None
            async for page in list_pages(
                self._lister,
                limiter,
                self._store,
                since=since,
                tag=tag,
                states=NON_TERMINAL_STATES,
                monotonic=self._monotonic,
                truncated_event="refresh_truncated",
            ):
                self._record(page.jobs)
                listed.update(job.job_id for job in page.jobs)
                last_token = page.next_token
            complete = complete and not last_token
        self._last_success = self._monotonic()
        if not complete:
            return 0  # a job missing from a truncated walk may be on the pages not read
        # Still covered, yet no longer listed: ended (a poll that already read the end, such as
        # a look-up asked for last round, leaves nothing to look up).
        left = [
            key
            for key in before
            if key.job_id not in listed
            and (state := self._store.get(key)) is not None
            and self.covers(state)
        ]
        self._poller.look_up(left)
        return len(left)

    def _record(self, jobs: tuple[JobSnapshot, ...]) -> None:
        """Tracked jobs get the listed snapshot as a poll; new ones are discovered."""
        tracked = [job for job in jobs if JobKey(self.account, job.job_id) in self._store]
        self._poller.record_listed(self.account, tracked)
        if len(tracked) < len(jobs):
            new = [job for job in jobs if JobKey(self.account, job.job_id) not in self._store]
            self._lifecycle.add_discovered(self.account, new, self._spec.labels)

    async def run(self) -> None:
        """A round every `interval` seconds (a steady cadence) until cancelled."""
        self._poller.cover(self.account, self.covers)
        try:
            await repeat(
                self.refresh_once,
                account=self.account,
                what="refresh",
                interval=self._interval,
                from_start=True,
                logger=log,
                monotonic=self._monotonic,
            )
        finally:
            self._poller.uncover(self.account, self.covers)
