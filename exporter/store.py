"""The latest snapshot and counters of every tracked job: the exporter's only shared mutable state.

Written by the poller, read by the collector and the JSON API, all on the event loop, so no locks:
`view()` hands out an immutable copy, and a scrape renders from that copy while polling goes on.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from exporter.model import JobSnapshot, Phase, ProviderError

# API latency buckets: gateways answer in tens of ms; a slow cloud takes seconds; timeouts at 10 s.
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Job run times: a short assessment takes a minute, a long recognition job hours.
JOB_DURATION_BUCKETS = (
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    43200.0,
    86400.0,
)


class JobKey(NamedTuple):
    """A tuple, not a dataclass: it keys every dict of the poller, store and scrape cache,
    and a tuple hashes in C (a dataclass's __hash__ is Python, ~0.3 µs a lookup)."""

    account: str
    job_id: str


@dataclass(frozen=True, slots=True)
class PollError:
    reason: str
    message: str
    code: str | None
    status: str


@dataclass(frozen=True, slots=True)
class JobState:
    """Everything known about one job, as of one moment."""

    key: JobKey
    provider: str
    labels: tuple[tuple[str, str], ...] = ()
    snapshot: JobSnapshot | None = None
    failures: int = 0
    polls: int = 0
    last_poll_success: bool | None = None
    last_poll_at: float | None = None
    last_success_at: float | None = None
    last_error: PollError | None = None
    terminal_since: float | None = None
    first_seen_at: float | None = None
    # Whether this run's duration went into the completed-jobs histogram (once per run).
    duration_observed: bool = False
    # Where the job came from: config, api or discovery; and its own poll interval, if any.
    source: str = "config"
    poll_interval: float | None = None

    @property
    def phase(self) -> Phase:
        return self.snapshot.phase if self.snapshot else Phase.UNKNOWN


@dataclass(slots=True)
class Histogram:
    """Per-bucket (not cumulative) counts; the collector accumulates when it renders."""

    buckets: tuple[float, ...] = DURATION_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def copy(self) -> Histogram:
        return Histogram(self.buckets, list(self.counts), self.total)


@dataclass(frozen=True, slots=True)
class DiscoveryStatus:
    last_success: bool
    last_run_at: float
    added_total: int


@dataclass(frozen=True, slots=True)
class StoreView:
    jobs: tuple[JobState, ...]
    api_requests: Mapping[tuple[str, str, str], int]
    api_durations: Mapping[tuple[str, str], Histogram]
    parse_errors: Mapping[tuple[str, str], int]
    poll_errors: Mapping[tuple[str, str, str], int]
    # (account, provider, job_type, phase) -> run times of jobs seen finishing.
    job_durations: Mapping[tuple[str, str, str, str], Histogram]
    discovery: Mapping[tuple[str, str], DiscoveryStatus]
    # (account, provider, job_type, code) -> entries into the failed phase.
    failures: Mapping[tuple[str, str, str, str], int]
    # The last config reload: did it work, and when did one last work.
    reload_ok: bool = True
    reload_success_at: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """What a recorded poll changed, so the poller can log state changes once, not every poll."""

    before: JobState | None
    after: JobState

    @property
    def entered_failed(self) -> bool:
        return self.after.phase is Phase.FAILED and (
            self.before is None or self.before.phase is not Phase.FAILED
        )

    @property
    def recovered(self) -> bool:
        return (
            self.before is not None
            and self.before.last_poll_success is False
            and bool(self.after.last_poll_success)
        )

    @property
    def started_failing(self) -> bool:
        return self.after.last_poll_success is False and (
            self.before is None or self.before.last_poll_success is not False
        )


class Store:
    def __init__(self) -> None:
        self._jobs: dict[JobKey, JobState] = {}
        self._api_requests: dict[tuple[str, str, str], int] = {}
        self._api_durations: dict[tuple[str, str], Histogram] = {}
        self._parse_errors: dict[tuple[str, str], int] = {}
        self._poll_errors: dict[tuple[str, str, str], int] = {}
        self._job_durations: dict[tuple[str, str, str, str], Histogram] = {}
        self._discovery: dict[tuple[str, str], DiscoveryStatus] = {}
        self._failures: dict[tuple[str, str, str, str], int] = {}
        self._reload_ok = True
        self._reload_success_at: float | None = None
        # Changes are remembered only for a state file to write; in memory nothing collects them.
        self.track_changes = False
        self._dirty: set[JobKey] = set()
        self._removed: dict[JobKey, float | None] = {}

    def track(
        self,
        key: JobKey,
        provider: str,
        labels: Mapping[str, str],
        *,
        source: str = "config",
        poll_interval: float | None = None,
    ) -> None:
        """Start (or keep) tracking a job; changed static labels take effect at once."""
        frozen_labels = tuple(sorted(labels.items()))
        current = self._jobs.get(key)
        if current is None:
            self._set(
                JobState(
                    key=key,
                    provider=provider,
                    labels=frozen_labels,
                    source=source,
                    poll_interval=poll_interval,
                )
            )
        elif (current.labels, current.provider, current.source, current.poll_interval) != (
            frozen_labels,
            provider,
            source,
            poll_interval,
        ):
            self._set(
                replace(
                    current,
                    labels=frozen_labels,
                    provider=provider,
                    source=source,
                    poll_interval=poll_interval,
                )
            )

    def restore(self, state: JobState) -> None:
        """Put back a job's state from the state file, as it was before a restart."""
        self._jobs[state.key] = state

    def forget(self, key: JobKey, *, tombstone: float | None = None) -> None:
        """Drop a job; `tombstone` (when) keeps discovery from finding it again."""
        self._jobs.pop(key, None)
        self._dirty.discard(key)
        if self.track_changes:
            self._removed[key] = tombstone

    def _set(self, state: JobState, *, durable: bool = True) -> None:
        """Replace a job's state; `durable=False` for changes not worth a state-file write
        (poll times and counts: the next poll renews them anyway)."""
        self._jobs[state.key] = state
        if self.track_changes and durable:
            self._dirty.add(state.key)
            self._removed.pop(state.key, None)

    def take_changes(self) -> tuple[list[JobState], dict[JobKey, float | None]]:
        """What changed since the last call, for the state file: current states and removals."""
        changed = [self._jobs[key] for key in self._dirty if key in self._jobs]
        removed = self._removed
        self._dirty = set()
        self._removed = {}
        return changed, removed

    def get(self, key: JobKey) -> JobState | None:
        return self._jobs.get(key)

    def job_keys(self) -> list[JobKey]:
        return list(self._jobs)

    def record_success(self, key: JobKey, snapshot: JobSnapshot, at: float) -> Transition | None:
        before = self._jobs.get(key)
        if before is None:  # forgotten while the poll was in flight
            return None
        if before.snapshot is not None and (
            snapshot is before.snapshot or snapshot == before.snapshot
        ):
            # Keep the old object: the new one is freed at once, and the scrape's text cache
            # sees an unchanged job by identity (exposition.py).
            snapshot = before.snapshot
        entered_failed = snapshot.phase is Phase.FAILED and before.phase is not Phase.FAILED
        if entered_failed:
            code_key = (
                key.account,
                before.provider,
                snapshot.job_type,
                snapshot.failure_code or "",
            )
            self._failures[code_key] = self._failures.get(code_key, 0) + 1
        duration_observed = before.duration_observed and snapshot.terminal
        if snapshot.terminal:
            terminal_since = before.terminal_since if before.terminal_since is not None else at
            if not duration_observed and snapshot.duration is not None:
                self._observe_duration(key, before.provider, snapshot, snapshot.duration)
                duration_observed = True
        else:
            terminal_since = None
        # Every field spelled out, not dataclasses.replace (3 µs, a poll's hottest line in the
        # store); a test fails if a new field is not carried over here.
        after = JobState(
            key=before.key,
            provider=before.provider,
            labels=before.labels,
            snapshot=snapshot,
            failures=before.failures + (1 if entered_failed else 0),
            polls=before.polls + 1,
            last_poll_success=True,
            last_poll_at=at,
            last_success_at=at,
            last_error=None,
            terminal_since=terminal_since,
            first_seen_at=before.first_seen_at if before.first_seen_at is not None else at,
            duration_observed=duration_observed,
            source=before.source,
            poll_interval=before.poll_interval,
        )
        self._set(
            after,
            durable=(
                before.snapshot is not snapshot
                or before.failures != after.failures
                or before.duration_observed != duration_observed
                or before.terminal_since != terminal_since
                or before.last_poll_success is not True
            ),
        )
        for name in snapshot.parse_errors:
            bucket = (before.provider, name)
            self._parse_errors[bucket] = self._parse_errors.get(bucket, 0) + 1
        return Transition(before if before.polls else None, after)

    def record_failure(self, key: JobKey, error: ProviderError, at: float) -> Transition | None:
        """Keep the last good snapshot: a failed poll says nothing new about the job itself."""
        before = self._jobs.get(key)
        if before is None:
            return None
        after = replace(
            before,
            polls=before.polls + 1,
            last_poll_success=False,
            last_poll_at=at,
            last_error=PollError(error.reason, str(error), error.code, error.status),
        )
        self._set(after, durable=before.last_poll_success is not False)
        bucket = (key.account, before.provider, error.reason)
        self._poll_errors[bucket] = self._poll_errors.get(bucket, 0) + 1
        if error.reason == "parse":
            parse_bucket = (before.provider, "body")
            self._parse_errors[parse_bucket] = self._parse_errors.get(parse_bucket, 0) + 1
        return Transition(before, after)

    def _observe_duration(
        self, key: JobKey, provider: str, snapshot: JobSnapshot, seconds: float
    ) -> None:
        bucket = (key.account, provider, snapshot.job_type, snapshot.phase.value)
        histogram = self._job_durations.get(bucket)
        if histogram is None:
            histogram = self._job_durations[bucket] = Histogram(JOB_DURATION_BUCKETS)
        histogram.observe(seconds)

    def record_reload(self, *, ok: bool, at: float) -> None:
        self._reload_ok = ok
        if ok:
            self._reload_success_at = at

    def record_discovery(
        self, account: str, provider: str, *, ok: bool, at: float, added: int = 0
    ) -> None:
        before = self._discovery.get((account, provider))
        total = (before.added_total if before else 0) + added
        self._discovery[(account, provider)] = DiscoveryStatus(ok, at, total)

    def record_request(self, account: str, provider: str, status: str, seconds: float) -> None:
        key = (account, provider, status)
        self._api_requests[key] = self._api_requests.get(key, 0) + 1
        histogram = self._api_durations.get((account, provider))
        if histogram is None:
            histogram = self._api_durations[(account, provider)] = Histogram()
        histogram.observe(seconds)

    def view(self) -> StoreView:
        return StoreView(
            jobs=tuple(self._jobs.values()),
            api_requests=dict(self._api_requests),
            api_durations={key: h.copy() for key, h in self._api_durations.items()},
            parse_errors=dict(self._parse_errors),
            poll_errors=dict(self._poll_errors),
            job_durations={key: h.copy() for key, h in self._job_durations.items()},
            discovery=dict(self._discovery),
            failures=dict(self._failures),
            reload_ok=self._reload_ok,
            reload_success_at=self._reload_success_at,
        )
