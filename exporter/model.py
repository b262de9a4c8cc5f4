"""The exporter's vocabulary, shared by providers, poller, store and collector.

Standard library only: providers build these from cloud answers, the collector reads them, and
neither needs to know the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    """A cloud-neutral job phase, so one alert rule covers every provider."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Assessment:
    """One assessed quality metric of a job (Huawei `AssessProperty`).

    The raw strings are kept for the JSON API; the parsed numbers (None when absent or
    unparseable) feed the metrics.
    """

    metric: str
    expected: str | None = None
    actual: str | None = None
    suggestion: str | None = None
    suggestion_en: str | None = None
    status: int | None = None
    actual_value: float | None = None
    expected_min: float | None = None
    expected_max: float | None = None


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """What one successful poll learned about one job. Immutable: the store swaps, never edits."""

    job_id: str
    job_type: str
    state: str
    phase: Phase
    terminal: bool
    created_at: float | None = None
    updated_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    assessments: tuple[Assessment, ...] = ()
    suggestion: str | None = None
    known_state: bool = True
    queue_id: str | None = None
    # 0..1 while the cloud reports progress (Tencent's Progress is a percentage).
    progress: float | None = None
    # Fields present in the answer that could not be parsed, e.g. "assess_result.snr.actual".
    parse_errors: tuple[str, ...] = ()
    # Provider-specific facts for the JSON API only (e.g. Tencent's SubTag), never labels.
    extra: tuple[tuple[str, str], ...] = field(default=())
    # A hash of the answer this was parsed from, so an unchanged answer (most polls: jobs sit
    # in one state for minutes) is not parsed again. In memory only, never compared.
    body_hash: int | None = field(default=None, compare=False, repr=False)

    @property
    def duration(self) -> float | None:
        """Creation to finish, for a terminal job whose cloud reports both times."""
        if self.created_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.created_at)


@dataclass(frozen=True, slots=True)
class Queue:
    """A cloud's job queue as its queue API describes it (Tencent CI `QueueList`)."""

    queue_id: str
    name: str
    state: str
    # Whether the queue schedules no new jobs (CI `State` `Paused`): its waiting jobs wait.
    paused: bool
    max_concurrent: int | None = None


class Exchange(StrEnum):
    """How a request to a cloud ended, where that is not an HTTP status code: the `status`
    label of cloudjob_api_requests_total is the code as text ("200", "404") or one of these."""

    OK = "200"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    # No exchange to count: the request was never sent (no credentials), or the exporter
    # itself failed around it. Shown as a poll's status, never counted as a request.
    NONE = "error"


class ProviderError(Exception):
    """A poll that did not produce a snapshot.

    `reason` is a short, fixed vocabulary used as a label value; `status` is what the HTTP
    exchange ended with (an HTTP status code as text, or an `Exchange`) for the requests
    counter; the message is for logs and the JSON API, never for labels.
    """

    reason = "error"
    retryable = False

    def __init__(
        self, message: str, *, status: str = Exchange.NONE, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AuthError(ProviderError):
    reason = "auth"


class ThrottledError(ProviderError):
    reason = "throttled"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status: str = "429",
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class UpstreamError(ProviderError):
    """The cloud answered with an error status that is neither auth, throttling nor not-found."""

    reason = "upstream"

    def __init__(self, message: str, *, status: str, code: str | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.retryable = status.startswith("5")


class NetworkError(ProviderError):
    reason = "network"
    retryable = True


class PollTimeout(ProviderError):
    reason = "timeout"
    retryable = True


class ResponseParseError(ProviderError):
    reason = "parse"


class NotFoundError(ProviderError):
    reason = "not_found"
