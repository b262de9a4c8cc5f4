"""Our COS signer must agree with cos-python-sdk-v5's `CosS3Auth` byte for byte."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict
from unittest import mock
from urllib.parse import quote

import aiohttp
import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from qcloud_cos import CosConfig, CosS3Client
from qcloud_cos.cos_auth import CosS3Auth, filter_headers
from requests.structures import CaseInsensitiveDict

from exporter.accounts import Discovery, TencentAccount, TencentCredentials
from exporter.providers.tencent_ci import TencentCI
from exporter.signing import tencent

# What requests lets through as a header value (requests.utils._validate_header_part).
_VALID_VALUE = re.compile(r"^\S[^\r\n]*\Z|^\Z")
_HOSTS = [
    # (netloc in the URL, what the SDK signs when no Host header is given: urlparse().hostname)
    ("examplebucket-1250000000.ci.ap-beijing.myqcloud.com", None),
    ("127.0.0.1:8080", "127.0.0.1"),
    ("[::1]:9000", "::1"),
    (
        "Test-123456789.CI.ap-guangzhou.myqcloud.com:443",
        "test-123456789.ci.ap-guangzhou.myqcloud.com",
    ),
]


def _random_case(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))


@st.composite
def _signed_header_names(draw: st.DrawFn) -> str:
    """Names `filter_headers` keeps: a fixed list, plus any `x-cos-*` / `x-ci-*`."""
    base = draw(
        st.sampled_from(
            [
                *("content-type", "content-md5", "range", "if-match", "cache-control"),
                *("origin", "pic-operations", "x-cos-", "x-ci-", "x-cos-meta-", "host"),
            ]
        )
    )
    if base.endswith("-"):
        # Any name requests accepts: exercises percent-encoding, then lower-casing, of names.
        base += draw(
            st.text(
                st.characters(exclude_characters=":\r\n", exclude_categories=("Cs",)),
                min_size=1,
                max_size=8,
            )
        )
    return _random_case(draw, base)


_header_value = st.text(max_size=16).filter(lambda value: _VALID_VALUE.match(value) is not None)
# Headers the SDK drops before signing; a caller of ours simply does not pass them.
_unsigned_headers = st.dictionaries(
    st.sampled_from(["User-Agent", "Accept", "Date", "X-Custom-Header", "Connection"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
    max_size=3,
)
_paths = st.lists(
    st.text(max_size=10)
    | st.sampled_from(["ai_jobs", "jobs", "a,b", "with space", "%2C", "../x", "é/ü"]),
    max_size=4,
).map("/".join)
_params = st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=4)
_secret = st.text(min_size=1, max_size=40).filter(lambda value: value == value.strip())
_secret_id = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="&"),
    min_size=1,
    max_size=36,
)


class _Request(TypedDict):
    """What both signers are told alike; headers, the moment and the token reach them apart."""

    method: str
    path: str
    params: dict[str, str]
    secret_id: str
    secret_key: str
    expire: int


def _sdk_sign(
    request: _Request, *, netloc: str, headers: dict[str, str], token: str | None, now: float
) -> requests.PreparedRequest:
    conf = CosConfig(
        Region="ap-beijing",
        SecretId=request["secret_id"],
        SecretKey=request["secret_key"],
        Token=token,
    )
    path, params = request["path"], request["params"]
    url = f"http://{netloc}/{quote(path.lstrip('/'), safe='/-_.~')}"
    prepared = requests.Request(request["method"], url, headers=headers, params=params).prepare()
    auth = CosS3Auth(conf, key=path, params=params, expire=request["expire"])
    with mock.patch("qcloud_cos.cos_auth.time.time", return_value=now):
        signed: requests.PreparedRequest = auth(prepared)
    return signed


@settings(max_examples=1200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
    host=st.sampled_from(_HOSTS),
    path=_paths,
    params=_params,
    headers=st.dictionaries(_signed_header_names(), _header_value, max_size=5),
    unsigned=_unsigned_headers,
    token=st.none()
    | st.tuples(
        st.sampled_from(["x-ci-security-token", "x-cos-security-token"]),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60),
    ),
    secret_id=_secret_id,
    secret_key=_secret,
    now=st.floats(min_value=1e9, max_value=4e9),
    expire=st.integers(min_value=1, max_value=10**6),
)
def test_signature_matches_the_official_sdk_on_generated_requests(
    method: str,
    host: tuple[str, str | None],
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    unsigned: dict[str, str],
    token: tuple[str, str] | None,
    secret_id: str,
    secret_key: str,
    now: float,
    expire: int,
) -> None:
    netloc, hostname = host
    request: _Request = {
        "method": method,
        "path": path,
        "params": params,
        "secret_id": secret_id,
        "secret_key": secret_key,
        "expire": expire,
    }
    request_headers = {**unsigned, **headers}
    if token is not None:
        # What CosS3Client.send_request does for temporary credentials before signing.
        request_headers[token[0]] = token[1]
    sdk = _sdk_sign(
        request,
        netloc=netloc,
        headers=request_headers,
        token=None if token is None else token[1],
        now=now,
    )
    # Ours signs what is sent (requests may add Content-Length) minus what the SDK never signs.
    ours_headers: dict[str, str] = {}
    for name, value in sdk.headers.items():
        assert isinstance(value, str)
        if name not in unsigned and name != "Authorization":
            ours_headers[name] = value
    assert set(ours_headers) == set(filter_headers(sdk.headers))
    if not any(name.lower() == "host" for name in ours_headers):
        # The SDK falls back to the URL's hostname, port dropped; our caller passes its Host.
        ours_headers["host"] = hostname or netloc
    ours = tencent.sign(**request, headers=ours_headers, start=int(now))
    assert ours == sdk.headers["Authorization"]


class _Capture(requests.adapters.BaseAdapter):
    """A transport that records what the SDK would send and answers an empty CI response."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self.sent.append(request)
        response = requests.Response()
        response.status_code = 200
        response._content = b"<Response></Response>"
        response.headers = CaseInsensitiveDict({"Content-Type": "application/xml"})
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass


