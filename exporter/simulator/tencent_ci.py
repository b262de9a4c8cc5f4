"""A fake Tencent Cloud CI: DescribeAIJob, DescribeMediaJob(s), the job list and the queue
look-ups behind COS auth.

Like the MetaStudio simulator it speaks real HTTP, so the exporter's provider, the official
cos-python-sdk-v5 and benchmarks talk to it as they talk to
`<BucketName-APPID>.ci.<Region>.myqcloud.com`: COS signatures are verified, answers are XML
with an `x-ci-request-id` header, and errors are `<Error>` bodies. An injected clock and a
`speed` factor decide where each job is in its script, so tests step jobs through their lives
without sleeping and the demo compresses minutes into seconds.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TypeAlias
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

from exporter.signing import tencent
from exporter.simulator.faults import FaultDialect
from exporter.simulator.quota import install
from exporter.simulator.scripted import Override, Position, ScriptedSimulator
from exporter.simulator.scripts import Failure, Script, ScriptLike, script_of
from exporter.simulator.tencent_queues import (
    CATEGORIES,
    DEFAULT_CATEGORY,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_SIZE,
    Queue,
    QueueQuery,
)
from exporter.simulator.tencent_scripts import (
    CANCELLED,
    FAILED,
    HAPPY,
    JOB_FAILED,
    PAUSED_RESUMED,
    PROGRESS_TAGS,
    SLOW,
    STATES,
    STUCK,
    STUCK_PROGRESS,
    SUCCESS_CODE,
    TERMINAL_STATES,
)

logger = logging.getLogger(__name__)

# DescribeMediaJobs takes at most this many comma-separated ids per request.
MAX_BATCH = 10
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
# CI writes its times in Beijing time, `2022-07-07T12:12:12+0800`.
CHINA_TIME = timezone(timedelta(hours=8))
REQUEST_ID_HEADER = "x-ci-request-id"
XML_CONTENT_TYPE = "application/xml"

# Defaults for `python -m exporter.simulator --cloud tencent` and the exporter's --demo; they
# guard nothing.
DEMO_TENCENT_BUCKET = "examplebucket-1250000000"
DEMO_TENCENT_REGION = "ap-beijing"
DEMO_TENCENT_SECRET_ID = "AKIDDEMOSECRETID00000000000000000000"  # noqa: S105 -- published
DEMO_TENCENT_SECRET_KEY = "demo-tencent-secret-key-not-a-secret"  # noqa: S105 -- published
# The API document's queue id, and a second one.
DEMO_QUEUE_IDS = ("p893bcda225bf4945a378da6662e81a89", "p73fc66f5e121531194c27ca7c20760d7")
DEFAULT_QUEUE_ID = DEMO_QUEUE_IDS[0]


@dataclass(frozen=True, slots=True)
class DemoJob:
    """One demo job: id, script, `Tag`, `QueueId`, and simulated seconds already elapsed."""

    job_id: str
    script: Script
    tag: str
    queue_id: str
    offset: float


# The offsets put the jobs in different states at start-up (Submitted, Running, Cancel), and
# at the default speed of 30 every one of the six states shows within the first ten seconds.
# Four jobs share the first queue, so listing it two at a time takes two pages.
DEMO_TENCENT_JOBS: tuple[DemoJob, ...] = (
    # The job id of the API document's example.
    DemoJob("a8d121820f5e411ec926ef19d53ba9c6f", HAPPY, "Translation", DEMO_QUEUE_IDS[0], 100.0),
    DemoJob("a6dbf6090f0db5ea1b5dea50a3798a777", FAILED, "SpeechRecognition", DEMO_QUEUE_IDS[0], 0),
    DemoJob(
        "a00da32cbb2d658c28bc715ab52d284ef",
        PAUSED_RESUMED,
        "SegmentVideoBody",
        DEMO_QUEUE_IDS[1],
        60.0,
    ),
    DemoJob(
        "a6bfe5fc372725bb0bf5eea19b69d19d5", CANCELLED, "WordsGeneralize", DEMO_QUEUE_IDS[0], 360.0
    ),
    DemoJob("a240f041723f854d2a1675bcc47e3db28", SLOW, "SpeechRecognition", DEMO_QUEUE_IDS[1], 1e3),
    DemoJob("a4c94f044766b5903a82f5f84b551f476", STUCK, "Translation", DEMO_QUEUE_IDS[0], 5.0),
)
_DEMO_NAMESPACE = uuid.UUID("3b0f7c1e-5a2d-4e69-8c47-1d9e2f6a0b85")

# Input/output file extensions by tag, for the `Input` and `Operation` nodes.
_EXTENSIONS = {
    "Translation": ("txt", "txt"),
    "SpeechRecognition": ("mp3", "txt"),
    "WordsGeneralize": ("txt", "json"),
    "SegmentVideoBody": ("mp4", "mp4"),
}
# The `Code` an `<Error>` body carries when an override sets only a status.
_STATUS_CODES = {
    400: "InvalidArgument",
    403: "AccessDenied",
    404: "NoSuchResource",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}

# -- Canned bodies that parsers must survive, for `set_override(body=...)` ----------------------

# The API document's own sample answer, verbatim: `<Tag>Translation<Tag>` is not well-formed.
SEED_SAMPLE_BODY = b"""<Response>
<JobsDetail>
<Code>Success</Code>
<Message></Message>
<JobId>a8d121820f5e411ec926ef19d53ba9c6f</JobId>
<State>Running</State>
<CreationTime>2022-07-07T12:12:12+0800</CreationTime>
<StartTime>2022-07-07T12:12:13+0800</StartTime>
<EndTime>-</EndTime>
<QueueId>p893bcda225bf4945a378da6662e81a89</QueueId>
<Tag>Translation<Tag>
<Input>
<Object>test.txt</Object>
<Lang>zh</Lang>
<Type>txt</Type>
</Input>
<Operation>
<Translation>
<Lang>en</Lang>
<Type>txt</Type>
</Translation>
<Output>
<Region>ap-beijing</Region>
<Bucket>test-123456789</Bucket>
<Object>test-result.txt</Object>
</Output>
<UserData>This is my data.</UserData>
</Operation>
</JobsDetail>
</Response>"""


def xml_bomb_body(job_id: str = "a8d121820f5e411ec926ef19d53ba9c6f") -> bytes:
    """A "billion laughs" answer: ten nested entities expand to 10**9 copies of `lol`."""
    entities = ['<!ENTITY lol0 "lol">']
    entities += [f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)]
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE Response [\n'
        + "\n".join(entities)
        + "\n]>\n<Response><JobsDetail><Code>Success</Code><Message>&lol9;</Message>"
        + f"<JobId>{job_id}</JobId><State>Running</State></JobsDetail></Response>"
    ).encode()


def oversized_body(job_id: str = "a8d121820f5e411ec926ef19d53ba9c6f", size: int = 2 << 20) -> bytes:
    """A well-formed answer of at least `size` bytes (default 2 MiB), padded in `Message`."""
    return (
        "<Response><JobsDetail><Code>Success</Code><Message>"
        + "x" * size
        + f"</Message><JobId>{job_id}</JobId><State>Running</State></JobsDetail></Response>"
    ).encode()


# -- XML ------------------------------------------------------------------------------------------

# An element: its name and either its text or its children, in order.
XmlNode: TypeAlias = tuple[str, "str | Sequence[XmlNode]"]

# Characters XML 1.0 cannot carry at all; an id echoed from a URL may contain them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _NOT_XML.sub("\ufffd", text)


def render(node: XmlNode) -> str:
    name, content = node
    if isinstance(content, str):
        return f"<{name}>{_escape(content)}</{name}>"
    return f"<{name}>{''.join(render(child) for child in content)}</{name}>"


def _request_id() -> str:
    # Shaped like CI's ids (base64 of an opaque value); unique per answer.
    return base64.b64encode(uuid.uuid4().bytes).decode()


def _xml(status: int, node: XmlNode) -> web.Response:
    return _raw(status, render(node).encode())


def _raw(status: int, body: bytes) -> web.Response:
    return web.Response(
        status=status,
        body=body,
        content_type=XML_CONTENT_TYPE,
        headers={REQUEST_ID_HEADER: _request_id(), "Server": "tencent-ci"},
    )


def _error(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """COS's error body; the SDK's CosServiceError reads Code, Message, Resource and RequestId."""
    logger.debug("request_rejected", extra={"status": status, "error_code": code})
    return _xml(
        status,
        (
            "Error",
            [
                ("Code", code),
                ("Message", message),
                ("Resource", f"{request.host}{request.path}"),
                ("RequestId", _request_id()),
                ("TraceId", _request_id()),
            ],
        ),
    )


SKEW_MESSAGE = "The difference between the request time and the server's time is too large."


def _fault_error(request: web.Request, status: int) -> web.Response:
    code = _STATUS_CODES.get(status, "InternalError")
    return _error(request, status, code, f"simulated {status}")


def _throttled(request: web.Request) -> web.Response:
    """The answer over the bucket's quota (`TencentCISimulator.quota`). CI documents no code
    for its request limit: 429 with COS's `<Error>` body and this code is a guess."""
    return _error(request, 429, "RequestLimitExceeded", "Request rate exceeds the limit.")


