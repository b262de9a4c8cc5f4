"""Figure 6, freshness: how late the exporter sees state changes when the cloud's request quota,
not the wanted poll interval, decides how often it may ask; the adaptive plan
(`api_budget_rps`) against a fixed interval spending the same number of requests.

The workload (`tests.bench._freshness_cloud`): `alive` Huawei jobs running at any moment, each
PROCESSING for a lognormal time (median 10 simulated minutes, sigma 0.5) then SUCCEED or
FAILED; the jobs running at the start are in the exporter's config, later ones are registered
through `POST /api/v1/jobs` when they arrive, as the application that creates them would.
Simulated time runs `speed` (K) times faster than the real clock: the simulator runs at speed
K, every time setting of the exporter is divided by K and every rate multiplied by K, so the
exporter lives through the simulated hours in minutes. Delays are reported in simulated
seconds (real x K).

Each mode gets a simulator and an exporter of its own, one after the other, on the same plan
(same seed, shifted to its own start): (a) adaptive, `api_budget_rps` = the simulator's quota
(10 x K real requests/s); (b) fixed, no budget, the `poll_interval` that spends what (a)
spent, solved from (a)'s request count and the plan's running time in the window (adjusted
once if the two differ by more than `REQUEST_TOLERANCE`); (c) the oracle: one request per
change. After a warm-up (the exporter learns the job type's durations from the jobs it sees
finish), /metrics is scraped every `scrape_period` real seconds over the window and a tail: a
change made in the window is seen at the first scrape that shows the job in the new state (or
a later one); one not seen by the end of the tail is missed (an infinite delay). Requests are
the exporter's `cloudjob_api_requests_total` (every status) over the window; throttled answers
are counted by both the simulator (its quota) and the exporter (status 429).

The exporter's own `cloudjob_state_change_detection_delay_seconds` is checked against the
truth: every scrape carries both the job states and the histogram, so the changes counted
between two scrapes are the ones those scrapes first show, and each one's true delay (from
the simulator's time of the change to the exporter's poll) lies between (the scrape before's
sending) - (the change) and (the scrape's arrival) - (the change), within one scrape period.
For each bucket bound, the exporter's count must lie between the counts of those bounds.
"""

from __future__ import annotations

import http.client
import itertools
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from exporter.simulator.metastudio import DEMO_PROJECT_ID
from exporter.simulator.quota import STATS_PATH
from tests.bench._clouds import HUAWEI, Exporter, start_exporter
from tests.bench._freshness_cloud import (
    DURATIONS,
    PHASES_PATH,
    RUNNING,
    Workload,
    plan_workload,
)
from tests.bench._harness import (
    BenchError,
    Process,
    Processes,
    get_ok,
    progress,
    start_listening,
    wait_for_port,
)
from tests.bench._refresh import delay_figures, job_states, request_counts

SEED = 16
MODES = ("adaptive", "fixed")
# (b) spends within this share of (a)'s requests, or its interval is solved again once.
REQUEST_TOLERANCE = 0.05
# Targets: the adaptive plan's p99 delay at most this share of the fixed interval's, and
# its p50 no worse.
P99_SHARE_TARGET = 0.5
# Whether the exporter's histogram counts a job's first poll (its appearance) as a change: it
# does not, it observes changes from a state it knew.
FIRST_SIGHTINGS_COUNT = False
# Milliseconds of `lastupdate_time` rounding, and float noise, in the histogram check.
_SLACK = 0.002
# Only the state series and the exporter's own families: scrapes stay small and quick.
_EXCLUDE = r"re:cloudjob_job_(?!state$).*"
_BUCKET = re.compile(
    rb"^cloudjob_state_change_detection_delay_seconds_bucket\{([^}]*)\} (\S+)", re.MULTILINE
)
_LE = re.compile(rb'le="([^"]*)"')
# The exporter's own account of its budget, read at the window's end.
_GAUGES = (
    "cloudjob_api_budget_rps",
    "cloudjob_api_budget_utilization_ratio",
    "cloudjob_poll_overdue_seconds",
)
_TOKEN = "freshness-bench-token"


