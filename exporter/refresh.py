"""Bulk refresh (`refresh: list`): one list request refreshes up to a hundred jobs.

Each round lists the account's unfinished jobs that its `discover` filters select (CI: the
queue and tags; MetaStudio: the training types, tag and batch) and records every tracked job
found there as polled; the jobs it covered that are no longer listed have ended, so each gets one
look-up by id to read its final state. Untracked jobs in the list are left to discovery (its
filters, counts and cadence). Jobs the list cannot cover keep their own polls: never polled yet,
terminal, of another kind or outside the filters, created before the lookback window (the list
shows jobs created after it) or before the oldest job a walk cut at the page bound read, or
asking for a `poll_interval` shorter than the rounds'.

If no round succeeds for `STALE_ROUNDS` rounds, the covered jobs fall back to their own polls
until one does: a broken list API must not freeze every job.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from exporter.accounts import ListDiscovery
from exporter.discovery import JobLister, list_pages
from exporter.periodic import repeat
from exporter.poller import Poller
from exporter.store import JobKey, JobState, Store

log = logging.getLogger(__name__)

# Covered jobs fall back to their own polls once no round has succeeded for this many rounds
# (or for this many of the last successful round's durations, when rounds take longer).
STALE_ROUNDS = 3


class BulkRefresh:
    """One account's refresh rounds, and which of its jobs they cover."""

    def __init__(
        self,
        lister: JobLister,
        spec: ListDiscovery,
        poller: Poller,
        store: Store,
        interval: float,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lister = lister
        self._spec = spec
        self._poller = poller
        self._store = store
        self._interval = interval
        self._wall = wall
        self._monotonic = monotonic
        self._last_success: float | None = None  # monotonic
        self._last_duration = 0.0
        # Per walk that last stopped at the page bound: the oldest creation time it read.
        # Newest first, so older jobs were on pages not read: they keep their own polls.
        self._horizons: dict[str, float] = {}

    @property
    def account(self) -> str:
        return self._lister.account

    def covers(self, state: JobState) -> bool:
        """Whether the rounds keep this job fresh, so that it needs no poll of its own."""
        snapshot = state.snapshot
        if snapshot is None or snapshot.terminal or self._last_success is None:
            return False
        stale_after = STALE_ROUNDS * max(self._interval, self._last_duration)
        if self._monotonic() - self._last_success > stale_after:
            return False
        if state.poll_interval is not None and state.poll_interval < self._interval:
            return False  # it asked to be polled more often than a round comes
        if state.kind != self._spec.job_kind:
            return False
        walk = self._spec.walk_of(snapshot)
        created = snapshot.created_at
        return (
            walk is not None
            and created is not None
            and created > self._wall() - self._spec.lookback
            and created > self._horizons.get(walk, -math.inf)
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
        started = self._monotonic()
        before = self._covered_keys()
        since = self._wall() - self._spec.lookback
        listed: set[str] = set()
        horizons: dict[str, float] = {}
        limiter = self._poller.limiter(self.account)
        for walk in self._spec.walks:
            last_token, oldest = None, math.inf
            async for page in list_pages(
                self._lister,
                limiter,
                self._store,
                since=since,
                job_type=walk,
                states=self._spec.unfinished_states,
                monotonic=self._monotonic,
                truncated_event="refresh_truncated",
            ):
                self._poller.record_listed(self.account, page.jobs, self._spec.job_kind)
                listed.update(job.job_id for job in page.jobs)
                oldest = min(
                    [oldest, *(job.created_at for job in page.jobs if job.created_at is not None)]
                )
                last_token = page.next_token
            if last_token:
                horizons[walk] = oldest
        self._horizons = horizons
        self._last_success = self._monotonic()
        self._last_duration = self._last_success - started
        # Still covered (listed within the pages read), yet no longer listed: ended. A poll that
        # already read the end, such as a look-up asked for last round, leaves nothing to ask.
        left = [
            key
            for key in before
            if key.job_id not in listed
            and (state := self._store.get(key)) is not None
            and self.covers(state)
        ]
        self._poller.look_up(left)
        return len(left)

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
