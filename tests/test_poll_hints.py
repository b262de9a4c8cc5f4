"""Poll-now hints over loopback: the API route and the Tencent CI callback receiver against the
simulated CI, which counts every signed look-up the exporter makes.

Polls are an hour apart, so after the first one every look-up the cloud sees was a hint's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.api import MAX_CALLBACK_BYTES
from exporter.app import create_app
from exporter.config import load_settings
from exporter.hints import HINT_BURST
from exporter.simulator.tencent_ci import TencentCISimulator
from exporter.simulator.tencent_scripts import STUCK
from tests.support import (
    Handler,
    ServerFactory,
    Watched,
    eventually_async,
    scrape,
    scrape_until,
    serving,
    value,
)

BUCKET = "examplebucket-1250000000"
SECRET_ID = "AKIDHINTS000000000000000000000000000"
SECRET_KEY = "tc-hints-key-5e1d"
CALLBACK_TOKEN = "cb-token-9f8e7d6c5b4a3210"
API_TOKEN = "api-token-hints-42"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CALLBACK = f"/api/v1/callbacks/tencent_ci/tc/{CALLBACK_TOKEN}"
JOBS = ("a-1", "a-2", "a-3")
# Long enough for a scheduled look-up to reach the cloud many times over (it is due at once).
QUIET = 0.5


@dataclass
class LookUps:
    """The job look-ups the simulated cloud answered: the ids asked for, and whether the
    request was signed and accepted."""

    sim: TencentCISimulator
    seen: list[tuple[str, bool]] = field(default_factory=list)

    async def watch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.path.startswith("/ai_jobs/"):
            signed = "q-signature=" in request.headers.get("Authorization", "")
            self.seen.append(
                (request.path.removeprefix("/ai_jobs/"), signed and response.status == 200)
            )
        return response

    def of(self, job_id: str) -> int:
        return sum(1 for ids, _ in self.seen if job_id in ids.split(","))


@pytest.fixture
async def cloud() -> AsyncIterator[tuple[LookUps, str]]:
    sim = TencentCISimulator(bucket=BUCKET, credentials={SECRET_ID: SECRET_KEY}, clock=time.time)
    for job_id in (*JOBS, "a-untracked"):
        sim.add_job(job_id, STUCK)
    lookups = LookUps(sim)
    async with serving(Watched(sim, lookups.watch)) as url:
        yield lookups, url


def _account(name: str, url: str, extra: str = "") -> str:
    return f"""  {name}:
    provider: tencent_ci
    bucket: {BUCKET}
    region: ap-beijing
    endpoint: "{url}"
    queue_interval: 0s
    auth: {{secret_id_env: T_ID, secret_key_env: T_KEY}}
{extra}"""


async def _exporter(
    aiohttp_server: ServerFactory, tmp_path: Path, lookups: LookUps, url: str
) -> TestServer:
    path = tmp_path / "config.yaml"
    path.write_text(
        "poll_interval: 1h\nterminal_poll_interval: 1h\nmax_retries: 0\n"
        "api: {token_env: T_API}\naccounts:\n"
        + _account("tc", url, "    callback_token_env: T_CB\n")
        + _account("tc-plain", url)
        + "jobs:\n"
        + "".join(f"  - {{account: tc, id: {job_id}}}\n" for job_id in JOBS)
    )
    environ = {"T_ID": SECRET_ID, "T_KEY": SECRET_KEY, "T_API": API_TOKEN, "T_CB": CALLBACK_TOKEN}
    server = await aiohttp_server(create_app(load_settings(path), environ=environ))
    # The first poll of every job, after which the cloud hears only from hints.
    await eventually_async(
        lambda: all(lookups.of(job_id) == 1 for job_id in JOBS), what="every job polled once"
    )
    return server


async def _post(
    server: TestServer, path: str, body: bytes | AsyncIterable[bytes] = b"", **headers: str
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url(path), data=body, headers=headers) as response,
    ):
        raw = await response.read()
        try:
            document = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            document = raw.decode()
        return response.status, document, response.headers


async def _looked_up(lookups: LookUps, job_id: str, times: int) -> None:
    """The cloud answers `times` signed look-ups of the job, and no more follow."""
    await eventually_async(
        lambda: lookups.of(job_id) >= times, what=f"{times} look-ups of {job_id}"
    )
    await asyncio.sleep(QUIET)
    assert lookups.of(job_id) == times
    assert all(ok for _, ok in lookups.seen), "a look-up was not signed, or was refused"


def _hints(text: str, source: str, outcome: str, account: str = "tc") -> float | None:
    return value(text, "cloudjob_poll_hints_total", account=account, source=source, outcome=outcome)


def _job_series(text: str) -> str:
    """Every per-job line of an exposition, what a forged callback must not change; but the
    jobs' ages, which the clock moves on between two scrapes (a look-up moves
    `cloudjob_job_last_poll_timestamp_seconds`, even of a job whose state stays)."""
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith("cloudjob_job_") and not line.startswith("cloudjob_job_age_seconds")
    )


def _xml(*job_ids: str) -> bytes:
    details = "".join(
        f"<JobsDetail><Code>Success</Code><JobId>{job_id}</JobId><State>Success</State>"
        "<EndTime>2022-07-25T16:35:43+0800</EndTime></JobsDetail>"
        for job_id in job_ids
    )
    return f"<Response><EventName>TaskFinish</EventName>{details}</Response>".encode()


async def test_a_hint_leads_to_one_signed_look_up_of_that_job(
    cloud: tuple[LookUps, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    lookups, url = cloud
    server = await _exporter(aiohttp_server, tmp_path, lookups, url)
    status, doc, _ = await _post(server, "/api/v1/jobs/tc/a-1/poll", **AUTH)
    assert (status, doc) == (202, {"status": "scheduled"})
    await _looked_up(lookups, "a-1", 2)
    assert lookups.of("a-2") == lookups.of("a-3") == 1
    # Nothing scheduled for a job not tracked, an account not configured, or a caller unknown.
    status, doc, _ = await _post(server, "/api/v1/jobs/tc/a-untracked/poll", **AUTH)
    assert (status, doc) == (404, {"error": "job 'a-untracked' of 'tc' is not tracked"})
    status, doc, _ = await _post(server, "/api/v1/jobs/nope/a-1/poll", **AUTH)
    assert (status, doc) == (404, {"error": "account 'nope' is not configured"})
    status, _, _ = await _post(server, "/api/v1/jobs/tc/a-1/poll")
    assert status == 401
    status, _, _ = await _post(server, "/api/v1/jobs/tc/a-1/poll", Authorization="Bearer no")
    assert status == 403
    await asyncio.sleep(QUIET)
    assert lookups.of("a-untracked") == 0
    assert lookups.of("a-1") == 2
    text = await scrape(server)
    assert _hints(text, "api", "scheduled") == 1
    assert _hints(text, "api", "unknown_job") == 1


@pytest.mark.parametrize(
    ("body", "content_type", "job_ids"),
    [
        (_xml("a-1"), "application/xml", ("a-1",)),
        (  # an older page's shape: no EventName; and no Content-Type to go by
            b"<Response><JobsDetail><JobId>a-2</JobId></JobsDetail></Response>",
            "",
            ("a-2",),
        ),
        (
            orjson.dumps({"EventName": "TaskFinish", "JobsDetail": {"JobId": "a-1"}}),
            "application/json",
            ("a-1",),
        ),
        (
            orjson.dumps({"Response": {"JobsDetail": [{"JobId": "a-2"}, {"JobId": "a-3"}]}}),
            "text/plain",  # a wrong type does not matter: the body says what it is
            ("a-2", "a-3"),
        ),
    ],
)
async def test_a_callback_in_xml_or_json_looks_up_each_job_it_names(
    cloud: tuple[LookUps, str],
    aiohttp_server: ServerFactory,
    tmp_path: Path,
    body: bytes,
    content_type: str,
    job_ids: tuple[str, ...],
) -> None:
    lookups, url = cloud
    server = await _exporter(aiohttp_server, tmp_path, lookups, url)
    headers = {"Content-Type": content_type} if content_type else {}
    status, doc, _ = await _post(server, CALLBACK, body, **headers)
    assert (status, doc) == (200, {"status": "ok", "scheduled": len(job_ids), "unknown_jobs": 0})
    for job_id in JOBS:
        await _looked_up(lookups, job_id, 2 if job_id in job_ids else 1)
    text = await scrape(server)
    assert _hints(text, "callback", "scheduled") == len(job_ids)


async def _ten_megabytes() -> AsyncIterator[bytes]:
    chunk = b"<Response>" + b" " * (1024 * 1024)
    for _ in range(10):
        yield chunk


async def test_forged_callbacks_change_no_series_and_reach_no_cloud(
    cloud: tuple[LookUps, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    lookups, url = cloud
    server = await _exporter(aiohttp_server, tmp_path, lookups, url)
    before = await scrape(server)
    seen = len(lookups.seen)
    wrong = CALLBACK.replace(CALLBACK_TOKEN, "cb-token-0000000000000000")
    not_found = {"error": "no callback receiver at this address"}
    forgeries: list[tuple[str, bytes | AsyncIterable[bytes], int, object]] = [
        (wrong, _xml("a-1"), 404, not_found),  # a wrong secret
        (wrong.removesuffix("0"), _xml("a-1"), 404, not_found),  # of another length
        (CALLBACK.replace("/tc/", "/tc-plain/"), _xml("a-1"), 404, not_found),  # no token set
        (CALLBACK.replace("/tc/", "/nope/"), _xml("a-1"), 404, not_found),  # no such account
        (CALLBACK, _xml("a-unknown"), 200, {"status": "ok", "scheduled": 0, "unknown_jobs": 1}),
        (  # another event, though it names a tracked job
            CALLBACK,
            _xml("a-1").replace(b"TaskFinish", b"WorkflowFinish"),
            200,
            {"status": "ignored"},
        ),
        (
            CALLBACK,
            b"<Response><JobsDetail><JobId>a-1</JobsDetail>",
            400,
            "not a CI job callback: the body is not well-formed XML",
        ),
        (
            CALLBACK,
            orjson.dumps({"JobId": "a-1", "State": "Failed"}),
            400,
            {"error": "not a CI job callback: no JobsDetail in the callback"},
        ),
        (  # more jobs than a burst of hints: never to be let through, so not a 429
            CALLBACK,
            _xml("a-1", *(f"a-x{n}" for n in range(HINT_BURST))),
            400,
            f"the callback names {HINT_BURST + 1} jobs; at most {HINT_BURST}",
        ),
        (
            CALLBACK,
            b"<Response>" + b" " * (10 * 1024 * 1024) + _xml("a-1"),
            413,
            {"error": f"the callback body exceeds {MAX_CALLBACK_BYTES} bytes"},
        ),
        # Sent in chunks, with no Content-Length to refuse it by: read up to the bound only.
        (CALLBACK, _ten_megabytes(), 413, None),
    ]
    for path, body, status, answer in forgeries:
        got, doc, _ = await _post(server, path, body)
        assert got == status, (path, doc)
        if isinstance(answer, str):
            assert doc["error"].startswith(answer), doc
        elif answer is not None:
            assert doc == answer
    await asyncio.sleep(QUIET)
    assert len(lookups.seen) == seen, lookups.seen[seen:]
    after = await scrape(server)
    assert _job_series(after) == _job_series(before)
    assert _job_series(after).count("\n") > 20  # really something compared
    assert _hints(after, "callback", "rejected") == 7  # two secrets, five bodies
    assert _hints(after, "callback", "rejected", account="tc-plain") == 1
    assert _hints(after, "callback", "unknown_job") == 1
    assert _hints(after, "callback", "scheduled") is None
    # The same window sees a genuine callback's look-up: the quiet above was not blindness.
    status, _, _ = await _post(server, CALLBACK, _xml("a-1"))
    assert status == 200
    await _looked_up(lookups, "a-1", 2)


async def test_hints_past_the_accounts_rate_are_refused_and_schedule_nothing(
    cloud: tuple[LookUps, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    lookups, url = cloud
    server = await _exporter(aiohttp_server, tmp_path, lookups, url)
    for _ in range(HINT_BURST):  # the burst, spent on a job that is not tracked
        status, _, _ = await _post(server, "/api/v1/jobs/tc/a-untracked/poll", **AUTH)
        assert status == 404
    status, doc, headers = await _post(server, "/api/v1/jobs/tc/a-1/poll", **AUTH)
    assert status == 429, doc
    assert doc == {"error": "too many poll hints for 'tc'; try again later"}
    assert headers["Retry-After"] == "1"
    # Callbacks share the account's bucket.
    status, _, headers = await _post(server, CALLBACK, _xml("a-2", "a-3"))
    assert (status, headers["Retry-After"]) == (429, "1")
    await asyncio.sleep(QUIET)
    assert [lookups.of(job_id) for job_id in JOBS] == [1, 1, 1]
    text = await scrape_until(server, lambda t: _hints(t, "api", "rate_limited") == 1)
    assert _hints(text, "callback", "rate_limited") == 2
    assert _hints(text, "api", "scheduled") is None

    # The bucket refills: a hint a moment later goes through.
    async def accepted() -> bool:
        status, _, _ = await _post(server, "/api/v1/jobs/tc/a-1/poll", **AUTH)
        return status == 202

    await eventually_async(accepted, interval=0.2, what="a hint accepted again")
    await _looked_up(lookups, "a-1", 2)


async def test_a_rotated_callback_token_file_takes_over_from_the_old_token(
    cloud: tuple[LookUps, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    lookups, url = cloud
    token_file = tmp_path / "callback-token"
    token_file.write_text(CALLBACK_TOKEN)
    path = tmp_path / "config.yaml"
    path.write_text(
        "poll_interval: 1h\nreload_check_interval: 0.1s\naccounts:\n"
        + _account("tc", url, f"    callback_token_file: {token_file}\n")
        + "jobs:\n  - {account: tc, id: a-1}\n"
    )
    environ = {"T_ID": SECRET_ID, "T_KEY": SECRET_KEY}
    server = await aiohttp_server(
        create_app(
            load_settings(path),
            environ=environ,
            loader=lambda: load_settings(path),
            config_path=path,
        )
    )
    await eventually_async(lambda: lookups.of("a-1") == 1, what="the first poll")
    assert (await _post(server, CALLBACK, _xml("a-1")))[0] == 200
    await _looked_up(lookups, "a-1", 2)
    rotated = "cb-token-rotated-0123456789"
    token_file.write_text(rotated)
    new = CALLBACK.replace(CALLBACK_TOKEN, rotated)

    async def new_token_in_force() -> bool:
        return (await _post(server, new, _xml("a-untracked")))[0] == 200

    await eventually_async(new_token_in_force, interval=0.1, what="the rotated token in force")
    assert (await _post(server, CALLBACK, _xml("a-1")))[0] == 404
    await asyncio.sleep(QUIET)
    assert lookups.of("a-1") == 2
