"""The Tencent CI provider's XML handling: the documented answer, hostile and broken bodies."""

from __future__ import annotations

import pytest

from exporter.model import AuthError, NotFoundError, Phase, ResponseParseError, ThrottledError
from exporter.providers.tencent_ci import _error, parse_queues, parse_response, parse_time
from exporter.simulator.tencent_ci import SEED_SAMPLE_BODY
from exporter.states import TENCENT_STATES, TENCENT_TABLE

# The document's sample with its one typo (<Tag>Translation<Tag>) corrected.
DOCUMENTED = SEED_SAMPLE_BODY.replace(b"<Tag>Translation<Tag>", b"<Tag>Translation</Tag>")

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Response><JobsDetail><JobId>x</JobId><State>&lol4;</State></JobsDetail></Response>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Response><JobsDetail><JobId>x</JobId><State>&xxe;</State></JobsDetail></Response>"""


def test_the_documented_answer_parses() -> None:
    jobs, missing, token = parse_response(DOCUMENTED)
    assert missing == set()
    assert token is None
    (job,) = jobs
    assert job.job_id == "a8d121820f5e411ec926ef19d53ba9c6f"
    assert (job.state, job.phase, job.terminal) == ("Running", Phase.RUNNING, False)
    assert job.job_type == "Translation"
    assert job.queue_id == "p893bcda225bf4945a378da6662e81a89"
    assert job.created_at == parse_time("2022-07-07T04:12:12+00:00")
    assert job.started_at == job.created_at + 1
    assert job.finished_at is None
    assert job.failure_code is None


def test_the_documents_own_malformed_sample_is_a_parse_error() -> None:
    with pytest.raises(ResponseParseError, match="malformed XML"):
        parse_response(SEED_SAMPLE_BODY)


@pytest.mark.parametrize("body", [BOMB, XXE])
def test_entity_tricks_are_refused_before_expansion(body: bytes) -> None:
    with pytest.raises(ResponseParseError, match="refused XML"):
        parse_response(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<Other/>",
        b"<Response><JobsDetail><JobId>x</JobId></JobsDetail></Response>",
    ],
)
def test_unusable_answers_are_parse_errors(body: bytes) -> None:
    with pytest.raises(ResponseParseError):
        parse_response(body)


def test_a_failed_job_carries_code_message_and_its_run_time() -> None:
    body = b"""<Response><JobsDetail><Code>AudioRecognitionFailed</Code>
<Message>audio could not be decoded</Message><JobId>j1</JobId><State>Failed</State>
<CreationTime>2022-07-07T12:00:00+0800</CreationTime><StartTime>2022-07-07T12:00:05+0800</StartTime>
<EndTime>2022-07-07T12:01:00+0800</EndTime><Tag>SpeechRecognition</Tag><SubTag>x</SubTag></JobsDetail>
<NonExistJobIds>j2</NonExistJobIds><NonExistJobIds>j3,j4</NonExistJobIds></Response>"""
    (job,), missing, _ = parse_response(body)
    assert job.phase is Phase.FAILED
    assert job.terminal
    assert (job.failure_code, job.failure_reason) == (
        "AudioRecognitionFailed",
        "audio could not be decoded",
    )
    assert job.duration == 60.0
    assert ("SubTag", "x") in job.extra
    assert missing == {"j2", "j3", "j4"}


def test_bad_times_and_progress_are_recorded_not_fatal() -> None:
    body = b"""<Response><JobsDetail><JobId>j</JobId><State>Running</State>
<CreationTime>yesterday</CreationTime><StartTime>2022-07-07T12:00:00</StartTime>
<Progress>150</Progress></JobsDetail><NextToken>abc</NextToken></Response>"""
    (job,), _, token = parse_response(body)
    assert set(job.parse_errors) == {"CreationTime", "StartTime", "Progress"}
    assert job.created_at is None
    assert token == "abc"


def test_progress_is_a_ratio() -> None:
    body = (
        b"<Response><JobsDetail><JobId>j</JobId><State>Running</State>"
        b"<Progress>45</Progress></JobsDetail></Response>"
    )
    (job,), _, _ = parse_response(body)
    assert job.progress == 0.45


def test_every_documented_state_has_a_phase() -> None:
    assert list(TENCENT_STATES) == ["Submitted", "Running", "Success", "Failed", "Pause", "Cancel"]
    assert TENCENT_TABLE.phase_of("Pause") == (Phase.PENDING, True)
    assert TENCENT_TABLE.phase_of("Cancel") == (Phase.CANCELLED, True)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (403, "SignatureDoesNotMatch", AuthError),
        (403, "AccessDenied", AuthError),
        (503, "SlowDown", ThrottledError),
        (404, "ResourceNotFound", NotFoundError),
    ],
)
def test_error_bodies_are_surfaced_with_code_and_request_id(
    status: int, code: str, error: type[Exception]
) -> None:
    body = (
        f"<Error><Code>{code}</Code><Message>nope</Message>"
        f"<RequestId>NTk0MjdmODlfMjQ4OGY3XzYzYzhf</RequestId></Error>"
    ).encode()
    result = _error(status, {}, body)
    assert isinstance(result, error)
    assert result.code == code
    assert "NTk0MjdmODlfMjQ4OGY3XzYzYzhf" in str(result)


QUEUE_ANSWER = b"""<Response>
  <RequestId>NjQ3ZGE5ZWJfOTBmYTUwOWVfOTUzMl8x</RequestId>
  <TotalCount>2</TotalCount>
  <PageNumber>1</PageNumber>
  <PageSize>10</PageSize>
  <QueueList>
    <QueueId>p893bcda225bf4945a378da6662e81a89</QueueId>
    <Name>ai-queue</Name>
    <State>Active</State>
    <MaxSize>10000</MaxSize>
    <MaxConcurrent>10</MaxConcurrent>
    <Category>AIProcess</Category>
  </QueueList>
  <QueueList>
    <QueueId>p73fc66f5e121531194c27ca7c20760d7</QueueId>
    <Name>paused-queue</Name>
    <State>Paused</State>
    <MaxConcurrent>x</MaxConcurrent>
  </QueueList>
  <NonExistPIDs>p-nope</NonExistPIDs>
</Response>"""


def test_a_queue_answer_parses_with_paused_and_max_concurrent() -> None:
    page = parse_queues(QUEUE_ANSWER)
    assert page.total == 2
    active, paused = page.queues
    assert (active.queue_id, active.name, active.paused, active.max_concurrent) == (
        "p893bcda225bf4945a378da6662e81a89",
        "ai-queue",
        False,
        10,
    )
    assert paused.paused
    assert paused.state == "Paused"
    assert paused.max_concurrent is None  # not a number: no sample rather than a wrong one


@pytest.mark.parametrize(
    "body",
    [
        b"<Error><Code>x</Code></Error>",
        b"<Response><QueueList><Name>n</Name></QueueList></Response>",
        b"<Response><QueueList>",
    ],
)
def test_unusable_queue_answers_are_parse_errors(body: bytes) -> None:
    with pytest.raises(ResponseParseError):
        parse_queues(body)
