"""The exporter against the simulated Tencent CI over loopback: polling, batching, hostile
bodies, temporary credentials and discovery."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import load_settings
from exporter.simulator.tencent_ci import (
    SEED_SAMPLE_BODY,
    TencentCISimulator,
    oversized_body,
    xml_bomb_body,
)
from exporter.simulator.tencent_scripts import FAILED, HAPPY, STUCK
from tests.conftest import promtool_check_metrics
from tests.support import (
    FAST_POLLING,
    ServerFactory,
    eventually_async,
    scrape_until,
    serving,
    value,
)

BUCKET = "examplebucket-1250000000"
SECRET_ID = "AKIDLEAKCHECK00000000000000000000000"
SECRET_KEY = "tc-leak-check-key-3c1f0e9a7b"
TOKEN = "tc-leak-check-token-9e8d7c6b5a"


@dataclass
class Cloud:
    sim: TencentCISimulator
    url: str
    shift: list[float] = field(default_factory=lambda: [0.0])

    def advance(self, seconds: float) -> None:
        self.shift[0] += seconds


@pytest.fixture
async def cloud() -> AsyncIterator[Cloud]:
    shift = [0.0]
    sim = TencentCISimulator(
        bucket=BUCKET,
        credentials={SECRET_ID: SECRET_KEY},
        tokens={SECRET_ID: TOKEN},
        clock=lambda: time.time() + shift[0],
    )
    async with serving(sim) as url:
        yield Cloud(sim, url, shift)


def _config(url: str, *, job_api: str = "ai_jobs", batch: int = 1, extra: str = "") -> str:
    return f"""
{FAST_POLLING}accounts:
  tc:
    provider: tencent_ci
    bucket: {BUCKET}
    region: ap-beijing
    endpoint: "{url}"
    job_api: {job_api}
    batch_size: {batch}
    auth: {{secret_id_env: T_ID, secret_key_env: T_KEY, token_env: T_TOKEN}}
{extra}"""


async def _exporter(aiohttp_server: ServerFactory, tmp_path: Path, text: str) -> TestServer:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    environ = {"T_ID": SECRET_ID, "T_KEY": SECRET_KEY, "T_TOKEN": TOKEN}
    return await aiohttp_server(create_app(load_settings(path), environ=environ))


async def _get(server: TestServer, path: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(server.make_url(path)) as r:
        assert r.status == 200
        return await r.read()


def _state(text: str, job: str, state: str) -> bool:
    return value(text, "cloudjob_job_state", job_id=job, state=state) == 1


async def test_a_job_walks_submitted_running_success_and_metrics_follow(
    cloud: Cloud, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    cloud.sim.add_job("a-happy", HAPPY, tag="Translation")
    cloud.sim.add_job("a-failing", FAILED, tag="SpeechRecognition")
    jobs = "jobs:\n  - {account: tc, id: a-happy}\n  - {account: tc, id: a-failing}\n"
    server = await _exporter(aiohttp_server, tmp_path, _config(cloud.url) + jobs)
    text = await scrape_until(server, lambda t: _state(t, "a-happy", "Submitted"))
    assert value(text, "cloudjob_job_phase", job_id="a-happy", phase="pending") == 1
    assert (
        value(
            text,
            "cloudjob_job_info",
            job_id="a-happy",
            job_type="Translation",
            queue_id=cloud.sim.detail("a-happy")["QueueId"],
        )
        == 1
    )
    cloud.advance(30)
    text = await scrape_until(server, lambda t: _state(t, "a-happy", "Running"))
    assert value(text, "cloudjob_job_started_timestamp_seconds", job_id="a-happy") is not None
    cloud.advance(130)
    text = await scrape_until(
        server, lambda t: _state(t, "a-happy", "Success") and _state(t, "a-failing", "Failed")
    )
    promtool_check_metrics(text.encode())
    assert value(text, "cloudjob_job_phase", job_id="a-happy", phase="succeeded") == 1
    assert value(text, "cloudjob_job_finished_timestamp_seconds", job_id="a-happy") is not None
    assert value(text, "cloudjob_job_failures_total", job_id="a-failing") == 1
    assert (
        value(text, "cloudjob_job_failure_info", job_id="a-failing", code="AudioRecognitionFailed")
        == 1
    )
    assert (
        value(
            text,
            "cloudjob_completed_job_duration_seconds_count",
            provider="tencent_ci",
            job_type="Translation",
            phase="succeeded",
        )
        == 1
    )
    jobs_doc = orjson.loads(await _get(server, "/api/v1/jobs?phase=failed"))["jobs"]
    assert jobs_doc[0]["failure"]["code"] == "AudioRecognitionFailed"
    assert "no valid speech" in jobs_doc[0]["failure"]["reason"]
    # Temporary credentials were used throughout; nothing secret is shown anywhere.
    for path in ("/metrics", "/api/v1/jobs", "/"):
        body = await _get(server, path)
        for secret in (SECRET_KEY, TOKEN):
            assert secret.encode() not in body


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (SEED_SAMPLE_BODY, 200, "parse"),
        (xml_bomb_body("a-bad"), 200, "parse"),
        (oversized_body("a-bad"), 200, "parse"),
        (None, 404, "not_found"),
    ],
    ids=["malformed-seed-sample", "xml-bomb", "oversized", "non-exist"],
)
async def test_a_hostile_or_missing_answer_fails_only_its_own_job(
    cloud: Cloud,
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    body: bytes | None,
    status: int,
    reason: str,
) -> None:
    cloud.sim.add_job("a-good", STUCK)
    cloud.sim.add_job("a-bad", STUCK)
    if body is None:
        cloud.sim.remove_job("a-bad")  # the cloud answers NonExistJobIds for it
    else:
        cloud.sim.set_override("a-bad", body=body, status=status)
    jobs = "jobs:\n  - {account: tc, id: a-good}\n  - {account: tc, id: a-bad}\n"
    server = await _exporter(aiohttp_server, tmp_path, _config(cloud.url) + jobs)
    text = await scrape_until(
        server,
        lambda t: (
            value(t, "cloudjob_job_last_poll_success", job_id="a-bad") == 0
            and value(t, "cloudjob_job_last_poll_success", job_id="a-good") == 1
        ),
    )
    assert value(text, "cloudjob_poll_errors_total", reason=reason) is not None
    before = value(text, "cloudjob_job_last_poll_timestamp_seconds", job_id="a-good")
    assert before is not None
    await scrape_until(
        server,
        lambda t: (
            (value(t, "cloudjob_job_last_poll_timestamp_seconds", job_id="a-good") or 0) > before
        ),
    )
    doc = orjson.loads(await _get(server, "/api/v1/jobs"))["jobs"]
    bad = next(j for j in doc if j["job_id"] == "a-bad")
    assert bad["poll"]["error"]["reason"] == reason
    if body is None:
        assert "NonExistJobIds" in bad["poll"]["error"]["message"]


async def test_media_jobs_are_polled_in_batches_with_missing_ids_reported(
    cloud: Cloud, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    ids = [f"a-batch-{n}" for n in range(5)]
    for job_id in ids[:4]:
        cloud.sim.add_job(job_id, STUCK)
    jobs = "jobs:\n" + "".join(f"  - {{account: tc, id: {job_id}}}\n" for job_id in ids)
    server = await _exporter(
        aiohttp_server, tmp_path, _config(cloud.url, job_api="media_jobs", batch=5) + jobs
    )
    text = await scrape_until(
        server,
        lambda t: all(
            value(t, "cloudjob_job_last_poll_success", job_id=job_id) is not None for job_id in ids
        ),
    )
    for job_id in ids[:4]:
        assert value(text, "cloudjob_job_last_poll_success", job_id=job_id) == 1
    assert value(text, "cloudjob_job_last_poll_success", job_id="a-batch-4") == 0

    async def polls_total() -> int:
        jobs_doc = orjson.loads(await _get(server, "/api/v1/jobs"))["jobs"]
        return sum(job["poll"]["polls_total"] for job in jobs_doc)

    async def several_rounds() -> bool:
        return await polls_total() >= 25

    await eventually_async(several_rounds, what="several rounds of polls")
    text = (await _get(server, "/metrics")).decode()
    requests = value(text, "cloudjob_api_requests_total", account="tc", status="200")
    polls = await polls_total()
    assert requests is not None
    assert polls >= 25
    # Schedules drift apart with jitter, yet jobs keep sharing requests: 3+ ids per request.
    assert polls >= 3 * requests, (polls, requests)


async def test_discovery_finds_unlisted_jobs_across_pages(
    cloud: Cloud, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    for n in range(5):
        cloud.sim.add_job(f"a-found-{n}", STUCK, queue_id="q-discover")
    cloud.sim.add_job("a-other-queue", STUCK, queue_id="q-other")
    extra = (
        "    discover: {queue_id: q-discover, tag: Translation, lookback: 1h, interval: 0.5s,"
        " page_size: 2,"
        " labels: {source: discovery}}\n"
    )
    server = await _exporter(aiohttp_server, tmp_path, _config(cloud.url, extra=extra))
    text = await scrape_until(
        server,
        lambda t: all(value(t, "cloudjob_job_info", job_id=f"a-found-{n}") == 1 for n in range(5)),
    )
    assert value(text, "cloudjob_job_info", job_id="a-found-0", source="discovery") == 1
    assert value(text, "cloudjob_job_info", job_id="a-other-queue") is None
    assert value(text, "cloudjob_discovery_last_success", account="tc") == 1
    assert value(text, "cloudjob_discovered_jobs_total", account="tc") == 5
    # Three pages of two: at least three list requests per run.
    assert (value(text, "cloudjob_api_requests_total", account="tc", status="200") or 0) >= 3
    # A job created later is found by the next run.
    cloud.sim.add_job("a-found-late", STUCK, queue_id="q-discover")
    await scrape_until(server, lambda t: value(t, "cloudjob_job_info", job_id="a-found-late") == 1)


async def test_a_refused_list_call_is_recorded_as_a_failed_discovery_run(
    cloud: Cloud, aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    cloud.sim.add_job("a-found-0", STUCK, queue_id="q-discover")
    # Discovery signs with a key the simulator does not know: every list call is refused.
    extra = "    discover: {queue_id: q-discover, tag: Translation, lookback: 1h, interval: 0.3s}\n"
    path = tmp_path / "config.yaml"
    path.write_text(_config(cloud.url, extra=extra))
    environ = {"T_ID": SECRET_ID, "T_KEY": "wrong-key", "T_TOKEN": TOKEN}
    server = await aiohttp_server(create_app(load_settings(path), environ=environ))
    text = await scrape_until(
        server, lambda t: value(t, "cloudjob_discovery_last_success", account="tc") == 0
    )
    assert value(text, "cloudjob_api_requests_total", account="tc", status="403") is not None
    assert value(text, "cloudjob_job_info", job_id="a-found-0") is None
