"""What both simulated clouds do alike: jobs that follow scripts on an accelerated clock, with
faults injected on demand. Each cloud adds its own job fields, routes and answer format."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web

from exporter.simulator.faults import FaultDialect, Faults, respond
from exporter.simulator.quota import Quota
from exporter.simulator.scripts import Script

BodyT = TypeVar("BodyT")


@dataclass(frozen=True, slots=True)
class Override(Generic[BodyT]):
    """What a test pinned a job to report (`set_override`), and since when."""

    state: str | None
    body: BodyT | None
    status: int
    since: float


class ScriptedJob(Protocol):
    override: Any  # an Override of the cloud's body type, or None

    @property
    def script(self) -> Script: ...

    @property
    def started(self) -> float: ...

    @property
    def loop(self) -> bool: ...


JobT = TypeVar("JobT", bound=ScriptedJob)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a job stands in its script at one moment."""

    step: int
    created: float  # epoch seconds at which the current pass of the script began
    offsets: tuple[float, ...]  # simulated seconds into the pass at which steps 0..step began
    elapsed: float  # simulated seconds into the pass


class ScriptedSimulator(Generic[JobT]):
    """A job's state is where `(clock() - started) * speed` simulated seconds fall in its script;
    nothing runs in the background, so a fake clock moves every job at once."""

    def __init__(self, *, clock: Callable[[], float], speed: float) -> None:
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError("speed must be a positive number")
        self._clock = clock
        self._speed = speed
        self._jobs: dict[str, JobT] = {}
        # Injected failures (errors, slowness, broken bodies) by job id or for every request.
        self.faults = Faults()
        # The account's request quota (off until configured) and its counts of answers.
        self.quota = Quota(clock)

    def _start(self, job_id: str, started: float | None) -> float:
        """When a new job begins its script: `started`, or now. ValueError if it exists."""
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} already exists")
        return self._clock() if started is None else started

    def remove_job(self, job_id: str) -> None:
        """Forget a job, so that polls of it get the cloud's answer for an unknown job (KeyError
        if unknown)."""
        del self._jobs[job_id]

    def job_ids(self) -> list[str]:
        return list(self._jobs)

    def _pin(self, job_id: str, state: str | None, body: object, status: int) -> None:
        """`set_override`'s work, which each cloud documents for its own answers."""
        override = Override(state=state, body=body, status=status, since=self._clock())
        self._jobs[job_id].override = override

    def clear_override(self, job_id: str) -> None:
        self._jobs[job_id].override = None

    def transitions(self, job_id: str, until: float | None = None) -> list[tuple[str, float]]:
        """Every state the job entered up to `until` (default: now), with the epoch second it
        entered it: the truth a poller's reports can be checked against (KeyError if unknown).

        The first entry is the job's start in its first step; a looping job enters its first
        step again at each new pass. A state forced by `set_override` is entered at the moment
        it was set, and the script's later changes are not listed after it.
        """
        job = self._jobs[job_id]
        end = self._clock() if until is None else until
        override = job.override
        forced = None if override is None or override.state is None else override
        script_end = end if forced is None else min(end, forced.since)
        changes: list[tuple[str, float]] = []
        total = job.script.seconds
        passes = 1
        if job.loop and math.isfinite(total):
            passes = max(1, math.floor((script_end - job.started) * self._speed / total) + 1)
        for number in range(self._first_listed_pass(job), passes):
            created, offset = job.started + number * total / self._speed, 0.0
            for step in job.script.steps:
                # As `_position` computes it, so that times match the answers' to the bit.
                wall = self._wall_time(job, created + offset / self._speed)
                if wall > script_end:
                    break
                if not changes or changes[-1][0] != step.state:
                    changes.append((step.state, wall))
                offset += step.seconds
        if forced is not None and forced.state is not None and forced.since <= end:
            changes.append((forced.state, forced.since))
        return changes

    def _first_listed_pass(self, job: JobT) -> int:
        """The first pass whose times `transitions` can still tell (a cloud with paused queues
        keeps only the current pass's)."""
        return 0

    def _wall_time(self, job: JobT, moment: float) -> float:
        """The epoch second at which the job's script clock reads `moment` (they differ only
        where a cloud stops a job's script, as a paused queue does)."""
        return moment

    def _position(self, job: JobT, now: float) -> Position:
        steps = job.script.steps
        total = job.script.seconds
        elapsed = max(0.0, (now - job.started) * self._speed)
        created = job.started
        if job.loop and math.isfinite(total):
            passes, elapsed = divmod(elapsed, total)
            created += passes * total / self._speed
        index, offsets = 0, [0.0]
        # Past the end of a script that does not loop, the job stays in its last step.
        while index < len(steps) - 1 and elapsed >= offsets[index] + steps[index].seconds:
            offsets.append(offsets[index] + steps[index].seconds)
            index += 1
        return Position(step=index, created=created, offsets=tuple(offsets), elapsed=elapsed)

    async def _answer_or_fault(
        self,
        request: web.Request,
        job_ids: Iterable[str],
        dialect: FaultDialect,
        answer: Callable[[web.Request], Awaitable[web.Response]],
    ) -> web.StreamResponse:
        """`answer(request)`, unless a fault set for one of `job_ids` (or for every job) hits."""
        hit = self.faults.take(job_ids)
        if hit is None:
            return await answer(request)
        return await respond(request, hit, dialect, lambda: answer(request))
