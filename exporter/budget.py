"""Which due job gets the next request when an account's budget cannot poll every job at the
interval it asks for.

A job waits until it is due at its own interval, as without a budget; only when more jobs are
due than the budget's requests can serve does the order matter, and then each request goes to
the due job most worth polling:

1. jobs never polled, and jobs someone asked to poll now (a hint, a bulk refresh's look-up);
2. jobs past their cap: MAX_STRETCH times the interval they ask for since their last poll;
3. jobs still running, longest waiting first (relative to the interval each asks for), where a
   job's wait counts only from the age by which YOUNG_SHARE of its type's recent runs had
   ended: a poll of a younger job would almost never find it ended, so until then it waits
   behind every other running job (only its cap puts it first);
4. terminal jobs, which are due at `terminal_poll_interval` only, by how far they are towards
   their cap.

Why this order and not "most likely to have ended first": what a late sighting costs is counted
per change, and its tail (the p99 the alerts see) is set by the longest gaps between polls of the
jobs that do end. For a job whose run time is known only by its age and its type's history, the
gaps that bound that tail at the lowest cost are a first one that skips the ages where almost no
run ends, then equal ones; likelihood-first polling saves on the mean but lengthens the gaps of
unlikely-but-possible ends, which is where the tail comes from (measured: make bench, freshness).
Terminal jobs get what the running ones leave, and no job waits longer than its cap while the
budget covers the caps.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

# No job waits longer than this many of its own intervals between two polls, while the budget
# can pay for that at all.
MAX_STRETCH = 20.0
# The runs of one job type kept, and how many it takes to trust them.
HISTORY_SIZE = 500
MIN_HISTORY = 20
FIRST = math.inf
TIEBREAK = 1e-6
# Until a job is as old as this share of its type's runs were when they ended, a poll would
# almost never find it ended: its wait counts from that age on.
YOUNG_SHARE = 0.01


class DurationHistory:
    """The recent completed run times of one job type (creation to finish)."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self._recent: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._recent)

    def add(self, seconds: float) -> None:
        if len(self._recent) == self._recent.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self._recent[0])]
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    def quantile(self, share: float) -> float | None:
        """The run time that `share` of the recent runs did not exceed; None while the history
        is short."""
        runs = self._sorted
        if len(runs) < MIN_HISTORY:
            return None
        return runs[min(len(runs) - 1, int(share * len(runs)))]


def urgency(
    *,
    waited: float | None,
    interval: float,
    terminal: bool,
    age: float | None,
    history: DurationHistory | None,
) -> float:
    """How much a due job is worth a request now (higher first; see the module docstring).

    `waited`: seconds since its last poll (None: never polled); `interval`: the one it asks for;
    `age`: seconds since the cloud created it, if known.
    """
    if waited is None:
        return FIRST
    towards_cap = waited / (MAX_STRETCH * interval)
    if towards_cap >= 1.0:
        return 2.0 + towards_cap
    if terminal:
        return towards_cap - 1.0
    if history is not None and age is not None:
        young_until = history.quantile(YOUNG_SHARE)
        if young_until is not None:
            waited = min(waited, age - young_until)
            if waited <= 0.0:  # younger than almost every run's end: behind every other job
                return TIEBREAK * towards_cap
    return waited / (MAX_STRETCH * interval)


@dataclass(frozen=True, slots=True)
class PollingStatus:
    """One account's polling against its budget, for the exporter's own metrics."""

    budget_rps: float | None
    spent_rps: float
    overdue_seconds: float
    poll_interval: float
