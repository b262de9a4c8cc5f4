"""`python -m tests.bench._freshness_cloud`: a MetaStudio simulator holding the freshness stage's
jobs on a fast clock, behind the account's request quota.

The workload is a steady state: `alive` jobs running at any moment, each PROCESSING for a time
drawn from a lognormal, then SUCCEED (or, one in ten, FAILED) for good. Jobs alive at the plan's
start have ages drawn from the steady-state age distribution; later ones arrive as a Poisson
stream at the rate that keeps `alive` running (Little's law: rate = alive / mean duration). The
benchmark builds the same plan from the same seed, start and speed, so it knows the true moment
of every change without asking the simulator (`MetaStudioSimulator.transitions` would say the
same). Timestamps are milliseconds, so `lastupdate_time` is exact. Logging is at WARNING: no
access-log line per poll.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from aiohttp import web

from exporter.simulator.metastudio import (
    DEMO_ACCESS_KEY,
    DEMO_PROJECT_ID,
    DEMO_SECRET_KEY,
    MetaStudioSimulator,
)
from exporter.simulator.scripts import ENGINE_ERROR, JOB_TYPE, Lognormal, Script, Step

# Where the bench reads how many polls found their job running and how many found it ended.
PHASES_PATH = "/_bench/phases"
RUNNING = "PROCESSING"
SUCCEEDED = "SUCCEED"
FAILED = "FAILED"
# Simulated seconds a job runs: median 10 minutes, most within a factor e^0.5 (1.65) of it.
DURATIONS = Lognormal(median=600.0, sigma=0.5)
FAILED_SHARE = 0.1
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NAMESPACE = uuid.UUID("3b7e6a10-5c2d-4f8e-9a1b-7d6c5e4f3a2b")


@dataclass(frozen=True, slots=True)
class PlannedJob:
    job_id: str
    arrival: float  # simulated seconds from the plan's start; negative: running at the start
    duration: float  # simulated seconds in RUNNING
    outcome: str  # SUCCEEDED or FAILED

    @property
    def ends(self) -> float:
        return self.arrival + self.duration

    @property
    def script(self) -> Script:
        failure = ENGINE_ERROR if self.outcome == FAILED else None
        return Script(
            JOB_TYPE,
            (Step(RUNNING, self.duration), Step(self.outcome, math.inf, failure)),
        )


@dataclass(frozen=True, slots=True)
class Workload:
    """The planned jobs, and how simulated seconds map onto the real clock."""

    jobs: tuple[PlannedJob, ...]
    start: float  # epoch seconds at which simulated time 0 falls
    speed: float  # simulated seconds per real second

    def real(self, simulated: float) -> float:
        return self.start + simulated / self.speed

    @property
    def initial(self) -> list[PlannedJob]:
        """The jobs running at the start: the exporter's config lists them."""
        return [job for job in self.jobs if job.arrival < 0]

    @property
    def arriving(self) -> list[PlannedJob]:
        """The jobs that arrive later, in order: registered through the API when they do."""
        return sorted((job for job in self.jobs if job.arrival >= 0), key=lambda j: j.arrival)

    def changes(self) -> Iterator[tuple[str, str, float]]:
        """(job id, new state, epoch seconds) of every change: a job's arrival (it appears,
        running) and its end. Jobs running at the start arrived before it: no arrival."""
        for job in self.jobs:
            if job.arrival >= 0:
                yield job.job_id, RUNNING, self.real(job.arrival)
            yield job.job_id, job.outcome, self.real(job.ends)


def plan_workload(alive: int, horizon: float, seed: int, start: float, speed: float) -> Workload:
    """The same jobs for the same arguments, in the simulator and in the benchmark: `alive`
    running at simulated time 0, and arrivals until `horizon` simulated seconds."""
    rng = random.Random(seed)
    alive_at_start = DURATIONS.length_biased()
    jobs: list[PlannedJob] = []

    def outcome() -> str:
        return FAILED if rng.random() < FAILED_SHARE else SUCCEEDED

    def job_id() -> str:
        return str(uuid.uuid5(_NAMESPACE, f"freshness-{seed}-{len(jobs)}"))

    for _ in range(alive):
        # A job alive at a random moment: duration length-biased, age uniform within it.
        duration = alive_at_start.draw(rng)
        jobs.append(PlannedJob(job_id(), -rng.uniform(0.0, duration), duration, outcome()))
    rate = alive / DURATIONS.mean
    arrival = rng.expovariate(rate)
    while arrival < horizon:
        jobs.append(PlannedJob(job_id(), arrival, DURATIONS.draw(rng), outcome()))
        arrival += rng.expovariate(rate)
    return Workload(tuple(jobs), start, speed)


def simulator(workload: Workload) -> MetaStudioSimulator:
    sim = MetaStudioSimulator(
        project_id=DEMO_PROJECT_ID,
        credentials={DEMO_ACCESS_KEY: DEMO_SECRET_KEY},
        speed=workload.speed,
    )
    for job in workload.jobs:
        sim.add_job(job.job_id, job.script, millis=True, started=workload.real(job.arrival))
    return sim


def count_phases(workload: Workload, app: web.Application) -> None:
    """Count every request by what its job was doing (`running`, `ended`, or `other`: no
    such job, or not arrived), throttled ones too, served at `PHASES_PATH`: where a mode
    spends its requests."""
    counts = {"running": 0, "ended": 0, "other": 0}
    jobs = {job.job_id: job for job in workload.jobs}

    @web.middleware
    async def phases(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == PHASES_PATH:
            return web.json_response(counts)
        job = jobs.get(request.match_info.get("job_id", ""))
        now = time.time()
        if job is None or now < workload.real(job.arrival):
            counts["other"] += 1
        else:
            counts["running" if now < workload.real(job.ends) else "ended"] += 1
        return await handler(request)

    app.middlewares.insert(0, phases)  # outside the quota: refused requests count too


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench._freshness_cloud")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--alive", type=int, required=True)
    parser.add_argument("--horizon", type=float, required=True, help="simulated seconds")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--start", type=float, required=True, help="epoch seconds")
    parser.add_argument("--speed", type=float, required=True)
    parser.add_argument("--quota-rps", type=float, required=True, help="real requests/s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    workload = plan_workload(args.alive, args.horizon, args.seed, args.start, args.speed)
    sim = simulator(workload)
    sim.quota.configure(args.quota_rps)
    app = sim.app()
    count_phases(workload, app)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
