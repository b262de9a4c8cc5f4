"""The Tencent CI simulator answers as the cloud does.

cos-python-sdk-v5 calls it over loopback, its auth checks behave like CI's, and jobs walk their
scripts on an injected clock, so every test here runs without sleeping.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from defusedxml import ElementTree
from qcloud_cos import CosConfig, CosS3Client, CosServiceError
from qcloud_cos.cos_auth import CosS3Auth
from qcloud_cos.cos_comm import format_dict, xml_to_dict

from exporter.signing import tencent
from exporter.simulator import (
    DEMO_TENCENT_JOBS,
    SEED_SAMPLE_BODY,
    TENCENT_SIMULATOR_KEY,
    TencentCISimulator,
    demo_tencent_simulator,
    oversized_body,
    xml_bomb_body,
)
from exporter.simulator import tencent_scripts as ts
from exporter.simulator.__main__ import _parse_args
from exporter.simulator.tencent_ci import DEMO_QUEUE_IDS, MAX_BATCH
from tests.support import T0, FakeClock, serving, states_over

BUCKET = "examplebucket-1250000000"
SECRET_ID = "AKIDsimtest0000000000000000000000001"
SECRET_KEY = "sim-test-secret-key-0001"
TEMP_ID = "AKIDsimtemp0000000000000000000000002"
TEMP_KEY = "sim-temp-secret-key-0002"
TOKEN = "sim-temporary-token-0002"
QUEUE = "p893bcda225bf4945a378da6662e81a89"
OTHER_QUEUE = "p73fc66f5e121531194c27ca7c20760d7"
SCALARS = ["Code", "Message", "JobId", "State", "CreationTime", "StartTime", "EndTime"]
SCALARS += ["QueueId", "Tag"]

Client = TestClient[web.Request, web.Application]


def make_sim(clock: Callable[[], float], speed: float = 1.0) -> TencentCISimulator:
    return TencentCISimulator(
        bucket=BUCKET,
        credentials={SECRET_ID: SECRET_KEY, TEMP_ID: TEMP_KEY},
        tokens={TEMP_ID: TOKEN},
        clock=clock,
        speed=speed,
    )


def parse(body: bytes) -> Element:
    return ElementTree.fromstring(body)


def details(root: Element) -> list[dict[str, str]]:
    """Each JobsDetail's scalar children (those without children of their own)."""
    return [
        {child.tag: child.text or "" for child in detail if len(child) == 0}
        for detail in root.findall("JobsDetail")
    ]


def auth_header(
    client: Client,
    path: str,
    *,
    at: float,
    params: Mapping[str, str] | None = None,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    token: str | None = None,
    sign_token: bool = True,
    expire: int = 600,
) -> dict[str, str]:
    """Headers signed by *our* signer, Host exactly as sent (with the port)."""
    headers = {"Host": f"{client.host}:{client.port}"}
    signed = dict(headers)
    if token is not None:
        headers[tencent.CI_TOKEN_HEADER] = token
        if sign_token:
            signed[tencent.CI_TOKEN_HEADER] = token
    headers["Authorization"] = tencent.sign(
        method="GET",
        path=path,
        params=params or {},
        headers=signed,
        secret_id=secret_id,
        secret_key=secret_key,
        start=int(at),
        expire=expire,
    )
    return headers


async def get(
    client: Client,
    clock: Callable[[], float],
    path: str,
    params: Mapping[str, str] | None = None,
    **signing: Any,
) -> tuple[int, bytes]:
    headers = auth_header(client, path, at=clock(), params=params, **signing)
    async with client.get(path, params=params, headers=headers) as resp:
        return resp.status, await resp.read()


async def get_xml(
    client: Client, clock: Callable[[], float], path: str, params: Mapping[str, str] | None = None
) -> Element:
    status, body = await get(client, clock, path, params)
    assert status == 200, body
    return parse(body)


# -- The official SDK calls the simulator --------------------------------------------------------


