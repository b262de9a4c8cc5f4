"""Tencent Cloud CI (Cloud Infinite) jobs: DescribeAIJob / DescribeMediaJobs, XML over COS auth."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from exporter.accounts import TencentAccount, TencentCredentials
from exporter.assessment import UnparseableValue, parse_value
from exporter.model import (
    JobSnapshot,
    NotFoundError,
    Phase,
    ProviderError,
    Queue,
    ResponseParseError,
)
from exporter.providers.base import (
    AccountClient,
    ErrorCodes,
    JobList,
    QueuePage,
    answer_error,
    http_get,
)
from exporter.signing import tencent
from exporter.states import TENCENT_TABLE

PROVIDER = "tencent_ci"
# How long a signature stays valid after signing (the signer also backdates it a minute).
SIGNATURE_LIFETIME = 600
ERROR_CODES = ErrorCodes(
    throttled=frozenset({"SlowDown", "RequestLimitExceeded", "TooManyRequests"}),
    auth=frozenset(
        {
            "AccessDenied",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "RequestTimeTooSkewed",
            "InvalidSecurityToken",
            "ExpiredToken",
            "InvalidToken",
        }
    ),
    not_found=frozenset({"ResourceNotFound", "NoSuchResource", "NoSuchJob"}),
)
_UNSET_TIMES = frozenset({"", "-"})
# Queues a page of the queue API holds: ten, the most `queueIds` may name (docs 1045/72923).
QUEUE_PAGE_SIZE = 10


def _text(element: ET.Element, name: str) -> str | None:
    """Interned: tags, states, queue ids and codes repeat across thousands of jobs."""
    child = element.find(name)
    if child is None or child.text is None:
        return None
    return sys.intern(child.text.strip())


def parse_time(value: str) -> float:
    """`2022-07-07T12:12:12+0800` (also `+08:00`, `Z`) -> Unix time. An offset is required."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"no UTC offset in {value!r}")
    return moment.timestamp()


def parse_jobs_detail(element: ET.Element) -> JobSnapshot:
    """One `<JobsDetail>` -> snapshot; bad fields are recorded, a missing JobId/State is fatal."""
    job_id = _text(element, "JobId")
    state = _text(element, "State")
    if not job_id or not state:
        raise ResponseParseError("JobsDetail without JobId or State", status="200")
    errors: list[str] = []
    times: dict[str, float | None] = {}
    for name in ("CreationTime", "StartTime", "EndTime"):
        raw = _text(element, name)
        times[name] = None
        if raw is not None and raw not in _UNSET_TIMES:
            try:
                times[name] = parse_time(raw)
            except ValueError:
                errors.append(name)
    progress = None
    raw_progress = _text(element, "Progress")
    if raw_progress:
        try:
            percent = parse_value(raw_progress)
            if not 0 <= percent <= 100:
                raise UnparseableValue(raw_progress)
            progress = percent / 100.0
        except UnparseableValue:
            errors.append("Progress")
    phase, known = TENCENT_TABLE.phase_of(state)
    code = _text(element, "Code")
    message = _text(element, "Message")
    failed = phase is Phase.FAILED
    extra = tuple(
        (name, value) for name in ("SubTag", "Code", "Message") if (value := _text(element, name))
    )
    terminal = TENCENT_TABLE.is_terminal(state, phase, known)
    return JobSnapshot(
        job_id=job_id,
        job_type=_text(element, "Tag") or "unknown",
        state=state,
        phase=phase,
        terminal=terminal,
        created_at=times["CreationTime"],
        updated_at=times["EndTime"] or times["StartTime"] or times["CreationTime"],
        started_at=times["StartTime"],
        finished_at=times["EndTime"] if terminal else None,
        failure_code=(code or "") if failed else None,
        failure_reason=(message or None) if failed else None,
        known_state=known,
        queue_id=_text(element, "QueueId") or None,
        progress=progress,
        parse_errors=tuple(errors),
        extra=extra,
    )


def _parse_xml(body: bytes, status: int) -> ET.Element:
    try:
        # forbid_dtd: a job answer never needs a DOCTYPE, and refusing it stops entity bombs
        # and external entities before any expansion happens.
        root: ET.Element = fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise ResponseParseError(f"refused XML: {type(exc).__name__}", status=str(status)) from None
    except ET.ParseError as exc:
        raise ResponseParseError(f"malformed XML: {exc}", status=str(status)) from None
    return root


def parse_response(body: bytes) -> tuple[list[JobSnapshot], set[str], str | None]:
    """A 200 answer: its jobs, the ids the cloud says do not exist, and the next page token."""
    root = _parse_xml(body, 200)
    if root.tag != "Response":
        raise ResponseParseError(f"expected <Response>, got <{root.tag}>", status="200")
    jobs = [parse_jobs_detail(element) for element in root.findall("JobsDetail")]
    missing: set[str] = set()
    for element in root.findall("NonExistJobIds"):
        missing.update(part.strip() for part in (element.text or "").split(",") if part.strip())
    next_token = _text(root, "NextToken") or None
    return jobs, missing, next_token


