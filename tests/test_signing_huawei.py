"""Our SDK-HMAC-SHA256 signer must agree with the official SDK's Signer byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.signing import huawei

_segment = st.text(min_size=0, max_size=12)
_paths = st.lists(_segment, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
_query = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=5)
_header_name = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True).filter(
    lambda name: name.lower() not in {"host", "x-sdk-date", "authorization"}
)
_header_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
_headers = st.dictionaries(_header_name, _header_value, max_size=5).map(
    # The SDK keeps the last of two names equal but for case; so do we, but a dict
    # with both is not a request anyone sends.
    lambda headers: {
        k: v for k, v in headers.items() if [h.lower() for h in headers].count(k.lower()) == 1
    }
)
_dates = st.datetimes(
    # Hypothesis takes naive bounds and attaches the zone itself.
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2099, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda moment: moment.replace(microsecond=0))
_keys = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)
_hosts = st.sampled_from(
    ["metastudio.cn-north-4.myhuaweicloud.com", "127.0.0.1:8080", "[::1]:9000", "example.com"]
)


def _sdk_sign(
    method: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    ak: str,
    sk: str,
    when: datetime,
) -> dict[str, str]:
    request_headers = dict(headers)
    request_headers[huawei.DATE_HEADER] = when.strftime(huawei.DATE_FORMAT)
    request = SdkRequest(
        method=method,
        schema="https",
        host=host,
        resource_path=path,
        query_params=list(query),
        header_params=request_headers,
        body=body,
    )
    signed = Signer(BasicCredentials(ak, sk)).sign(request)
    return dict(signed.header_params)


@settings(max_examples=1200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "get"]),
    host=_hosts,
    path=_paths,
    query=_query,
    headers=_headers,
    body=st.one_of(st.just(b""), st.binary(max_size=64)),
    ak=_keys,
    sk=_keys,
    when=_dates,
)
def test_signature_matches_the_official_sdk_on_generated_requests(
    method: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    ak: str,
    sk: str,
    when: datetime,
) -> None:
    ours = huawei.sign(
        method=method,
        host=host,
        path=path,
        query=query,
        headers=headers,
        body=body,
        access_key=ak,
        secret_key=sk,
        when=when,
    )
    theirs = _sdk_sign(method, host, path, query, headers, body, ak, sk, when)
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours[huawei.DATE_HEADER] == theirs[huawei.DATE_HEADER]


def test_signature_of_the_documented_show_short_job_request_is_stable() -> None:
    # A fixed vector: catches an accidental change even if the SDK were to change with us.
    headers = huawei.sign(
        method="GET",
        host="metastudio.cn-north-4.myhuaweicloud.com",
        path="/v1/3f0924078d1b471c884a5383d4dec9fa/voice-training-manage/user/short-jobs/"
        "26f06524-4f75-4b3a-a853-b649a21aaf66",
        query=[],
        headers={"X-Project-Id": "3f0924078d1b471c884a5383d4dec9fa"},
        body=b"",
        access_key="AKEXAMPLE",
        secret_key="SKEXAMPLE",
        when=datetime(2025, 11, 19, 8, 0, 0, tzinfo=UTC),
    )
    theirs = _sdk_sign(
        "GET",
        "metastudio.cn-north-4.myhuaweicloud.com",
        "/v1/3f0924078d1b471c884a5383d4dec9fa/voice-training-manage/user/short-jobs/"
        "26f06524-4f75-4b3a-a853-b649a21aaf66",
        [],
        {"X-Project-Id": "3f0924078d1b471c884a5383d4dec9fa"},
        b"",
        "AKEXAMPLE",
        "SKEXAMPLE",
        datetime(2025, 11, 19, 8, 0, 0, tzinfo=UTC),
    )
    assert headers["Authorization"] == theirs["Authorization"]
    assert headers["Authorization"].startswith(
        "SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders=host;x-project-id;x-sdk-date, Signature="
    )


def test_a_signed_request_verifies_and_a_tampered_one_does_not() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    headers = huawei.sign(
        method="GET",
        host="127.0.0.1:1234",
        path="/v1/p/x",
        query=[],
        headers={"X-Project-Id": "p"},
        body=b"",
        access_key="ak",
        secret_key="sk",
        when=when,
    )
    auth = huawei.parse_authorization(headers["Authorization"])
    assert auth is not None
    common = {
        "method": "GET",
        "query": [],
        "headers": headers,
        "body": b"",
        "auth": auth,
        "when": when,
    }
    assert huawei.verify(path="/v1/p/x", secret_key="sk", **common)  # type: ignore[arg-type]
    assert not huawei.verify(path="/v1/p/y", secret_key="sk", **common)  # type: ignore[arg-type]
    assert not huawei.verify(path="/v1/p/x", secret_key="other", **common)  # type: ignore[arg-type]


# Paths near the fast path's edge: unreserved characters take it; "%", "+", " " and ":" do not.
_near_plain_paths = st.text(alphabet="aZ09-._~/%+ :", max_size=30).map(lambda text: "/" + text)


@settings(max_examples=600, deadline=None)
@given(path=_near_plain_paths, when=_dates)
def test_the_plain_path_fast_path_agrees_with_the_sdk(path: str, when: datetime) -> None:
    common = {"host": "127.0.0.1:8080", "headers": {"X-Project-Id": "p"}}
    ours = huawei.sign(
        method="GET",
        path=path,
        query=[],
        body=b"",
        access_key="ak",
        secret_key="sk",
        when=when,
        **common,  # type: ignore[arg-type]
    )
    theirs = _sdk_sign(
        "GET", "127.0.0.1:8080", path, [], {"X-Project-Id": "p"}, b"", "ak", "sk", when
    )
    assert ours["Authorization"] == theirs["Authorization"]


@settings(max_examples=400, deadline=None)
@given(
    when=st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001
        max_value=datetime(2099, 12, 31),  # noqa: DTZ001
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5, minutes=30))]
        ),
    ),
    again=st.booleans(),
)
def test_the_cached_date_is_the_moment_in_utc_to_the_second(when: datetime, again: bool) -> None:
    # Called twice in a row too: the second answer comes from the cache.
    if again:
        huawei.format_date(when)
    assert huawei.format_date(when) == when.astimezone(UTC).strftime(huawei.DATE_FORMAT)


@settings(max_examples=600, deadline=None)
@given(
    host=_hosts,
    path=st.one_of(_paths, _near_plain_paths),
    headers=_headers,
    ak=_keys,
    sk=_keys,
    when=_dates,
)
def test_the_per_account_get_signer_equals_sign(
    host: str, path: str, headers: dict[str, str], ak: str, sk: str, when: datetime
) -> None:
    signer = huawei.GetSigner(host=host, headers=headers, access_key=ak, secret_key=sk)
    expected = huawei.sign(
        method="GET",
        host=host,
        path=path,
        query=[],
        headers=headers,
        body=b"",
        access_key=ak,
        secret_key=sk,
        when=when,
    )
    assert signer.sign(path, when) == expected
    # And again: nothing of one request may leak into the next.
    assert signer.sign(path, when) == expected


def test_the_get_signer_agrees_with_the_sdk_and_keeps_no_secret_in_its_repr() -> None:
    when = datetime(2026, 11, 23, 16, 30, 5, tzinfo=UTC)
    headers = {"Accept": "application/json", "X-Project-Id": "p1", "X-App-UserId": "u"}
    signer = huawei.GetSigner(
        host="127.0.0.1:8080", headers=headers, access_key="AK1", secret_key="SK-secret"
    )
    path = "/v1/p1/voice-training-manage/user/short-jobs/job-1"
    ours = signer.sign(path, when)
    theirs = _sdk_sign("GET", "127.0.0.1:8080", path, [], headers, b"", "AK1", "SK-secret", when)
    assert ours["Authorization"] == theirs["Authorization"]
    assert "SK-secret" not in repr(signer)
