"""Which metric families /metrics shows: `metrics.exclude` and `metrics.state_series`.

As kube-state-metrics' --metric-denylist: an entry is a family name or a `re:` pattern, matched
whole against each family's names. A family answers to its name as prometheus-client keeps it
and to the name its samples carry, as the docs list it (`cloudjob_job_failures` and
`cloudjob_job_failures_total`, `cloudjob_job` and `cloudjob_job_info`). An entry that names no
family is a mistake, not a no-op: a typo would otherwise keep exporting what it meant to drop.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from exporter.job_metrics import JOB_METRICS

# The families other than the per-job ones that /metrics can show: (name, type), the name as
# prometheus-client keeps it. A test compares this with a real scrape.
EXPORTER_FAMILIES: tuple[tuple[str, str], ...] = (
    ("cloudjob_jobs_tracked", "gauge"),
    ("cloudjob_jobs", "gauge"),
    ("cloudjob_exporter_build", "info"),
    ("cloudjob_exporter_shard", "info"),
    ("cloudjob_exporter_asyncio_tasks", "gauge"),
    ("cloudjob_config_last_reload_successful", "gauge"),
    ("cloudjob_config_last_reload_success_timestamp_seconds", "gauge"),
    ("cloudjob_api_requests", "counter"),
    ("cloudjob_api_request_duration_seconds", "histogram"),
    ("cloudjob_completed_job_duration_seconds", "histogram"),
    ("cloudjob_discovery_last_success", "gauge"),
    ("cloudjob_discovery_last_run_timestamp_seconds", "gauge"),
    ("cloudjob_discovered_jobs", "counter"),
    ("cloudjob_queue", "info"),
    ("cloudjob_queue_paused", "gauge"),
    ("cloudjob_queue_max_concurrent", "gauge"),
    ("cloudjob_queue_last_success", "gauge"),
    ("cloudjob_queue_last_run_timestamp_seconds", "gauge"),
    ("cloudjob_forgotten_jobs", "gauge"),
    ("cloudjob_api_budget_rps", "gauge"),
    ("cloudjob_api_budget_utilization_ratio", "gauge"),
    ("cloudjob_poll_overdue_seconds", "gauge"),
    ("cloudjob_poll_interval_seconds", "gauge"),
    ("cloudjob_state_change_detection_delay_seconds", "histogram"),
    ("cloudjob_failures", "counter"),
    ("cloudjob_parse_errors", "counter"),
    ("cloudjob_poll_errors", "counter"),
    ("cloudjob_poll_hints", "counter"),
    # prometheus-client's process collector (Linux).
    ("process_virtual_memory_bytes", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_cpu_seconds", "counter"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
)
_SUFFIX = {"counter": "_total", "info": "_info"}
# Every family, with the names it answers to.
_SPELLINGS: dict[str, tuple[str, ...]] = {
    name: (name, name + _SUFFIX[kind]) if kind in _SUFFIX else (name,)
    for name, kind in [*((metric.name, metric.type) for metric in JOB_METRICS), *EXPORTER_FAMILIES]
}
PATTERN_PREFIX = "re:"


@dataclass(frozen=True, slots=True)
class MetricSelection:
    """Families left out of /metrics (by the name prometheus-client keeps), and whether the
    StateSets show only their current series."""

    excluded: frozenset[str] = frozenset()
    current_states_only: bool = False

    @classmethod
    def of(cls, exclude: Iterable[str], state_series: str) -> MetricSelection:
        """From the config's `metrics.exclude` and `metrics.state_series`."""
        return cls(excluded_families(exclude), state_series == "current")


ALL = MetricSelection()


def _matches(entry: str) -> set[str]:
    if entry.startswith(PATTERN_PREFIX):
        pattern = re.compile(entry.removeprefix(PATTERN_PREFIX))
        return {
            family
            for family, names in _SPELLINGS.items()
            if any(pattern.fullmatch(name) for name in names)
        }
    return {family for family, names in _SPELLINGS.items() if entry in names}


@functools.lru_cache(maxsize=16)
def _excluded(entries: tuple[str, ...]) -> frozenset[str]:
    excluded: set[str] = set()
    for entry in entries:
        try:
            matched = _matches(entry)
        except re.error as exc:
            raise ValueError(f"{entry!r} is not a valid regular expression: {exc}") from None
        if not matched:
            what = (
                "matches no metric family"
                if entry.startswith(PATTERN_PREFIX)
                else "is no metric family"
            )
            raise ValueError(f"{entry!r} {what} (see the metric reference)")
        excluded |= matched
    return frozenset(excluded)


def excluded_families(entries: Iterable[str]) -> frozenset[str]:
    """The families `metrics.exclude` names; ValueError naming the first entry that names none."""
    return _excluded(tuple(entries))
