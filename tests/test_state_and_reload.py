"""Durable state across SIGKILL and restarts, and hot reload of the config and credentials."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.simulator.metastudio import MetaStudioSimulator
from exporter.simulator.scripts import HAPPY_PATH
from tests.support import (
    ExporterProcess,
    ServerFactory,
    eventually_async,
    eventually_off_loop,
    http,
    scrape,
    scrape_until,
    value_or_fail,
)
from tests.test_job_api import AUTH, PROJECT, call, config_text, exporter, polled

LAST_POLL = "cloudjob_job_last_poll_timestamp_seconds"


async def test_a_registration_survives_sigkill_right_after_it_returned(
    five_job_cloud: tuple[MetaStudioSimulator, str],
    run_exporter: Callable[[str], ExporterProcess],
    tmp_path: Path,
) -> None:
    text = config_text(five_job_cloud[1], extra=f"state_file: {tmp_path / 'state.db'}\n")
    first = await asyncio.to_thread(run_exporter, text)
    job = {"account": "hw", "id": "job-3", "labels": {"team": "voice"}}
    status, _ = await asyncio.to_thread(http, "POST", first.url + "/api/v1/jobs", job, AUTH)
    assert status == 201
    first.kill()  # no chance to flush anything after the answer
    second = await asyncio.to_thread(run_exporter, text)
    status, doc = await asyncio.to_thread(http, "GET", second.url + "/api/v1/jobs/hw/job-3")
    assert status == 200
    assert (doc["source"], doc["labels"]) == ("api", {"team": "voice"})


async def test_a_restart_shows_the_last_state_and_neither_forgets_nor_recounts_a_failure(
    five_job_cloud: tuple[MetaStudioSimulator, str],
    run_exporter: Callable[[str], ExporterProcess],
    tmp_path: Path,
) -> None:
    sim, url = five_job_cloud
    sim.set_override("job-0", state="FAILED")
    text = config_text(url, extra=f"state_file: {tmp_path / 'state.db'}\n")
    first = await asyncio.to_thread(run_exporter, text)

    def failed_once(instance: ExporterProcess) -> Callable[[], bool]:
        def check() -> bool:
            status, doc = http("GET", instance.url + "/api/v1/jobs/hw/job-0")
            return status == 200 and doc.get("state") == "FAILED" and doc["failures_total"] == 1

        return check

    await eventually_off_loop(failed_once(first))

    def failure_on_disk() -> bool:
        uri = f"file:{tmp_path / 'state.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            query = "SELECT failures FROM jobs WHERE account = 'hw' AND job_id = 'job-0'"
            return db.execute(query).fetchone() == (1,)

    # The periodic write has the failure; nothing after the SIGKILL will write it.
    await eventually_async(
        lambda: asyncio.to_thread(failure_on_disk),
        ignoring=(sqlite3.Error,),
        what="the failure in the state file",
    )
    first.kill()
    # While the exporter is down the cloud stops answering: whatever the restarted exporter
    # knows about job-0's state, it knows from the state file.
    sim.set_override("job-0", status=500, body={"error_code": "X", "error_msg": "down"})
    second = await asyncio.to_thread(run_exporter, text)
    _, doc = await asyncio.to_thread(http, "GET", second.url + "/api/v1/jobs/hw/job-0")
    assert doc["state"] == "FAILED"
    assert doc["failures_total"] == 1
    sim.set_override("job-0", state="FAILED")

    def answered_again() -> bool:
        poll = http("GET", second.url + "/api/v1/jobs/hw/job-0")[1]["poll"]
        return bool(poll["last_success"])

    await eventually_off_loop(answered_again)
    _, doc = await asyncio.to_thread(http, "GET", second.url + "/api/v1/jobs/hw/job-0")
    assert doc["failures_total"] == 1  # still failed: not a second failure
    _, body = await asyncio.to_thread(http, "GET", second.url + "/metrics")
    assert (
        'cloudjob_job_failures_total{account="hw",job_id="job-0",provider="huawei_metastudio"} 1.0'
        in body
    )


async def test_reload_starts_new_jobs_stops_removed_ones_and_keeps_a_broken_config_out(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    url = five_job_cloud[1]
    server = await exporter(aiohttp_server, tmp_path, config_text(url))
    path = tmp_path / "config.yaml"
    await scrape_until(server, polled("job-0"))
    path.write_text(config_text(url).replace("id: job-0", "id: job-2"))
    status, doc = await call(server, "POST", "/-/reload", **AUTH)
    assert (status, doc) == (200, {"status": "reloaded"})
    text = await scrape_until(server, polled("job-2"))
    assert 'job_id="job-0"' not in text
    assert "cloudjob_config_last_reload_successful 1.0" in text
    good_at = value_or_fail(text, "cloudjob_config_last_reload_success_timestamp_seconds")
    path.write_text("accounts: [this is not right\n")
    status, doc = await call(server, "POST", "/-/reload", **AUTH)
    assert status == 400
    assert "invalid YAML" in doc["error"]
    text = await scrape(server)
    assert "cloudjob_config_last_reload_successful 0.0" in text
    assert value_or_fail(text, "cloudjob_config_last_reload_success_timestamp_seconds") == good_at
    job_2 = {"account": "hw", "job_id": "job-2"}
    before = value_or_fail(text, LAST_POLL, **job_2)
    await scrape_until(server, lambda t: value_or_fail(t, LAST_POLL, **job_2) > before)


async def test_sighup_and_file_changes_reload_and_a_rotated_token_file_is_picked_up(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    text = config_text(five_job_cloud[1]).replace(
        "api: {token_env: T_API}", f"api: {{token_file: {token_file}}}"
    )
    text += "reload_check_interval: 0.2\n"
    server = await exporter(aiohttp_server, tmp_path, text)
    job = {"account": "hw", "id": "job-1"}
    assert (await call(server, "POST", "/api/v1/jobs", job, Authorization="Bearer first-token"))[
        0
    ] == 201
    token_file.write_text("second-token\n")
    os.utime(token_file, (time.time() + 5, time.time() + 5))

    async def second_token_accepted() -> bool:
        answer = await call(
            server, "POST", "/api/v1/jobs", job, Authorization="Bearer second-token"
        )
        return answer[0] == 200

    await eventually_async(second_token_accepted, what="the rotated token is picked up")
    assert (await call(server, "POST", "/api/v1/jobs", job, Authorization="Bearer first-token"))[
        0
    ] == 403
    # The config file itself changing reloads too.
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("id: job-0", "id: job-4"))
    os.utime(path, (time.time() + 10, time.time() + 10))
    await scrape_until(server, polled("job-4"))
    # And SIGHUP, as for Prometheus.
    path.write_text(
        text.replace("id: job-0", "id: job-3").replace(
            "reload_check_interval: 0.2", "reload_check_interval: 0"
        )
    )
    os.kill(os.getpid(), signal.SIGHUP)
    await scrape_until(server, polled("job-3"))


async def test_sigterm_stops_cancelling_in_flight_polls_and_flushing_state(
    run_exporter: Callable[[str], ExporterProcess], tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    from aiohttp import web

    sim = MetaStudioSimulator(project_id=PROJECT, credentials={"ak": "sk"})
    for name in ("job-0", "job-hang"):
        sim.add_job(name, HAPPY_PATH)
    hanging = asyncio.Event()

    @web.middleware
    async def hang(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.match_info.get("job_id") == "job-hang":
            hanging.set()
            await asyncio.sleep(60)  # in flight when SIGTERM arrives
        return await handler(request)

    app = sim.app()
    app.middlewares.append(hang)
    cloud = await aiohttp_server(app)
    # The extra job goes under jobs:, request_timeout at the top level.
    text = config_text(str(cloud.make_url("/")), extra="  - {account: hw, id: job-hang}\n")
    text += f"state_file: {tmp_path / 'state.db'}\nrequest_timeout: 120\n"
    first = await asyncio.to_thread(run_exporter, text)
    await asyncio.wait_for(hanging.wait(), 10)

    def polls() -> int:
        _, doc = http("GET", first.url + "/api/v1/jobs/hw/job-0")
        return int(doc["poll"]["polls_total"])

    await eventually_off_loop(lambda: polls() >= 3)
    before = await asyncio.to_thread(polls)
    # The hanging request would hold a stop that waited for it for 60 s; the timeout on the
    # wait is far below that, so exiting at all proves the in-flight poll was cancelled.
    assert await asyncio.to_thread(first.stop, 15) == 0
    assert "Traceback" not in first.log_text()
    # The state written at shutdown holds at least the polls seen just before SIGTERM: the
    # 2-second periodic write alone would be several polls behind.
    await cloud.close()
    second = await asyncio.to_thread(run_exporter, text)
    _, doc = await asyncio.to_thread(http, "GET", second.url + "/api/v1/jobs/hw/job-0")
    assert doc["poll"]["polls_total"] >= before