@dataclass(frozen=True)
class FreshnessPlan:
    alive: int  # jobs running at any moment
    speed: float  # K: simulated seconds per real second
    warmup: float  # simulated seconds before the window, not counted
    window: float  # simulated seconds whose changes count
    tail: float  # simulated seconds of scrapes after the window
    scrape_period: float  # real seconds
    budget_rps: float = 10.0  # simulated: the account's quota, and (a)'s budget
    poll_interval: float = 30.0  # simulated: what every job asks for
    terminal_poll_interval: float = 600.0  # simulated
    # Simulated; shorter than the terminal interval, so that a job is forgotten before a poll
    # of it as terminal is due in either mode: a fixed interval would otherwise spend a poll on
    # every ended job that the adaptive plan, which puts terminal jobs last, need not.
    terminal_retention: float = 500.0
    adjust: bool = True  # solve (b)'s interval again once if its requests are off

    @property
    def horizon(self) -> float:
        return self.warmup + self.window + self.tail


# -- What a run saw -------------------------------------------------------------------------


@dataclass
class Scrape:
    sent: float  # epoch seconds
    arrived: float
    requests: dict[str, float]  # cloudjob_api_requests_total by status
    histogram: dict[float, float]  # detection-delay buckets: le -> cumulative count


@dataclass
class Run:
    """One mode's scrapes and what the simulator counted at the window's edges."""

    scrapes: list[Scrape] = field(default_factory=list)
    # job id -> state -> index of the first scrape that showed it
    first_seen: dict[str, dict[str, int]] = field(default_factory=dict)
    quota_at_start: dict[str, Any] = field(default_factory=dict)
    quota_at_end: dict[str, Any] = field(default_factory=dict)
    phases_at_start: dict[str, int] = field(default_factory=dict)
    phases_at_end: dict[str, int] = field(default_factory=dict)
    gauges_at_end: dict[str, float] = field(default_factory=dict)
    registered: int = 0
    registration_errors: list[str] = field(default_factory=list)

    def observe(self, scrape: Scrape, states: Mapping[str, str]) -> None:
        index = len(self.scrapes)
        self.scrapes.append(scrape)
        for job_id, state in states.items():
            self.first_seen.setdefault(job_id, {}).setdefault(state, index)


def gauges(body: bytes) -> dict[str, float]:
    """The budget gauges of the (one) account, by family name."""
    found = {}
    for name in _GAUGES:
        match = re.search(rb"^" + name.encode() + rb"(?:\{[^}]*\})? (\S+)$", body, re.MULTILINE)
        if match is not None:
            found[name] = float(match.group(1))
    return found


def histogram(body: bytes) -> dict[float, float]:
    """The detection-delay histogram's cumulative buckets, summed over accounts."""
    buckets: dict[float, float] = {}
    for labels, value in _BUCKET.findall(body):
        le = _LE.search(labels)
        if le is not None:
            bound = float(le.group(1))
            buckets[bound] = buckets.get(bound, 0.0) + float(value)
    return buckets


# -- The arithmetic -------------------------------------------------------------------------

Change = tuple[str, str, float]  # job id, new state, epoch seconds


def seen_at(run: Run, job_id: str, state: str) -> int | None:
    """The first scrape that showed the job in `state` or past it (a terminal state is past
    RUNNING), None if none did."""
    seen = run.first_seen.get(job_id, {})
    if state == RUNNING:
        return min(seen.values(), default=None)
    return seen.get(state)


def detection_delays(
    changes: Iterable[Change], run: Run, start: float, end: float, speed: float
) -> tuple[list[float], int]:
    """Simulated-second delays of the changes made in [start, end] (real), and how many of
    them no scrape showed."""
    delays: list[float] = []
    missed = 0
    for job_id, state, at in changes:
        if not start <= at <= end:
            continue
        index = seen_at(run, job_id, state)
        if index is None:
            missed += 1
        else:
            delays.append((run.scrapes[index].arrived - at) * speed)
    return delays, missed


