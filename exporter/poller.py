"""Background polling: each job on its own schedule, bounded concurrency, per-account pacing.

Polling happens here, never in a scrape (STYLE rule 2): cloud calls cost money and are rate
limited, and an HA pair of Prometheus servers would double them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from exporter.config import JobConfig, Settings
from exporter.model import JobSnapshot, ProviderError, ResponseParseError, ThrottledError
from exporter.providers.base import Provider
from exporter.ratelimit import RateLimiter
from exporter.store import JobKey, Store, Transition

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# A Retry-After longer than this is not waited out inside one poll: the job fails this round and
# the account's limiter holds every other request back until then.
MAX_INLINE_WAIT = 30.0
# New jobs start within this many seconds (spread out), not one poll interval later.
FIRST_POLL_SPREAD = 2.0


@dataclass(order=True, slots=True)
class _Due:
    at: float
    generation: int = field(compare=False)
    key: JobKey = field(compare=False)


class Poller:
    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider],
        settings: Settings,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        owns: Callable[[str, str], bool] = lambda account, job_id: True,
    ) -> None:
        self._store = store
        self._owns = owns
        self._providers = dict(providers)
        self._settings = settings
        self._wall = wall
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._jobs: dict[JobKey, JobConfig] = {}
        self._generation: dict[JobKey, int] = {}
        # One schedule per account, so a batch can take that account's next due jobs.
        self._heaps: dict[str, list[_Due]] = {}
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._unknown_states_logged: set[tuple[str, str]] = set()
        # Jobs dropped after their retention, and when: discovery must not bring them back.
        self._forgotten: dict[JobKey, float] = {}
        self._discovered: set[JobKey] = set()
        self._limiters = {
            name: RateLimiter(
                getattr(settings.accounts.get(name), "max_rps", None),
                monotonic=monotonic,
                sleep=sleep,
            )
            for name in self._providers
        }
        self.running = False

    def limiter(self, account: str) -> RateLimiter:
        return self._limiters[account]

    def set_jobs(self, jobs: Iterable[JobConfig]) -> None:
        """Make the configured jobs exactly `jobs`: new ones start soon, dropped ones vanish.

        Discovered jobs stay, as long as their account does.
        """
        wanted = {
            JobKey(job.account, job.id): job for job in jobs if self._owns(job.account, job.id)
        }
        for key in list(self._jobs):
            discovered = key in self._discovered and key.account in self._providers
            if key not in wanted and not discovered:
                self._drop(key)
        for key, job in wanted.items():
            provider = self._providers[job.account]
            is_new = key not in self._jobs
            self._jobs[key] = job
            self._store.track(key, provider.provider, job.labels)
            if is_new:
                self._schedule(key, self._rng.uniform(0, self._first_poll_spread(provider)))

    def add_discovered(
        self,
        account: str,
        snapshots: Iterable[JobSnapshot],
        labels: Mapping[str, str],
        *,
        horizon: float,
    ) -> int:
        """Track jobs a list call found; their snapshot counts as a first poll. Returns new ones.

        `horizon` is the discovery lookback: a job forgotten longer ago than that can no longer
        be listed, so its tombstone goes.
        """
        now = self._wall()
        for key, when in list(self._forgotten.items()):
            if now - when > horizon:
                del self._forgotten[key]
        provider = self._providers[account]
        jitter = self._rng.uniform(0.9, 1.1)  # one for all, so they can share requests
        added = 0
        for snapshot in snapshots:
            key = JobKey(account, snapshot.job_id)
            if key in self._jobs or key in self._forgotten or not self._owns(account, key.job_id):
                continue
            self._jobs[key] = JobConfig(account=account, id=snapshot.job_id, labels=dict(labels))
            self._discovered.add(key)
            self._store.track(key, provider.provider, labels)
            self._log_success(self._store.record_success(key, snapshot, now))
            self._schedule(key, self._interval(key) * jitter)
            added += 1
        return added

    def _drop(self, key: JobKey) -> None:
        self._discovered.discard(key)
        self._jobs.pop(key, None)
        self._generation.pop(key, None)
        self._store.forget(key)

    def _interval(self, key: JobKey) -> float:
        job = self._jobs[key]
        state = self._store.get(key)
        if state is not None and state.snapshot is not None and state.snapshot.terminal:
            return self._settings.terminal_poll_interval
        return job.poll_interval or self._settings.poll_interval

    def _schedule(self, key: JobKey, delay: float) -> None:
        generation = self._generation.get(key, 0) + 1
        self._generation[key] = generation
        heap = self._heaps.setdefault(key.account, [])
        heapq.heappush(heap, _Due(self._monotonic() + delay, generation, key))
        self._wakeup.set()

    async def run(self) -> None:
        """Start due polls forever; cancelled (with every in-flight poll) on shutdown."""
        self.running = True
        try:
            while True:
                now = self._monotonic()
                for account, heap in self._heaps.items():
                    self._start_due(account, heap, now)
                tops = [heap[0].at for heap in self._heaps.values() if heap]
                delay = min(tops) - self._monotonic() if tops else 60.0
                self._wakeup.clear()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
        finally:
            self.running = False
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _next_live(self, heap: list[_Due]) -> _Due | None:
        """The earliest entry still current (rescheduled or dropped jobs leave stale ones)."""
        while heap and self._generation.get(heap[0].key) != heap[0].generation:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _start_due(self, account: str, heap: list[_Due], now: float) -> None:
        """Start polls for the account's due jobs, `batch_size` ids a request.

        A batch that has room also takes jobs due within `batch_window`: polling them a little
        early costs nothing, and it saves the requests that drifting schedules would cost.
        """
        provider = self._providers.get(account)
        if provider is None:
            heap.clear()
            return
        size = max(1, provider.batch_size)
        window = self._batch_window(provider)
        while (first := self._next_live(heap)) is not None and first.at <= now:
            batch: list[JobKey] = []
            while len(batch) < size and (due := self._next_live(heap)) is not None:
                if due.at > (now + window if batch else now):
                    break
                heapq.heappop(heap)
                batch.append(due.key)
            self._start(batch)

    def _start(self, keys: list[JobKey]) -> None:
        task = asyncio.create_task(self._run_batch(keys), name=f"poll {keys[0]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _batch_window(self, provider: Provider) -> float:
        return min(5.0, 0.2 * self._settings.poll_interval) if provider.batch_size > 1 else 0.0

    def _first_poll_spread(self, provider: Provider) -> float:
        """New jobs start spread out so they do not stampede the cloud; jobs that share
        requests need no spreading, and starting them together lets them share from the start."""
        if provider.batch_size > 1:
            return self._batch_window(provider)
        return min(FIRST_POLL_SPREAD, self._settings.poll_interval)

    async def _run_batch(self, keys: list[JobKey]) -> None:
        live = []
        for key in keys:
            if self._expired(key):
                log.info("job_forgotten", extra={"account": key.account, "job_id": key.job_id})
                self._forgotten[key] = self._wall()
                self._drop(key)
            else:
                live.append(key)
        if live:
            await self.poll(live)
        # One jitter for the whole batch: jobs that shared a request keep sharing one.
        jitter = self._rng.uniform(0.9, 1.1)
        for key in live:
            if key in self._jobs:
                self._schedule(key, self._interval(key) * jitter)

    def _expired(self, key: JobKey) -> bool:
        state = self._store.get(key)
        return (
            state is not None
            and state.terminal_since is not None
            and self._wall() - state.terminal_since >= self._settings.terminal_retention
        )

    def _backoff(self, attempt: int, error: ProviderError) -> float:
        """Full-jitter exponential backoff, but never sooner than the cloud's Retry-After."""
        delay = self._rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
        if isinstance(error, ThrottledError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay

    async def poll_once(self, key: JobKey) -> None:
        await self.poll([key])

    async def poll(self, keys: list[JobKey]) -> None:
        """Poll jobs of one account in one request, retrying what is worth retrying.

        The account's rate limiter is waited on before a concurrency slot is taken, and backoff
        sleeps hold no slot: a throttled account must not starve the others of slots.
        """
        account = keys[0].account
        provider = self._providers[account]
        limiter = self._limiters[account]
        context = {"account": account, "job_id": ",".join(key.job_id for key in keys)}
        attempt = 0
        while True:
            await limiter.acquire()
            async with self._slots:
                started = self._monotonic()
                try:
                    results = await provider.fetch_many([key.job_id for key in keys])
                except ProviderError as failed:
                    outcome: Mapping[str, JobSnapshot | ProviderError] | ProviderError = failed
                except Exception as exc:  # a bug for some jobs must not stop the others
                    log.exception("poll_crashed", extra=context)
                    outcome = ProviderError(f"internal error: {type(exc).__name__}", status="error")
                else:
                    outcome = results
                elapsed = self._monotonic() - started
            if not isinstance(outcome, ProviderError):
                self._store.record_request(account, provider.provider, "200", elapsed)
                self._record(keys, outcome)
                return
            error: ProviderError = outcome
            if error.status != "error":
                self._store.record_request(account, provider.provider, error.status, elapsed)
            delay = self._backoff(attempt, error)
            if isinstance(error, ThrottledError):
                limiter.pause_until(self._monotonic() + delay)
            if (
                error.retryable
                and attempt < self._settings.max_retries
                and delay <= MAX_INLINE_WAIT
            ):
                attempt += 1
                log.debug(
                    "poll_retry",
                    extra={**context, "reason": error.reason, "delay": round(delay, 3)},
                )
                await self._sleep(delay)
                continue
            failures: dict[str, JobSnapshot | ProviderError] = {key.job_id: error for key in keys}
            self._record(keys, failures)
            return

    def _record(
        self, keys: list[JobKey], outcomes: Mapping[str, JobSnapshot | ProviderError]
    ) -> None:
        at = self._wall()
        for key in keys:
            outcome = outcomes.get(key.job_id) or ResponseParseError(
                "the provider returned nothing for this job", status="200"
            )
            if isinstance(outcome, ProviderError):
                self._log_failure(self._store.record_failure(key, outcome, at), outcome)
            else:
                self._log_success(self._store.record_success(key, outcome, at))

    def _log_failure(self, transition: Transition | None, error: ProviderError) -> None:
        if transition is None:
            return
        key = transition.after.key
        level = logging.WARNING if transition.started_failing else logging.DEBUG
        log.log(
            level,
            "poll_failed",
            extra={
                "account": key.account,
                "job_id": key.job_id,
                "reason": error.reason,
                "status": error.status,
                "code": error.code,
                "error": str(error),
            },
        )

    def _log_success(self, transition: Transition | None) -> None:
        if transition is None:
            return
        after = transition.after
        key = after.key
        snapshot = after.snapshot
        assert snapshot is not None  # noqa: S101 - a success always carries one
        context = {"account": key.account, "job_id": key.job_id, "state": snapshot.state}
        if transition.recovered:
            log.info("poll_recovered", extra=context)
        if (
            not snapshot.known_state
            and (after.provider, snapshot.state) not in self._unknown_states_logged
        ):
            self._unknown_states_logged.add((after.provider, snapshot.state))
            log.warning("unknown_state", extra={**context, "phase": snapshot.phase.value})
        if transition.entered_failed:
            log.warning(
                "job_failed",
                extra={**context, "code": snapshot.failure_code, "reason": snapshot.failure_reason},
            )
        elif transition.before is None or (
            transition.before.snapshot is not None
            and transition.before.snapshot.state != snapshot.state
        ):
            log.info("job_state", extra={**context, "phase": snapshot.phase.value})
