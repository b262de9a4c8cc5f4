"""Requests to clouds are counted in one place, `Store.on_exchange`, for polls and discovery alike.

Scripted providers and listers and a fake clock: nothing here sleeps or opens a socket.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping, Sequence

import pytest

from exporter.config import Discovery, JobConfig, Settings
from exporter.discovery import discover_once
from exporter.lifecycle import Lifecycle
from exporter.model import (
    AuthError,
    Exchange,
    JobSnapshot,
    NetworkError,
    PollTimeout,
    ProviderError,
    UpstreamError,
)
from exporter.poller import Poller
from exporter.providers.base import JobList
from exporter.store import JobKey, Store
from tests.conftest import snapshot
from tests.support import FakeClock

ACCOUNT, PROVIDER = "tc", "tencent_ci"
# Each scripted request takes this long on the fake clock, so durations are exact.
REQUEST_SECONDS = 0.2


class Scripted:
    """A provider and a job lister whose every request takes REQUEST_SECONDS and ends with the
    next scripted outcome: an exception to raise, or else an answer."""

    provider = PROVIDER
    account = ACCOUNT
    batch_size = 1

    def __init__(self, clock: FakeClock, outcomes: Sequence[BaseException | None]) -> None:
        self._clock = clock
        self._outcomes = deque(outcomes)

    def _answer(self) -> None:
        self._clock.now += REQUEST_SECONDS
        outcome = self._outcomes.popleft()
        if outcome is not None:
            raise outcome

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> Mapping[str, JobSnapshot | ProviderError]:
        self._answer()
        return {job_id: snapshot("Running", job_id) for job_id in job_ids}

    async def list_jobs(
        self,
        since: float,
        next_token: str | None = None,
        *,
        job_type: str,
        states: Sequence[str] = (),
    ) -> JobList:
        self._answer()
        page = int(next_token or 0)
        return JobList((snapshot("Running", f"found-{page}"),), str(page + 1))


def _setup(scripted: Scripted, clock: FakeClock) -> tuple[Store, Poller, Lifecycle]:
    store = Store()
    settings = Settings(max_retries=0)
    lifecycle = Lifecycle(store, settings, {ACCOUNT: PROVIDER}, wall=clock.time)
    poller = Poller(
        store,
        lifecycle,
        {ACCOUNT: scripted},
        settings,
        wall=clock.time,
        monotonic=clock.time,
        sleep=clock.sleep,
        rng=random.Random(1),
    )
    return store, poller, lifecycle


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (None, "200"),
        (UpstreamError("HTTP 404", status="404"), "404"),
        (PollTimeout("no answer", status=Exchange.TIMEOUT), "timeout"),
        (NetworkError("reset", status=Exchange.CONNECTION), "connection"),
    ],
)
async def test_a_poll_counts_its_request_by_how_it_ended(
    outcome: BaseException | None, status: str
) -> None:
    clock = FakeClock(1000.0)
    store, poller, lifecycle = _setup(Scripted(clock, [outcome]), clock)
    lifecycle.set_config_jobs([JobConfig(account=ACCOUNT, id="job-1")])
    await poller.poll([JobKey(ACCOUNT, "job-1")])
    view = store.view()
    assert view.api_requests == {(ACCOUNT, PROVIDER, status): 1}
    durations = view.api_durations[(ACCOUNT, PROVIDER)]
    assert sum(durations.counts) == 1
    assert durations.total == pytest.approx(REQUEST_SECONDS)


@pytest.mark.parametrize(
    "outcome",
    [
        AuthError("account has neither a token nor an AK/SK pair"),
        RuntimeError("a bug in the provider"),
    ],
)
async def test_a_poll_that_sent_no_request_is_not_counted_as_one(outcome: BaseException) -> None:
    """A missing credential or the exporter's own crash is the poll's error, not a request's."""
    clock = FakeClock(1000.0)
    store, poller, lifecycle = _setup(Scripted(clock, [outcome]), clock)
    lifecycle.set_config_jobs([JobConfig(account=ACCOUNT, id="job-1")])
    await poller.poll([JobKey(ACCOUNT, "job-1")])
    view = store.view()
    assert view.api_requests == {}
    assert view.api_durations == {}
    state = store.get(JobKey(ACCOUNT, "job-1"))
    assert state is not None
    assert state.last_error is not None
    assert state.last_error.status == "error"


async def _discover(
    scripted: Scripted, clock: FakeClock, poller: Poller, lifecycle: Lifecycle, store: Store
) -> int:
    """One discovery run over the scripted list, on the fake clock."""
    return await discover_once(
        scripted,
        Discovery(queue_id="q", tag="Translation"),
        poller,
        lifecycle,
        store,
        wall=clock.time,
        monotonic=clock.time,
    )


async def test_discovery_counts_each_list_call_like_a_poll() -> None:
    clock = FakeClock(1000.0)
    scripted = Scripted(clock, [None, None, UpstreamError("HTTP 503", status="503")])
    store, poller, lifecycle = _setup(scripted, clock)
    with pytest.raises(UpstreamError):
        await _discover(scripted, clock, poller, lifecycle, store)
    view = store.view()
    assert view.api_requests == {(ACCOUNT, PROVIDER, "200"): 2, (ACCOUNT, PROVIDER, "503"): 1}
    durations = view.api_durations[(ACCOUNT, PROVIDER)]
    assert sum(durations.counts) == 3
    assert durations.total == pytest.approx(3 * REQUEST_SECONDS)
    assert view.discovery[(ACCOUNT, PROVIDER)].added_total == 2


async def test_a_list_call_that_sent_no_request_is_not_counted_as_one() -> None:
    clock = FakeClock(1000.0)
    scripted = Scripted(clock, [AuthError("no credentials")])
    store, poller, lifecycle = _setup(scripted, clock)
    with pytest.raises(AuthError):
        await _discover(scripted, clock, poller, lifecycle, store)
    assert store.view().api_requests == {}
    assert store.view().discovery[(ACCOUNT, PROVIDER)].last_success is False
