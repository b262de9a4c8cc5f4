"""The MetaStudio simulator answers as the cloud does.

The official SDK reads it, its gateway checks behave like APIG's, and jobs walk their scripts on
an injected clock, so every test here runs on loopback without sleeping.
"""

from __future__ import annotations

import ast
import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.utils.http_utils import sanitize_for_serialization
from huaweicloudsdkmetastudio.v1 import MetaStudioClient, ShowShortJobRequest

import exporter.simulator
from exporter.signing import huawei
from exporter.simulator import (
    ALL_SCRIPTS,
    DEMO_JOBS,
    SIMULATOR_KEY,
    MetaStudioSimulator,
    Script,
    Step,
    demo_simulator,
)
from exporter.simulator import scripts as sc
from tests.support import T0, FakeClock, serving, states_over
from tests.test_signing_huawei import sdk_sign

PROJECT = "3f0924078d1b471c884a5383d4dec9fa"
AK = "SIMTESTACCESSKEY0001"
SK = "sim-test-secret-key-0001"
TOKEN = "MIIsimulated-token"
SHORT = (("CREATING", 10.0), ("PROCESSING", 20.0), ("SUCCEED", 30.0))  # 60 s per pass

TOP_KEYS = ["job_type", "job_id", "state", "create_time", "lastupdate_time"]
PROPERTIES = {"speed", "sound", "snr", "reverb", "dnsmos_ovrl", "dnsmos_bak"}
PROPERTY_KEYS = {"expected", "actual", "suggestion", "suggestion_en", "status"}

Client = TestClient[web.Request, web.Application]


def job_path(job_id: str, project: str = PROJECT) -> str:
    return f"/v1/{project}/voice-training-manage/user/short-jobs/{job_id}"


def make_sim(clock: Callable[[], float], speed: float = 1.0) -> MetaStudioSimulator:
    return MetaStudioSimulator(
        project_id=PROJECT, credentials={AK: SK}, tokens={TOKEN}, clock=clock, speed=speed
    )


def signed_headers(
    client: Client,
    path: str,
    *,
    when: datetime,
    query: Sequence[tuple[str, str]] = (),
    access_key: str = AK,
    secret_key: str = SK,
    project: str | None = PROJECT,
) -> dict[str, str]:
    """Signed by the official SDK, as a client of the real service would sign it."""
    headers = {"Content-Type": "application/json"}
    if project is not None:
        headers["X-Project-Id"] = project
    host = f"{client.host}:{client.port}"
    return sdk_sign("GET", host, path, query, headers, b"", access_key, secret_key, when)


