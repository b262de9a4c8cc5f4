"""Huawei Cloud MetaStudio jobs: short jobs (`ShowShortJob`, voice-quality assessment) and voice
training jobs (`ShowVoiceTrainingJob`, `ListVoiceTrainingJob`), which share states and fields."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
from yarl import URL

from exporter.accounts import HuaweiAccount, HuaweiCredentials
from exporter.assessment import UnparseableValue, parse_bounds, parse_value
from exporter.model import (
    Assessment,
    AuthError,
    JobSnapshot,
    Phase,
    ProviderError,
    ResponseParseError,
)
from exporter.providers.base import (
    AccountClient,
    ErrorCodes,
    JobList,
    answer_error,
    body_hash,
    http_get,
)
from exporter.signing import huawei
from exporter.states import HUAWEI_ASSESSMENT_METRICS, HUAWEI_TABLE

PROVIDER = "huawei_metastudio"
SHORT_JOB = "short_job"
VOICE_TRAINING = "voice_training"
# The TrainingJobInfo fields the JSON API shows (JobSnapshot.extra), never labels; `tag` and
# `batch_name` also say which list filters a job matches (exporter/refresh.py).
_TRAINING_EXTRA = ("voice_name", "language", "reject_times", "asset_id", "tag", "batch_name")
ERROR_CODES = ErrorCodes(throttled=frozenset({"APIGW.0308"}))
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
# Epoch values above this are milliseconds: 1e11 seconds is the year 5138.
_MILLIS_THRESHOLD = 1e11
log = logging.getLogger(__name__)


def _epoch_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(value)
    number = float(value)
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(value)
    return number / 1000.0 if number > _MILLIS_THRESHOLD else number


def _optional_str(value: object) -> str | None:
    """Interned: suggestions, ranges and states repeat across thousands of jobs, and a parsed
    JSON string is a new object every time (half a snapshot's memory before interning)."""
    if value is None:
        return None
    return sys.intern(value if isinstance(value, str) else str(value))


def _assessment(metric: str, raw: Mapping[str, Any], errors: list[str]) -> Assessment:
    expected = _optional_str(raw.get("expected"))
    actual = _optional_str(raw.get("actual"))
    status_raw = raw.get("status")
    status: int | None = None
    if isinstance(status_raw, int) and not isinstance(status_raw, bool) and -1 <= status_raw <= 1:
        status = status_raw
    elif status_raw is not None:
        errors.append(f"assess_result.{metric}.status")
    actual_value = low = high = None
    if actual:
        try:
            actual_value = parse_value(actual)
        except UnparseableValue:
            errors.append(f"assess_result.{metric}.actual")
    if expected:
        try:
            low, high = parse_bounds(expected)
        except UnparseableValue:
            errors.append(f"assess_result.{metric}.expected")
    return Assessment(
        metric=metric,
        expected=expected,
        actual=actual,
        suggestion=_optional_str(raw.get("suggestion")),
        suggestion_en=_optional_str(raw.get("suggestion_en")),
        status=status,
        actual_value=actual_value,
        expected_min=low,
        expected_max=high,
    )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseParseError(f"invalid JSON: {exc}", status="200") from None
    if not isinstance(data, dict):
        raise ResponseParseError("JSON body is not an object", status="200")
    return data


def parse_job(
    data: Mapping[str, Any],
    job_id: str,
    *,
    fingerprint: int | None = None,
    extra_fields: Sequence[str] = (),
) -> JobSnapshot:
    """A short job's or a training job's JSON object -> JobSnapshot: the two share `state`,
    the times, the failure fields and `assess_result`. Bad fields are recorded, not fatal; a
    missing state is."""
    state = data.get("state")
    if not isinstance(state, str) or not state:
        raise ResponseParseError("response has no 'state'", status="200")
    state = sys.intern(state)
    errors: list[str] = []
    times: dict[str, float | None] = {}
    for name in ("create_time", "lastupdate_time"):
        raw = data.get(name)
        times[name] = None
        if raw is not None:
            try:
                times[name] = _epoch_seconds(raw)
            except ValueError:
                errors.append(name)
    assessments: list[Assessment] = []
    suggestion = None
    result = data.get("assess_result")
    if isinstance(result, dict):
        suggestion = _optional_str(result.get("suggestion"))
        for metric in HUAWEI_ASSESSMENT_METRICS:
            prop = result.get(metric)
            if isinstance(prop, dict):
                assessments.append(_assessment(metric, prop, errors))
            elif prop is not None:
                errors.append(f"assess_result.{metric}")
    elif result is not None:
        errors.append("assess_result")
    phase, known = HUAWEI_TABLE.phase_of(state)
    terminal = HUAWEI_TABLE.is_terminal(state, phase, known)
    job_type = data.get("job_type")
    failure_code = _optional_str(data.get("job_failed_code")) or None
    extra = tuple(
        (name, value)
        for name in extra_fields
        if (value := _optional_str(data.get(name))) is not None and value != ""
    )
    return JobSnapshot(
        job_id=_optional_str(data.get("job_id")) or job_id,
        job_type=sys.intern(job_type) if isinstance(job_type, str) and job_type else "unknown",
        state=state,
        phase=phase,
        terminal=terminal,
        created_at=times["create_time"],
        updated_at=times["lastupdate_time"],
        finished_at=times["lastupdate_time"] if terminal else None,
        failure_code=failure_code if phase is Phase.FAILED else None,
        failure_reason=(_optional_str(data.get("job_failed_reason")) or None)
        if phase is Phase.FAILED
        else None,
        assessments=tuple(assessments),
        suggestion=suggestion,
        known_state=known,
        parse_errors=tuple(errors),
        extra=extra,
        body_hash=fingerprint,
    )


def parse_short_job(body: bytes, job_id: str, *, fingerprint: int | None = None) -> JobSnapshot:
    """A ShowShortJob 200 body -> JobSnapshot."""
    return parse_job(_json_object(body), job_id, fingerprint=fingerprint)


def parse_training_job(body: bytes, job_id: str, *, fingerprint: int | None = None) -> JobSnapshot:
    """A ShowVoiceTrainingJob 200 body (a `TrainingJobInfo`) -> JobSnapshot; `job_type` is the
    training type (BASIC, MIDDLE, ...)."""
    return parse_job(
        _json_object(body), job_id, fingerprint=fingerprint, extra_fields=_TRAINING_EXTRA
    )


def parse_training_list(body: bytes) -> tuple[int, int, list[JobSnapshot]]:
    """A ListVoiceTrainingJob 200 body -> (`count`, entries on the page, their snapshots).

    An entry without a state or id is skipped, not fatal: the rest of the page still counts.
    """
    data = _json_object(body)
    count, jobs = data.get("count"), data.get("jobs")
    if not isinstance(jobs, list):
        raise ResponseParseError("list answer has no 'jobs' list", status="200")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ResponseParseError("list answer has no valid 'count'", status="200")
    snapshots = []
    for entry in jobs:
        if not isinstance(entry, dict) or not isinstance(entry.get("job_id"), str):
            continue
        try:
            snapshots.append(parse_job(entry, entry["job_id"], extra_fields=_TRAINING_EXTRA))
        except ResponseParseError:
            continue
    return count, len(jobs), snapshots


def _error_fields(body: bytes) -> tuple[str | None, str]:
    """`{error_code, error_msg}` of an error answer; gateways sometimes send other shapes."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body[:200].decode("utf-8", "replace").strip() or "empty body"
    if not isinstance(data, dict):
        return None, "unexpected error body"
    code = data.get("error_code") or data.get("code")
    message = data.get("error_msg") or data.get("message") or ""
    return (str(code) if code else None), str(message)[:500]


def _body_of(status: int, headers: Mapping[str, str], body: bytes) -> bytes:
    """A 200 answer's body; any other answer as the ProviderError it means."""
    if status != 200:
        code, message = _error_fields(body)
        raise answer_error(status, headers, code, message, ERROR_CODES)
    return body


class HuaweiMetaStudio(AccountClient[HuaweiAccount, HuaweiCredentials]):
    """Polls `GET /v1/{project_id}/voice-training-manage/user/short-jobs/{job_id}` (ShowShortJob)
    or `.../user/jobs/{job_id}` (ShowVoiceTrainingJob), as each job's kind says, and lists
    training jobs for discovery and bulk refresh (ListVoiceTrainingJob)."""

    provider = PROVIDER
    batch_size = 1  # both look-ups take one id
    # Made at the first signed request: the account's fixed headers, signed the same way
    # every time, are prepared once.
    _signer: huawei.GetSigner | None = None

    @functools.cached_property
    def _manage_path(self) -> str:
        return (
            f"{self._base.raw_path.rstrip('/')}/v1/{quote(self._config.project_id, safe='')}"
            "/voice-training-manage/user/"
        )

    @functools.cached_property
    def _paths(self) -> dict[str, str]:
        """Each kind's look-up path, up to the job id: huaweicloudsdkmetastudio
        `MetaStudioClient.show_short_job` and `show_voice_training_job` (API reference
        "Querying Voice Training Task Details")."""
        return {
            SHORT_JOB: self._manage_path + "short-jobs/",
            VOICE_TRAINING: self._manage_path + "jobs/",
        }

    def _path(self, job_id: str, kind: str = SHORT_JOB) -> str:
        if not _UNRESERVED.fullmatch(job_id):  # ids are UUIDs: quote() is for the odd one
            job_id = quote(job_id, safe="~")
        return self._paths[kind] + job_id

    def _headers(self, path: str, query: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
        creds = self._credentials
        if creds.token is not None:
            headers = self._fixed_headers()
            headers["X-Auth-Token"] = creds.token.get_secret_value()
            return headers
        if self._signer is None:
            if creds.access_key is None or creds.secret_key is None:
                raise AuthError("account has neither a token nor an AK/SK pair")
            self._signer = huawei.GetSigner(
                host=self._base.host_port_subcomponent or "",
                headers={**self._fixed_headers(), "X-Project-Id": self._config.project_id},
                access_key=creds.access_key.get_secret_value(),
                secret_key=creds.secret_key.get_secret_value(),
            )
        return self._signer.sign(path, datetime.fromtimestamp(self._now(), UTC), query)

    def _fixed_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {"Accept": "application/json"}
        if self._config.app_user_id:
            headers["X-App-UserId"] = self._config.app_user_id
        return headers

    async def _get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> bytes:
        """A signed GET; the 200 body, or the error answer as a ProviderError."""
        url = self._base.with_path(path, encoded=True)
        if query:
            # Encoded as the signature's canonical query encodes it, so both say the same.
            url = URL(f"{url}?{huawei.canonical_query(query)}", encoded=True)
        answer = await http_get(self._session, url, self._headers(path, query), self._timeout)
        return _body_of(*answer)

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> dict[str, JobSnapshot | ProviderError]:
        kinds = kinds or {}
        return {
            job_id: await self.fetch(job_id, known.get(job_id), kinds.get(job_id, SHORT_JOB))
            for job_id in job_ids
        }

    async def fetch(
        self, job_id: str, last: JobSnapshot | None = None, kind: str = SHORT_JOB
    ) -> JobSnapshot:
        """`last`, as is, when the answer is the one it was parsed from."""
        path = self._path(job_id, kind)  # no query: http_get straight, a frame less per poll
        url = self._base.with_path(path, encoded=True)
        body = _body_of(*await http_get(self._session, url, self._headers(path), self._timeout))
        fingerprint = body_hash(body)
        if last is not None and last.body_hash == fingerprint:
            return last
        if kind == VOICE_TRAINING:
            return parse_training_job(body, job_id, fingerprint=fingerprint)
        return parse_short_job(body, job_id, fingerprint=fingerprint)

    async def list_jobs(
        self,
        since: float,
        next_token: str | None = None,
        *,
        job_type: str,
        states: Sequence[str] = (),
    ) -> JobList:
        """One page of ListVoiceTrainingJob, newest first: the training jobs of `job_type` ("":
        every type) in `states` (all when empty), with the `discover` tag and batch.

        `GET /v1/{project_id}/voice-training-manage/user/jobs` with the SDK's query names
        (huaweicloudsdkmetastudio `MetaStudioClient.list_voice_training_job`: offset, limit,
        state comma-separated, job_type, tag, batch_name, sort_key, sort_dir). The page token is
        the next `offset`. The list's own time filters take a format no document gives, so
        jobs created before `since` are dropped here instead.
        """
        spec = self._config.discover
        assert spec is not None  # noqa: S101 - only accounts with `discover` list their jobs
        offset = int(next_token) if next_token else 0
        query = [("offset", str(offset)), ("limit", str(spec.page_size))]
        if states:
            query.append(("state", ",".join(states)))
        if job_type:
            query.append(("job_type", job_type))
        if spec.tag is not None:
            query.append(("tag", spec.tag))
        if spec.batch_name is not None:
            query.append(("batch_name", spec.batch_name))
        query += [("sort_key", "create_time"), ("sort_dir", "desc")]
        count, entries, snapshots = parse_training_list(
            await self._get(self._manage_path + "jobs", query)
        )
        following = offset + entries
        return JobList(
            tuple(job for job in snapshots if job.created_at is None or job.created_at > since),
            str(following) if entries and following < count else None,
        )
