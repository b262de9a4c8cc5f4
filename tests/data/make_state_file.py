"""Write tests/data/state-v3.sqlite, the state file test_statefile.py loads: run it again with
`python -m tests.data.make_state_file` when the schema changes, and keep the old file as the
migration's input (state-v1.sqlite was written by the exporter at 3f9eeee, schema 1;
state-v2.sqlite by this script at a43478a, schema 2).

The file is made through the exporter's own life cycle, store and state file, as a running
exporter would make it: a failed config job, a job registered through the API, a job the config
stopped naming (retired), one forgotten after its retention, one deleted through the API, and a
voice training job registered through the API.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from exporter.config import JobConfig, Settings
from exporter.lifecycle import Lifecycle
from exporter.model import JobSnapshot, Phase, UpstreamError
from exporter.statefile import StateFile
from exporter.store import JobKey, Store
from tests.conftest import assessment

HERE = Path(__file__).resolve().parent
T0 = 1_700_000_000.0


def failed(job_id: str) -> JobSnapshot:
    return JobSnapshot(
        job_id=job_id,
        job_type="VOICE_ASSESS",
        state="FAILED",
        phase=Phase.FAILED,
        terminal=True,
        created_at=T0,
        updated_at=T0 + 600,
        finished_at=T0 + 600,
        failure_code="MSS.10030004",
        failure_reason="Voice assessment failed: audio could not be decoded.",
        assessments=(
            assessment(
                "snr",
                ">=20",
                "12",
                1,
                suggestion="检查录音环境",
                suggestion_en="Record somewhere quieter.",
            ),
        ),
        suggestion="重新录制",
        extra=(("voice_name", "demo"),),
    )


async def main(path: Path) -> None:
    now = [T0 + 1000]
    store = Store()
    store.track_changes = True
    settings = Settings(
        terminal_retention=3600,
        accounts={"hw": {"provider": "huawei_metastudio", "region": "r", "project_id": "0" * 32}},  # type: ignore[dict-item]
    )
    lifecycle = Lifecycle(store, settings, {"hw": "huawei_metastudio"}, wall=lambda: now[0])
    listed = [JobConfig(account="hw", id=job_id) for job_id in ("job-failed", "job-retired")]
    lifecycle.set_config_jobs([*listed, JobConfig(account="hw", id="job-gone")])
    lifecycle.register(JobConfig(account="hw", id="job-api", labels={"team": "voice"}))
    lifecycle.register(JobConfig(account="hw", id="job-deleted"))
    lifecycle.register(JobConfig(account="hw", id="job-training", kind="voice_training"))
    for job_id in ("job-failed", "job-gone"):
        store.record_success(JobKey("hw", job_id), failed(job_id), now[0])
    store.record_failure(JobKey("hw", "job-api"), UpstreamError("HTTP 500", status="500"), now[0])
    lifecycle.unregister(JobKey("hw", "job-deleted"))
    now[0] += 3600
    lifecycle.expire([JobKey("hw", "job-gone")])
    lifecycle.set_config_jobs(listed[:1])  # job-retired is no longer listed
    statefile = StateFile(path)
    await statefile.open()
    await statefile.write(store.take_changes())
    await statefile.close()
    with sqlite3.connect(path) as db:  # one self-contained file, no -wal beside it
        db.execute("PRAGMA journal_mode=DELETE")


if __name__ == "__main__":
    (HERE / "state-v3.sqlite").unlink(missing_ok=True)
    asyncio.run(main(HERE / "state-v3.sqlite"))
