"""Store view -> Prometheus metric families, rebuilt on every scrape.

Nothing here is a long-lived labelled gauge, so a job the store forgot vanishes from the next
scrape by construction. Values are as of the job's last poll (see
`cloudjob_job_last_poll_timestamp_seconds`); no sample carries a timestamp.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import accumulate
from operator import itemgetter

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.budget import PollingStatus
from exporter.model import Phase
from exporter.store import Histogram, StoreView


class SummaryCollector(Collector):
    """Everything but the per-job series, which `exposition.JobExposition` renders faster:
    job counts and the exporter's own health. Small at any job count."""

    def __init__(
        self,
        view: Callable[[], StoreView],
        wall: Callable[[], float],
        *,
        shard: tuple[int, int] = (0, 1),
        tasks: Callable[[], int | None] = lambda: None,
        polling: Callable[[], Mapping[tuple[str, str], PollingStatus]] = dict,
    ) -> None:
        self._view = view
        self._wall = wall
        self._shard = shard
        self._tasks = tasks
        self._polling = polling
        self._started = wall()

    def collect(self) -> Iterator[Metric]:
        yield from self._summary(self._view())

    def _summary(self, view: StoreView) -> Iterator[Metric]:
        yield from summary_families(view)
        yield from exporter_families(view, self._started, self._shard, self._tasks())
        yield from polling_families(self._polling(), view)


def summary_families(view: StoreView) -> Iterator[Metric]:
    # One pass over the jobs: this runs on the event loop on every scrape, at any job count.
    # Plain dicts and Phase members as keys (not Counter and .value): the cheapest count here.
    phase_counts: dict[tuple[str, str, Phase], int] = {}
    by_source: dict[str, int] = {"config": 0, "api": 0, "discovery": 0}
    unknown = Phase.UNKNOWN
    for job in view.jobs:
        snapshot = job.snapshot
        key = (job.key.account, job.provider, snapshot.phase if snapshot is not None else unknown)
        phase_counts[key] = phase_counts.get(key, 0) + 1
        by_source[job.source] = by_source.get(job.source, 0) + 1
    tracked = GaugeMetricFamily(
        "cloudjob_jobs_tracked",
        "Tracked jobs by where they came from: config file, API registration, discovery.",
        labels=("source",),
    )
    for source, count in sorted(by_source.items()):
        tracked.add_metric((source,), count)
    yield tracked
    jobs = GaugeMetricFamily(
        "cloudjob_jobs",
        "Tracked jobs per account, provider and phase (unknown: not yet polled successfully).",
        labels=("account", "provider", "phase"),
    )
    accounts = sorted({(account, provider) for account, provider, _ in phase_counts})
    for account, provider in accounts:
        for phase in Phase:
            jobs.add_metric(
                (account, provider, phase.value), phase_counts.get((account, provider, phase), 0)
            )
    yield jobs


