"""The per-job series of /metrics, rendered and compressed when they change, not per scrape.

At 10,000 jobs the per-job families hold ~400,000 samples (~50 MB of text): prometheus-client
renders that in ~5 s, and even gzip level 1 of it takes ~120 ms. So jobs are hashed into groups
of ~64, and each group keeps, per family, its text already deflated (`gzip_segments.Piece`). A
scrape re-renders a group's family only when one of its jobs changed in what the family reads
(its entry in `job_metrics.JOB_METRICS` says what), renders the families that move with the
clock (ages) for every job, and joins the pieces into one gzip body; a client without gzip gets
it inflated.

The text means the same as prometheus-client's for the same jobs (tests/reference_exposition.py;
the tests compare the two sample by sample, in both formats): same families, HELP and TYPE
(taken from prometheus-client itself), labels, values, in prometheus-client's number format.
Rendering is pure (no I/O, no event loop), so the app runs it in a worker thread; one scrape at
a time (the caller's lock).
"""

from __future__ import annotations

import bisect
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import cast

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.gzip_segments import EMPTY, Piece, assemble, compress, join
from exporter.job_metrics import JOB_METRICS, JobMetric, job_labels
from exporter.metric_selection import ALL, MetricSelection
from exporter.model import JobSnapshot
from exporter.store import JobKey, JobState

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


