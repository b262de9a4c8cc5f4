"""Poller behaviour with a scripted provider and an injected clock: no test here sleeps a fixed
time. Only the cancellation test runs on the real clock, as the race it guards against needs
real timer expiries."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from functools import partial

import pytest

from exporter.config import JobConfig, Settings
from exporter.lifecycle import Lifecycle
from exporter.model import JobSnapshot, NotFoundError, ProviderError, ThrottledError, UpstreamError
from exporter.poller import Poller
from exporter.providers.base import Provider
from exporter.ratelimit import RateLimiter
from exporter.store import JobKey, JobState, Store
from tests.conftest import snapshot
from tests.support import FakeClock, eventually_async


class PollerClock(FakeClock):
    def __init__(self) -> None:
        super().__init__(1000.0)

    def advance(self, poller: Poller, seconds: float) -> None:
        """Move time on and wake the poller's run loop, which otherwise waits out the real
        time until its next due job."""
        self.now += seconds
        poller._wakeup.set()


class ScriptedProvider:
    """Answers each fetch with the next scripted outcome (a snapshot or an error to raise)."""

    provider = "huawei_metastudio"
    batch_size = 1

    def __init__(self, account: str, outcomes: list[JobSnapshot | BaseException]) -> None:
        self.account = account
        self.outcomes = deque(outcomes)
        self.calls: list[str] = []
        self.known: list[dict[str, JobSnapshot]] = []

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> Mapping[str, JobSnapshot | ProviderError]:
        self.calls.append(",".join(job_ids))
        self.known.append(dict(known))
        outcome = self.outcomes.popleft() if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return dict.fromkeys(job_ids, outcome)


def make(
    store: Store,
    providers: Mapping[str, Provider],
    settings: Settings,
    clock: PollerClock | None = None,
) -> tuple[Poller, Lifecycle]:
    """A poller and the life cycle it polls for, on `clock` when one is given."""
    timing: dict[str, object] = {}
    if clock is not None:
        timing = {"wall": clock.time, "monotonic": clock.time, "sleep": clock.sleep}
    accounts = {name: provider.provider for name, provider in providers.items()}
    wall = clock.time if clock is not None else time.time
    lifecycle = Lifecycle(store, settings, accounts, wall=wall)
    poller = Poller(store, lifecycle, providers, settings, rng=random.Random(1), **timing)  # type: ignore[arg-type]
    return poller, lifecycle


def _poller(
    provider: ScriptedProvider, clock: PollerClock, **settings: object
) -> tuple[Poller, Store]:
    store = Store()
    poller, lifecycle = make(
        store,
        {provider.account: provider},
        Settings(**settings),  # type: ignore[arg-type]
        clock,
    )
    lifecycle.set_config_jobs([JobConfig(account=provider.account, id="job-1")])
    return poller, store


KEY = JobKey("hw", "job-1")


async def test_each_poll_hands_the_provider_the_jobs_last_snapshot() -> None:
    """So a provider can give it back, unparsed, when the cloud's answer has not changed."""
    clock = PollerClock()
    first, failed = snapshot("PROCESSING"), UpstreamError("HTTP 500", status="500")
    provider = ScriptedProvider("hw", [first, failed, snapshot("SUCCEED")])
    poller, _ = _poller(provider, clock, max_retries=0)
    for _ in range(3):
        await poller.poll([KEY])
    assert provider.known[0] == {}
    assert provider.known[1]["job-1"] is first
    assert provider.known[2]["job-1"] is first  # a failed poll keeps the last good snapshot


async def test_server_errors_are_retried_with_growing_backoff_then_recorded() -> None:
    clock = PollerClock()
    provider = ScriptedProvider("hw", [UpstreamError("HTTP 503", status="503")])
    poller, store = _poller(provider, clock, max_retries=2)
    await poller.poll([KEY])
    assert len(provider.calls) == 3
    state = store.get(KEY)
    assert state is not None
    assert state.last_poll_success is False
    assert state.last_error is not None
    assert state.last_error.status == "503"
    assert store.view().api_requests == {("hw", "huawei_metastudio", "503"): 3}
    assert len(clock.slept) == 2
    assert all(0 <= s <= 1.0 for s in clock.slept)


