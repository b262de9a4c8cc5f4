"""`refresh: list`: list pages refresh the discover queue's jobs, an ended job gets one look-up,
jobs the list cannot cover keep their own polls, and a list that keeps failing hands its jobs
back to their own polls. A real exporter app against the simulated CI over loopback; requests
are counted where the cloud sees them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter import refresh
from exporter.app import create_app
from exporter.config import load_settings
from exporter.refresh import STALE_ROUNDS
from exporter.simulator.tencent_ci import TencentCISimulator
from exporter.simulator.tencent_scripts import STUCK
from tests.support import Handler, ServerFactory, Watched, scrape, scrape_until, serving, value

BUCKET = "examplebucket-1250000000"
SECRET_ID = "AKIDREFRESH000000000000000000000000"
SECRET_KEY = "tc-refresh-key"
QUEUE = "p893bcda225bf4945a378da6662e81a89"
OTHER_QUEUE = "p73fc66f5e121531194c27ca7c20760d7"
INTERVAL = 0.2


@dataclass
class CountingCloud:
    """Requests the simulated cloud saw, by kind; it can refuse the list requests."""

    sim: TencentCISimulator
    lists: int = 0
    lookups: Counter[str] = field(default_factory=Counter)
    refuse_lists: bool = False

    async def watch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        head, _, ids = request.path.strip("/").partition("/")
        if head in ("jobs", "ai_jobs") and not ids:
            self.lists += 1
            if self.refuse_lists:
                return web.Response(status=503, text="<Error><Code>InternalError</Code>")
        elif head in ("jobs", "ai_jobs"):
            self.lookups.update(ids.split(","))
        return await handler(request)


@pytest.fixture
async def cloud() -> AsyncIterator[tuple[CountingCloud, str]]:
    sim = TencentCISimulator(bucket=BUCKET, credentials={SECRET_ID: SECRET_KEY}, clock=time.time)
    running = time.time() - 60  # past STUCK's Submitted step
    for n in range(12):
        sim.add_job(f"a-run-{n:02}", STUCK, queue_id=QUEUE, started=running)
    sim.add_job("a-ends", STUCK, queue_id=QUEUE, started=running)
    sim.add_job("a-other-queue", STUCK, queue_id=OTHER_QUEUE, started=running)
    counting = CountingCloud(sim)
    async with serving(Watched(sim, counting.watch)) as url:
        yield counting, url


def _config(url: str, refresh: str) -> str:
    return f"""poll_interval: {INTERVAL}s
terminal_poll_interval: 1h
max_retries: 0
request_timeout: 2
accounts:
  tc:
    provider: tencent_ci
    bucket: {BUCKET}
    region: ap-beijing
    endpoint: "{url}"
    refresh: {refresh}
    queue_interval: 0s
    auth: {{secret_id_env: T_ID, secret_key_env: T_KEY}}
    discover: {{queue_id: {QUEUE}, tag: Translation, page_size: 5, lookback: 1h, interval: 1h}}
jobs:
  - {{account: tc, id: a-ends}}
  - {{account: tc, id: a-other-queue}}
"""


async def _exporter(
    aiohttp_server: ServerFactory, tmp_path: Path, url: str, refresh: str
) -> TestServer:
    path = tmp_path / "config.yaml"
    path.write_text(_config(url, refresh))
    app = create_app(load_settings(path), environ={"T_ID": SECRET_ID, "T_KEY": SECRET_KEY})
    return await aiohttp_server(app)


def _all_running(text: str) -> bool:
    ids = [f"a-run-{n:02}" for n in range(12)] + ["a-ends", "a-other-queue"]
    return all(value(text, "cloudjob_job_state", job_id=i, state="Running") == 1 for i in ids)


async def _rounds(count: int) -> None:
    """Let `count` poll intervals pass: the counts below are per interval of time."""
    await asyncio.sleep(count * INTERVAL)


async def test_list_pages_refresh_the_queue_and_an_ended_job_is_looked_up_once(
    cloud: tuple[CountingCloud, str],
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A busy CI machine may delay a round past three intervals: coverage must not lapse here.
    monkeypatch.setattr(refresh, "STALE_ROUNDS", 100)
    counting, url = cloud
    server = await _exporter(aiohttp_server, tmp_path, url, "list")
    await scrape_until(server, _all_running)
    lists, lookups = counting.lists, counting.lookups.copy()
    await _rounds(10)
    rounds = (counting.lists - lists) / 3  # 13 jobs of the queue, 5 a page: 3 pages a round
    assert rounds >= 5, counting.lists - lists
    fresh = counting.lookups - lookups
    # The list refreshes the queue's jobs: none of them is looked up on its own ...
    assert not {job: n for job, n in fresh.items() if job != "a-other-queue"}, fresh
    # ... while the job in another queue, which the list cannot cover, keeps its own polls.
    assert fresh["a-other-queue"] >= 5

    # A job that ends leaves the non-terminal list: it gets one look-up to read its end.
    before = counting.lookups["a-ends"]
    counting.sim.set_override("a-ends", state="Success")
    await scrape_until(
        server, lambda t: value(t, "cloudjob_job_state", job_id="a-ends", state="Success") == 1
    )
    await _rounds(5)
    assert counting.lookups["a-ends"] - before == 1
    assert value(await scrape(server), "cloudjob_job_phase", job_id="a-ends", phase="succeeded")


async def test_refresh_lookup_polls_every_job_on_its_own(
    cloud: tuple[CountingCloud, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    counting, url = cloud
    server = await _exporter(aiohttp_server, tmp_path, url, "lookup")
    await scrape_until(server, _all_running)
    lists, lookups = counting.lists, counting.lookups.copy()
    await _rounds(10)
    fresh = counting.lookups - lookups
    assert counting.lists == lists  # discovery's one walk (interval 1h) was before
    assert len(fresh) == 14, fresh
    assert min(fresh.values()) >= 5, fresh


async def test_a_list_that_keeps_failing_hands_its_jobs_back_to_their_own_polls(
    cloud: tuple[CountingCloud, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    counting, url = cloud
    server = await _exporter(aiohttp_server, tmp_path, url, "list")
    await scrape_until(server, _all_running)
    counting.refuse_lists = True
    lookups = counting.lookups.copy()
    # Covered jobs keep waiting on the list for STALE_ROUNDS rounds, then poll on their own.
    await _rounds(STALE_ROUNDS + 6)
    fresh = counting.lookups - lookups
    assert fresh["a-run-00"] >= 2, fresh
    assert value(await scrape(server), "cloudjob_api_requests_total", status="503") is not None
    # When the list answers again, it covers them again.
    counting.refuse_lists = False
    await _rounds(3)
    lookups = counting.lookups.copy()
    await _rounds(5)
    fresh = counting.lookups - lookups
    assert not {job: n for job, n in fresh.items() if job != "a-other-queue"}, fresh
