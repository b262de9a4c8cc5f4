"""Job discovery: find an account's jobs through the cloud's list API instead of a static list.

Discovered jobs join through the life cycle like configured ones (same schedules, same
retention); a job forgotten after its retention is not discovered again (lifecycle.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from exporter.accounts import ListDiscovery
from exporter.lifecycle import Lifecycle
from exporter.model import ProviderError
from exporter.periodic import paced, repeat
from exporter.poller import Poller
from exporter.providers.base import JobList
from exporter.ratelimit import RateLimiter
from exporter.store import Store

log = logging.getLogger(__name__)
# A run stops after this many pages, whatever the next-page token says: a bound, not a limit
# anyone should reach (100 pages of 100 jobs).
MAX_LIST_PAGES = 100


@runtime_checkable
class JobLister(Protocol):
    provider: str
    account: str

    async def list_jobs(
        self,
        since: float,
        next_token: str | None = None,
        *,
        job_type: str,
        states: Sequence[str] = (),
    ) -> JobList:
        """One page of the jobs of `job_type` ("": of every type; CI calls it the tag) created
        after `since` in `states` (every state when empty), filtered as the account's `discover`
        says (queue, tag, batch)."""
        ...


async def list_pages(
    lister: JobLister,
    limiter: RateLimiter,
    store: Store,
    *,
    since: float,
    job_type: str,
    states: Sequence[str] = (),
    monotonic: Callable[[], float] = time.monotonic,
    truncated_event: str = "discovery_truncated",
) -> AsyncIterator[JobList]:
    """Every page of one list walk, each request paced by the account's limiter and counted.

    A failed page raises its ProviderError (a throttled one first holds the account back, polls
    included); after MAX_LIST_PAGES the walk stops, and the last page still has a next token.
    """
    token: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = await paced(
            limiter,
            store,
            lister.account,
            lister.provider,
            functools.partial(lister.list_jobs, since, token, job_type=job_type, states=states),
            monotonic=monotonic,
        )
        yield page
        token = page.next_token
        if not token:
            return
    log.warning(truncated_event, extra={"account": lister.account, "pages": MAX_LIST_PAGES})


async def discover_once(
    lister: JobLister,
    spec: ListDiscovery,
    poller: Poller,
    lifecycle: Lifecycle,
    store: Store,
    *,
    wall: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """Walk every page of the list API once per walk (job type) and record the run; returns
    the jobs added.

    Jobs from pages before a failure are kept (and counted); the run still counts as failed.
    """
    since = wall() - spec.lookback
    added = 0
    limiter = poller.limiter(lister.account)
    try:
        for walk in spec.walks:
            async for page in list_pages(
                lister,
                limiter,
                store,
                since=since,
                job_type=walk,
                states=spec.list_states,
                monotonic=monotonic,
            ):
                added += lifecycle.add_discovered(
                    lister.account, page.jobs, spec.labels, spec.job_kind
                )
    except ProviderError:
        store.record_discovery(lister.account, lister.provider, ok=False, at=wall(), added=added)
        raise
    store.record_discovery(lister.account, lister.provider, ok=True, at=wall(), added=added)
    return added


async def run_discovery(
    discover: Callable[[], Awaitable[int]], account: str, interval: float
) -> None:
    """Run `discover` (a `discover_once`) every `interval` after the last run ended, until
    cancelled; a failed run is logged and retried."""

    def found(added: int) -> None:
        if added:
            log.info("jobs_discovered", extra={"account": account, "jobs": added})

    await repeat(
        discover, account=account, what="discovery", interval=interval, done=found, logger=log
    )
