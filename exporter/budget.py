"""Which due job gets the next request when an account's budget cannot poll every job at the
interval it asks for.

A job waits until it is due at its own interval, as without a budget; only when more jobs are
due than the budget's requests can serve does the order matter, and then each request goes to
the due job most worth polling:

1. jobs never polled, and jobs someone asked to poll now (a hint, a bulk refresh's look-up);
2. jobs past their cap: MAX_STRETCH times the interval they ask for since their last poll;
3. jobs still running, by the delay a poll now would end: the chance that they changed since
   their last poll times how long they have waited. The chance is the share of the job type's
   recent completed runs that ended between the job's age at its last poll and its age now (or,
   while that history is short, how far the job is towards its cap);
4. terminal jobs, which are due at `terminal_poll_interval` only, by how far they are towards
   their cap.

So the budget goes first to jobs about to end (an hour-long job type's jobs rest while they are
young), no job waits longer than its cap while the budget covers the caps, and terminal jobs get
what the running ones leave.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

# No job waits longer than this many of its own intervals between two polls, while the budget
# can pay for that at all.
MAX_STRETCH = 20.0
# The runs of one job type kept for its chances, and how many it takes to trust them.
HISTORY_SIZE = 500
MIN_HISTORY = 20
FIRST = math.inf
TIEBREAK = 1e-6


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

    def chance_of_end(self, since: float, until: float) -> float | None:
        """Of the runs that lasted past `since` seconds, the share that ended by `until`; None
        while the history is short, or when no run seen lasted that long."""
        runs = self._sorted
        if len(runs) < MIN_HISTORY:
            return None
        shorter = bisect.bisect_right(runs, since)
        longer = len(runs) - shorter
        if longer == 0:
            return None
        return (bisect.bisect_right(runs, until) - shorter) / longer


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
    chance = None
    if history is not None and age is not None:
        chance = history.chance_of_end(age - waited, age)
    if chance is None:
        chance = towards_cap  # no history to go by: as likely to have changed as it waited
    # The delay a poll now would end, were the job to have changed: its chance times how long
    # it has waited (polls by this index minimise the mean detection delay within a budget).
    # Jobs with no chance yet (young ones) are ordered by how long they have waited, but never
    # ahead of a job with some chance: only their cap puts them first.
    return chance * towards_cap + TIEBREAK * towards_cap**2


@dataclass(frozen=True, slots=True)
class PollingStatus:
    """One account's polling against its budget, for the exporter's own metrics."""

    budget_rps: float | None
    spent_rps: float
    overdue_seconds: float
    poll_interval: float