def parse_queues(body: bytes) -> QueuePage:
    """A queue API answer: `<Response><TotalCount/>…<QueueList>…</QueueList>*</Response>`."""
    root = _parse_xml(body, 200)
    if root.tag != "Response":
        raise ResponseParseError(f"expected <Response>, got <{root.tag}>", status="200")
    queues = []
    for element in root.findall("QueueList"):
        queue_id = _text(element, "QueueId")
        state = _text(element, "State")
        if not queue_id or not state:
            raise ResponseParseError("QueueList without QueueId or State", status="200")
        raw_concurrent = _text(element, "MaxConcurrent")
        concurrent = int(raw_concurrent) if raw_concurrent and raw_concurrent.isdigit() else None
        queues.append(
            Queue(
                queue_id=queue_id,
                name=_text(element, "Name") or "",
                state=state,
                paused=state == "Paused",
                max_concurrent=concurrent,
            )
        )
    raw_total = _text(root, "TotalCount") or ""
    total = int(raw_total) if raw_total.isdigit() else len(queues)
    return QueuePage(tuple(queues), total)


def _error(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """An error answer (`<Error><Code/><Message/><RequestId/></Error>`) -> typed error."""
    code = message = request_id = None
    try:
        root = _parse_xml(body, status)
        if root.tag == "Error":
            code, message = _text(root, "Code"), _text(root, "Message")
            request_id = _text(root, "RequestId")
    except ResponseParseError:
        message = body[:200].decode("utf-8", "replace").strip() or None
    return answer_error(status, headers, code, message, ERROR_CODES, request_id)


class TencentCI(AccountClient[TencentAccount, TencentCredentials]):
    """Polls `GET /ai_jobs/<id>` (or `/jobs/<id>,<id>` for media jobs) on the bucket's CI host."""

    provider = PROVIDER

    @property
    def batch_size(self) -> int:
        return self._config.batch_size

    @property
    def _api(self) -> str:
        return "/ai_jobs" if self._config.job_api == "ai_jobs" else "/jobs"

    async def _get(self, path: str, params: Mapping[str, str]) -> bytes:
        """Sign and send; the unencoded path is signed, the encoded one sent (as the SDK does)."""
        creds = self._credentials
        host = self._base.host_port_subcomponent or ""
        headers = {"Host": host}
        if creds.token is not None:
            headers[tencent.CI_TOKEN_HEADER] = creds.token.get_secret_value()
        base_path = self._base.raw_path.rstrip("/")
        authorization = tencent.sign(
            method="GET",
            path=base_path + path,
            params=params,
            headers=headers,
            secret_id=creds.secret_id.get_secret_value(),
            secret_key=creds.secret_key.get_secret_value(),
            start=int(self._now()),
            expire=SIGNATURE_LIFETIME,
        )
        url = self._base.with_path(base_path + quote(path, safe="/-_.~"), encoded=True)
        if params:
            url = url.with_query(params)
        status, response_headers, body = await http_get(
            self._session,
            url,
            {**headers, "Authorization": authorization, "Accept": "application/xml"},
            self._timeout,
        )
        if status != 200:
            raise _error(status, response_headers, body)
        return body

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> dict[str, JobSnapshot | ProviderError]:
        """One request for up to `batch_size` ids; each id gets a snapshot or its own error.

        `known` goes unused: one answer covers up to ten jobs, so it is parsed whole.
        """
        body = await self._get(f"{self._api}/{','.join(job_ids)}", {})
        jobs, missing, _ = parse_response(body)
        found = {job.job_id: job for job in jobs}
        results: dict[str, JobSnapshot | ProviderError] = {}
        for job_id in job_ids:
            if job_id in found:
                results[job_id] = found[job_id]
            elif job_id in missing:
                results[job_id] = NotFoundError(
                    "the cloud lists this id in NonExistJobIds", status="200", code="NonExistJobIds"
                )
            else:
                results[job_id] = ResponseParseError(
                    "the answer neither describes this job nor lists it as missing", status="200"
                )
        return results

    async def list_jobs(
        self,
        since: float,
        next_token: str | None = None,
        *,
        job_type: str,
        states: Sequence[str] = (),
    ) -> JobList:
        """One page of the list API, newest first: the discover queue's jobs of tag `job_type`
        created after `since`, in `states` (all when empty).

        `GET /jobs` (docs 1045/50305, 460/48235; cos-python-sdk-v5 `ci_list_media_jobs`, go
        `CIService.DescribeMediaJobs`) or `GET /ai_jobs` (doc 436/49385) as `discover.list_api`
        says. The query is the SDK's (`states=All` when no states are asked for, as its default).
        """
        spec = self._config.discover
        assert spec is not None  # noqa: S101 - only accounts with `discover` list their jobs
        start = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%S%z")
        params = {
            "queueId": spec.queue_id or "",  # required by the schema
            "tag": job_type,
            "orderByTime": "Desc",
            "states": ",".join(states) or "All",
            "size": str(spec.page_size),
            "startCreationTime": start,
        }
        if next_token:
            params["nextToken"] = next_token
        jobs, _, token = parse_response(await self._get(f"/{spec.list_api}", params))
        return JobList(tuple(jobs), token)

    async def list_queues(self, queue_ids: Sequence[str], page: int = 1) -> QueuePage:
        """One page of the queues named (at most ten): `GET /ai_queue` for AI jobs (docs
        1045/72923, 460/79394; cos-python-sdk-v5 `ci_get_ai_queue`, go `DescribeAIProcessQueues`)
        or `GET /queue` for media jobs (doc 436/54045; `ci_get_media_queue`,
        `DescribeMediaProcessQueues`), with the SDK's query. Like the SDK, no `category` is sent
        to `/queue`; which categories CI then lists is not documented."""
        params = {
            "queueIds": ",".join(queue_ids),
            "state": "All",
            "pageNumber": str(page),
            "pageSize": str(QUEUE_PAGE_SIZE),
        }
        path = "/ai_queue" if self._config.job_api == "ai_jobs" else "/queue"
        return parse_queues(await self._get(path, params))
