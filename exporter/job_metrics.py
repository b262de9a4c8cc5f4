"""One entry per per-job metric family: everything /metrics needs to know about it.

The fast renderer (exposition.py), the reference renderer the tests compare it with, the README's
metric table check and `metrics.exclude` all read `JOB_METRICS`; adding a per-job metric is
adding one entry. Standard library and the model only: no Prometheus client, no HTTP.

Values are as of the job's last poll (see `cloudjob_job_last_poll_timestamp_seconds`); no
sample carries a timestamp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

from exporter.clouds import DOCUMENTED_STATES
from exporter.model import JobSnapshot, Phase
from exporter.store import JobState

PHASES = tuple(phase.value for phase in Phase)
_POLLED = " As of the job's last successful poll; the exporter polls in the background."

Kind = Literal["gauge", "counter", "info"]
# A sample's labels of its own (beside the job's), and its value.
Sample = tuple[tuple[tuple[str, str], ...], float]


@dataclass(frozen=True, slots=True)
class StateSet:
    """One series per possible value of the family's label: 1 for the current one, 0 for the
    others; a current value outside the list gets a series of its own."""

    values: Callable[[str], Sequence[str]]  # by provider
    current: Callable[[JobSnapshot], str]


@dataclass(frozen=True, slots=True)
class JobMetric:
    """A per-job family. Exactly one of `value`, `samples`, `stateset` says what it holds.

    `reads` names what changes its samples, so the renderer re-renders it only then: JobState
    attributes, and JobSnapshot attributes as "snapshot.<name>". A change of the job's labels
    or provider changes every family. `moving`: it changes with the clock alone (rendered on
    every scrape).
    """

    name: str  # the family's name, as prometheus-client keeps it (no _total, no _info)
    help: str
    type: Kind
    reads: tuple[str, ...]
    labels: tuple[str, ...] = ()  # labels of its own, beside the job's
    # One sample with the job's labels alone, or none (None).
    value: Callable[[JobState, float], float | None] | None = None
    samples: Callable[[JobState], Iterator[Sample]] | None = None
    stateset: StateSet | None = None
    moving: bool = False

    def __post_init__(self) -> None:
        kinds = [self.value is not None, self.samples is not None, self.stateset is not None]
        if kinds.count(True) != 1:
            raise ValueError(f"{self.name}: set exactly one of value, samples, stateset")
        if bool(self.labels) == (self.value is not None):
            raise ValueError(f"{self.name}: labels of its own go with samples or stateset")
        if self.moving and self.value is None:
            raise ValueError(f"{self.name}: a moving family is one value per job")
        if self.stateset is not None and len(self.labels) != 1:
            raise ValueError(f"{self.name}: a StateSet has one label")

    @property
    def sample_name(self) -> str:
        """The name its samples carry, and the one the docs use."""
        return self.name + {"counter": "_total", "info": "_info"}.get(self.type, "")

    def samples_of(
        self, job: JobState, now: float, *, current_only: bool = False
    ) -> Iterator[Sample]:
        """Every sample of the job, in order (the reference renderer's path; the fast one
        renders the same from templates)."""
        if self.value is not None:
            value = self.value(job, now)
            if value is not None:
                yield (), float(value)
        elif self.samples is not None:
            yield from self.samples(job)
        elif self.stateset is not None and job.snapshot is not None:
            label = self.labels[0]
            current = self.stateset.current(job.snapshot)
            values = self.stateset.values(job.provider)
            for state in (current,) if current_only else values:
                yield ((label, state),), float(state == current)
            if current not in values and not current_only:
                yield ((label, current),), 1.0


def _snapshot_gauge(name: str, help: str, attribute: str) -> JobMetric:
    """A gauge holding one JobSnapshot attribute: no sample before the first good poll or
    while the cloud does not report it."""

    read: Callable[[JobSnapshot], float | None] = attrgetter(attribute)

    def value(job: JobState, now: float) -> float | None:
        snapshot = job.snapshot
        return None if snapshot is None else read(snapshot)

    return JobMetric(name, help, "gauge", reads=(f"snapshot.{attribute}",), value=value)


def _age(job: JobState, now: float) -> float | None:
    snapshot = job.snapshot
    if snapshot is None or snapshot.created_at is None:
        return None
    age = now - snapshot.created_at
    return age if age > 0.0 else 0.0  # not max(): this runs for every job on every scrape


def _info(job: JobState) -> Iterator[Sample]:
    snapshot = job.snapshot
    if snapshot is None:
        return
    labels = [("job_type", snapshot.job_type)]
    if snapshot.queue_id is not None:
        labels.append(("queue_id", snapshot.queue_id))
    yield tuple(labels), 1.0


def _failure_info(job: JobState) -> Iterator[Sample]:
    snapshot = job.snapshot
    if snapshot is not None and snapshot.phase is Phase.FAILED:
        yield (("code", snapshot.failure_code or ""),), 1.0


def _assessment_gauge(name: str, help: str, attribute: str) -> JobMetric:
    """A gauge holding one attribute of every assessment, one series per assessment metric;
    an assessment without that attribute has no series."""

    def samples(job: JobState) -> Iterator[Sample]:
        if job.snapshot is None:
            return
        for item in job.snapshot.assessments:
            value = getattr(item, attribute)
            if value is not None:
                yield (("metric", item.metric),), float(value)

    return JobMetric(
        name, help, "gauge", reads=("snapshot.assessments",), labels=("metric",), samples=samples
    )


def _documented_states(provider: str) -> Sequence[str]:
    return tuple(DOCUMENTED_STATES.get(provider, ()))


def _job_attribute(name: str, help: str, kind: Kind, attribute: str) -> JobMetric:
    """A family holding one JobState attribute as it is."""
    read: Callable[[JobState], float | None] = attrgetter(attribute)

    def value(job: JobState, now: float) -> float | None:
        return read(job)

    return JobMetric(name, help, kind, reads=(attribute,), value=value)


def _poll_success(job: JobState, now: float) -> float | None:
    return None if job.last_poll_success is None else float(job.last_poll_success)


JOB_METRICS: tuple[JobMetric, ...] = (
    JobMetric(
        "cloudjob_job",
        "Static facts about a tracked job; always 1." + _POLLED,
        "info",
        reads=("snapshot.job_type", "snapshot.queue_id"),
        labels=("job_type", "queue_id"),
        samples=_info,
    ),
    JobMetric(
        "cloudjob_job_state",
        "Provider-specific job state: 1 for the current state, 0 for every other documented "
        "state (a StateSet)." + _POLLED,
        "gauge",
        reads=("snapshot.state",),
        labels=("state",),
        stateset=StateSet(_documented_states, lambda snapshot: snapshot.state),
    ),
    JobMetric(
        "cloudjob_job_phase",
        "Normalized job phase (pending, running, succeeded, failed, cancelled, unknown): 1 "
        "for the current phase, 0 for the others." + _POLLED,
        "gauge",
        reads=("snapshot.phase",),
        labels=("phase",),
        stateset=StateSet(lambda provider: PHASES, lambda snapshot: snapshot.phase.value),
    ),
    _snapshot_gauge(
        "cloudjob_job_created_timestamp_seconds",
        "When the cloud created the job, Unix time.",
        "created_at",
    ),
    _snapshot_gauge(
        "cloudjob_job_updated_timestamp_seconds",
        "When the job's state last changed according to the cloud, Unix time." + _POLLED,
        "updated_at",
    ),
    _snapshot_gauge(
        "cloudjob_job_started_timestamp_seconds",
        "When the job started running according to the cloud, Unix time (where reported).",
        "started_at",
    ),
    _snapshot_gauge(
        "cloudjob_job_finished_timestamp_seconds",
        "When the job finished according to the cloud, Unix time (terminal jobs only).",
        "finished_at",
    ),
    JobMetric(
        "cloudjob_job_age_seconds",
        "Seconds since the job was created, computed at scrape.",
        "gauge",
        reads=("snapshot.created_at",),
        value=_age,
        moving=True,
    ),
    _snapshot_gauge(
        "cloudjob_job_progress_ratio",
        "Progress of a running job from 0 to 1, where the cloud reports it." + _POLLED,
        "progress",
    ),
    _job_attribute(
        "cloudjob_job_failures",
        "Entries into the failed phase the exporter has observed (a job first seen failed "
        "counts once; leaving and re-entering counts again).",
        "counter",
        "failures",
    ),
    JobMetric(
        "cloudjob_job_failure",
        "The cloud's failure code while the job is failed; the reason text is in /api/v1/jobs.",
        "info",
        reads=("snapshot.phase", "snapshot.failure_code"),
        labels=("code",),
        samples=_failure_info,
    ),
    _assessment_gauge(
        "cloudjob_job_assessment_actual",
        "Measured value of an assessment metric (unit as the cloud reports it)." + _POLLED,
        "actual_value",
    ),
    _assessment_gauge(
        "cloudjob_job_assessment_status",
        "Whether an assessment metric is in its expected range: -1 below, 0 within, 1 above."
        + _POLLED,
        "status",
    ),
    _assessment_gauge(
        "cloudjob_job_assessment_expected_min",
        "Lower bound of an assessment metric's range.",
        "expected_min",
    ),
    _assessment_gauge(
        "cloudjob_job_assessment_expected_max",
        "Upper bound of an assessment metric's range.",
        "expected_max",
    ),
    JobMetric(
        "cloudjob_job_last_poll_success",
        "1 if the job's last poll succeeded, 0 if it failed (the last good values are kept).",
        "gauge",
        reads=("last_poll_success",),
        value=_poll_success,
    ),
    _job_attribute(
        "cloudjob_job_last_poll_timestamp_seconds",
        "When the job was last polled, successfully or not, Unix time: the freshness of its "
        "series.",
        "gauge",
        "last_poll_at",
    ),
)


def job_labels(job: JobState) -> list[tuple[str, str]]:
    """The labels every per-job sample carries: static labels, then ours (ours win), sorted."""
    merged = dict(job.labels)
    merged.update(account=job.key.account, provider=job.provider, job_id=job.key.job_id)
    return sorted(merged.items())
