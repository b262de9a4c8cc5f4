"""A fake Huawei Cloud MetaStudio: ShowShortJob, ShowVoiceTrainingJob and ListVoiceTrainingJob
behind an API-gateway-like auth check.

It speaks real HTTP so the exporter's provider, the official SDK and benchmarks all talk to it
as they talk to the cloud. An injected clock and a `speed` factor decide where each job is in its
script, so tests step jobs through their lives without sleeping and the demo compresses minutes
into seconds.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

import orjson
from aiohttp import web

from exporter.signing import huawei
from exporter.simulator.faults import FaultDialect
from exporter.simulator.metastudio_training import (
    DEMO_TRAINING_JOBS,
    DEMO_TRAINING_SPECS,
    TRAINING_JOB_PATH,
    TRAINING_LIST_PATH,
    BodyOverride,
    TrainingJob,
    TrainingView,
    parse_list_query,
    training_view,
)
from exporter.simulator.quota import install
from exporter.simulator.scripted import ScriptedSimulator
from exporter.simulator.scripts import (
    ASSESSED_STATES,
    AUDIT_LOOP,
    AUDIT_REJECTED_NOISE,
    ENGINE_ERROR,
    FAILED,
    HAPPY_PATH,
    JOB_TYPE,
    OUT_OF_RANGE_SUCCEED,
    SPLIT_FAILED,
    SPLIT_NO_SPEECH,
    UNDOCUMENTED_STATE,
    UNPARSEABLE_ASSESSMENT,
    Script,
    ScriptLike,
    script_of,
)

logger = logging.getLogger(__name__)

JOB_PATH = "/v1/{project_id}/voice-training-manage/user/short-jobs/{job_id}"
PROJECT_HEADER = "X-Project-Id"
# The gateway refuses signatures whose X-Sdk-Date is further than this from its own clock.
MAX_CLOCK_SKEW_SECONDS = 15 * 60
SKEW_MESSAGE = (
    "Incorrect app authentication information: request time is more than "
    "15 minutes away from server time"
)

# Defaults for `python -m exporter.simulator` and the exporter's --demo; they guard nothing.
DEMO_PROJECT_ID = "0f1d2c3b4a5948e7a6b5c4d3e2f1a0b9"
DEMO_ACCESS_KEY = "DEMOACCESSKEY0000000"
DEMO_SECRET_KEY = "demo-secret-key-not-a-secret"  # noqa: S105 -- published demo credential

# The demo's jobs: (job id, script, report milliseconds, simulated seconds already elapsed).
# The offsets put the jobs in different states at start-up, and each reaches a new state
# within the first ten real seconds at the default speed of 30.
DEMO_JOBS: tuple[tuple[str, Script, bool, float], ...] = (
    # The job id of the API document's example request.
    ("26f06524-4f75-4b3a-a853-b649a21aaf66", HAPPY_PATH, False, 0.0),
    ("f555463c-9d38-404b-b3bb-e840414a519a", AUDIT_LOOP, False, 340.0),
    ("34feb94c-6642-41d1-80cd-20a4d64138ad", SPLIT_FAILED, False, 400.0),
    ("89d1d3fe-1ff2-4a86-a7d6-ac233ffce451", FAILED, False, 560.0),
    ("d69ccfe2-f8f5-4a3f-b68a-d292acc61cef", OUT_OF_RANGE_SUCCEED, False, 790.0),
    ("05c43e8f-9307-4dad-bd67-aa3c24d1afca", UNDOCUMENTED_STATE, False, 700.0),
    ("4ea0a09d-d0dc-45ae-bb1e-4d0676185ad7", HAPPY_PATH, True, 600.0),
    ("94fc70d0-84aa-46bd-b44c-2b063bf336e9", UNPARSEABLE_ASSESSMENT, False, 780.0),
)

# What a forced failed state reports when its script has no step in that state.
_DEFAULT_FAILURES = {
    "AUDIT_FAILED": AUDIT_REJECTED_NOISE,
    "SPLIT_FAILED": SPLIT_NO_SPEECH,
    "FAILED": ENGINE_ERROR,
}
_DEMO_NAMESPACE = uuid.UUID("6f1c9a52-3d0e-4b7a-9e61-0c5d2b8f4a13")
# The error code of a request whose parameters the API refuses (HTTP 400).
INVALID_PARAMETER = "MSS.00000002"


@dataclass(slots=True)
class _Job:
    job_id: str
    script: Script
    started: float
    millis: bool
    loop: bool
    override: BodyOverride | None = None


def _json(status: int, payload: object) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        charset="utf-8",
        # The gateway tags every answer; the SDK copies it into its exceptions.
        headers={"X-Request-Id": uuid.uuid4().hex},
    )


def _error(status: int, code: str, message: str) -> web.Response:
    logger.debug("request_rejected", extra={"status": status, "error_code": code})
    return _json(status, {"error_code": code, "error_msg": message})


# The gateway's error codes for the statuses a STATUS fault sets (others get a generic code).
_FAULT_CODES = {
    401: ("APIGW.0301", "Incorrect IAM authentication information"),
    403: ("APIGW.0302", "The IAM user is not authorized to access the API"),
    404: ("APIGW.0101", "The API does not exist or has not been published in the environment"),
    429: ("APIGW.0308", "The throttling threshold has been reached"),
    502: ("APIGW.0202", "Backend unavailable"),
    503: ("APIGW.0202", "Backend unavailable"),
    504: ("APIGW.0203", "Backend timeout"),
}


def _fault_error(request: web.Request, status: int) -> web.Response:
    code, message = _FAULT_CODES.get(status, ("MSS.00000001", f"simulated HTTP {status}"))
    return _error(status, code, message)


def _throttled(request: web.Request) -> web.Response:
    """The gateway's answer over the tenant's quota (`MetaStudioSimulator.quota`)."""
    return _fault_error(request, 429)


FAULT_DIALECT = FaultDialect(
    content_type="application/json",
    error=_fault_error,
    expired_signature=lambda request: _error(401, "APIGW.0303", SKEW_MESSAGE),
)


async def _no_such_api(request: web.Request) -> web.Response:
    return _error(
        404,
        "APIGW.0101",
        "The API does not exist or has not been published in the environment",
    )


class MetaStudioSimulator(ScriptedSimulator[_Job | TrainingJob]):
    """Jobs on an accelerated clock, served as MetaStudio answers them.

    Short jobs and voice training jobs are separate resources: each path knows only its own
    kind, though the two share one set of ids (an id names one job of either kind). The
    job-level methods (`state_of`, `answer`, `set_override`, `transitions`, `remove_job`) take
    either kind's ids.
    """

    def __init__(
        self,
        *,
        project_id: str,
        credentials: Mapping[str, str],
        tokens: Collection[str] = (),
        clock: Callable[[], float] = time.time,
        speed: float = 1.0,
    ) -> None:
        super().__init__(clock=clock, speed=speed)
        self._project_id = project_id
        self._credentials = dict(credentials)
        self._tokens = frozenset(tokens)

    @property
    def project_id(self) -> str:
        return self._project_id

    def add_job(
        self,
        job_id: str,
        script: ScriptLike,
        *,
        millis: bool = False,
        loop: bool = False,
        started: float | None = None,
    ) -> None:
        """Start `job_id` on `script` at `started` (default: now); ValueError if it exists.

        Before `started` the job shows its first step; past its start, `loop` decides whether
        it restarts after its last step or stays there.
        """
        when = self._start(job_id, started)
        self._jobs[job_id] = _Job(
            job_id=job_id, script=script_of(script), started=when, millis=millis, loop=loop
        )

    def add_training_job(
        self,
        job_id: str,
        script: ScriptLike,
        *,
        job_type: str = "BASIC",
        tag: str | None = None,
        batch_name: str | None = None,
        voice_name: str | None = None,
        ondemand_resource: bool = False,
        millis: bool = False,
        loop: bool = False,
        started: float | None = None,
    ) -> None:
        """Start voice training job `job_id`, as `add_job` starts a short job; ValueError if
        the id exists (of either kind) or `job_type`/`tag` is not one of the SDK's values.

        `voice_name` defaults to one made from the id.
        """
        when = self._start(job_id, started)
        self._jobs[job_id] = TrainingJob(
            job_id=job_id,
            script=script_of(script),
            started=when,
            millis=millis,
            loop=loop,
            job_type=job_type,
            tag=tag,
            batch_name=batch_name,
            voice_name=f"voice-{job_id[:8]}" if voice_name is None else voice_name,
            ondemand_resource=ondemand_resource,
        )

    def job_ids(self) -> list[str]:
        """The short jobs' ids, in the order they were added."""
        return [job_id for job_id, job in self._jobs.items() if isinstance(job, _Job)]

    def training_job_ids(self) -> list[str]:
        """The voice training jobs' ids, in the order they were added."""
        return [job_id for job_id, job in self._jobs.items() if isinstance(job, TrainingJob)]

    def state_of(self, job_id: str) -> str:
        """The state a poll would see now (KeyError if unknown)."""
        job = self._jobs[job_id]
        if job.override is not None and job.override.state is not None:
            return job.override.state
        return job.script.steps[self._position(job, self._clock()).step].state

    def answer(self, job_id: str) -> dict[str, object]:
        """The body a poll would get now, with any forced state but not a replaced body."""
        job = self._jobs[job_id]
        if isinstance(job, TrainingJob):
            return self._training_view(job, self._clock()).answer
        return self._answer(job, self._clock())

    def set_override(
        self,
        job_id: str,
        *,
        state: str | None = None,
        body: Mapping[str, object] | bytes | None = None,
        status: int = 200,
    ) -> None:
        """Pin what a job reports, for tests of edge cases the scripts do not reach.

        `state` forces the state (with its failure and assessment fields); `body` replaces
        the whole answer (bytes are sent as they are, to test parsers); `status` sets the HTTP
        status of that answer. A training job's forced state also shows in list answers and
        filters; a replaced body only in answers about that one job.
        """
        self._pin(job_id, state, body, status)

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this simulator's jobs (one per server)."""
        app = web.Application()
        app[SIMULATOR_KEY] = self
        install(app, self.quota, _throttled)
        app.router.add_get(JOB_PATH, self._show_short_job)
        app.router.add_get(JOB_PATH + "/", self._show_short_job)
        app.router.add_get(TRAINING_JOB_PATH, self._show_training_job)
        app.router.add_get(TRAINING_JOB_PATH + "/", self._show_training_job)
        app.router.add_get(TRAINING_LIST_PATH, self._list_training_jobs)
        app.router.add_get(TRAINING_LIST_PATH + "/", self._list_training_jobs)
        # Anything else gets the gateway's JSON 404, not aiohttp's text one.
        app.router.add_route("*", "/{tail:.*}", _no_such_api)
        return app

    # -- HTTP ---------------------------------------------------------------------------------

    async def _show_short_job(self, request: web.Request) -> web.StreamResponse:
        return await self._show(request, _Job)

    async def _show_training_job(self, request: web.Request) -> web.StreamResponse:
        return await self._show(request, TrainingJob)

    async def _show(
        self, request: web.Request, kind: type[_Job] | type[TrainingJob]
    ) -> web.StreamResponse:
        async def answer(request: web.Request) -> web.Response:
            return await self._answer_request(request, kind)

        job_ids = [request.match_info["job_id"]]
        return await self._answer_or_fault(request, job_ids, FAULT_DIALECT, answer)

    async def _list_training_jobs(self, request: web.Request) -> web.StreamResponse:
        # No job is named: only a fault set for the whole simulator hits a list.
        return await self._answer_or_fault(request, (), FAULT_DIALECT, self._answer_list)

    async def _admit(self, request: web.Request) -> web.Response | None:
        """The gateway's refusal of a request (credentials, project), or None to answer it."""
        body = await request.read()
        path_project = request.match_info["project_id"]
        rejection = self._authenticate(request, body, path_project)
        if rejection is not None:
            return rejection
        if path_project != self._project_id:
            return _error(403, "APIGW.0302", "The IAM user is not authorized to access the project")
        return None

    async def _answer_request(
        self, request: web.Request, kind: type[_Job] | type[TrainingJob]
    ) -> web.Response:
        """One job's answer; a job of the other kind is as unknown as one that never was."""
        rejection = await self._admit(request)
        if rejection is not None:
            return rejection
        job_id = request.match_info["job_id"]
        job = self._jobs.get(job_id)
        if not isinstance(job, kind):
            return _error(404, "MSS.00000003", f"job {job_id} does not exist")
        override = job.override
        if override is not None and override.body is not None:
            if isinstance(override.body, bytes):
                return web.Response(
                    status=override.status, body=override.body, content_type="application/json"
                )
            return _json(override.status, override.body)
        status = 200 if override is None else override.status
        return _json(status, self.answer(job_id))

    async def _answer_list(self, request: web.Request) -> web.Response:
        rejection = await self._admit(request)
        if rejection is not None:
            return rejection
        try:
            query = parse_list_query(request.query)
        except ValueError as error:
            return _error(400, INVALID_PARAMETER, str(error))
        now = self._clock()
        views = (
            self._training_view(job, now)
            for job in self._jobs.values()
            if isinstance(job, TrainingJob)
        )
        return _json(200, query.page(views))

    def _authenticate(
        self, request: web.Request, body: bytes, path_project: str
    ) -> web.Response | None:
        """Check credentials as APIG does; an error response, or None when the caller is in.

        Messages name what was wrong, never the key, signature or token that was sent.
        """
        header = request.headers.get("Authorization")
        if header is None:
            token = request.headers.get("X-Auth-Token")
            if token is None:
                return _error(
                    401,
                    "APIGW.0301",
                    "Incorrect IAM authentication information: "
                    "no Authorization or X-Auth-Token header",
                )
            if token not in self._tokens:
                return _error(
                    401, "APIGW.0301", "Incorrect IAM authentication information: token invalid"
                )
            return None

        auth = huawei.parse_authorization(header)
        if auth is None:
            return _error(
                401,
                "APIGW.0301",
                "Incorrect IAM authentication information: unsupported Authorization header",
            )
        when = huawei.parse_date(request.headers.get(huawei.DATE_HEADER, ""))
        if when is None:
            return _error(
                401,
                "APIGW.0301",
                f"Incorrect IAM authentication information: {huawei.DATE_HEADER} missing "
                "or not in YYYYMMDDTHHMMSSZ format",
            )
        if abs(when.timestamp() - self._clock()) > MAX_CLOCK_SKEW_SECONDS:
            return _error(401, "APIGW.0303", SKEW_MESSAGE)
        secret_key = self._credentials.get(auth.access_key)
        if secret_key is None:
            return _error(
                401, "APIGW.0301", "Incorrect IAM authentication information: AK not found"
            )
        valid = huawei.verify(
            method=request.method,
            path=request.raw_path.partition("?")[0],
            query=list(request.query.items()),
            headers=request.headers,
            body=body,
            secret_key=secret_key,
            auth=auth,
            when=when,
        )
        if not valid:
            return _error(
                401,
                "APIGW.0301",
                "Incorrect IAM authentication information: verify aksk signature fail",
            )
        project = request.headers.get(PROJECT_HEADER)
        if project is None:
            return _error(
                401,
                "APIGW.0301",
                f"Incorrect IAM authentication information: {PROJECT_HEADER} is required",
            )
        if project != path_project:
            return _error(
                403,
                "APIGW.0302",
                f"The IAM user is not authorized to access the API: {PROJECT_HEADER} "
                "does not match the project in the path",
            )
        return None

    # -- Job state ----------------------------------------------------------------------------

    def _training_view(self, job: TrainingJob, now: float) -> TrainingView:
        override = job.override
        pinned = None
        if override is not None and override.state is not None:
            pinned = self._position(job, override.since)
        return training_view(job, self._position(job, now), self._speed, pinned)

    def _answer(self, job: _Job, now: float) -> dict[str, object]:
        """The ShowShortJob body, keys in the document's order."""
        script = job.script
        position = self._position(job, now)
        step = script.steps[position.step]
        updated = position.created + position.offsets[-1] / self._speed
        state, failure = step.state, step.failure
        first_assessed = script.first_assessed
        assessed = first_assessed is not None and position.step >= first_assessed
        if job.override is not None and job.override.state is not None:
            state, updated = job.override.state, job.override.since
            failure = script.failure_in(state, _DEFAULT_FAILURES)
            assessed = script.assessment is not None and state in ASSESSED_STATES

        def stamp(moment: float) -> int:
            return round(moment * 1000) if job.millis else int(moment)

        answer: dict[str, object] = {"job_type": JOB_TYPE, "job_id": job.job_id, "state": state}
        if failure is not None:
            answer["job_failed_code"] = failure.code
            answer["job_failed_reason"] = failure.reason
        answer["create_time"] = stamp(position.created)
        answer["lastupdate_time"] = stamp(updated)
        if assessed and script.assessment is not None:
            answer["assess_result"] = script.assessment.to_json()
        return answer


