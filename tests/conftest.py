"""Shared helpers: promtool, and snapshots for store and collector tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from exporter.assessment import parse_bounds, parse_value
from exporter.model import Assessment, JobSnapshot, Phase
from exporter.simulator.metastudio import MetaStudioSimulator
from exporter.simulator.scripts import HAPPY_PATH
from exporter.states import HUAWEI_TABLE
from exporter.store import JobKey, JobState, PollError
from tests.support import (
    T0,
    ExporterProcess,
    FakeClock,
    eventually,
    http,
    serving,
    start_exporter,
)
from tests.test_job_api import TOKEN


def promtool_check_metrics(exposition: bytes) -> str:
    """Lint an exposition with the real promtool; returns its complaints ('' when clean)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    return (result.stdout + result.stderr).decode()


def snapshot(state: str, job_id: str = "job-1", **fields: object) -> JobSnapshot:
    phase, known = HUAWEI_TABLE.phase_of(state)
    return JobSnapshot(
        job_id=job_id,
        job_type="VOICE_ASSESS",
        state=state,
        phase=phase,
        terminal=state in {"SUCCEED", "FAILED"},
        known_state=known,
        **fields,  # type: ignore[arg-type]
    )


def assessment(
    metric: str, expected: str, actual: str, status: int, **suggestions: str
) -> Assessment:
    """An assessment as the Huawei provider makes it from the cloud's strings: the numbers come
    from the exporter's own parser, not from the test's arithmetic. `suggestions`:
    `suggestion`, `suggestion_en`."""
    low, high = parse_bounds(expected)
    return Assessment(
        metric=metric,
        expected=expected,
        actual=actual,
        status=status,
        suggestion=suggestions.get("suggestion"),
        suggestion_en=suggestions.get("suggestion_en"),
        actual_value=parse_value(actual),
        expected_min=low,
        expected_max=high,
    )


def job_with_every_field_set() -> JobState:
    """A job whose every field differs from its default, so a field the codec drops shows."""
    snapshot = JobSnapshot(
        job_id="job-1",
        job_type="t",
        state="AUDIT_FAILED",
        phase=Phase.FAILED,
        terminal=True,
        created_at=1.0,
        updated_at=2.0,
        started_at=3.0,
        finished_at=4.0,
        failure_code="c",
        failure_reason="r",
        assessments=(
            Assessment("m", "e", "a", "s", "s-en", 1, 2.0, 3.0, 4.0),
            Assessment("n"),
        ),
        suggestion="s",
        known_state=False,
        queue_id="q",
        progress=0.5,
        parse_errors=("f",),
        extra=(("k", "v"),),
    )
    for item in fields(JobSnapshot):
        if item.default is not MISSING and item.compare:
            assert getattr(snapshot, item.name) != item.default, item.name
    state = JobState(
        key=JobKey("hw", "job-1"),
        provider="huawei_metastudio",
        labels=(("a", "1"), ("b", "2")),
        snapshot=snapshot,
        failures=3,
        polls=7,
        last_poll_success=False,
        last_poll_at=10.0,
        last_success_at=9.0,
        last_error=PollError("upstream", "HTTP 500", "X", "500"),
        terminal_since=15.0,
        first_seen_at=5.0,
        duration_observed=True,
        source="api",
        poll_interval=42.0,
        kind="voice_training",
    )
    for item in fields(JobState):
        if item.default is not MISSING:
            assert getattr(state, item.name) != item.default, item.name
    return state


@pytest.fixture
def run_exporter(tmp_path: Path) -> Iterator[Callable[[str], ExporterProcess]]:
    """Start the real exporter as a process on a config text, ready; stopped after the test."""
    started: list[ExporterProcess] = []

    def start(text: str) -> ExporterProcess:
        config = tmp_path / "config.yaml"
        config.write_text(text)
        instance = start_exporter(
            "--config",
            str(config),
            log=tmp_path / f"exporter-{len(started)}.log",
            env={"CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk", "T_API": TOKEN},
        )
        started.append(instance)
        eventually(
            lambda: http("GET", instance.url + "/readyz")[0] == 200,
            within=20,
            what="the exporter is ready",
        )
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables; loopback must never go through one."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
async def five_job_cloud() -> AsyncIterator[tuple[MetaStudioSimulator, str]]:
    """A MetaStudio simulator with jobs job-0..job-4 on loopback, and its URL."""
    sim = MetaStudioSimulator(
        project_id="0123456789abcdef0123456789abcdef", credentials={"ak": "sk"}
    )
    for n in range(5):
        sim.add_job(f"job-{n}", HAPPY_PATH)
    async with serving(sim) as url:
        yield sim, url


@pytest.fixture
def clock() -> FakeClock:
    """A simulated clock standing at `T0` until the test moves it."""
    return FakeClock(T0)


__all__ = ["Phase", "job_with_every_field_set", "promtool_check_metrics", "snapshot"]
