"""The JSON API: read tracked jobs; register and delete jobs at run time; trigger a reload;
hint that a job should be polled now, directly or as a Tencent CI job callback.

Writes need `Authorization: Bearer <token>` (config `api.token_env`/`api.token_file`),
compared in constant time; with no token configured they are refused with 403, since an
exporter reachable by every pod in a cluster must not let any of them add jobs. CI cannot send
that header, so its callbacks carry their account's own secret in the path instead.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import hmac
import logging
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_log import AccessLogger
from pydantic import ValidationError

from exporter.config import JobConfig, format_errors
from exporter.hints import retry_after
from exporter.lifecycle import (
    Conflict,
    JobLimitReached,
    NotMine,
    RegistrationError,
    UnknownAccount,
)
from exporter.model import Phase
from exporter.providers.tencent_ci_callback import CallbackError, parse_callback
from exporter.runtime import RUNTIME, Runtime
from exporter.store import JobKey, JobState

log = logging.getLogger(__name__)
# A callback is a few kilobytes; CI jobs with long results stay far below this.
MAX_CALLBACK_BYTES = 1024 * 1024
CALLBACK_PREFIX = "/api/v1/callbacks/tencent_ci/"


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def json_response(document: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type="application/json")


def _error(status: int, message: str, **headers: str) -> web.Response:
    response = json_response({"error": message}, status=status)
    response.headers.update(headers)
    return response


def job_document(job: JobState) -> dict[str, Any]:
    """The JSON API's view of a job: everything the metrics cannot carry (reasons, suggestions)."""
    snapshot = job.snapshot
    doc: dict[str, Any] = {
        "account": job.key.account,
        "provider": job.provider,
        "job_id": job.key.job_id,
        "labels": dict(job.labels),
        "source": job.source,
        "kind": job.kind,
        "poll_interval": job.poll_interval,
        "phase": job.phase.value,
        "failures_total": job.failures,
        "poll": {
            "polls_total": job.polls,
            "last_success": job.last_poll_success,
            "last_poll_at": job.last_poll_at,
            "last_success_at": job.last_success_at,
            "error": None
            if job.last_error is None
            else {
                "reason": job.last_error.reason,
                "status": job.last_error.status,
                "code": job.last_error.code,
                "message": job.last_error.message,
            },
        },
    }
    if snapshot is None:
        return doc
    doc.update(
        job_type=snapshot.job_type,
        state=snapshot.state,
        documented_state=snapshot.known_state,
        terminal=snapshot.terminal,
        created_at=snapshot.created_at,
        updated_at=snapshot.updated_at,
        started_at=snapshot.started_at,
        finished_at=snapshot.finished_at,
        queue_id=snapshot.queue_id,
        progress=snapshot.progress,
        details=dict(snapshot.extra),
        failure=None
        if snapshot.phase is not Phase.FAILED
        else {"code": snapshot.failure_code, "reason": snapshot.failure_reason},
    )
    if snapshot.assessments or snapshot.suggestion:
        doc["assessment"] = {
            "suggestion": snapshot.suggestion,
            "metrics": {
                item.metric: {
                    "expected": item.expected,
                    "actual": item.actual,
                    "status": item.status,
                    "suggestion": item.suggestion,
                    "suggestion_en": item.suggestion_en,
                    "actual_value": item.actual_value,
                    "expected_min": item.expected_min,
                    "expected_max": item.expected_max,
                }
                for item in snapshot.assessments
            },
        }
    if snapshot.parse_errors:
        doc["parse_errors"] = list(snapshot.parse_errors)
    return doc