def histogram_check(
    changes: Iterable[Change], run: Run, first: int, last: int, *, first_sightings: bool
) -> dict[str, Any]:
    """The exporter's histogram between scrapes `first` and `last` against the true delays of
    the changes those scrapes first showed: for each bucket, the exporter's count must lie
    between the changes certainly within it (seen by a scrape that arrived within `le` of the
    change) and those possibly within it (the scrape before was sent within `le`). With
    `first_sightings`, a job's first poll counts as a change (its arrival) too."""
    lows: list[float] = []
    highs: list[float] = []
    for job_id, state, at in changes:
        seen = run.first_seen.get(job_id, {})
        index = seen.get(state)
        if index is None or not first < index <= last:
            continue
        if not first_sightings and index == min(seen.values()):
            continue
        lows.append(run.scrapes[index - 1].sent - at - _SLACK)
        highs.append(run.scrapes[index].arrived - at + _SLACK)
    before, after = run.scrapes[first].histogram, run.scrapes[last].histogram
    buckets = []
    ok = bool(after)  # no histogram at all: nothing agrees
    for le in sorted(after):
        counted = after[le] - before.get(le, 0.0)
        certain = sum(1 for high in highs if high <= le)
        possible = sum(1 for low in lows if low <= le)
        agrees = certain <= counted <= possible
        ok = ok and agrees
        buckets.append({"le": le, "exporter": counted, "truth_min": certain, "truth_max": possible})
    return {
        "checked_changes": len(highs),
        "exported": bool(after),
        "buckets": buckets,
        "agrees": ok,
    }


def requests_between(run: Run, first: int, last: int) -> dict[str, float]:
    before, after = run.scrapes[first].requests, run.scrapes[last].requests
    return {status: after.get(status, 0.0) - before.get(status, 0.0) for status in sorted(after)}


@dataclass(frozen=True)
class WindowLoad:
    """What the plan says about the window: the polls a fixed interval cannot avoid, and the
    job-seconds it spends polling running jobs (both simulated)."""

    arrivals: int  # each first poll comes half an interval early, on average
    ends: int  # each costs the poll that finds the job ended
    terminal_polls: int  # one per ended job its retention lets live to its terminal poll
    running_seconds: float

    def fixed_requests(self, interval: float) -> float:
        unavoidable = 0.5 * self.arrivals + self.ends + self.terminal_polls
        return unavoidable + self.running_seconds / interval

    def interval_for(self, requests: float) -> float:
        """The fixed interval that spends `requests` over the window (at least 1 s)."""
        spare = requests - self.fixed_requests(math.inf)
        return max(1.0, self.running_seconds / spare) if spare > 0 else math.inf


def window_load(workload: Workload, plan: FreshnessPlan) -> WindowLoad:
    start, end = plan.warmup, plan.warmup + plan.window
    running = 0.0
    arrivals = ends = terminal = 0
    for job in workload.jobs:
        running += max(0.0, min(job.ends, end) - max(job.arrival, start))
        arrivals += start <= job.arrival <= end
        ends += start <= job.ends <= end
        terminal += (
            plan.terminal_retention > 1.1 * plan.terminal_poll_interval
            and start <= job.ends + plan.terminal_poll_interval <= end
        )
    return WindowLoad(arrivals, ends, terminal, running)


# -- Processes ------------------------------------------------------------------------------


def _config(
    url: str, workload: Workload, plan: FreshnessPlan, token_file: Path, mode: str, interval: float
) -> str:
    """Every time setting divided by K, every rate multiplied by it; the fixed mode's budget
    is off (0), so its interval alone decides."""
    k = plan.speed
    budget = plan.budget_rps * k if mode == "adaptive" else 0.0
    head = (
        f"poll_interval: {interval / k:.6f}\n"
        f"terminal_poll_interval: {plan.terminal_poll_interval / k:.6f}\n"
        f"terminal_retention: {plan.terminal_retention / k:.6f}\n"
        "request_timeout: 30s\n"
        "max_concurrency: 64\n"
        f"max_jobs: {max(50_000, 4 * plan.alive)}\n"
        "reload_check_interval: 0\n"
        f"metrics: {{state_series: current, exclude: ['{_EXCLUDE}']}}\n"
        f"api: {{token_file: '{token_file}'}}\n"
        "accounts:\n"
        f"  {HUAWEI}: {{provider: huawei_metastudio, region: cn-north-4, "
        f"api_budget_rps: {budget:g}, "
        f"project_id: {DEMO_PROJECT_ID}, endpoint: '{url}', "
        "auth: {ak_env: BENCH_HW_AK, sk_env: BENCH_HW_SK}}\n"
        "jobs:\n"
    )
    return head + "".join(
        f"  - {{account: {HUAWEI}, id: {job.job_id}}}\n" for job in workload.initial
    )


