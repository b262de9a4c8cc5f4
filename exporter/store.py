"""The latest snapshot and counters of every tracked job: the exporter's only shared mutable state.

Written by the poller, read by the collector and the JSON API, all on the event loop, so no locks:
`view()` hands out an immutable copy, and a scrape renders from that copy while polling goes on.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from exporter.model import Exchange, JobSnapshot, Phase, ProviderError, Queue

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
# The failed polls' times kept per account, for "poll errors in the last hour" (status page).
RECENT_POLL_ERRORS = 10_000
# Detection delays: a job polled every few seconds sees changes within seconds; one left at its
# cap under a tight budget, in tens of minutes.
DETECTION_BUCKETS = (
    1.0,
    2.0,
    5.0,
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
)


class JobKey(NamedTuple):
    """A tuple, not a dataclass: it keys every dict of the poller, store and scrape cache,
    and a tuple hashes in C (a dataclass's __hash__ runs Python code on every lookup)."""

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
    # Which of its cloud's APIs polls it (`jobs[].kind`); None for a cloud with one kind.
    kind: str | None = None

    @property
    def phase(self) -> Phase:
        return self.snapshot.phase if self.snapshot else Phase.UNKNOWN


@dataclass(slots=True)
class Histogram:
    """A histogram's state as data: per-bucket (not cumulative) counts and the sum.

    Not prometheus_client's Histogram: the state file saves and restores these counts, which
    that class offers no public way to do; the collector renders them as a
    HistogramMetricFamily at scrape time.
    """

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
class QueueStatus:
    """An account's last queue read: the queues are those of the last read that worked."""

    last_success: bool
    last_run_at: float
    queues: tuple[Queue, ...]


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A forgotten job, remembered so that no source brings it back (the rules: lifecycle.py).

    `kind` is "expired" (forgotten after terminal_retention) or "deleted" (through the API);
    `named_at` is when a source last named the job, the start of its time to live.
    """

    provider: str
    kind: str
    at: float
    named_at: float


@dataclass(frozen=True, slots=True)
class Retired:
    """A job that no source names any more, since `at`. Kept for a while so that, named again,
    it resumes where it was instead of being polled and counted afresh."""

    state: JobState
    at: float


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed since the last state-file write. A job row is written from wherever the job
    is now (tracked or retired) or deleted when it is neither; tombstones alike."""

    jobs: list[JobState]
    retired: list[Retired]
    jobs_gone: list[JobKey]
    tombstones: dict[JobKey, Tombstone]
    tombstones_gone: list[JobKey]
    # The job-outcome counters, whole, when they changed (they are a few hundred rows at most).
    failures: dict[tuple[str, str, str, str], int] | None
    job_durations: dict[tuple[str, str, str, str], Histogram] | None

    def __bool__(self) -> bool:
        return bool(
            self.jobs
            or self.retired
            or self.jobs_gone
            or self.tombstones
            or self.tombstones_gone
            or self.failures is not None
        )


@dataclass(frozen=True, slots=True)
class StoreView:
    jobs: tuple[JobState, ...]
    api_requests: Mapping[tuple[str, str, str], int]
    api_durations: Mapping[tuple[str, str], Histogram]
    parse_errors: Mapping[tuple[str, str], int]
    poll_errors: Mapping[tuple[str, str, str], int]
    # (account, provider, job_type, phase) -> run times of jobs seen finishing.
    job_durations: Mapping[tuple[str, str, str, str], Histogram]
    # (account, provider) -> seen time minus the cloud's time of each state change seen.
    detection_delays: Mapping[tuple[str, str], Histogram]
    discovery: Mapping[tuple[str, str], DiscoveryStatus]
    # (account, provider) -> its last queue read.
    queues: Mapping[tuple[str, str], QueueStatus]
    # (account, provider, job_type, code) -> entries into the failed phase.
    failures: Mapping[tuple[str, str, str, str], int]
    # (account, provider) -> tombstones held, for the accounts configured now.
    forgotten: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # The last config reload: did it work, and when did one last work.
    reload_ok: bool = True
    reload_success_at: float | None = None
    # (account, provider, source, outcome) -> poll-now hints (api.py).
    poll_hints: Mapping[tuple[str, str, str, str], int] = field(default_factory=dict)


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
    """Data only: which job is tracked, retired or forgotten is decided in lifecycle.py, the one
    caller of `track`, `revive`, `retire`, `forget`, `bury` and `unbury`."""

    def __init__(self) -> None:
        self._jobs: dict[JobKey, JobState] = {}
        self._retired: dict[JobKey, Retired] = {}
        self._tombstones: dict[JobKey, Tombstone] = {}
        self._forgotten: dict[tuple[str, str], int] = {}
        self._accounts: dict[str, str] = {}
        self._api_requests: dict[tuple[str, str, str], int] = {}
        self._api_durations: dict[tuple[str, str], Histogram] = {}
        self._parse_errors: dict[tuple[str, str], int] = {}
        self._poll_errors: dict[tuple[str, str, str], int] = {}
        # (account, provider) -> the times of its latest failed polls, oldest first.
        self._poll_error_times: dict[tuple[str, str], deque[float]] = {}
        self._job_durations: dict[tuple[str, str, str, str], Histogram] = {}
        self._detection_delays: dict[tuple[str, str], Histogram] = {}
        self._discovery: dict[tuple[str, str], DiscoveryStatus] = {}
        self._queues: dict[tuple[str, str], QueueStatus] = {}
        self._failures: dict[tuple[str, str, str, str], int] = {}
        self._poll_hints: dict[tuple[str, str, str, str], int] = {}
        self._reload_ok = True
        self._reload_success_at: float | None = None
        # Changes are remembered only for a state file to write; in memory nothing collects them.
        self.track_changes = False
        self._dirty: set[JobKey] = set()
        self._dirty_tombstones: set[JobKey] = set()
        self._counters_dirty = False

    # -- membership (called by lifecycle.py only) -----------------------------------------

    def track(
        self,
        key: JobKey,
        provider: str,
        labels: Mapping[str, str],
        *,
        source: str = "config",
        poll_interval: float | None = None,
        kind: str | None = None,
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
                    kind=kind,
                )
            )
        elif (
            current.labels,
            current.provider,
            current.source,
            current.poll_interval,
            current.kind,
        ) != (frozen_labels, provider, source, poll_interval, kind):
            self._set(
                replace(
                    current,
                    labels=frozen_labels,
                    provider=provider,
                    source=source,
                    poll_interval=poll_interval,
                    kind=kind,
                )
            )

    def restore(self, state: JobState) -> None:
        """Put back a job's state from the state file, as it was before a restart."""
        self._jobs[state.key] = state

    def restore_retired(self, retired: Retired) -> None:
        self._retired[retired.state.key] = retired

    def revive(self, key: JobKey) -> None:
        """Track a retired job again with the state it had."""
        retired = self._retired.pop(key, None)
        if retired is not None:
            self._set(retired.state)

    def retire(self, key: JobKey, at: float) -> None:
        state = self._jobs.pop(key, None)
        if state is not None:
            self._retired[key] = Retired(state, at)
            self._mark(key)

    def forget(self, key: JobKey) -> None:
        """Drop a job, tracked or retired, and its state."""
        if self._jobs.pop(key, None) is not None or self._retired.pop(key, None) is not None:
            self._mark(key)

    def bury(self, key: JobKey, tombstone: Tombstone) -> None:
        """Forget a job and keep (or renew) its tombstone."""
        self.forget(key)
        self.restore_tombstone(key, tombstone)
        if self.track_changes:
            self._dirty_tombstones.add(key)

    def unbury(self, key: JobKey) -> None:
        tombstone = self._tombstones.pop(key, None)
        if tombstone is not None:
            self._count_tombstone(key, tombstone, -1)
            if self.track_changes:
                self._dirty_tombstones.add(key)

    def restore_tombstone(self, key: JobKey, tombstone: Tombstone) -> None:
        before = self._tombstones.get(key)
        if before is not None:
            self._count_tombstone(key, before, -1)
        self._tombstones[key] = tombstone
        self._count_tombstone(key, tombstone, 1)

    def _count_tombstone(self, key: JobKey, tombstone: Tombstone, step: int) -> None:
        """Tombstones per account, kept up to date so a scrape does not walk them all."""
        bucket = (key.account, tombstone.provider)
        count = self._forgotten.get(bucket, 0) + step
        if count:
            self._forgotten[bucket] = count
        else:
            del self._forgotten[bucket]

    @property
    def retired(self) -> Mapping[JobKey, Retired]:
        return self._retired

    @property
    def tombstones(self) -> Mapping[JobKey, Tombstone]:
        return self._tombstones

    def set_accounts(self, accounts: Mapping[str, str]) -> None:
        """The accounts configured now, with their providers: `view().forgotten` counts theirs
        (0 included), and only theirs."""
        self._accounts = dict(accounts)

    def remove_account(self, account: str) -> None:
        """Drop the account's statuses and counters (its jobs are retired by the lifecycle)."""
        for table in (
            self._api_requests,
            self._api_durations,
            self._poll_errors,
            self._poll_error_times,
            self._job_durations,
            self._detection_delays,
            self._discovery,
            self._queues,
            self._failures,
            self._poll_hints,
        ):
            _drop_account(table, account)
        self._counters_dirty = True

    # -- durable state ----------------------------------------------------------------------

    def _set(self, state: JobState, *, durable: bool = True) -> None:
        """Replace a job's state; `durable=False` for changes not worth a state-file write
        (poll times and counts: the next poll renews them anyway)."""
        self._jobs[state.key] = state
        if durable:
            self._mark(state.key)

    def _mark(self, key: JobKey) -> None:
        if self.track_changes:
            self._dirty.add(key)

    def take_changes(self) -> Changes:
        """What changed since the last call, for the state file."""
        jobs, retired, gone = [], [], []
        for key in self._dirty:
            if (state := self._jobs.get(key)) is not None:
                jobs.append(state)
            elif (was := self._retired.get(key)) is not None:
                retired.append(was)
            else:
                gone.append(key)
        tombstones = {k: t for k in self._dirty_tombstones if (t := self._tombstones.get(k))}
        counters = self._counters_dirty and self.track_changes
        changes = Changes(
            jobs=jobs,
            retired=retired,
            jobs_gone=gone,
            tombstones=tombstones,
            tombstones_gone=[k for k in self._dirty_tombstones if k not in tombstones],
            failures=dict(self._failures) if counters else None,
            job_durations={k: h.copy() for k, h in self._job_durations.items()}
            if counters
            else None,
        )
        self._dirty = set()
        self._dirty_tombstones = set()
        self._counters_dirty = False
        return changes

    def restore_counters(
        self,
        failures: Mapping[tuple[str, str, str, str], int],
        job_durations: Mapping[tuple[str, str, str, str], Histogram],
    ) -> None:
        """The job-outcome counters as a state file kept them: a restart neither resets nor
        repeats them."""
        self._failures = dict(failures)
        self._job_durations = {key: h.copy() for key, h in job_durations.items()}

    # -- observations -------------------------------------------------------------------------

    def get(self, key: JobKey) -> JobState | None:
        return self._jobs.get(key)

    def __contains__(self, key: JobKey) -> bool:
        return key in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

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
            self._counters_dirty = True
        previous = before.snapshot
        if (
            previous is not None
            and previous.state != snapshot.state
            and snapshot.updated_at is not None
            and (previous.updated_at is None or snapshot.updated_at > previous.updated_at)
        ):
            self._observe_detection(key.account, before.provider, at - snapshot.updated_at)
        duration_observed = before.duration_observed and snapshot.terminal
        if snapshot.terminal:
            terminal_since = before.terminal_since if before.terminal_since is not None else at
            if not duration_observed and snapshot.duration is not None:
                self._observe_duration(key, before.provider, snapshot, snapshot.duration)
                duration_observed = True
        else:
            terminal_since = None
        # Every field spelled out, not dataclasses.replace, which looks the fields up on every
        # call on a poll's hottest line in the store; a test fails if a new field is not carried
        # over here.
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
            kind=before.kind,
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
        times = self._poll_error_times.get((key.account, before.provider))
        if times is None:
            times = self._poll_error_times[(key.account, before.provider)] = deque(
                maxlen=RECENT_POLL_ERRORS
            )
        times.append(at)
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
        self._counters_dirty = True

    def _observe_detection(self, account: str, provider: str, seconds: float) -> None:
        """A state change seen `seconds` after the cloud's time for it: the cloud's update time
        moved with the state (a change whose time the cloud does not give, such as Tencent's
        Pause, is not observed). Clocks apart by a little can make it negative: 0 then."""
        histogram = self._detection_delays.get((account, provider))
        if histogram is None:
            histogram = self._detection_delays[(account, provider)] = Histogram(DETECTION_BUCKETS)
        histogram.observe(max(0.0, seconds))

    def poll_errors_since(self, account: str, provider: str, since: float) -> int:
        """Failed polls of the account at or after `since` (since start, if that is later);
        at most RECENT_POLL_ERRORS, the times kept."""
        times = self._poll_error_times.get((account, provider))
        if times is None:
            return 0
        while times and times[0] < since:  # older ones are never asked for again
            times.popleft()
        return len(times)

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

    def record_queues(
        self, account: str, provider: str, queues: tuple[Queue, ...] | None, *, at: float
    ) -> None:
        """A queue read: the queues it found, or None when it failed (the last ones are kept)."""
        before = self._queues.get((account, provider))
        if queues is None:
            queues = before.queues if before is not None else ()
            self._queues[(account, provider)] = QueueStatus(False, at, queues)
        else:
            self._queues[(account, provider)] = QueueStatus(True, at, queues)

    def queue_status(self, account: str, provider: str) -> QueueStatus | None:
        return self._queues.get((account, provider))

    def forget_queues(self, account: str) -> None:
        """The account reads no queues any more (`queue_interval: 0s`): drop what it read."""
        _drop_account(self._queues, account)

    def on_exchange(self, account: str, provider: str, status: str, seconds: float) -> None:
        """Count one request to a cloud, polls and discovery alike: `status` is the HTTP status
        code as text or an `Exchange`; a request never sent (`Exchange.NONE`) is not counted."""
        if status == Exchange.NONE:
            return
        key = (account, provider, status)
        self._api_requests[key] = self._api_requests.get(key, 0) + 1
        histogram = self._api_durations.get((account, provider))
        if histogram is None:
            histogram = self._api_durations[(account, provider)] = Histogram()
        histogram.observe(seconds)

    def record_hint(
        self, account: str, provider: str, source: str, outcome: str, count: int = 1
    ) -> None:
        """Count poll-now hints: `source` api or callback; `outcome` scheduled, unknown_job,
        rate_limited or rejected."""
        key = (account, provider, source, outcome)
        self._poll_hints[key] = self._poll_hints.get(key, 0) + count

    def view(self) -> StoreView:
        return StoreView(
            jobs=tuple(self._jobs.values()),
            api_requests=dict(self._api_requests),
            api_durations={key: h.copy() for key, h in self._api_durations.items()},
            parse_errors=dict(self._parse_errors),
            poll_errors=dict(self._poll_errors),
            job_durations={key: h.copy() for key, h in self._job_durations.items()},
            detection_delays={key: h.copy() for key, h in self._detection_delays.items()},
            discovery=dict(self._discovery),
            queues=dict(self._queues),
            failures=dict(self._failures),
            forgotten={
                (account, provider): self._forgotten.get((account, provider), 0)
                for account, provider in self._accounts.items()
            },
            reload_ok=self._reload_ok,
            reload_success_at=self._reload_success_at,
            poll_hints=dict(self._poll_hints),
        )


def _drop_account(table: dict[Any, Any], account: str) -> None:
    """Delete every entry of a table keyed by (account, ...)."""
    for bucket in [bucket for bucket in table if bucket[0] == account]:
        del table[bucket]
