"""Fault injection for the simulated clouds: the ways a real cloud API misbehaves, on demand.

Both simulators keep a `Faults` registry (`sim.faults`). A fault is set for one job id (it then
hits every request that names the job, so a Tencent batch breaks as a whole, as it would) or,
with `None`, for the whole simulator (every job request, and the Tencent list API). A job's own
fault wins over the simulator-wide one. `count` limits a fault to the next N requests it hits
(a burst); without it the fault stays until cleared.

    sim.faults.set("job-1", Fault(FaultKind.STATUS, status=429, headers={"Retry-After": "1"}))
    sim.faults.set(None, Fault(FaultKind.EXPIRED_SIGNATURE))
    sim.faults.clear("job-1")

Each fault that fires leaves a `FaultHit` in `faults.hits` (the most recent `MAX_HITS`), so a
test can see how often and when the exporter met it, and how much of a huge body it took.
Wrong credentials and DNS failures need no fault: configure a wrong secret or endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import web

logger = logging.getLogger(__name__)

MAX_HITS = 1000
HUGE_DEFAULT_SIZE = 50 * 1024 * 1024
# A huge body is streamed from this one block, so the simulator never holds the whole body.
_BLOCK = b"x" * (64 * 1024)


class FaultKind(StrEnum):
    STATUS = "status"  # an error status (with optional headers such as Retry-After)
    SLOW = "slow"  # `delay` seconds of silence, then the normal answer (or it, in `pieces`)
    RESET = "reset"  # half of the normal answer, then a TCP reset
    TRUNCATED = "truncated"  # the normal answer cut short, the connection closed cleanly
    BODY = "body"  # `body` bytes as they are (invalid JSON, malformed XML, an XML bomb)
    HUGE = "huge"  # a `size`-byte body, generated while it is streamed
    EXPIRED_SIGNATURE = "expired_signature"  # the gateway's clock-skew refusal


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do instead of (or to) the normal answer; fields a kind does not use are ignored.

    - `status`, `headers`: the status and extra headers of STATUS (an error status) and BODY
      answers. `body`: BODY's bytes.
    - `count`: the fault hits the next N requests only, then clears itself (a burst).
    - `delay`: SLOW's silence before the answer. With `pieces` > 1 the headers go out at once
      and the body follows in that many parts, `delay / pieces` apart (slow but steady).
    - `size`: HUGE's length, announced in `Content-Length` unless `chunked`.
    - `full_length`: TRUNCATED announces the whole answer's `Content-Length` and closes before
      it is all sent; False sends a valid-length, truncated document instead.
    """

    kind: FaultKind
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    count: int | None = None
    delay: float = 0.0
    pieces: int = 1
    body: bytes = b""
    size: int = HUGE_DEFAULT_SIZE
    chunked: bool = False
    full_length: bool = True

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status, got {self.status}")
        if self.kind is FaultKind.STATUS and self.status < 400:
            raise ValueError("a STATUS fault needs an error status (400-599)")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or None: until cleared)")
        if self.pieces < 1:
            raise ValueError("pieces must be at least 1")
        if self.delay < 0 or self.size < 0:
            raise ValueError("delay and size must not be negative")


@dataclass(slots=True)
class FaultHit:
    """One request a fault answered: when (monotonic), for which target, and what was sent."""

    fault: Fault
    target: str | None
    at: float
    bytes_sent: int = 0
    finished: bool = False


@dataclass(frozen=True, slots=True)
class FaultDialect:
    """How one cloud words the answers a fault makes up."""

    content_type: str
    # An error answer with this status, in the cloud's error format.
    error: Callable[[web.Request, int], web.Response]
    # The gateway's answer to a signature outside its clock-skew window.
    expired_signature: Callable[[web.Request], web.Response]


@dataclass(slots=True)
class _Armed:
    fault: Fault
    left: int | None


class Faults:
    """The faults set on one simulator, by job id (`None`: the whole simulator)."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._armed: dict[str | None, _Armed] = {}
        self._monotonic = monotonic
        self._hits: deque[FaultHit] = deque(maxlen=MAX_HITS)

    def set(self, job_id: str | None, fault: Fault) -> None:
        """Set (or replace) the fault of `job_id`, or of the whole simulator with None."""
        self._armed[job_id] = _Armed(fault, fault.count)

    def clear(self, job_id: str | None = None) -> None:
        """Clear one target's fault (None: the simulator-wide one); no error if none is set."""
        self._armed.pop(job_id, None)

    def clear_all(self) -> None:
        self._armed.clear()

    def get(self, job_id: str | None) -> Fault | None:
        armed = self._armed.get(job_id)
        return None if armed is None else armed.fault

    @property
    def hits(self) -> tuple[FaultHit, ...]:
        return tuple(self._hits)

    def take(self, job_ids: Iterable[str]) -> FaultHit | None:
        """The fault a request for `job_ids` meets now (a job's own first), counted as a hit."""
        target: str | None = next((job_id for job_id in job_ids if job_id in self._armed), None)
        armed = self._armed.get(target)
        if armed is None:
            return None
        if armed.left is not None:
            armed.left -= 1
            if armed.left <= 0:
                del self._armed[target]
        hit = FaultHit(armed.fault, target, self._monotonic())
        self._hits.append(hit)
        return hit


