"""The per-job series of /metrics, rendered and compressed when they change, not per scrape.

At 10,000 jobs the per-job families hold ~400,000 samples (~50 MB of text): prometheus-client
renders that in ~5 s, and even gzip level 1 of it takes ~120 ms. So jobs are hashed into groups
of ~64, and each group keeps, per family, its text already deflated (`gzip_segments.Piece`). A
scrape re-renders a group's family only when one of its jobs changed in that family, renders
the two families that move on their own (ages, poll times) for every job, and joins the pieces
into one gzip body; a client without gzip gets it inflated.

The text means the same as prometheus-client's for the same jobs (`collector.job_families`;
the tests compare the two sample by sample, in both formats): same families, HELP and TYPE
(taken from prometheus-client itself), labels, values. Numbers are written with repr(), which
both the text format and OpenMetrics accept. Rendering is pure (no I/O, no event loop), so the
app runs it in a worker thread; one scrape at a time (the caller's lock).
"""

from __future__ import annotations

import bisect
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.clouds import DOCUMENTED_STATES
from exporter.collector import JOB_FAMILIES, PHASES
from exporter.gzip_segments import EMPTY, Piece, assemble, compress, join
from exporter.model import JobSnapshot, Phase
from exporter.store import JobKey, JobState

(
    INFO,
    STATE,
    PHASE,
    CREATED,
    UPDATED,
    STARTED,
    FINISHED,
    AGE,
    PROGRESS,
    FAILURES,
    FAILURE_INFO,
    ACTUAL,
    STATUS,
    EXPECTED_MIN,
    EXPECTED_MAX,
    POLL_OK,
    POLL_AT,
) = range(len(JOB_FAMILIES))
# Rendered for every job on every scrape: it changes without the job changing.
MOVING = frozenset({AGE})
STABLE = tuple(index for index in range(len(JOB_FAMILIES)) if index not in MOVING)
ALL_STABLE = sum(1 << index for index in STABLE)
_SNAPSHOT_BITS = ALL_STABLE & ~(1 << FAILURES | 1 << POLL_OK | 1 << POLL_AT)
_ASSESSMENT_BITS = 1 << ACTUAL | 1 << STATUS | 1 << EXPECTED_MIN | 1 << EXPECTED_MAX
# Families whose lines carry a label of their own, placed among the job's in sorted order.
_LABELLED = 1 << INFO | 1 << STATE | 1 << PHASE | 1 << FAILURE_INFO | _ASSESSMENT_BITS
JOBS_PER_GROUP = 64
MAX_GROUPS = 4096

TEXT = "text"
OPENMETRICS = "openmetrics"


def escape(value: str) -> str:
    """A label value as the exposition formats quote it (as prometheus-client does)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


# prometheus-client's own number format: 1.7e+09, +Inf, NaN.
number = cast(Callable[[float], str], floatToGoString)


def _job_labels(
    key: JobKey, provider: str, labels: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Static labels, then ours (ours win, as in collector.job_families), sorted by name."""
    merged = dict(labels)
    merged.update(account=key.account, provider=provider, job_id=key.job_id)
    return sorted(merged.items())


def _label_text(pairs: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs)


# Stand-ins for a job's labels around a per-line label (state="..."), in templates that
# str.replace fills in: labels are sorted by name on every line, as prometheus-client does.
_HEAD, _TAIL = "\x00", "\x01"


def _stateset(name: str, label: str, values: Sequence[str], current: str) -> str:
    """A whole StateSet as one template: two C-level replaces instead of one format per line."""
    lines = [
        f'{name}{{{_HEAD}{label}="{escape(value)}"{_TAIL}}} {"01"[value == current]}.0\n'
        for value in values
    ]
    if current not in values:
        lines.append(f'{name}{{{_HEAD}{label}="{escape(current)}"{_TAIL}}} 1.0\n')
    return "".join(lines)


_STATE_NAMES = {provider: tuple(states) for provider, states in DOCUMENTED_STATES.items()}
_STATESETS: dict[tuple[str, str], str] = {
    (provider, state): _stateset("cloudjob_job_state", "state", states, state)
    for provider, states in _STATE_NAMES.items()
    for state in states
}
_PHASESETS = {phase: _stateset("cloudjob_job_phase", "phase", PHASES, phase) for phase in PHASES}


