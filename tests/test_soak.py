"""Bounded soak: 5,000 jobs on both simulated clouds, on an accelerated clock, with random
faults, for about two minutes. Memory must level off and nothing may leak."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import resource
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import load_settings
from exporter.simulator.metastudio import demo_simulator, start_simulator
from exporter.simulator.tencent_ci import demo_tencent_simulator

HUAWEI_JOBS = 2500
TENCENT_JOBS = 2500
# Simulated seconds per real second: every demo script, the slowest included (two simulated
# hours), runs through within the warm-up, so every snapshot shape and histogram exists by then.
SPEED = 240.0
WARM_UP = 60.0
MEASURE = 90.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
async def test_five_thousand_jobs_with_random_faults_hold_memory_tasks_and_fds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Thousands of job_failed/poll_failed warnings, kept by pytest's log capture, would be
    # the test's own memory growth, not the exporter's.
    caplog.set_level(logging.ERROR)
    huawei = demo_simulator(
        project_id="p" * 32, access_key="ak", secret_key="sk", speed=SPEED, jobs=HUAWEI_JOBS
    )
    tencent = demo_tencent_simulator(
        bucket="soak-1250000000", secret_id="id", secret_key="key", speed=SPEED, jobs=TENCENT_JOBS
    )
    hw_runner, hw_url = await start_simulator(huawei)
    tc_runner, tc_url = await start_simulator(tencent)
    jobs = [f"  - {{account: hw, id: {job_id}}}\n" for job_id in huawei.job_ids()]
    jobs += [f"  - {{account: tc, id: {job_id}}}\n" for job_id in tencent.job_ids()]
    config = tmp_path / "config.yaml"
    config.write_text(
        "poll_interval: 5s\nterminal_poll_interval: 5s\nrequest_timeout: 2\nmax_retries: 1\n"
        f"state_file: {tmp_path / 'state.db'}\n"
        "accounts:\n"
        f"  hw: {{provider: huawei_metastudio, region: r, project_id: {'p' * 32}, "
        f"endpoint: '{hw_url}', auth: {{ak_env: AK, sk_env: SK}}}}\n"
        f"  tc: {{provider: tencent_ci, bucket: soak-1250000000, region: ap-beijing, "
        f"endpoint: '{tc_url}', job_api: media_jobs, batch_size: 10, "
        "auth: {secret_id_env: TID, secret_key_env: TKEY}}\n"
        "jobs:\n" + "".join(jobs)
    )
    environ = {"AK": "ak", "SK": "sk", "TID": "id", "TKEY": "key"}
    tasks_before = len(asyncio.all_tasks())
    fds_before = open_fds()
    server = TestServer(create_app(load_settings(config), environ=environ), host="127.0.0.1")
    await server.start_server()
    rng = random.Random(7)
    hw_ids, tc_ids = huawei.job_ids(), tencent.job_ids()
    faulty: list[tuple[str, str]] = []
    scrapes: list[float] = []

    async def inject_faults() -> None:
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

    async def scrape(session: aiohttp.ClientSession) -> tuple[int, float, float]:
        """Jobs polled, failed polls, requests; the ~30 MB exposition is released before RSS
        is read, so both readings are taken in the same state."""
        started = time.monotonic()
        async with session.get(server.make_url("/metrics")) as response:
            assert response.status == 200
            text = await response.text()
        scrapes.append(time.monotonic() - started)
        lines = text.splitlines()
        del text
        polled = sum(1 for line in lines if line.startswith("cloudjob_job_last_poll_success{"))
        errors = sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("cloudjob_poll_errors_total{")
        )
        requests = sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("cloudjob_api_requests_total{")
        )
        del lines
        gc.collect()
        return polled, errors, requests

    faults = asyncio.create_task(inject_faults())
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + WARM_UP
            while time.monotonic() < deadline:
                await asyncio.sleep(10)
                await scrape(session)
            rss_warm = rss_bytes()
            deadline = time.monotonic() + MEASURE
            while time.monotonic() < deadline:
                await asyncio.sleep(10)
                polled, errors, requests = await scrape(session)
            rss_end = rss_bytes()
    finally:
        faults.cancel()
        await asyncio.gather(faults, return_exceptions=True)
        await server.close()
    growth = (rss_end - rss_warm) / rss_warm
    print(  # noqa: T201 - the soak's figures, shown with -s and on failure
        f"soak: {polled} jobs polled, {requests:.0f} requests, {errors:.0f} failed polls; "
        f"RSS {rss_warm / 2**20:.0f} -> {rss_end / 2**20:.0f} MiB ({growth:+.1%}); "
        f"scrape max {max(scrapes):.2f}s; before: tasks {tasks_before}, fds {fds_before}"
    )
    await hw_runner.cleanup()
    await tc_runner.cleanup()
    await asyncio.sleep(0.5)  # connection handlers finish after their sockets close
    tasks_after, fds_after = len(asyncio.all_tasks()), open_fds()
    print(f"soak: after shutdown: tasks {tasks_after}, fds {fds_after}")  # noqa: T201
    assert polled == HUAWEI_JOBS + TENCENT_JOBS
    assert errors > 100  # the faults really happened
    assert growth < 0.10
    assert tasks_after <= tasks_before
    assert fds_after <= fds_before
