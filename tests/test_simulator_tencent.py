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

from exporter.clouds import BY_NAME
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
from exporter.simulator.__main__ import _app, _parse_args
from exporter.simulator.faults import Fault, FaultKind
from exporter.simulator.tencent_ci import DEMO_QUEUE_IDS, MAX_BATCH
from exporter.simulator.tencent_queues import (
    CYCLE_TASK_NAME,
    MAX_QUEUE_IDS,
    cycle_queue,
    start_queue_cycle,
)
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


@pytest.mark.parametrize("path", ["/jobs", "/ai_jobs"])
async def test_official_sdk_pages_through_the_job_list(
    live: tuple[TencentCISimulator, str], path: str
) -> None:
    sim, base_url = live
    client = sdk_client(base_url)
    sim.add_job("a-later", ts.HAPPY, tag="SpeechRecognition", started=time.time() - 10)
    seen: list[str] = []
    states: list[str] = []
    token = ""
    pages = 0
    while True:
        data = await asyncio.to_thread(
            client.ci_list_media_jobs,
            Bucket=BUCKET,
            Tag="SpeechRecognition",
            QueueId=QUEUE,
            Size=2,
            NextToken=token,
            Path=path,
        )
        pages += 1
        seen += [detail["JobId"] for detail in data.get("JobsDetail", [])]
        states += [detail["State"] for detail in data.get("JobsDetail", [])]
        token = data.get("NextToken") or ""
        if not token:
            break
    assert seen == ["a-later", "a-failed", "a-done"]
    assert states == ["Submitted", "Failed", "Success"]
    assert pages == 2
    with pytest.raises(CosServiceError) as caught:
        await asyncio.to_thread(client.ci_list_media_jobs, Bucket=BUCKET, Tag="", QueueId=QUEUE)
    assert caught.value.get_status_code() == 400
    assert caught.value.get_error_code() == "InvalidArgument"
    assert "tag" in caught.value.get_error_msg()


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
    params = {"queueId": QUEUE, "tag": "Translation", "size": "1"}
    params["startCreationTime"] = "2020-01-01T00:00:00+0800"
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
    translation = {"queueId": QUEUE, "tag": "Translation"}
    seen, pages = await _list_all(http, clock, {**translation, "size": "2"}, prefix)
    assert seen == ["a-5", "a-2", "a-0"]
    assert pages == 2
    seen, pages = await _list_all(http, clock, {**translation, "size": "1", "orderByTime": "Asc"})
    assert seen == ["a-0", "a-2", "a-5"]
    assert pages == 3


