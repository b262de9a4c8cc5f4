"""Figure 5, refresh: what keeping N running Tencent CI jobs fresh costs in requests, with
`refresh: lookup` (one look-up per job per `poll_interval`) and `refresh: list` (list pages of
the queue's non-terminal jobs, plus one look-up per job that left the list), and how late each
shows a state change.

A simulator (`tests.bench._refresh_cloud`) holds N jobs in one queue with one tag, each
walking Submitted -> Running -> Success once on the real clock, so the benchmark knows when
every change truly happened. Each mode gets an exporter polling at the same `poll_interval`
and a simulator of its own with the same jobs from the same start (so that a thousand look-ups
a second do not slow the other mode's list pages); all run at once, so that both modes see the
same changes on the same machine at the same moments. After a
warm-up (every job shown once by both), /metrics of each is scraped every `scrape_period` for
`window` seconds plus a `tail`: a change made during the window counts as seen at the first
scrape that shows the job in the new state or a later one, so the delay is (that scrape's
arrival) - (the change), at most one scrape period late (the resolution). A change of the
window not seen by the end of the tail is missed, and counts as an infinite delay. Requests
are the exporter's own `cloudjob_api_requests_total`, every status, over window and tail: list
pages, look-ups, discovery and queue requests alike.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.accounts import TencentAccount
from exporter.simulator.tencent_ci import DEMO_TENCENT_BUCKET
from tests.bench._clouds import TENCENT, Exporter, start_exporter
from tests.bench._harness import (
    BenchError,
    Process,
    Processes,
    get_ok,
    percentile,
    progress,
    start_listening,
    wait_for_port,
)
from tests.bench._refresh_cloud import QUEUE_ID, STATES, TAG, PlannedJob, plan_jobs

# Code from before `refresh` existed only knows per-job look-ups: measure that alone.
MODES: tuple[str, ...] = (
    ("lookup", "list") if "refresh" in TencentAccount.model_fields else ("lookup",)
)
SEED = 15
# The target: at this many jobs, list mode's requests over lookup's, and its p99 delay no worse
# than lookup's (both measured by the same scrapes, at the same resolution).
TARGET_JOBS = 1_000
REQUEST_SHARE_TARGET = 1 / 20
# Only the state series and the exporter's own families: a scrape of 10,000 jobs stays small
# and quick, so scrapes can come every half second.
_EXCLUDE = r"re:cloudjob_job_(?!state$).*"
_STATE_ANY_ORDER = re.compile(rb"^cloudjob_job_state\{([^}]*)\} 1(?:\.0)?$", re.MULTILINE)
_LABEL = re.compile(rb'(\w+)="([^"]*)"')
_REQUESTS = re.compile(rb"^cloudjob_api_requests_total\{([^}]*)\} (\S+)", re.MULTILINE)
_STATUS = re.compile(rb'status="([^"]*)"')
_RANK = {state: rank for rank, state in enumerate(STATES)}


@dataclass(frozen=True)
class RefreshPlan:
    poll_interval: float  # seconds, the same in both modes
    window: float  # seconds whose state changes count
    tail: float  # seconds of scrapes after the window, for its last changes
    scrape_period: float
    warmup_timeout: float = 180.0


def job_states(body: bytes) -> dict[str, str]:
    """job_id -> state from the `cloudjob_job_state{...} 1` lines of a scrape."""
    states: dict[str, str] = {}
    for labels in _STATE_ANY_ORDER.findall(body):
        pairs = dict(_LABEL.findall(labels))
        job_id, state = pairs.get(b"job_id"), pairs.get(b"state")
        if job_id is not None and state is not None:
            states[job_id.decode()] = state.decode()
    return states


def request_counts(body: bytes) -> dict[str, float]:
    """`cloudjob_api_requests_total` by status, summed over accounts."""
    counts: dict[str, float] = {}
    for labels, value in _REQUESTS.findall(body):
        status = _STATUS.search(labels)
        key = status.group(1).decode() if status else "?"
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


@dataclass
class Sightings:
    """When an exporter's /metrics first showed each job in each state."""

    first_seen: dict[str, dict[str, float]] = field(default_factory=dict)
    scrape_times: list[float] = field(default_factory=list)

    def observe(self, at: float, states: Mapping[str, str]) -> None:
        for job_id, state in states.items():
            seen = self.first_seen.setdefault(job_id, {})
            if state not in seen:
                seen[state] = at
        self.scrape_times.append(at)


Change = tuple[str, str, float]  # job id, new state, epoch seconds


def all_changes(jobs: Iterable[PlannedJob]) -> list[Change]:
    return [(job.job_id, state, at) for job in jobs for state, at in job.changes()]