FAULT_DIALECT = FaultDialect(
    content_type=XML_CONTENT_TYPE,
    error=_fault_error,
    expired_signature=lambda request: _error(request, 403, "RequestTimeTooSkewed", SKEW_MESSAGE),
)


async def _no_such_resource(request: web.Request) -> web.Response:
    return _error(request, 404, "NoSuchResource", "The specified resource does not exist.")


def format_time(moment: float | None) -> str:
    """CI's time format in Beijing time; `-` for a time not reached yet, as CI writes it."""
    if moment is None:
        return "-"
    return datetime.fromtimestamp(math.floor(moment), CHINA_TIME).strftime(TIME_FORMAT)


def parse_time(value: str) -> float:
    """Parse `startCreationTime`-style values; ValueError if not in CI's format.

    A `+` sent unencoded in a query string arrives as a space; accept that too.
    """
    # The format is spelled out (it is TIME_FORMAT) so the linter sees the %z.
    return datetime.strptime(value.replace(" ", "+"), "%Y-%m-%dT%H:%M:%S%z").timestamp()


# -- Jobs -----------------------------------------------------------------------------------------


_Override = Override[bytes]


@dataclass(frozen=True, slots=True)
class _Hold:
    """A job waiting in a paused queue: from wall time `since` it stands at `frozen`, which is
    `moment` on its script clock."""

    since: float
    moment: float
    frozen: Position


