"""No secret value appears anywhere a person or a scraper can see it.

Real exporter processes, with distinctive secrets for every credential kind, run the scenarios
that produce the most output: successful polls, rejected credentials, a wrong API token, a bad
reload, a bad config at start-up, CI callbacks (whose secret is in the path the access log
prints), debug logging in text and JSON. Then every log line, every
HTTP answer (/, /metrics, /api/v1/jobs, error bodies) and every error message is searched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exporter.simulator.metastudio import MetaStudioSimulator, start_simulator
from exporter.simulator.scripts import HAPPY_PATH
from exporter.simulator.tencent_ci import TencentCISimulator
from exporter.simulator.tencent_scripts import FAILED, HAPPY
from tests.support import eventually_async, http, run_cli, start_exporter

SECRETS = {
    "HW_AK": "AKHWLEAK0000000000CANARY1",
    "HW_SK": "hw-sk-canary-5b1f9e0d7c",
    "HW_WRONG_SK": "hw-wrong-sk-canary-2a8e",
    "HW_TOKEN": "hw-iam-token-canary-7c3d",
    "TC_ID": "AKIDTCLEAKCANARY0000000000000000000",
    "TC_KEY": "tc-key-canary-4e6a1b",
    "TC_TOKEN": "tc-session-token-canary-9f0b",
    "API_TOKEN": "api-token-canary-1d2e3f",
    "TC_CALLBACK": "tc-callback-token-canary-8a7b6c",
}
PROJECT = "0123456789abcdef0123456789abcdef"
BUCKET = "examplebucket-1250000000"


@pytest.fixture
async def clouds() -> AsyncIterator[tuple[str, str]]:
    huawei = MetaStudioSimulator(
        project_id=PROJECT,
        credentials={SECRETS["HW_AK"]: SECRETS["HW_SK"]},
        tokens=[SECRETS["HW_TOKEN"]],
    )
    for n in range(3):
        huawei.add_job(f"hw-{n}", HAPPY_PATH)
    tencent = TencentCISimulator(
        bucket=BUCKET,
        credentials={SECRETS["TC_ID"]: SECRETS["TC_KEY"]},
        tokens={SECRETS["TC_ID"]: SECRETS["TC_TOKEN"]},
    )
    tencent.add_job("a-ok", HAPPY)
    tencent.add_job("a-failed", FAILED)
    hw_runner, hw_url = await start_simulator(huawei)
    tc_runner, tc_url = await start_simulator(tencent)
    yield hw_url, tc_url
    await hw_runner.cleanup()
    await tc_runner.cleanup()


def _config(hw_url: str, tc_url: str, tmp_path: Path) -> str:
    token_file = tmp_path / "hw-token"
    token_file.write_text(SECRETS["HW_TOKEN"])
    return f"""
poll_interval: 0.3s
max_retries: 0
api: {{token_env: API_TOKEN}}
state_file: {tmp_path / "state.db"}
accounts:
  hw:
    provider: huawei_metastudio
    region: r
    project_id: "{PROJECT}"
    endpoint: "{hw_url}"
    auth: {{ak_env: HW_AK, sk_env: HW_SK}}
  hw-wrong:
    provider: huawei_metastudio
    region: r
    project_id: "{PROJECT}"
    endpoint: "{hw_url}"
    auth: {{ak_env: HW_AK, sk_env: HW_WRONG_SK}}
  hw-token:
    provider: huawei_metastudio
    region: r
    project_id: "{PROJECT}"
    endpoint: "{hw_url}"
    auth: {{token_file: {token_file}}}
  tc:
    provider: tencent_ci
    bucket: {BUCKET}
    region: ap-beijing
    endpoint: "{tc_url}"
    auth: {{secret_id_env: TC_ID, secret_key_env: TC_KEY, token_env: TC_TOKEN}}
    callback_token_env: TC_CALLBACK
    discover: {{queue_id: p893bcda225bf4945a378da6662e81a89, tag: Translation, interval: 0.5s}}