def at(clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


async def fetch(
    client: Client, clock: Callable[[], float], job_id: str
) -> tuple[int, dict[str, Any]]:
    """GET a job with a signature dated by the simulator's own (fake) clock."""
    path = job_path(job_id)
    async with client.get(path, headers=signed_headers(client, path, when=at(clock))) as resp:
        return resp.status, orjson.loads(await resp.read())


# -- The official SDK reads our answers ---------------------------------------------------------


@pytest.fixture
async def live(no_proxy: None) -> AsyncIterator[tuple[FakeClock, str]]:
    """A simulator on a real port, its clock pinned near now: the SDK signs with the real time."""
    clock = FakeClock(float(int(time.time())))
    sim = make_sim(clock)
    sim.add_job("succeeded", sc.HAPPY_PATH, started=clock.now - 2000)
    sim.add_job("failed", sc.FAILED, started=clock.now - 700)
    sim.add_job("undocumented", sc.UNDOCUMENTED_STATE, started=clock.now - 700)
    sim.add_job("millis", sc.OUT_OF_RANGE_SUCCEED, millis=True, started=clock.now - 1000)
    sim.add_job("unparseable", sc.UNPARSEABLE_ASSESSMENT, started=clock.now - 1000)
    async with serving(sim) as base_url:
        yield clock, base_url


def sdk_show(base_url: str, job_id: str, *, secret_key: str = SK, project: str = PROJECT) -> Any:
    config = HttpConfig.get_default_config()
    config.timeout = (2, 5)
    client = (
        MetaStudioClient.new_builder()
        .with_credentials(BasicCredentials(AK, secret_key, project))
        .with_http_config(config)
        .with_endpoints([base_url])
        .build()
    )
    return client.show_short_job(ShowShortJobRequest(job_id=job_id))


async def raw_answer(base_url: str, job_id: str) -> dict[str, Any]:
    async with (
        ClientSession() as session,
        session.get(base_url + job_path(job_id), headers={"X-Auth-Token": TOKEN}) as resp,
    ):
        assert resp.status == 200
        return orjson.loads(await resp.read())


async def test_start_simulator_returns_the_bound_loopback_url(
    live: tuple[FakeClock, str],
) -> None:
    _, base_url = live
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", base_url)
    assert match is not None
    assert int(match.group(1)) > 0


@pytest.mark.parametrize("job_id", ["succeeded", "failed", "undocumented", "millis", "unparseable"])
async def test_official_sdk_parses_exactly_what_the_simulator_serves(
    live: tuple[FakeClock, str], job_id: str
) -> None:
    _, base_url = live
    response = await asyncio.to_thread(sdk_show, base_url, job_id)
    assert response.status_code == 200
    parsed, raw = sanitize_for_serialization(response), await raw_answer(base_url, job_id)
    if job_id == "undocumented":
        # A state outside the SDK's JobState enum comes out of it as an empty object: the
        # exporter reads `state` as text, so a state the cloud adds is still exported.
        assert (parsed.pop("state"), raw.pop("state")) == ({}, "QUALITY_CHECKING")
    assert parsed == raw


async def test_official_sdk_sees_state_times_and_assessment_of_a_succeeded_job(
    live: tuple[FakeClock, str],
) -> None:
    clock, base_url = live
    response = await asyncio.to_thread(sdk_show, base_url, "succeeded")
    now = int(clock.now)
    assert response.job_type == "VOICE_ASSESS"
    assert response.job_id == "succeeded"
    assert response.state == "SUCCEED"
    assert response.create_time == now - 2000
    assert response.lastupdate_time == now - 2000 + 1245
    assert response.job_failed_code is None
    assert response.assess_result.snr.actual == "32.5dB"
    assert response.assess_result.snr.status == 0
    assert response.assess_result.speed.expected == "[3.5, 5.5]"
    assert response.assess_result.suggestion == "音频质量良好,可用于声音训练。"


async def test_official_sdk_sees_failure_code_undocumented_state_and_milliseconds(
    live: tuple[FakeClock, str],
) -> None:
    clock, base_url = live
    now = int(clock.now)
    failed = await asyncio.to_thread(sdk_show, base_url, "failed")
    assert (failed.state, failed.job_failed_code) == ("FAILED", "MSS.10030004")
    assert failed.job_failed_reason == sc.ENGINE_ERROR.reason
    assert failed.assess_result is None
    undocumented = await asyncio.to_thread(sdk_show, base_url, "undocumented")
    assert sanitize_for_serialization(undocumented.state) == {}  # outside the SDK enum
    millis = await asyncio.to_thread(sdk_show, base_url, "millis")
    assert millis.create_time == (now - 1000) * 1000
    assert millis.assess_result.snr.status == -1
    assert millis.assess_result.speed.status == 1
    unparseable = await asyncio.to_thread(sdk_show, base_url, "unparseable")
    assert unparseable.assess_result.snr.actual == "N/A"


async def test_official_sdk_gets_401_apigw_0301_for_a_wrong_secret_key(
    live: tuple[FakeClock, str],
) -> None:
    _, base_url = live
    with pytest.raises(ClientRequestException) as caught:
        await asyncio.to_thread(sdk_show, base_url, "succeeded", secret_key="not-the-key")
    assert caught.value.status_code == 401
    assert caught.value.error_code == "APIGW.0301"
    assert caught.value.request_id
    assert "not-the-key" not in caught.value.error_msg


async def test_official_sdk_gets_404_mss_00000003_for_an_unknown_job(
    live: tuple[FakeClock, str],
) -> None:
    _, base_url = live
    with pytest.raises(ClientRequestException) as caught:
        await asyncio.to_thread(sdk_show, base_url, "no-such-job")
    assert caught.value.status_code == 404
    assert caught.value.error_code == "MSS.00000003"
    assert caught.value.error_msg == "job no-such-job does not exist"


async def test_official_sdk_gets_403_for_another_project(
    live: tuple[FakeClock, str],
) -> None:
    _, base_url = live
    with pytest.raises(ClientRequestException) as caught:
        await asyncio.to_thread(sdk_show, base_url, "succeeded", project="0" * 32)
    assert caught.value.status_code == 403
    assert caught.value.error_code == "APIGW.0302"


# -- The gateway ----------------------------------------------------------------------------------


@pytest.fixture
async def client(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> tuple[MetaStudioSimulator, Client]:
    sim = make_sim(clock)
    sim.add_job("job-a", sc.HAPPY_PATH, started=T0 - 5000)
    sim.add_job("job-b", sc.FAILED, started=T0 - 5000)
    return sim, await aiohttp_client(sim.app())


async def test_signed_request_gets_the_documented_fields_and_nothing_else(
    client: tuple[MetaStudioSimulator, Client], clock: FakeClock
) -> None:
    _, http = client
    status, body = await fetch(http, clock, "job-a")
    assert status == 200
    assert list(body) == [*TOP_KEYS, "assess_result"]
    assert body["job_type"] == "VOICE_ASSESS"
    assert body["state"] == "SUCCEED"
    assert set(body["assess_result"]) == PROPERTIES | {"suggestion"}
    for name in PROPERTIES:
        assert set(body["assess_result"][name]) == PROPERTY_KEYS
        assert body["assess_result"][name]["status"] in (-1, 0, 1)
    for key in ("create_time", "lastupdate_time"):
        assert isinstance(body[key], int)
        assert 1 <= body[key] <= 2147483647

    status, body = await fetch(http, clock, "job-b")
    assert status == 200
    assert list(body) == [*TOP_KEYS[:3], "job_failed_code", "job_failed_reason", *TOP_KEYS[3:]]


async def test_trailing_slash_and_signed_query_parameters_are_accepted(
    client: tuple[MetaStudioSimulator, Client], clock: FakeClock
) -> None:
    _, http = client
    path = job_path("job-a") + "/"
    query = [("b", "2 3"), ("a", "1")]
    headers = signed_headers(http, path, when=at(clock), query=query)
    async with http.get(path, params=query, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert (await resp.json())["job_id"] == "job-a"


@pytest.mark.parametrize(
    ("skew", "status", "code"),
    [
        (-16 * 60, 401, "APIGW.0303"),
        (16 * 60, 401, "APIGW.0303"),
        (-14 * 60, 200, None),
        (14 * 60, 200, None),
    ],
)
async def test_sdk_date_further_than_15_minutes_from_the_simulator_clock_gets_apigw_0303(
    client: tuple[MetaStudioSimulator, Client],
    clock: FakeClock,
    skew: int,
    status: int,
    code: str | None,
) -> None:
    _, http = client
    path = job_path("job-a")
    when = datetime.fromtimestamp(T0 + skew, UTC)
    async with http.get(path, headers=signed_headers(http, path, when=when)) as resp:
        assert resp.status == status
        assert (await resp.json()).get("error_code") == code


def _case_headers(http: Client, case: str, when: datetime) -> tuple[str, dict[str, str]]:
    path = job_path("job-a")
    if case == "no credentials":
        return path, {}
    if case == "not an SDK-HMAC-SHA256 header":
        return path, {"Authorization": "Basic c2VjcmV0", "X-Project-Id": PROJECT}
    if case == "Authorization without a signature":
        return path, {"Authorization": f"SDK-HMAC-SHA256 Access={AK}", "X-Project-Id": PROJECT}
    if case == "unknown access key":
        return path, signed_headers(http, path, when=when, access_key="SOMEONEELSE")
    if case == "wrong secret key":
        return path, signed_headers(http, path, when=when, secret_key="wrong-" + SK)
    if case == "missing X-Sdk-Date":
        headers = signed_headers(http, path, when=when)
        del headers[huawei.DATE_HEADER]
        return path, headers
    if case == "garbled X-Sdk-Date":
        return path, {**signed_headers(http, path, when=when), huawei.DATE_HEADER: "yesterday"}
    if case == "signed for another job":
        return job_path("job-b"), signed_headers(http, path, when=when)
    if case == "signed header changed in transit":
        return path, {**signed_headers(http, path, when=when), "Content-Type": "text/plain"}
    if case == "missing X-Project-Id":
        return path, signed_headers(http, path, when=when, project=None)
    if case == "unknown token":
        return path, {"X-Auth-Token": "not-" + TOKEN}
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "no credentials",
        "not an SDK-HMAC-SHA256 header",
        "Authorization without a signature",
        "unknown access key",
        "wrong secret key",
        "missing X-Sdk-Date",
        "garbled X-Sdk-Date",
        "signed for another job",
        "signed header changed in transit",
        "missing X-Project-Id",
        "unknown token",
    ],
)
async def test_bad_credentials_get_401_apigw_0301_without_echoing_secrets(
    client: tuple[MetaStudioSimulator, Client], clock: FakeClock, case: str
) -> None:
    _, http = client
    path, headers = _case_headers(http, case, at(clock))
    async with http.get(path, headers=headers) as resp:
        text = await resp.text()
        assert resp.status == 401
        assert list(orjson.loads(text)) == ["error_code", "error_msg"]
        assert orjson.loads(text)["error_code"] == "APIGW.0301"
    assert SK not in text
    assert TOKEN not in text
    signature = headers.get("Authorization", "").rpartition("Signature=")[2]
    assert not signature or signature not in text


async def test_x_project_id_other_than_the_path_project_gets_403(
    client: tuple[MetaStudioSimulator, Client], clock: FakeClock
) -> None:
    _, http = client
    path = job_path("job-a")
    headers = signed_headers(http, path, when=at(clock), project="f" * 32)
    async with http.get(path, headers=headers) as resp:
        assert resp.status == 403
        assert (await resp.json())["error_code"] == "APIGW.0302"


async def test_a_project_the_credentials_do_not_belong_to_gets_403(
    client: tuple[MetaStudioSimulator, Client], clock: FakeClock
) -> None:
    _, http = client
    path = job_path("job-a", project="f" * 32)
    headers = signed_headers(http, path, when=at(clock), project="f" * 32)
    async with http.get(path, headers=headers) as resp:
        assert resp.status == 403
    async with http.get(path, headers={"X-Auth-Token": TOKEN}) as resp:
        assert resp.status == 403


async def test_x_auth_token_in_the_configured_set_is_accepted(
    client: tuple[MetaStudioSimulator, Client],
) -> None:
    _, http = client
    async with http.get(job_path("job-b"), headers={"X-Auth-Token": TOKEN}) as resp:
        assert resp.status == 200
        assert (await resp.json())["state"] == "FAILED"


async def test_unknown_and_removed_jobs_get_404_mss_00000003(
    client: tuple[MetaStudioSimulator, Client], clock: FakeClock
) -> None:
    sim, http = client
    assert await fetch(http, clock, "job-x") == (
        404,
        {"error_code": "MSS.00000003", "error_msg": "job job-x does not exist"},
    )
    sim.remove_job("job-a")
    assert sim.job_ids() == ["job-b"]
    status, body = await fetch(http, clock, "job-a")
    assert (status, body["error_code"]) == (404, "MSS.00000003")


async def test_other_routes_get_the_gateway_json_404(
    client: tuple[MetaStudioSimulator, Client],
) -> None:
    _, http = client
    async with http.get("/v1/jobs", headers={"X-Auth-Token": TOKEN}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error_code"] == "APIGW.0101"


# -- Jobs on the clock --------------------------------------------------------------------------


async def test_fake_clock_walks_the_audit_loop_through_every_state_in_order(
    aiohttp_client: Callable[..., Any],
) -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("audit", sc.AUDIT_LOOP)
    http = await aiohttp_client(sim.app())
    expected = [
        (0, "CREATING", None),
        (29, "CREATING", None),
        (30, "SYSTEM_AUDITING", None),
        (100, "AUDITING", None),
        (330, "AUDIT_FAILED", "MSS.10010001"),
        (929, "AUDIT_FAILED", "MSS.10010001"),
        (930, "UPLOADING", None),
        (1100, "AUDITING", None),
        (1300, "AUDIT_FAILED", "MSS.10010002"),
        (1900, "UPLOADING", None),
        (2000, "AUDITING", None),
        (2200, "WAITING", None),
        (2300, "PROCESSING", None),
        (2900, "RESULT_REVIEW", None),
        (3000, "SUCCEED", None),
        (100_000, "SUCCEED", None),
    ]
    seen = []
    for offset, _, _ in expected:
        clock.now = T0 + offset
        status, body = await fetch(http, clock, "audit")
        assert status == 200
        assert sim.state_of("audit") == body["state"]
        seen.append((offset, body["state"], body.get("job_failed_code")))
    assert seen == expected


async def test_lastupdate_time_is_when_the_current_state_began(
    aiohttp_client: Callable[..., Any],
) -> None:
    clock = FakeClock(T0 + 1300)
    sim = make_sim(clock)
    sim.add_job("audit", sc.AUDIT_LOOP, started=T0)
    http = await aiohttp_client(sim.app())
    _, body = await fetch(http, clock, "audit")
    assert (body["create_time"], body["lastupdate_time"]) == (int(T0), int(T0) + 1260)
    assert body["job_failed_reason"] == sc.AUDIT_REJECTED_SHORT.reason


def test_assessment_is_reported_from_result_review_on() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("happy", sc.HAPPY_PATH, started=T0)
    sim.add_job("odd", sc.UNDOCUMENTED_STATE, started=T0)
    for job_id, offset, present in [
        ("happy", 1124, False),
        ("happy", 1125, True),
        ("happy", 1245, True),
        ("happy", 1e6, True),
        ("odd", 689, False),
        ("odd", 690, True),
    ]:
        clock.now = T0 + offset
        assert ("assess_result" in sim.answer(job_id)) is present, (job_id, offset)


def test_looping_job_restarts_with_a_new_create_time_after_its_hold() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("loop", SHORT, loop=True)
    sim.add_job("once", SHORT)
    observed = []
    for offset in (0, 10, 30, 59, 60, 75, 125):
        clock.now = T0 + offset
        answer = sim.answer("loop")
        observed.append((answer["state"], answer["create_time"], answer["lastupdate_time"]))
    base = int(T0)
    assert observed == [
        ("CREATING", base, base),
        ("PROCESSING", base, base + 10),
        ("SUCCEED", base, base + 30),
        ("SUCCEED", base, base + 30),
        ("CREATING", base + 60, base + 60),
        ("PROCESSING", base + 60, base + 70),
        ("CREATING", base + 120, base + 120),
    ]
    clock.now = T0 + 10_000
    assert sim.state_of("once") == "SUCCEED"
    assert sim.answer("once")["lastupdate_time"] == base + 30


def test_a_job_stuck_in_its_last_step_keeps_its_times() -> None:
    clock = FakeClock(T0 + 1_000)
    sim = make_sim(clock)
    sim.add_job("stuck", [("CREATING", 10.0), ("PROCESSING", float("inf"))], started=T0)
    answer = sim.answer("stuck")
    base = int(T0)
    assert (answer["state"], answer["create_time"], answer["lastupdate_time"]) == (
        "PROCESSING",
        base,
        base + 10,
    )


def test_millisecond_job_reports_epoch_milliseconds() -> None:
    clock = FakeClock(T0 + 40)
    sim = make_sim(clock)
    sim.add_job("ms", SHORT, millis=True, started=T0 + 0.25)
    sim.add_job("s", SHORT, started=T0 + 0.25)
    ms = sim.answer("ms")
    s = sim.answer("s")
    assert (ms["create_time"], ms["lastupdate_time"]) == (1_750_000_000_250, 1_750_000_030_250)
    assert (s["create_time"], s["lastupdate_time"]) == (1_750_000_000, 1_750_000_030)


def test_speed_compresses_simulated_seconds() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock, speed=30)
    sim.add_job("happy", sc.HAPPY_PATH)
    clock.now = T0 + 1
    assert sim.state_of("happy") == "SYSTEM_AUDITING"
    clock.now = T0 + 20
    assert sim.state_of("happy") == "PROCESSING"
    assert sim.answer("happy")["lastupdate_time"] == int(T0 + 525 / 30)


def test_scripted_assessments_cover_every_range_notation_and_out_of_range_status() -> None:
    out = sc.OUT_OF_RANGE.to_json()
    statuses = {out[name]["status"] for name in PROPERTIES}  # type: ignore[index]
    assert statuses == {-1, 0, 1}
    expected = {getattr(sc.IN_RANGE, name).expected for name in PROPERTIES}
    assert {"[3.5, 5.5]", ">=25", "<=0.6"} <= expected
    assert any("~" in value for value in expected)
    assert sc.UNPARSEABLE.snr.actual == "N/A"
    assert any(script.name == "undocumented_state" for script in ALL_SCRIPTS)
    undocumented = {step.state for script in ALL_SCRIPTS for step in script.steps} - set(
        sc.DOCUMENTED_STATES
    )
    assert undocumented == {"QUALITY_CHECKING"}


async def test_overrides_pin_a_state_or_a_whole_answer_until_cleared(
    client: tuple[MetaStudioSimulator, Client], clock: FakeClock
) -> None:
    sim, http = client
    clock.now = T0 + 5
    sim.set_override("job-a", state="FAILED")
    assert sim.state_of("job-a") == "FAILED"
    status, body = await fetch(http, clock, "job-a")
    assert status == 200
    assert (body["state"], body["job_failed_code"]) == ("FAILED", "MSS.10030004")
    assert body["lastupdate_time"] == int(T0 + 5)
    assert "assess_result" not in body

    sim.set_override("job-a", body={"error_code": "MSS.00000001", "error_msg": "busy"}, status=500)
    assert await fetch(http, clock, "job-a") == (
        500,
        {"error_code": "MSS.00000001", "error_msg": "busy"},
    )

    sim.set_override("job-a", body=b'{"state": ')
    path = job_path("job-a")
    async with http.get(path, headers=signed_headers(http, path, when=at(clock))) as resp:
        assert (resp.status, await resp.read()) == (200, b'{"state": ')

    sim.clear_override("job-a")
    status, body = await fetch(http, clock, "job-a")
    assert (status, body["state"]) == (200, "SUCCEED")


def test_scripts_reject_steps_that_could_never_be_observed() -> None:
    with pytest.raises(ValueError, match="positive"):
        Script("bad", (Step("CREATING", 0), Step("SUCCEED", 10)))
    with pytest.raises(ValueError, match="infinite only on the last step"):
        Script("bad", (Step("CREATING", float("inf")), Step("SUCCEED", 10)))
    with pytest.raises(ValueError, match="no steps"):
        Script("bad", ())
    sim = make_sim(FakeClock(T0))
    sim.add_job("dup", SHORT)
    with pytest.raises(ValueError, match="already exists"):
        sim.add_job("dup", SHORT)


# -- The demo ------------------------------------------------------------------------------------


def _demo(clock: FakeClock, jobs: int = len(DEMO_JOBS)) -> MetaStudioSimulator:
    return demo_simulator(project_id=PROJECT, access_key=AK, secret_key=SK, clock=clock, jobs=jobs)


def test_demo_has_fixed_uuid_job_ids_covering_every_script() -> None:
    sim = _demo(FakeClock(T0))
    assert sim.job_ids() == [job_id for job_id, *_ in DEMO_JOBS]
    assert _demo(FakeClock(T0 + 99)).job_ids() == sim.job_ids()
    uuid_like = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(uuid_like.fullmatch(job_id) for job_id in sim.job_ids())
    assert {script.name for _, script, _, _ in DEMO_JOBS} == {s.name for s in ALL_SCRIPTS}
    assert any(millis for _, _, millis, _ in DEMO_JOBS)


def test_demo_shows_many_states_at_start_and_more_within_ten_seconds() -> None:
    clock = FakeClock(T0)
    sim = _demo(clock)
    at_start, seen, changed = states_over(sim, clock, seconds=10)
    assert len(at_start) >= 5
    assert {"SUCCEED", "FAILED", "SPLIT_FAILED", "AUDIT_FAILED", "QUALITY_CHECKING"} <= seen
    assert len(seen) >= 10
    assert len(changed) >= 4


def test_demo_jobs_loop_forever() -> None:
    clock = FakeClock(T0)
    sim = _demo(clock)
    first = {job_id: sim.answer(job_id) for job_id in sim.job_ids()}
    clock.now = T0 + 24 * 3600
    later = {job_id: sim.answer(job_id) for job_id in sim.job_ids()}
    for job_id in sim.job_ids():
        assert later[job_id]["create_time"] > first[job_id]["create_time"]


def test_demo_scales_to_many_jobs_with_distinct_deterministic_ids() -> None:
    ids = _demo(FakeClock(T0), jobs=50).job_ids()
    assert len(set(ids)) == 50
    assert ids[:8] == [job_id for job_id, *_ in DEMO_JOBS]
    assert _demo(FakeClock(T0), jobs=50).job_ids() == ids


def test_app_exposes_its_simulator_under_a_typed_key() -> None:
    sim = make_sim(FakeClock(T0))
    assert sim.app()[SIMULATOR_KEY] is sim


def test_simulator_never_imports_prometheus_client() -> None:
    package = Path(exporter.simulator.__file__).parent
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(name.split(".")[0] == "prometheus_client" for name in names), source
