"""Poll-now hints without HTTP: the per-account bucket, the CI callback body, the masked access
log line and the callback token's config."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from exporter.api import MaskingAccessLogger, mask_callback_secret
from exporter.config import (
    ConfigError,
    check_credentials,
    load_settings,
    resolve_callback_tokens,
    watched_files,
)
from exporter.hints import HINT_BURST, HINT_RATE, HintLimiter, retry_after
from exporter.providers.tencent_ci_callback import (
    MAX_JOB_ID_LENGTH,
    Callback,
    CallbackError,
    parse_callback,
)
from tests.support import FakeClock

BUCKET = "examplebucket-1250000000"
TOKEN = "cb-token-0123456789abcdef"

# --- the bucket ----------------------------------------------------------------------------------


def test_a_burst_passes_then_the_rate_holds_and_accounts_are_apart() -> None:
    clock = FakeClock(100.0)
    hints = HintLimiter(clock)
    assert [hints.take("a") for _ in range(HINT_BURST)] == [0.0] * HINT_BURST
    wait = hints.take("a")
    assert wait == pytest.approx(1 / HINT_RATE)
    assert hints.take("b") == 0.0  # another account's bucket is full
    clock.now += 1.5 / HINT_RATE  # one and a half tokens back
    assert hints.take("a") == 0.0
    assert hints.take("a") == pytest.approx(0.5 / HINT_RATE)
    clock.now += 1000  # a long pause refills to the burst, no further
    assert [hints.take("a") for _ in range(HINT_BURST + 1)].count(0.0) == HINT_BURST


def test_a_refused_take_spends_nothing_and_a_cost_takes_that_many() -> None:
    clock = FakeClock(0.0)
    hints = HintLimiter(clock, rate=1.0, burst=5)
    assert hints.take("a", 3) == 0.0
    assert hints.take("a", 3) == pytest.approx(1.0)  # 2 left, 1 short: a second at 1/s
    assert hints.take("a", 2) == 0.0  # the refusal spent nothing
    with pytest.raises(ValueError, match="1 to 5"):
        hints.take("a", 6)


@pytest.mark.parametrize(("seconds", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2")])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    assert retry_after(seconds) == header


# --- the callback body ---------------------------------------------------------------------------

XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <EventName>TaskFinish</EventName>
  <JobsDetail><Code>Success</Code><JobId>a-one</JobId><State>Success</State></JobsDetail>
  <JobsDetail><JobId> a-two </JobId><State>Failed</State></JobsDetail>
</Response>"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (XML, Callback("TaskFinish", ("a-one", "a-two"))),
        (  # older pages: no EventName; a BOM and blank lines before the document
            b"\xef\xbb\xbf\n  <Response><JobsDetail><JobId>a-one</JobId></JobsDetail></Response>",
            Callback(None, ("a-one",)),
        ),
        (
            orjson.dumps({"EventName": "TaskFinish", "JobsDetail": {"JobId": "a-one"}}),
            Callback("TaskFinish", ("a-one",)),
        ),
        (
            orjson.dumps({"JobsDetail": [{"JobId": "a-one"}, {"JobId": "a-two"}]}),
            Callback(None, ("a-one", "a-two")),
        ),
        (
            orjson.dumps({"Response": {"EventName": "TaskFinish", "JobsDetail": [{"JobId": "x"}]}}),
            Callback("TaskFinish", ("x",)),
        ),
        (  # the same job twice is one hint
            orjson.dumps({"JobsDetail": [{"JobId": "x"}, {"JobId": "x"}]}),
            Callback(None, ("x",)),
        ),
        (  # another event names no job to poll: not an error, nothing to do
            b"<Response><EventName>WorkflowFinish</EventName></Response>",
            Callback("WorkflowFinish", ()),
        ),
    ],
)
def test_each_documented_shape_gives_its_job_ids(body: bytes, expected: Callback) -> None:
    callback = parse_callback(body)
    assert callback == expected
    assert callback.names_jobs is (expected.event != "WorkflowFinish")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "the body is empty"),
        (b"   \n", "the body is empty"),
        (b"hello", "the body is neither XML nor JSON"),
        (b"<Response><JobsDetail>", "the body is not well-formed XML"),
        (b"<Error><Code>x</Code></Error>", "the XML root is <Error>, not <Response>"),
        (b"<Response><EventName>TaskFinish</EventName></Response>", "no JobsDetail"),
        (
            b"<Response><JobsDetail><State>Success</State></JobsDetail></Response>",
            "a JobsDetail has no JobId",
        ),
        (
            b'<!DOCTYPE r [<!ENTITY a "aaaa">]><Response><JobsDetail><JobId>&a;</JobId>'
            b"</JobsDetail></Response>",
            "the body is not well-formed XML",
        ),
        (b"{", "the body is not valid JSON"),
        (b"[1, 2]", "the JSON body is not an object"),
        (b'{"Response": []}', "Response is not an object"),
        (b'{"hello": "world"}', "no JobsDetail"),
        (b'{"JobsDetail": "a-one"}', "JobsDetail is neither an object nor a list of objects"),
        (b'{"JobsDetail": [{"JobId": 7}]}', "a JobsDetail's JobId is not a string"),
        (b'{"JobsDetail": [{"JobId": ""}]}', "a JobsDetail has no JobId"),
        (b'{"EventName": 1, "JobsDetail": {"JobId": "x"}}', "EventName is not a string"),
        (
            orjson.dumps({"JobsDetail": {"JobId": "x" * (MAX_JOB_ID_LENGTH + 1)}}),
            "a JobId is no job id",
        ),
        (b'{"JobsDetail": {"JobId": "a\\nb"}}', "a JobId is no job id"),
    ],
)
def test_anything_else_is_one_line_saying_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(CallbackError) as caught:
        parse_callback(body)
    message = str(caught.value)
    assert message.startswith(reason), message
    assert "\n" not in message


# --- the access log ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "POST /api/v1/callbacks/tencent_ci/tc/s3cr3t HTTP/1.1",
            "POST /api/v1/callbacks/tencent_ci/tc/*** HTTP/1.1",
        ),
        (
            "https://x/api/v1/callbacks/tencent_ci/tc/s3cr3t?a=1",
            "https://x/api/v1/callbacks/tencent_ci/tc/***?a=1",
        ),
        (
            "GET /api/v1/callbacks/tencent_ci/tc/s3cr3t/more HTTP/1.1",
            "GET /api/v1/callbacks/tencent_ci/tc/***/more HTTP/1.1",
        ),
        ("GET /api/v1/jobs/tc/s3cr3t HTTP/1.1", "GET /api/v1/jobs/tc/s3cr3t HTTP/1.1"),
    ],
)
def test_the_secret_segment_of_a_callback_path_is_masked(text: str, masked: str) -> None:
    assert mask_callback_secret(text) == masked


def _access_line(caplog: pytest.LogCaptureFixture, request: web.Request) -> str:
    logger = MaskingAccessLogger(logging.getLogger("test.access"), '"%r" %s "%{Referer}i"')
    caplog.clear()
    with caplog.at_level(logging.INFO, "test.access"):
        logger.log(request, web.Response(status=200), 0.01)
    (record,) = caplog.records
    return record.getMessage()


def test_the_access_log_never_shows_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-canary"
    referer = {"Referer": f"http://x/api/v1/callbacks/tencent_ci/tc/{secret}"}
    request = make_mocked_request(
        "POST", f"/api/v1/callbacks/tencent_ci/tc/{secret}", headers=referer
    )
    line = _access_line(caplog, request)
    assert secret not in line
    assert line.startswith('"POST /api/v1/callbacks/tencent_ci/tc/*** HTTP/1.1" 200')
    # Routed by its decoded path, a request the prefix match cannot see is masked all the same.
    encoded = make_mocked_request(
        "POST",
        f"/api/v1/callbacks/tencent%5Fci/tc/{secret}",
        match_info={"account": "tc", "secret": secret},
    )
    line = _access_line(caplog, encoded)
    assert secret not in line
    assert line.startswith('"POST /api/v1/callbacks/tencent_ci/tc/*** HTTP/1.1"')


# --- the callback token in the config -------------------------------------------------------------


def _settings(tmp_path: Path, keys: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "accounts:\n"
        f"  tc:\n    provider: tencent_ci\n    bucket: {BUCKET}\n    region: ap-beijing\n"
        f"    {keys}\n"
        "  hw:\n    provider: huawei_metastudio\n    region: r\n    project_id: p\n"
    )
    return path


def test_the_token_comes_from_its_variable_or_file_and_the_file_is_watched(
    tmp_path: Path,
) -> None:
    settings = load_settings(_settings(tmp_path, "callback_token_env: CB"))
    tokens = resolve_callback_tokens(settings, {"CB": f" {TOKEN}\n"})
    assert {name: token.get_secret_value() for name, token in tokens.items()} == {"tc": TOKEN}
    assert resolve_callback_tokens(load_settings(_settings(tmp_path, "region: x")), {}) == {}
    token_file = tmp_path / "cb"
    token_file.write_text(TOKEN)
    settings = load_settings(_settings(tmp_path, f"callback_token_file: {token_file}"))
    assert resolve_callback_tokens(settings, {})["tc"].get_secret_value() == TOKEN
    assert token_file in watched_files(settings)


@pytest.mark.parametrize(
    ("keys", "environ", "problem"),
    [
        (
            "callback_token_env: CB",
            {},
            "accounts.tc.callback_token_env: environment variable CB is not set",
        ),
        (
            "callback_token_env: CB",
            {"CB": "short"},
            "accounts.tc.callback_token_env: the token has 5 characters; use at least 16",
        ),
        (
            "callback_token_file: /nonexistent/cb",
            {},
            "accounts.tc.callback_token_file: cannot read /nonexistent/cb",
        ),
    ],
)
def test_an_unusable_token_is_one_line_naming_its_key(
    tmp_path: Path, keys: str, environ: dict[str, str], problem: str
) -> None:
    settings = load_settings(_settings(tmp_path, keys))
    with pytest.raises(ConfigError) as caught:
        resolve_callback_tokens(settings, environ)
    (message,) = caught.value.problems
    assert message.startswith(problem), message
    cloud_secrets = {
        "TENCENTCLOUD_SECRET_ID": "i",
        "TENCENTCLOUD_SECRET_KEY": "k",
        "CLOUD_SDK_AK": "a",
        "CLOUD_SDK_SK": "s",
    }
    assert check_credentials(settings, {**cloud_secrets, **environ}) == [message]