async def test_a_retry_that_succeeds_records_success() -> None:
    clock = PollerClock()
    provider = ScriptedProvider(
        "hw", [UpstreamError("HTTP 500", status="500"), snapshot("PROCESSING")]
    )
    poller, store = _poller(provider, clock)
    await poller.poll([KEY])
    assert store.get(KEY).last_poll_success is True  # type: ignore[union-attr]
    assert store.view().api_requests == {
        ("hw", "huawei_metastudio", "500"): 1,
        ("hw", "huawei_metastudio", "200"): 1,
    }


async def _polled_once_after_a_throttle(
    retry_after: float,
) -> tuple[PollerClock, ScriptedProvider, Poller, Store]:
    """One round against a provider that answers 429 with `retry_after`, then a snapshot."""
    clock = PollerClock()
    provider = ScriptedProvider(
        "hw", [ThrottledError("HTTP 429", retry_after=retry_after), snapshot("PROCESSING")]
    )
    poller, store = _poller(provider, clock)
    await poller.poll([KEY])
    return clock, provider, poller, store


async def test_throttling_waits_at_least_retry_after() -> None:
    clock, _, _, store = await _polled_once_after_a_throttle(7.0)
    assert sum(clock.slept) >= 7.0
    assert store.get(KEY).last_poll_success is True  # type: ignore[union-attr]


async def test_a_long_retry_after_fails_this_round_and_holds_the_account_back() -> None:
    clock, provider, poller, store = await _polled_once_after_a_throttle(120.0)
    assert len(provider.calls) == 1
    assert store.get(KEY).last_error.reason == "throttled"  # type: ignore[union-attr]
    before = clock.now
    await poller.poll([KEY])  # the account's limiter waits out the Retry-After first
    assert clock.now - before >= 119.0
    assert store.get(KEY).last_poll_success is True  # type: ignore[union-attr]


async def test_client_errors_are_not_retried() -> None:
    clock = PollerClock()
    provider = ScriptedProvider("hw", [UpstreamError("HTTP 400", status="400")])
    poller, _ = _poller(provider, clock)
    await poller.poll([KEY])
    assert len(provider.calls) == 1
    assert clock.slept == []


async def test_a_crashing_provider_is_recorded_and_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = PollerClock()
    provider = ScriptedProvider("hw", [RuntimeError("bug")])
    poller, store = _poller(provider, clock)
    await poller.poll([KEY])
    state = store.get(KEY)
    assert state is not None
    assert state.last_error is not None
    assert state.last_error.reason == "error"
    assert "poll_crashed" in caplog.text


async def test_terminal_jobs_move_to_the_slow_interval_and_are_forgotten_after_retention() -> None:
    clock = PollerClock()
    provider = ScriptedProvider("hw", [snapshot("SUCCEED")])
    poller, _ = _poller(
        provider, clock, poll_interval=10, terminal_poll_interval=600, terminal_retention=3600
    )
    assert poller._delay(KEY, 1.0) == 10
    await poller.poll([KEY])
    assert poller._delay(KEY, 1.0) == 600
    assert poller._lifecycle.expire([KEY]) == [KEY]
    clock.now += 3000
    # The last terminal poll comes when the retention ends, not a whole interval later.
    assert poller._delay(KEY, 1.0) == 600
    clock.now += 300
    assert poller._delay(KEY, 1.0) == 300
    clock.now += 300
    assert poller._lifecycle.expire([KEY]) == []
    assert KEY not in poller._store


async def test_the_run_loop_forgets_expired_jobs_and_their_series() -> None:
    clock = PollerClock()
    store = Store()
    provider = ScriptedProvider("hw", [snapshot("SUCCEED")])
    config = Settings(poll_interval=0.05, terminal_poll_interval=0.05, terminal_retention=0.2)
    poller, lifecycle = make(store, {"hw": provider}, config, clock)
    lifecycle.set_config_jobs(
        [JobConfig(account="hw", id="job-1"), JobConfig(account="hw", id="job-2")]
    )
    task = asyncio.create_task(poller.run())

    def forgotten_after_a_tick() -> bool:
        clock.advance(poller, 0.05)
        return not store.job_keys()

    try:
        await eventually_async(forgotten_after_a_tick, interval=0, what="expired jobs go")
        assert store.job_keys() == []
        assert len(provider.calls) >= 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_set_jobs_drops_removed_jobs_and_keeps_others() -> None:
    clock = PollerClock()
    provider = ScriptedProvider("hw", [snapshot("PROCESSING")])
    poller, store = _poller(provider, clock)
    poller._lifecycle.set_config_jobs([JobConfig(account="hw", id="job-2", labels={"team": "a"})])
    assert store.job_keys() == [JobKey("hw", "job-2")]
    assert store.get(JobKey("hw", "job-2")).labels == (("team", "a"),)  # type: ignore[union-attr]