def _sent_by_the_sdk(
    token: str | None, at: float, call: Callable[[CosS3Client], object]
) -> requests.PreparedRequest:
    """The one request the SDK sends for `call`, with its clock stopped at `at`."""
    conf = CosConfig(Region="ap-beijing", SecretId="AKIDtemp", SecretKey="sk-temp", Token=token)
    capture = _Capture()
    session = requests.Session()
    session.mount("https://", capture)
    client = CosS3Client(conf, retry=0, session=session)
    with mock.patch("qcloud_cos.cos_auth.time.time", return_value=at):
        call(client)
    (sent,) = capture.sent
    return sent


def _our_authorization(
    method: str, path: str, headers: dict[str, str], params: dict[str, str] | None = None
) -> str:
    """What our signer makes of a request with the credentials and moment the SDK used."""
    return tencent.sign(
        method=method,
        path=path,
        params=params or {},
        headers=headers,
        secret_id="AKIDtemp",
        secret_key="sk-temp",
        start=1_750_000_000,
        expire=10000,
    )


def _assert_token_sent_and_signed(
    sent: requests.PreparedRequest, header: str, token: str, method: str, path: str, host: str
) -> None:
    """The SDK put `token` in `header`, signed that header, and signed as we do."""
    assert sent.headers[header] == token.encode()
    authorization = sent.headers["Authorization"]
    assert f"&q-header-list=host;{header}&" in authorization
    assert authorization == _our_authorization(method, path, {"host": host, header: token})


def test_sdk_sends_ci_token_as_x_ci_security_token_signed_with_the_port_less_host() -> None:
    sent = _sent_by_the_sdk(
        "tmp-token/with+odd=chars",
        1_750_000_000.5,
        lambda client: client.ci_get_media_jobs(Bucket="examplebucket-1250000000", JobIDs="a1,a2"),
    )
    # The path goes out encoded but is signed as the caller wrote it.
    assert sent.url == "https://examplebucket-1250000000.ci.ap-beijing.myqcloud.com/jobs/a1%2Ca2"
    assert "x-cos-security-token" not in sent.headers
    _assert_token_sent_and_signed(
        sent,
        "x-ci-security-token",
        "tmp-token/with+odd=chars",
        "GET",
        "/jobs/a1,a2",
        "examplebucket-1250000000.ci.ap-beijing.myqcloud.com",
    )


def test_sdk_sends_a_cos_token_as_x_cos_security_token_and_signs_it_too() -> None:
    sent = _sent_by_the_sdk(
        "cos-token",
        1_750_000_000.0,
        lambda client: client.head_bucket(Bucket="examplebucket-1250000000"),
    )
    _assert_token_sent_and_signed(
        sent,
        "x-cos-security-token",
        "cos-token",
        "HEAD",
        "/",
        "examplebucket-1250000000.cos.ap-beijing.myqcloud.com",
    )