def _authorized(request: web.Request) -> web.Response | None:
    """None when the request carries the configured token; else the refusal to send."""
    token = _runtime(request).api_token
    if token is None:
        return _error(403, "the write API is disabled: configure api.token_env or api.token_file")
    # X-Cloudjob-Token works always; `Authorization: Bearer` only when basic auth
    # (--web.config.file) is off, since then the Authorization header is free.
    given = request.headers.get("X-Cloudjob-Token", "")
    if not given:
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        given = bearer if scheme.lower() == "bearer" else ""
    if not given.strip():
        return _error(401, "missing bearer token", **{"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        return _error(403, "wrong bearer token")
    return None


# The one page size a client gets without asking, and the most it may ask for.
DEFAULT_PAGE = 500
MAX_PAGE = 5_000
# Documents serialised per write: a few hundred kilobytes, never the whole page at once.
DOCUMENTS_PER_CHUNK = 100
LABEL_PREFIX = "label."


class BadQuery(ValueError):
    """A query parameter the job list cannot take; the message names it."""


@dataclass(frozen=True, slots=True)
class JobQuery:
    """What `GET /api/v1/jobs` was asked for: filters (ANDed), and a page or every match."""

    account: str | None = None
    phase: str | None = None
    state: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    limit: int | None = DEFAULT_PAGE  # None: every match (`all=1`)
    after: JobKey | None = None

    def matches(self, job: JobState) -> bool:
        if self.account is not None and job.key.account != self.account:
            return False
        if self.phase is not None and job.phase.value != self.phase:
            return False
        if self.state is not None and (job.snapshot is None or job.snapshot.state != self.state):
            return False
        if self.labels:
            labels = dict(job.labels)
            return all(labels.get(name) == value for name, value in self.labels)
        return True


def encode_cursor(key: JobKey) -> str:
    """Opaque to clients: the last key a page held, so that jobs added or removed between pages
    shift nothing (the next page starts after that key, wherever it now sits)."""
    return base64.urlsafe_b64encode(orjson.dumps([key.account, key.job_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> JobKey:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise BadQuery(f"cursor: {cursor[:40]!r} is not a cursor this API gave out")
    account, job_id = key
    return JobKey(account, job_id)


def _page_size(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise BadQuery(f"limit: {text[:40]!r} is not a whole number from 1 to {MAX_PAGE}")
    return int(text)


def parse_job_query(query: Mapping[str, str]) -> JobQuery:
    """The request's filters and page; BadQuery for the first parameter it cannot take."""
    phase = query.get("phase")
    if phase is not None and phase not in {p.value for p in Phase}:
        raise BadQuery(f"unknown phase {phase!r}")
    state = query.get("state")
    if state == "":
        raise BadQuery("state: empty; name a state such as SUCCEED or Failed")
    labels = []
    for name, value in query.items():
        if name.startswith(LABEL_PREFIX):
            label = name.removeprefix(LABEL_PREFIX)
            if not label:
                raise BadQuery(f"{name}: name the label, e.g. {LABEL_PREFIX}team=voice")
            labels.append((label, value))
    every = query.get("all")
    if every is not None and every != "1":
        raise BadQuery(f"all: {every[:40]!r}; all=1 asks for every job, unpaged")
    if every is not None and ("limit" in query or "cursor" in query):
        raise BadQuery("all: all=1 lists every job; it takes no limit or cursor")
    limit = query.get("limit")
    cursor = query.get("cursor")
    return JobQuery(
        account=query.get("account"),
        phase=phase,
        state=state,
        labels=tuple(labels),
        limit=None if every is not None else DEFAULT_PAGE if limit is None else _page_size(limit),
        after=None if cursor is None else decode_cursor(cursor),
    )


def select_jobs(jobs: Iterable[JobState], query: JobQuery) -> tuple[list[JobState], JobKey | None]:
    """The page of matching jobs in (account, job_id) order, and the key to continue after
    (None on the last page). A page costs a pass over the jobs and a heap of `limit`, not a
    sort of them all."""
    after = query.after
    matching = (job for job in jobs if (after is None or job.key > after) and query.matches(job))
    if query.limit is None:
        return sorted(matching, key=_key), None
    page = heapq.nsmallest(query.limit + 1, matching, key=_key)
    if len(page) <= query.limit:
        return page, None
    del page[query.limit :]
    return page, page[-1].key


def _key(job: JobState) -> JobKey:
    return job.key


async def list_jobs(request: web.Request) -> web.StreamResponse:
    """Streamed: the JSON is written a chunk of documents at a time, so that even an unpaged
    list of every job never exists as one text (nor does its Content-Length)."""
    try:
        query = parse_job_query(request.query)
    except BadQuery as exc:
        return _error(400, str(exc))
    page, last = select_jobs(_runtime(request).store.view().jobs, query)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"jobs":[')
    for start in range(0, len(page), DOCUMENTS_PER_CHUNK):
        chunk = b",".join(
            orjson.dumps(job_document(job)) for job in page[start : start + DOCUMENTS_PER_CHUNK]
        )
        await response.write(chunk if start == 0 else b"," + chunk)
    following = None if last is None else encode_cursor(last)
    await response.write(b'],"next":' + orjson.dumps(following) + b"}")
    await response.write_eof()
    return response


async def get_job(request: web.Request) -> web.Response:
    key = JobKey(request.match_info["account"], request.match_info["job_id"])
    state = _runtime(request).store.get(key)
    if state is None:
        return _error(404, f"job {key.job_id!r} of {key.account!r} is not tracked")
    return json_response(job_document(state))


async def register_job(request: web.Request) -> web.Response:
    if (refusal := _authorized(request)) is not None:
        return refusal
    body = await request.read()
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(400, f"body is not JSON: {exc}")
    if not isinstance(document, dict):
        return _error(400, "body must be a JSON object")
    try:
        job = JobConfig.model_validate(document)
    except ValidationError as exc:
        return _error(400, "; ".join(format_errors(exc)))
    runtime = _runtime(request)
    assert runtime.lifecycle is not None  # noqa: S101 - routes answer only once started
    try:
        created = runtime.lifecycle.register(job)
    except UnknownAccount as exc:
        return _error(400, f"account: {exc}")
    except Conflict as exc:  # Forgotten too: a job forgotten after its retention
        return _error(409, str(exc))
    except JobLimitReached as exc:
        return _error(429, str(exc))
    except NotMine as exc:
        return _error(421, str(exc))
    except RegistrationError as exc:  # any other refusal, said as it is
        return _error(400, str(exc))
    # Durable before we answer: the caller may forget the id the moment it hears back.
    await runtime.persist()
    state = runtime.store.get(JobKey(job.account, job.id))
    assert state is not None  # noqa: S101 - just registered
    if created:
        log.info("job_registered", extra={"account": job.account, "job_id": job.id})
    return json_response(job_document(state), status=201 if created else 200)


async def delete_job(request: web.Request) -> web.Response:
    if (refusal := _authorized(request)) is not None:
        return refusal
    key = JobKey(request.match_info["account"], request.match_info["job_id"])
    runtime = _runtime(request)
    assert runtime.lifecycle is not None  # noqa: S101 - routes answer only once started
    try:
        runtime.lifecycle.unregister(key)
    except KeyError:
        return _error(404, f"job {key.job_id!r} of {key.account!r} is not tracked")
    except Conflict as exc:
        return _error(409, str(exc))
    await runtime.persist()
    log.info("job_deleted", extra={"account": key.account, "job_id": key.job_id})
    return web.Response(status=204)


async def reload_config(request: web.Request) -> web.Response:
    if (refusal := _authorized(request)) is not None:
        return refusal
    ok, problems = await _runtime(request).reload("api")
    if not ok:
        return _error(
            400, "reload failed, the previous config keeps running: " + "; ".join(problems)
        )
    return json_response({"status": "reloaded"})


def _provider_name(runtime: Runtime, account: str) -> str | None:
    """The account's provider; None when no such account is configured."""
    provider = runtime.providers.get(account)
    return None if provider is None else provider.provider


async def poll_job(request: web.Request) -> web.Response:
    """Poll a tracked job as soon as the account's budget allows (the caller knows it changed)."""
    if (refusal := _authorized(request)) is not None:
        return refusal
    key = JobKey(request.match_info["account"], request.match_info["job_id"])
    runtime = _runtime(request)
    provider = _provider_name(runtime, key.account)
    if provider is None:
        return _error(404, f"account {key.account!r} is not configured")
    if wait := runtime.hints.take(key.account):
        runtime.store.record_hint(key.account, provider, "api", "rate_limited")
        return _error(
            429,
            f"too many poll hints for {key.account!r}; try again later",
            **{"Retry-After": retry_after(wait)},
        )
    assert runtime.poller is not None  # noqa: S101 - routes answer only once started
    if not runtime.poller.hint(key):
        runtime.store.record_hint(key.account, provider, "api", "unknown_job")
        return _error(404, f"job {key.job_id!r} of {key.account!r} is not tracked")
    runtime.store.record_hint(key.account, provider, "api", "scheduled")
    return json_response({"status": "scheduled"}, status=202)


# Compared with a wrong secret when the account has none, so that the answer takes as long.
_NO_TOKEN = secrets.token_hex(16).encode()


async def tencent_ci_callback(request: web.Request) -> web.Response:
    """A CI job callback: each job it names is looked up (signed) soon; nothing in it is believed.

    Every wrong address (no such account, no callback token, wrong secret) answers the same 404,
    so the route tells a prober nothing about which accounts exist or take callbacks.
    """
    runtime = _runtime(request)
    account = request.match_info["account"]
    provider = _provider_name(runtime, account)
    expected = runtime.callback_tokens.get(account)
    given = request.match_info["secret"].encode()
    matches = hmac.compare_digest(
        given, _NO_TOKEN if expected is None else expected.get_secret_value().encode()
    )
    if provider is None or expected is None or not matches:
        if provider is not None:
            runtime.store.record_hint(account, provider, "callback", "rejected")
        return _error(404, "no callback receiver at this address")
    body = await _read_at_most(request, MAX_CALLBACK_BYTES)
    if body is None:
        runtime.store.record_hint(account, provider, "callback", "rejected")
        return _error(413, f"the callback body exceeds {MAX_CALLBACK_BYTES} bytes")
    try:
        callback = parse_callback(body)
    except CallbackError as exc:
        runtime.store.record_hint(account, provider, "callback", "rejected")
        log.debug("callback_rejected", extra={"account": account, "reason": str(exc)})
        return _error(400, f"not a CI job callback: {exc}")
    if not callback.names_jobs:
        return json_response({"status": "ignored"})  # another event, e.g. WorkflowFinish
    job_ids = callback.job_ids
    if len(job_ids) > runtime.hints.burst:
        runtime.store.record_hint(account, provider, "callback", "rejected")
        return _error(400, f"the callback names {len(job_ids)} jobs; at most {runtime.hints.burst}")
    if wait := runtime.hints.take(account, len(job_ids)):
        runtime.store.record_hint(account, provider, "callback", "rate_limited", len(job_ids))
        return _error(
            429,
            f"too many poll hints for {account!r}; try again later",
            **{"Retry-After": retry_after(wait)},
        )
    assert runtime.poller is not None  # noqa: S101 - routes answer only once started
    scheduled = sum(runtime.poller.hint(JobKey(account, job_id)) for job_id in job_ids)
    unknown = len(job_ids) - scheduled
    for outcome, count in (("scheduled", scheduled), ("unknown_job", unknown)):
        if count:
            runtime.store.record_hint(account, provider, "callback", outcome, count)
    log.debug(
        "callback_received", extra={"account": account, "scheduled": scheduled, "unknown": unknown}
    )
    return json_response({"status": "ok", "scheduled": scheduled, "unknown_jobs": unknown})


async def _read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed `limit` (never held past it)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


_CALLBACK_SECRET = re.compile(re.escape(CALLBACK_PREFIX) + r"([^/?#\s]*)/[^/?#\s\"]*")


def mask_callback_secret(text: str) -> str:
    """`text` with the secret segment of any callback path replaced by `***`."""
    if CALLBACK_PREFIX not in text:
        return text
    return _CALLBACK_SECRET.sub(lambda m: f"{CALLBACK_PREFIX}{m.group(1)}/***", text)


class MaskingAccessLogger(AccessLogger):
    """aiohttp's access log, but a callback's secret path segment never reaches it: masked in
    every field (a Referer may hold the URL too), and a request the callback route took, however
    its path was encoded, logs the route's own spelling of it."""

    def _format_line(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        routed = isinstance(request, web.Request) and "secret" in request.match_info
        return [
            (
                key,
                _callback_request_line(request)
                if routed and key == "first_request_line"
                else mask_callback_secret(value)
                if isinstance(value, str)
                else value,
            )
            for key, value in super()._format_line(request, response, time)
        ]


def _callback_request_line(request: web.BaseRequest) -> str:
    assert isinstance(request, web.Request)  # noqa: S101 - checked by the caller
    version = f"HTTP/{request.version.major}.{request.version.minor}"
    return f"{request.method} {CALLBACK_PREFIX}{request.match_info['account']}/*** {version}"


def add_api_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/v1/jobs", list_jobs)
    router.add_post("/api/v1/jobs", register_job)
    router.add_get("/api/v1/jobs/{account}/{job_id}", get_job)
    router.add_delete("/api/v1/jobs/{account}/{job_id}", delete_job)
    router.add_post("/api/v1/jobs/{account}/{job_id}/poll", poll_job)
    router.add_post(CALLBACK_PREFIX + "{account}/{secret}", tencent_ci_callback)
    router.add_post("/-/reload", reload_config)