jobs:
  - {{account: hw, id: hw-0}}
  - {{account: hw, id: missing-job}}
  - {{account: hw-wrong, id: hw-1}}
  - {{account: hw-token, id: hw-2}}
  - {{account: tc, id: a-ok}}
  - {{account: tc, id: a-missing}}
"""


async def _scenario(config: Path, log_format: str) -> list[bytes]:
    """One exporter run through every noisy path; returns everything it showed anyone."""
    process = await asyncio.to_thread(
        start_exporter,
        *("--config", str(config), "--log-level", "debug", "--log-format", log_format),
        log=config.with_name(f"exporter-{log_format}.log"),
        env=SECRETS,
    )
    url = process.url
    seen: list[bytes] = []
    try:

        async def every_job_polled() -> bool:
            status, doc = await asyncio.to_thread(http, "GET", url + "/api/v1/jobs")
            return status == 200 and sum(1 for j in doc["jobs"] if j["poll"]["last_poll_at"]) >= 6

        await eventually_async(every_job_polled, within=20, what="the exporter polls every job")
        auth = {"Authorization": f"Bearer {SECRETS['API_TOKEN']}"}
        callback = f"/api/v1/callbacks/tencent_ci/tc/{SECRETS['TC_CALLBACK']}"
        calls = [
            ("GET", "/", None, None),
            ("GET", "/metrics", None, None),
            ("GET", "/api/v1/jobs", None, None),
            ("GET", "/api/v1/jobs/hw-wrong/hw-1", None, None),
            ("POST", "/api/v1/jobs", {"account": "hw", "id": "x"}, {"Authorization": "Bearer no"}),
            ("POST", "/api/v1/jobs", {"account": "nope", "id": "x"}, auth),
            ("POST", "/api/v1/jobs", {"account": "hw", "id": "hw-1"}, auth),
            ("POST", callback, {"JobsDetail": {"JobId": "a-ok"}}, None),
            ("POST", callback, {"JobsDetail": "garbage"}, None),
            ("POST", f"{callback}/extra", {"JobsDetail": {"JobId": "a-ok"}}, None),
            ("POST", f"{callback}?q=1", {"JobsDetail": {"JobId": "a-ok"}}, None),
        ]
        for method, path, body, headers in calls:
            _, answer = await asyncio.to_thread(http, method, url + path, body, headers)
            seen.append(str(answer).encode())
        good = await asyncio.to_thread(config.read_text)
        await asyncio.to_thread(config.write_text, good + "\nbroken: [\n")
        _, answer = await asyncio.to_thread(http, "POST", url + "/-/reload", None, auth)
        seen.append(str(answer).encode())
        await asyncio.to_thread(config.write_text, good)
    finally:
        await asyncio.to_thread(process.stop)
    err = process.log.read_bytes()
    seen += [process.line.encode(), err]
    assert b"poll_failed" in err  # the noisy paths really ran
    assert b"job_registered" in err
    assert b"reload_failed" in err
    # The access log (on at debug) logged each callback, masked.
    assert err.count(b"/api/v1/callbacks/tencent_ci/tc/***") >= 4
    return seen


async def test_no_secret_reaches_logs_pages_metrics_or_error_messages(
    clouds: tuple[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    seen = []
    for log_format in ("text", "json"):
        # A fresh state file each time, so the second run polls (and fails) afresh too.
        text = _config(*clouds, tmp_path).replace("state.db", f"state-{log_format}.db")
        await asyncio.to_thread(config.write_text, text)
        seen += await _scenario(config, log_format)
    # A bad config at start-up, with secrets in the environment and in a file it names.
    broken = tmp_path / "broken.yaml"
    text = await asyncio.to_thread(config.read_text)
    await asyncio.to_thread(broken.write_text, text.replace("provider: tencent_ci", "provider: x"))
    result = await asyncio.to_thread(
        run_cli, "--config", str(broken), "--check-config", env=SECRETS
    )
    assert result.returncode == 2
    seen += [result.stdout.encode(), result.stderr.encode()]
    everything = b"\n".join(seen)
    assert len(everything) > 10_000  # really something to search
    for name, value in SECRETS.items():
        assert value.encode() not in everything, f"{name} leaked"