def test_sdk_list_call_signs_its_empty_parameters() -> None:
    sent = _sent_by_the_sdk(
        None,
        1_750_000_000.0,
        lambda client: client.ci_list_media_jobs(
            Bucket="examplebucket-1250000000",
            Tag="Translation",
            QueueId="p893bcda225bf4945a378da6662e81a89",
            StartCreationTime="2022-07-07T12:12:12+0800",
            Size=2,
            Path="/ai_jobs",
        ),
    )
    assert "startCreationTime=2022-07-07T12%3A12%3A12%2B0800" in (sent.url or "")
    assert "nextToken=&" in (sent.url or "") + "&"
    params = {
        "tag": "Translation",
        "orderByTime": "Desc",
        "states": "All",
        "size": "2",
        "nextToken": "",
        "queueId": "p893bcda225bf4945a378da6662e81a89",
        "startCreationTime": "2022-07-07T12:12:12+0800",
    }
    assert sent.headers["Authorization"] == _our_authorization(
        "GET",
        "/ai_jobs",
        {"host": "examplebucket-1250000000.ci.ap-beijing.myqcloud.com"},
        params,
    )
    assert (
        "&q-url-param-list=nexttoken;orderbytime;queueid;size;startcreationtime;states;tag&"
        in sent.headers["Authorization"]
    )


# The DescribeAIJob example of the API document, signed at a fixed moment.
_VECTOR: _Request = {
    "method": "GET",
    "path": "/ai_jobs/a8d121820f5e411ec926ef19d53ba9c6f",
    "params": {},
    "secret_id": "AKIDZfbOAo7cllgPvF9cXFrJD0a1ICvR****",
    "secret_key": "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz",
    "expire": 80000,
}
_VECTOR_HOST = "test-123456789.ci.ap-beijing.myqcloud.com"


def test_signature_of_the_documented_describe_ai_job_request_is_stable() -> None:
    # Catches an accidental change even if the SDK were to change with us.
    ours = tencent.sign(**_VECTOR, headers={"Host": _VECTOR_HOST}, start=1497530262)
    assert ours == (
        "q-sign-algorithm=sha1&q-ak=AKIDZfbOAo7cllgPvF9cXFrJD0a1ICvR****"
        "&q-sign-time=1497530202;1497610262&q-key-time=1497530202;1497610262"
        "&q-header-list=host&q-url-param-list="
        "&q-signature=" + _VECTOR_SIGNATURE
    )
    sdk = _sdk_sign(
        _VECTOR, netloc=_VECTOR_HOST, headers={"Host": _VECTOR_HOST}, token=None, now=1497530262.9
    )
    assert sdk.headers["Authorization"] == ours


_VECTOR_SIGNATURE = "001fc51776032da6bc9003de01afdef785cb623d"


# -- parse and verify ----------------------------------------------------------------------------


def _signed(**overrides: Any) -> tuple[dict[str, Any], tencent.ParsedCosAuthorization]:
    request: dict[str, Any] = {
        "method": "GET",
        "path": "/jobs/a1,a2",
        "params": {"size": "2", "nextToken": ""},
        "headers": {"Host": "127.0.0.1:8080", "x-ci-security-token": "tok"},
    }
    request.update(overrides)
    value = tencent.sign(
        **request, secret_id="AKIDx", secret_key="sk", start=1_750_000_000, expire=600
    )
    auth = tencent.parse_authorization(value)
    assert auth is not None
    return request, auth


def test_parse_authorization_returns_every_field() -> None:
    _, auth = _signed()
    assert auth.secret_id == "AKIDx"
    assert auth.sign_time == auth.key_time == (1_750_000_000 - 60, 1_750_000_600)
    assert auth.header_list == ("host", "x-ci-security-token")
    assert auth.param_list == ("nexttoken", "size")
    assert re.fullmatch(r"[0-9a-f]{40}", auth.signature)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic c2VjcmV0",
        "q-sign-algorithm=sha256&q-ak=a&q-sign-time=1;2&q-key-time=1;2&q-header-list="
        "&q-url-param-list=&q-signature=ab",
        "q-sign-algorithm=sha1&q-ak=a&q-sign-time=1;2&q-key-time=1;2&q-header-list="
        "&q-url-param-list=",
        "q-sign-algorithm=sha1&q-ak=a&q-sign-time=soon&q-key-time=1;2&q-header-list="
        "&q-url-param-list=&q-signature=ab",
        "q-sign-algorithm=sha1&q-ak=&q-sign-time=1;2&q-key-time=1;2&q-header-list="
        "&q-url-param-list=&q-signature=ab",
        "q-sign-algorithm=sha1&garbage&q-ak=a",
    ],
)
def test_parse_authorization_refuses_what_is_not_a_cos_signature(value: str) -> None:
    assert tencent.parse_authorization(value) is None