@dataclass(slots=True)
class _Job:
    job_id: str
    script: Script
    started: float
    loop: bool
    tag: str
    queue_id: str
    sub_tag: str | None
    override: _Override | None = None
    hold: _Hold | None = None
    # Ended holds: their seconds shift every later moment of the script to a later wall time.
    # Holds before the current pass are summed in `held_before`; later ones are kept as
    # (script moment, seconds) so that times before them stay where they were.
    held_before: float = 0.0
    holds: list[tuple[float, float]] = field(default_factory=list)

    def shift(self) -> float:
        """Wall seconds the script clock has stood still in ended holds."""
        return self.held_before + math.fsum(seconds for _, seconds in self.holds)

    def wall_time(self, moment: float) -> float:
        """The wall time of a script-clock moment of the current pass or later."""
        return moment + self.held_before + math.fsum(s for m, s in self.holds if m < moment)


@dataclass(frozen=True, slots=True)
class _ListQuery:
    queue_id: str
    tag: str
    states: frozenset[str] | None
    start: float | None
    end: float | None
    ascending: bool
    size: int
    after: tuple[int, str] | None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> _ListQuery:
        """Read the list API's parameters; ValueError names the first bad one.

        `queueId` and `tag` are required, as the API documents mark them.
        """
        for required in ("queueId", "tag"):
            if not query.get(required):
                raise ValueError(f"{required} is required")
        states_value = query.get("states", "")
        states = None
        if states_value and states_value != "All":
            names = [name for name in states_value.split(",") if name]
            unknown = sorted(set(names) - set(STATES))
            if unknown or not names:
                raise ValueError(f"states: unknown state {', '.join(unknown) or states_value!r}")
            states = frozenset(names)
        start = end = None
        try:
            if query.get("startCreationTime"):
                start = parse_time(query["startCreationTime"])
            if query.get("endCreationTime"):
                end = parse_time(query["endCreationTime"])
        except ValueError:
            raise ValueError(
                "startCreationTime/endCreationTime must look like 2022-07-07T12:12:12+0800"
            ) from None
        order = query.get("orderByTime") or "Desc"
        if order not in ("Desc", "Asc"):
            raise ValueError("orderByTime must be Desc or Asc")
        size_value = query.get("size") or str(DEFAULT_PAGE_SIZE)
        # isascii: str.isdigit also accepts digits such as "²" that int() refuses.
        if not (size_value.isascii() and size_value.isdigit()) or not (
            1 <= int(size_value) <= MAX_PAGE_SIZE
        ):
            raise ValueError(f"size must be an integer from 1 to {MAX_PAGE_SIZE}")
        token = query.get("nextToken", "")
        return cls(
            queue_id=query.get("queueId", ""),
            tag=query.get("tag", ""),
            states=states,
            start=start,
            end=end,
            ascending=order == "Asc",
            size=int(size_value),
            after=_decode_token(token) if token else None,
        )