@pytest.fixture
async def live(no_proxy: None) -> AsyncIterator[tuple[TencentCISimulator, str]]:
    """A simulator on a real port, its clock pinned near now: the SDK signs with the real time."""
    clock = FakeClock(float(int(time.time())))
    sim = make_sim(clock)
    sim.add_job("a-done", ts.HAPPY, tag="SpeechRecognition", started=clock.now - 1000)
    sim.add_job("a-failed", ts.FAILED, tag="SpeechRecognition", started=clock.now - 200)
    sim.add_job(
        "a-running", ts.SLOW, tag="SegmentVideoBody", sub_tag="Body", started=clock.now - 50
    )
    sim.add_job("a-paused", ts.PAUSED_RESUMED, queue_id=OTHER_QUEUE, started=clock.now - 100)
    sim.add_job("a-cancel", ts.CANCELLED, tag="WordsGeneralize", started=clock.now - 80)
    async with serving(sim) as base_url:
        yield sim, base_url


def sdk_client(
    base_url: str,
    *,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    token: str | None = None,
) -> CosS3Client:
    config = CosConfig(
        Scheme="http",
        Domain=base_url.removeprefix("http://"),
        SecretId=secret_id,
        SecretKey=secret_key,
        Token=token,
        Timeout=5,
    )
    return CosS3Client(config, retry=0)


def sdk_describe_ai_job(client: CosS3Client, job_id: str) -> dict[str, Any]:
    """DescribeAIJob the way the SDK's own ci_* helpers call CI (it has none for /ai_jobs/<id>)."""
    conf = client.get_conf()
    path = "/ai_jobs/" + job_id
    url = conf.uri(bucket=BUCKET, path=path, endpoint=conf._endpoint_ci)
    response = client.send_request(
        method="GET",
        url=url,
        bucket=BUCKET,
        auth=CosS3Auth(conf, path, params={}),
        params={},
        headers={},
        ci_request=True,
    )
    data: dict[str, Any] = xml_to_dict(response.content)
    format_dict(data, ["JobsDetail"])
    return data


def scalars(detail: Mapping[str, Any]) -> dict[str, str]:
    return {key: value for key, value in detail.items() if isinstance(value, str)}


async def test_official_sdk_describes_an_ai_job_exactly_as_served(
    live: tuple[TencentCISimulator, str],
) -> None:
    sim, base_url = live
    client = sdk_client(base_url)
    for job_id in sim.job_ids():
        data = await asyncio.to_thread(sdk_describe_ai_job, client, job_id)
        (detail,) = data["JobsDetail"]
        # xml_to_dict turns an empty element into None; everything else is what we serve.
        served = {k: v or None for k, v in sim.detail(job_id).items()}
        assert {k: v for k, v in detail.items() if not isinstance(v, dict)} == served
        assert "NonExistJobIds" not in data
    data = await asyncio.to_thread(sdk_describe_ai_job, client, "a-running")
    (detail,) = data["JobsDetail"]
    assert (detail["State"], detail["Progress"], detail["SubTag"]) == ("Running", "0", "Body")
    assert detail["Operation"]["Output"]["Bucket"] == BUCKET


async def test_official_sdk_batch_lookup_reports_unknown_ids_in_non_exist_job_ids(
    live: tuple[TencentCISimulator, str],
) -> None:
    sim, base_url = live
    client = sdk_client(base_url)
    data = await asyncio.to_thread(
        client.ci_get_media_jobs, Bucket=BUCKET, JobIDs="a-failed,a-nope,a-done"
    )
    assert [d["JobId"] for d in data["JobsDetail"]] == ["a-failed", "a-done"]
    assert data["NonExistJobIds"] == "a-nope"
    failed = data["JobsDetail"][0]
    assert (failed["State"], failed["Code"]) == ("Failed", "AudioRecognitionFailed")
    assert failed["Message"] == ts.AUDIO_RECOGNITION_FAILED.reason
    assert failed["EndTime"] == sim.detail("a-failed")["EndTime"] != "-"


async def test_official_sdk_pages_through_the_ai_job_list(
    live: tuple[TencentCISimulator, str],
) -> None:
    sim, base_url = live
    client = sdk_client(base_url)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        data = await asyncio.to_thread(
            client.ci_list_media_jobs,
            Bucket=BUCKET,
            Tag="",
            QueueId=QUEUE,
            Size=2,
            NextToken=token,
            Path="/ai_jobs",
        )
        pages += 1
        seen += [detail["JobId"] for detail in data.get("JobsDetail", [])]
        token = data.get("NextToken") or ""
        if not token:
            break
    expected = [job_id for job_id in sim.job_ids() if job_id != "a-paused"]
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))
    assert pages == 2


