"""Shared helpers: promtool, and snapshots for store and collector tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest

from exporter.model import JobSnapshot, Phase
from exporter.simulator.metastudio import MetaStudioSimulator, start_simulator
from exporter.simulator.scripts import HAPPY_PATH
from exporter.states import phase_of


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
    phase, known = phase_of("huawei_metastudio", state)
    return JobSnapshot(
        job_id=job_id,
        job_type="VOICE_ASSESS",
        state=state,
        phase=phase,
        terminal=state in {"SUCCEED", "FAILED"},
        known_state=known,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
async def five_job_cloud() -> AsyncIterator[tuple[MetaStudioSimulator, str]]:
    """A MetaStudio simulator with jobs job-0..job-4 on loopback, and its URL."""
    sim = MetaStudioSimulator(
        project_id="0123456789abcdef0123456789abcdef", credentials={"ak": "sk"}
    )
    for n in range(5):
        sim.add_job(f"job-{n}", HAPPY_PATH)
    runner, url = await start_simulator(sim)
    yield sim, url
    await runner.cleanup()


__all__ = ["Phase", "promtool_check_metrics", "snapshot"]
