"""Figure 1, polling: how many ShowShortJob polls a second, and per CPU-second, the exporter
makes against the Huawei simulator, next to the official SDK on 16 threads and a bare aiohttp
loop with 100 requests in flight, each in a process of its own on the same simulator and ids.

The three take turns: all three processes live through the stage, and each is stopped
(SIGSTOP) while another one polls. Every turn is a window between two marks, after a moment to
settle; the turns go round `runs` times, starting with a different client each round. On a
shared machine a core's speed drifts by half within minutes (measured: one exporter process
from 3,500 to 7,000 polls per CPU-second between 3-second windows), so clients measured one
after the other, as a first version of this did, compared the drift more than the clients.
Taking turns puts every client through the same drift; each figure is a total over its turns.

A window counts polls, the client's CPU (its own utime + stime), the simulator's, and what the
rest of the machine used. The exporter's marks are scrapes of its request counter; its CPU is
read just before and just after each scrape and the scrape itself left out, since a scrape is
not polling.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import time
from collections.abc import Callable
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
    progress,
    system_busy_seconds,
)
from tests.bench._marks import READY

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
    warmup: float  # each client's first turn, unmeasured
    window: float  # the measured part of a turn
    runs: int  # turns per client
    settle: float = 1.0  # after SIGCONT, before the window: in-flight requests finish


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


Window = tuple[Mark, Mark]


def summarize(name: str, windows: list[Window]) -> dict[str, Any]:
    """Totals over the windows, and each window's polls per CPU-second."""
    polls = wall = cpu = sim = other = errors = 0.0
    per_window = []
    for start, end in windows:
        window_polls = end.polls - start.polls
        window_wall = end.t_before - start.t_after
        window_cpu = end.cpu_before - start.cpu_after
        if window_polls <= 0 or window_wall <= 0 or window_cpu <= 0:
            raise BenchError(f"{name}: no polls (or no CPU) in a {window_wall:.1f} s window")
        window_sim = end.sim_before - start.sim_after
        polls, wall, cpu, sim = (
            polls + window_polls,
            wall + window_wall,
            cpu + window_cpu,
            sim + window_sim,
        )
        other += max(0.0, end.busy_before - start.busy_after - window_cpu - window_sim)
        errors += end.errors - start.errors
        per_window.append(window_polls / window_cpu)
    return {
        "polls_per_s": polls / wall,
        "polls_per_cpu_s": polls / cpu,
        "cpu_s_per_1k_polls": 1000 * cpu / polls,
        "client_cpu_util": cpu / wall,
        "simulator_cpu_util": sim / wall,
        # Everything else on the machine (the benchmark itself is asleep in a window).
        "other_cpu_util": other / wall,
        "windows": len(windows),
        "errors": errors,
        "window_polls_per_cpu_s": per_window,
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
    that costs the exporter least, so the fewest polls overlap it."""
    busy_before = system_busy_seconds()
    cpu_before, sim_before = exporter.process.cpu_seconds(), simulator.cpu_seconds()
    t_before = time.monotonic()
    answer = get_ok(
        exporter.process,
        exporter.port,
        "/metrics",
        headers={"Accept-Encoding": "gzip"},
        timeout=600,
    )
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


def _client_mark(client: Process, simulator: Process) -> Mark:
    """SIGUSR1 asks the client for its counts (see `_marks`)."""
    os.kill(client.pid, signal.SIGUSR1)
    line = client.read_line(timeout=60)
    sim, busy = simulator.cpu_seconds(), system_busy_seconds()
    try:
        data: dict[str, Any] = json.loads(line)
        polls, errors = float(data["polls"]), float(data["errors"])
        cpu, at = float(data["cpu_s"]), float(data["t"])
    except (ValueError, KeyError, TypeError):
        raise client.failure(f"reported {line[:200]!r}, not a mark") from None
    return Mark(polls, errors, at, at, cpu, cpu, sim, sim, busy, busy)


def _start_exporter(
    processes: Processes, clouds: Clouds, jobs: int, workdir: Path
) -> tuple[Process, Callable[[], Mark]]:
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
    return exporter.process, lambda: _exporter_mark(exporter, clouds.huawei.process)


def _start_client(
    processes: Processes, clouds: Clouds, jobs: int, workdir: Path, kind: str
) -> tuple[Process, Callable[[], Mark]]:
    """`kind` "sdk" or "bare": its process, polling once it has said it is ready."""
    ids_file = workdir / f"ids-{jobs}.txt"
    ids_file.write_text("\n".join(clouds.huawei.job_ids[:jobs]) + "\n")
    module, extra = {
        "sdk": ("tests.bench._sdk_client", ["--threads", str(SDK_THREADS)]),
        "bare": ("tests.bench._bare_client", ["--in-flight", str(IN_FLIGHT)]),
    }[kind]
    argv = [
        *("-m", module, "--port", str(clouds.huawei.port), "--project-id", PROJECT_ID),
        *("--ids-file", str(ids_file), *extra),
    ]
    client = processes.start(f"{kind} client ({jobs} jobs)", argv, CREDENTIALS, pipe_stdout=True)
    line = client.read_line(timeout=120)  # imports first: slow on a busy machine
    if line != READY:
        raise client.failure(f"said {line[:200]!r} instead of {READY!r}")
    return client, lambda: _client_mark(client, clouds.huawei.process)


def _pause(process: Process) -> None:
    process.check_running()
    os.kill(process.pid, signal.SIGSTOP)


def _resume(process: Process) -> None:
    os.kill(process.pid, signal.SIGCONT)


KINDS = ("ours", "sdk", "bare")


def measure(
    processes: Processes, clouds: Clouds, jobs: int, workdir: Path, plan: PollingPlan
) -> dict[str, Any]:
    """Ours, the SDK and bare, taking turns on the CPU; every figure a total over turns."""
    contenders: dict[str, tuple[Process, Callable[[], Mark]]] = {}
    simulator = clouds.huawei.process
    try:
        for kind in KINDS:  # each one paused as soon as it polls, so the next starts alone
            progress(f"polling {jobs} jobs: starting {kind}")
            if kind == "ours":
                contenders[kind] = _start_exporter(processes, clouds, jobs, workdir)
            else:
                contenders[kind] = _start_client(processes, clouds, jobs, workdir, kind)
            _pause(contenders[kind][0])
        for kind in KINDS:
            _resume(contenders[kind][0])
            time.sleep(plan.warmup)
            _pause(contenders[kind][0])
        progress(
            f"polling {jobs} jobs: {plan.runs} round(s) of turns of {plan.window:g} s "
            f"after {plan.warmup:g} s of warm-up each"
        )
        windows: dict[str, list[Window]] = {kind: [] for kind in KINDS}
        for index in range(plan.runs):
            for kind in KINDS[index % 3 :] + KINDS[: index % 3]:
                process, take_mark = contenders[kind]
                _resume(process)
                time.sleep(plan.settle)
                start = take_mark()
                time.sleep(plan.window)
                end = take_mark()
                _pause(process)
                windows[kind].append((start, end))
            simulator.check_running()
    finally:
        for process, _ in contenders.values():
            if process.popen.poll() is None:
                _resume(process)
            processes.stop(process)
    figures: dict[str, Any] = {
        kind: summarize(contenders[kind][0].name, windows[kind]) for kind in KINDS
    }
    for kind in KINDS:
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
    # The same ratios round by round (turns minutes apart at most): how much they move.
    for anchor in ("sdk", "bare"):
        figures[f"ours_vs_{anchor}_per_round"] = [
            mine / theirs
            for mine, theirs in zip(
                figures["ours"]["window_polls_per_cpu_s"],
                figures[anchor]["window_polls_per_cpu_s"],
                strict=True,
            )
        ]
    figures["loadavg"] = os.getloadavg()[0]
    return figures
