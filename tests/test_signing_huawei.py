"""Our SDK-HMAC-SHA256 signer must agree with the official SDK's Signer byte for byte."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

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
# Paths near the fast path's edge: unreserved characters take it; "%", "+", " " and ":" do not.
_near_plain_paths = st.text(alphabet="aZ09-._~/%+ :", max_size=30).map(lambda text: "/" + text)
_hosts = st.sampled_from(
    ["metastudio.cn-north-4.myhuaweicloud.com", "127.0.0.1:8080", "[::1]:9000", "example.com"]
)


def sdk_sign(
    method: str,
    host: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    ak: str,
    sk: str,
    when: datetime,
) -> dict[str, str]:
    """The headers the official SDK sends: the reference every signature here is held to."""
    request_headers = dict(headers)
    request_headers[huawei.DATE_HEADER] = when.astimezone(UTC).strftime(huawei.DATE_FORMAT)
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


def _verify(headers: Mapping[str, str], secret_key: str, **request: Any) -> bool:
    """What the simulator does with a request: parse its Authorization, recompute, compare."""
    auth = huawei.parse_authorization(headers["Authorization"])
    assert auth is not None
    when = huawei.parse_date(headers[huawei.DATE_HEADER])
    assert when is not None
    return huawei.verify(headers=headers, secret_key=secret_key, auth=auth, when=when, **request)


# Requests of any method, query and body, as sdk_sign's keyword arguments.
_requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "DELETE", "get"]),
        "host": _hosts,
        "path": _paths,
        "query": _query,
        "headers": _headers,
        "body": st.one_of(st.just(b""), st.binary(max_size=64)),
        "ak": _keys,
        "sk": _keys,
        "when": _dates,
    }
)


@settings(max_examples=1200, deadline=None)
@given(request=_requests)
def test_verify_accepts_what_the_official_sdk_signs_on_generated_requests(
    request: dict[str, Any],
) -> None:
    """Our canonical request equals the SDK's, or no signature of it would verify."""
    theirs = sdk_sign(**request)
    sent = {key: request[key] for key in ("method", "path", "query", "body")}
    assert _verify(theirs, request["sk"], **sent)
    assert not _verify(theirs, request["sk"] + "x", **sent)


@settings(max_examples=600, deadline=None)
@given(
    host=_hosts,
    path=st.one_of(_paths, _near_plain_paths),
    headers=_headers,
    ak=_keys,
    sk=_keys,
    when=_dates,
)
def test_the_per_account_get_signer_matches_the_official_sdk_on_generated_requests(
    host: str, path: str, headers: dict[str, str], ak: str, sk: str, when: datetime
) -> None:
    signer = huawei.GetSigner(host=host, headers=headers, access_key=ak, secret_key=sk)
    theirs = sdk_sign("GET", host, path, [], headers, b"", ak, sk, when)
    ours = signer.sign(path, when)
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours[huawei.DATE_HEADER] == theirs[huawei.DATE_HEADER]
    # And again: nothing of one request may leak into the next.
    assert signer.sign(path, when) == ours


@settings(max_examples=600, deadline=None)
@given(path=_near_plain_paths, when=_dates)
def test_the_plain_path_fast_path_agrees_with_the_sdk(path: str, when: datetime) -> None:
    """Paths at the fast path's edge, each with the same account: only the path varies."""
    signer = huawei.GetSigner(
        host="127.0.0.1:8080", headers={"X-Project-Id": "p"}, access_key="ak", secret_key="sk"
    )
    theirs = sdk_sign(
        "GET", "127.0.0.1:8080", path, [], {"X-Project-Id": "p"}, b"", "ak", "sk", when
    )
    assert signer.sign(path, when)["Authorization"] == theirs["Authorization"]


def test_signature_of_the_documented_show_short_job_request_is_stable() -> None:
    host = "metastudio.cn-north-4.myhuaweicloud.com"
    project = "3f0924078d1b471c884a5383d4dec9fa"
    path = (
        f"/v1/{project}/voice-training-manage/user/short-jobs/26f06524-4f75-4b3a-a853-b649a21aaf66"
    )
    headers = {"X-Project-Id": project}
    when = datetime(2025, 11, 19, 8, 0, 0, tzinfo=UTC)
    signer = huawei.GetSigner(
        host=host, headers=headers, access_key="AKEXAMPLE", secret_key="SKEXAMPLE"
    )
    ours = signer.sign(path, when)["Authorization"]
    assert (
        ours
        == sdk_sign("GET", host, path, [], headers, b"", "AKEXAMPLE", "SKEXAMPLE", when)[
            "Authorization"
        ]
    )
    # A fixed vector: catches an accidental change even if the SDK were to change with us.
    assert ours == (
        "SDK-HMAC-SHA256 Access=AKEXAMPLE, SignedHeaders=host;x-project-id;x-sdk-date, "
        "Signature=b7d572c6ba26fb10a24e9f22b3bb6109661e12309d46b82c4a53da5e136b0bc5"
    )


def test_what_the_get_signer_signs_verifies_and_a_tampered_request_does_not() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    signer = huawei.GetSigner(
        host="127.0.0.1:1234", headers={"X-Project-Id": "p"}, access_key="ak", secret_key="sk"
    )
    headers = signer.sign("/v1/p/x", when)
    request: dict[str, Any] = {"method": "GET", "query": [], "body": b""}
    assert _verify(headers, "sk", path="/v1/p/x", **request)
    assert not _verify(headers, "sk", path="/v1/p/y", **request)
    assert not _verify(headers, "other", path="/v1/p/x", **request)
    assert not _verify({**headers, "X-Project-Id": "q"}, "sk", path="/v1/p/x", **request)


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


def test_the_get_signer_agrees_with_the_sdk_and_keeps_no_secret_in_its_repr() -> None:
    when = datetime(2026, 11, 23, 16, 30, 5, tzinfo=UTC)
    headers = {"Accept": "application/json", "X-Project-Id": "p1", "X-App-UserId": "u"}
    signer = huawei.GetSigner(
        host="127.0.0.1:8080", headers=headers, access_key="AK1", secret_key="SK-secret"
    )
    path = "/v1/p1/voice-training-manage/user/short-jobs/job-1"
    ours = signer.sign(path, when)
    theirs = sdk_sign("GET", "127.0.0.1:8080", path, [], headers, b"", "AK1", "SK-secret", when)
    assert ours["Authorization"] == theirs["Authorization"]
    assert "SK-secret" not in repr(signer)
