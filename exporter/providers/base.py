"""What the poller needs from a cloud, and the HTTP plumbing every cloud shares."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import aiohttp
from yarl import URL

from exporter.accounts import CloudAccount
from exporter.model import (
    AuthError,
    Exchange,
    JobSnapshot,
    NetworkError,
    NotFoundError,
    PollTimeout,
    ProviderError,
    Queue,
    ResponseParseError,
    ThrottledError,
    UpstreamError,
)

# Job answers are a few KB; a body past this is a broken or hostile upstream, not a job.
MAX_BODY_BYTES = 1 << 20
# 60 bits: a collision is never seen in practice, and the int is 16 bytes smaller than 64 bits'.
_BODY_HASH_MASK = (1 << 60) - 1


def body_hash(body: bytes) -> int:
    """A fingerprint of an answer, for `JobSnapshot.body_hash` (per process: hash() is seeded)."""
    return hash(body) & _BODY_HASH_MASK


@dataclass(frozen=True, slots=True)
class JobList:
    """One page of a cloud's job list API."""

    jobs: tuple[JobSnapshot, ...]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class QueuePage:
    """One page of a cloud's queue API, and how many queues all pages hold."""

    queues: tuple[Queue, ...]
    total: int


class Provider(Protocol):
    """One configured account of one cloud.

    `fetch_many` makes exactly one HTTP request for up to `batch_size` ids and raises a
    ProviderError when that request fails as a whole; retries, backoff and rate limits are the
    poller's. `known` holds the jobs' last snapshots: a provider may hand one back, as is, when
    the cloud's answer for that job is unchanged (see `JobSnapshot.body_hash`). `kinds` holds
    each job's kind (`jobs[].kind`) for a cloud whose kinds are polled through different APIs.
    """

    provider: str
    account: str

    @property
    def batch_size(self) -> int: ...

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> Mapping[str, JobSnapshot | ProviderError]: ...


AccountT = TypeVar("AccountT", bound=CloudAccount)
CredentialsT = TypeVar("CredentialsT")


class AccountClient(Generic[AccountT, CredentialsT]):
    """What every cloud's provider is made of: the account's name, config and secrets, the
    pooled session, the per-request deadline, and a clock (Unix time) for signatures."""

    def __init__(
        self,
        *,
        account: str,
        config: AccountT,
        credentials: CredentialsT,
        session: aiohttp.ClientSession,
        timeout: float,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.account = account
        self._config = config
        self._credentials = credentials
        self._session = session
        self._timeout = timeout
        self._now = now
        self._base = URL(config.base_url)


async def http_get(
    session: aiohttp.ClientSession,
    url: URL,
    headers: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - a per-request deadline handed to aiohttp
) -> tuple[int, Mapping[str, str], bytes]:
    """GET with a deadline and a body-size cap; network trouble becomes a ProviderError."""
    try:
        async with session.get(
            url, headers=headers, timeout=_client_timeout(timeout), allow_redirects=False
        ) as response:
            length = response.content_length
            if length is not None and length > MAX_BODY_BYTES:
                raise ResponseParseError(
                    f"response of {length} bytes is over the {MAX_BODY_BYTES}-byte cap",
                    status=str(response.status),
                )
            if length is not None and "Content-Encoding" not in response.headers:
                # The parser stops at Content-Length, within the cap. Not for a compressed
                # body: its Content-Length says nothing of what it inflates to (a gzip bomb).
                return response.status, response.headers, await response.read()
            # read(n) returns what has arrived so far, not n bytes: read until EOF or the cap.
            # An early close then raises ClientPayloadError, a network error, not a parse one.
            body = bytearray()
            while chunk := await response.content.read(MAX_BODY_BYTES + 1 - len(body)):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise ResponseParseError(
                        f"response is over the {MAX_BODY_BYTES}-byte cap",
                        status=str(response.status),
                    )
            return response.status, response.headers, bytes(body)
    except TimeoutError:
        raise PollTimeout(f"no answer within {timeout:g}s", status=Exchange.TIMEOUT) from None
    except ProviderError:
        raise
    except aiohttp.ClientError as exc:
        raise NetworkError(f"{type(exc).__name__}: {exc}", status=Exchange.CONNECTION) from None


@functools.lru_cache(maxsize=16)
def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form is rare from API gateways and ignored."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class ErrorCodes:
    """A cloud's error codes that say more than the HTTP status of their answer."""

    throttled: frozenset[str] = frozenset()
    auth: frozenset[str] = frozenset()
    # The codes a 404 carries when the job does not exist; None: every 404 means that.
    not_found: frozenset[str] | None = None


def answer_error(
    status: int,
    headers: Mapping[str, str],
    code: str | None,
    message: str | None,
    codes: ErrorCodes,
    request_id: str | None = None,
) -> ProviderError:
    """An error answer as the typed error the poller acts on (back off, alert, forget, retry)."""
    detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if request_id:
        detail += f" (RequestId {request_id})"
    if status == 429 or code in codes.throttled:
        return ThrottledError(
            detail,
            status=str(status),
            code=code,
            retry_after=retry_after_seconds(headers.get("Retry-After")),
        )
    if status in (401, 403) or code in codes.auth:
        return AuthError(detail, status=str(status), code=code)
    if status == 404 and (codes.not_found is None or code is None or code in codes.not_found):
        return NotFoundError(detail, status=str(status), code=code)
    return UpstreamError(detail, status=str(status), code=code)
