"""Refresh rounds at their edges, on a fake clock and a scripted list: a walk cut at the page
bound, a list answer older than the job's end, a job that asks for faster polls, and list
entries no config could name. (The loopback tests in test_bulk_refresh.py count requests.)"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence

import pytest

from exporter.accounts import Discovery
from exporter.config import JobConfig, Settings
from exporter.discovery import MAX_LIST_PAGES, discover_once
from exporter.lifecycle import Lifecycle
from exporter.model import JobSnapshot, Phase
from exporter.poller import Poller
from exporter.providers.base import JobList
from exporter.refresh import BulkRefresh
from exporter.store import JobKey, Store
from tests.support import FakeClock

QUEUE = "p893bcda225bf4945a378da6662e81a89"
NOW = 1_000_000.0
INTERVAL = 30.0


def listed(job_id: str, state: str = "Running", *, created: float = NOW - 100) -> JobSnapshot:
    failed = state == "Failed"
    return JobSnapshot(
        job_id=job_id,
        job_type="Translation",
        state=state,
        phase=Phase.FAILED if failed else Phase.RUNNING,
        terminal=failed,
        created_at=created,
        updated_at=created,
        started_at=created,
        finished_at=created + 1 if failed else None,
        failure_code="E" if failed else None,
        queue_id=QUEUE,
    )


class ScriptedCI:
    """List pages and look-up answers as a test sets them."""

    provider = "tencent_ci"
    account = "tc"
    batch_size = 1

    def __init__(self) -> None:
        self.pages: list[JobList] = []
        self.endless = False
        self.lists = 0
        self.looked_up: list[str] = []
        self.answers: dict[str, JobSnapshot] = {}

    async def list_jobs(
        self,
        since: float,
        next_token: str | None = None,
        *,
        job_type: str,
        states: Sequence[str] = (),
    ) -> JobList:
        self.lists += 1
        if self.endless:  # newest first: every page older than the one before
            return JobList((listed(f"new-{self.lists}", created=NOW - self.lists),), "more")
        return self.pages.pop(0) if self.pages else JobList((), None)

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> dict[str, JobSnapshot]:
        self.looked_up.extend(job_ids)
        return {job_id: self.answers[job_id] for job_id in job_ids}


def _build(
    ci: ScriptedCI, clock: FakeClock, jobs: Sequence[JobConfig]
) -> tuple[BulkRefresh, Poller, Store, Lifecycle]:
    store = Store()
    settings = Settings(poll_interval=INTERVAL, max_jobs=100_000)
    lifecycle = Lifecycle(store, settings, {"tc": "tencent_ci"}, wall=clock.time)
    poller = Poller(
        store,
        lifecycle,
        {"tc": ci},
        settings,
        wall=clock.time,
        monotonic=clock.time,
        sleep=clock.sleep,
        rng=random.Random(1),
    )
    bulk = BulkRefresh(
        ci,
        Discovery(queue_id=QUEUE, tag="Translation"),
        poller,
        store,
        INTERVAL,
        wall=clock.time,
        monotonic=clock.time,
    )
    poller.cover("tc", bulk.covers)
    lifecycle.set_config_jobs(jobs)
    return bulk, poller, store, lifecycle


async def test_jobs_older_than_a_walk_cut_at_the_page_bound_keep_their_own_polls() -> None:
    clock, ci = FakeClock(NOW), ScriptedCI()
    bulk, poller, store, _ = _build(ci, clock, [JobConfig(account="tc", id="old")])
    old = JobKey("tc", "old")
    store.record_success(old, listed("old", created=NOW - 50_000), clock.time())
    ci.endless = True  # more pages than the bound: "old" is on a page never read
    await bulk.refresh_once()
    assert ci.lists == MAX_LIST_PAGES
    state = store.get(old)
    assert state is not None
    assert not bulk.covers(state)  # older than every job the walk read
    assert poller._take_due("tc", clock.time() + 3600) == [old]
    # A job newer than the cut is covered: the pages read list it.
    store.record_success(JobKey("tc", "old"), listed("old", created=NOW - 1), clock.time())
    state = store.get(old)
    assert state is not None
    assert bulk.covers(state)


async def test_a_list_answer_older_than_a_jobs_end_neither_revives_it_nor_recounts_it() -> None:
    clock, ci = FakeClock(NOW), ScriptedCI()
    bulk, poller, store, _ = _build(ci, clock, [JobConfig(account="tc", id="j")])
    key = JobKey("tc", "j")
    store.record_success(key, listed("j"), clock.time())
    ci.answers["j"] = listed("j", "Failed")
    await poller.poll([key])  # its own poll reads the end: counted once
    assert sum(store.view().failures.values()) == 1
    ci.pages = [JobList((listed("j"),), None)]  # a list answered before the end
    await bulk.refresh_once()
    state = store.get(key)
    assert state is not None
    assert state.snapshot is not None
    assert state.snapshot.state == "Failed"
    clock.now += INTERVAL
    await bulk.refresh_once()  # no longer listed, and not covered: nothing to look up
    assert ci.looked_up == ["j"]
    assert sum(store.view().failures.values()) == 1


async def test_an_ended_job_is_looked_up_once_however_many_rounds_pass_first() -> None:
    clock, ci = FakeClock(NOW), ScriptedCI()
    bulk, poller, _, _ = _build(ci, clock, [JobConfig(account="tc", id="j")])
    ci.pages = [JobList((listed("j"),), None)]
    await bulk.refresh_once()
    key = JobKey("tc", "j")
    clock.now += 5  # its first own poll is due: skipped, the list covers it
    assert poller._take_due("tc", clock.time()) == []
    clock.now += INTERVAL
    assert await bulk.refresh_once() == 1  # ended: no longer listed
    assert poller._take_due("tc", clock.time()) == [key]  # its look-up starts ...
    for _ in range(2):  # ... and is still on its way when the next rounds ask again
        clock.now += INTERVAL
        assert await bulk.refresh_once() == 1
        assert poller._take_due("tc", clock.time()) == []


async def test_a_job_asking_for_faster_polls_than_the_rounds_keeps_its_own() -> None:
    clock, ci = FakeClock(NOW), ScriptedCI()
    fast = JobConfig(account="tc", id="fast", poll_interval=5.0)
    bulk, _, store, _ = _build(ci, clock, [fast, JobConfig(account="tc", id="slow")])
    ci.pages = [JobList((listed("fast"), listed("slow")), None)]
    await bulk.refresh_once()
    fast_state, slow_state = store.get(JobKey("tc", "fast")), store.get(JobKey("tc", "slow"))
    assert fast_state is not None
    assert slow_state is not None
    assert not bulk.covers(fast_state)
    assert bulk.covers(slow_state)


async def test_a_listed_id_no_config_could_name_is_refused_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, ci = FakeClock(NOW), ScriptedCI()
    _, poller, store, lifecycle = _build(ci, clock, [])
    ci.pages = [JobList((listed("a b"), listed("fine")), None)]
    caplog.set_level(logging.WARNING, logger="exporter.lifecycle")
    spec = Discovery(queue_id=QUEUE, tag="Translation")
    added = await discover_once(ci, spec, poller, lifecycle, store, wall=clock.time)
    assert added == 1
    assert JobKey("tc", "fine") in store
    assert [r.getMessage() for r in caplog.records] == ["discovered_id_refused"]
