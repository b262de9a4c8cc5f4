"""Voice training jobs through the whole exporter: a job walking every state shows each state and
phase in /metrics and counts each failure; discovery and list rounds keep 500 training jobs fresh
in a few requests a round. A real exporter app against the simulated MetaStudio over loopback;
requests are counted where the cloud sees them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter import refresh
from exporter.app import create_app
from exporter.config import load_settings
from exporter.model import Phase
from exporter.simulator.metastudio import MetaStudioSimulator
from exporter.simulator.scripts import HAPPY_PATH
from exporter.simulator.training_scripts import TRAINING_HAPPY, TRAINING_TOUR
from exporter.states import HUAWEI_STATES
from tests.support import (
    FAST_POLLING,
    Handler,
    ServerFactory,
    Watched,
    scrape,
    scrape_until,
    serving,
    value,
)

PROJECT = "0123456789abcdef0123456789abcdef"
AK, SK, TOKEN = "AKTRAINING0000000000", "sk-training", "iam-token-training"
TOUR, HAPPY, SHORT = "tour-0001", "happy-0001", "short-0001"
HOUR = 3600.0


@dataclass
class SteppedClock:
    """The simulated cloud's clock, moved by the test: each state is reached on purpose."""

    now: float

    def __call__(self) -> float:
        return self.now


def _account(url: str, extra: str = "", auth: str = "{ak_env: T_AK, sk_env: T_SK}") -> str:
    return f"""accounts:
  hw:
    provider: huawei_metastudio
    region: cn-north-4
    project_id: "{PROJECT}"
    endpoint: "{url}"
    api_budget_rps: 0
    auth: {auth}
{extra}"""


async def _exporter(aiohttp_server: ServerFactory, tmp_path: Path, text: str) -> TestServer:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    environ = {"T_AK": AK, "T_SK": SK, "T_TOKEN": TOKEN}
    return await aiohttp_server(create_app(load_settings(path), environ=environ))


async def _document(server: TestServer, job_id: str) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url(f"/api/v1/jobs/hw/{job_id}")) as response,
    ):
        assert response.status == 200
        document: dict[str, object] = orjson.loads(await response.read())
        return document


