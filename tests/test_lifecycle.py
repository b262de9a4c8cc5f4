"""The job lifecycle as a user meets it: a forgotten job stays forgotten, its tombstone ends,
and a removed account takes everything of its own along. Real HTTP over loopback."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import load_settings
from exporter.runtime import RUNTIME
from exporter.simulator.metastudio import MetaStudioSimulator, start_simulator
from exporter.simulator.tencent_ci import TencentCISimulator
from exporter.simulator.tencent_scripts import STUCK
from tests.test_job_api import PROJECT, TOKEN, metrics, wait_for

ServerFactory = Callable[..., Awaitable[TestServer]]
FAILURES = (
    'cloudjob_failures_total{account="hw",code="MSS.10030004",job_type="VOICE_ASSESS",'
    'provider="huawei_metastudio"}'
)
DURATIONS = (
    'cloudjob_completed_job_duration_seconds_count{account="hw",job_type="VOICE_ASSESS",'
    'phase="failed",provider="huawei_metastudio"}'
)
JOB_0 = 'cloudjob_job_info{account="hw",job_id="job-0"'


def value(text: str, prefix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def forgetting_config(url: str, jobs: str = "job-0", extra: str = "") -> str:
    listed = "".join(f"  - {{account: hw, id: {job}}}\n" for job in jobs.split())
    return (
        "poll_interval: 0.2s\nterminal_poll_interval: 0.2s\nterminal_retention: 1s\n"
        f"api: {{token_env: T_API}}\naccounts:\n  hw:\n    provider: huawei_metastudio\n"
        f"    region: r\n    project_id: {PROJECT}\n    endpoint: {url}\n"
        f"jobs:\n{listed}{extra}"
    )


async def start(
    aiohttp_server: ServerFactory, path: Path, text: str, **kwargs: object
) -> TestServer:
    await asyncio.to_thread(path.write_text, text)
    environ = {"CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk", "T_API": TOKEN}
    return await aiohttp_server(
        create_app(
            load_settings(path),
            environ=environ,
            loader=lambda: load_settings(path),
            config_path=path,
            **kwargs,  # type: ignore[arg-type]
        )
    )


async def forgotten_after_failing(server: TestServer) -> str:
    """Wait for job-0 to be seen failed, then forgotten; returns the scrape that shows both."""
    await wait_for(server, lambda t: value(t, FAILURES) == 1 and JOB_0 in t)
    return await wait_for(server, lambda t: JOB_0 not in t)


@pytest.fixture
async def failing_cloud() -> AsyncIterator[tuple[MetaStudioSimulator, str]]:
    sim = MetaStudioSimulator(project_id=PROJECT, credentials={"ak": "sk"})
    from exporter.simulator.scripts import HAPPY_PATH

    for n in range(3):
        sim.add_job(f"job-{n}", HAPPY_PATH)
    sim.set_override("job-0", state="FAILED")
    runner, url = await start_simulator(sim)
    yield sim, url
    await runner.cleanup()


async def test_a_forgotten_config_job_is_not_brought_back_by_a_reload_nor_counted_again(
    failing_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    server = await start(aiohttp_server, tmp_path / "c.yaml", forgetting_config(failing_cloud[1]))
    text = await forgotten_after_failing(server)
    counted = (value(text, FAILURES), value(text, DURATIONS))
    assert counted == (1, 1)
    ok, problems = await server.app[RUNTIME].reload("test")
    assert (ok, problems) == (True, [])
    await asyncio.sleep(1.0)  # five poll intervals: a revived job would be polled and counted
    text = await metrics(server)
    assert JOB_0 not in text
    assert (value(text, FAILURES), value(text, DURATIONS)) == counted
    assert 'cloudjob_forgotten_jobs{account="hw",provider="huawei_metastudio"} 1.0' in text


async def test_a_tombstone_lives_while_the_config_lists_the_job_then_expires_everywhere(
    failing_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    shift = [0.0]
    database = tmp_path / "state.db"
    path = tmp_path / "c.yaml"
    url = failing_cloud[1]
    server = await start(
        aiohttp_server,
        path,
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
        return value(text, 'cloudjob_forgotten_jobs{account="hw"')

    # Two days on, still listed: still forgotten, the tombstone kept.
    shift[0] += 2 * 86400
    assert (await runtime.reload("test"))[0]
    await runtime.persist()
    text = await metrics(server)
    assert JOB_0 not in text
    assert (in_memory(text), on_disk()) == (1, 1)
    # Taken out of the config, it is kept for discovery's lookback (24 h without discovery) ...
    path.write_text(forgetting_config(url, "job-1", f"state_file: {database}\n"))
    assert (await runtime.reload("test"))[0]
    shift[0] += 86400 - 60
    assert (await runtime.reload("test"))[0]
    await runtime.persist()
    assert (in_memory(await metrics(server)), on_disk()) == (1, 1)
    # ... and then pruned, in memory and on disk.
    shift[0] += 120
    assert (await runtime.reload("test"))[0]
    await runtime.persist()
    assert (in_memory(await metrics(server)), on_disk()) == (0, 0)


async def test_removing_an_account_removes_its_discovery_status_and_poll_error_series(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    sim = TencentCISimulator(bucket="b-1250000000", credentials={"AKIDX": "key"})
    sim.add_job("a-found", STUCK, queue_id="q")
    runner, url = await start_simulator(sim)
    try:
        tencent = (
            f"  tc:\n    provider: tencent_ci\n    bucket: b-1250000000\n    region: ap-beijing\n"
            f'    endpoint: "{url}"\n    auth: {{secret_id_env: T_ID, secret_key_env: T_KEY}}\n'
            "    discover: {queue_id: q, lookback: 1h, interval: 0.3s}\n"
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
        text = await wait_for(
            server,
            lambda t: (
                'cloudjob_discovery_last_success{account="tc"' in t
                and 'cloudjob_job_info{account="tc",job_id="a-found"' in t
                and 'cloudjob_poll_errors_total{account="hw"' in t
            ),
        )
        path.write_text(both.replace(tencent, ""))
        assert (await server.app[RUNTIME].reload("test"))[0]
        await asyncio.sleep(0.7)  # two discovery intervals: a leftover run would show
        text = await metrics(server)
        assert 'account="tc"' not in text
        # The account that stays keeps its own.
        assert 'cloudjob_poll_errors_total{account="hw"' in text
    finally:
        await runner.cleanup()
