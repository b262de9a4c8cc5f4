"""The MetaStudio provider: response parsing, state mapping, error mapping, request signing."""

from __future__ import annotations

import gzip
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from exporter.accounts import HuaweiAccount, HuaweiCredentials
from exporter.model import (
    AuthError,
    JobSnapshot,
    NetworkError,
    NotFoundError,
    Phase,
    PollTimeout,
    ResponseParseError,
    ThrottledError,
    UpstreamError,
)
from exporter.providers.base import MAX_BODY_BYTES
from exporter.providers.huawei_metastudio import HuaweiMetaStudio, parse_short_job
from exporter.signing import huawei
from exporter.states import HUAWEI_STATES, HUAWEI_TABLE, phase_by_rule
from tests.support import ServerFactory

JOB = "26f06524-4f75-4b3a-a853-b649a21aaf66"
PROJECT = "3f0924078d1b471c884a5383d4dec9fa"

DOCUMENTED_BODY: dict[str, Any] = {
    "job_type": "VOICE_ASSESS",
    "job_id": JOB,
    "state": "SUCCEED",
    "create_time": 1763510400,
    "lastupdate_time": 1763514000,
    "assess_result": {
        "speed": {
            "expected": "[3.5, 5.5]",
            "actual": "4.2",
            "suggestion": "语速适中",
            "suggestion_en": "Speaking rate is fine.",
            "status": 0,
        },
        "sound": {"expected": "45~75", "actual": "80dB", "status": 1},
        "snr": {"expected": ">=25", "actual": "18.5dB", "status": -1},
        "reverb": {"expected": "<=0.6", "actual": "0.3", "status": 0},
        "dnsmos_ovrl": {"expected": ">=3.0", "actual": "N/A", "status": 0},
        "dnsmos_bak": {"expected": "somewhere", "actual": "3.9", "status": 0},
        "suggestion": "整体良好",
    },
}


def test_every_documented_state_has_a_phase_and_the_issue_examples_hold() -> None:
    # The SDK's JobState: the short-job document's 14 and the two USER_* states it omits.
    assert len(HUAWEI_STATES) == 16
    for failed in ("AUDIT_FAILED", "SPLIT_FAILED", "USER_REVIEW_REJECT", "FAILED"):
        assert HUAWEI_TABLE.phase_of(failed) == (Phase.FAILED, True)
    for pending in ("CREATING", "WAITING_SPLIT", "WAITING"):
        assert HUAWEI_TABLE.phase_of(pending) == (Phase.PENDING, True)
    assert HUAWEI_TABLE.phase_of("SUCCEED") == (Phase.SUCCEEDED, True)
    for running in ("PROCESSING", "USER_RESULT_REVIEW", "UPLOADING", "SYSTEM_AUDITING"):
        assert HUAWEI_TABLE.phase_of(running) == (Phase.RUNNING, True)
    # Before they were documented, the rule for undocumented states gave them the same phases.
    for state in ("USER_RESULT_REVIEW", "USER_REVIEW_REJECT"):
        assert phase_by_rule(state) is HUAWEI_STATES[state], state


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        ("USER_REVIEW_PENDING", Phase.RUNNING),
        ("ADMIN_REJECT", Phase.FAILED),
        ("CANCELLED", Phase.CANCELLED),
        ("QUEUED", Phase.PENDING),
        ("ARCHIVED", Phase.UNKNOWN),
        ("COMPLETED", Phase.SUCCEEDED),
    ],
)
def test_undocumented_states_map_by_the_documented_rule(state: str, phase: Phase) -> None:
    assert phase_by_rule(state) is phase
    assert HUAWEI_TABLE.phase_of(state) == (phase, False)


