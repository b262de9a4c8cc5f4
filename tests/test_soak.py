"""Bounded soak: 5,000 jobs on both simulated clouds, on an accelerated clock, with random
faults, for about three minutes. Memory must level off and nothing may leak.

The exporter runs as its own process (`python -m exporter`), so RSS and open fds are its own,
read from /proc/PID, and not those of this test process, which runs the simulators and reads
30 MB expositions. Its asyncio tasks come from its self-metric `cloudjob_exporter_asyncio_tasks`.

Leaks are checked at two quiet points of the same process: before the 5,000 jobs arrive (a
config with the accounts and no jobs) and after they leave again (the same config, reloaded).
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from exporter.simulator.metastudio import MetaStudioSimulator, demo_simulator, start_simulator
from exporter.simulator.tencent_ci import TencentCISimulator, demo_tencent_simulator
from tests.support import eventually_async, start_exporter

HUAWEI_JOBS = 2500
TENCENT_JOBS = 2500
# Simulated seconds per real second: every demo script, the slowest included (two simulated
# hours), runs through within the warm-up, so every snapshot shape and histogram exists by then.
SPEED = 240.0
WARM_UP = 60.0
MEASURE = 90.0
SCRAPE_EVERY = 10.0
ENVIRON = {"AK": "ak", "SK": "sk", "TID": "id", "TKEY": "key"}


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Scrape:
    polled: int
    tracked: float
    errors: float
    requests: float
    tasks: float
    seconds: float


def _sum(lines: list[str], prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


@dataclass
class Exporter:
    process: subprocess.Popen[str]
    url: str
    config: Path
    accounts: str

    async def scrape(self) -> Scrape:
        """One scrape on a fresh connection, closed again so that it holds no fd afterwards."""
        started = time.monotonic()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/metrics", timeout=aiohttp.ClientTimeout(30)) as response,
        ):
            assert response.status == 200
            text = await response.text()
        seconds = time.monotonic() - started
        lines = text.splitlines()
        del text
        return Scrape(
            polled=sum(1 for line in lines if line.startswith("cloudjob_job_last_poll_success{")),
            tracked=_sum(lines, "cloudjob_jobs_tracked{"),
            errors=_sum(lines, "cloudjob_poll_errors_total{"),
            requests=_sum(lines, "cloudjob_api_requests_total{"),
            tasks=_sum(lines, "cloudjob_exporter_asyncio_tasks "),
            seconds=seconds,
        )

    def load(self, jobs: list[str]) -> None:
        """Rewrite the config and reload it (SIGHUP), as an operator would."""
        self.config.write_text(self.accounts + "jobs:\n" + "".join(jobs) if jobs else self.accounts)
        self.process.send_signal(signal.SIGHUP)


@pytest.fixture
async def clouds() -> AsyncIterator[tuple[MetaStudioSimulator, str, TencentCISimulator, str]]:
    huawei = demo_simulator(
        project_id="p" * 32, access_key="ak", secret_key="sk", speed=SPEED, jobs=HUAWEI_JOBS
    )
    tencent = demo_tencent_simulator(
        bucket="soak-1250000000", secret_id="id", secret_key="key", speed=SPEED, jobs=TENCENT_JOBS
    )
    hw_runner, hw_url = await start_simulator(huawei)
    tc_runner, tc_url = await start_simulator(tencent)
    yield huawei, hw_url, tencent, tc_url
    await hw_runner.cleanup()
    await tc_runner.cleanup()


@pytest.fixture
async def exporter(
    clouds: tuple[MetaStudioSimulator, str, TencentCISimulator, str], tmp_path: Path
) -> AsyncIterator[Exporter]:
    _, hw_url, _, tc_url = clouds
    accounts = (
        "poll_interval: 5s\nterminal_poll_interval: 5s\nrequest_timeout: 2\nmax_retries: 1\n"
        f"state_file: {tmp_path / 'state.db'}\n"
        "accounts:\n"
        f"  hw: {{provider: huawei_metastudio, region: r, project_id: {'p' * 32}, "
        f"endpoint: '{hw_url}', auth: {{ak_env: AK, sk_env: SK}}}}\n"
        f"  tc: {{provider: tencent_ci, bucket: soak-1250000000, region: ap-beijing, "
        f"endpoint: '{tc_url}', job_api: media_jobs, batch_size: 10, "
        "auth: {secret_id_env: TID, secret_key_env: TKEY}}\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(accounts)
    started = await asyncio.to_thread(
        start_exporter,
        *("--config", str(config), "--log-level", "error"),
        log=tmp_path / "exporter.log",
        env=ENVIRON,
    )
    try:
        yield Exporter(started.process, started.url, config, accounts)
    finally:
        if started.process.poll() is None:
            started.kill()
        started.stop()


async def inject_faults(huawei: MetaStudioSimulator, tencent: TencentCISimulator) -> None:
    """Every 0.5 s, 20 random jobs answer 500/503/429 or invalid JSON, until cancelled."""
    rng = random.Random(7)
    hw_ids, tc_ids = huawei.job_ids(), tencent.job_ids()
    faulty: list[tuple[str, str]] = []
    try:
        while True:
            await asyncio.sleep(0.5)
            for cloud, job_id in faulty:
                (huawei if cloud == "hw" else tencent).clear_override(job_id)
            faulty.clear()
            for _ in range(20):
                if rng.random() < 0.5:
                    job_id = rng.choice(hw_ids)
                    body = rng.choice([b"{not json", None])
                    huawei.set_override(job_id, status=500 if body is None else 200, body=body)
                    faulty.append(("hw", job_id))
                else:
                    job_id = rng.choice(tc_ids)
                    tencent.set_override(job_id, status=rng.choice([500, 503, 429]))
                    faulty.append(("tc", job_id))
    finally:
        for cloud, job_id in faulty:
            (huawei if cloud == "hw" else tencent).clear_override(job_id)


async def quiet_point(exporter: Exporter, fds: int, tasks: float) -> tuple[int, float]:
    """Fds and tasks once idle connections have closed (aiohttp keeps them 15 s): at most 30 s
    of waiting for them to fall to `fds` and `tasks`; the last reading if they never do."""
    pid = exporter.process.pid
    deadline = time.monotonic() + 30
    while True:
        reading = (open_fds(pid), (await exporter.scrape()).tasks)
        if (reading[0] <= fds and reading[1] <= tasks) or time.monotonic() > deadline:
            return reading
        await asyncio.sleep(1)


@pytest.mark.slow
async def test_five_thousand_jobs_with_random_faults_hold_memory_tasks_and_fds(
    clouds: tuple[MetaStudioSimulator, str, TencentCISimulator, str], exporter: Exporter
) -> None:
    huawei, _, tencent, _ = clouds
    pid = exporter.process.pid
    await asyncio.sleep(1)  # the start-up's own connections settle
    fds_before, tasks_before = open_fds(pid), (await exporter.scrape()).tasks
    rss_idle = rss_bytes(pid)

    jobs = [f"  - {{account: hw, id: {job_id}}}\n" for job_id in huawei.job_ids()]
    jobs += [f"  - {{account: tc, id: {job_id}}}\n" for job_id in tencent.job_ids()]
    exporter.load(jobs)
    faults = asyncio.create_task(inject_faults(huawei, tencent))
    scrapes: list[Scrape] = []
    try:
        deadline = time.monotonic() + WARM_UP
        while time.monotonic() < deadline:
            await asyncio.sleep(SCRAPE_EVERY)
            scrapes.append(await exporter.scrape())
        rss_warm = rss_bytes(pid)
        deadline = time.monotonic() + MEASURE
        while time.monotonic() < deadline:
            await asyncio.sleep(SCRAPE_EVERY)
            scrapes.append(await exporter.scrape())
        rss_end = rss_bytes(pid)
    finally:
        faults.cancel()
        await asyncio.gather(faults, return_exceptions=True)
    last = scrapes[-1]
    growth = (rss_end - rss_warm) / rss_warm
    print(  # noqa: T201 - the soak's figures, shown with -s and on failure
        f"\nsoak: {last.polled} jobs polled, {last.requests:.0f} requests, "
        f"{last.errors:.0f} failed polls; exporter RSS idle {rss_idle / 2**20:.0f} MiB, "
        f"warm {rss_warm / 2**20:.0f} -> end {rss_end / 2**20:.0f} MiB ({growth:+.1%}); "
        f"scrape max {max(s.seconds for s in scrapes):.2f}s; "
        f"tasks under load {min(s.tasks for s in scrapes):.0f}-{max(s.tasks for s in scrapes):.0f}"
    )

    exporter.load([])  # the jobs leave; what they held must go with them

    async def no_jobs_tracked() -> bool:
        return (await exporter.scrape()).tracked == 0

    await eventually_async(no_jobs_tracked, within=30, interval=1, what="the reload drops the jobs")
    fds_after, tasks_after = await quiet_point(exporter, fds_before, tasks_before)
    print(  # noqa: T201
        f"soak: before: tasks {tasks_before:.0f}, fds {fds_before}; "
        f"after the jobs left: tasks {tasks_after:.0f}, fds {fds_after}"
    )
    exporter.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(exporter.process.wait, 15) == 0  # the timeout: a hang guard

    assert tasks_before > 0  # the self-metric is there: a missing one would read as 0 <= 0
    assert last.polled == HUAWEI_JOBS + TENCENT_JOBS
    assert last.errors > 100  # the faults really happened
    assert growth < 0.10
    assert tasks_after <= tasks_before
    assert fds_after <= fds_before