async def test_official_sdk_gets_signature_does_not_match_for_a_wrong_secret_key(
    live: tuple[TencentCISimulator, str],
) -> None:
    _, base_url = live
    client = sdk_client(base_url, secret_key="not-the-key")
    with pytest.raises(CosServiceError) as caught:
        await asyncio.to_thread(client.ci_get_media_jobs, Bucket=BUCKET, JobIDs="a-done")
    assert caught.value.get_status_code() == 403
    assert caught.value.get_error_code() == "SignatureDoesNotMatch"
    assert caught.value.get_request_id()
    assert "not-the-key" not in caught.value.get_origin_msg()


async def test_official_sdk_with_temporary_credentials_sends_the_ci_token(
    live: tuple[TencentCISimulator, str],
) -> None:
    _, base_url = live
    client = sdk_client(base_url, secret_id=TEMP_ID, secret_key=TEMP_KEY, token=TOKEN)
    data = await asyncio.to_thread(client.ci_get_media_jobs, Bucket=BUCKET, JobIDs="a-done")
    assert data["JobsDetail"][0]["State"] == "Success"
    wrong = sdk_client(base_url, secret_id=TEMP_ID, secret_key=TEMP_KEY, token="stale")
    with pytest.raises(CosServiceError) as caught:
        await asyncio.to_thread(wrong.ci_get_media_jobs, Bucket=BUCKET, JobIDs="a-done")
    assert caught.value.get_error_code() == "InvalidToken"
    missing = sdk_client(base_url, secret_id=TEMP_ID, secret_key=TEMP_KEY)
    with pytest.raises(CosServiceError) as caught:
        await asyncio.to_thread(missing.ci_get_media_jobs, Bucket=BUCKET, JobIDs="a-done")
    assert caught.value.get_error_code() == "AccessDenied"


# -- Auth -----------------------------------------------------------------------------------------