def test_the_documented_response_parses_into_a_snapshot() -> None:
    snap = parse_short_job(orjson.dumps(DOCUMENTED_BODY), JOB)
    assert (snap.job_id, snap.job_type, snap.state) == (JOB, "VOICE_ASSESS", "SUCCEED")
    assert snap.phase is Phase.SUCCEEDED
    assert snap.terminal
    assert snap.created_at == 1763510400.0
    assert snap.updated_at == 1763514000.0
    by_metric = {a.metric: a for a in snap.assessments}
    assert [a.metric for a in snap.assessments] == [
        "speed",
        "sound",
        "snr",
        "reverb",
        "dnsmos_ovrl",
        "dnsmos_bak",
    ]
    assert (
        by_metric["speed"].actual_value,
        by_metric["speed"].expected_min,
        by_metric["speed"].expected_max,
    ) == (4.2, 3.5, 5.5)
    assert by_metric["speed"].suggestion == "语速适中"
    assert by_metric["snr"].status == -1
    assert by_metric["snr"].actual_value == 18.5
    assert by_metric["reverb"].expected_min is None
    assert by_metric["reverb"].expected_max == 0.6
    assert by_metric["dnsmos_ovrl"].actual_value is None
    assert snap.suggestion == "整体良好"
    assert set(snap.parse_errors) == {
        "assess_result.dnsmos_ovrl.actual",
        "assess_result.dnsmos_bak.expected",
    }


def test_millisecond_times_are_read_as_milliseconds() -> None:
    body = {**DOCUMENTED_BODY, "create_time": 1763510400123, "lastupdate_time": 1763514000000}
    snap = parse_short_job(orjson.dumps(body), JOB)
    assert snap.created_at == pytest.approx(1763510400.123)
    assert snap.updated_at == 1763514000.0


def test_a_failed_job_carries_its_code_and_reason() -> None:
    body = {
        "job_type": "VOICE_ASSESS",
        "job_id": JOB,
        "state": "AUDIT_FAILED",
        "job_failed_code": "MSS.10010001",
        "job_failed_reason": "background noise",
    }
    snap = parse_short_job(orjson.dumps(body), JOB)
    assert snap.phase is Phase.FAILED
    assert not snap.terminal
    assert (snap.failure_code, snap.failure_reason) == ("MSS.10010001", "background noise")


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[]", b"null", b'{"job_id": "x"}', b'{"state": 3}', b"\xff\xfe"]
)
def test_unusable_bodies_are_a_parse_error(body: bytes) -> None:
    with pytest.raises(ResponseParseError):
        parse_short_job(body, JOB)


def test_bad_fields_are_recorded_and_the_rest_is_kept() -> None:
    body = {
        "state": "PROCESSING",
        "create_time": "yesterday",
        "lastupdate_time": -5,
        "assess_result": {"snr": "loud", "speed": {"status": 7, "actual": "4"}},
    }
    snap = parse_short_job(orjson.dumps(body), JOB)
    assert snap.state == "PROCESSING"
    assert snap.job_id == JOB
    assert snap.job_type == "unknown"
    assert snap.created_at is None
    assert snap.updated_at is None
    assert set(snap.parse_errors) == {
        "create_time",
        "lastupdate_time",
        "assess_result.snr",
        "assess_result.speed.status",
    }


# -- over HTTP -------------------------------------------------------------------------------


def _account(endpoint: str, **extra: Any) -> HuaweiAccount:
    return HuaweiAccount(
        provider="huawei_metastudio",
        region="cn-north-4",
        project_id=PROJECT,
        endpoint=endpoint,
        **extra,
    )


AKSK = HuaweiCredentials(access_key=SecretStr("ak-1"), secret_key=SecretStr("sk-1"))


def _provider(
    session: aiohttp.ClientSession,
    endpoint: str,
    *,
    timeout: float = 5,
    credentials: HuaweiCredentials = AKSK,
    **account: Any,
) -> HuaweiMetaStudio:
    return HuaweiMetaStudio(
        account="hw",
        config=_account(endpoint, **account),
        credentials=credentials,
        session=session,
        timeout=timeout,
        now=time.time,
    )


@asynccontextmanager
async def _provider_against(
    aiohttp_server: ServerFactory,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    **options: Any,
) -> AsyncIterator[HuaweiMetaStudio]:
    """A provider (`options` as `_provider` takes them) whose endpoint answers every GET with
    `handler`."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        yield _provider(session, str(server.make_url("/")), **options)


def _verifies(request: web.Request) -> bool:
    """Whether the request carries a valid signature of access key ak-1, as the gateway checks."""
    auth = huawei.parse_authorization(request.headers["Authorization"])
    assert auth is not None
    assert auth.access_key == "ak-1"
    when = huawei.parse_date(request.headers["X-Sdk-Date"])
    assert when is not None
    return huawei.verify(
        method=request.method,
        path=request.raw_path,
        query=[],
        headers=request.headers,
        body=b"",
        secret_key="sk-1",
        auth=auth,
        when=when,
    )


async def _fetched_with_request(
    aiohttp_server: ServerFactory, answer: Callable[[web.Request], web.Response], **options: Any
) -> tuple[JobSnapshot, web.Request]:
    """Fetch JOB from an endpoint that answers with `answer`: the snapshot, and the one request
    the provider sent."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return answer(request)

    async with _provider_against(aiohttp_server, handler, **options) as provider:
        snap = await provider.fetch(JOB)
    (request,) = seen
    return snap, request


