"""What the simulated clouds know that a poller can only estimate: the true moment of every
state change (`transitions`), checked against what polls report over a run on a fake clock;
and job durations drawn from a lognormal per job type."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from exporter.simulator import Lognormal, LognormalScripts, Step
from exporter.simulator import scripts as sc
from exporter.simulator.tencent_ci import parse_time
from tests.support import FakeClock
from tests.test_simulator_metastudio import fetch as fetch_huawei
from tests.test_simulator_metastudio import make_sim as make_huawei
from tests.test_simulator_tencent import details, get_xml
from tests.test_simulator_tencent import make_sim as make_tencent

Client = TestClient[web.Request, web.Application]
# Queued, running and terminal, each a few simulated seconds; looping, so passes repeat.
TENCENT_STEPS = (("Submitted", 7.0), ("Running", 11.0), ("Success", 5.0))


def latest(changes: list[tuple[str, float]]) -> tuple[str, float]:
    assert changes, "a started job has entered at least its first state"
    return changes[-1]


async def test_metastudio_transitions_are_what_polls_report_as_lastupdate_time(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> None:
    sim = make_huawei(clock, speed=3.0)
    sim.add_job("happy", sc.HAPPY_PATH, millis=True, loop=True, started=clock.now - 100)
    sim.add_job("failed", sc.FAILED, millis=True, started=clock.now)
    sim.add_job("seconds", sc.AUDIT_LOOP, loop=True, started=clock.now - 1234.5)
    client: Client = await aiohttp_client(sim.app())
    reported: dict[str, list[tuple[str, float]]] = {job_id: [] for job_id in sim.job_ids()}
    start = clock.now
    # Two passes of the happy path at speed 3, a poll of each job every 7 real seconds.
    while clock.now < start + 2 * sc.HAPPY_PATH.seconds / 3:
        for job_id, seen in reported.items():
            status, body = await fetch_huawei(client, clock, job_id)
            assert status == 200
            divisor = 1 if job_id == "seconds" else 1000
            state, updated = body["state"], body["lastupdate_time"] / divisor
            truth = latest(sim.transitions(job_id))
            assert state == truth[0]
            if job_id == "seconds":  # whole seconds, as the API sends them without millis
                assert updated == math.floor(truth[1]) or updated == int(truth[1])
            else:
                assert updated == round(truth[1] * 1000) / 1000
            if not seen or seen[-1] != (state, updated):
                seen.append((state, updated))
        last_poll = clock.now
        clock.now += 7.0

    truth = sim.transitions("happy", until=last_poll)
    # Every step lasts longer than the 21 simulated seconds between polls: they saw each change.
    in_run = [(state, round(at * 1000) / 1000) for state, at in truth if at > start]
    assert len(in_run) > 10
    assert reported["happy"][1:] == in_run
    # Looping: the first step again, once per pass.
    assert [state for state, _ in truth].count("CREATING") == 3
    assert [state for state, _ in sim.transitions("failed")] == [
        "CREATING",
        "SYSTEM_AUDITING",
        "WAITING",
        "PROCESSING",
        "FAILED",
    ]
    times = [at for _, at in truth]
    assert times == sorted(times)


def test_transitions_stop_at_until_and_end_with_a_forced_state(clock: FakeClock) -> None:
    sim = make_huawei(clock)
    sim.add_job("job", [("CREATING", 10.0), ("PROCESSING", 20.0), ("SUCCEED", 30.0)])
    start = clock.now
    assert sim.transitions("job") == [("CREATING", start)]
    assert sim.transitions("job", until=start + 15) == [
        ("CREATING", start),
        ("PROCESSING", start + 10),
    ]
    clock.now += 12
    sim.set_override("job", state="FAILED")
    clock.now += 100
    assert sim.transitions("job") == [
        ("CREATING", start),
        ("PROCESSING", start + 10),
        ("FAILED", start + 12),
    ]
    with pytest.raises(KeyError):
        sim.transitions("unknown")


async def test_tencent_transitions_are_what_polls_report_through_a_paused_queue(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> None:
    sim = make_tencent(clock, speed=1.0)
    job_id = "a" + "7" * 32
    sim.add_job(job_id, TENCENT_STEPS, queue_id="q1", loop=True, started=clock.now)
    client: Client = await aiohttp_client(sim.app())
    start = clock.now
    for tick in range(120):
        clock.now = start + tick
        if tick == 25:  # two seconds into the second pass's Submitted: held at once
            sim.pause_queue("q1")
        if tick == 45:
            sim.resume_queue("q1")
        (detail,) = details(await get_xml(client, clock, f"/ai_jobs/{job_id}"))
        state, at = latest(sim.transitions(job_id))
        assert detail["State"] == state
        if state == "Success":
            assert parse_time(detail["EndTime"]) == math.floor(at)
        if state == "Running":
            assert parse_time(detail["StartTime"]) == math.floor(at)
        if state == "Pause":
            assert tick in range(25, 45)
    changes = sim.transitions(job_id, until=start + 60)
    assert ("Pause", start + 25) in changes
    assert changes[changes.index(("Pause", start + 25)) + 1] == ("Submitted", start + 45)
    times = [at for _, at in changes]
    assert times == sorted(times)


def test_lognormal_durations_have_the_median_asked_for_and_are_seeded_per_job_type() -> None:
    durations = Lognormal(median=600.0, sigma=0.5)
    drawn = [durations.draw(random.Random(index)) for index in range(4001)]
    assert statistics.median(drawn) == pytest.approx(600.0, rel=0.05)
    assert statistics.fmean(drawn) == pytest.approx(durations.mean, rel=0.05)
    biased = durations.length_biased()
    assert biased.median == pytest.approx(600.0 * math.exp(0.25))

    def scripts(seed: int) -> LognormalScripts:
        return LognormalScripts("VOICE_ASSESS", [("PROCESSING", durations)], seed=seed)

    first, again, other = scripts(7), scripts(7), scripts(8)
    done = Step("SUCCEED", math.inf)
    drawn_first = [first.script(done) for _ in range(5)]
    # Another job type's draws in between change nothing of this type's.
    LognormalScripts("OTHER", [("PROCESSING", durations)], seed=7).script(done)
    assert [again.script(done) for _ in range(5)] == drawn_first
    assert [other.script(done) for _ in range(5)] != drawn_first
    script = drawn_first[0]
    assert script.name == "VOICE_ASSESS"
    assert [step.state for step in script.steps] == ["PROCESSING", "SUCCEED"]
    assert 0 < script.steps[0].seconds < math.inf
    with pytest.raises(ValueError, match="median"):
        Lognormal(median=0.0, sigma=0.5)
    with pytest.raises(ValueError, match="sigma"):
        Lognormal(median=1.0, sigma=-0.1)