@dataclass(slots=True, eq=False)
class _Entry:
    """What the cached text of one job was rendered from (references, not copies)."""

    key: JobKey
    provider: str
    labels: tuple[tuple[str, str], ...]
    snapshot: JobSnapshot | None
    failures: int
    ok: bool | None
    polled_at: float | None
    text: str  # the job's labels, sorted, as on lines without a label of their own
    group: _Group
    seen: int = 0

    @classmethod
    def of(cls, job: JobState, group: _Group) -> _Entry:
        return cls(
            job.key,
            job.provider,
            job.labels,
            job.snapshot,
            job.failures,
            job.last_poll_success,
            job.last_poll_at,
            _label_text(_job_labels(job.key, job.provider, job.labels)),
            group,
        )

    def pairs(self) -> list[tuple[str, str]]:
        return _job_labels(self.key, self.provider, self.labels)

    def update(self, job: JobState) -> int:
        """Take the job's current values; which stable families' text changed (bits)."""
        if job.labels != self.labels or job.provider != self.provider:
            self.labels, self.provider = job.labels, job.provider
            self.text = _label_text(_job_labels(job.key, job.provider, job.labels))
            changed = ALL_STABLE
        else:
            self.labels = job.labels  # equal; the same object makes the next check quicker
            changed = 0
        if job.snapshot is not self.snapshot:
            changed |= _snapshot_changes(self.snapshot, job.snapshot)
            self.snapshot = job.snapshot
        if job.failures != self.failures:
            self.failures = job.failures
            changed |= 1 << FAILURES
        if job.last_poll_success is not self.ok:
            self.ok = job.last_poll_success
            changed |= 1 << POLL_OK
        if job.last_poll_at != self.polled_at:
            self.polled_at = job.last_poll_at
            changed |= 1 << POLL_AT
        return changed


def _around(pairs: list[tuple[str, str]], label: str) -> tuple[str, str]:
    """A job's labels before and after `label` in sorted order, with their commas."""
    cut = bisect.bisect_left(pairs, (label, ""))
    head, tail = _label_text(pairs[:cut]), _label_text(pairs[cut:])
    return (head + "," if head else ""), ("," + tail if tail else "")


def _snapshot_changes(old: JobSnapshot | None, new: JobSnapshot | None) -> int:
    if old is None or new is None:
        return _SNAPSHOT_BITS
    changed = 0
    if old.job_type != new.job_type or old.queue_id != new.queue_id:
        changed |= 1 << INFO
    if old.state != new.state:
        changed |= 1 << STATE
    if old.phase != new.phase or old.failure_code != new.failure_code:
        changed |= 1 << PHASE | 1 << FAILURE_INFO
    for bit, before, after in (
        (CREATED, old.created_at, new.created_at),
        (UPDATED, old.updated_at, new.updated_at),
        (STARTED, old.started_at, new.started_at),
        (FINISHED, old.finished_at, new.finished_at),
        (PROGRESS, old.progress, new.progress),
    ):
        if before != after:
            changed |= 1 << bit
    if old.assessments != new.assessments:
        changed |= _ASSESSMENT_BITS
    return changed


Renderer = Callable[[_Entry, list[tuple[str, str]]], str]


def _timestamp(name: str, value: Callable[[JobSnapshot], float | None]) -> Renderer:
    def render(entry: _Entry, pairs: list[tuple[str, str]]) -> str:
        snapshot = entry.snapshot
        if snapshot is None:
            return ""
        seconds = value(snapshot)
        return "" if seconds is None else f"{name}{{{entry.text}}} {number(seconds)}\n"

    return render


def _info(entry: _Entry, pairs: list[tuple[str, str]]) -> str:
    snapshot = entry.snapshot
    if snapshot is None:
        return ""
    labels = [*pairs, ("job_type", snapshot.job_type)]
    if snapshot.queue_id is not None:
        labels.append(("queue_id", snapshot.queue_id))
    return f"cloudjob_job_info{{{_label_text(sorted(labels))}}} 1.0\n"


def _fill(template: str, pairs: list[tuple[str, str]], label: str) -> str:
    head, tail = _around(pairs, label)
    return template.replace(_HEAD, head).replace(_TAIL, tail)


def _state(entry: _Entry, pairs: list[tuple[str, str]]) -> str:
    snapshot = entry.snapshot
    if snapshot is None:
        return ""
    template = _STATESETS.get((entry.provider, snapshot.state))
    if template is None:  # a state the documents do not list: not cached, clouds choose them
        states = _STATE_NAMES.get(entry.provider, ())
        template = _stateset("cloudjob_job_state", "state", states, snapshot.state)
    return _fill(template, pairs, "state")


def _phase(entry: _Entry, pairs: list[tuple[str, str]]) -> str:
    snapshot = entry.snapshot
    return "" if snapshot is None else _fill(_PHASESETS[snapshot.phase.value], pairs, "phase")


def _failures(entry: _Entry, pairs: list[tuple[str, str]]) -> str:
    return f"cloudjob_job_failures_total{{{entry.text}}} {number(entry.failures)}\n"