def _start_cloud(
    processes: Processes, workload: Workload, plan: FreshnessPlan, seed: int
) -> tuple[Process, int]:
    return start_listening(
        processes,
        f"freshness simulator ({plan.alive} jobs)",
        lambda port: [
            *("-m", "tests.bench._freshness_cloud", "--port", str(port)),
            *("--alive", str(plan.alive), "--horizon", repr(plan.horizon)),
            *("--seed", str(seed), "--start", repr(workload.start)),
            *("--speed", repr(plan.speed), "--quota-rps", repr(plan.budget_rps * plan.speed)),
        ],
        lambda process, port: wait_for_port(process, port, timeout=60),
    )


class _Registrar(threading.Thread):
    """The application: registers each arriving job with the exporter when it arrives."""

    def __init__(self, workload: Workload, port: int, run: Run) -> None:
        super().__init__(name="freshness-registrar", daemon=True)
        self._workload = workload
        self._port = port
        self._run = run
        self.stop = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        headers = {"X-Cloudjob-Token": _TOKEN, "Content-Type": "application/json"}
        try:
            for job in self._workload.arriving:
                wait = self._workload.real(job.arrival) - time.time()
                if wait > 0 and self.stop.wait(wait):
                    return
                if self.stop.is_set():
                    return
                body = orjson.dumps({"account": HUAWEI, "id": job.job_id})
                try:
                    connection.request("POST", "/api/v1/jobs", body=body, headers=headers)
                    response = connection.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()
                    self._run.registration_errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status not in (200, 201):
                    self._run.registration_errors.append(f"{response.status}: {answer[:200]!r}")
                else:
                    self._run.registered += 1
        finally:
            connection.close()


def _cloud_stats(cloud: Process, port: int, path: str) -> dict[str, Any]:
    answer: dict[str, Any] = orjson.loads(get_ok(cloud, port, path, timeout=30).body)
    return answer


def _scrape(exporter: Exporter) -> tuple[Scrape, bytes]:
    sent = time.time()
    body = get_ok(exporter.process, exporter.port, "/metrics", timeout=60).body
    arrived = time.time()
    return Scrape(sent, arrived, request_counts(body), histogram(body)), body


def run_mode(
    processes: Processes, workdir: Path, plan: FreshnessPlan, mode: str, interval: float, label: str
) -> tuple[Run, Workload, dict[str, Any]]:
    """One mode from start to tail: its own simulator and exporter on a fresh plan."""
    workload = plan_workload(plan.alive, plan.horizon, SEED, time.time() + 1.0, plan.speed)
    token_file = workdir / "freshness-token"
    token_file.write_text(_TOKEN)
    cloud, cloud_port = _start_cloud(processes, workload, plan, SEED)
    run = Run()
    exporter: Exporter | None = None
    registrar: _Registrar | None = None
    try:
        progress(
            f"freshness {label}: {plan.alive} jobs alive at speed {plan.speed:g}, "
            f"poll_interval {interval:.1f} s simulated"
            + (f", budget {plan.budget_rps:g}/s simulated" if mode == "adaptive" else "")
        )
        exporter = start_exporter(
            processes,
            f"exporter (freshness {label})",
            workdir / f"freshness-{label}.yaml",
            _config(f"http://127.0.0.1:{cloud_port}", workload, plan, token_file, mode, interval),
        )
        registrar = _Registrar(workload, exporter.port, run)
        registrar.start()
        window_start = workload.real(plan.warmup)
        window_end = workload.real(plan.warmup + plan.window)
        stop = workload.real(plan.horizon)
        tick = time.time()
        while time.time() < stop:
            if not run.quota_at_start and time.time() >= window_start:
                run.quota_at_start = _cloud_stats(cloud, cloud_port, STATS_PATH)
                run.phases_at_start = _cloud_stats(cloud, cloud_port, PHASES_PATH)
            if not run.quota_at_end and time.time() >= window_end:
                run.quota_at_end = _cloud_stats(cloud, cloud_port, STATS_PATH)
                run.phases_at_end = _cloud_stats(cloud, cloud_port, PHASES_PATH)
            scrape, body = _scrape(exporter)
            run.observe(scrape, job_states(body))
            if run.quota_at_end and not run.gauges_at_end:
                run.gauges_at_end = gauges(body)
            tick += plan.scrape_period
            time.sleep(max(0.0, tick - time.time()))
        cloud.check_running()
        cpu = {
            "exporter_cpu_s": exporter.process.cpu_seconds(),
            "simulator_cpu_s": cloud.cpu_seconds(),
        }
    finally:
        if registrar is not None:
            registrar.stop.set()
            registrar.join(timeout=35)
        for process in [*([exporter.process] if exporter else []), cloud]:
            processes.stop(process)
    if run.registration_errors:
        raise BenchError(
            f"freshness {label}: {len(run.registration_errors)} registrations failed, the "
            f"first: {run.registration_errors[0]}"
        )
    return run, workload, cpu


