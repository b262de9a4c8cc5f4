"""Shared helpers: promtool, and snapshots for store and collector tests."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from exporter.model import JobSnapshot, Phase
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


__all__ = ["Phase", "promtool_check_metrics", "snapshot"]