async def test_the_rate_limiter_spaces_requests_at_max_rps() -> None:
    clock = PollerClock()
    limiter = RateLimiter(2.0, monotonic=clock.time, sleep=clock.sleep)
    start = clock.now
    for _ in range(7):
        await limiter.acquire()
    # A burst of 2, then one every 0.5 s.
    assert clock.now - start == pytest.approx(2.5)


def test_provider_error_defaults() -> None:
    assert ProviderError("x").reason == "error"
    assert UpstreamError("x", status="502").retryable
    assert not UpstreamError("x", status="400").retryable


class BatchingProvider:
    """Answers a batch: known ids get a snapshot, others are reported missing."""

    provider = "tencent_ci"

    def __init__(self, account: str, batch_size: int, known: set[str]) -> None:
        self.account = account
        self.batch_size = batch_size
        self.known = known
        self.calls: list[list[str]] = []

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> Mapping[str, JobSnapshot | ProviderError]:
        self.calls.append(list(job_ids))
        return {
            job_id: snapshot("PROCESSING", job_id)
            if job_id in self.known
            else NotFoundError("listed in NonExistJobIds", status="200")
            for job_id in job_ids
        }


async def test_due_jobs_of_one_account_share_requests_up_to_batch_size() -> None:
    store = Store()
    provider = BatchingProvider("tc", 3, {f"j{i}" for i in range(6)})
    poller, lifecycle = make(store, {"tc": provider}, Settings(poll_interval=60), PollerClock())
    lifecycle.set_config_jobs([JobConfig(account="tc", id=f"j{i}") for i in range(7)])
    # Everything due now, for a deterministic batch.
    poller._heaps["tc"][:] = [(0.0, generation, key) for _, generation, key in poller._heaps["tc"]]
    task = asyncio.create_task(poller.run())
    try:
        await eventually_async(
            lambda: sum(len(c) for c in provider.calls) == 7, interval=0, what="every job polled"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(len(call) for call in provider.calls) == [1, 3, 3]
    assert store.view().api_requests == {("tc", "tencent_ci", "200"): 3}
    missing = store.get(JobKey("tc", "j6"))
    assert missing is not None
    assert missing.last_poll_success is False
    assert missing.last_error is not None
    assert missing.last_error.reason == "not_found"
    assert store.get(JobKey("tc", "j0")).last_poll_success is True  # type: ignore[union-attr]


async def test_discovered_jobs_are_tracked_once_and_not_rediscovered_after_retention() -> None:
    clock = PollerClock()
    store = Store()
    provider = BatchingProvider("tc", 1, {"a", "b"})
    poller, lifecycle = make(store, {"tc": provider}, Settings(terminal_retention=100), clock)
    found = [snapshot("SUCCEED", "a"), snapshot("PROCESSING", "b")]
    assert lifecycle.add_discovered("tc", found, {"source": "discovery"}) == 2
    assert lifecycle.add_discovered("tc", found, {}) == 0
    state = store.get(JobKey("tc", "a"))
    assert state is not None
    assert state.labels == (("source", "discovery"),)
    assert state.snapshot is not None
    # A config reload keeps discovered jobs.
    lifecycle.set_config_jobs([])
    assert sorted(k.job_id for k in store.job_keys()) == ["a", "b"]
    clock.now += 200
    await poller._run_batch([JobKey("tc", "a")])
    assert JobKey("tc", "a") not in store.job_keys()
    # Listed again an hour later: still forgotten, and its time to live starts again.
    clock.now += 3600
    assert lifecycle.add_discovered("tc", found, {}) == 0
    clock.now += 86400 - 1
    lifecycle.prune()
    assert lifecycle.add_discovered("tc", found, {}) == 0
    # Not listed for a whole lookback: the tombstone goes, and with it the memory of the job.
    clock.now += 86400 + 1
    assert lifecycle.prune() == 1
    assert JobKey("tc", "a") not in store.tombstones
    assert lifecycle.add_discovered("tc", found, {}) == 1


async def test_restored_config_jobs_come_back_only_if_the_config_still_lists_them() -> None:
    from dataclasses import replace

    from exporter.statefile import Loaded

    store = Store()
    store.track_changes = True
    provider = BatchingProvider("hw", 1, {"kept", "dropped", "registered"})
    _, lifecycle = make(store, {"hw": provider}, Settings())
    saved = [
        replace(
            JobState(key=JobKey("hw", name), provider="tencent_ci"),
            source=source,
            snapshot=snapshot("PROCESSING", name),
            failures=3,
        )
        for name, source in (("kept", "config"), ("dropped", "config"), ("registered", "api"))
    ]
    lifecycle.restore(Loaded(jobs=saved))
    lifecycle.set_config_jobs([JobConfig(account="hw", id="kept")])
    assert sorted(k.job_id for k in store.job_keys()) == ["kept", "registered"]
    kept = store.get(JobKey("hw", "kept"))
    assert kept is not None
    assert kept.failures == 3
    # The dropped one is retired: kept on disk, with no series, until its time to live ends.
    changes = store.take_changes()
    assert [was.state.key.job_id for was in changes.retired] == ["dropped"]


class InstantProvider:
    """Answers at once, after one trip through the event loop, like a fast cloud on loopback."""

    provider = "huawei_metastudio"
    batch_size = 1
    account = "hw"

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> Mapping[str, JobSnapshot | ProviderError]:
        await asyncio.sleep(0)
        return dict.fromkeys(job_ids, snapshot("PROCESSING"))


def _polled_at_least(polls: int, store: Store, keys: Sequence[JobKey]) -> bool:
    return sum(state.polls for key in keys if (state := store.get(key)) is not None) >= polls


async def test_a_busy_poller_stops_at_once_when_cancelled() -> None:
    """Found by the benchmark: with jobs due every millisecond, Python 3.11's wait_for could
    swallow the cancellation of the run loop, and SIGTERM never ended the exporter."""
    for _ in range(30):
        store = Store()
        poller, lifecycle = make(
            store, {"hw": InstantProvider()}, Settings(poll_interval=0.001, max_concurrency=100)
        )
        keys = [JobKey("hw", f"job-{n}") for n in range(50)]
        lifecycle.set_config_jobs([JobConfig(account=k.account, id=k.job_id) for k in keys])
        task = asyncio.create_task(poller.run())

        busy = partial(_polled_at_least, 100, store, keys)
        await eventually_async(busy, interval=0.001, what="the poller is busy")
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert task in done, "the poller ignored its cancellation"
        assert task.cancelled()


async def test_due_jobs_past_the_concurrency_cap_wait_in_the_heap_not_as_tasks() -> None:
    """10,000 due jobs were 10,000 tasks queued on the semaphore; the benchmark measured
    each poll costing more at 10k jobs than at 1k. Now at most max_concurrency batches per
    account are started, and each finished one starts the next."""
    gate = asyncio.Event()
    calls = 0

    class Gated(InstantProvider):
        async def fetch_many(
            self,
            job_ids: Sequence[str],
            known: Mapping[str, JobSnapshot],
            kinds: Mapping[str, str] | None = None,
        ) -> Mapping[str, JobSnapshot | ProviderError]:
            nonlocal calls
            calls += 1
            await gate.wait()
            return dict.fromkeys(job_ids, snapshot("PROCESSING"))

    clock = PollerClock()
    poller, lifecycle = make(
        Store(), {"hw": Gated()}, Settings(poll_interval=3600, max_concurrency=8), clock
    )
    lifecycle.set_config_jobs([JobConfig(account="hw", id=f"job-{n}") for n in range(300)])
    task = asyncio.create_task(poller.run())
    try:
        clock.advance(poller, 3.5)  # past the first-poll spread: every job is due
        await eventually_async(lambda: calls >= 8, interval=0, what="the first batches start")
        for _ in range(20):  # room for a ninth batch to start, were the cap not kept
            await asyncio.sleep(0)
        assert len(poller._tasks) == 8
        assert calls == 8
        gate.set()
        await eventually_async(lambda: calls == 300, interval=0, what="every job polled")
        assert calls == 300  # every job polled once, eight at a time
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