def mode_figures(
    run: Run, workload: Workload, plan: FreshnessPlan, *, first_sightings: bool
) -> dict[str, Any]:
    window_start = workload.real(plan.warmup)
    window_end = workload.real(plan.warmup + plan.window)
    arrived = [scrape.arrived for scrape in run.scrapes]
    first = next(i for i, at in enumerate(arrived) if at >= window_start)
    last = next((i for i, at in enumerate(arrived) if at >= window_end), len(arrived) - 1)
    changes = list(workload.changes())
    by_status = requests_between(run, first, last)
    requests = sum(by_status.values())
    delays, missed = detection_delays(changes, run, window_start, window_end, plan.speed)
    ends_only = [c for c in changes if c[1] != RUNNING]
    end_delays, end_missed = detection_delays(ends_only, run, window_start, window_end, plan.speed)
    gaps = [b - a for a, b in itertools.pairwise(arrived)]
    quota_start, quota_end = run.quota_at_start, run.quota_at_end
    return {
        "requests": requests,
        "requests_per_s_simulated": requests / plan.window,
        "requests_by_status": by_status,
        "requests_throttled_exporter": by_status.get("429", 0.0),
        "requests_throttled_simulator": quota_end.get("throttled", 0)
        - quota_start.get("throttled", 0),
        "simulator_answered": quota_end.get("answered", 0) - quota_start.get("answered", 0),
        # What the polled jobs were doing: requests on running jobs, ended ones, and others.
        "simulator_requests_by_phase": {
            phase: count - run.phases_at_start.get(phase, 0)
            for phase, count in run.phases_at_end.items()
        },
        "delay": delay_figures(delays, missed),
        "delay_ends": delay_figures(end_delays, end_missed),
        "histogram": histogram_check(
            changes, run, first, len(run.scrapes) - 1, first_sightings=first_sightings
        ),
        "scrapes": len(run.scrapes),
        "scrape_gap_max_s": max(gaps, default=float("nan")),
        "registered": run.registered,
        "exporter_gauges_at_window_end": run.gauges_at_end,
    }