async def test_requests_are_signed_with_project_and_app_user_headers(
    aiohttp_server: ServerFactory,
) -> None:
    def answer(request: web.Request) -> web.Response:
        ok = _verifies(request)
        return web.json_response(
            DOCUMENTED_BODY if ok else {"error_code": "APIGW.0301"}, status=200 if ok else 401
        )

    snap, request = await _fetched_with_request(aiohttp_server, answer, app_user_id="user-7")
    assert snap.state == "SUCCEED"
    assert request.path == f"/v1/{PROJECT}/voice-training-manage/user/short-jobs/{JOB}"
    assert request.headers["X-Project-Id"] == PROJECT
    assert request.headers["X-App-UserId"] == "user-7"
    assert "host" in request.headers["Authorization"].split("SignedHeaders=")[1]
    assert "X-Auth-Token" not in request.headers


async def test_token_auth_sends_x_auth_token_and_does_not_sign(
    aiohttp_server: ServerFactory,
) -> None:
    token = HuaweiCredentials(token=SecretStr("tok-123"))
    _, request = await _fetched_with_request(
        aiohttp_server, lambda _: web.json_response(DOCUMENTED_BODY), credentials=token
    )
    assert request.headers["X-Auth-Token"] == "tok-123"
    assert "Authorization" not in request.headers
    assert "X-Project-Id" not in request.headers


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "code"),
    [
        (
            401,
            {"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication"},
            {},
            AuthError,
            "APIGW.0301",
        ),
        (403, {"error_code": "APIGW.0302", "error_msg": "forbidden"}, {}, AuthError, "APIGW.0302"),
        (
            429,
            {"error_code": "APIGW.0308", "error_msg": "throttled"},
            {"Retry-After": "7"},
            ThrottledError,
            "APIGW.0308",
        ),
        (
            400,
            {"error_code": "APIGW.0308", "error_msg": "throttled"},
            {},
            ThrottledError,
            "APIGW.0308",
        ),
        (
            404,
            {"error_code": "MSS.00000003", "error_msg": "no such job"},
            {},
            NotFoundError,
            "MSS.00000003",
        ),
        (
            400,
            {"error_code": "MSS.00000001", "error_msg": "bad parameter"},
            {},
            UpstreamError,
            "MSS.00000001",
        ),
        (503, "<html>bad gateway</html>", {}, UpstreamError, None),
    ],
)
async def test_error_answers_become_typed_errors_with_the_cloud_code(
    aiohttp_server: ServerFactory,
    status: int,
    body: Any,
    headers: dict[str, str],
    error: type[Exception],
    code: str | None,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    async with _provider_against(aiohttp_server, handler) as provider:
        with pytest.raises(error) as caught:
            await provider.fetch(JOB)
    assert caught.value.code == code  # type: ignore[attr-defined]
    assert caught.value.status == str(status)  # type: ignore[attr-defined]
    if isinstance(caught.value, ThrottledError) and status == 429:
        assert caught.value.retry_after == 7.0
    if isinstance(caught.value, UpstreamError):
        assert caught.value.retryable is (status >= 500)


async def test_a_slow_answer_times_out(aiohttp_server: ServerFactory) -> None:
    import asyncio

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response(DOCUMENTED_BODY)

    async with _provider_against(aiohttp_server, handler, timeout=0.2) as provider:
        with pytest.raises(PollTimeout):
            await provider.fetch(JOB)


async def test_an_oversized_body_is_refused(aiohttp_server: ServerFactory) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b" " * (2 << 20), content_type="application/json")

    async with _provider_against(aiohttp_server, handler) as provider:
        with pytest.raises(ResponseParseError, match="cap"):
            await provider.fetch(JOB)


