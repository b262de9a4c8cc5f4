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
from exporter.model import ProviderError, ThrottledError
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
    ) -> None:
        self._store = store
        self._providers = dict(providers)
        self._settings = settings
        self._wall = wall
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._jobs: dict[JobKey, JobConfig] = {}
        self._generation: dict[JobKey, int] = {}
        self._heap: list[_Due] = []
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._unknown_states_logged: set[tuple[str, str]] = set()
        self._limiters = {
            name: RateLimiter(
                getattr(settings.accounts.get(name), "max_rps", None),
                monotonic=monotonic,
                sleep=sleep,
            )
            for name in self._providers
        }
        self.running = False

    def add_provider(self, provider: Provider, max_rps: float | None = None) -> None:
        self._providers[provider.account] = provider
        self._limiters[provider.account] = RateLimiter(
            max_rps, monotonic=self._monotonic, sleep=self._sleep
        )

    def set_jobs(self, jobs: Iterable[JobConfig]) -> None:
        """Make the tracked set exactly `jobs`: new ones start soon, dropped ones vanish."""
        wanted = {JobKey(job.account, job.id): job for job in jobs}
        for key in list(self._jobs):
            if key not in wanted:
                self._drop(key)
        for key, job in wanted.items():
            provider = self._providers[job.account]
            is_new = key not in self._jobs
            self._jobs[key] = job
            self._store.track(key, provider.provider, job.labels)
            if is_new:
                self._schedule(
                    key, self._rng.uniform(0, min(FIRST_POLL_SPREAD, self._interval(key)))
                )

    def add_jobs(self, jobs: Iterable[JobConfig]) -> None:
        self.set_jobs([*self._jobs.values(), *jobs])

    def _drop(self, key: JobKey) -> None:
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
        heapq.heappush(self._heap, _Due(self._monotonic() + delay, generation, key))
        self._wakeup.set()

    async def run(self) -> None:
        """Start due polls forever; cancelled (with every in-flight poll) on shutdown."""
        self.running = True
        try:
            while True:
                now = self._monotonic()
                while self._heap and self._heap[0].at <= now:
                    due = heapq.heappop(self._heap)
                    if self._generation.get(due.key) != due.generation:
                        continue  # rescheduled or dropped since
                    await self._slots.acquire()
                    task = asyncio.create_task(self._run_job(due.key), name=f"poll {due.key}")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                delay = self._heap[0].at - self._monotonic() if self._heap else 60.0
                self._wakeup.clear()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
        finally:
            self.running = False
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run_job(self, key: JobKey) -> None:
        try:
            if self._expired(key):
                log.info("job_forgotten", extra={"account": key.account, "job_id": key.job_id})
                self._drop(key)
                return
            await self.poll_once(key)
        finally:
            self._slots.release()
        if key in self._jobs:
            interval = self._interval(key)
            self._schedule(key, interval * self._rng.uniform(0.9, 1.1))

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
        """Poll one job, retrying what is worth retrying, and record the outcome in the store."""
        provider = self._providers[key.account]
        limiter = self._limiters[key.account]
        attempt = 0
        while True:
            await limiter.acquire()
            started = self._monotonic()
            try:
                snapshot = await provider.fetch(key.job_id)
            except ProviderError as error:
                elapsed = self._monotonic() - started
                self._store.record_request(key.account, provider.provider, error.status, elapsed)
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
                        extra={
                            "account": key.account,
                            "job_id": key.job_id,
                            "reason": error.reason,
                            "delay": round(delay, 3),
                        },
                    )
                    await self._sleep(delay)
                    continue
                self._log_failure(self._store.record_failure(key, error, self._wall()), error)
                return
            except Exception as exc:
                log.exception("poll_crashed", extra={"account": key.account, "job_id": key.job_id})
                crash = ProviderError(f"internal error: {type(exc).__name__}", status="error")
                self._store.record_failure(key, crash, self._wall())
                return
            self._store.record_request(
                key.account, provider.provider, "200", self._monotonic() - started
            )
            self._log_success(self._store.record_success(key, snapshot, self._wall()))
            return

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
