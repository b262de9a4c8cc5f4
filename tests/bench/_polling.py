"""Figure 1, polling: how many ShowShortJob polls a second, and per CPU-second, the exporter
makes against the Huawei simulator, next to the official SDK on 16 threads and a bare aiohttp
loop with 100 requests in flight, each in a process of its own on the same simulator and ids.

Every client is measured over the same kind of windows between marks, after a warm-up:
polls done in the window, the client's CPU (its own utime + stime), the simulator's, and what
the rest of the machine used. The exporter's marks are scrapes of its request counter; its CPU
is read just before and just after each scrape and the scrape itself left out, since a scrape
is not polling (with the old scrape path a 10k-job scrape costs seconds of CPU).
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench._clouds import (
    CREDENTIALS,
    PROJECT_ID,
    Clouds,
    Exporter,
    exporter_config,
    start_exporter,
)
from tests.bench._harness import (
    BenchError,
    Process,
    Processes,
    get_ok,
    median,
    progress,
    system_busy_seconds,
)

# Requests in flight: the exporter's max_concurrency and the bare client's. Far above the
# default of 32, and the same for both, so that their per-CPU-second figures compare like with
# like; on loopback more in flight adds no polls a second (the CPU is the limit).
IN_FLIGHT = 100
SDK_THREADS = 16
# `Duration` only requires > 0: with 1 ms every job is due again as soon as its poll ends, so
# the exporter polls as fast as it can, each job in turn.
POLL_INTERVAL = "1ms"
_REQUESTS = re.compile(rb"^cloudjob_api_requests_total\{([^}]*)\} (\S+)", re.MULTILINE)


@dataclass(frozen=True)
class PollingPlan:
    warmup: float
    window: float
    runs: int


@dataclass(frozen=True)
class Mark:
    """Counts at one moment. For the exporter a mark spans a scrape: `*_before` is read just
    before it and `*_after` just after, and a window runs from one's after to the next's before.
    """

    polls: float
    errors: float
    t_before: float
    t_after: float
    cpu_before: float
    cpu_after: float
    sim_before: float
    sim_after: float
    busy_before: float
    busy_after: float


def summarize(name: str, marks: list[Mark]) -> dict[str, float]:
    """Medians over the windows between consecutive marks."""
    rates, per_cpu, cpu_per_1k, client_util, sim_util, other_util = [], [], [], [], [], []
    errors = 0.0
    for start, end in itertools.pairwise(marks):
        polls = end.polls - start.polls
        wall = end.t_before - start.t_after
        cpu = end.cpu_before - start.cpu_after
        if polls <= 0 or wall <= 0 or cpu <= 0:
            raise BenchError(f"{name}: no polls (or no CPU) in a {wall:.1f} s window")
        errors += end.errors - start.errors
        rates.append(polls / wall)
        per_cpu.append(polls / cpu)
        cpu_per_1k.append(1000 * cpu / polls)
        client_util.append(cpu / wall)
        sim = end.sim_before - start.sim_after
        sim_util.append(sim / wall)
        other = end.busy_before - start.busy_after - cpu - sim
        other_util.append(max(0.0, other) / wall)
    return {
        "polls_per_s": median(rates),
        "polls_per_cpu_s": median(per_cpu),
        "cpu_s_per_1k_polls": median(cpu_per_1k),
        "client_cpu_util": median(client_util),
        "simulator_cpu_util": median(sim_util),
        # Everything else on the machine (the benchmark itself is asleep in a window).
        "other_cpu_util": median(other_util),
        "windows": len(rates),
        "errors": errors,
    }


def _request_counts(exporter: Exporter, body: bytes) -> tuple[float, float]:
    """All requests to clouds so far, and those that did not answer 200."""
    total = failed = 0.0
    found = False
    for labels, value in _REQUESTS.findall(body):
        found = True
        total += float(value)
        if b'status="200"' not in labels:
            failed += float(value)
    if not found:
        raise exporter.process.failure("its /metrics has no cloudjob_api_requests_total sample")
    return total, failed


def _exporter_mark(exporter: Exporter, simulator: Process) -> Mark:
    """A scrape for the request counter, with readings on both sides of it. Gzip: the scrape
    that costs the exporter least, old path or new, so the fewest polls overlap it."""
    busy_before = system_busy_seconds()
    cpu_before, sim_before = exporter.process.cpu_seconds(), simulator.cpu_seconds()
    t_before = time.monotonic()
    answer = get_ok(exporter.process, exporter.port, "/metrics", {"Accept-Encoding": "gzip"}, 600)
    t_after = time.monotonic()
    cpu_after, sim_after = exporter.process.cpu_seconds(), simulator.cpu_seconds()
    busy_after = system_busy_seconds()
    body = answer.body
    if answer.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    polls, errors = _request_counts(exporter, body)
    return Mark(
        *(polls, errors, t_before, t_after, cpu_before, cpu_after),
        *(sim_before, sim_after, busy_before, busy_after),
    )


def measure_exporter(
    processes: Processes, clouds: Clouds, jobs: int, workdir: Path, plan: PollingPlan
) -> dict[str, float]:
    config = exporter_config(
        clouds,
        clouds.huawei.job_ids[:jobs],
        [],
        poll_interval=POLL_INTERVAL,
        max_concurrency=IN_FLIGHT,
    )
    exporter = start_exporter(
        processes, f"exporter (polling {jobs} jobs)", workdir / f"polling-{jobs}.yaml", config
    )
    try:
        time.sleep(plan.warmup)
        marks = []
        for index in range(plan.runs + 1):
            if index:
                time.sleep(plan.window)
            marks.append(_exporter_mark(exporter, clouds.huawei.process))
    finally:
        processes.stop(exporter.process)
    return summarize(exporter.process.name, marks)


def measure_client(
    processes: Processes,
    clouds: Clouds,
    jobs: int,
    workdir: Path,
    plan: PollingPlan,
    kind: str,
) -> dict[str, float]:
    """`kind` "sdk" or "bare": run that client's process and turn its marks into figures."""
    ids_file = workdir / f"ids-{jobs}.txt"
    ids_file.write_text("\n".join(clouds.huawei.job_ids[:jobs]) + "\n")
    module, extra = {
        "sdk": ("tests.bench._sdk_client", ["--threads", str(SDK_THREADS)]),
        "bare": ("tests.bench._bare_client", ["--in-flight", str(IN_FLIGHT)]),
    }[kind]
    argv = [
        *("-m", module, "--port", str(clouds.huawei.port), "--project-id", PROJECT_ID),
        *("--ids-file", str(ids_file), "--warmup", str(plan.warmup)),
        *("--window", str(plan.window), "--marks", str(plan.runs + 1)),
        *extra,
    ]
    client = processes.start(f"{kind} client ({jobs} jobs)", argv, CREDENTIALS, pipe_stdout=True)
    simulator = clouds.huawei.process
    try:
        marks = []
        for _ in range(plan.runs + 1):
            # Start-up (imports) comes before the warm-up: a minute of slack covers a busy box.
            line = client.read_line(timeout=plan.warmup + plan.window + 60)
            sim, busy = simulator.cpu_seconds(), system_busy_seconds()
            try:
                data: dict[str, Any] = json.loads(line)
                polls, errors = float(data["polls"]), float(data["errors"])
                cpu, at = float(data["cpu_s"]), float(data["t"])
            except (ValueError, KeyError, TypeError):
                raise client.failure(f"reported {line[:200]!r}, not a mark") from None
            marks.append(Mark(polls, errors, at, at, cpu, cpu, sim, sim, busy, busy))
    finally:
        processes.stop(client)
    return summarize(client.name, marks)