def _encode_token(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[int, str]:
    """The sort key of the last job of the previous page; ValueError if not one of ours."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("nextToken is invalid") from None
    created, sep, job_id = text.partition(":")
    if not sep or not re.fullmatch(r"-?\d+", created) or not job_id:
        raise ValueError("nextToken is invalid")
    return int(created), job_id


class TencentCISimulator(ScriptedSimulator[_Job]):
    """Jobs on an accelerated clock, served as CI's job APIs answer them.

    `credentials` maps SecretId to SecretKey; a SecretId in `tokens` is a temporary credential
    whose requests must carry its token in a signed `x-ci-security-token` header.

    Every queue a job names exists; `pause_queue` holds the queue's waiting jobs in `Pause`.
    """

    def __init__(
        self,
        *,
        bucket: str,
        credentials: Mapping[str, str],
        tokens: Mapping[str, str] | None = None,
        region: str = DEMO_TENCENT_REGION,
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
    ) -> None:
        super().__init__(clock=clock, speed=speed)
        self._bucket = bucket
        self._region = region
        self._credentials = dict(credentials)
        self._tokens = dict(tokens or {})
        self._queues: dict[str, Queue] = {}

    @property
    def bucket(self) -> str:
        return self._bucket

    def add_job(
        self,
        job_id: str,
        script: ScriptLike,
        *,
        tag: str = "Translation",
        queue_id: str = DEFAULT_QUEUE_ID,
        sub_tag: str | None = None,
        loop: bool = False,
        started: float | None = None,
    ) -> None:
        """Create `job_id` on `script` at `started` (default: now); ValueError if it exists.

        Jobs can be added while the simulator serves, so discovery finds jobs no config lists.
        Before `started` the job shows its first step; past its start, `loop` decides whether
        it restarts (with a new CreationTime) after its last step or stays there. A queue not
        seen before is created, active; in a paused queue the job waits (see `pause_queue`).
        """
        when = self._start(job_id, started)
        job = _Job(
            job_id=job_id,
            script=script_of(script),
            started=when,
            loop=loop,
            tag=tag,
            queue_id=queue_id,
            sub_tag=sub_tag,
        )
        self._jobs[job_id] = job
        queue = self._queues.get(queue_id)
        if queue is None:
            number = len(self._queues) + 1
            self.add_queue(queue_id, name=f"queue-{number}", created=min(when, self._clock()))
        elif queue.paused_since is not None:
            self._hold(job, self._clock())

    def add_queue(
        self,
        queue_id: str,
        *,
        name: str,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        max_size: int = DEFAULT_MAX_SIZE,
        category: str = DEFAULT_CATEGORY,
        created: float | None = None,
    ) -> None:
        """Create an active queue (created at `created`, default now); ValueError if it exists."""
        if queue_id in self._queues:
            raise ValueError(f"queue {queue_id} already exists")
        if category not in CATEGORIES[1:]:
            raise ValueError(f"category must be one of {', '.join(CATEGORIES[1:])}")
        when = self._clock() if created is None else created
        self._queues[queue_id] = Queue(
            queue_id=queue_id,
            name=name,
            max_concurrent=max_concurrent,
            max_size=max_size,
            category=category,
            created=when,
            updated=when,
        )

    def queue_state(self, queue_id: str) -> str:
        """`Active` or `Paused` (KeyError if unknown)."""
        return self._queues[queue_id].state

    def queue_ids(self) -> list[str]:
        return list(self._queues)

    def pause_queue(self, queue_id: str) -> None:
        """Stop scheduling the queue's jobs (KeyError if unknown; pausing twice changes nothing).

        Running jobs go on. A job waiting in a `Submitted` step now, or on reaching one later
        (a looping job starting its next pass, a job added to the queue), shows `Pause` with
        its script clock stopped until `resume_queue`.
        """
        queue = self._queues[queue_id]
        if queue.paused_since is not None:
            return
        now = self._clock()
        queue.paused_since = queue.updated = now
        for job in self._jobs.values():
            if job.queue_id == queue_id:
                self._hold(job, now)

    def resume_queue(self, queue_id: str) -> None:
        """Schedule the queue's jobs again: each held job goes on from where it stood, its later
        steps shifted by the time it was held (KeyError if unknown; a no-op if active)."""
        queue = self._queues[queue_id]
        if queue.paused_since is None:
            return
        now = self._clock()
        queue.paused_since = None
        queue.updated = now
        for job in self._jobs.values():
            if job.queue_id == queue_id:
                self._release(job, now)

    def state_of(self, job_id: str) -> str:
        """The state a poll would see now (KeyError if unknown)."""
        return self.detail(job_id)["State"]

    def detail(self, job_id: str) -> dict[str, str]:
        """The scalar JobsDetail fields a poll would see now, with any forced state (KeyError)."""
        return self._detail(self._jobs[job_id], self._clock())

    def transitions(self, job_id: str, until: float | None = None) -> list[tuple[str, float]]:
        """As the base class's, with a paused queue's holds: the job entered `Pause` when a hold
        began, and its waiting state again when it ended (nothing after a hold not ended yet).
        Wall times of passes before ended holds are not
        kept: a looping job that was held lists its current pass only."""
        changes = super().transitions(job_id, until)
        job = self._jobs[job_id]
        hold = job.hold
        end = self._clock() if until is None else until
        # Ended holds of the current pass: `Pause` from its start, then the waiting state again.
        for moment, seconds in job.holds:
            paused = job.wall_time(moment)
            waiting = self._state(job, self._position(job, moment), held=False)
            changes += [
                change
                for change in (("Pause", paused), (waiting, paused + seconds))
                if change[1] <= end
            ]
        changes.sort(key=lambda change: change[1])
        if hold is not None and hold.since <= end:
            changes = [change for change in changes if change[1] <= hold.since]
            changes.append(("Pause", hold.since))
        return changes

    def _first_listed_pass(self, job: _Job) -> int:
        total = job.script.seconds
        if not (job.held_before or job.holds) or not math.isfinite(total) or not job.loop:
            return 0
        created = self._where(job, self._clock())[0].created
        return round((created - job.started) * self._speed / total)

    def _wall_time(self, job: _Job, moment: float) -> float:
        return job.wall_time(moment)

    def set_override(
        self, job_id: str, *, state: str | None = None, body: bytes | None = None, status: int = 200
    ) -> None:
        """Pin what a job reports, for tests of edge cases the scripts do not reach.

        `state` forces the state (with a failure code for `Failed`); `body` replaces the whole
        answer of any look-up that includes the job (a batch breaks as a whole, as it would);
        `status` sets the HTTP status, with a matching `<Error>` body when >= 400 and no `body`.
        """
        self._pin(job_id, state, body, status)

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this simulator's jobs (one per server)."""
        app = web.Application()
        app[TENCENT_SIMULATOR_KEY] = self
        install(app, self.quota, _throttled)
        for prefix in ("/ai_jobs", "/jobs"):
            app.router.add_get(prefix, self._list)
            app.router.add_get(prefix + "/{ids}", self._describe)
        app.router.add_get("/ai_queue", self._list_ai_queues)
        app.router.add_get("/queue", self._list_media_queues)
        # Anything else gets CI's XML 404, not aiohttp's text one.
        app.router.add_route("*", "/{tail:.*}", _no_such_resource)
        return app

    # -- HTTP ---------------------------------------------------------------------------------

    async def _describe(self, request: web.Request) -> web.StreamResponse:
        job_ids = request.match_info["ids"].split(",")
        return await self._answer_or_fault(request, job_ids, FAULT_DIALECT, self._describe_jobs)

    async def _describe_jobs(self, request: web.Request) -> web.Response:
        rejection = self._authenticate(request)
        if rejection is not None:
            return rejection
        ids = list(dict.fromkeys(part for part in request.match_info["ids"].split(",") if part))
        if not ids or len(ids) > MAX_BATCH:
            return _error(
                request,
                400,
                "InvalidArgument",
                f"give 1 to {MAX_BATCH} job ids, separated by commas",
            )
        jobs = [self._jobs[job_id] for job_id in ids if job_id in self._jobs]
        status = 200
        for job in jobs:
            override = job.override
            if override is None:
                continue
            if override.body is not None:
                return _raw(override.status, override.body)
            if override.status >= 400:
                code = _STATUS_CODES.get(override.status, "InternalError")
                return _error(request, override.status, code, f"simulated {override.status}")
            status = override.status
        now = self._clock()
        nodes: list[XmlNode] = [self._job_node(job, now) for job in jobs]
        nodes += [("NonExistJobIds", job_id) for job_id in ids if job_id not in self._jobs]
        return _xml(status, ("Response", nodes))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        return await self._answer_or_fault(request, (), FAULT_DIALECT, self._list_jobs)

    async def _list_jobs(self, request: web.Request) -> web.Response:
        rejection = self._authenticate(request)
        if rejection is not None:
            return rejection
        try:
            query = _ListQuery.parse(request.query)
        except ValueError as exc:
            return _error(request, 400, "InvalidArgument", str(exc))
        now = self._clock()
        matching: list[tuple[tuple[int, str], _Job]] = []
        for job in self._jobs.values():
            if job.queue_id != query.queue_id or job.tag != query.tag:
                continue
            position, held = self._where(job, now)
            if query.states is not None and self._state(job, position, held) not in query.states:
                continue
            created = math.floor(job.wall_time(position.created))
            if query.start is not None and created < query.start:
                continue
            if query.end is not None and created > query.end:
                continue
            matching.append(((created, job.job_id), job))
        matching.sort(key=lambda item: item[0], reverse=not query.ascending)
        after = query.after
        if after is not None:
            matching = [
                item
                for item in matching
                if (item[0] > after if query.ascending else item[0] < after)
            ]
        page = matching[: query.size]
        more = len(matching) > query.size
        nodes: list[XmlNode] = [self._job_node(job, now) for _, job in page]
        nodes.append(("NextToken", _encode_token(page[-1][0]) if more else ""))
        return _xml(200, ("Response", nodes))

    async def _list_ai_queues(self, request: web.Request) -> web.StreamResponse:
        return await self._answer_or_fault(
            request, _queue_ids(request), FAULT_DIALECT, self._describe_ai_queues
        )

    async def _list_media_queues(self, request: web.Request) -> web.StreamResponse:
        return await self._answer_or_fault(
            request, _queue_ids(request), FAULT_DIALECT, self._describe_media_queues
        )

    async def _describe_ai_queues(self, request: web.Request) -> web.Response:
        return self._describe_queues(request, with_category=False)

    async def _describe_media_queues(self, request: web.Request) -> web.Response:
        return self._describe_queues(request, with_category=True)

    def _describe_queues(self, request: web.Request, *, with_category: bool) -> web.Response:
        """DescribeAIProcessQueues (`/ai_queue`) and DescribeMediaProcessQueues (`/queue`).

        Real CI keeps AI and media queues apart; the simulator does not, so both routes serve
        every queue (and `/queue` filters by `category` when asked).
        """
        rejection = self._authenticate(request)
        if rejection is not None:
            return rejection
        try:
            query = QueueQuery.parse(request.query, with_category=with_category)
        except ValueError as exc:
            return _error(request, 400, "InvalidArgument", str(exc))
        matching = [queue for queue in self._queues.values() if query.matches(queue)]
        first = (query.page_number - 1) * query.page_size
        nodes: list[XmlNode] = [
            ("RequestId", _request_id()),
            ("TotalCount", str(len(matching))),
            ("PageNumber", str(query.page_number)),
            ("PageSize", str(query.page_size)),
        ]
        nodes += [_queue_node(queue) for queue in matching[first : first + query.page_size]]
        nodes += [("NonExistPIDs", qid) for qid in query.queue_ids if qid not in self._queues]
        return _xml(200, ("Response", nodes))

    def _authenticate(self, request: web.Request) -> web.Response | None:
        """Check the COS signature as CI does; an error response, or None when the caller is in.

        Messages name what was wrong, never the key, signature or token that was sent.
        """
        header = request.headers.get("Authorization")
        if not header:
            return _error(request, 403, "AccessDenied", "Access Denied: no Authorization header.")
        auth = tencent.parse_authorization(header)
        if auth is None:
            return _error(
                request,
                403,
                "AccessDenied",
                "Access Denied: Authorization is not a q-sign-algorithm=sha1 signature.",
            )
        secret_key = self._credentials.get(auth.secret_id)
        if secret_key is None:
            return _error(request, 403, "AccessDenied", "Access Denied: SecretId not found.")
        now = self._clock()
        for first, last in (auth.sign_time, auth.key_time):
            if now < first:
                return _error(request, 403, "RequestTimeTooSkewed", SKEW_MESSAGE)
            if now > last:
                return _error(request, 403, "AccessDenied", "Request has expired.")
        token = self._tokens.get(auth.secret_id)
        if token is not None:
            sent = request.headers.get(tencent.CI_TOKEN_HEADER)
            if sent is None or tencent.CI_TOKEN_HEADER not in auth.header_list:
                return _error(
                    request,
                    403,
                    "AccessDenied",
                    f"Access Denied: temporary credentials need a signed "
                    f"{tencent.CI_TOKEN_HEADER} header.",
                )
            if not hmac.compare_digest(sent.encode(errors="surrogateescape"), token.encode()):
                return _error(request, 403, "InvalidToken", "The security token is invalid.")
        if not self._signature_matches(request, secret_key, auth):
            return _error(
                request,
                403,
                "SignatureDoesNotMatch",
                "The Signature you specified does not match what we calculated.",
            )
        return None

    def _signature_matches(
        self, request: web.Request, secret_key: str, auth: tencent.ParsedCosAuthorization
    ) -> bool:
        def verify(headers: Mapping[str, str]) -> bool:
            return tencent.verify(
                method=request.method,
                path=request.path,  # decoded: the SDK signs `a,b` and sends `a%2Cb`
                params=request.query,
                headers=headers,
                secret_key=secret_key,
                auth=auth,
            )

        if verify(request.headers):
            return True
        # The official SDK signs `host` as `urlparse(url).hostname`: no port, brackets or case,
        # while the Host header on the wire has the port. Real CI listens on the default ports,
        # where the two agree; this simulator listens on any port, so it also accepts the
        # hostname alone. Our exporter signs Host exactly as sent and passes the first check.
        host = request.headers.get("Host")
        if host is None or "host" not in auth.header_list:
            return False
        try:
            hostname = urlsplit("//" + host).hostname
        except ValueError:
            return False
        if hostname is None or hostname == host:
            return False
        headers = CIMultiDict(request.headers)
        headers["Host"] = hostname
        return verify(headers)

    # -- Job state ----------------------------------------------------------------------------

    def _state(self, job: _Job, position: Position, held: bool) -> str:
        """The `State` that `_detail` reports at `position`, without building the rest: a list
        filters thousands of jobs on it."""
        if job.override is not None and job.override.state is not None:
            return job.override.state
        return "Pause" if held else job.script.steps[position.step].state

    def _where(self, job: _Job, now: float) -> tuple[Position, bool]:
        """Where the job stands in its script now, and whether a paused queue holds it there."""
        hold = job.hold
        if hold is not None and now >= hold.since:
            return hold.frozen, True
        return self._position(job, now - job.shift()), False

    def _hold(self, job: _Job, at: float) -> None:
        """Stop the job at the first moment from `at` on when it waits in a `Submitted` step:
        at once if it waits now, else when its script next reaches one (never, if it does not)."""
        if job.hold is not None:
            return
        moment = at - job.shift()
        position = self._position(job, moment)
        if job.script.steps[position.step].state == "Submitted":
            # A job whose start is still ahead stops at its start.
            moment = max(moment, job.started)
        else:
            upcoming = self._next_wait(job, position)
            if upcoming is None:
                return
            position = upcoming
            moment = position.created + position.elapsed / self._speed
        job.hold = _Hold(since=moment + job.shift(), moment=moment, frozen=position)

    def _next_wait(self, job: _Job, position: Position) -> Position | None:
        """The start of the next `Submitted` step after `position` (in a later pass for a
        looping job), or None if the script never reaches one."""
        steps = job.script.steps
        offsets = list(position.offsets)
        for index in range(position.step + 1, len(steps)):
            offsets.append(offsets[-1] + steps[index - 1].seconds)
            if steps[index].state == "Submitted":
                return _step_start(index, position.created, offsets)
        total = job.script.seconds
        if job.loop and math.isfinite(total):
            created, offsets = position.created + total / self._speed, [0.0]
            for index, step in enumerate(steps):
                if index:
                    offsets.append(offsets[-1] + steps[index - 1].seconds)
                if step.state == "Submitted" and math.isfinite(offsets[-1]):
                    return _step_start(index, created, offsets)
        return None

    def _release(self, job: _Job, at: float) -> None:
        """End the job's hold: its script clock runs again from where it stood."""
        hold, job.hold = job.hold, None
        if hold is None or at <= hold.since:
            return
        job.holds.append((hold.moment, at - hold.since))
        # Holds before the current pass shift all of it alike: keep their sum only.
        created = self._position(job, at - job.shift()).created
        job.held_before += math.fsum(s for m, s in job.holds if m < created)
        job.holds = [(m, s) for m, s in job.holds if m >= created]

    def _progress(self, job: _Job, position: Position) -> int:
        """Percent of the script's Running time done: it holds while paused, ends at 100."""
        steps = job.script.steps
        total = math.fsum(step.seconds for step in steps if step.state == "Running")
        done = math.fsum(
            min(steps[index].seconds, position.elapsed - position.offsets[index])
            for index in range(position.step + 1)
            if steps[index].state == "Running"
        )
        if math.isinf(total):
            # A job that never finishes climbs for ten simulated minutes, then stalls.
            return min(STUCK_PROGRESS, math.floor(done * STUCK_PROGRESS / 600))
        if total <= 0:
            return 0
        return min(99, math.floor(100 * done / total))

    def _detail(self, job: _Job, now: float) -> dict[str, str]:
        """The scalar JobsDetail fields, in the document's order."""
        steps = job.script.steps
        position, held = self._where(job, now)
        state = "Pause" if held else steps[position.step].state
        failure = steps[position.step].failure

        def began(index: int) -> float:
            return job.wall_time(position.created + position.offsets[index] / self._speed)

        started = next(
            (
                began(index)
                for index in range(position.step + 1)
                if steps[index].state != "Submitted"
            ),
            None,
        )
        ended = began(position.step) if state in TERMINAL_STATES else None
        progress = self._progress(job, position)
        override = job.override
        if override is not None and override.state is not None:
            state, failure = override.state, _failure_for(job.script, override.state)
            if started is None and state != "Submitted":
                started = override.since
            ended = override.since if state in TERMINAL_STATES else None
        if state == "Failed" and failure is None:
            failure = JOB_FAILED
        if state == "Success":
            progress = 100
        fields = {
            "Code": failure.code if failure is not None else SUCCESS_CODE,
            "Message": failure.reason if failure is not None else "",
            "JobId": job.job_id,
            "State": state,
            "CreationTime": format_time(job.wall_time(position.created)),
            "StartTime": format_time(started),
            "EndTime": format_time(ended),
            "QueueId": job.queue_id,
            "Tag": job.tag,
        }
        if job.sub_tag is not None:
            fields["SubTag"] = job.sub_tag
        if job.tag in PROGRESS_TAGS and state in ("Running", "Pause", "Success"):
            fields["Progress"] = str(progress)
        return fields

    def _job_node(self, job: _Job, now: float) -> XmlNode:
        """A `JobsDetail` node: the scalar fields, then a small `Input` and `Operation`."""
        source, result = _EXTENSIONS.get(job.tag, ("bin", "bin"))
        input_nodes: list[XmlNode] = [("Object", f"input/{job.job_id}.{source}")]
        operation: list[XmlNode] = []
        if job.tag == "Translation":
            input_nodes += [("Lang", "zh"), ("Type", source)]
            operation.append(("Translation", [("Lang", "en"), ("Type", result)]))
        operation.append(
            (
                "Output",
                [
                    ("Region", self._region),
                    ("Bucket", self._bucket),
                    ("Object", f"output/{job.job_id}.{result}"),
                ],
            )
        )
        operation.append(("UserData", "cloudjob-exporter simulator"))
        children: list[XmlNode] = list(self._detail(job, now).items())
        children += [("Input", input_nodes), ("Operation", operation)]
        return ("JobsDetail", children)


TENCENT_SIMULATOR_KEY = web.AppKey("tencent_ci_simulator", TencentCISimulator)


def _step_start(index: int, created: float, offsets: Sequence[float]) -> Position:
    return Position(step=index, created=created, offsets=tuple(offsets), elapsed=offsets[-1])


def _queue_ids(request: web.Request) -> list[str]:
    """The ids a queue look-up names, so that a fault set for a queue id hits its look-ups."""
    return [part for part in request.query.get("queueIds", "").split(",") if part]


def _queue_node(queue: Queue) -> XmlNode:
    """A `QueueList` entry, its fields in the order the API documents list them (the SDKs'
    parsers do not depend on it); queue notifications are off."""
    notify: list[XmlNode] = [
        ("Url", ""),
        ("State", "Off"),
        ("Type", "Url"),
        ("Event", "TaskFinish"),
        ("ResultFormat", "XML"),
    ]
    return (
        "QueueList",
        [
            ("QueueId", queue.queue_id),
            ("Name", queue.name),
            ("State", queue.state),
            ("NotifyConfig", notify),
            ("MaxSize", str(queue.max_size)),
            ("MaxConcurrent", str(queue.max_concurrent)),
            ("CreateTime", format_time(queue.created)),
            ("UpdateTime", format_time(queue.updated)),
            ("Category", queue.category),
        ],
    )


def _failure_for(script: Script, state: str) -> Failure | None:
    return script.failure_in(state, {"Failed": JOB_FAILED}) if state == "Failed" else None


def demo_tencent_simulator(
    *,
    bucket: str,
    secret_id: str,
    secret_key: str,
    token: str | None = None,
    speed: float = 30.0,
    clock: Callable[[], float] = time.time,
    jobs: int = len(DEMO_TENCENT_JOBS),
) -> TencentCISimulator:
    """A simulator with looping jobs covering every script, staggered to show several states.

    The first six ids are `DEMO_TENCENT_JOBS`; more jobs (for benchmarks) reuse their scripts,
    tags and queues with deterministic `a` + 32-hex ids and spread-out offsets. With `token`
    the credential is temporary: requests must send it in `x-ci-security-token`.
    """
    sim = TencentCISimulator(
        bucket=bucket,
        credentials={secret_id: secret_key},
        tokens={secret_id: token} if token is not None else None,
        clock=clock,
        speed=speed,
    )
    now = clock()
    for number, queue_id in enumerate(DEMO_QUEUE_IDS, 1):
        sim.add_queue(queue_id, name=f"demo-queue-{number}", created=now - 86400)
    for index in range(jobs):
        demo = DEMO_TENCENT_JOBS[index % len(DEMO_TENCENT_JOBS)]
        job_id, offset = demo.job_id, demo.offset
        if index >= len(DEMO_TENCENT_JOBS):
            job_id = "a" + uuid.uuid5(_DEMO_NAMESPACE, f"tencent-demo-job-{index}").hex
            offset = (offset + 37.0 * index) % demo.script.seconds
        sim.add_job(
            job_id,
            demo.script,
            tag=demo.tag,
            queue_id=demo.queue_id,
            loop=True,
            started=now - offset / speed,
        )
    return sim
