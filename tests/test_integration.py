"""The whole exporter against the simulated cloud over loopback: real HTTP both ways."""

from __future__ import annotations

import gzip
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import load_settings
from exporter.logs import JsonFormatter, TextFormatter
from exporter.simulator.metastudio import MetaStudioSimulator
from exporter.simulator.scripts import AUDIT_LOOP, HAPPY_PATH
from tests.conftest import promtool_check_metrics
from tests.support import FAST_POLLING, ServerFactory, scrape_until, serving, value

PROJECT = "0123456789abcdef0123456789abcdef"
# Distinctive values: if any of them shows up in an output, a secret leaked.
AK = "AKLEAKCHECK7Q2W9E4R"
SK = "SK-leak-check-5f1e0c3a9b7d"
WRONG_SK = "SK-wrong-secret-8a6c4e2b0d"


@dataclass
class Cloud:
    sim: MetaStudioSimulator
    url: str


@pytest.fixture
async def cloud() -> AsyncIterator[Cloud]:
    sim = MetaStudioSimulator(project_id=PROJECT, credentials={AK: SK}, speed=1.0)
    for job_id in ("ok-1", "ok-2", "flaky"):
        sim.add_job(job_id, HAPPY_PATH)
    sim.add_job("looping", AUDIT_LOOP)
    async with serving(sim) as url:
        yield Cloud(sim, url)


def _config(url: str) -> str:
    return f"""
{FAST_POLLING}accounts:
  hw:
    provider: huawei_metastudio
    region: cn-north-4
    project_id: "{PROJECT}"
    endpoint: "{url}"
    auth: {{ak_env: T_AK, sk_env: T_SK}}
  hw-wrong-key:
    provider: huawei_metastudio
    region: cn-north-4
    project_id: "{PROJECT}"
    endpoint: "{url}"
    auth: {{ak_env: T_AK, sk_env: T_WRONG_SK}}
jobs:
  - {{account: hw, id: ok-1, labels: {{team: voice}}}}
  - {{account: hw, id: ok-2}}
  - {{account: hw, id: flaky}}
  - {{account: hw, id: no-such-job}}
  - {{account: hw-wrong-key, id: ok-1}}
"""


@pytest.fixture
async def exporter(
    cloud: Cloud, aiohttp_server: ServerFactory, tmp_path: object, caplog: pytest.LogCaptureFixture
) -> TestServer:
    from pathlib import Path

    path = Path(str(tmp_path)) / "config.yaml"
    path.write_text(_config(cloud.url))
    settings = load_settings(path)
    environ = {"T_AK": AK, "T_SK": SK, "T_WRONG_SK": WRONG_SK}
    caplog.set_level(logging.DEBUG)
    return await aiohttp_server(create_app(settings, environ=environ))


