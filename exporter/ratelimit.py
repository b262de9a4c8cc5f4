"""Per-account request pacing: a token bucket (`max_rps`) that a throttling answer can pause."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class RateLimiter:
    """Token bucket; `rate=None` means no cap, but `pause_until` still holds every caller back.

    Callers wait in turn (a lock), so a burst of due jobs is spread out instead of stampeding the
    cloud as soon as tokens appear.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate or 1.0)
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._updated = monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float | None:
        return self._rate

    def pause_until(self, moment: float) -> None:
        self._paused_until = max(self._paused_until, moment)

    async def acquire(self) -> None:
        if (
            self._rate is None
            and not self._lock.locked()
            and self._monotonic() >= self._paused_until
        ):
            return  # no cap, no pause, nobody waiting: what the lock would have let through at once
        async with self._lock:
            while True:
                now = self._monotonic()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                if self._rate is None:
                    return
                self._tokens = min(
                    self._capacity, self._tokens + (now - self._updated) * self._rate
                )
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await self._sleep((1.0 - self._tokens) / self._rate)