async def respond(
    request: web.Request,
    hit: FaultHit,
    dialect: FaultDialect,
    answer: Callable[[], Awaitable[web.Response]],
) -> web.StreamResponse:
    """Answer `request` as `hit.fault` says; `answer` makes the normal answer when needed."""
    fault = hit.fault
    logger.debug("fault_injected", extra={"kind": fault.kind.value, "target": hit.target})
    response: web.StreamResponse
    if fault.kind is FaultKind.STATUS:
        response = dialect.error(request, fault.status)
        response.headers.update(fault.headers)
    elif fault.kind is FaultKind.BODY:
        response = web.Response(status=fault.status, body=fault.body, headers=fault.headers)
        response.content_type = dialect.content_type
    elif fault.kind is FaultKind.EXPIRED_SIGNATURE:
        response = dialect.expired_signature(request)
    elif fault.kind is FaultKind.SLOW and fault.pieces > 1:
        response = await _dribble(request, hit, await answer())
    elif fault.kind is FaultKind.SLOW:
        await asyncio.sleep(fault.delay)
        response = await answer()
    elif fault.kind is FaultKind.HUGE:
        response = await _huge(request, hit, dialect)
    else:  # RESET, TRUNCATED: cut the normal answer short
        response = await _cut(request, hit, await answer())
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        hit.bytes_sent = len(response.body)
    hit.finished = True
    return response


async def _cut(request: web.Request, hit: FaultHit, normal: web.Response) -> web.StreamResponse:
    full = normal.body if isinstance(normal.body, bytes) else b""
    part = full[: max(1, len(full) // 2)]
    fault = hit.fault
    if fault.kind is FaultKind.TRUNCATED and not fault.full_length:
        # Framing is valid, the document is not: this one is the parser's to refuse.
        truncated = web.Response(status=normal.status, body=part)
        truncated.content_type = normal.content_type
        return truncated
    response = web.StreamResponse(status=normal.status)
    response.content_type = normal.content_type
    response.content_length = len(full)  # more than will ever come
    await response.prepare(request)
    await response.write(part)
    hit.bytes_sent = len(part)
    transport = request.transport
    if transport is not None:
        if fault.kind is FaultKind.RESET:
            # SO_LINGER with a zero timeout turns close into an RST instead of a FIN.
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()  # a FIN once `part` is out: clean, but short of Content-Length
    return response


async def _dribble(request: web.Request, hit: FaultHit, normal: web.Response) -> web.StreamResponse:
    full = normal.body if isinstance(normal.body, bytes) else b""
    pieces = hit.fault.pieces
    response = web.StreamResponse(status=normal.status, headers=normal.headers)
    response.content_length = len(full)
    await response.prepare(request)
    step = -(-len(full) // pieces)  # ceiling: `pieces` parts at most
    try:
        for start in range(0, len(full), step):
            await asyncio.sleep(hit.fault.delay / pieces)
            await response.write(full[start : start + step])
            hit.bytes_sent += len(full[start : start + step])
        await response.write_eof()
    except ConnectionError:
        logger.debug("fault_client_gone", extra={"bytes_sent": hit.bytes_sent})
    return response


async def _huge(request: web.Request, hit: FaultHit, dialect: FaultDialect) -> web.StreamResponse:
    """Stream `size` bytes from one small block until done or the client hangs up."""
    size = hit.fault.size
    response = web.StreamResponse(status=200)
    response.content_type = dialect.content_type
    if hit.fault.chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = size
    await response.prepare(request)
    view = memoryview(_BLOCK)
    try:
        while hit.bytes_sent < size:
            block = view[: min(len(_BLOCK), size - hit.bytes_sent)]
            await response.write(block)
            hit.bytes_sent += len(block)
        await response.write_eof()
    except ConnectionError:
        # The client gave up (a size cap, we hope); nothing to answer any more.
        logger.debug("fault_client_gone", extra={"bytes_sent": hit.bytes_sent})
    return response