def detection_delays(
    changes: Iterable[Change],
    first_seen: Mapping[str, Mapping[str, float]],
    start: float,
    end: float,
) -> tuple[list[float], int]:
    """Delays of the changes made in [start, end], and how many of them were never seen. A job
    shown in a later state than the change's has passed it: a change one scrape missed between
    two of them counts as seen with the later one."""
    delays: list[float] = []
    missed = 0
    for job_id, state, at in changes:
        if not start <= at <= end:
            continue
        rank = _RANK[state]
        seen = [
            when
            for shown, when in first_seen.get(job_id, {}).items()
            if _RANK.get(shown, -1) >= rank
        ]
        if seen:
            delays.append(min(seen) - at)
        else:
            missed += 1
    return delays, missed


def delay_figures(delays: Sequence[float], missed: int) -> dict[str, float]:
    """p50, p99 (nearest rank) and max; a missed change is an infinite delay."""
    every = [*delays, *([math.inf] * missed)]
    if not every:
        nan = float("nan")
        return {"changes": 0, "missed": 0, "p50_s": nan, "p99_s": nan, "max_s": nan}
    return {
        "changes": len(every),
        "missed": missed,
        "p50_s": percentile(every, 50),
        "p99_s": percentile(every, 99),
        "max_s": max(every),
    }


def target(figures: Mapping[str, Any]) -> tuple[str, float, str, bool] | None:
    """(figure, value, target, met) for `TARGET_JOBS` measured in both modes, else None: list
    mode's share of lookup's requests, met when it is small enough and list mode's p99 delay is
    no worse than lookup's. Both are measured by scrapes at the same cadence, so the resolution
    is printed beside them, not added to either."""
    modes = figures["modes"]
    if figures["jobs"] != TARGET_JOBS or "list" not in modes or "lookup" not in modes:
        return None
    share = figures["list_over_lookup_requests"]
    list_p99, lookup_p99 = modes["list"]["delay"]["p99_s"], modes["lookup"]["delay"]["p99_s"]
    met = share <= REQUEST_SHARE_TARGET and list_p99 <= lookup_p99
    return (
        f"refresh {figures['jobs']}: list/lookup requests, with no worse p99 delay",
        share,
        f"<= 1/{1 / REQUEST_SHARE_TARGET:g}, and p99 delay {list_p99:.2f} s <= lookup's "
        f"{lookup_p99:.2f} s (resolution {figures['resolution_s']:.2f} s)",
        met,
    )


# -- Processes ------------------------------------------------------------------------------


def _config(url: str, job_ids: Sequence[str], mode: str, poll_interval: float) -> str:
    """Rate caps off, file watching off; every job listed, and the queue discovered, in both
    modes alike (only `refresh` differs)."""
    refresh = f"      refresh: {mode}\n      queue_interval: 1m\n" if len(MODES) > 1 else ""
    head = (
        f"poll_interval: {poll_interval:g}s\n"
        "request_timeout: 30s\n"
        f"max_jobs: {max(50_000, 2 * len(job_ids))}\n"
        "reload_check_interval: 0\n"
        f"metrics: {{state_series: current, exclude: ['{_EXCLUDE}']}}\n"
        "accounts:\n"
        f"  {TENCENT}:\n"
        "      provider: tencent_ci\n"
        f"      bucket: {DEMO_TENCENT_BUCKET}\n"
        "      region: ap-beijing\n"
        f"      endpoint: '{url}'\n"
        "      job_api: ai_jobs\n"
        "      auth: {secret_id_env: BENCH_TC_ID, secret_key_env: BENCH_TC_KEY}\n"
        f"{refresh}"
        f"      discover: {{queue_id: {QUEUE_ID}, tag: {TAG}, lookback: 1d, interval: 5m}}\n"
        "jobs:\n"
    )
    return head + "".join(f"  - {{account: {TENCENT}, id: {job_id}}}\n" for job_id in job_ids)


def _start_cloud(processes: Processes, jobs: int, started: float) -> tuple[Process, str]:
    process, port = start_listening(
        processes,
        f"refresh simulator ({jobs} jobs)",
        lambda port: [
            *("-m", "tests.bench._refresh_cloud", "--port", str(port)),
            *("--jobs", str(jobs), "--seed", str(SEED), "--started", repr(started)),
        ],
        lambda process, port: wait_for_port(process, port, timeout=60),
    )
    return process, f"http://127.0.0.1:{port}"


def _scrape(exporter: Exporter) -> tuple[float, bytes]:
    """The body and the moment it arrived (epoch seconds, the simulator's clock)."""
    body = get_ok(exporter.process, exporter.port, "/metrics", timeout=60).body
    return time.time(), body


def _cpu(
    exporters: Mapping[str, Exporter], clouds: Mapping[str, Process]
) -> dict[str, tuple[float, float]]:
    """CPU-seconds so far of each mode's exporter and simulator."""
    return {
        mode: (exporter.process.cpu_seconds(), clouds[mode].cpu_seconds())
        for mode, exporter in exporters.items()
    }


