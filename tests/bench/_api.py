"""The job list's memory: what `GET /api/v1/jobs` leaves in the exporter's RSS at N jobs.

One exporter with the N jobs in its config (half per cloud), each polled once and then left
alone for an hour. Paged first: a warm-up walk through every page of `limit=500` (the first
pages build what any later call reuses), RSS as the baseline, then `WALKS` more walks, RSS a
second after them and again after `IDLE` seconds (a cyclic garbage collection cannot be asked
of the process from outside; the job documents hold no cycles, so reference counting frees
them at once). Unpaged `?all=1` calls come last, so that their larger peak cannot hide the
pages' growth, as the anchor with no target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.bench._clouds import Clouds, Exporter, exporter_config, start_exporter
from tests.bench._harness import BenchError, Processes, get_ok, progress
from tests.bench._polling import IN_FLIGHT

PAGE = 500
WALKS = 5  # walks through every page after the warm-up one
ALL_CALLS = 3
RETAINED_TARGET = 1024 * 1024  # bytes over the baseline once the paged calls are over


@dataclass(frozen=True)
class ApiPlan:
    """`jobs` tracked; `settle` seconds before reading RSS, `idle` more before the figure that
    counts as retained."""

    jobs: int
    settle: float = 1.0
    idle: float = 5.0


def _get(exporter: Exporter, path: str) -> Any:
    return orjson.loads(get_ok(exporter.process, exporter.port, path, timeout=300).body)


def _wait_until_polled(exporter: Exporter, jobs: int) -> float:
    """Until no job is unpolled; asks for one job at a time, so the wait adds no RSS."""
    timeout = 120 + jobs / 100
    started = time.monotonic()
    while _get(exporter, "/api/v1/jobs?phase=unknown&limit=1")["jobs"]:
        if time.monotonic() - started > timeout:
            raise exporter.process.failure(f"after {timeout:.0f} s, jobs are still unpolled")
        time.sleep(1.0)
    return time.monotonic() - started


def _walk(exporter: Exporter, jobs: int) -> int:
    """Every page of `limit=PAGE`, in order; the calls it took. Each of the `jobs` must show."""
    seen = calls = 0
    cursor = None
    while True:
        page = _get(
            exporter, f"/api/v1/jobs?limit={PAGE}" + ("" if cursor is None else f"&cursor={cursor}")
        )
        seen, calls, cursor = seen + len(page["jobs"]), calls + 1, page["next"]
        if cursor is None:
            if seen != jobs:
                raise exporter.process.failure(f"a walk of the pages saw {seen:,} of {jobs:,} jobs")
            return calls


def _rss(exporter: Exporter, wait: float) -> int:
    time.sleep(wait)
    return exporter.process.rss_bytes()


def measure(processes: Processes, clouds: Clouds, plan: ApiPlan, workdir: Path) -> dict[str, Any]:
    jobs = plan.jobs
    label = f"api {jobs:,} jobs"
    huawei_ids = clouds.huawei.job_ids[: jobs // 2]
    tencent_ids = clouds.tencent.job_ids[: jobs - jobs // 2]
    if len(huawei_ids) + len(tencent_ids) != jobs:
        raise BenchError(f"{label}: the simulators hold too few jobs")
    config = exporter_config(
        clouds, huawei_ids, tencent_ids, poll_interval="1h", max_concurrency=IN_FLIGHT
    )
    exporter = start_exporter(processes, f"exporter ({label})", workdir / "api.yaml", config)
    try:
        seconds = _wait_until_polled(exporter, jobs)
        progress(f"{label}: every job polled once, {seconds:.0f} s after the start")
        _walk(exporter, jobs)
        rss_before = _rss(exporter, plan.settle)
        paged_calls = 0
        for _ in range(WALKS):
            paged_calls += _walk(exporter, jobs)
        rss_after_pages = _rss(exporter, plan.settle)
        rss_after_pages_idle = _rss(exporter, plan.idle)
        progress(f"{label}: {paged_calls} paged calls, RSS {rss_before:,} -> {rss_after_pages:,}")
        all_bytes = 0
        for _ in range(ALL_CALLS):
            all_bytes = get_ok(
                exporter.process, exporter.port, "/api/v1/jobs?all=1", keep_body=False, timeout=300
            ).size
        rss_after_all = _rss(exporter, plan.settle)
        rss_after_all_idle = _rss(exporter, plan.idle)
    finally:
        processes.stop(exporter.process)
    return {
        "jobs": jobs,
        "page": PAGE,
        "idle_s": plan.idle,
        "paged_calls": paged_calls,
        "all_calls": ALL_CALLS,
        "all_bytes": all_bytes,
        "rss_before_bytes": rss_before,
        "rss_after_pages_bytes": rss_after_pages,
        "rss_after_pages_idle_bytes": rss_after_pages_idle,
        "rss_after_all_bytes": rss_after_all,
        "rss_after_all_idle_bytes": rss_after_all_idle,
        "retained_pages_bytes": rss_after_pages_idle - rss_before,
        "retained_all_bytes": rss_after_all_idle - rss_after_pages_idle,
    }


def target(figures: dict[str, Any]) -> tuple[str, float, str, bool]:
    """The paged calls' retained RSS against its target, as `_targets` adds it."""
    retained = figures["retained_pages_bytes"]
    return (
        f"api {figures['jobs']}: RSS retained after limit={PAGE} calls",
        retained,
        f"<= {RETAINED_TARGET / 1024 / 1024:g} MiB",
        retained <= RETAINED_TARGET,
    )


def table(figures: dict[str, Any]) -> list[str]:
    def mib(value: float) -> str:
        return f"{value / 1024 / 1024:.2f} MiB"

    return [
        "",
        f"API: exporter RSS around GET /api/v1/jobs at {figures['jobs']:,} jobs; baseline after "
        f"one warm-up walk of every page; {figures['paged_calls']} calls of limit={PAGE} "
        f"(target: retained <= {RETAINED_TARGET / 1024 / 1024:g} MiB over the baseline, "
        f"{figures['idle_s']:g} s after the calls), then {figures['all_calls']} of all=1 "
        f"({figures['all_bytes']:,} bytes each; anchor, no target).",
        f"  baseline {mib(figures['rss_before_bytes'])}; after the paged calls "
        f"{mib(figures['rss_after_pages_bytes'])}, {figures['idle_s']:g} s later "
        f"{mib(figures['rss_after_pages_idle_bytes'])}: retained "
        f"{figures['retained_pages_bytes'] / 1024:,.0f} KiB",
        f"  after all=1 {mib(figures['rss_after_all_bytes'])}, {figures['idle_s']:g} s later "
        f"{mib(figures['rss_after_all_idle_bytes'])}: retained "
        f"{figures['retained_all_bytes'] / 1024:,.0f} KiB over the paged figure "
        f"({figures['retained_all_bytes'] / figures['jobs']:,.0f} bytes per job)",
    ]