def exporter_families(
    view: StoreView, started: float, shard_of: tuple[int, int], tasks: int | None
) -> Iterator[Metric]:
    yield InfoMetricFamily(
        "cloudjob_exporter_build",
        "The exporter's version; always 1.",
        value={"version": __version__, "python_version": platform.python_version()},
    )
    index, total = shard_of
    yield InfoMetricFamily(
        "cloudjob_exporter_shard",
        "Which share of the jobs this replica polls (--shard of --total-shards); always 1.",
        value={"shard": str(index), "total_shards": str(total)},
    )
    if tasks is not None:
        yield GaugeMetricFamily(
            "cloudjob_exporter_asyncio_tasks",
            "Asyncio tasks alive in the exporter's event loop; a count that keeps rising "
            "while the job count does not is a leak.",
            value=tasks,
        )
    yield GaugeMetricFamily(
        "cloudjob_config_last_reload_successful",
        "1 if the last config reload worked (or none was tried), 0 if the running config "
        "is older than the file because the file is invalid.",
        value=float(view.reload_ok),
    )
    yield GaugeMetricFamily(
        "cloudjob_config_last_reload_success_timestamp_seconds",
        "When the config was last loaded successfully (start-up or reload), Unix time.",
        value=view.reload_success_at or started,
    )

    yield _counter(
        "cloudjob_api_requests",
        "Requests made to cloud APIs, by HTTP status (or timeout, connection, error).",
        ("account", "provider", "status"),
        view.api_requests.items(),
    )

    yield _histogram(
        "cloudjob_api_request_duration_seconds",
        "Latency of requests to cloud APIs, including failed ones.",
        ("account", "provider"),
        view.api_durations.items(),
    )
    yield _histogram(
        "cloudjob_completed_job_duration_seconds",
        "Creation-to-finish time of jobs, observed once per job run when the exporter first "
        "sees it terminal (for job-latency SLOs).",
        ("account", "provider", "job_type", "phase"),
        view.job_durations.items(),
    )

    discovery_ok = GaugeMetricFamily(
        "cloudjob_discovery_last_success",
        "1 if the account's last job discovery run succeeded, 0 if a list call failed (a "
        "run stopped at the page bound still counts as success; see discovery_truncated).",
        labels=("account", "provider"),
    )
    discovery_at = GaugeMetricFamily(
        "cloudjob_discovery_last_run_timestamp_seconds",
        "When the account's job discovery last ran, Unix time.",
        labels=("account", "provider"),
    )
    for account_provider, status in sorted(view.discovery.items()):
        discovery_ok.add_metric(account_provider, float(status.last_success))
        discovery_at.add_metric(account_provider, status.last_run_at)
    yield discovery_ok
    yield discovery_at
    yield _counter(
        "cloudjob_discovered_jobs",
        "Jobs that job discovery added to the tracked set.",
        ("account", "provider"),
        ((key, status.added_total) for key, status in view.discovery.items()),
    )
    yield from _queue_families(view)
    forgotten = GaugeMetricFamily(
        "cloudjob_forgotten_jobs",
        "Forgotten jobs (after terminal_retention, or deleted through the API) whose tombstones "
        "keep any source from bringing them back; each goes once no source has named its job "
        "for the account's discovery lookback (24 h without discovery).",
        labels=("account", "provider"),
    )
    for account_provider, count in sorted(view.forgotten.items()):
        forgotten.add_metric(account_provider, count)
    yield forgotten
    yield _counter(
        "cloudjob_failures",
        "Entries into the failed phase across jobs, by failure code: rates by code outlive "
        "the jobs themselves (per-job counts are cloudjob_job_failures_total).",
        ("account", "provider", "job_type", "code"),
        view.failures.items(),
    )
    yield _counter(
        "cloudjob_parse_errors",
        "Response fields that could not be parsed (per polled response); the field gives no "
        "sample. field=body: the whole response was unusable.",
        ("provider", "field"),
        view.parse_errors.items(),
    )
    yield _counter(
        "cloudjob_poll_errors",
        "Polls that failed after retries, by reason (auth, throttled, upstream, network, "
        "timeout, parse, not_found, error).",
        ("account", "provider", "reason"),
        view.poll_errors.items(),
    )
    yield _hint_family(view)


def _hint_family(view: StoreView) -> CounterMetricFamily:
    return _counter(
        "cloudjob_poll_hints",
        "Poll-now hints by source (api; callback: a Tencent CI job callback) and outcome "
        "(scheduled, unknown_job, rate_limited: refused with 429, rejected: a callback with a "
        "wrong secret or a bad body). One per job a hint names; a rejected callback counts once.",
        ("account", "provider", "source", "outcome"),
        view.poll_hints.items(),
    )