async def test_a_closed_port_is_a_network_error() -> None:
    async with aiohttp.ClientSession() as session:
        provider = _provider(session, "http://127.0.0.1:9")
        with pytest.raises(NetworkError):
            await provider.fetch(JOB)


def test_the_default_endpoint_follows_the_region() -> None:
    account = HuaweiAccount(provider="huawei_metastudio", region="ap-southeast-1", project_id="p")
    assert account.base_url == "https://metastudio.ap-southeast-1.myhuaweicloud.com"


@pytest.mark.parametrize(
    ("state", "terminal"),
    [
        ("SUCCEED", True),
        ("FAILED", True),
        ("AUDIT_FAILED", False),
        ("SPLIT_FAILED", False),
        ("COMPLETED", True),
        ("USER_REVIEW_REJECT", False),
        ("USER_RESULT_REVIEW", False),
    ],
)
def test_only_finished_states_are_terminal(state: str, terminal: bool) -> None:
    snap = parse_short_job(
        orjson.dumps({"state": state, "create_time": 1, "lastupdate_time": 9}), JOB
    )
    assert snap.terminal is terminal
    assert (snap.finished_at == 9.0) is terminal
    assert (snap.duration == 8.0) is terminal


async def test_an_unchanged_answer_gives_back_the_last_snapshot_unparsed(
    aiohttp_server: ServerFactory,
) -> None:
    """Most polls find a job as it was; the exposition cache and the store see that by
    identity, and the parse (a sixth of a poll's CPU) is skipped."""
    bodies = [DOCUMENTED_BODY, DOCUMENTED_BODY, {**DOCUMENTED_BODY, "state": "FAILED"}]

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(bodies.pop(0))

    async with _provider_against(aiohttp_server, handler) as provider:
        first = await provider.fetch(JOB)
        again = await provider.fetch(JOB, first)
        changed = await provider.fetch(JOB, first)
    assert again is first
    assert changed is not first
    assert changed.state == "FAILED"
    assert first.body_hash is not None
    assert changed.body_hash != first.body_hash
    # The hash is bookkeeping, not part of what the job is.
    assert first == parse_short_job(orjson.dumps(DOCUMENTED_BODY), JOB)
    assert "body_hash" not in repr(first)


@pytest.mark.parametrize(
    ("job_id", "on_the_wire"),
    [
        ("26f06524-4f75-4b3a-a853-b649a21aaf66", "26f06524-4f75-4b3a-a853-b649a21aaf66"),
        ("odd id/ü~", "odd%20id%2F%C3%BC~"),
    ],
)
async def test_job_ids_are_quoted_only_when_they_need_it_and_the_signature_holds(
    aiohttp_server: ServerFactory, job_id: str, on_the_wire: str
) -> None:
    verified: list[tuple[str, bool]] = []

    async def handler(request: web.Request) -> web.Response:
        verified.append((request.raw_path, _verifies(request)))
        return web.json_response({**DOCUMENTED_BODY, "job_id": job_id})

    async with _provider_against(aiohttp_server, handler) as provider:
        snap = await provider.fetch(job_id)
    assert snap.job_id == job_id
    assert verified == [
        (f"/v1/{PROJECT}/voice-training-manage/user/short-jobs/{on_the_wire}", True)
    ]


@pytest.mark.parametrize("sized", [True, False])
async def test_a_compressed_answer_is_held_to_the_cap_as_it_inflates(
    aiohttp_server: ServerFactory, sized: bool
) -> None:
    """A 20 MB gzip bomb of 20 KB: its Content-Length is small, what it inflates to is not."""
    bomb = gzip.compress(b"{" + b" " * (20 << 20) + b"}", compresslevel=9)
    assert len(bomb) < MAX_BODY_BYTES

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        if sized:
            return web.Response(body=bomb, headers=headers)
        response = web.StreamResponse(headers=headers)  # chunked: no Content-Length
        await response.prepare(request)
        await response.write(bomb)
        await response.write_eof()
        return response

    async with _provider_against(aiohttp_server, handler) as provider:
        with pytest.raises(ResponseParseError, match="over the 1048576-byte cap"):
            await provider.fetch(JOB)