def _label_text(pairs: Sequence[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs)


# -- Change detection, derived from what each family declares it reads --------------------------
# Families as bits of an int, by their place in JOB_METRICS.


def _bits(families: Sequence[int]) -> int:
    return sum(1 << index for index in families)


_MOVING = tuple(index for index, metric in enumerate(JOB_METRICS) if metric.moving)
STABLE = tuple(index for index, metric in enumerate(JOB_METRICS) if not metric.moving)
ALL_STABLE = _bits(STABLE)


def _readers(prefix: str) -> tuple[tuple[Callable[[object], object], int], ...]:
    """Per attribute read under `prefix`: a getter for it and the stable families reading it."""
    families: dict[str, list[int]] = {}
    for index in STABLE:
        for read in JOB_METRICS[index].reads:
            if read.startswith(prefix) and "." not in read.removeprefix(prefix):
                families.setdefault(read.removeprefix(prefix), []).append(index)
    return tuple((attrgetter(name), _bits(indices)) for name, indices in families.items())


_JOB_READERS = _readers("")
_SNAPSHOT_READERS = _readers("snapshot.")
_READS_SNAPSHOT = _bits(
    [i for i in STABLE if any(read.startswith("snapshot.") for read in JOB_METRICS[i].reads)]
)


def _snapshot_changes(old: JobSnapshot | None, new: JobSnapshot | None) -> int:
    if old is None or new is None:
        return _READS_SNAPSHOT
    changed = 0
    for read, families in _SNAPSHOT_READERS:
        if read(old) != read(new):
            changed |= families
    return changed


@dataclass(slots=True, eq=False)
class _Entry:
    """The job as its cached text was last rendered from (a reference, not a copy)."""

    job: JobState
    text: str  # the job's labels, sorted, as on lines without a label of their own
    group: _Group
    seen: int = 0

    @classmethod
    def of(cls, job: JobState, group: _Group) -> _Entry:
        return cls(job, _label_text(job_labels(job)), group)

    def update(self, job: JobState) -> int:
        """Take the job's current state; which stable families' text changed (bits)."""
        old, self.job = self.job, job
        if job.labels != old.labels or job.provider != old.provider:
            self.text = _label_text(job_labels(job))
            return ALL_STABLE
        changed = 0
        if job.snapshot is not old.snapshot:
            changed |= _snapshot_changes(old.snapshot, job.snapshot)
        for read, families in _JOB_READERS:
            if read(job) != read(old):
                changed |= families
        return changed


# -- Rendering one family of one job -----------------------------------------------------------

# Stand-ins for a job's labels around a per-line label (state="..."), in templates that
# str.replace fills in: labels are sorted by name on every line, as prometheus-client does.
_HEAD, _TAIL = "\x00", "\x01"


class _Around:
    """A job's labels before and after a label of a family's own, in sorted order, with their
    commas: worked out once per job and label in a render."""

    __slots__ = ("_cuts", "_job", "_pairs")

    def __init__(self, job: JobState) -> None:
        self._job = job
        self._pairs: list[tuple[str, str]] | None = None
        self._cuts: dict[str, tuple[str, str]] = {}

    @property
    def pairs(self) -> list[tuple[str, str]]:
        if self._pairs is None:
            self._pairs = job_labels(self._job)
        return self._pairs

    def __call__(self, label: str) -> tuple[str, str]:
        cut = self._cuts.get(label)
        if cut is None:
            pairs = self.pairs
            at = bisect.bisect_left(pairs, (label, ""))
            head, tail = _label_text(pairs[:at]), _label_text(pairs[at:])
            cut = self._cuts[label] = (head + "," if head else ""), ("," + tail if tail else "")
        return cut


Renderer = Callable[[_Entry, _Around, float], str]


def _value_renderer(metric: JobMetric) -> Renderer:
    name, value = metric.sample_name, metric.value
    assert value is not None  # noqa: S101 - chosen by the caller

    def render(entry: _Entry, around: _Around, now: float) -> str:
        sample = value(entry.job, now)
        return "" if sample is None else f"{name}{{{entry.text}}} {number(sample)}\n"

    return render


def _samples_renderer(metric: JobMetric) -> Renderer:
    name, samples = metric.sample_name, metric.samples
    assert samples is not None  # noqa: S101 - chosen by the caller

    def render(entry: _Entry, around: _Around, now: float) -> str:
        lines = []
        for own, value in samples(entry.job):
            if len(own) == 1:
                ((label, label_value),) = own
                head, tail = around(label)
                labels = f'{head}{label}="{escape(label_value)}"{tail}'
            else:
                labels = _label_text(sorted([*around.pairs, *own]))
            lines.append(f"{name}{{{labels}}} {number(value)}\n")
        return "".join(lines)

    return render


def _stateset_template(
    metric: JobMetric, values: Sequence[str], current: str, current_only: bool
) -> str:
    """A whole StateSet as one template: two C-level replaces instead of one format per line."""
    name, label = metric.sample_name, metric.labels[0]
    if current_only:
        values = ()
    lines = [
        f'{name}{{{_HEAD}{label}="{escape(value)}"{_TAIL}}} {"01"[value == current]}.0\n'
        for value in values
    ]
    if current not in values:
        lines.append(f'{name}{{{_HEAD}{label}="{escape(current)}"{_TAIL}}} 1.0\n')
    return "".join(lines)


def _stateset_renderer(metric: JobMetric, current_only: bool) -> Renderer:
    stateset = metric.stateset
    assert stateset is not None  # noqa: S101 - chosen by the caller
    label = metric.labels[0]
    # By (provider, current value); only documented values, which are few: clouds choose the rest.
    templates: dict[tuple[str, str], str] = {}

    def render(entry: _Entry, around: _Around, now: float) -> str:
        job = entry.job
        if job.snapshot is None:
            return ""
        current = stateset.current(job.snapshot)
        template = templates.get((job.provider, current))
        if template is None:
            values = stateset.values(job.provider)
            template = _stateset_template(metric, values, current, current_only)
            if current in values:
                templates[(job.provider, current)] = template
        head, tail = around(label)
        return template.replace(_HEAD, head).replace(_TAIL, tail)

    return render


def _renderer(metric: JobMetric, selection: MetricSelection) -> Renderer | None:
    """How to render the family under `selection`; None when it is left out."""
    if metric.name in selection.excluded:
        return None
    if metric.stateset is not None:
        return _stateset_renderer(metric, selection.current_states_only)
    if metric.value is not None:
        return _value_renderer(metric)
    return _samples_renderer(metric)


@dataclass(slots=True, eq=False)
class _Group:
    members: dict[JobKey, _Entry] = field(default_factory=dict)
    pieces: list[Piece] = field(default_factory=lambda: [EMPTY] * len(JOB_METRICS))
    dirty: int = ALL_STABLE

    def refresh(self, renderers: Sequence[Renderer | None], now: float) -> int:
        """Re-render and deflate the families marked dirty; which ones it did (bits)."""
        dirty = [index for index in STABLE if self.dirty >> index & 1 and renderers[index]]
        texts: list[list[str]] = [[] for _ in dirty]
        chosen = [cast(Renderer, renderers[index]) for index in dirty]
        for entry in self.members.values():
            around = _Around(entry.job)
            for text, render in zip(texts, chosen, strict=True):
                text.append(render(entry, around, now))
        for index, text in zip(dirty, texts, strict=True):
            self.pieces[index] = compress("".join(text).encode())
        self.dirty = 0
        return _bits(dirty)


class _Family(Collector):
    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self._metric


def _headers(openmetrics: bool) -> tuple[Piece, ...]:
    """Each family's HELP and TYPE lines, written by prometheus-client for an empty family."""
    pieces = []
    for metric in JOB_METRICS:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Family(Metric(metric.name, metric.help, metric.type)))
        text = (
            generate_openmetrics(registry)  # type: ignore[no-untyped-call]
            if openmetrics
            else generate_latest(registry)
        )
        pieces.append(compress(text.removesuffix(b"# EOF\n")))
    return tuple(pieces)