def polling_families(
    polling: Mapping[tuple[str, str], PollingStatus], view: StoreView
) -> Iterator[Metric]:
    """How each account's polling keeps up: its request budget, what it spends, how late its
    polls are and how late it sees changes."""
    labels = ("account", "provider")
    budget = GaugeMetricFamily(
        "cloudjob_api_budget_rps",
        "The requests per second the account may spend (api_budget_rps, lowered for a while "
        "after the cloud throttled a request); no series without a budget.",
        labels=labels,
    )
    spent = GaugeMetricFamily(
        "cloudjob_api_budget_utilization_ratio",
        "Requests per second spent over the last minute divided by the budget.",
        labels=labels,
    )
    overdue = GaugeMetricFamily(
        "cloudjob_poll_overdue_seconds",
        "How long the account's most overdue unfinished job has waited past the interval it "
        "asks for (its own, not the one a budget stretched it to); 0 when all are on time.",
        labels=labels,
    )
    interval = GaugeMetricFamily(
        "cloudjob_poll_interval_seconds",
        "The poll interval the account's unfinished jobs ask for (poll_interval).",
        labels=labels,
    )
    for account_provider, status in sorted(polling.items()):
        if status.budget_rps is not None:
            budget.add_metric(account_provider, status.budget_rps)
            spent.add_metric(account_provider, status.spent_rps / status.budget_rps)
        overdue.add_metric(account_provider, status.overdue_seconds)
        interval.add_metric(account_provider, status.poll_interval)
    yield from (budget, spent, overdue, interval)
    yield _histogram(
        "cloudjob_state_change_detection_delay_seconds",
        "When the exporter saw a job's new state minus when the cloud says it changed (Huawei "
        "lastupdate_time, Tencent StartTime/EndTime), for changes whose time the cloud gives.",
        labels,
        view.detection_delays.items(),
    )


def _queue_families(view: StoreView) -> Iterator[Metric]:
    """The queues each account's jobs are in (refreshed every `queue_interval`), as last read."""
    info = InfoMetricFamily(
        "cloudjob_queue",
        "A queue the account's jobs are in, with its name; always 1.",
        labels=("account", "provider", "queue_id"),
    )
    paused = GaugeMetricFamily(
        "cloudjob_queue_paused",
        "1 if the cloud says the queue is paused (its waiting jobs are not scheduled), else 0.",
        labels=("account", "provider", "queue_id"),
    )
    concurrent = GaugeMetricFamily(
        "cloudjob_queue_max_concurrent",
        "How many of the queue's jobs the cloud runs at once (MaxConcurrent).",
        labels=("account", "provider", "queue_id"),
    )
    ok = GaugeMetricFamily(
        "cloudjob_queue_last_success",
        "1 if the account's last queue read succeeded, 0 if it failed (the queue series then "
        "keep the last values read).",
        labels=("account", "provider"),
    )
    at = GaugeMetricFamily(
        "cloudjob_queue_last_run_timestamp_seconds",
        "When the account's queues were last read, Unix time.",
        labels=("account", "provider"),
    )
    for (account, provider), status in sorted(view.queues.items()):
        ok.add_metric((account, provider), float(status.last_success))
        at.add_metric((account, provider), status.last_run_at)
        for queue in status.queues:
            labels = (account, provider, queue.queue_id)
            info.add_metric(labels, {"name": queue.name})
            paused.add_metric(labels, float(queue.paused))
            if queue.max_concurrent is not None:
                concurrent.add_metric(labels, queue.max_concurrent)
    yield from (info, paused, concurrent, ok, at)


def _counter(
    name: str,
    help_text: str,
    label_names: tuple[str, ...],
    counts: Iterable[tuple[tuple[str, ...], int]],
) -> CounterMetricFamily:
    """A counter family kept as data in the store, in label order (a dict's order is the
    order its series first appeared in)."""
    family = CounterMetricFamily(name, help_text, labels=label_names)
    for values, count in sorted(counts):
        family.add_metric(values, count)
    return family


def _histogram(
    name: str,
    help_text: str,
    label_names: tuple[str, ...],
    histograms: Iterable[tuple[tuple[str, ...], Histogram]],
) -> HistogramMetricFamily:
    """A histogram family from the store's per-bucket counts, in label order."""
    family = HistogramMetricFamily(name, help_text, labels=label_names)
    for values, histogram in sorted(histograms, key=itemgetter(0)):
        bounds = [*map(floatToGoString, histogram.buckets), "+Inf"]
        cumulative = accumulate(histogram.counts)
        family.add_metric(values, list(zip(bounds, cumulative, strict=True)), histogram.total)
    return family