SIMULATOR_KEY = web.AppKey("metastudio_simulator", MetaStudioSimulator)


def demo_simulator(
    *,
    project_id: str,
    access_key: str,
    secret_key: str,
    speed: float = 30.0,
    clock: Callable[[], float] = time.time,
    jobs: int = len(DEMO_JOBS),
    tokens: Collection[str] = (),
    training_jobs: int = len(DEMO_TRAINING_JOBS),
) -> MetaStudioSimulator:
    """A simulator with looping jobs covering every script, staggered to show several states.

    The first eight short-job ids are `DEMO_JOBS`, the first eight training-job ids
    `DEMO_TRAINING_JOBS`; more jobs of either kind (for benchmarks) reuse those scripts with
    deterministic uuid5 ids and spread-out offsets.
    """
    sim = MetaStudioSimulator(
        project_id=project_id,
        credentials={access_key: secret_key},
        tokens=tokens,
        clock=clock,
        speed=speed,
    )
    now = clock()
    for index in range(jobs):
        job_id, script, millis, offset = DEMO_JOBS[index % len(DEMO_JOBS)]
        if index >= len(DEMO_JOBS):
            job_id = str(uuid.uuid5(_DEMO_NAMESPACE, f"demo-job-{index}"))
            offset = (offset + 97.0 * index) % script.seconds
        sim.add_job(job_id, script, millis=millis, loop=True, started=now - offset / speed)
    for index in range(training_jobs):
        spec = DEMO_TRAINING_SPECS[index % len(DEMO_TRAINING_SPECS)]
        job_id, elapsed = spec.job_id, spec.elapsed
        if index >= len(DEMO_TRAINING_SPECS):
            job_id = str(uuid.uuid5(_DEMO_NAMESPACE, f"demo-training-job-{index}"))
            elapsed = (elapsed + 971.0 * index) % spec.script.seconds
        sim.add_training_job(
            job_id,
            spec.script,
            job_type=spec.job_type,
            tag=spec.tag,
            batch_name=spec.batch_name,
            millis=spec.millis,
            loop=True,
            started=now - elapsed / speed,
        )
    return sim


class Simulator(Protocol):
    """What `start_simulator` serves: any fake cloud (MetaStudio, Tencent CI) with an app."""

    def app(self) -> web.Application: ...


async def start_simulator(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve `sim` on host:port (0: any free port); the caller owns `runner.cleanup()`."""
    runner = web.AppRunner(sim.app())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    netloc = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{netloc}:{bound_port}"
