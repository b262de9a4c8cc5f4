"""Durable state across SIGKILL and restarts, and hot reload of the config and credentials."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestServer

from exporter.simulator.metastudio import MetaStudioSimulator
from exporter.simulator.scripts import HAPPY_PATH
from tests.test_job_api import AUTH, PROJECT, TOKEN, call, config_text, exporter, metrics, polled

ServerFactory = Callable[..., Awaitable[TestServer]]
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, _decoded(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decoded(exc.read())


def _decoded(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return raw.decode()


class Exporter:
    """The real exporter as a process, so it can be killed with SIGKILL."""

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk", "T_API": TOKEN}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config",
                str(self.config),
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if _http("GET", self.url + "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("exporter did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


async def _until(check: Callable[[], bool], within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def test_a_registration_survives_sigkill_right_after_it_returned(
    five_job_cloud: tuple[MetaStudioSimulator, str],
    run_exporter: Callable[[str], Exporter],
    tmp_path: Path,
) -> None:
    text = config_text(five_job_cloud[1], extra=f"state_file: {tmp_path / 'state.db'}\n")
    first = run_exporter(text)
    await asyncio.to_thread(first.start)
    job = {"account": "hw", "id": "job-3", "labels": {"team": "voice"}}
    status, _ = await asyncio.to_thread(_http, "POST", first.url + "/api/v1/jobs", job, AUTH)
    assert status == 201
    first.kill()  # no chance to flush anything after the answer
    second = run_exporter(text)
    await asyncio.to_thread(second.start)
    status, doc = await asyncio.to_thread(_http, "GET", second.url + "/api/v1/jobs/hw/job-3")
    assert status == 200
    assert (doc["source"], doc["labels"]) == ("api", {"team": "voice"})


async def test_a_restart_shows_the_last_state_and_neither_forgets_nor_recounts_a_failure(
    five_job_cloud: tuple[MetaStudioSimulator, str],
    run_exporter: Callable[[str], Exporter],
    tmp_path: Path,
) -> None:
    sim, url = five_job_cloud
    sim.set_override("job-0", state="FAILED")
    text = config_text(url, extra=f"state_file: {tmp_path / 'state.db'}\n")
    first = run_exporter(text)
    await asyncio.to_thread(first.start)

    def failed_once(instance: Exporter) -> Callable[[], bool]:
        def check() -> bool:
            status, doc = _http("GET", instance.url + "/api/v1/jobs/hw/job-0")
            return status == 200 and doc.get("state") == "FAILED" and doc["failures_total"] == 1

        return check

    await _until(failed_once(first))
    await asyncio.sleep(2.5)  # one persist interval
    first.kill()
    # While the exporter is down the cloud stops answering: whatever the restarted exporter
    # knows about job-0's state, it knows from the state file.
    sim.set_override("job-0", status=500, body={"error_code": "X", "error_msg": "down"})
    second = run_exporter(text)
    await asyncio.to_thread(second.start)
    _, doc = await asyncio.to_thread(_http, "GET", second.url + "/api/v1/jobs/hw/job-0")
    assert doc["state"] == "FAILED"
    assert doc["failures_total"] == 1
    sim.set_override("job-0", state="FAILED")

    def answered_again() -> bool:
        poll = _http("GET", second.url + "/api/v1/jobs/hw/job-0")[1]["poll"]
        return bool(poll["last_success"])

    await _until(answered_again)
    _, doc = await asyncio.to_thread(_http, "GET", second.url + "/api/v1/jobs/hw/job-0")
    assert doc["failures_total"] == 1  # still failed: not a second failure
    _, body = await asyncio.to_thread(_http, "GET", second.url + "/metrics")
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
    await _wait(server, polled("job-0"))
    path.write_text(config_text(url).replace("id: job-0", "id: job-2"))
    status, doc = await call(server, "POST", "/-/reload", **AUTH)
    assert (status, doc) == (200, {"status": "reloaded"})
    text = await _wait(server, polled("job-2"))
    assert 'job_id="job-0"' not in text
    assert "cloudjob_config_last_reload_successful 1.0" in text
    good_at = _sample(text, "cloudjob_config_last_reload_success_timestamp_seconds")
    path.write_text("accounts: [this is not right\n")
    status, doc = await call(server, "POST", "/-/reload", **AUTH)
    assert status == 400
    assert "invalid YAML" in doc["error"]
    text = await metrics(server)
    assert "cloudjob_config_last_reload_successful 0.0" in text
    assert _sample(text, "cloudjob_config_last_reload_success_timestamp_seconds") == good_at
    before = _sample(text, 'cloudjob_job_last_poll_timestamp_seconds{account="hw",job_id="job-2"')
    await _wait(
        server,
        lambda t: (
            _sample(t, 'cloudjob_job_last_poll_timestamp_seconds{account="hw",job_id="job-2"')
            > before
        ),
    )


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
    deadline = time.monotonic() + 5
    while (await call(server, "POST", "/api/v1/jobs", job, Authorization="Bearer second-token"))[
        0
    ] != 200:
        assert time.monotonic() < deadline, "the rotated token was not picked up"
        await asyncio.sleep(0.1)
    assert (await call(server, "POST", "/api/v1/jobs", job, Authorization="Bearer first-token"))[
        0
    ] == 403
    # The config file itself changing reloads too.
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("id: job-0", "id: job-4"))
    os.utime(path, (time.time() + 10, time.time() + 10))
    await _wait(server, polled("job-4"))
    # And SIGHUP, as for Prometheus.
    path.write_text(
        text.replace("id: job-0", "id: job-3").replace(
            "reload_check_interval: 0.2", "reload_check_interval: 0"
        )
    )
    os.kill(os.getpid(), signal.SIGHUP)
    await _wait(server, polled("job-3"))


def _sample(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {prefix} in exposition")


async def _wait(server: TestServer, predicate: Callable[[str], bool], within: float = 8) -> str:
    deadline = time.monotonic() + within
    while True:
        text = await metrics(server)
        if predicate(text):
            return text
        assert time.monotonic() < deadline, text[-2000:]
        await asyncio.sleep(0.05)


async def test_sigterm_stops_within_5_s_cancelling_in_flight_polls_and_flushing_state(
    run_exporter: Callable[[str], Exporter], tmp_path: Path, aiohttp_server: ServerFactory
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
    first = run_exporter(text)
    await asyncio.to_thread(first.start)
    await asyncio.wait_for(hanging.wait(), 10)

    def polls() -> int:
        _, doc = _http("GET", first.url + "/api/v1/jobs/hw/job-0")
        return int(doc["poll"]["polls_total"])

    await _until(lambda: polls() >= 3)
    before = await asyncio.to_thread(polls)
    assert first.process is not None
    first.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = await asyncio.to_thread(first.process.wait, 10)
    assert time.monotonic() - started < 5
    assert code == 0
    assert first.process.stderr is not None
    assert b"Traceback" not in first.process.stderr.read()
    # The state written at shutdown holds at least the polls seen just before SIGTERM: the
    # 2-second periodic write alone would be several polls behind.
    await cloud.close()
    second = run_exporter(text)
    await asyncio.to_thread(second.start)
    _, doc = await asyncio.to_thread(_http, "GET", second.url + "/api/v1/jobs/hw/job-0")
    assert doc["poll"]["polls_total"] >= before
