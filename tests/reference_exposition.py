"""The per-job families one sample at a time through prometheus-client: the reference the fast
renderer (exporter/exposition.py) is tested against. Driven by the same spec, so the two can only
differ in how they render, which is what the tests compare."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.collector import SummaryCollector
from exporter.job_metrics import JOB_METRICS, job_labels
from exporter.metric_selection import ALL, MetricSelection
from exporter.store import JobState, StoreView


def job_families(
    jobs: Iterable[JobState], now: float, selection: MetricSelection = ALL
) -> Iterator[Metric]:
    """The per-job families `selection` keeps, in exposition order."""
    jobs = list(jobs)
    for spec in JOB_METRICS:
        if spec.name in selection.excluded:
            continue
        family = Metric(spec.name, spec.help, spec.type)
        for job in jobs:
            labels = dict(job_labels(job))
            for own, value in spec.samples_of(job, now, current_only=selection.current_states_only):
                family.add_sample(spec.sample_name, {**labels, **dict(own)}, value)
        yield family


class JobFamilies(Collector):
    """Fixed jobs' per-job families, for a registry of their own."""

    def __init__(
        self, jobs: Iterable[JobState], now: float, selection: MetricSelection = ALL
    ) -> None:
        self._jobs, self._now, self._selection = list(jobs), now, selection

    def collect(self) -> Iterator[Metric]:
        yield from job_families(self._jobs, self._now, self._selection)


class ReferenceCollector(Collector):
    """The whole exposition through prometheus-client, per-job series first."""

    def __init__(self, view: Callable[[], StoreView], wall: Callable[[], float]) -> None:
        self._view, self._wall = view, wall
        self._summary = SummaryCollector(view, wall)

    def collect(self) -> Iterator[Metric]:
        yield from job_families(self._view().jobs, self._wall())
        yield from self._summary.collect()
