"""Runtime job registration: the HTTP API's contract, auth, limits, and what /metrics shows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import load_settings
from exporter.simulator.metastudio import MetaStudioSimulator
from tests.support import ServerFactory, scrape, scrape_until

PROJECT = "0123456789abcdef0123456789abcdef"
TOKEN = "api-token-7f3e9c1b"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def config_text(url: str, *, token: bool = True, extra: str = "") -> str:
    return (
        "poll_interval: 0.3s\n"
        + ("api: {token_env: T_API}\n" if token else "")
        + f"accounts:\n  hw:\n    provider: huawei_metastudio\n    region: r\n"
        f"    project_id: {PROJECT}\n    endpoint: {url}\n"
        "jobs:\n  - {account: hw, id: job-0}\n" + extra
    )


async def exporter(
    aiohttp_server: ServerFactory, tmp_path: Path, text: str, **kwargs: Any
) -> TestServer:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    environ = {"CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk", "T_API": TOKEN}
    return await aiohttp_server(
        create_app(
            load_settings(path),
            environ=environ,
            loader=lambda: load_settings(path),
            config_path=path,
            **kwargs,
        )
    )


async def call(
    server: TestServer, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else (None if body is None else orjson.dumps(body))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.make_url(path), data=data, headers=headers) as response,
    ):
        raw = await response.read()
        try:
            return response.status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return response.status, raw.decode()


def polled(job_id: str) -> Callable[[str], bool]:
    return lambda text: f'cloudjob_job_last_poll_success{{account="hw",job_id="{job_id}"' in text


async def test_register_is_polled_without_waiting_a_poll_interval_and_delete_removes_it(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    # With an hour between polls, only the first poll registration schedules can show up.
    text = config_text(five_job_cloud[1]).replace("poll_interval: 0.3s", "poll_interval: 1h")
    server = await exporter(aiohttp_server, tmp_path, text)
    job = {"account": "hw", "id": "job-1", "labels": {"team": "voice"}, "poll_interval": "1h"}
    status, doc = await call(server, "POST", "/api/v1/jobs", job, **AUTH)
    assert status == 201
    assert (doc["job_id"], doc["source"], doc["labels"]) == ("job-1", "api", {"team": "voice"})
    text = await scrape_until(server, polled("job-1"))
    assert 'cloudjob_job_info{account="hw",job_id="job-1",job_type="VOICE_ASSESS"' in text
    assert 'cloudjob_jobs_tracked{source="api"} 1.0' in text
    assert 'cloudjob_jobs_tracked{source="config"} 1.0' in text
    # The same registration again is fine; another one for the same id is a conflict.
    assert (await call(server, "POST", "/api/v1/jobs", job, **AUTH))[0] == 200
    status, doc = await call(
        server, "POST", "/api/v1/jobs", {**job, "labels": {"team": "other"}}, **AUTH
    )
    assert status == 409
    assert "different labels" in doc["error"]
    status, doc = await call(server, "GET", "/api/v1/jobs/hw/job-1")
    assert status == 200
    assert doc["state"] == "CREATING"
    assert (await call(server, "DELETE", "/api/v1/jobs/hw/job-1", **AUTH))[0] == 204
    text = await scrape(server)
    assert 'job_id="job-1"' not in text
    assert (await call(server, "GET", "/api/v1/jobs/hw/job-1"))[0] == 404
    assert (await call(server, "DELETE", "/api/v1/jobs/hw/job-1", **AUTH))[0] == 404
    status, doc = await call(server, "DELETE", "/api/v1/jobs/hw/job-0", **AUTH)
    assert status == 409
    assert "config file" in doc["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"account": "nope", "id": "x"}, "account: unknown account 'nope'"),
        ({"account": "hw"}, "id: required key is missing"),
        ({"account": "hw", "id": "x", "colour": "red"}, "colour: unknown key"),
        ({"account": "hw", "id": "x", "labels": {"job_id": "y"}}, "set by the exporter"),
        ({"account": "hw", "id": "x", "poll_interval": "soon"}, "not a duration"),
        (b"{not json", "body is not JSON"),
        ([1, 2], "body must be a JSON object"),
    ],
)
async def test_bad_registrations_get_400_with_a_clear_message(
    five_job_cloud: tuple[MetaStudioSimulator, str],
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    body: Any,
    message: str,
) -> None:
    server = await exporter(aiohttp_server, tmp_path, config_text(five_job_cloud[1]))
    status, doc = await call(server, "POST", "/api/v1/jobs", body, **AUTH)
    assert status == 400
    assert message in doc["error"]
    assert 'cloudjob_jobs_tracked{source="api"} 0.0' in await scrape(server)


async def test_writes_without_the_right_token_change_nothing(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    server = await exporter(aiohttp_server, tmp_path, config_text(five_job_cloud[1]))
    job = {"account": "hw", "id": "job-1"}
    status, doc = await call(server, "POST", "/api/v1/jobs", job)
    assert status == 401
    assert doc["error"] == "missing bearer token"
    for header in ("Bearer wrong", "Basic " + TOKEN, f"Bearer {TOKEN}x"):
        status, _ = await call(server, "POST", "/api/v1/jobs", job, Authorization=header)
        assert status in (401, 403), header
    assert (await call(server, "DELETE", "/api/v1/jobs/hw/job-0", Authorization="Bearer no"))[
        0
    ] == 403
    assert (await call(server, "POST", "/-/reload"))[0] == 401
    status, doc = await call(server, "GET", "/api/v1/jobs")
    assert [j["job_id"] for j in doc["jobs"]] == ["job-0"]


async def test_without_a_configured_token_writes_are_refused_and_say_why(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    server = await exporter(aiohttp_server, tmp_path, config_text(five_job_cloud[1], token=False))
    status, doc = await call(
        server, "POST", "/api/v1/jobs", {"account": "hw", "id": "job-1"}, **AUTH
    )
    assert status == 403
    assert "api.token_env" in doc["error"]


async def test_a_body_over_64_kib_is_refused(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    server = await exporter(aiohttp_server, tmp_path, config_text(five_job_cloud[1]))
    big = {"account": "hw", "id": "job-1", "labels": {"x": "y" * 70_000}}
    status, _ = await call(server, "POST", "/api/v1/jobs", big, **AUTH)
    assert status == 413


async def test_registrations_past_max_jobs_get_429(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    server = await exporter(
        aiohttp_server, tmp_path, config_text(five_job_cloud[1], extra="max_jobs: 2\n")
    )
    assert (await call(server, "POST", "/api/v1/jobs", {"account": "hw", "id": "job-1"}, **AUTH))[
        0
    ] == 201
    status, doc = await call(
        server, "POST", "/api/v1/jobs", {"account": "hw", "id": "job-2"}, **AUTH
    )
    assert status == 429
    assert "max_jobs (2)" in doc["error"]