def _warm_up(exporters: Mapping[str, Exporter], jobs: int, timeout: float) -> None:
    """Until both show every job: each has polled each once."""
    deadline = time.monotonic() + timeout
    waiting = dict(exporters)
    while waiting:
        for mode, exporter in list(waiting.items()):
            shown = len(job_states(_scrape(exporter)[1]))
            if shown >= jobs:
                del waiting[mode]
            elif time.monotonic() > deadline:
                raise exporter.process.failure(f"showed {shown} of {jobs} jobs after {timeout:g} s")
        time.sleep(0.5)


def measure(processes: Processes, jobs: int, workdir: Path, plan: RefreshPlan) -> dict[str, Any]:
    """Both modes at once, each on its own simulator; figures per mode and the list/lookup
    ratios."""
    planned = plan_jobs(jobs, SEED, time.time())
    clouds: dict[str, Process] = {}
    exporters: dict[str, Exporter] = {}
    try:
        for mode in MODES:
            progress(f"refresh {jobs} jobs: starting the exporter with refresh: {mode}")
            clouds[mode], url = _start_cloud(processes, jobs, planned[0].started)
            exporters[mode] = start_exporter(
                processes,
                f"exporter (refresh {mode}, {jobs} jobs)",
                workdir / f"refresh-{mode}-{jobs}.yaml",
                _config(url, [job.job_id for job in planned], mode, plan.poll_interval),
            )
        _warm_up(exporters, jobs, plan.warmup_timeout)
        progress(
            f"refresh {jobs} jobs: {plan.window:g} s window + {plan.tail:g} s tail, a scrape "
            f"every {plan.scrape_period:g} s"
        )
        sightings = {mode: Sightings() for mode in MODES}
        requests_before = {mode: request_counts(_scrape(e)[1]) for mode, e in exporters.items()}
        cpu_before = _cpu(exporters, clouds)
        start = time.time()
        end, stop = start + plan.window, start + plan.window + plan.tail
        tick = start
        while time.time() < stop:
            for mode, exporter in exporters.items():
                at, body = _scrape(exporter)
                sightings[mode].observe(at, job_states(body))
            tick += plan.scrape_period
            time.sleep(max(0.0, tick - time.time()))
        cpu_after = _cpu(exporters, clouds)
        requests_after = {mode: request_counts(_scrape(e)[1]) for mode, e in exporters.items()}
        observed = time.time() - start
        for cloud in clouds.values():
            cloud.check_running()
    finally:
        for process in [*(e.process for e in exporters.values()), *clouds.values()]:
            processes.stop(process)
    changes = all_changes(planned)
    figures: dict[str, Any] = {"jobs": jobs, "modes": {}}
    gaps = []
    for mode in MODES:
        times = sightings[mode].scrape_times
        gaps.append((times[-1] - times[0]) / max(1, len(times) - 1))
        delays, missed = detection_delays(changes, sightings[mode].first_seen, start, end)
        before, after = requests_before[mode], requests_after[mode]
        by_status = {
            status: after.get(status, 0.0) - before.get(status, 0.0)
            for status in sorted(set(before) | set(after))
        }
        total = sum(by_status.values())
        figures["modes"][mode] = {
            "requests": total,
            "requests_per_job_hour": total / (jobs * observed / 3600),
            "requests_not_200": sum(v for status, v in by_status.items() if status != "200"),
            "requests_throttled": by_status.get("429", 0.0),
            "requests_by_status": by_status,
            "delay": delay_figures(delays, missed),
            "scrapes": len(times),
            # Cores used (scrapes included): a simulator near 1 was the limit, not the exporter.
            "exporter_cpu_util": (cpu_after[mode][0] - cpu_before[mode][0]) / observed,
            "simulator_cpu_util": (cpu_after[mode][1] - cpu_before[mode][1]) / observed,
        }
    figures["window_s"], figures["tail_s"], figures["observed_s"] = plan.window, plan.tail, observed
    figures["poll_interval_s"] = plan.poll_interval
    # A change shows at the first scrape after the exporter has it: up to one period late.
    figures["resolution_s"] = max(gaps)
    if "list" in figures["modes"]:
        lookup, listing = figures["modes"]["lookup"], figures["modes"]["list"]
        figures["list_over_lookup_requests"] = (
            listing["requests"] / lookup["requests"] if lookup["requests"] else float("nan")
        )
    for mode, mode_figures in figures["modes"].items():
        delay = mode_figures["delay"]
        progress(
            f"refresh {jobs} jobs, {mode}: {mode_figures['requests_per_job_hour']:,.0f} "
            f"requests per job-hour; delay p50 {delay['p50_s']:.2f} s, p99 "
            f"{delay['p99_s']:.2f} s, max {delay['max_s']:.2f} s over {delay['changes']} "
            f"changes ({delay['missed']} missed)"
        )
    if not figures["modes"]["lookup"]["delay"]["changes"]:
        raise BenchError(f"refresh {jobs} jobs: no state change fell in the window")
    return figures