async def test_a_training_job_walking_every_state_shows_each_state_phase_and_failure(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    # Long ago enough that every step, however far the clock is moved, is in the past. An IAM
    # token: a signature's date would be days off the simulated cloud's clock.
    clock = SteppedClock(time.time() - 100 * HOUR)
    sim = MetaStudioSimulator(project_id=PROJECT, credentials={}, tokens=[TOKEN], clock=clock)
    sim.add_training_job(TOUR, TRAINING_TOUR, job_type="FLEXUS", started=clock.now)
    sim.add_training_job(HAPPY, TRAINING_HAPPY, job_type="MIDDLE", started=clock.now)
    sim.add_job(SHORT, HAPPY_PATH, started=clock.now)
    jobs = (
        "jobs:\n"
        f"  - {{account: hw, id: {TOUR}, kind: voice_training}}\n"
        f"  - {{account: hw, id: {HAPPY}, kind: voice_training}}\n"
        f"  - {{account: hw, id: {SHORT}}}\n"
    )
    async with serving(sim) as url:
        config = FAST_POLLING + _account(url, jobs, auth="{token_env: T_TOKEN}")
        server = await _exporter(aiohttp_server, tmp_path, config)
        # Every change of both training jobs, in the order they happen.
        changes = sorted(
            (at, job_id, state)
            for job_id in (TOUR, HAPPY)
            for state, at in sim.transitions(job_id, until=clock.now + 60 * HOUR)
        )
        seen_states: set[str] = set()
        seen_phases: set[str] = set()
        failures = {TOUR: 0, HAPPY: 0}
        previous = {TOUR: Phase.UNKNOWN, HAPPY: Phase.UNKNOWN}
        for at, job_id, state in changes:
            clock.now = at + 1
            phase = HUAWEI_STATES[state]
            if phase is Phase.FAILED and previous[job_id] is not Phase.FAILED:
                failures[job_id] += 1
            previous[job_id] = phase

            def shows(text: str, job_id: str = job_id, state: str = state) -> bool:
                return value(text, "cloudjob_job_state", job_id=job_id, state=state) == 1

            text = await scrape_until(server, shows)
            assert value(text, "cloudjob_job_phase", job_id=job_id, phase=phase.value) == 1
            assert value(text, "cloudjob_job_failures_total", job_id=job_id) == failures[job_id]
            seen_states.add(state)
            seen_phases.add(phase.value)
            if state == "AUDIT_FAILED":
                document = await _document(server, job_id)
                assert document["kind"] == "voice_training"
                assert document["job_type"] == "FLEXUS"
                details = document["details"]
                assert isinstance(details, dict)
                assert details["reject_times"] == "1"
                assert {"voice_name", "language"} <= details.keys()
                failure = document["failure"]
                assert isinstance(failure, dict)
                assert failure["reason"]
        assert seen_states == set(HUAWEI_STATES)
        assert seen_phases == {"pending", "running", "failed", "succeeded"}
        # The bounce through AUDIT_FAILED and the final FAILED both count (and the tour's
        # SPLIT_FAILED and USER_REVIEW_REJECT): once each, by the cloud's code.
        text = await scrape(server)
        assert failures[TOUR] == 4
        assert value(text, "cloudjob_job_failures_total", job_id=TOUR) == 4
        by_code = {
            code: value(text, "cloudjob_failures_total", job_type="FLEXUS", code=code)
            for code in ("MSS.10040002", "MSS.10040003", "MSS.10040004", "MSS.10040006")
        }
        assert by_code == dict.fromkeys(by_code, 1.0), by_code
        assert value(text, "cloudjob_job_info", job_id=HAPPY, job_type="MIDDLE") == 1
        assert value(text, "cloudjob_job_info", job_id=SHORT, job_type="VOICE_ASSESS") == 1
        assert value(text, "cloudjob_job_assessment_actual", job_id=HAPPY, metric="snr") is not None
        happy = await _document(server, HAPPY)
        details = happy["details"]
        assert isinstance(details, dict)
        assert details["asset_id"]
        assert happy["failure"] is None
        # The training jobs' runs went into the duration histogram under their types.
        for job_type, phase in (("FLEXUS", "failed"), ("MIDDLE", "succeeded")):
            count = value(
                text,
                "cloudjob_completed_job_duration_seconds_count",
                job_type=job_type,
                phase=phase,
            )
            assert count == 1, (job_type, count)


@dataclass
class CountingCloud:
    """The training requests the simulated cloud saw: list pages, and look-ups by job id."""

    sim: MetaStudioSimulator
    pages: Counter[str] = field(default_factory=Counter)  # by offset
    lookups: Counter[str] = field(default_factory=Counter)

    async def watch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        tail = request.path.split("/voice-training-manage/user/", 1)[-1]
        if tail == "jobs":
            self.pages[request.query["offset"]] += 1
        elif tail.startswith("jobs/"):
            self.lookups[tail.removeprefix("jobs/")] += 1
        return await handler(request)

    @property
    def requests(self) -> int:
        return sum(self.pages.values()) + sum(self.lookups.values())


TRAINING_JOBS = 500
ROUND = 0.5


async def test_500_discovered_training_jobs_cost_at_most_ten_requests_a_refresh_round(
    aiohttp_server: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A busy CI machine may delay a round past three intervals: coverage must not lapse here.
    monkeypatch.setattr(refresh, "STALE_ROUNDS", 100)
    now = time.time()
    sim = MetaStudioSimulator(project_id=PROJECT, credentials={AK: SK}, clock=time.time)
    ids = [f"train-{n:03}" for n in range(TRAINING_JOBS)]
    for n, job_id in enumerate(ids):
        # Spread over the script's first days: every state but the two that end a job.
        sim.add_training_job(job_id, TRAINING_HAPPY, started=now - 600 - 60 * n)
    sim.add_job(SHORT, HAPPY_PATH, started=now)
    counting = CountingCloud(sim)
    config = (
        f"poll_interval: {ROUND}s\nterminal_poll_interval: 1h\nmax_retries: 0\n"
        "request_timeout: 5\n"
        + _account("{url}", "    discover: {interval: 1h, labels: {team: voice}}\n")
        + f"jobs:\n  - {{account: hw, id: {SHORT}}}\n"
    )
    async with serving(Watched(sim, counting.watch)) as url:
        server = await _exporter(aiohttp_server, tmp_path, config.replace("{url}", url))
        await scrape_until(
            server,
            lambda t: value(t, "cloudjob_discovered_jobs_total", account="hw") == TRAINING_JOBS,
            within=30,
        )
        await asyncio.sleep(3 * ROUND)  # the first rounds, with discovery's own walk, are over
        requests, rounds = counting.requests, counting.pages["0"]
        lookups = counting.lookups.copy()
        await asyncio.sleep(12 * ROUND)
        rounds = counting.pages["0"] - rounds  # every round's walk starts at offset 0
        per_round = (counting.requests - requests) / rounds
        print(f"{TRAINING_JOBS} training jobs: {per_round:.2f} requests a round ({rounds} rounds)")  # noqa: T201
        assert rounds >= 5, rounds
        assert per_round <= 10, per_round
        # None of the covered jobs was looked up on its own, and every one is fresh.
        text = await scrape(server)
        assert value(text, "cloudjob_jobs_tracked", source="discovery") == TRAINING_JOBS
        looked_up = {job for job in counting.lookups - lookups if job in set(ids)}
        assert not looked_up, looked_up

        # A job that ends leaves the list of unfinished jobs: one look-up reads its end.
        ending = ids[7]
        before = counting.lookups[ending]
        sim.set_override(ending, state="SUCCEED")
        await scrape_until(
            server,
            lambda t: value(t, "cloudjob_job_state", job_id=ending, state="SUCCEED") == 1,
        )
        await asyncio.sleep(4 * ROUND)
        assert counting.lookups[ending] - before == 1
