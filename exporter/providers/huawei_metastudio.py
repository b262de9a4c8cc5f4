"""Huawei Cloud MetaStudio short jobs (`ShowShortJob`, voice-quality assessment)."""

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
from exporter.providers.base import AccountClient, ErrorCodes, answer_error, body_hash, http_get
from exporter.signing import huawei
from exporter.states import HUAWEI_ASSESSMENT_METRICS, HUAWEI_TABLE

PROVIDER = "huawei_metastudio"
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


def parse_short_job(body: bytes, job_id: str, *, fingerprint: int | None = None) -> JobSnapshot:
    """A ShowShortJob 200 body -> JobSnapshot. Bad fields are recorded, not fatal; a bad body is."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseParseError(f"invalid JSON: {exc}", status="200") from None
    if not isinstance(data, dict):
        raise ResponseParseError("JSON body is not an object", status="200")
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
        body_hash=fingerprint,
    )


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


class HuaweiMetaStudio(AccountClient[HuaweiAccount, HuaweiCredentials]):
    """Polls `GET /v1/{project_id}/voice-training-manage/user/short-jobs/{job_id}`."""

    provider = PROVIDER
    batch_size = 1  # ShowShortJob takes one id
    # Made at the first signed request: the account's fixed headers, signed the same way
    # every time, are prepared once.
    _signer: huawei.GetSigner | None = None

    @functools.cached_property
    def _jobs_path(self) -> str:
        return (
            f"{self._base.raw_path.rstrip('/')}/v1/{quote(self._config.project_id, safe='')}"
            "/voice-training-manage/user/short-jobs/"
        )

    def _path(self, job_id: str) -> str:
        if not _UNRESERVED.fullmatch(job_id):  # ids are UUIDs: quote() is for the odd one
            job_id = quote(job_id, safe="~")
        return self._jobs_path + job_id

    def _headers(self, path: str) -> dict[str, str]:
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
        return self._signer.sign(path, datetime.fromtimestamp(self._now(), UTC))

    def _fixed_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {"Accept": "application/json"}
        if self._config.app_user_id:
            headers["X-App-UserId"] = self._config.app_user_id
        return headers

    async def fetch_many(
        self, job_ids: Sequence[str], known: Mapping[str, JobSnapshot]
    ) -> dict[str, JobSnapshot | ProviderError]:
        return {job_id: await self.fetch(job_id, known.get(job_id)) for job_id in job_ids}

    async def fetch(self, job_id: str, last: JobSnapshot | None = None) -> JobSnapshot:
        """`last`, as is, when the answer is the one it was parsed from."""
        path = self._path(job_id)
        url = self._base.with_path(path, encoded=True)
        status, headers, body = await http_get(
            self._session, url, self._headers(path), self._timeout
        )
        if status == 200:
            fingerprint = body_hash(body)
            if last is not None and last.body_hash == fingerprint:
                return last
            return parse_short_job(body, job_id, fingerprint=fingerprint)
        code, message = _error_fields(body)
        raise answer_error(status, headers, code, message, ERROR_CODES)
