"""`python -m tests.bench._refresh_cloud`: a Tencent CI simulator holding the refresh stage's
jobs, on the real clock (speed 1).

Every job is in one queue with one tag and walks `Submitted` -> `Running` -> `Success` once
(no looping), with durations drawn from a seeded generator: the benchmark builds the same plan
from the same seed and start time, so it knows the true moment of every state change without
asking the simulator. Logging is at WARNING, as in `tests.bench._simulator`, so that thousands
of polls a second leave no access-log line each.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from exporter.simulator.scripts import Script, Step
from exporter.simulator.tencent_ci import (
    DEMO_QUEUE_IDS,
    DEMO_TENCENT_BUCKET,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    TencentCISimulator,
)

QUEUE_ID = DEMO_QUEUE_IDS[0]
TAG = "Translation"
# The states every job walks through, in order; a later state implies the earlier ones passed.
STATES = ("Submitted", "Running", "Success")
# Seconds a job holds each state, drawn uniformly: (low, high).
SUBMITTED_SECONDS = (0.0, 60.0)
RUNNING_SECONDS = (20.0, 600.0)
_NAMESPACE = uuid.UUID("9c1d3e5f-2b4a-4c6d-8e0f-a1b2c3d4e5f6")


@dataclass(frozen=True, slots=True)
class PlannedJob:
    job_id: str
    started: float  # epoch seconds: the job is Submitted from here
    submitted_seconds: float
    running_seconds: float

    @property
    def script(self) -> Script:
        return Script(
            "refresh_bench",
            (
                Step(STATES[0], self.submitted_seconds),
                Step(STATES[1], self.running_seconds),
                Step(STATES[2], math.inf),
            ),
        )

    def changes(self) -> list[tuple[str, float]]:
        """(new state, epoch seconds) for every change the simulator makes to this job."""
        running = self.started + self.submitted_seconds
        return [(STATES[1], running), (STATES[2], running + self.running_seconds)]


def plan_jobs(count: int, seed: int, started: float) -> list[PlannedJob]:
    """The same jobs for the same arguments, in the simulator and in the benchmark."""
    rng = random.Random(seed)
    return [
        PlannedJob(
            "a" + uuid.uuid5(_NAMESPACE, f"refresh-{seed}-{index}").hex,
            started,
            rng.uniform(*SUBMITTED_SECONDS),
            rng.uniform(*RUNNING_SECONDS),
        )
        for index in range(count)
    ]


def simulator(jobs: Sequence[PlannedJob]) -> TencentCISimulator:
    sim = TencentCISimulator(
        bucket=DEMO_TENCENT_BUCKET,
        credentials={DEMO_TENCENT_SECRET_ID: DEMO_TENCENT_SECRET_KEY},
        speed=1.0,
    )
    for job in jobs:
        sim.add_job(job.job_id, job.script, tag=TAG, queue_id=QUEUE_ID, started=job.started)
    return sim


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench._refresh_cloud")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--started", type=float, required=True, help="epoch seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    sim = simulator(plan_jobs(args.jobs, args.seed, args.started))
    web.run_app(sim.app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
