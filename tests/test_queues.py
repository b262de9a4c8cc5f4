"""Queue health against the simulated CI over loopback: a paused queue shows within
`queue_interval`, reads name at most ten queues a request, a failed read keeps the queues it
read before, and `queue_interval: 0s` sends nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import load_settings
from exporter.simulator.tencent_ci import TencentCISimulator
from exporter.simulator.tencent_scripts import STUCK
from tests.support import (
    Handler,
    ServerFactory,
    Watched,
    samples,
    scrape,
    scrape_until,
    serving,
    value,
)

BUCKET = "examplebucket-1250000000"
SECRET_ID = "AKIDQUEUES0000000000000000000000000"
SECRET_KEY = "tc-queue-key"
QUEUE_INTERVAL = 1.0


@dataclass
class QueueCloud:
    """The queue requests the simulated cloud saw (their ids); it can refuse them."""

    sim: TencentCISimulator
    queue_requests: list[list[str]] = field(default_factory=list)
    refuse: bool = False

    async def watch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/ai_queue", "/queue"):
            self.queue_requests.append(request.query["queueIds"].split(","))
            if self.refuse:
                return web.Response(status=503, text="<Error><Code>InternalError</Code>")
        return await handler(request)


@pytest.fixture
async def cloud() -> AsyncIterator[tuple[QueueCloud, str]]:
    sim = TencentCISimulator(bucket=BUCKET, credentials={SECRET_ID: SECRET_KEY}, clock=time.time)
    sim.add_queue("p-busy", name="busy-queue", max_concurrent=3)
    sim.add_queue("p-calm", name="calm-queue")
    sim.add_job("a-busy", STUCK, queue_id="p-busy")
    sim.add_job("a-calm", STUCK, queue_id="p-calm")
    counting = QueueCloud(sim)
    async with serving(Watched(sim, counting.watch)) as url:
        yield counting, url


async def _exporter(
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    url: str,
    job_ids: list[str],
    *,
    queue_interval: float = QUEUE_INTERVAL,
    job_api: str = "ai_jobs",
) -> TestServer:
    jobs = "".join(f"  - {{account: tc, id: {job_id}}}\n" for job_id in job_ids)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""poll_interval: 0.2s
max_retries: 0
accounts:
  tc:
    provider: tencent_ci
    bucket: {BUCKET}
    region: ap-beijing
    endpoint: "{url}"
    job_api: {job_api}
    queue_interval: {queue_interval}s
    auth: {{secret_id_env: T_ID, secret_key_env: T_KEY}}
jobs:
{jobs}"""
    )
    app = create_app(load_settings(path), environ={"T_ID": SECRET_ID, "T_KEY": SECRET_KEY})
    return await aiohttp_server(app)


def _paused(text: str, queue_id: str) -> float | None:
    return value(text, "cloudjob_queue_paused", account="tc", queue_id=queue_id)


@pytest.mark.parametrize("job_api", ["ai_jobs", "media_jobs"])
async def test_a_paused_queue_shows_within_queue_interval_and_its_resume_too(
    cloud: tuple[QueueCloud, str],
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    job_api: str,
) -> None:
    counting, url = cloud
    caplog.set_level(logging.INFO, logger="exporter.queues")
    server = await _exporter(aiohttp_server, tmp_path, url, ["a-busy", "a-calm"], job_api=job_api)
    text = await scrape_until(server, lambda t: _paused(t, "p-calm") == 0)
    assert _paused(text, "p-busy") == 0
    info = {"account": "tc", "provider": "tencent_ci", "queue_id": "p-busy", "name": "busy-queue"}
    assert samples(text)[("cloudjob_queue_info", frozenset(info.items()))] == 1
    assert value(text, "cloudjob_queue_max_concurrent", queue_id="p-busy") == 3
    assert value(text, "cloudjob_queue_last_success", account="tc") == 1

    counting.sim.pause_queue("p-busy")
    reads_before = len(counting.queue_requests)
    text = await scrape_until(server, lambda t: _paused(t, "p-busy") == 1, within=10)
    # Reads come every queue_interval (a steady cadence), and the first read that started
    # after the pause shows it (one in flight at the pause may already have).
    assert len(counting.queue_requests) - reads_before <= 1
    assert _paused(text, "p-calm") == 0
    # The paused queue's waiting job shows why it stops moving.
    await scrape_until(
        server, lambda t: value(t, "cloudjob_job_state", job_id="a-busy", state="Pause") == 1
    )

    counting.sim.resume_queue("p-busy")
    await scrape_until(server, lambda t: _paused(t, "p-busy") == 0, within=10)
    events = [r.getMessage() for r in caplog.records if r.name == "exporter.queues"]
    assert events == ["queue_paused", "queue_resumed"]
    assert all(ids == ["p-busy", "p-calm"] for ids in counting.queue_requests)


async def test_a_read_names_at_most_ten_queues_a_request(
    cloud: tuple[QueueCloud, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    counting, url = cloud
    ids = [f"a-job-{n:02}" for n in range(23)]
    for n, job_id in enumerate(ids):
        counting.sim.add_job(job_id, STUCK, queue_id=f"p-q{n:02}")
    server = await _exporter(aiohttp_server, tmp_path, url, ids)
    text = await scrape_until(
        server, lambda t: all(_paused(t, f"p-q{n:02}") == 0 for n in range(23))
    )
    assert value(text, "cloudjob_queue_info", queue_id="p-busy") is None  # no job of ours there
    first_read = counting.queue_requests[:3]
    assert [len(names) for names in first_read] == [10, 10, 3]
    assert sorted(name for names in first_read for name in names) == [
        f"p-q{n:02}" for n in range(23)
    ]


async def test_a_failed_read_keeps_the_queues_it_read_before_and_says_so(
    cloud: tuple[QueueCloud, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    counting, url = cloud
    server = await _exporter(aiohttp_server, tmp_path, url, ["a-busy"])
    await scrape_until(server, lambda t: _paused(t, "p-busy") == 0)
    counting.refuse = True
    text = await scrape_until(
        server, lambda t: value(t, "cloudjob_queue_last_success", account="tc") == 0, within=10
    )
    assert _paused(text, "p-busy") == 0
    assert value(text, "cloudjob_api_requests_total", account="tc", status="503") is not None
    counting.refuse = False
    await scrape_until(
        server, lambda t: value(t, "cloudjob_queue_last_success", account="tc") == 1, within=10
    )


async def test_queue_interval_zero_sends_no_queue_request(
    cloud: tuple[QueueCloud, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    counting, url = cloud
    server = await _exporter(aiohttp_server, tmp_path, url, ["a-busy"], queue_interval=0)
    await scrape_until(
        server, lambda t: value(t, "cloudjob_job_state", job_id="a-busy", state="Submitted") == 1
    )
    text = await scrape(server)
    assert counting.queue_requests == []
    assert value(text, "cloudjob_queue_last_success", account="tc") is None