async def _get(
    server: TestServer, path: str, *, raw: bool = False, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession(auto_decompress=not raw) as session,
        session.get(server.make_url(path), headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def _polled(text: str, account: str, job_id: str) -> bool:
    return value(text, "cloudjob_job_last_poll_success", account=account, job_id=job_id) is not None


ALL = [
    ("hw", "ok-1"),
    ("hw", "ok-2"),
    ("hw", "flaky"),
    ("hw", "no-such-job"),
    ("hw-wrong-key", "ok-1"),
]


async def test_jobs_are_polled_and_failing_ones_do_not_stop_the_others(
    exporter: TestServer, cloud: Cloud
) -> None:
    text = await scrape_until(exporter, lambda t: all(_polled(t, a, j) for a, j in ALL))
    promtool_check_metrics(text.encode())
    assert value(text, "cloudjob_job_last_poll_success", account="hw", job_id="ok-1") == 1
    assert value(text, "cloudjob_job_state", job_id="ok-1", account="hw", state="CREATING") == 1
    assert value(text, "cloudjob_job_phase", job_id="ok-1", account="hw", phase="pending") == 1
    assert (
        value(text, "cloudjob_job_info", job_id="ok-1", team="voice", job_type="VOICE_ASSESS") == 1
    )
    assert value(text, "cloudjob_job_last_poll_success", account="hw", job_id="no-such-job") == 0
    assert value(text, "cloudjob_job_last_poll_success", account="hw-wrong-key", job_id="ok-1") == 0
    assert value(text, "cloudjob_poll_errors_total", account="hw", reason="not_found") is not None
    assert value(text, "cloudjob_poll_errors_total", account="hw-wrong-key", reason="auth")
    assert value(text, "cloudjob_api_requests_total", account="hw-wrong-key", status="401")

    # A job starts failing (5xx): it shows 0 and keeps its last state, the others keep updating.
    cloud.sim.set_override("flaky", status=500, body={"error_code": "MSS.99", "error_msg": "boom"})
    text = await scrape_until(
        exporter,
        lambda t: value(t, "cloudjob_job_last_poll_success", account="hw", job_id="flaky") == 0,
    )
    assert value(text, "cloudjob_job_state", job_id="flaky", account="hw", state="CREATING") == 1
    before = value(text, "cloudjob_job_last_poll_timestamp_seconds", account="hw", job_id="ok-2")
    assert before is not None
    text = await scrape_until(
        exporter,
        lambda t: (
            (value(t, "cloudjob_job_last_poll_timestamp_seconds", account="hw", job_id="ok-2") or 0)
            > before
        ),
    )
    assert value(text, "cloudjob_job_last_poll_success", account="hw", job_id="ok-2") == 1
    _, _, body = await _get(exporter, "/api/v1/jobs")
    flaky = next(j for j in orjson.loads(body)["jobs"] if j["job_id"] == "flaky")
    assert flaky["poll"]["error"]["code"] == "MSS.99"
    assert "boom" in flaky["poll"]["error"]["message"]

    # ... and recovers when the cloud does.
    cloud.sim.clear_override("flaky")
    await scrape_until(
        exporter,
        lambda t: value(t, "cloudjob_job_last_poll_success", account="hw", job_id="flaky") == 1,
    )


async def test_state_changes_and_failures_show_up_as_the_cloud_moves(
    exporter: TestServer, cloud: Cloud
) -> None:
    cloud.sim.set_override("ok-1", state="AUDIT_FAILED")
    text = await scrape_until(
        exporter,
        lambda t: (
            value(t, "cloudjob_job_state", job_id="ok-1", account="hw", state="AUDIT_FAILED") == 1
        ),
    )
    assert value(text, "cloudjob_job_phase", job_id="ok-1", account="hw", phase="failed") == 1
    assert value(text, "cloudjob_job_failures_total", job_id="ok-1", account="hw") == 1
    assert value(text, "cloudjob_job_failure_info", job_id="ok-1", account="hw") == 1
    cloud.sim.set_override("ok-1", state="AUDITING")
    await scrape_until(
        exporter,
        lambda t: (
            value(t, "cloudjob_job_state", job_id="ok-1", account="hw", state="AUDITING") == 1
        ),
    )
    cloud.sim.set_override("ok-1", state="AUDIT_FAILED")
    text = await scrape_until(
        exporter,
        lambda t: value(t, "cloudjob_job_failures_total", job_id="ok-1", account="hw") == 2,
    )
    assert value(text, "cloudjob_job_failure_info", job_id="ok-1", account="hw") == 1

    cloud.sim.set_override("ok-2", state="SUCCEED")
    text = await scrape_until(
        exporter,
        lambda t: (
            value(t, "cloudjob_job_assessment_actual", job_id="ok-2", metric="snr") is not None
        ),
    )
    for metric in ("speed", "sound", "snr", "reverb", "dnsmos_ovrl", "dnsmos_bak"):
        assert value(text, "cloudjob_job_assessment_status", job_id="ok-2", metric=metric) in (
            -1,
            0,
            1,
        )
    _, _, body = await _get(exporter, "/api/v1/jobs?account=hw&phase=succeeded")
    jobs = orjson.loads(body)["jobs"]
    assert [j["job_id"] for j in jobs] == ["ok-2"]
    snr = jobs[0]["assessment"]["metrics"]["snr"]
    assert snr["suggestion"]
    assert snr["suggestion_en"]
    failed = orjson.loads((await _get(exporter, "/api/v1/jobs?phase=failed"))[2])["jobs"]
    assert failed[0]["failure"]["reason"]  # the reason text lives here, never in a label


async def test_http_surface_negotiates_formats_and_leaks_no_secret(
    exporter: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    await scrape_until(exporter, lambda t: all(_polled(t, a, j) for a, j in ALL))
    status, headers, body = await _get(
        exporter, "/metrics", raw=True, **{"Accept-Encoding": "gzip"}
    )
    assert headers["Content-Encoding"] == "gzip"
    plain = gzip.decompress(body)
    assert b"cloudjob_job_state{" in plain
    # The poller and the scrape's own handler at least: the soak's leak check reads this.
    tasks = value(plain.decode(), "cloudjob_exporter_asyncio_tasks")
    assert tasks is not None
    assert tasks >= 2
    status, headers, body = await _get(
        exporter,
        "/metrics",
        Accept="application/openmetrics-text; version=1.0.0",
        **{"Accept-Encoding": "identity"},
    )
    assert "Content-Encoding" not in headers
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    status, headers, streamed = await _get(exporter, "/metrics", **{"Accept-Encoding": "identity"})
    assert status == 200
    assert "Content-Encoding" not in headers
    assert streamed.startswith(b"# HELP cloudjob_job_info ")
    assert streamed.count(b"cloudjob_job_state{") == plain.count(b"cloudjob_job_state{")
    async with (
        aiohttp.ClientSession() as session,
        session.head(exporter.make_url("/metrics")) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
    async with (  # the same headers as a GET without gzip would have
        aiohttp.ClientSession() as session,
        session.head(
            exporter.make_url("/metrics"), headers={"Accept-Encoding": "identity"}
        ) as response,
    ):
        assert response.status == 200
        assert "Content-Encoding" not in response.headers
    status, headers, page = await _get(exporter, "/")
    assert status == 200
    assert b"hw-wrong-key" in page
    assert b'href="metrics"' in page
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert (await _get(exporter, "/healthz"))[0] == 200
    assert (await _get(exporter, "/readyz"))[0] == 200
    assert (await _get(exporter, "/api/v1/jobs?phase=bogus"))[0] == 400
    outputs = [plain, page, (await _get(exporter, "/api/v1/jobs"))[2]]
    records = caplog.records
    assert any(r.getMessage() == "poll_failed" for r in records)
    outputs += [TextFormatter().format(r).encode() for r in records]
    outputs += [JsonFormatter().format(r).encode() for r in records]
    for output in outputs:
        for secret in (SK, WRONG_SK):
            assert secret.encode() not in output
        # The access key id is not secret to the cloud, but we keep it out of our outputs too.
        assert AK.encode() not in output


async def test_readiness_answers_once_the_poller_runs_even_with_no_jobs() -> None:
    app = create_app(load_settings(None))
    server = TestServer(app)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session, session.get(server.make_url("/readyz")) as r:
            assert r.status == 200
    finally:
        await server.close()