def measure(
    processes: Processes, clouds: Clouds, jobs: int, workdir: Path, plan: PollingPlan
) -> dict[str, Any]:
    """Ours, then the SDK, then bare: one at a time, so none of them shares the CPU."""
    figures: dict[str, Any] = {}
    for kind in ("ours", "sdk", "bare"):
        progress(
            f"polling {jobs} jobs: {kind}, {plan.runs} window(s) of {plan.window:g} s "
            f"after {plan.warmup:g} s of warm-up"
        )
        if kind == "ours":
            figures[kind] = measure_exporter(processes, clouds, jobs, workdir, plan)
        else:
            figures[kind] = measure_client(processes, clouds, jobs, workdir, plan, kind)
        clouds.huawei.process.check_running()
        figure = figures[kind]
        progress(
            f"polling {jobs} jobs: {kind}: {figure['polls_per_s']:,.0f} polls/s, "
            f"{figure['polls_per_cpu_s']:,.0f} polls/CPU-s, "
            f"simulator at {figure['simulator_cpu_util']:.0%} of a core, "
            f"other processes at {figure['other_cpu_util']:.0%}"
        )
    ours = figures["ours"]["polls_per_cpu_s"]
    figures["ours_vs_sdk_per_cpu"] = ours / figures["sdk"]["polls_per_cpu_s"]
    figures["ours_vs_bare_per_cpu"] = ours / figures["bare"]["polls_per_cpu_s"]
    figures["loadavg"] = os.getloadavg()[0]
    return figures
