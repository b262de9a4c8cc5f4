"""How often poll-now hints (the API's and the CI callbacks') may arrive, per account.

A hint costs a signed look-up within the account's API budget; a caller in a loop, or a stream of
forged callbacks that happen to name tracked jobs, must not spend that budget. The bucket refuses
at once (the caller hears 429 with Retry-After) instead of queueing: a hint that waits is no
longer "now".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

# Hints per second an account takes in the long run, and how many may come at once: an
# application finishing a batch of jobs may hint each; a steady stream past ten a second is
# no longer "this job just finished" and is better served by the poll plan itself.
HINT_RATE = 10.0
HINT_BURST = 20


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class HintLimiter:
    """A token bucket per account; `take` never waits."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        rate: float = HINT_RATE,
        burst: int = HINT_BURST,
    ) -> None:
        self._monotonic = monotonic
        self._rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, account: str, cost: int = 1) -> float:
        """0 when the account's bucket had `cost` tokens (now spent); else the seconds until it
        will have them, and nothing is spent. `cost` is at most `burst`."""
        if not 1 <= cost <= self.burst:
            raise ValueError(f"a hint costs 1 to {self.burst} tokens, not {cost}")
        now = self._monotonic()
        bucket = self._buckets.get(account)
        if bucket is None:
            bucket = self._buckets[account] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self._rate


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))
