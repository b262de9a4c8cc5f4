"""The work an account does beside its jobs' own polls (discovery, bulk refresh, queue reads):
requests paced and counted like polls, and runs repeated on an interval whose failures are
logged once, not on every run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from exporter.model import Exchange, ProviderError, ThrottledError
from exporter.ratelimit import RateLimiter
from exporter.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long a throttled request holds the account back when the cloud gives no Retry-After.
THROTTLE_PAUSE = 5.0


async def paced(
    limiter: RateLimiter,
    store: Store,
    account: str,
    provider: str,
    request: Callable[[], Awaitable[T]],
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """One request after the account's limiter allows it, counted as every request to a cloud
    is; a throttled one holds the account back, its polls included."""
    await limiter.acquire()
    started = monotonic()
    try:
        result = await request()
    except ProviderError as error:
        store.on_exchange(account, provider, error.status, monotonic() - started)
        if isinstance(error, ThrottledError):
            limiter.throttled(monotonic() + (error.retry_after or THROTTLE_PAUSE))
        raise
    store.on_exchange(account, provider, Exchange.OK, monotonic() - started)
    return result


async def repeat(
    run: Callable[[], Awaitable[T]],
    *,
    account: str,
    what: str,
    interval: float,
    from_start: bool = False,
    done: Callable[[T], None] | None = None,
    logger: logging.Logger = log,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """`run` every `interval` seconds until cancelled: after the last run ended, or after it
    started with `from_start` (a steady cadence). A failed run is logged as `<what>_failed` (a
    warning when runs start failing, then debug) and `<what>_recovered`, any other exception as
    `<what>_crashed` with its traceback (a bug, logged every time); `done` sees each
    successful run's result; `logger` is the caller's, so events keep their module's name."""
    pause = sleep or asyncio.sleep
    failed, recovered, crashed = what + "_failed", what + "_recovered", what + "_crashed"
    failing = False
    while True:
        started = monotonic()
        try:
            result = await run()
        except ProviderError as error:
            logger.log(
                logging.DEBUG if failing else logging.WARNING,
                failed,
                extra={
                    "account": account,
                    "reason": error.reason,
                    "status": error.status,
                    "code": error.code,
                    "error": str(error),
                },
            )
            failing = True
        except Exception:  # a bug on one answer must not end the account's work for good
            logger.exception(crashed, extra={"account": account})
            failing = True
        else:
            if failing:
                logger.info(recovered, extra={"account": account})
            failing = False
            if done is not None:
                done(result)
        elapsed = monotonic() - started if from_start else 0.0
        await pause(max(0.0, interval - elapsed))