async def test_the_default_page_is_ten_jobs_and_the_last_page_has_an_empty_next_token(
    listing: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = listing
    for n in range(7, 16):
        sim.add_job(f"a-{n}", ts.HAPPY)
    translation = {"queueId": QUEUE, "tag": "Translation"}
    root = await get_xml(http, clock, "/ai_jobs", translation)
    assert len(details(root)) == 10
    assert root.findtext("NextToken")
    root = await get_xml(http, clock, "/ai_jobs", {**translation, "size": "100"})
    assert len(details(root)) == 12
    assert root.findtext("NextToken") == ""


async def test_list_filters_by_tag_states_and_creation_window(
    listing: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = listing
    seen, _ = await _list_all(http, clock, {"queueId": QUEUE, "tag": "SpeechRecognition"})
    assert seen == ["a-4", "a-1"]
    running_or_cancelled = {"tag": "Translation", "states": "Running,Cancel", "size": "1"}
    for queue, expected in [(QUEUE, ["a-5", "a-2"]), (OTHER_QUEUE, ["a-6", "a-3"])]:
        seen, _ = await _list_all(http, clock, {**running_or_cancelled, "queueId": queue})
        assert seen == expected
        assert {sim.state_of(job_id) for job_id in seen} <= {"Running", "Cancel"}
    seen, _ = await _list_all(
        http, clock, {"queueId": QUEUE, "tag": "Translation", "states": "All", "size": "100"}
    )
    assert len(seen) == 3
    # T0 - 600 + 60 * n is 22:56:40 + n minutes, Beijing time; both bounds are inclusive.
    window = {"startCreationTime": "2025-06-15T22:56:40+0800"}
    window["endCreationTime"] = "2025-06-15T14:58:40Z".replace("Z", "+0000")
    window |= {"queueId": QUEUE, "tag": "Translation", "orderByTime": "Asc"}
    seen, _ = await _list_all(http, clock, window)
    assert seen == ["a-0", "a-2"]
    window["endCreationTime"] = "2025-06-15T22:58:39+0800"
    seen, _ = await _list_all(http, clock, window)
    assert seen == ["a-0"]


async def test_jobs_added_while_serving_are_listed(
    listing: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = listing
    clock.now = T0 + 30
    sim.add_job("a-new", ts.HAPPY, queue_id=OTHER_QUEUE)
    params = {"queueId": OTHER_QUEUE, "tag": "Translation", "size": "1"}
    seen, _ = await _list_all(http, clock, params)
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
    required = {"queueId": QUEUE, "tag": "Translation"}
    assert (await get(http, clock, "/ai_jobs", required))[0] == 200
    status, body = await get(http, clock, "/ai_jobs", {**required, **params})
    assert status == 400
    error = _error_of(body)
    assert error["Code"] == "InvalidArgument"
    assert next(iter(params)) in error["Message"]


@pytest.mark.parametrize("prefix", ["/jobs", "/ai_jobs"])
async def test_the_list_api_requires_queue_id_and_tag_and_refuses_pages_over_100(
    listing: tuple[TencentCISimulator, Client], clock: FakeClock, prefix: str
) -> None:
    _, http = listing
    for params, missing in [
        ({"tag": "Translation"}, "queueId"),
        ({"queueId": QUEUE}, "tag"),
        ({"queueId": QUEUE, "tag": ""}, "tag"),
        ({}, "queueId"),
    ]:
        status, body = await get(http, clock, prefix, params)
        assert status == 400, params
        error = _error_of(body)
        assert (error["Code"], error["Message"]) == ("InvalidArgument", f"{missing} is required")
    both = {"queueId": QUEUE, "tag": "Translation"}
    status, body = await get(http, clock, prefix, {**both, "size": "101"})
    assert (status, _error_of(body)["Code"]) == (400, "InvalidArgument")
    root = await get_xml(http, clock, prefix, {**both, "size": "100"})
    assert [d["JobId"] for d in details(root)] == ["a-5", "a-2", "a-0"]


# -- Queues ---------------------------------------------------------------------------------------

QUEUE_FIELDS = ["QueueId", "Name", "State", "NotifyConfig", "MaxSize", "MaxConcurrent"]
QUEUE_FIELDS += ["CreateTime", "UpdateTime", "Category"]


def queue_list(root: Element) -> list[dict[str, str]]:
    """Each QueueList's scalar children."""
    return [
        {child.tag: child.text or "" for child in entry if len(child) == 0}
        for entry in root.findall("QueueList")
    ]


@pytest.fixture
async def queues(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> tuple[TencentCISimulator, Client]:
    """QUEUE (named, five at a time) and OTHER_QUEUE (made by its job), then p-02 ... p-11."""
    sim = make_sim(clock)
    sim.add_queue(QUEUE, name="translation", max_concurrent=5, max_size=500, created=T0 - 86400)
    sim.add_job("a-0", ts.HAPPY, queue_id=QUEUE, started=T0 - 100)
    sim.add_job("a-1", ts.HAPPY, queue_id=OTHER_QUEUE, started=T0 - 100)
    for number in range(2, 12):
        sim.add_queue(f"p-{number:02}", name=f"extra-{number}", category="SpeedTranscoding")
    return sim, await aiohttp_client(sim.app())


@pytest.mark.parametrize("route", ["/ai_queue", "/queue"])
async def test_queue_routes_describe_each_queue_in_the_documented_shape(
    queues: tuple[TencentCISimulator, Client], clock: FakeClock, route: str
) -> None:
    _, http = queues
    root = await get_xml(http, clock, route, {"queueIds": f"{QUEUE},{OTHER_QUEUE}"})
    assert [child.tag for child in root] == [
        "RequestId",
        "TotalCount",
        "PageNumber",
        "PageSize",
    ] + ["QueueList"] * 2
    assert (root.findtext("TotalCount"), root.findtext("PageNumber")) == ("2", "1")
    assert root.findtext("PageSize") == "10"
    entry = root.find("QueueList")
    assert entry is not None
    assert [child.tag for child in entry] == QUEUE_FIELDS
    notify = entry.find("NotifyConfig")
    assert notify is not None
    assert {child.tag: child.text for child in notify}["State"] == "Off"
    first, second = queue_list(root)
    assert first == {
        "QueueId": QUEUE,
        "Name": "translation",
        "State": "Active",
        "MaxSize": "500",
        "MaxConcurrent": "5",
        "CreateTime": "2025-06-14T23:06:40+0800",
        "UpdateTime": "2025-06-14T23:06:40+0800",
        "Category": "Transcoding",
    }
    # A queue first named by a job gets a readable name, the defaults, and the job's start.
    assert (second["QueueId"], second["Name"], second["State"]) == (
        OTHER_QUEUE,
        "queue-2",
        "Active",
    )
    assert (second["MaxConcurrent"], second["MaxSize"]) == ("10", "10000")
    assert second["CreateTime"] == "2025-06-15T23:05:00+0800"


@pytest.mark.parametrize("route", ["/ai_queue", "/queue"])
async def test_queue_pages_count_every_match_and_report_unknown_ids(
    queues: tuple[TencentCISimulator, Client], clock: FakeClock, route: str
) -> None:
    sim, http = queues
    root = await get_xml(http, clock, route)
    assert (root.findtext("TotalCount"), len(queue_list(root))) == ("12", 10)
    seen: list[str] = []
    for page, size in [(1, 5), (2, 5), (3, 2), (4, 0)]:
        root = await get_xml(http, clock, route, {"pageSize": "5", "pageNumber": str(page)})
        assert root.findtext("TotalCount") == "12"
        assert (root.findtext("PageNumber"), root.findtext("PageSize")) == (str(page), "5")
        assert len(queue_list(root)) == size
        seen += [entry["QueueId"] for entry in queue_list(root)]
    assert seen == sim.queue_ids()
    assert len(seen) == 12
    root = await get_xml(http, clock, route, {"queueIds": f"p-nope,{QUEUE},p-gone,{QUEUE}"})
    assert [entry["QueueId"] for entry in queue_list(root)] == [QUEUE]
    assert root.findtext("TotalCount") == "1"
    assert [e.text for e in root.findall("NonExistPIDs")] == ["p-nope", "p-gone"]
    assert [child.tag for child in root][-2:] == ["NonExistPIDs", "NonExistPIDs"]
    ten = ",".join(sim.queue_ids()[:MAX_QUEUE_IDS])
    root = await get_xml(http, clock, route, {"queueIds": ten})
    assert (root.findtext("TotalCount"), root.find("NonExistPIDs")) == ("10", None)
    status, body = await get(http, clock, route, {"queueIds": ten + ",p-11"})
    assert status == 400
    assert _error_of(body)["Code"] == "InvalidArgument"
    assert "queueIds" in _error_of(body)["Message"]


@pytest.mark.parametrize("route", ["/ai_queue", "/queue"])
async def test_queue_state_filter_and_update_time_follow_pause_and_resume(
    queues: tuple[TencentCISimulator, Client], clock: FakeClock, route: str
) -> None:
    sim, http = queues
    clock.now = T0 + 60
    sim.pause_queue(OTHER_QUEUE)
    assert sim.queue_state(OTHER_QUEUE) == "Paused"
    paused = queue_list(await get_xml(http, clock, route, {"state": "Paused"}))
    assert [(e["QueueId"], e["State"], e["UpdateTime"]) for e in paused] == [
        (OTHER_QUEUE, "Paused", "2025-06-15T23:07:40+0800")
    ]
    active = queue_list(await get_xml(http, clock, route, {"state": "Active", "pageSize": "100"}))
    assert len(active) == 11
    assert OTHER_QUEUE not in {entry["QueueId"] for entry in active}
    clock.now = T0 + 120
    sim.pause_queue(OTHER_QUEUE)  # pausing again changes nothing
    sim.resume_queue(OTHER_QUEUE)
    sim.resume_queue(OTHER_QUEUE)
    (entry,) = queue_list(await get_xml(http, clock, route, {"queueIds": OTHER_QUEUE}))
    assert (entry["State"], entry["UpdateTime"]) == ("Active", "2025-06-15T23:08:40+0800")
    assert queue_list(await get_xml(http, clock, route, {"state": "Paused"})) == []
    with pytest.raises(KeyError):
        sim.pause_queue("p-nope")


async def test_media_queues_filter_by_category(
    queues: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    _, http = queues
    for category, count in [("CateAll", 12), ("SpeedTranscoding", 10), ("Transcoding", 2)]:
        root = await get_xml(http, clock, "/queue", {"category": category, "pageSize": "100"})
        assert (root.findtext("TotalCount"), len(queue_list(root))) == (str(count), count)
    # The AI route takes no category: it is ignored there.
    root = await get_xml(http, clock, "/ai_queue", {"category": "Transcoding"})
    assert root.findtext("TotalCount") == "12"


@pytest.mark.parametrize(
    ("route", "params", "culprit"),
    [
        ("/ai_queue", {"pageSize": "101"}, "pageSize"),
        ("/ai_queue", {"pageSize": "0"}, "pageSize"),
        ("/queue", {"pageNumber": "0"}, "pageNumber"),
        ("/queue", {"pageNumber": "one"}, "pageNumber"),
        ("/ai_queue", {"state": "Running"}, "state"),
        ("/queue", {"category": "Everything"}, "category"),
    ],
)
async def test_bad_queue_parameters_are_an_invalid_argument(
    queues: tuple[TencentCISimulator, Client],
    clock: FakeClock,
    route: str,
    params: dict[str, str],
    culprit: str,
) -> None:
    _, http = queues
    status, body = await get(http, clock, route, params)
    assert status == 400
    error = _error_of(body)
    assert error["Code"] == "InvalidArgument"
    assert culprit in error["Message"]


async def test_queue_routes_check_the_signature_and_take_injected_faults(
    queues: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = queues
    async with http.get("/ai_queue") as resp:
        assert resp.status == 403
        assert _error_of(await resp.read())["Code"] == "AccessDenied"
    headers = auth_header(http, "/queue", at=clock(), params={"state": "All"})
    async with http.get("/queue", params={"state": "Paused"}, headers=headers) as resp:
        assert resp.status == 403
        assert _error_of(await resp.read())["Code"] == "SignatureDoesNotMatch"
    sim.faults.set(OTHER_QUEUE, Fault(FaultKind.STATUS, status=503, count=1))
    assert (await get(http, clock, "/ai_queue", {"queueIds": QUEUE}))[0] == 200
    status, body = await get(http, clock, "/ai_queue", {"queueIds": f"{QUEUE},{OTHER_QUEUE}"})
    assert (status, _error_of(body)["Code"]) == (503, "ServiceUnavailable")
    assert (await get(http, clock, "/ai_queue", {"queueIds": OTHER_QUEUE}))[0] == 200


# -- Paused queues hold their waiting jobs -------------------------------------------------------


def _timeline(sim: TencentCISimulator, job_id: str) -> tuple[str, str, str, str]:
    detail = sim.detail(job_id)
    return detail["State"], detail["CreationTime"], detail["StartTime"], detail["EndTime"]


async def test_a_waiting_job_shows_pause_until_resumed_then_its_later_steps_shift(
    queues: tuple[TencentCISimulator, Client], clock: FakeClock
) -> None:
    sim, http = queues
    sim.add_job("a-wait", ts.HAPPY, queue_id=QUEUE)  # Submitted 20 s, Running 120 s
    clock.now = T0 + 5
    sim.pause_queue(QUEUE)
    created = "2025-06-15T23:06:40+0800"
    for offset in (5, 19, 20, 100):
        clock.now = T0 + offset
        assert _timeline(sim, "a-wait") == ("Pause", created, "-", "-")
    root = await get_xml(http, clock, "/jobs", {"queueId": QUEUE, "tag": "Translation"})
    assert {d["JobId"]: d["State"] for d in details(root)}["a-wait"] == "Pause"
    seen, _ = await _list_all(
        http, clock, {"queueId": QUEUE, "tag": "Translation", "states": "Pause"}
    )
    assert seen == ["a-wait"]
    sim.resume_queue(QUEUE)  # held 95 s: Running at T0 + 115, Success at T0 + 235
    assert _timeline(sim, "a-wait") == ("Submitted", created, "-", "-")
    clock.now = T0 + 114
    assert sim.state_of("a-wait") == "Submitted"
    clock.now = T0 + 115
    assert _timeline(sim, "a-wait") == ("Running", created, "2025-06-15T23:08:35+0800", "-")
    clock.now = T0 + 234
    assert sim.state_of("a-wait") == "Running"
    clock.now = T0 + 235
    assert _timeline(sim, "a-wait") == (
        "Success",
        created,
        "2025-06-15T23:08:35+0800",
        "2025-06-15T23:10:35+0800",
    )


def test_a_running_job_finishes_while_its_queue_is_paused() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("a-run", ts.HAPPY, tag="SpeechRecognition", started=T0 - 30)  # Running from -10
    sim.pause_queue(QUEUE)
    clock.now = T0 + 60
    assert (sim.state_of("a-run"), sim.detail("a-run")["Progress"]) == ("Running", "58")
    clock.now = T0 + 110
    assert _timeline(sim, "a-run") == (
        "Success",
        "2025-06-15T23:06:10+0800",
        "2025-06-15T23:06:30+0800",
        "2025-06-15T23:08:30+0800",
    )
    sim.resume_queue(QUEUE)
    assert sim.state_of("a-run") == "Success"
    assert sim.detail("a-run")["EndTime"] == "2025-06-15T23:08:30+0800"


def test_a_looping_job_is_held_when_it_is_resubmitted_and_jobs_added_while_paused_wait() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    loop_script = [("Submitted", 10.0), ("Running", 20.0), ("Success", 30.0)]
    sim.add_job("a-loop", loop_script, loop=True, started=T0 - 15)  # pass ends at T0 + 45
    sim.pause_queue(QUEUE)
    sim.add_job("a-late", ts.HAPPY, started=T0 - 30)  # it would be Running: it runs
    sim.add_job("a-new", ts.HAPPY)
    sim.add_job("a-future", ts.HAPPY, started=T0 + 50)
    clock.now = T0 + 44
    assert sim.state_of("a-loop") == "Success"
    assert sim.state_of("a-new") == "Pause"
    assert sim.state_of("a-late") == "Running"
    assert sim.detail("a-future")["State"] == "Submitted"  # not created yet
    clock.now = T0 + 200
    assert _timeline(sim, "a-loop")[:3] == ("Pause", "2025-06-15T23:07:25+0800", "-")
    assert _timeline(sim, "a-future") == ("Pause", "2025-06-15T23:07:30+0800", "-", "-")
    sim.resume_queue(QUEUE)  # a-loop held 155 s, a-new 200 s, a-future 150 s
    clock.now = T0 + 209
    assert (sim.state_of("a-loop"), sim.state_of("a-new")) == ("Submitted", "Submitted")
    clock.now = T0 + 210
    assert _timeline(sim, "a-loop")[:3] == (
        "Running",
        "2025-06-15T23:07:25+0800",
        "2025-06-15T23:10:10+0800",
    )
    assert sim.state_of("a-future") == "Submitted"
    clock.now = T0 + 220
    assert _timeline(sim, "a-new")[2] == "2025-06-15T23:10:20+0800"
    assert _timeline(sim, "a-future")[:3] == (
        "Running",
        "2025-06-15T23:07:30+0800",
        "2025-06-15T23:10:20+0800",
    )
    # Its next pass starts 60 s after the held one began again, unshifted by the old hold.
    clock.now = T0 + 260
    assert _timeline(sim, "a-loop")[:2] == ("Submitted", "2025-06-15T23:11:00+0800")
    clock.now = T0 + 270
    assert _timeline(sim, "a-loop")[:3] == (
        "Running",
        "2025-06-15T23:11:00+0800",
        "2025-06-15T23:11:10+0800",
    )


def test_pausing_one_queue_leaves_the_others_alone() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("a-here", ts.HAPPY)
    sim.add_job("a-there", ts.HAPPY, queue_id=OTHER_QUEUE)
    sim.pause_queue(OTHER_QUEUE)
    clock.now = T0 + 30
    assert (sim.state_of("a-here"), sim.state_of("a-there")) == ("Running", "Pause")
    assert (sim.queue_state(QUEUE), sim.queue_state(OTHER_QUEUE)) == ("Active", "Paused")
    with pytest.raises(ValueError, match="already exists"):
        sim.add_queue(QUEUE, name="again")
    with pytest.raises(ValueError, match="category"):
        sim.add_queue("p-new", name="new", category="CateAll")


async def test_official_sdk_reads_ai_and_media_queues_and_a_paused_queues_waiting_job(
    live: tuple[TencentCISimulator, str],
) -> None:
    sim, base_url = live
    client = sdk_client(base_url)
    sim.add_job("a-waiting", ts.HAPPY, queue_id=OTHER_QUEUE)
    sim.pause_queue(OTHER_QUEUE)
    data = await asyncio.to_thread(
        client.ci_get_ai_queue, Bucket=BUCKET, QueueIds=f"{QUEUE},{OTHER_QUEUE},p-nope"
    )
    assert (data["TotalCount"], data["PageNumber"], data["PageSize"]) == ("2", "1", "10")
    assert [(q["QueueId"], q["State"], q["MaxConcurrent"]) for q in data["QueueList"]] == [
        (QUEUE, "Active", "10"),
        (OTHER_QUEUE, "Paused", "10"),
    ]
    assert data["QueueList"][1]["NotifyConfig"]["State"] == "Off"
    assert data["NonExistPIDs"] == "p-nope"
    data = await asyncio.to_thread(client.ci_get_media_queue, Bucket=BUCKET, State="Paused")
    assert [q["QueueId"] for q in data["QueueList"]] == [OTHER_QUEUE]
    assert data["QueueList"][0]["Name"] == "queue-2"
    data = await asyncio.to_thread(
        client.ci_get_media_queue, Bucket=BUCKET, PageNumber="2", PageSize="1"
    )
    assert (data["TotalCount"], [q["QueueId"] for q in data["QueueList"]]) == ("2", [OTHER_QUEUE])
    data = await asyncio.to_thread(
        client.ci_list_media_jobs,
        Bucket=BUCKET,
        Tag="Translation",
        QueueId=OTHER_QUEUE,
        States="Pause,Submitted",
    )
    # a-paused is in its script's own Pause step; a-waiting is held before it ever ran.
    assert [(d["JobId"], d["State"], d["StartTime"]) for d in data["JobsDetail"]] == [
        ("a-waiting", "Pause", "-"),
        ("a-paused", "Pause", sim.detail("a-paused")["StartTime"]),
    ]
    with pytest.raises(CosServiceError) as caught:
        await asyncio.to_thread(
            client.ci_get_ai_queue, Bucket=BUCKET, QueueIds=",".join(f"p-{n}" for n in range(11))
        )
    assert (caught.value.get_status_code(), caught.value.get_error_code()) == (
        400,
        "InvalidArgument",
    )


# -- The demo's queue cycle -----------------------------------------------------------------------


async def test_cycle_queue_pauses_for_the_last_part_of_each_period_and_resumes_when_cancelled() -> (
    None
):
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("a-job", ts.HAPPY, queue_id=OTHER_QUEUE)
    slept: list[tuple[float, str]] = []

    async def sleep(seconds: float) -> None:
        slept.append((seconds, sim.queue_state(OTHER_QUEUE)))
        if len(slept) == 4:
            raise asyncio.CancelledError
        clock.now += seconds

    with pytest.raises(asyncio.CancelledError):
        await cycle_queue(sim, OTHER_QUEUE, every=300, paused_for=90, sleep=sleep)
    assert slept == [(210, "Active"), (90, "Paused"), (210, "Active"), (90, "Paused")]
    assert sim.queue_state(OTHER_QUEUE) == "Active"
    with pytest.raises(ValueError, match="paused_for"):
        await cycle_queue(sim, OTHER_QUEUE, every=60, paused_for=60, sleep=sleep)


async def test_cycle_queue_task_cancelled_while_paused_leaves_the_queue_active() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("a-job", ts.HAPPY, queue_id=OTHER_QUEUE)
    paused = asyncio.Event()

    async def sleep(seconds: float) -> None:
        if sim.queue_state(OTHER_QUEUE) == "Paused":
            paused.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(cycle_queue(sim, OTHER_QUEUE, sleep=sleep))
    await asyncio.wait_for(paused.wait(), 5)
    assert sim.state_of("a-job") == "Pause"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sim.queue_state(OTHER_QUEUE) == "Active"
    assert sim.state_of("a-job") == "Submitted"


def _cycle_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == CYCLE_TASK_NAME]


async def test_a_started_queue_cycle_pauses_on_its_sleep_and_its_stop_resumes_the_queue() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_job("a-job", ts.HAPPY, queue_id=OTHER_QUEUE)
    slept: list[float] = []
    paused = asyncio.Event()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if sim.queue_state(OTHER_QUEUE) == "Paused":
            paused.set()
        await asyncio.sleep(0 if len(slept) < 2 else 60)

    stop = start_queue_cycle(sim, OTHER_QUEUE, every=10, paused_for=4, sleep=sleep)
    await asyncio.wait_for(paused.wait(), 5)
    assert slept == [6, 4]
    (task,) = _cycle_tasks()
    stopping = asyncio.ensure_future(stop())
    # asyncio.wait, unlike wait_for, does not cancel what is still running at its timeout.
    await asyncio.wait({stopping}, timeout=5)
    if not stopping.done():
        task.cancel()
        stopping.cancel()
    assert stopping.done()
    assert not stopping.cancelled()
    await stop()
    assert task.cancelled()
    assert sim.queue_state(OTHER_QUEUE) == "Active"
    assert _cycle_tasks() == []


async def test_the_demo_cloud_runs_the_queue_cycle_until_it_stops(no_proxy: None) -> None:
    demo = await BY_NAME["tencent_ci"].simulator()
    try:
        (task,) = _cycle_tasks()
        assert not task.done()
    finally:
        await asyncio.wait_for(demo.stop(), 5)
    assert task.cancelled()


async def test_the_simulator_command_runs_the_queue_cycle_only_when_asked(
    aiohttp_client: Callable[..., Any],
) -> None:
    sim = _demo(FakeClock(T0))
    http = await aiohttp_client(_app(sim, queue_cycle=False))
    assert _cycle_tasks() == []
    await http.close()
    http = await aiohttp_client(_app(sim, queue_cycle=True))
    (task,) = _cycle_tasks()
    await http.close()
    assert task.cancelled()
    assert _parse_args(["--cloud", "tencent", "--queue-cycle"]).queue_cycle
    assert not _parse_args(["--cloud", "tencent"]).queue_cycle
    with pytest.raises(SystemExit):
        _parse_args(["--queue-cycle"])


@pytest.mark.parametrize("start", [0.0, 4.5, 7.0, 13.0, 18.0, 42.0, 99.0, 250.0])
def test_the_demo_shows_a_job_waiting_in_pause_soon_after_its_second_queue_pauses(
    start: float,
) -> None:
    """The demo's looping jobs are resubmitted every pass; a paused queue holds the next one
    (the paused_resumed job's pass is 555 simulated seconds: 18.5 s at the demo's speed)."""
    clock = FakeClock(T0)
    sim = _demo(clock)
    queue = DEMO_QUEUE_IDS[1]
    assert sim.queue_ids() == list(DEMO_QUEUE_IDS)
    jobs = [job.job_id for job in DEMO_TENCENT_JOBS if job.queue_id == queue]
    clock.now = T0 + start
    sim.pause_queue(queue)

    def held() -> list[str]:
        # Paused before it ever ran in this pass: held, not the script's own Pause step.
        return [j for j in jobs if _timeline(sim, j)[::2] == ("Pause", "-")]

    waiting = []
    for tenth in range(0, 901):
        clock.now = T0 + start + tenth / 10
        waiting.append(bool(held()))
    first = waiting.index(True)
    assert first <= 185
    assert all(waiting[first:])
    were_held = held()
    sim.resume_queue(queue)
    assert held() == []
    assert {sim.state_of(job_id) for job_id in were_held} == {"Submitted"}


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
    failed = {"queueId": QUEUE, "states": "Failed"}
    seen, _ = await _list_all(http, clock, {**failed, "tag": "Translation"})
    assert seen == ["a-happy"]
    seen, _ = await _list_all(http, clock, {**failed, "tag": "SpeechRecognition"})
    assert seen == ["a-failed"]

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
    params = {"queueId": DEMO_QUEUE_IDS[0], "tag": "Translation", "size": "1"}
    seen, pages = await _list_all(http, clock, params)
    expected = [
        j.job_id for j in DEMO_TENCENT_JOBS if j.queue_id == QUEUE and j.tag == "Translation"
    ]
    assert sorted(seen) == sorted(expected)
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