@pytest.fixture
async def client(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> tuple[TencentCISimulator, Client]:
    sim = make_sim(clock)
    sim.add_job("a-happy", ts.HAPPY, started=T0 - 5000)
    sim.add_job("a-failed", ts.FAILED, tag="SpeechRecognition", started=T0 - 5000)
    return sim, await aiohttp_client(sim.app())


async def test_our_signature_with_the_port_in_host_is_accepted(
    client: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    _, http = client
    path = "/ai_jobs/a-happy"
    headers = auth_header(http, path, at=clock())
    assert re.search(r":\d+$", headers["Host"])
    async with http.get(path, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/xml"
        assert resp.headers["x-ci-request-id"]
        root = parse(await resp.read())
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["JobsDetail"]
    (detail,) = details(root)
    assert list(detail) == SCALARS
    assert detail["State"] == "Success"
    job = root.find("JobsDetail")
    assert job is not None
    assert [child.tag for child in job][-2:] == ["Input", "Operation"]


async def test_signed_query_parameters_and_temporary_tokens_are_accepted(
    client: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    _, http = client
    params = {"queueId": QUEUE, "size": "1", "startCreationTime": "2020-01-01T00:00:00+0800"}
    status, body = await get(
        http, clock, "/ai_jobs", params, secret_id=TEMP_ID, secret_key=TEMP_KEY, token=TOKEN
    )
    assert status == 200, body
    assert len(details(parse(body))) == 1


def _error_of(body: bytes) -> dict[str, str]:
    root = parse(body)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("no Authorization", "AccessDenied"),
        ("not a COS signature", "AccessDenied"),
        ("unknown SecretId", "AccessDenied"),
        ("wrong SecretKey", "SignatureDoesNotMatch"),
        ("signed for another job", "SignatureDoesNotMatch"),
        ("signed for another port", "SignatureDoesNotMatch"),
        ("unsigned query parameter changed", "SignatureDoesNotMatch"),
        ("temporary credential without token", "AccessDenied"),
        ("temporary credential with an unsigned token", "AccessDenied"),
        ("temporary credential with a wrong token", "InvalidToken"),
    ],
)
async def test_bad_credentials_get_403_without_echoing_secrets(
    client: tuple[TencentCISimulator, Client], clock: FakeClock, case: str, code: str
) -> None:
    _, http = client
    path = "/ai_jobs/a-happy"
    params: dict[str, str] = {}
    headers = auth_header(http, path, at=clock())
    if case == "no Authorization":
        del headers["Authorization"]
    elif case == "not a COS signature":
        headers["Authorization"] = "q-sign-algorithm=sha1&q-ak=" + SECRET_ID
    elif case == "unknown SecretId":
        headers = auth_header(http, path, at=clock(), secret_id="AKIDsomeoneelse")
    elif case == "wrong SecretKey":
        headers = auth_header(http, path, at=clock(), secret_key="wrong-" + SECRET_KEY)
    elif case == "signed for another job":
        path = "/ai_jobs/a-failed"
    elif case == "signed for another port":
        headers["Host"] = f"{http.host}:{(http.port or 0) + 1}"
    elif case == "unsigned query parameter changed":
        headers = auth_header(http, "/ai_jobs", at=clock(), params={"size": "1"})
        path, params = "/ai_jobs", {"size": "2"}
    elif case.startswith("temporary"):
        token = {
            "temporary credential without token": None,
            "temporary credential with an unsigned token": TOKEN,
            "temporary credential with a wrong token": "not-" + TOKEN,
        }[case]
        headers = auth_header(
            http,
            path,
            at=clock(),
            secret_id=TEMP_ID,
            secret_key=TEMP_KEY,
            token=token,
            sign_token="unsigned" not in case,
        )
    async with http.get(path, params=params, headers=headers) as resp:
        text = await resp.text()
        assert resp.status == 403
        assert resp.headers["x-ci-request-id"]
    error = _error_of(text.encode())
    assert list(error) == ["Code", "Message", "Resource", "RequestId", "TraceId"]
    assert error["Code"] == code
    for secret in (SECRET_KEY, TEMP_KEY, TOKEN):
        assert secret not in text
    signature = headers.get("Authorization", "").rpartition("q-signature=")[2]
    assert not signature or signature not in text


@pytest.mark.parametrize(
    ("signed_at", "expire", "status", "code"),
    [
        (T0 - 700, 600, 403, "AccessDenied"),  # window ended 100 s ago
        (T0 + 120, 600, 403, "RequestTimeTooSkewed"),  # window starts 60 s from now
        (T0 + 59, 600, 200, None),  # the SDK's one-minute backdating covers a lagging server
        (T0 - 599, 600, 200, None),
    ],
)
async def test_sign_time_must_cover_the_simulator_clock(
    client: tuple[TencentCISimulator, Client],
    clock: FakeClock,
    signed_at: float,
    expire: int,
    status: int,
    code: str | None,
) -> None:
    _, http = client
    path = "/ai_jobs/a-happy"
    headers = auth_header(http, path, at=signed_at, expire=expire)
    async with http.get(path, headers=headers) as resp:
        assert resp.status == status
        body = await resp.read()
    if code is not None:
        assert _error_of(body)["Code"] == code


async def test_other_routes_get_an_xml_404_no_such_resource(
    client: tuple[TencentCISimulator, Client],
) -> None:
    _, http = client
    for method, path in [("GET", "/v1/jobs"), ("POST", "/ai_jobs"), ("GET", "/jobs/")]:
        async with http.request(method, path) as resp:
            assert resp.status == 404
            error = _error_of(await resp.read())
            assert error["Code"] == "NoSuchResource"
            assert error["RequestId"]


# -- Look-ups -------------------------------------------------------------------------------------


async def test_unknown_and_removed_ids_come_back_in_non_exist_job_ids_with_200(
    client: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = client
    root = await get_xml(http, clock, "/ai_jobs/a-unknown")
    assert [(child.tag, child.text) for child in root] == [("NonExistJobIds", "a-unknown")]
    sim.remove_job("a-happy")
    assert sim.job_ids() == ["a-failed"]
    root = await get_xml(http, clock, "/ai_jobs/a-happy")
    assert root.findtext("NonExistJobIds") == "a-happy"
    assert root.find("JobsDetail") is None


@pytest.mark.parametrize("prefix", ["/jobs", "/ai_jobs"])
async def test_batch_lookup_returns_known_jobs_and_lists_the_unknown_one(
    client: tuple[TencentCISimulator, Client], clock: FakeClock, prefix: str
) -> None:
    _, http = client
    root = await get_xml(http, clock, f"{prefix}/a-failed,a-nope,a-happy,a-failed")
    assert [child.tag for child in root] == ["JobsDetail", "JobsDetail", "NonExistJobIds"]
    assert [d["JobId"] for d in details(root)] == ["a-failed", "a-happy"]
    assert [d["State"] for d in details(root)] == ["Failed", "Success"]
    assert [e.text for e in root.findall("NonExistJobIds")] == ["a-nope"]


async def test_a_batch_of_more_than_ten_ids_is_an_invalid_argument(
    client: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    _, http = client
    ids = ",".join(f"a-{n}" for n in range(MAX_BATCH + 1))
    status, body = await get(http, clock, f"/jobs/{ids}")
    assert (status, _error_of(body)["Code"]) == (400, "InvalidArgument")
    status, body = await get(http, clock, "/jobs/" + ",".join(f"a-{n}" for n in range(MAX_BATCH)))
    assert status == 200
    assert len(parse(body).findall("NonExistJobIds")) == MAX_BATCH


# -- Jobs on the clock --------------------------------------------------------------------------


async def test_fake_clock_walks_a_job_from_submitted_through_running_to_success(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> None:
    sim = make_sim(clock)
    sim.add_job("a-walk", ts.HAPPY, tag="SpeechRecognition")  # Submitted 20 s, Running 120 s
    http = await aiohttp_client(sim.app())
    expected = [
        (0, "Submitted", "-", "-", None),
        (19, "Submitted", "-", "-", None),
        (20, "Running", "2025-06-15T23:07:00+0800", "-", "0"),
        (80, "Running", "2025-06-15T23:07:00+0800", "-", "50"),
        (139, "Running", "2025-06-15T23:07:00+0800", "-", "99"),
        (140, "Success", "2025-06-15T23:07:00+0800", "2025-06-15T23:09:00+0800", "100"),
        (100_000, "Success", "2025-06-15T23:07:00+0800", "2025-06-15T23:09:00+0800", "100"),
    ]
    seen = []
    for offset, *_ in expected:
        clock.now = T0 + offset
        (detail,) = details(await get_xml(http, clock, "/ai_jobs/a-walk"))
        assert detail["State"] == sim.state_of("a-walk")
        assert detail["CreationTime"] == "2025-06-15T23:06:40+0800"
        assert detail["Code"] == "Success"
        seen.append(
            (
                offset,
                detail["State"],
                detail["StartTime"],
                detail["EndTime"],
                detail.get("Progress"),
            )
        )
    assert seen == expected


def test_failed_paused_and_cancelled_scripts_report_codes_and_held_progress() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("a-failed", ts.FAILED)
    sim.add_job("a-paused", ts.PAUSED_RESUMED, tag="SegmentVideoBody")
    sim.add_job("a-cancel", ts.CANCELLED)
    clock.now = T0 + 110
    failed = sim.detail("a-failed")
    assert (failed["State"], failed["Code"]) == ("Failed", "AudioRecognitionFailed")
    assert failed["EndTime"] == "2025-06-15T23:08:30+0800"
    assert "Progress" not in failed  # Translation jobs never report progress
    progress = []
    for offset in (15, 45, 75, 150, 195, 225, 255):
        clock.now = T0 + offset
        detail = sim.detail("a-paused")
        progress.append((detail["State"], detail["Progress"]))
    assert progress == [
        ("Running", "0"),
        ("Running", "25"),
        ("Pause", "50"),
        ("Pause", "50"),
        ("Running", "50"),
        ("Running", "75"),
        ("Success", "100"),
    ]
    clock.now = T0 + 75
    cancelled = sim.detail("a-cancel")
    assert (cancelled["State"], cancelled["Code"], cancelled["EndTime"]) == (
        "Cancel",
        "Success",
        "2025-06-15T23:07:55+0800",
    )


def test_a_stuck_job_stays_running_and_its_progress_stalls() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("a-stuck", ts.STUCK, tag="SpeechRecognition", loop=True)
    clock.now = T0 + 10 + 300
    assert sim.detail("a-stuck")["Progress"] == str(ts.STUCK_PROGRESS // 2)
    for days in (1, 30):
        clock.now = T0 + days * 86400
        detail = sim.detail("a-stuck")
        assert (detail["State"], detail["Progress"]) == ("Running", str(ts.STUCK_PROGRESS))
        assert detail["CreationTime"] == "2025-06-15T23:06:40+0800"


def test_a_looping_job_restarts_with_a_new_creation_time() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("a-loop", [("Submitted", 10.0), ("Running", 20.0), ("Success", 30.0)], loop=True)
    sim.add_job("a-once", [("Submitted", 10.0), ("Failed", 30.0)])
    observed = []
    for offset in (0, 10, 30, 59, 60, 75):
        clock.now = T0 + offset
        detail = sim.detail("a-loop")
        observed.append((detail["State"], detail["CreationTime"][11:19]))
    assert observed == [
        ("Submitted", "23:06:40"),
        ("Running", "23:06:40"),
        ("Success", "23:06:40"),
        ("Success", "23:06:40"),
        ("Submitted", "23:07:40"),
        ("Running", "23:07:40"),
    ]
    # A bare (state, seconds) script still gives a failed job a code.
    assert sim.detail("a-once")["Code"] == ts.JOB_FAILED.code


def test_speed_compresses_simulated_seconds() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock, speed=30)
    sim.add_job("a-fast", ts.HAPPY)
    clock.now = T0 + 1
    assert sim.state_of("a-fast") == "Running"
    clock.now = T0 + 140 / 30
    assert sim.state_of("a-fast") == "Success"
    with pytest.raises(ValueError, match="speed"):
        make_sim(clock, speed=0)
    with pytest.raises(ValueError, match="already exists"):
        sim.add_job("a-fast", ts.HAPPY)


# -- The list API --------------------------------------------------------------------------------


@pytest.fixture
async def listing(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> tuple[TencentCISimulator, Client]:
    """Seven jobs created a minute apart; five on QUEUE, two on OTHER_QUEUE."""
    sim = make_sim(clock)
    layout = [
        ("a-0", ts.HAPPY, "Translation", QUEUE),
        ("a-1", ts.FAILED, "SpeechRecognition", QUEUE),
        ("a-2", ts.SLOW, "Translation", QUEUE),
        ("a-3", ts.CANCELLED, "Translation", OTHER_QUEUE),
        ("a-4", ts.HAPPY, "SpeechRecognition", QUEUE),
        ("a-5", ts.STUCK, "Translation", QUEUE),
        ("a-6", ts.SLOW, "Translation", OTHER_QUEUE),
    ]
    for index, (job_id, script, tag, queue) in enumerate(layout):
        sim.add_job(job_id, script, tag=tag, queue_id=queue, started=T0 - 600 + 60 * index)
    return sim, await aiohttp_client(sim.app())


async def _list_all(
    http: Client, clock: FakeClock, params: Mapping[str, str], prefix: str = "/ai_jobs"
) -> tuple[list[str], int]:
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        root = await get_xml(http, clock, prefix, {**params, "nextToken": token})
        pages += 1
        seen += [detail["JobId"] for detail in details(root)]
        assert [child.tag for child in root][-1] == "NextToken"
        token = root.findtext("NextToken") or ""
        if not token:
            return seen, pages


@pytest.mark.parametrize("prefix", ["/ai_jobs", "/jobs"])
async def test_paging_returns_every_job_exactly_once_newest_first(
    listing: tuple[TencentCISimulator, Client], clock: FakeClock, prefix: str
) -> None:
    _, http = listing
    seen, pages = await _list_all(http, clock, {"queueId": QUEUE, "size": "2"}, prefix)
    assert seen == ["a-5", "a-4", "a-2", "a-1", "a-0"]
    assert pages == 3
    seen, pages = await _list_all(http, clock, {"size": "3", "orderByTime": "Asc"}, prefix)
    assert seen == [f"a-{n}" for n in range(7)]
    assert pages == 3


async def test_the_default_page_is_ten_jobs_and_the_last_page_has_an_empty_next_token(
    listing: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = listing
    for n in range(7, 12):
        sim.add_job(f"a-{n}", ts.HAPPY)
    root = await get_xml(http, clock, "/ai_jobs")
    assert len(details(root)) == 10
    assert root.findtext("NextToken")
    root = await get_xml(http, clock, "/ai_jobs", {"size": "100"})
    assert len(details(root)) == 12
    assert root.findtext("NextToken") == ""


async def test_list_filters_by_tag_states_and_creation_window(
    listing: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = listing
    seen, _ = await _list_all(http, clock, {"tag": "SpeechRecognition", "size": "1"})
    assert seen == ["a-4", "a-1"]
    seen, _ = await _list_all(http, clock, {"states": "Running,Cancel", "size": "2"})
    assert seen == [j for j in reversed(sim.job_ids()) if sim.state_of(j) in {"Running", "Cancel"}]
    assert set(seen) == {"a-2", "a-3", "a-5", "a-6"}
    seen, _ = await _list_all(http, clock, {"states": "All", "size": "100"})
    assert len(seen) == 7
    # T0 - 600 + 60 * n is 22:56:40 + n minutes, Beijing time; both bounds are inclusive.
    window = {"startCreationTime": "2025-06-15T22:57:40+0800"}
    window["endCreationTime"] = "2025-06-15T14:59:40Z".replace("Z", "+0000")
    seen, _ = await _list_all(http, clock, {**window, "size": "2", "orderByTime": "Asc"})
    assert seen == ["a-1", "a-2", "a-3"]


async def test_jobs_added_while_serving_are_listed(
    listing: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = listing
    clock.now = T0 + 30
    sim.add_job("a-new", ts.HAPPY, queue_id=OTHER_QUEUE)
    seen, _ = await _list_all(http, clock, {"queueId": OTHER_QUEUE, "size": "1"})
    assert seen == ["a-new", "a-6", "a-3"]


@pytest.mark.parametrize(
    "params",
    [
        {"size": "0"},
        {"size": "101"},
        {"size": "ten"},
        {"size": "²"},
        {"states": "Done"},
        {"orderByTime": "Newest"},
        {"startCreationTime": "yesterday"},
        {"endCreationTime": "2025-06-15 23:00:00"},
        {"nextToken": "!!!"},
        {"nextToken": "bm90LWEtdG9rZW4"},
    ],
)
async def test_bad_list_parameters_are_an_invalid_argument(
    listing: tuple[TencentCISimulator, Client], clock: FakeClock, params: dict[str, str]
) -> None:
    _, http = listing
    status, body = await get(http, clock, "/ai_jobs", params)
    assert status == 400
    assert _error_of(body)["Code"] == "InvalidArgument"


# -- Overrides ------------------------------------------------------------------------------------


async def test_overrides_serve_malformed_bomb_and_oversized_bodies_until_cleared(
    client: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = client
    sim.set_override("a-happy", body=SEED_SAMPLE_BODY)
    status, body = await get(http, clock, "/ai_jobs/a-happy")
    assert (status, body) == (200, SEED_SAMPLE_BODY)
    with pytest.raises(ParseError):
        parse(body)
    # A batch that includes the job breaks as a whole.
    assert (await get(http, clock, "/jobs/a-failed,a-happy"))[1] == SEED_SAMPLE_BODY

    sim.set_override("a-happy", body=xml_bomb_body())
    status, body = await get(http, clock, "/ai_jobs/a-happy")
    assert status == 200
    assert b"<!ENTITY lol9" in body
    assert len(body) < 2000
    with pytest.raises(defusedxml.EntitiesForbidden):
        parse(body)

    sim.set_override("a-happy", body=oversized_body("a-happy"))
    status, body = await get(http, clock, "/ai_jobs/a-happy")
    assert status == 200
    assert len(body) > 1 << 20
    assert details(parse(body))[0]["JobId"] == "a-happy"

    sim.clear_override("a-happy")
    (detail,) = details(await get_xml(http, clock, "/ai_jobs/a-happy"))
    assert detail["State"] == "Success"


async def test_overrides_force_a_state_or_a_status(
    client: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = client
    clock.now = T0 + 5
    sim.set_override("a-happy", state="Failed")
    assert sim.state_of("a-happy") == "Failed"
    (detail,) = details(await get_xml(http, clock, "/ai_jobs/a-happy"))
    assert (detail["State"], detail["Code"]) == ("Failed", ts.JOB_FAILED.code)
    assert detail["EndTime"] == "2025-06-15T23:06:45+0800"
    seen, _ = await _list_all(http, clock, {"states": "Failed"})
    assert sorted(seen) == ["a-failed", "a-happy"]

    sim.set_override("a-happy", status=503)
    status, body = await get(http, clock, "/ai_jobs/a-happy")
    assert (status, _error_of(body)["Code"]) == (503, "ServiceUnavailable")
    sim.set_override("a-happy", body=b"<Error><Code>InternalError</Code></Error>", status=500)
    assert await get(http, clock, "/ai_jobs/a-happy") == (
        500,
        b"<Error><Code>InternalError</Code></Error>",
    )
    sim.set_override("a-happy", status=202, state="Running")
    status, body = await get(http, clock, "/ai_jobs/a-happy")
    assert (status, details(parse(body))[0]["State"]) == (202, "Running")


async def test_ids_xml_cannot_carry_are_replaced_and_markup_is_escaped(
    client: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = client
    sim.add_job("a-<&>", ts.HAPPY)
    root = await get_xml(http, clock, "/ai_jobs/a-<&>,a-\x01")
    assert [d["JobId"] for d in details(root)] == ["a-<&>"]
    assert root.findtext("NonExistJobIds") == "a-\ufffd"


# -- The demo ------------------------------------------------------------------------------------


def _demo(clock: FakeClock, jobs: int = len(DEMO_TENCENT_JOBS)) -> TencentCISimulator:
    return demo_tencent_simulator(
        bucket=BUCKET, secret_id=SECRET_ID, secret_key=SECRET_KEY, clock=clock, jobs=jobs
    )


def test_demo_has_fixed_document_shaped_ids_covering_every_script() -> None:
    sim = _demo(FakeClock(T0))
    assert sim.job_ids() == [job.job_id for job in DEMO_TENCENT_JOBS]
    assert sim.job_ids()[0] == "a8d121820f5e411ec926ef19d53ba9c6f"  # the document's example
    assert _demo(FakeClock(T0 + 99)).job_ids() == sim.job_ids()
    assert all(re.fullmatch(r"a[0-9a-f]{32}", job_id) for job_id in sim.job_ids())
    assert {job.script.name for job in DEMO_TENCENT_JOBS} == {s.name for s in ts.ALL_SCRIPTS}
    assert {job.tag for job in DEMO_TENCENT_JOBS} == set(ts.TAGS)
    assert {job.queue_id for job in DEMO_TENCENT_JOBS} == set(DEMO_QUEUE_IDS)


def test_demo_shows_every_state_within_ten_seconds() -> None:
    clock = FakeClock(T0)
    sim = _demo(clock)
    at_start, seen, changed = states_over(sim, clock, seconds=10)
    assert len(at_start) >= 3
    assert seen == set(ts.STATES)
    assert len(changed) >= 4


async def test_demo_lists_its_first_queue_over_several_pages(
    aiohttp_client: Callable[..., Any],
) -> None:
    clock = FakeClock(T0)
    sim = _demo(clock)
    http = await aiohttp_client(sim.app())
    seen, pages = await _list_all(http, clock, {"queueId": DEMO_QUEUE_IDS[0], "size": "2"})
    assert sorted(seen) == sorted(j.job_id for j in DEMO_TENCENT_JOBS if j.queue_id == QUEUE)
    assert pages >= 2


def test_demo_scales_to_many_jobs_with_distinct_deterministic_ids() -> None:
    ids = _demo(FakeClock(T0), jobs=60).job_ids()
    assert len(set(ids)) == 60
    assert ids[:6] == [job.job_id for job in DEMO_TENCENT_JOBS]
    assert _demo(FakeClock(T0), jobs=60).job_ids() == ids
    assert all(re.fullmatch(r"a[0-9a-f]{32}", job_id) for job_id in ids)


def test_app_exposes_its_simulator_under_a_typed_key() -> None:
    sim = make_sim(FakeClock(T0))
    assert sim.app()[TENCENT_SIMULATOR_KEY] is sim


def test_the_simulator_command_serves_tencent_with_its_own_defaults() -> None:
    args = _parse_args(["--cloud", "tencent"])
    assert (args.cloud, args.jobs) == ("tencent", len(DEMO_TENCENT_JOBS))
    assert _parse_args([]).cloud == "huawei"