def _failure_info(entry: _Entry, pairs: list[tuple[str, str]]) -> str:
    snapshot = entry.snapshot
    if snapshot is None or snapshot.phase is not Phase.FAILED:
        return ""
    head, tail = _around(pairs, "code")
    code = escape(snapshot.failure_code or "")
    return f'cloudjob_job_failure_info{{{head}code="{code}"{tail}}} 1.0\n'


def _assessment(name: str, attribute: str) -> Renderer:
    def render(entry: _Entry, pairs: list[tuple[str, str]]) -> str:
        snapshot = entry.snapshot
        if snapshot is None or not snapshot.assessments:
            return ""
        head, tail = _around(pairs, "metric")
        lines = []
        for item in snapshot.assessments:
            value = getattr(item, attribute)
            if value is not None:
                metric = escape(item.metric)
                lines.append(f'{name}{{{head}metric="{metric}"{tail}}} {number(value)}\n')
        return "".join(lines)

    return render


def _poll_ok(entry: _Entry, pairs: list[tuple[str, str]]) -> str:
    if entry.ok is None:
        return ""
    return f"cloudjob_job_last_poll_success{{{entry.text}}} {'1.0' if entry.ok else '0.0'}\n"


def _poll_at(entry: _Entry, pairs: list[tuple[str, str]]) -> str:
    if entry.polled_at is None:
        return ""
    return f"cloudjob_job_last_poll_timestamp_seconds{{{entry.text}}} {number(entry.polled_at)}\n"


_RENDERERS: dict[int, Renderer] = {
    INFO: _info,
    STATE: _state,
    PHASE: _phase,
    CREATED: _timestamp("cloudjob_job_created_timestamp_seconds", lambda s: s.created_at),
    UPDATED: _timestamp("cloudjob_job_updated_timestamp_seconds", lambda s: s.updated_at),
    STARTED: _timestamp("cloudjob_job_started_timestamp_seconds", lambda s: s.started_at),
    FINISHED: _timestamp("cloudjob_job_finished_timestamp_seconds", lambda s: s.finished_at),
    PROGRESS: _timestamp("cloudjob_job_progress_ratio", lambda s: s.progress),
    FAILURES: _failures,
    FAILURE_INFO: _failure_info,
    ACTUAL: _assessment("cloudjob_job_assessment_actual", "actual_value"),
    STATUS: _assessment("cloudjob_job_assessment_status", "status"),
    EXPECTED_MIN: _assessment("cloudjob_job_assessment_expected_min", "expected_min"),
    EXPECTED_MAX: _assessment("cloudjob_job_assessment_expected_max", "expected_max"),
    POLL_OK: _poll_ok,
    POLL_AT: _poll_at,
}


@dataclass(slots=True, eq=False)
class _Group:
    members: dict[JobKey, _Entry] = field(default_factory=dict)
    pieces: list[Piece] = field(default_factory=lambda: [EMPTY] * len(JOB_FAMILIES))
    dirty: int = ALL_STABLE

    def refresh(self) -> int:
        """Re-render and deflate the families marked dirty; which ones it did (bits)."""
        dirty = [index for index in STABLE if self.dirty >> index & 1]
        texts: list[list[str]] = [[] for _ in dirty]
        renderers = [_RENDERERS[index] for index in dirty]
        labelled = self.dirty & _LABELLED
        pairs: list[tuple[str, str]] = []
        for entry in self.members.values():
            if labelled:
                pairs = entry.pairs()
            for text, render in zip(texts, renderers, strict=True):
                text.append(render(entry, pairs))
        for index, text in zip(dirty, texts, strict=True):
            self.pieces[index] = compress("".join(text).encode())
        done, self.dirty = self.dirty, 0
        return done


class _Family(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


def _headers(openmetrics: bool) -> tuple[Piece, ...]:
    """Each family's HELP and TYPE lines, written by prometheus-client for an empty family."""
    pieces = []
    for name, help_text, kind in JOB_FAMILIES:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Family(Metric(name, help_text, kind)))
        text = (
            generate_openmetrics(registry)  # type: ignore[no-untyped-call]
            if openmetrics
            else generate_latest(registry)
        )
        pieces.append(compress(text.removesuffix(b"# EOF\n")))
    return tuple(pieces)


@dataclass(frozen=True, slots=True)
class RenderStats:
    """What one render did, for the exporter's own metrics and the benchmark."""

    jobs: int
    groups: int
    pieces_rendered: int


