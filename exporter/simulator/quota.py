"""An account's request quota, as a cloud's API gateway enforces it: one token bucket shared by
every request of the simulated account, and counts of what it let through and refused.

A real gateway throttles per tenant, whatever the API: the exporter and the application that
creates the jobs spend the same quota. Off by default (no rate): every request is answered and
only counted. A bench reads the counts in-process (`Quota.stats`) or, across processes, at
`STATS_PATH`, a route no cloud serves.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

STATS_PATH = "/_simulator/stats"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class QuotaStats:
    """What the quota saw: every request answered, and how many of them were refused."""

    rate: float | None  # requests per second of the simulator's clock; None: no quota
    burst: float
    answered: int
    throttled: int

    def to_json(self) -> dict[str, object]:
        return {
            "rate": self.rate,
            "burst": self.burst,
            "answered": self.answered,
            "throttled": self.throttled,
        }


class Quota:
    """A token bucket on the simulator's clock: `rate` requests per second, `burst` at once.

    Refill is computed from the clock at each request, so a fake clock moves it as it moves the
    jobs. Refused requests take no token: a client that keeps retrying is kept at `rate`.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        rate: float | None = None,
        burst: float | None = None,
    ) -> None:
        self._clock = clock
        self.answered = 0
        self.throttled = 0
        self._rate: float | None = None
        self._burst = 0.0
        self._tokens = 0.0
        self._at = clock()
        self.configure(rate, burst)

    def configure(self, rate: float | None, burst: float | None = None) -> None:
        """Set the quota (None: none), its bucket full; `burst` defaults to one second's worth
        (at least one request)."""
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"quota rate must be a positive number, got {rate!r}")
        if burst is not None and not (burst >= 1 and math.isfinite(burst)):
            raise ValueError(f"quota burst must be at least 1 request, got {burst!r}")
        self._rate = rate
        self._burst = 0.0 if rate is None else burst if burst is not None else max(1.0, rate)
        self._tokens, self._at = self._burst, self._clock()

    def admit(self) -> bool:
        """Count one request; False when it is over the quota (to be refused)."""
        self.answered += 1
        if self._rate is None:
            return True
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._at) * self._rate)
        self._at = now
        # A hair under one token is one: epoch seconds are too large for exact tenths.
        if self._tokens >= 1.0 - 1e-6:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        self.throttled += 1
        return False

    def stats(self) -> QuotaStats:
        return QuotaStats(self._rate, self._burst, self.answered, self.throttled)


def install(
    app: web.Application, quota: Quota, refusal: Callable[[web.Request], web.Response]
) -> None:
    """Put `quota` in front of every route of `app` (answering `refusal` over it) and serve its
    counts at `STATS_PATH`, which the quota neither counts nor limits. Call it before adding a
    catch-all route, which would otherwise answer `STATS_PATH` too."""

    @web.middleware
    async def throttle(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == STATS_PATH:
            return await handler(request)
        if not quota.admit():
            return refusal(request)
        return await handler(request)

    async def stats(_: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(quota.stats().to_json()), content_type="application/json"
        )

    app.middlewares.append(throttle)
    app.router.add_get(STATS_PATH, stats)
