"""Per-account request pacing: a token bucket at the account's budget that a throttling answer
pauses and slows down, and that remembers what was spent for the utilization metric."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

# A throttled answer halves the rate in force, never below this share of the budget; the rate
# then climbs back linearly, to the whole budget RECOVERY seconds after the last throttle.
THROTTLED_FACTOR = 0.5
THROTTLED_FLOOR = 0.1
RECOVERY = 300.0
# Spending is reported over this many seconds (cloudjob_api_budget_utilization_ratio).
SPENT_WINDOW = 60.0
# At most this many requests in a burst: a gateway's bucket that refills at the same rate as
# ours then never runs dry from our side, even when our requests reach it unevenly spaced.
MAX_BURST = 2.0


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
        self._capacity = min(MAX_BURST, max(1.0, rate or 1.0))
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._created = self._updated = monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        # After a throttled answer: the rate it left in force, and when.
        self._slowed: tuple[float, float] | None = None
        self._granted: deque[float] = deque()

    @property
    def rate(self) -> float | None:
        """The budget: the rate configured, whatever a throttle left in force for now."""
        return self._rate

    def rate_in_force(self) -> float | None:
        if self._rate is None or self._slowed is None:
            return self._rate
        slowed, at = self._slowed
        rate = slowed + self._rate * (self._monotonic() - at) / RECOVERY
        if rate >= self._rate:
            self._slowed = None
            return self._rate
        return rate

    def pause_until(self, moment: float) -> None:
        self._paused_until = max(self._paused_until, moment)

    def throttled(self, until: float) -> None:
        """The cloud said slow down: hold every request back until then, and spend less after."""
        self.pause_until(until)
        if self._rate is not None:
            now_rate = self.rate_in_force() or self._rate
            slowed = max(self._rate * THROTTLED_FLOOR, now_rate * THROTTLED_FACTOR)
            self._slowed = (slowed, self._monotonic())

    def spent_rps(self) -> float:
        """Requests per second granted over the last SPENT_WINDOW seconds (or since start)."""
        now = self._monotonic()
        while self._granted and self._granted[0] <= now - SPENT_WINDOW:
            self._granted.popleft()
        return len(self._granted) / max(1.0, min(SPENT_WINDOW, now - self._created))

    def refund(self) -> None:
        """Give back a token its caller did not use (nothing was left to send)."""
        if self._rate is not None:
            self._tokens = min(self._capacity, self._tokens + 1.0)
            if self._granted:
                self._granted.pop()

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
                rate = self.rate_in_force()
                if rate is None:
                    return
                self._tokens = min(self._capacity, self._tokens + (now - self._updated) * rate)
                self._updated = now
                if self._tokens >= 1.0 - 1e-9:  # rounding must not leave a waiter short forever
                    self._tokens = max(0.0, self._tokens - 1.0)
                    self._granted.append(now)
                    return
                await self._sleep((1.0 - self._tokens) / rate)
