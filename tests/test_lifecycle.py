"""The job lifecycle as a user meets it: a forgotten job stays forgotten, its tombstone ends,
and a removed account takes everything of its own along. Real HTTP over loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import JobConfig, Settings, load_settings
from exporter.lifecycle import Lifecycle
from exporter.runtime import RUNTIME
from exporter.simulator.metastudio import MetaStudioSimulator
from exporter.simulator.tencent_ci import TencentCISimulator
from exporter.simulator.tencent_scripts import STUCK
from exporter.store import JobKey, Store
from tests.conftest import snapshot
from tests.support import (
    ExporterProcess,
    ServerFactory,
    eventually_async,
    eventually_off_loop,
    http,
    scrape,
    scrape_until,
    serving,
    value,
    value_or_fail,
)
from tests.test_job_api import AUTH, PROJECT, call, exporter

HW_VOICE = {"account": "hw", "job_type": "VOICE_ASSESS", "provider": "huawei_metastudio"}
JOB_0 = 'cloudjob_job_info{account="hw",job_id="job-0"'


def failures(text: str) -> float | None:
    return value(text, "cloudjob_failures_total", code="MSS.10030004", **HW_VOICE)


def durations(text: str) -> float | None:
    return value(text, "cloudjob_completed_job_duration_seconds_count", phase="failed", **HW_VOICE)


def forgetting_config(url: str, jobs: str = "job-0", extra: str = "") -> str:
    listed = "".join(f"  - {{account: hw, id: {job}}}\n" for job in jobs.split())
    return (
        "poll_interval: 0.2s\nterminal_poll_interval: 0.2s\nterminal_retention: 1s\n"
        f"api: {{token_env: T_API}}\naccounts:\n  hw:\n    provider: huawei_metastudio\n"
        f"    region: r\n    project_id: {PROJECT}\n    endpoint: {url}\n"
        f"jobs:\n{listed}{extra}"
    )


async def forgotten_after_failing(server: TestServer) -> str:
    """Wait for job-0 to be seen failed, then forgotten; returns the scrape that shows both."""
    await scrape_until(server, lambda t: failures(t) == 1 and JOB_0 in t)
    return await scrape_until(server, lambda t: JOB_0 not in t)


async def polls_of(get: Callable[[str], Awaitable[tuple[int, Any]]], job_id: str) -> int:
    status, doc = await get(f"/api/v1/jobs/hw/{job_id}")
    assert status == 200, doc
    return int(doc["poll"]["polls_total"])


async def rounds_pass(
    get: Callable[[str], Awaitable[tuple[int, Any]]], rounds: int, witness: str = "job-1"
) -> None:
    """Until `witness`, polled every interval, has been polled `rounds` more times: time in
    which a job that came back would have been polled too. `get` GETs an API path."""
    until = await polls_of(get, witness) + rounds

    async def polled_enough() -> bool:
        return await polls_of(get, witness) >= until

    await eventually_async(polled_enough, what=f"{rounds} polls of {witness}")


@pytest.fixture
async def failing_cloud() -> AsyncIterator[tuple[MetaStudioSimulator, str]]:
    sim = MetaStudioSimulator(project_id=PROJECT, credentials={"ak": "sk"})
    from exporter.simulator.scripts import HAPPY_PATH

    for n in range(3):
        sim.add_job(f"job-{n}", HAPPY_PATH)
    sim.set_override("job-0", state="FAILED")
    async with serving(sim) as url:
        yield sim, url


@pytest.fixture
def forgetting_exporter(
    failing_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> Callable[[str], Awaitable[TestServer]]:
    """Starts an in-process exporter on `failing_cloud` whose config names `jobs` and forgets a
    finished job after a second."""

    async def start(jobs: str) -> TestServer:
        return await exporter(aiohttp_server, tmp_path, forgetting_config(failing_cloud[1], jobs))

    return start


async def test_a_forgotten_config_job_is_not_brought_back_by_a_reload_nor_counted_again(
    forgetting_exporter: Callable[[str], Awaitable[TestServer]],
) -> None:
    server = await forgetting_exporter("job-0 job-1")
    text = await forgotten_after_failing(server)
    counted = (failures(text), durations(text))
    assert counted == (1, 1)
    ok, problems = await server.app[RUNTIME].reload("test")
    assert (ok, problems) == (True, [])
    await rounds_pass(lambda path: call(server, "GET", path), 5)
    text = await scrape(server)
    assert JOB_0 not in text
    assert (failures(text), durations(text)) == counted
    assert 'cloudjob_forgotten_jobs{account="hw",provider="huawei_metastudio"} 1.0' in text


async def test_a_tombstone_lives_while_the_config_lists_the_job_then_expires_everywhere(
    failing_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    shift = [0.0]
    database = tmp_path / "state.db"
    path = tmp_path / "config.yaml"
    url = failing_cloud[1]
    server = await exporter(
        aiohttp_server,
        tmp_path,
        forgetting_config(url, "job-0 job-1", f"state_file: {database}\n"),
        wall=lambda: time.time() + shift[0],
    )
    runtime = server.app[RUNTIME]
    await forgotten_after_failing(server)

    def on_disk() -> int:
        with sqlite3.connect(database) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            table = "tombstones" if "tombstones" in tables else "forgotten"
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608

    def in_memory(text: str) -> float | None:
        return value(text, "cloudjob_forgotten_jobs", account="hw")

    # Two days on, still listed: still forgotten, the tombstone kept.
    shift[0] += 2 * 86400
    assert (await runtime.reload("test"))[0]
    await runtime.persist()
    text = await scrape(server)
    assert JOB_0 not in text
    assert (in_memory(text), on_disk()) == (1, 1)
    # Taken out of the config, it is kept for discovery's lookback (24 h without discovery) ...
    path.write_text(forgetting_config(url, "job-1", f"state_file: {database}\n"))
    assert (await runtime.reload("test"))[0]
    shift[0] += 86400 - 60
    assert (await runtime.reload("test"))[0]
    await runtime.persist()
    assert (in_memory(await scrape(server)), on_disk()) == (1, 1)
    # ... and then pruned, in memory and on disk.
    shift[0] += 120
    assert (await runtime.reload("test"))[0]
    await runtime.persist()
    assert (in_memory(await scrape(server)), on_disk()) == (0, 0)


async def test_removing_an_account_removes_its_discovery_status_and_poll_error_series(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    sim = TencentCISimulator(bucket="b-1250000000", credentials={"AKIDX": "key"})
    sim.add_job("a-found", STUCK, queue_id="q")
    async with serving(sim) as url:
        tencent = (
            f"  tc:\n    provider: tencent_ci\n    bucket: b-1250000000\n    region: ap-beijing\n"
            f'    endpoint: "{url}"\n    auth: {{secret_id_env: T_ID, secret_key_env: T_KEY}}\n'
            "    discover: {queue_id: q, tag: Translation, lookback: 1h, interval: 0.3s}\n"
        )
        both = (
            "poll_interval: 0.2s\nmax_retries: 0\naccounts:\n"
            f"  hw:\n    provider: huawei_metastudio\n    region: r\n"
            f"    project_id: {PROJECT}\n    endpoint: {url}\n{tencent}"
            "jobs:\n  - {account: hw, id: not-a-huawei-job}\n"
        )
        path = tmp_path / "c.yaml"
        path.write_text(both)
        environ = {"CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk", "T_ID": "AKIDX", "T_KEY": "key"}
        server = await aiohttp_server(
            create_app(load_settings(path), environ=environ, loader=lambda: load_settings(path))
        )
        text = await scrape_until(
            server,
            lambda t: (
                'cloudjob_discovery_last_success{account="tc"' in t
                and 'cloudjob_job_info{account="tc",job_id="a-found"' in t
                and 'cloudjob_poll_errors_total{account="hw"' in t
            ),
        )
        path.write_text(both.replace(tencent, ""))
        assert (await server.app[RUNTIME].reload("test"))[0]
        # Four more polls of hw's job (0.2s apart) span two discovery intervals (0.3s): time in
        # which a discovery run left over from tc would have shown.
        hw_errors = value_or_fail(text, "cloudjob_poll_errors_total", account="hw")
        text = await scrape_until(
            server,
            lambda t: (value(t, "cloudjob_poll_errors_total", account="hw") or 0) >= hw_errors + 4,
            what="four more polls of hw's job",
        )
        assert 'account="tc"' not in text
        # The account that stays keeps its own.
        assert 'cloudjob_poll_errors_total{account="hw"' in text


RELOADED_AT = "cloudjob_config_last_reload_success_timestamp_seconds"


async def test_sighup_a_touched_config_and_a_restart_leave_a_forgotten_failure_counted_once(
    failing_cloud: tuple[MetaStudioSimulator, str],
    run_exporter: Callable[[str], ExporterProcess],
    tmp_path: Path,
) -> None:
    """The whole promise on the real exporter process: terminal_retention 3s, a job that
    failed for good listed in `jobs`."""
    text = (
        forgetting_config(failing_cloud[1], "job-0 job-1", f"state_file: {tmp_path / 's.db'}\n")
        .replace("terminal_retention: 1s", "terminal_retention: 3s")
        .replace("poll_interval: 0.2s\n", "poll_interval: 0.2s\nreload_check_interval: 0.3\n", 1)
    )
    first = await asyncio.to_thread(run_exporter, text)

    def scraped(instance: ExporterProcess) -> str:
        return str(http("GET", instance.url + "/metrics")[1])

    await eventually_off_loop(lambda: failures(scraped(first)) == 1 and JOB_0 in scraped(first))
    await eventually_off_loop(lambda: JOB_0 not in scraped(first), within=10)
    counted = (failures(scraped(first)), durations(scraped(first)))
    assert counted == (1, 1)

    async def unchanged_after(
        instance: ExporterProcess, reloaded: Callable[[], None] | None
    ) -> None:
        if reloaded is not None:
            at = value(scraped(instance), RELOADED_AT)
            reloaded()
            await eventually_off_loop(lambda: value(scraped(instance), RELOADED_AT) != at)
        await rounds_pass(lambda path: asyncio.to_thread(http, "GET", instance.url + path), 7)
        after = scraped(instance)
        assert JOB_0 not in after
        assert 'cloudjob_job_info{account="hw",job_id="job-1"' in after  # still polling
        assert (failures(after), durations(after)) == counted

    await unchanged_after(first, lambda: first.process.send_signal(signal.SIGHUP))
    config = first.config
    assert config is not None
    await unchanged_after(first, lambda: os.utime(config))
    first.stop()
    second = await asyncio.to_thread(run_exporter, text)
    await unchanged_after(second, None)


async def test_a_forgotten_registration_is_refused_until_deleted_then_starts_afresh(
    forgetting_exporter: Callable[[str], Awaitable[TestServer]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    server = await forgetting_exporter("job-1")
    job = {"account": "hw", "id": "job-0"}
    assert (await call(server, "POST", "/api/v1/jobs", job, **AUTH))[0] == 201
    await forgotten_after_failing(server)
    forgotten = [r for r in caplog.records if r.getMessage() == "job_forgotten"]
    assert len(forgotten) == 1
    assert forgotten[0].source == "api"  # type: ignore[attr-defined]
    assert "DELETE it, then POST it" in forgotten[0].hint  # type: ignore[attr-defined]
    # The application repeats its registration: still forgotten, and told why.
    status, doc = await call(server, "POST", "/api/v1/jobs", job, **AUTH)
    assert status == 409
    assert "forgotten" in doc["error"]
    assert "DELETE it, then POST it" in doc["error"]
    assert (await call(server, "GET", "/api/v1/jobs/hw/job-0"))[0] == 404
    assert JOB_0 not in await scrape(server)
    # DELETE then POST: afresh, on purpose; the failure is counted for the new job.
    assert (await call(server, "DELETE", "/api/v1/jobs/hw/job-0", **AUTH))[0] == 204
    assert (await call(server, "DELETE", "/api/v1/jobs/hw/job-0", **AUTH))[0] == 404
    assert (await call(server, "POST", "/api/v1/jobs", job, **AUTH))[0] == 201
    await scrape_until(server, lambda t: failures(t) == 2 and JOB_0 in t)
    assert len([r for r in caplog.records if r.getMessage() == "job_forgotten"]) == 1


async def test_forgetting_a_config_job_is_logged_once_with_a_hint(
    forgetting_exporter: Callable[[str], Awaitable[TestServer]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter")
    server = await forgetting_exporter("job-0 job-1")
    await forgotten_after_failing(server)
    for _ in range(3):
        assert (await server.app[RUNTIME].reload("test"))[0]
    await rounds_pass(lambda path: call(server, "GET", path), 3)
    forgotten = [r for r in caplog.records if r.getMessage() == "job_forgotten"]
    assert len(forgotten) == 1
    assert "remove it from `jobs`" in forgotten[0].hint  # type: ignore[attr-defined]


def _lifecycle(ttls: dict[str, float] | None = None) -> tuple[Lifecycle, Store, list[float]]:
    now = [1000.0]
    store = Store()
    settings = Settings(terminal_retention=100)
    lifecycle = Lifecycle(
        store,
        settings,
        {"tc": "tencent_ci", "hw": "huawei_metastudio"},
        ttls=ttls,
        wall=lambda: now[0],
    )
    return lifecycle, store, now


def test_a_tombstone_of_an_account_with_discovery_lives_for_its_lookback() -> None:
    lifecycle, store, now = _lifecycle({"tc": 3600.0})
    done = snapshot("SUCCEED", "a")
    for account in ("tc", "hw"):
        lifecycle.add_discovered(account, [done], {})
    now[0] += 100
    assert lifecycle.expire([JobKey("tc", "a"), JobKey("hw", "a")]) == []
    now[0] += 3601
    assert lifecycle.prune() == 1  # tc's lookback is over; hw has no discovery: 24 h
    assert set(store.tombstones) == {JobKey("hw", "a")}
    now[0] += 86400
    assert lifecycle.prune() == 1
    assert not store.tombstones


def test_an_account_that_comes_back_resumes_its_jobs_without_counting_again() -> None:
    lifecycle, store, now = _lifecycle()
    settings = Settings(terminal_retention=100)
    key = JobKey("hw", "job-1")
    lifecycle.set_config_jobs([JobConfig(account="hw", id="job-1")])
    store.record_success(key, snapshot("FAILED", "job-1", failure_code="E"), now[0])
    assert store.view().failures == {("hw", "huawei_metastudio", "VOICE_ASSESS", "E"): 1}
    lifecycle.reconfigure(settings, {"tc": "tencent_ci"})
    lifecycle.set_config_jobs([])
    view = store.view()
    assert (view.jobs, view.failures, dict(view.forgotten)) == ((), {}, {("tc", "tencent_ci"): 0})
    assert key in store.retired
    lifecycle.reconfigure(settings, {"hw": "huawei_metastudio"})
    lifecycle.set_config_jobs([JobConfig(account="hw", id="job-1")])
    store.record_success(key, snapshot("FAILED", "job-1", failure_code="E"), now[0])
    state = store.get(key)
    assert state is not None
    assert state.failures == 1
    assert store.view().failures == {}  # the counter went with the account; nothing recounted
