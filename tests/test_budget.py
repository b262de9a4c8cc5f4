"""Polling within a request budget, on a fake clock: the order of due jobs (budget.py), the
limiter's throttle response, and the poller spending a budget it cannot fit every job in."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from itertools import pairwise

import pytest

from exporter.budget import FIRST, MAX_STRETCH, DurationHistory, urgency
from exporter.config import JobConfig, Settings
from exporter.lifecycle import Lifecycle
from exporter.model import JobSnapshot, ProviderError, ThrottledError
from exporter.poller import Poller
from exporter.ratelimit import RECOVERY, RateLimiter
from exporter.store import JobKey, Store
from tests.conftest import snapshot
from tests.support import FakeClock

START = 1_000_000.0
HW = "huawei_metastudio"


def _history(durations: Sequence[float]) -> DurationHistory:
    history = DurationHistory()
    for seconds in durations:
        history.add(seconds)
    return history


def test_the_history_gives_the_run_time_a_share_of_runs_did_not_exceed() -> None:
    history = _history([100.0 + n for n in range(100)])  # 100 .. 199 s
    assert history.quantile(0.0) == 100.0
    assert history.quantile(0.01) == 101.0
    assert history.quantile(0.5) == 150.0
    assert history.quantile(1.0) == 199.0
    assert _history([100.0] * 19).quantile(0.01) is None  # too few runs yet


def test_the_history_keeps_the_last_runs_only() -> None:
    history = DurationHistory(size=3)
    for seconds in (10.0, 1000.0, 1000.0, 1000.0):
        history.add(seconds)
    assert len(history) == 3
    assert _sorted(history) == [1000.0, 1000.0, 1000.0]


def _sorted(history: DurationHistory) -> list[float]:
    return list(history._sorted)


def test_due_jobs_rank_new_then_starving_then_longest_waiting_then_young_then_terminal() -> None:
    history = _history([600.0 + n for n in range(100)])  # no run ended before 600 s
    rank = {
        "never polled": urgency(
            waited=None, interval=30.0, terminal=True, age=None, history=history
        ),
        "past its cap": urgency(
            waited=MAX_STRETCH * 30.0 + 1, interval=30.0, terminal=False, age=10.0, history=history
        ),
        "waited 5 minutes": urgency(
            waited=300.0, interval=30.0, terminal=False, age=1000.0, history=history
        ),
        # Its wait counts from 600 s of age on, when runs of its type start to end.
        "waited 8 minutes, 2 of them old enough": urgency(
            waited=480.0, interval=30.0, terminal=False, age=720.0, history=history
        ),
        "no history, waited a minute": urgency(
            waited=60.0, interval=30.0, terminal=False, age=10.0, history=None
        ),
        "young, waited 9 minutes": urgency(
            waited=540.0, interval=30.0, terminal=False, age=550.0, history=history
        ),
        "terminal": urgency(waited=6000.0, interval=600.0, terminal=True, age=1e5, history=history),
    }
    assert rank["never polled"] == FIRST
    assert sorted(rank, key=rank.__getitem__, reverse=True) == [
        "never polled",
        "past its cap",
        "waited 5 minutes",
        "waited 8 minutes, 2 of them old enough",
        "no history, waited a minute",
        "young, waited 9 minutes",
        "terminal",
    ]
    # A terminal job past its own cap comes before every job within its cap.
    assert (
        urgency(
            waited=MAX_STRETCH * 600.0 + 1, interval=600.0, terminal=True, age=None, history=None
        )
        > rank["waited 5 minutes"]
    )


async def test_a_throttle_halves_the_rate_in_force_which_recovers_within_the_recovery_time() -> (
    None
):
    clock = FakeClock(0.0)
    limiter = RateLimiter(10.0, monotonic=clock.time, sleep=clock.sleep)
    limiter.throttled(2.0)
    assert limiter.rate_in_force() == pytest.approx(5.0)
    limiter.throttled(2.0)
    limiter.throttled(2.0)
    limiter.throttled(2.0)
    assert limiter.rate_in_force() == pytest.approx(1.0)  # never below a tenth of the budget
    clock.now += RECOVERY / 2
    assert limiter.rate_in_force() == pytest.approx(6.0)
    clock.now += RECOVERY / 2
    assert limiter.rate_in_force() == limiter.rate == 10.0
    # Paused until 2.0 (long past now), then paced at the recovered rate.
    for _ in range(12):
        await limiter.acquire()
    assert limiter.spent_rps() == pytest.approx(12 / 60)


class Cloud:
    """Jobs created at `created` that end (SUCCEED) at `ends`; every poll is recorded."""

    provider = HW
    batch_size = 1

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.created: dict[str, float] = {}
        self.ends: dict[str, float] = {}
        self.polls: dict[str, list[float]] = defaultdict(list)
        self.throttle_next = 0

    def add(self, job_id: str, *, age: float, ends_in: float = 1e9) -> None:
        self.created[job_id] = self.clock.now - age
        self.ends[job_id] = self.clock.now + ends_in

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> Mapping[str, JobSnapshot | ProviderError]:
        await asyncio.sleep(0)
        if self.throttle_next:
            self.throttle_next -= 1
            raise ThrottledError("HTTP 429 APIGW.0308", status="429", retry_after=1.0)
        answers: dict[str, JobSnapshot | ProviderError] = {}
        for job_id in job_ids:
            self.polls[job_id].append(self.clock.now)
            ended = self.clock.now >= self.ends[job_id]
            answers[job_id] = snapshot(
                "SUCCEED" if ended else "PROCESSING",
                job_id,
                created_at=self.created[job_id],
                updated_at=self.ends[job_id] if ended else self.created[job_id],
                finished_at=self.ends[job_id] if ended else None,
            )
        return answers

    def total(self, prefix: str, since: float = 0.0) -> int:
        return sum(
            1
            for job_id, at in self.polls.items()
            if job_id.startswith(prefix)
            for t in at
            if t >= since
        )


def _budgeted(
    clock: FakeClock, cloud: Cloud, budget: float | None, **settings: object
) -> tuple[Poller, Lifecycle, Store]:
    account = {"provider": HW, "region": "xx-test-1", "project_id": "p"}
    if budget is not None:
        account["api_budget_rps"] = budget  # type: ignore[assignment]
    config = Settings(accounts={"hw": account}, **settings)  # type: ignore[arg-type]
    store = Store()
    lifecycle = Lifecycle(store, config, {"hw": HW}, wall=clock.time)

    async def tick(_: float) -> None:  # waits for the test's clock, which the test moves
        await asyncio.sleep(0)

    poller = Poller(
        store,
        lifecycle,
        {"hw": cloud},  # type: ignore[dict-item]
        config,
        wall=clock.time,
        monotonic=clock.time,
        sleep=tick,
        rng=random.Random(7),
    )
    return poller, lifecycle, store


def _track(lifecycle: Lifecycle, cloud: Cloud) -> None:
    lifecycle.set_config_jobs([JobConfig(account="hw", id=name) for name in cloud.created])


async def _run_for(poller: Poller, clock: FakeClock, seconds: float, step: float = 0.05) -> None:
    end = clock.now + seconds
    while clock.now < end:
        clock.now += step
        poller._wakeup.set()
        for _ in range(4):
            await asyncio.sleep(0)


async def _running(poller: Poller, clock: FakeClock, seconds: float) -> None:
    task = asyncio.create_task(poller.run())
    try:
        await _run_for(poller, clock, seconds)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("budget", [None, 10.0])
async def test_when_the_wanted_polls_fit_the_budget_every_job_is_polled_at_its_interval(
    budget: float | None,
) -> None:
    clock = FakeClock(START)
    cloud = Cloud(clock)
    for n in range(20):
        cloud.add(f"job-{n}", age=5.0)
    poller, lifecycle, _ = _budgeted(clock, cloud, budget, poll_interval=10)
    _track(lifecycle, cloud)
    await _running(poller, clock, 102.0)
    # First polls within 2 s, then every 10 s x (0.9 .. 1.1): 10 or 11 polls each.
    assert {len(at) for at in cloud.polls.values()} <= {10, 11}
    assert poller.polling_status()[("hw", HW)].overdue_seconds == 0.0


async def test_a_tight_budget_goes_to_jobs_old_enough_to_end_and_young_ones_wait_their_cap() -> (
    None
):
    clock = FakeClock(START)
    cloud = Cloud(clock)
    for n in range(40):
        cloud.add(f"young-{n}", age=0.0)
        cloud.add(f"ripe-{n}", age=150.0)
    poller, lifecycle, store = _budgeted(clock, cloud, 4.0, poll_interval=5)
    for n in range(50):  # the job type's runs seen so far: 100 .. 300 s
        poller._learn(
            JobKey("hw", f"done-{n}"),
            snapshot("SUCCEED", created_at=0.0, finished_at=100.0 + 4 * n),
        )
    _track(lifecycle, cloud)
    await _running(poller, clock, 20.0 + 2.0)
    # Every job was polled once first (80 polls at 4/s), never-polled jobs before any other.
    assert all(len(at) >= 1 for at in cloud.polls.values())
    window = clock.now
    await _running(poller, clock, 40.0)
    ripe, young = cloud.total("ripe", window), cloud.total("young", window)
    assert ripe + young <= 4.0 * 40 + 2  # never more than the budget (and its burst of 2)
    assert ripe >= 150
    assert young == 0  # no chance to have ended yet, and not yet at their cap
    status = poller.polling_status()[("hw", HW)]
    assert status.budget_rps == 4.0
    assert status.spent_rps == pytest.approx(4.0, rel=0.1)
    assert status.overdue_seconds > 20.0  # the young ones have been due for a while
    # Their cap: 20 x 5 s after their first poll, each young job is polled again.
    await _running(poller, clock, 60.0)
    for n in range(40):
        polls = cloud.polls[f"young-{n}"]
        assert len(polls) >= 2
        assert max(b - a for a, b in pairwise(polls)) <= MAX_STRETCH * 5 + 15
    assert store.get(JobKey("hw", "young-0")) is not None


async def test_terminal_jobs_get_what_running_jobs_leave() -> None:
    clock = FakeClock(START)
    cloud = Cloud(clock)
    for n in range(30):
        cloud.add(f"run-{n}", age=1.0)
        cloud.add(f"done-{n}", age=1.0, ends_in=-1.0)
    poller, lifecycle, _ = _budgeted(clock, cloud, 5.0, poll_interval=5, terminal_poll_interval=10)
    _track(lifecycle, cloud)
    await _running(poller, clock, 15.0)
    window = clock.now
    await _running(poller, clock, 60.0)
    # 30 running jobs every 5 s want 6/s, more than the budget of 5/s: they take all of it,
    # and the terminal ones wait for their cap (20 x 10 s).
    assert cloud.total("run", window) >= 5 * 60 * 0.95
    assert cloud.total("done", window) == 0


async def test_new_jobs_are_polled_first_when_the_budget_is_spent() -> None:
    clock = FakeClock(START)
    cloud = Cloud(clock)
    for n in range(60):
        cloud.add(f"old-{n}", age=1.0)
    poller, lifecycle, _ = _budgeted(clock, cloud, 5.0, poll_interval=5)
    _track(lifecycle, cloud)
    task = asyncio.create_task(poller.run())
    try:
        await _run_for(poller, clock, 30.0)  # 12 wanted polls a second: saturated
        for n in range(5):
            cloud.add(f"new-{n}", age=0.0)
        added = clock.now
        _track(lifecycle, cloud)
        await _run_for(poller, clock, 5.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Five new jobs at 5 requests/s, after their first-poll spread of up to 2 s.
    assert all(
        cloud.polls[f"new-{n}"] and cloud.polls[f"new-{n}"][0] <= added + 3.5 for n in range(5)
    )


async def test_a_throttled_answer_lowers_the_budget_in_force() -> None:
    clock = FakeClock(START)
    cloud = Cloud(clock)
    for n in range(50):
        cloud.add(f"job-{n}", age=1.0)
    poller, lifecycle, _ = _budgeted(clock, cloud, 8.0, poll_interval=5, max_retries=0)
    _track(lifecycle, cloud)
    cloud.throttle_next = 1
    await _running(poller, clock, 10.0)
    budget = poller.polling_status()[("hw", HW)].budget_rps
    assert budget is not None
    assert 4.0 <= budget < 4.0 + 8.0 * 10.0 / RECOVERY + 0.01


def test_the_store_times_a_change_from_the_clouds_time_for_it() -> None:
    store = Store()
    key = JobKey("hw", "job-1")
    store.track(key, HW, {})
    store.record_success(key, snapshot("WAITING", updated_at=100.0), 110.0)
    store.record_success(key, snapshot("PROCESSING", updated_at=200.0), 230.0)
    # The state changed but the cloud gives no new time for it (Tencent's Pause): not timed.
    store.record_success(key, snapshot("RESULT_REVIEW", updated_at=200.0), 240.0)
    # A cloud clock ahead of ours: 0, not a negative delay.
    store.record_success(key, snapshot("SUCCEED", updated_at=300.0), 299.0)
    histogram = store.view().detection_delays[("hw", HW)]
    assert sum(histogram.counts) == 2
    assert histogram.total == 30.0


@pytest.mark.parametrize(
    ("keys", "budget"),
    [
        ({"region": "cn-north-4"}, 10.0),  # half the documented 20/s
        ({"region": "cn-east-3"}, 5.0),
        ({"region": "xx-test-1"}, None),  # no documented limit: no budget
        ({"region": "cn-north-4", "max_rps": 3}, 3.0),
        ({"region": "cn-north-4", "api_budget_rps": 7}, 7.0),
        ({"region": "cn-north-4", "api_budget_rps": 7, "max_rps": 3}, 3.0),  # a cap stays a cap
        ({"region": "cn-north-4", "api_budget_rps": 0}, None),  # 0 turns the budget off
        ({"region": "cn-north-4", "api_budget_rps": 0, "max_rps": 3}, 3.0),
    ],
)
def test_the_budget_in_force_for_a_huawei_account(
    keys: dict[str, object], budget: float | None
) -> None:
    config = Settings(accounts={"hw": {"provider": HW, "project_id": "p", **keys}})  # type: ignore[dict-item]
    assert config.accounts["hw"].budget_rps == budget  # type: ignore[attr-defined]


def test_a_tencent_account_has_a_budget_only_when_given_one() -> None:
    account = {"provider": "tencent_ci", "bucket": "b-1250000000", "region": "ap-beijing"}
    assert Settings(accounts={"tc": account}).accounts["tc"].budget_rps is None  # type: ignore[dict-item, attr-defined]
    with_budget = {**account, "api_budget_rps": 40}
    assert Settings(accounts={"tc": with_budget}).accounts["tc"].budget_rps == 40.0  # type: ignore[dict-item, attr-defined]


async def test_the_overdue_gauge_finds_the_earliest_due_unfinished_job_in_the_heap() -> None:
    """The gauge visits only due entries of the schedule (a scrape must not walk every job):
    it must still find the earliest due unfinished one, past terminal and stale entries."""
    clock = FakeClock(START)
    cloud = Cloud(clock)
    for n in range(300):
        cloud.add(f"job-{n}", age=1.0)
    poller, lifecycle, store = _budgeted(clock, cloud, None, poll_interval=30)
    _track(lifecycle, cloud)
    keys = [JobKey("hw", f"job-{n}") for n in range(300)]
    for n, key in enumerate(reversed(keys)):  # due 10 minutes ago and on, the last first
        poller._schedule(key, -600.0 + 2 * (299 - n))
    for key in keys[:50]:  # the 50 earliest are terminal,
        store.record_success(key, snapshot("SUCCEED", key.job_id), clock.now)
    for key in keys[50:60]:  # the next 10 rescheduled: their early entries are stale
        poller._schedule(key, 60.0)
    # So the most overdue unfinished job is job-60, due 600 - 120 s ago.
    assert poller.polling_status()[("hw", HW)].overdue_seconds == pytest.approx(480.0)