class JobExposition:
    """Per-job families of every tracked job, as gzip bytes; keeps its cache between calls."""

    def __init__(self) -> None:
        self._groups: list[_Group] = [_Group()]
        self._entries: dict[JobKey, _Entry] = {}
        # Per family, its groups' pieces joined, kept until one of them changes.
        self._joined: list[Piece | None] = [None] * len(JOB_FAMILIES)
        self._generation = 0
        self._headers = {TEXT: _headers(False), OPENMETRICS: _headers(True)}
        self.last = RenderStats(0, 1, 0)
        self._mutex = threading.Lock()

    def _regroup(self, jobs: int) -> None:
        """Keep ~64 jobs per group as the job count grows or shrinks by 2x or more."""
        count = len(self._groups)
        if count * JOBS_PER_GROUP // 2 <= jobs <= count * JOBS_PER_GROUP * 2 or (
            count == 1 and jobs <= JOBS_PER_GROUP * 2
        ):
            return
        wanted = 1
        while wanted * JOBS_PER_GROUP < jobs and wanted < MAX_GROUPS:
            wanted *= 2
        if wanted != count:
            self._reset(wanted)

    def render(self, jobs: Sequence[JobState], now: float, tail: bytes, fmt: str = TEXT) -> bytes:
        """gzip of the per-job families followed by `tail` (the other families, already in
        `fmt`, # EOF included for OpenMetrics)."""
        # The app's asyncio lock queues scrapes, but a scrape cancelled while its thread renders
        # releases that lock early: this one keeps two threads out of the cache at once.
        with self._mutex:
            try:
                return self._render(jobs, now, tail, fmt)
            except BaseException:
                # A render cut short may have updated entries but not their text: start
                # afresh rather than ever serve text that no longer matches the jobs.
                self._reset(1)
                raise

    def _reset(self, groups: int) -> None:
        self._groups = [_Group() for _ in range(groups)]
        self._entries = {}
        self._joined = [None] * len(JOB_FAMILIES)

    def _render(self, jobs: Sequence[JobState], now: float, tail: bytes, fmt: str) -> bytes:
        self._regroup(len(jobs))
        self._generation += 1
        generation = self._generation
        groups, entries = self._groups, self._entries
        mask = len(groups) - 1
        ages: list[str] = []
        age_name = "cloudjob_job_age_seconds{"
        for job in jobs:
            entry = entries.get(job.key)
            if entry is None:
                group = groups[hash(job.key) & mask]
                entry = group.members[job.key] = entries[job.key] = _Entry.of(job, group)
                group.dirty = ALL_STABLE
            elif (
                job.snapshot is not entry.snapshot
                or job.last_poll_at != entry.polled_at
                or job.last_poll_success is not entry.ok
                or job.failures != entry.failures
                or job.labels is not entry.labels
            ):
                entry.group.dirty |= entry.update(job)
            entry.seen = generation
            snapshot = job.snapshot
            if snapshot is not None and snapshot.created_at is not None:
                age = now - snapshot.created_at
                # repr() is what floatToGoString returns for these, at a third of the cost.
                shown = repr(age) if 0.0 <= age < 1e6 else number(max(0.0, age))
                ages.append(f"{age_name}{entry.text}}} {shown}\n")
        if len(entries) > len(jobs):  # some jobs are gone: drop them and their groups' text
            for key in [key for key, entry in entries.items() if entry.seen != generation]:
                group = entries.pop(key).group
                del group.members[key]
                group.dirty = ALL_STABLE
        changed = 0
        rendered = 0
        for group in groups:
            if group.dirty:
                done = group.refresh()
                changed |= done
                rendered += done.bit_count()
        self.last = RenderStats(len(jobs), len(groups), rendered)
        headers = self._headers[fmt]
        pieces: list[Piece] = []
        for index in range(len(JOB_FAMILIES)):
            pieces.append(headers[index])
            if index == AGE:
                pieces.append(compress("".join(ages).encode()))
                continue
            joined = self._joined[index]
            if joined is None or changed >> index & 1:
                joined = self._joined[index] = join([group.pieces[index] for group in groups])
            pieces.append(joined)
        pieces.append(compress(tail))
        return assemble(pieces)


def inflate(body: bytes) -> bytes:
    """The plain text of a body from `JobExposition.render`, whole."""
    return zlib.decompress(body, wbits=16 + zlib.MAX_WBITS)


def inflate_pieces(body: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    """The plain text of a body from `JobExposition.render` in pieces of at most `size` bytes,
    for clients without gzip: the whole text never has to be in memory at once."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    view = memoryview(body)
    for start in range(0, len(view), 64 * 1024):
        pending: bytes | memoryview = view[start : start + 64 * 1024]
        while pending:
            piece = inflater.decompress(pending, size)
            pending = inflater.unconsumed_tail
            if piece:
                yield piece
    if rest := inflater.flush():
        yield rest
    if not inflater.eof:
        raise ValueError("truncated gzip body")
