"""Background polling: each job on its own schedule, bounded concurrency, per-account budgets.

Polling happens here, never in a scrape: cloud calls cost money and are rate limited, and an HA
pair of Prometheus servers would double them. The poller only schedules and polls: which jobs
exist, and when one is forgotten, is the life cycle's to say (lifecycle.py). An account with a
request budget polls its due jobs in the order budget.py gives them, one request as each of the
budget's tokens comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from exporter.budget import DurationHistory, PollingStatus, urgency
from exporter.config import Settings
from exporter.lifecycle import Lifecycle
from exporter.model import (
    Exchange,
    JobSnapshot,
    ProviderError,
    ResponseParseError,
    ThrottledError,
)
from exporter.providers.base import Provider
from exporter.ratelimit import RateLimiter
from exporter.store import JobKey, JobState, Store, Transition

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
# A Retry-After longer than this is not waited out inside one poll: the job fails this round and
# the account's limiter holds every other request back until then.
MAX_INLINE_WAIT = 30.0
# New jobs start within this many seconds (spread out), not one poll interval later.
FIRST_POLL_SPREAD = 2.0


# A schedule entry: when the job is due, and its sequence number (an entry is stale once the job
# is rescheduled or no longer tracked). A tuple, since heapq compares them in C.
_Due = tuple[float, int, JobKey]
# A budgeted account's due jobs, ranked: (-urgency, sequence number, job), stale like _Due.
_Ranked = tuple[float, int, JobKey]


class _Waiting:
    """A budgeted account's jobs that are due but not yet polled, with their ranking.

    Urgencies grow as jobs wait, so the ranking is rebuilt every `replan` seconds; a job due in
    between joins it at its urgency of that moment.
    """

    __slots__ = ("due", "ranked", "ranked_at")

    def __init__(self) -> None:
        # job -> (when it was due at the interval it asks for, its sequence number)
        self.due: dict[JobKey, tuple[float, int]] = {}
        self.ranked: list[_Ranked] = []
        self.ranked_at = -math.inf


class Poller:
    def __init__(
        self,
        store: Store,
        lifecycle: Lifecycle,
        providers: Mapping[str, Provider],
        settings: Settings,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._lifecycle = lifecycle
        self._providers = dict(providers)
        self._settings = settings
        self._wall = wall
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        # Each job's current schedule entry, by sequence number.
        self._generation: dict[JobKey, int] = {}
        self._sequence = 0
        # One schedule per account, so a batch can take that account's next due jobs.
        self._heaps: dict[str, list[_Due]] = {}
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # Started batches per account, capped at max_concurrency: due jobs past the cap wait in
        # the heap, not as thousands of tasks queued on the semaphore.
        self._started: dict[str, int] = {}
        self._unknown_states_logged: set[tuple[str, str]] = set()
        self._waiting: dict[str, _Waiting] = {}
        # (account, job type) -> its recent completed run times, for budgeted accounts' order.
        self._histories: dict[tuple[str, str], DurationHistory] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._update_limiters()
        # Per account, which jobs a bulk refresh keeps fresh (refresh.py): their own polls are
        # skipped while it does, except the look-ups it asks for.
        self._coverage: dict[str, Callable[[JobState], bool]] = {}
        self._look_up: set[JobKey] = set()
        self.running = False
        lifecycle.attach(self)

    def _update_limiters(self) -> None:
        for name in self._providers:
            rate = _budget(self._settings.accounts.get(name))
            if name not in self._limiters or self._limiters[name].rate != rate:
                self._limiters[name] = RateLimiter(
                    rate, monotonic=self._monotonic, sleep=self._sleep
                )
            if rate is None and (waiting := self._waiting.pop(name, None)) is not None:
                for key in waiting.due:  # no budget any more: due jobs go back to the schedule
                    self._schedule(key, 0.0)

    def limiter(self, account: str) -> RateLimiter:
        return self._limiters[account]

    def reconfigure(self, settings: Settings, providers: Mapping[str, Provider]) -> None:
        """A reloaded config: new settings and accounts (the life cycle retires the jobs of
        accounts that are gone; their schedule entries are skipped and dropped)."""
        self._settings = settings
        self._providers = dict(providers)
        self._update_limiters()
        self._look_up = {key for key in self._look_up if key.account in self._providers}
        for account in [account for account in self._waiting if account not in self._providers]:
            del self._waiting[account]
        self._histories = {
            key: history for key, history in self._histories.items() if key[0] in self._providers
        }

    def cover(self, account: str, covers: Callable[[JobState], bool]) -> None:
        """Skip the polls of the account's jobs that `covers` says another source refreshes."""
        self._coverage[account] = covers

    def uncover(self, account: str, covers: Callable[[JobState], bool]) -> None:
        if self._coverage.get(account) == covers:
            del self._coverage[account]

    def look_up(self, keys: Sequence[JobKey]) -> None:
        """Poll these jobs now, covered or not (a bulk refresh no longer lists them); once,
        however often it is asked before the poll."""
        for key in keys:
            if key not in self._look_up:
                self._look_up.add(key)
                self._schedule(key, 0.0)

    def polling_status(self) -> dict[tuple[str, str], PollingStatus]:
        """Each account's budget, spending and lateness, for the exporter's own metrics."""
        now = self._monotonic()
        status = {}
        for account, provider in self._providers.items():
            limiter = self._limiters[account]
            status[(account, provider.provider)] = PollingStatus(
                budget_rps=limiter.rate_in_force(),
                spent_rps=limiter.spent_rps(),
                overdue_seconds=self._overdue(account, now),
                poll_interval=self._settings.poll_interval,
            )
        return status

    def _overdue(self, account: str, now: float) -> float:
        """How long the account's most overdue unfinished job has been due at the interval it
        asks for (its own schedule, not the order a budget puts it in).

        It visits only the entries already due: in the schedule, the heap's order says which
        (an entry no earlier than the best found has no earlier child), so a scrape of an
        account whose jobs are on time costs a handful of steps at any job count."""
        earliest = now
        heap = self._heaps.get(account, [])
        below = [0] if heap else []
        while below:
            index = below.pop()
            at, sequence, key = heap[index]
            if at >= earliest:
                continue
            below += [child for child in (2 * index + 1, 2 * index + 2) if child < len(heap)]
            if self._unfinished(key, sequence):
                earliest = at
        waiting = self._waiting.get(account)
        for key, (at, sequence) in waiting.due.items() if waiting is not None else ():
            if at < earliest and self._unfinished(key, sequence):
                earliest = at
        return now - earliest

    def _unfinished(self, key: JobKey, sequence: int) -> bool:
        """Whether a schedule entry is current and its job not (known to be) terminal."""
        if self._generation.get(key) != sequence:
            return False
        state = self._store.get(key)
        return state is not None and (state.snapshot is None or not state.snapshot.terminal)

    def hint(self, key: JobKey) -> bool:
        """Poll a tracked job as soon as the account's budget allows (someone says it changed);
        False when the job is not tracked."""
        if key not in self._store:
            return False
        self.look_up([key])
        return True

    def record_listed(
        self, account: str, snapshots: Sequence[JobSnapshot], kind: str | None = None
    ) -> None:
        """The tracked jobs (of `kind`) a list of unfinished jobs described, recorded as polls.

        A job already seen terminal is left alone: it can only have ended since, and a list
        answered before its end (or an index lagging behind) must not bring it back to life.
        """
        at = self._wall()
        for snapshot in snapshots:
            key = JobKey(account, snapshot.job_id)
            state = self._store.get(key)
            if (
                state is None
                or state.kind != kind
                or (state.snapshot is not None and state.snapshot.terminal)
            ):
                continue
            self._log_success(self._store.record_success(key, snapshot, at))

    def jobs_added(
        self, keys: Sequence[JobKey], found: Sequence[Transition | None] | None = None
    ) -> None:
        """Schedule jobs the life cycle started tracking. Jobs discovery `found` had their
        list entry recorded as their first poll; the others are polled soon, spread out."""
        if found is None:
            for key in keys:
                provider = self._providers.get(key.account)
                if provider is not None:
                    self._schedule(key, self._rng.uniform(0, self._first_poll_spread(provider)))
            return
        jitter = self._rng.uniform(0.9, 1.1)  # one for all, so they can share requests
        for key, transition in zip(keys, found, strict=True):
            self._log_success(transition)
            self._schedule(key, self._delay(key, jitter))

    def _delay(self, key: JobKey, jitter: float) -> float:
        """Until the job's next poll: its interval (stretched by `jitter`), the terminal one
        once it is terminal; but no later than when its retention ends, so it is forgotten
        on time."""
        state = self._store.get(key)
        if state is None:
            return 0.0
        if state.snapshot is None or not state.snapshot.terminal:
            return (state.poll_interval or self._settings.poll_interval) * jitter
        delay = self._settings.terminal_poll_interval * jitter
        until = self._lifecycle.expires_at(state)
        if until is not None:
            delay = max(0.0, min(delay, until - self._wall()))
        return delay

    def _schedule(self, key: JobKey, delay: float) -> None:
        self._sequence += 1
        self._generation[key] = self._sequence
        heap = self._heaps.setdefault(key.account, [])
        heapq.heappush(heap, (self._monotonic() + delay, self._sequence, key))
        self._wakeup.set()

    async def run(self) -> None:
        """Start due polls forever; cancelled (with every in-flight poll) on shutdown."""
        self.running = True
        try:
            while True:
                now = self._monotonic()
                for account, heap in self._heaps.items():
                    self._start_due(account, heap, now)
                # An account at its cap is woken by its next finished batch, not by the clock.
                cap = self._settings.max_concurrency
                tops = [
                    heap[0][0]
                    for account, heap in self._heaps.items()
                    if heap and self._started.get(account, 0) < cap
                ]
                delay = min(tops) - self._monotonic() if tops else 60.0
                self._wakeup.clear()
                if delay > 0:
                    # Not wait_for: on Python 3.11 it can swallow a cancellation that arrives
                    # as the wait ends, and a busy loop then never stops (SIGTERM hung).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wakeup.wait()
        finally:
            self.running = False
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _next_live(self, heap: list[_Due]) -> _Due | None:
        """The earliest entry still current: rescheduled jobs leave stale entries, and jobs no
        longer tracked leave theirs, with which their sequence number goes too."""
        while heap:
            _, sequence, key = heap[0]
            if self._generation.get(key) == sequence:
                if key in self._store:
                    return heap[0]
                del self._generation[key]
                self._look_up.discard(key)
            heapq.heappop(heap)
        return None

    def _start_due(self, account: str, heap: list[_Due], now: float) -> None:
        """Start polls for the account's due jobs, up to `max_concurrency` batches at once."""
        if account not in self._providers:
            for _, sequence, key in heap:
                if self._generation.get(key) == sequence:
                    del self._generation[key]
            heap.clear()
            return
        cap = self._settings.max_concurrency
        if self._limiters[account].rate is not None:
            waiting = self._wait(account, heap, now)
            while self._started.get(account, 0) < min(cap, len(waiting.due)):
                self._start(account, self._work_budgeted(account))
            return
        while self._started.get(account, 0) < cap and (batch := self._take_due(account, now)):
            self._start(account, self._work(account, batch))

    def _take_due(self, account: str, now: float, size: int | None = None) -> list[JobKey]:
        """The account's next batch of due jobs, `batch_size` ids a request; [] if none is due.

        A batch that has room also takes jobs due within `batch_window`: polling them a little
        early costs nothing, and it saves the requests that drifting schedules would cost.
        """
        provider = self._providers.get(account)
        heap = self._heaps.get(account)
        if provider is None or heap is None:
            return []
        size, window = size or max(1, provider.batch_size), self._batch_window(provider)
        covers = self._coverage.get(account)
        batch: list[JobKey] = []
        while len(batch) < size and (due := self._next_live(heap)) is not None:
            if due[0] > (now + window if batch else now):
                break
            heapq.heappop(heap)
            key = due[2]
            if covers is not None and key not in self._look_up:
                state = self._store.get(key)
                if state is not None and covers(state):
                    self._schedule(key, self._delay(key, 1.0))
                    continue
            batch.append(key)
        return batch

    def _wait(self, account: str, heap: list[_Due], now: float) -> _Waiting:
        """Move a budgeted account's due jobs from its schedule to its waiting jobs."""
        waiting = self._waiting.get(account)
        if waiting is None:
            waiting = self._waiting[account] = _Waiting()
        covers = self._coverage.get(account)
        wall = self._wall()
        while (due := self._next_live(heap)) is not None and due[0] <= now:
            heapq.heappop(heap)
            at, sequence, key = due
            if covers is not None and key not in self._look_up:
                state = self._store.get(key)
                if state is not None and covers(state):
                    self._schedule(key, self._delay(key, 1.0))
                    continue
            before = waiting.due.get(key)
            waiting.due[key] = (at if before is None else min(before[0], at), sequence)
            heapq.heappush(waiting.ranked, (-self._urgency(key, wall), sequence, key))
        return waiting

    def _urgency(self, key: JobKey, wall: float) -> float:
        state = self._store.get(key)
        if state is None or key in self._look_up:
            return urgency(waited=None, interval=1.0, terminal=False, age=None, history=None)
        snapshot = state.snapshot
        terminal = snapshot is not None and snapshot.terminal
        created = snapshot.created_at if snapshot is not None else None
        return urgency(
            waited=None if state.last_poll_at is None else max(0.0, wall - state.last_poll_at),
            interval=self._settings.terminal_poll_interval
            if terminal
            else state.poll_interval or self._settings.poll_interval,
            terminal=terminal,
            age=None if created is None else wall - created,
            history=None
            if snapshot is None
            else self._histories.get((key.account, snapshot.job_type)),
        )

    def _take_ranked(self, account: str) -> list[JobKey]:
        """A budgeted account's next request: its most urgent waiting jobs, `batch_size` ids."""
        waiting = self._waiting.get(account)
        provider = self._providers.get(account)
        if waiting is None or provider is None:
            return []
        now, wall = self._monotonic(), self._wall()
        if now - waiting.ranked_at >= self._replan_period():
            waiting.ranked = [
                (-self._urgency(key, wall), sequence, key)
                for key, (_, sequence) in waiting.due.items()
            ]
            heapq.heapify(waiting.ranked)
            waiting.ranked_at = now
        batch: list[JobKey] = []
        size = max(1, provider.batch_size)
        while len(batch) < size and waiting.ranked:
            _, sequence, key = heapq.heappop(waiting.ranked)
            entry = waiting.due.get(key)
            if entry is None or entry[1] != sequence:
                continue
            del waiting.due[key]
            if self._generation.get(key) == sequence and key in self._store:
                batch.append(key)
        if batch and len(batch) < size:
            # Room left in the request: jobs due soon ride along, as without a budget.
            batch += self._take_due(account, now + self._batch_window(provider), size - len(batch))
        return batch

    def _replan_period(self) -> float:
        return min(1.0, 0.05 * self._settings.poll_interval)

    def _start(self, account: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        self._started[account] = self._started.get(account, 0) + 1

        def finished(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._started[account] -= 1
            self._wakeup.set()  # the account may start its next due batch

        task.add_done_callback(finished)

    async def _work_budgeted(self, account: str) -> None:
        """Poll the account's most urgent waiting jobs, one request per budget token: the choice
        is made when the token comes, so a job that became more urgent meanwhile goes first."""
        limiter = self._limiters[account]
        while True:
            await limiter.acquire()
            keys = self._take_ranked(account)
            if not keys:
                limiter.refund()
                return
            await self._run_batch(keys, paced=True)

    async def _work(self, account: str, keys: list[JobKey]) -> None:
        """Poll a batch, then the account's next due batch while there is one: under a backlog
        a new task per batch (create, name, callbacks, registry) was ~5% of a poll's CPU."""
        batches = 0
        while keys:
            await self._run_batch(keys)
            batches += 1
            if batches % 8 == 0:
                # Polls that never wait (a test double; a cloud answer already buffered) must
                # not keep the run loop, and every other account, from its turn for long.
                await asyncio.sleep(0)
            keys = self._take_due(account, self._monotonic())

    def _batch_window(self, provider: Provider) -> float:
        return min(5.0, 0.2 * self._settings.poll_interval) if provider.batch_size > 1 else 0.0

    def _first_poll_spread(self, provider: Provider) -> float:
        """New jobs start spread out so they do not stampede the cloud; jobs that share
        requests need no spreading, and starting them together lets them share from the start."""
        if provider.batch_size > 1:
            return self._batch_window(provider)
        return min(FIRST_POLL_SPREAD, self._settings.poll_interval)

    async def _run_batch(self, keys: list[JobKey], *, paced: bool = False) -> None:
        live = self._lifecycle.expire(keys)
        if live:
            await self.poll(live, paced=paced)
        elif paced:
            self._limiters[keys[0].account].refund()
        # One jitter for the whole batch: jobs that shared a request keep sharing one.
        jitter = self._rng.uniform(0.9, 1.1)
        for key in live:
            if key in self._store:
                self._schedule(key, self._delay(key, jitter))

    def _backoff(self, attempt: int, error: ProviderError) -> float:
        """Full-jitter exponential backoff, but never sooner than the cloud's Retry-After."""
        delay = self._rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
        if isinstance(error, ThrottledError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay

    async def poll(self, keys: list[JobKey], *, paced: bool = False) -> None:
        """Poll jobs of one account in one request, retrying what is worth retrying.

        The account's rate limiter is waited on before a concurrency slot is taken (unless the
        caller holds its token: `paced`), and backoff sleeps hold no slot: a throttled account
        must not starve the others of slots.
        """
        account = keys[0].account
        provider = self._providers[account]
        limiter = self._limiters[account]
        attempt = 0
        while True:
            if attempt or not paced:
                await limiter.acquire()
            async with self._slots:
                started = self._monotonic()
                try:
                    results = await provider.fetch_many(
                        [key.job_id for key in keys], *self._known(keys)
                    )
                except ProviderError as failed:
                    outcome: Mapping[str, JobSnapshot | ProviderError] | ProviderError = failed
                except Exception as exc:  # a bug for some jobs must not stop the others
                    log.exception("poll_crashed", extra=_context(keys))
                    outcome = ProviderError(f"internal error: {type(exc).__name__}")
                else:
                    outcome = results
                elapsed = self._monotonic() - started
            if account not in self._providers:
                self._look_up.difference_update(keys)
                return  # removed while this poll was in flight: its series are gone, stay so
            status = outcome.status if isinstance(outcome, ProviderError) else Exchange.OK
            self._store.on_exchange(account, provider.provider, status, elapsed)
            if not isinstance(outcome, ProviderError):
                self._record(keys, outcome)
                return
            error: ProviderError = outcome
            delay = self._backoff(attempt, error)
            if isinstance(error, ThrottledError):
                limiter.throttled(self._monotonic() + delay)
            if (
                error.retryable
                and attempt < self._settings.max_retries
                and delay <= MAX_INLINE_WAIT
            ):
                attempt += 1
                log.debug(
                    "poll_retry",
                    extra={**_context(keys), "reason": error.reason, "delay": round(delay, 3)},
                )
                await self._sleep(delay)
                continue
            failures: dict[str, JobSnapshot | ProviderError] = {key.job_id: error for key in keys}
            self._record(keys, failures)
            return

    def _known(self, keys: list[JobKey]) -> tuple[dict[str, JobSnapshot], dict[str, str]]:
        """The jobs' last snapshots and kinds, for `Provider.fetch_many`."""
        known, kinds = {}, {}
        for key in keys:
            state = self._store.get(key)
            if state is not None:
                if state.snapshot is not None:
                    known[key.job_id] = state.snapshot
                if state.kind is not None:
                    kinds[key.job_id] = state.kind
        return known, kinds

    def _record(
        self, keys: list[JobKey], outcomes: Mapping[str, JobSnapshot | ProviderError]
    ) -> None:
        at = self._wall()
        for key in keys:
            self._look_up.discard(key)
            outcome = outcomes.get(key.job_id) or ResponseParseError(
                "the provider returned nothing for this job", status=Exchange.OK
            )
            if isinstance(outcome, ProviderError):
                self._log_failure(self._store.record_failure(key, outcome, at), outcome)
            else:
                self._log_success(self._store.record_success(key, outcome, at))

    def _learn(self, key: JobKey, snapshot: JobSnapshot) -> None:
        """A run that ended, for the order of its job type's jobs under a budget."""
        if snapshot.duration is not None:
            history = self._histories.get((key.account, snapshot.job_type))
            if history is None:
                history = self._histories[(key.account, snapshot.job_type)] = DurationHistory()
            history.add(snapshot.duration)

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
        after, before = transition.after, transition.before
        if before is not None and before.snapshot is after.snapshot and before.last_poll_success:
            return  # the usual poll: nothing new, nothing to log (and no dicts to build)
        key = after.key
        snapshot = after.snapshot
        assert snapshot is not None  # noqa: S101 - a success always carries one
        if after.duration_observed and (before is None or not before.duration_observed):
            self._learn(key, snapshot)
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


def _budget(account: object) -> float | None:
    """The account's request budget (its `budget_rps`), None without one."""
    budget = getattr(account, "budget_rps", None)
    return budget if isinstance(budget, float | int) else None


def _context(keys: list[JobKey]) -> dict[str, str]:
    """Log context of a request's jobs; built only when something is logged."""
    return {"account": keys[0].account, "job_id": ",".join(key.job_id for key in keys)}