def _moving(metric: JobMetric, jobs: Sequence[JobState], texts: list[str], now: float) -> Piece:
    """A family that moves with the clock, for every job: its text is never cached."""
    name, value = metric.sample_name + "{", metric.value
    assert value is not None  # noqa: S101 - JobMetric allows no other kind to move
    lines = []
    for job, text in zip(jobs, texts, strict=True):
        sample = value(job, now)
        if sample is not None:
            # repr() is what floatToGoString returns for these, at a third of the cost.
            shown = (
                repr(sample)
                if 0.0 <= sample < 1e6 and sample.__class__ is float
                else number(sample)
            )
            lines.append(f"{name}{text}}} {shown}\n")
    return compress("".join(lines).encode())


class JobExposition:
    """Per-job families of every tracked job, as gzip bytes; keeps its cache between calls."""

    def __init__(self) -> None:
        self._groups: list[_Group] = [_Group()]
        self._entries: dict[JobKey, _Entry] = {}
        # Per family, its groups' pieces joined, kept until one of them changes.
        self._joined: list[Piece | None] = [None] * len(JOB_METRICS)
        self._generation = 0
        self._headers = {TEXT: _headers(False), OPENMETRICS: _headers(True)}
        self._selection = ALL
        self._renderers = self._renderers_for(ALL)
        self._mutex = threading.Lock()

    @staticmethod
    def _renderers_for(selection: MetricSelection) -> tuple[Renderer | None, ...]:
        return tuple(_renderer(metric, selection) for metric in JOB_METRICS)

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

    def render(
        self,
        jobs: Sequence[JobState],
        now: float,
        tail: bytes,
        fmt: str = TEXT,
        selection: MetricSelection = ALL,
    ) -> bytes:
        """gzip of the per-job families `selection` keeps, followed by `tail` (the other
        families, already in `fmt`, # EOF included for OpenMetrics)."""
        # The app's asyncio lock queues scrapes, but a scrape cancelled while its thread renders
        # releases that lock early: this one keeps two threads out of the cache at once.
        with self._mutex:
            if selection != self._selection:  # a reload changed it: the cached text is moot
                self._selection, self._renderers = selection, self._renderers_for(selection)
                self._reset(len(self._groups))
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
        self._joined = [None] * len(JOB_METRICS)

    def _render(self, jobs: Sequence[JobState], now: float, tail: bytes, fmt: str) -> bytes:
        self._regroup(len(jobs))
        self._generation += 1
        generation = self._generation
        groups, entries, renderers = self._groups, self._entries, self._renderers
        mask = len(groups) - 1
        texts: list[str] = []  # each job's label text, in the jobs' order
        for job in jobs:
            entry = entries.get(job.key)
            if entry is None:
                group = groups[hash(job.key) & mask]
                entry = group.members[job.key] = entries[job.key] = _Entry.of(job, group)
                group.dirty = ALL_STABLE
            elif job is not entry.job:
                entry.group.dirty |= entry.update(job)
            entry.seen = generation
            texts.append(entry.text)
        if len(entries) > len(jobs):  # some jobs are gone: drop them and their groups' text
            for key in [key for key, entry in entries.items() if entry.seen != generation]:
                group = entries.pop(key).group
                del group.members[key]
                group.dirty = ALL_STABLE
        changed = 0
        for group in groups:
            if group.dirty:
                changed |= group.refresh(renderers, now)
        moved = {
            index: _moving(JOB_METRICS[index], jobs, texts, now)
            for index in _MOVING
            if renderers[index] is not None
        }
        headers = self._headers[fmt]
        pieces: list[Piece] = []
        for index, render in enumerate(renderers):
            if render is None:
                continue
            pieces.append(headers[index])
            if index in moved:
                pieces.append(moved[index])
                continue
            joined = self._joined[index]
            if joined is None or changed >> index & 1:
                joined = self._joined[index] = join([group.pieces[index] for group in groups])
            pieces.append(joined)
        pieces.append(compress(tail))
        return assemble(pieces)


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