def measure(processes: Processes, workdir: Path, plan: FreshnessPlan) -> dict[str, Any]:
    """(a), then (b) at the interval that spends (a)'s requests, then the oracle."""
    k = plan.speed
    run, workload, cpu = run_mode(
        processes, workdir, plan, "adaptive", plan.poll_interval, "adaptive"
    )
    adaptive = mode_figures(run, workload, plan, first_sightings=FIRST_SIGHTINGS_COUNT)
    adaptive |= cpu | {"poll_interval_s": plan.poll_interval}
    load = window_load(workload, plan)
    interval = load.interval_for(adaptive["requests"])
    matchable = math.isfinite(interval)
    if not matchable:
        # Fewer requests than a fixed interval's first polls and ending polls alone: no
        # interval spends as little. Match the polls of running jobs instead, and say so.
        running = adaptive["simulator_requests_by_phase"].get("running", 0)
        interval = load.running_seconds / max(1, running)
        progress(
            f"freshness: the adaptive mode spent {adaptive['requests']:,.0f} requests, fewer "
            "than any fixed interval can; the fixed mode matches its polls of running jobs"
        )
    attempts = []
    while True:
        run, workload, cpu = run_mode(
            processes, workdir, plan, "fixed", interval, f"fixed {interval:.0f}s"
        )
        fixed = mode_figures(run, workload, plan, first_sightings=FIRST_SIGHTINGS_COUNT)
        fixed |= cpu | {"poll_interval_s": interval}
        attempts.append({"poll_interval_s": interval, "requests": fixed["requests"]})
        off = fixed["requests"] / adaptive["requests"] - 1 if adaptive["requests"] else math.inf
        if abs(off) <= REQUEST_TOLERANCE or not plan.adjust or len(attempts) > 1 or not matchable:
            break
        # Polls of running jobs scale as 1/interval, the others (those finding a job ended,
        # and the rest) do not: solve on the split the simulator measured.
        running = fixed["simulator_requests_by_phase"].get("running", 0)
        others = fixed["requests"] - running
        if running <= 0 or adaptive["requests"] <= others:
            break
        interval *= running / (adaptive["requests"] - others)
    oracle = sum(
        1
        for _, _, at in workload.changes()
        if workload.real(plan.warmup) <= at <= workload.real(plan.warmup + plan.window)
    )
    figures: dict[str, Any] = {
        "alive": plan.alive,
        "speed": k,
        "warmup_s": plan.warmup,
        "window_s": plan.window,
        "tail_s": plan.tail,
        "scrape_period_s": plan.scrape_period * k,
        "budget_rps": plan.budget_rps,
        "quota_rps": plan.budget_rps,
        "median_duration_s": DURATIONS.median,
        "sigma": DURATIONS.sigma,
        "terminal_poll_interval_s": plan.terminal_poll_interval,
        "terminal_retention_s": plan.terminal_retention,
        "modes": {"adaptive": adaptive, "fixed": fixed},
        "fixed_attempts": attempts,
        "fixed_matches_requests": matchable,
        "fixed_over_adaptive_requests": fixed["requests"] / adaptive["requests"]
        if adaptive["requests"]
        else float("nan"),
        "oracle_requests": oracle,
        "first_sightings_in_histogram": FIRST_SIGHTINGS_COUNT,
    }
    for mode in MODES:
        shown = figures["modes"][mode]
        delay = shown["delay"]
        progress(
            f"freshness, {mode}: {shown['requests']:,.0f} requests "
            f"({shown['requests_throttled_simulator']:,} throttled); delay p50 "
            f"{delay['p50_s']:.1f} s, p99 {delay['p99_s']:.1f} s simulated over "
            f"{delay['changes']} changes ({delay['missed']} missed); histogram "
            f"{'agrees' if shown['histogram']['agrees'] else 'DISAGREES'}"
        )
    return figures


def targets(figures: Mapping[str, Any]) -> list[tuple[str, float, str, bool]]:
    """(figure, value, target, met) of the stage: no throttling under the budget, the adaptive
    plan's p99 at most half the fixed interval's and its p50 no worse, and the exporter's
    histogram in agreement with the truth in both modes."""
    adaptive, fixed = figures["modes"]["adaptive"], figures["modes"]["fixed"]
    a99, f99 = adaptive["delay"]["p99_s"], fixed["delay"]["p99_s"]
    a50, f50 = adaptive["delay"]["p50_s"], fixed["delay"]["p50_s"]
    throttled = adaptive["requests_throttled_simulator"]
    share = a99 / f99 if f99 and math.isfinite(f99) else float("nan")
    found: list[tuple[str, float, str, bool]] = [
        ("freshness: throttled answers, adaptive", float(throttled), "== 0", throttled == 0),
        (
            "freshness: adaptive p99 / fixed p99",
            share,
            f"<= {P99_SHARE_TARGET:g} (p99 {a99:.1f} s vs {f99:.1f} s simulated)",
            share <= P99_SHARE_TARGET,
        ),
        (
            "freshness: adaptive p50 - fixed p50 (simulated s)",
            a50 - f50,
            f"<= 0 (p50 {a50:.1f} s vs {f50:.1f} s)",
            a50 <= f50,
        ),
    ]
    for mode in MODES:
        check = figures["modes"][mode]["histogram"]
        found.append(
            (
                f"freshness: detection-delay histogram agrees, {mode}",
                float(check["agrees"]),
                f"every bucket within one scrape of the truth ({check['checked_changes']} changes)",
                bool(check["agrees"]),
            )
        )
    return found