def test_a_signed_request_verifies() -> None:
    request, auth = _signed()
    assert tencent.verify(**request, secret_key="sk", auth=auth)
    # Header names are case-insensitive, and unsigned extras do not matter.
    assert tencent.verify(
        method="get",
        path=request["path"],
        params={**request["params"], "unsigned": "1"},
        headers={"HOST": "127.0.0.1:8080", "X-Ci-Security-Token": "tok", "Accept": "*/*"},
        secret_key="sk",
        auth=auth,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("path", "/jobs/a1,a3"),
        ("path", "/jobs/a1%2Ca2"),
        ("method", "POST"),
        ("params", {"size": "3", "nextToken": ""}),
        ("params", {"size": "2"}),
        ("headers", {"Host": "127.0.0.1:8081", "x-ci-security-token": "tok"}),
        ("headers", {"Host": "127.0.0.1:8080", "x-ci-security-token": "other"}),
        ("headers", {"Host": "127.0.0.1:8080"}),
    ],
)
def test_a_tampered_request_does_not_verify(field: str, value: Any) -> None:
    request, auth = _signed()
    request[field] = value
    assert not tencent.verify(**request, secret_key="sk", auth=auth)


def test_the_wrong_secret_key_or_a_changed_window_does_not_verify() -> None:
    request, auth = _signed()
    assert not tencent.verify(**request, secret_key="other", auth=auth)
    stretched = tencent.ParsedCosAuthorization(
        auth.secret_id,
        auth.sign_time,
        (auth.key_time[0], auth.key_time[1] + 3600),
        auth.header_list,
        auth.param_list,
        auth.signature,
    )
    assert not tencent.verify(**request, secret_key="sk", auth=stretched)
    garbled = tencent.parse_authorization(
        tencent.sign(**request, secret_id="AKIDx", secret_key="sk", start=10**9, expire=1)[:-1]
        + "é"
    )
    assert garbled is not None
    assert not tencent.verify(**request, secret_key="sk", auth=garbled)


class _Captured(TypedDict):
    path: str
    query: dict[str, str]
    host: str
    authorization: str


async def _exporter_sends(
    call: Callable[[TencentCI], Awaitable[object]], *, list_api: str, job_api: str
) -> _Captured:
    """The one request our provider makes for `call`, as a loopback server received it."""
    captured: list[_Captured] = []

    async def record(request: web.Request) -> web.Response:
        captured.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "host": request.headers["Host"],
                "authorization": request.headers["Authorization"],
            }
        )
        return web.Response(body=b"<Response></Response>", content_type="application/xml")

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        account = TencentAccount(
            provider="tencent_ci",
            bucket="examplebucket-1250000000",
            region="ap-beijing",
            endpoint=str(server.make_url("")),
            job_api=job_api,
            discover=Discovery(
                list_api=list_api,
                queue_id="p893bcda225bf4945a378da6662e81a89",
                tag="Translation",
            ),
        )
        credentials = TencentCredentials(SecretStr("AKIDtemp"), SecretStr("sk-temp"))
        async with aiohttp.ClientSession() as session:
            provider = TencentCI(
                account="tc", config=account, credentials=credentials, session=session, timeout=5
            )
            await call(provider)
    finally:
        await server.close()
    (request,) = captured
    return request


@pytest.mark.parametrize(
    ("job_api", "call", "path"),
    [
        ("ai_jobs", lambda p: p.list_jobs(1.7e9, None, job_type="Translation"), "/jobs"),
        (
            "media_jobs",
            lambda p: p.list_jobs(1.7e9, "tok/en+=", job_type="Transcode", states=["Running"]),
            "/jobs",
        ),
        ("ai_jobs", lambda p: p.list_queues(["p1", "p2"]), "/ai_queue"),
        ("media_jobs", lambda p: p.list_queues(["p1"], 2), "/queue"),
    ],
)
async def test_every_list_and_queue_request_verifies_with_the_sdk(
    job_api: str, call: Callable[[TencentCI], Awaitable[object]], path: str
) -> None:
    """cos-python-sdk-v5's CosS3Auth, given what arrived (path, every query parameter, Host)
    and our signature's moment, computes the very Authorization we sent."""
    sent = await _exporter_sends(call, list_api="jobs", job_api=job_api)
    assert sent["path"] == path
    auth = tencent.parse_authorization(sent["authorization"])
    assert auth is not None
    start, end = auth.sign_time
    request: _Request = {
        "method": "GET",
        "path": sent["path"],
        "params": sent["query"],
        "secret_id": "AKIDtemp",
        "secret_key": "sk-temp",
        "expire": end - start - tencent.BACKDATE_SECONDS,
    }
    signed = _sdk_sign(
        request,
        netloc=sent["host"],
        headers={"Host": sent["host"]},
        token=None,
        now=start + tencent.BACKDATE_SECONDS,
    )
    assert signed.headers["Authorization"] == sent["authorization"]
    # Every query parameter is signed, as the SDK signs them.
    assert auth.param_list == tuple(sorted(name.lower() for name in sent["query"]))


async def test_the_list_path_follows_list_api_not_job_api() -> None:
    sent = await _exporter_sends(
        lambda p: p.list_jobs(1.7e9, job_type="Translation"),
        list_api="ai_jobs",
        job_api="media_jobs",
    )
    assert sent["path"] == "/ai_jobs"
