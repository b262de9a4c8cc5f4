"""The state file's format: committed files of each schema load, an older one is migrated, a
newer one is refused in one line, and the codec carries every field."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import fields
from pathlib import Path

import pytest

from exporter.config import Settings
from exporter.lifecycle import Lifecycle
from exporter.model import Assessment, JobSnapshot
from exporter.statefile import (
    SCHEMA_VERSION,
    Loaded,
    StateFile,
    StateFileError,
    decode_snapshot,
    encode_snapshot,
    job_from_row,
    job_row,
)
from exporter.store import JOB_DURATION_BUCKETS, JobKey, PollError, Store, Tombstone
from tests.conftest import job_with_every_field_set
from tests.support import run_cli

DATA = Path(__file__).resolve().parent / "data"


async def _load(path: Path) -> Loaded:
    statefile = StateFile(path)
    try:
        return await statefile.open()
    finally:
        await statefile.close()


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copyfile(DATA / name, target)
    return target


async def test_a_state_file_made_by_this_version_loads(tmp_path: Path) -> None:
    loaded = await _load(_copy("state-v3.sqlite", tmp_path))
    jobs = {state.key.job_id: state for state in loaded.jobs}
    assert sorted(jobs) == ["job-api", "job-failed", "job-training"]
    assert (jobs["job-training"].kind, jobs["job-api"].kind) == ("voice_training", "short_job")
    failed = jobs["job-failed"]
    assert failed.snapshot is not None
    assert (failed.source, failed.failures, failed.duration_observed) == ("config", 1, True)
    assert failed.snapshot.failure_code == "MSS.10030004"
    assert failed.snapshot.assessments[0].suggestion == "检查录音环境"
    assert failed.snapshot.extra == (("voice_name", "demo"),)
    api = jobs["job-api"]
    assert (api.source, api.labels, api.last_poll_success) == ("api", (("team", "voice"),), False)
    assert api.last_error == PollError("upstream", "HTTP 500", None, "500")
    assert [(was.state.key.job_id, was.at) for was in loaded.retired] == [
        ("job-retired", 1_700_004_600.0)
    ]
    assert loaded.tombstones == {
        JobKey("hw", "job-gone"): Tombstone(
            "huawei_metastudio", "expired", 1_700_004_600.0, 1_700_004_600.0
        ),
        JobKey("hw", "job-deleted"): Tombstone(
            "huawei_metastudio", "deleted", 1_700_001_000.0, 1_700_001_000.0
        ),
    }
    assert loaded.failures == {("hw", "huawei_metastudio", "VOICE_ASSESS", "MSS.10030004"): 2}
    durations = loaded.job_durations[("hw", "huawei_metastudio", "VOICE_ASSESS", "failed")]
    assert (sum(durations.counts), durations.total) == (2, 1200.0)
    assert loaded.unreadable == 0


async def test_a_schema_1_file_is_migrated_keeping_its_jobs_and_tombstones(tmp_path: Path) -> None:
    """state-v1.sqlite was written by the exporter at 3f9eeee (one JSON document a job)."""
    path = _copy("state-v1.sqlite", tmp_path)
    loaded = await _load(path)
    jobs = {state.key.job_id: state for state in loaded.jobs}
    assert sorted(jobs) == ["job-api", "job-failed"]
    failed = jobs["job-failed"]
    assert failed.snapshot is not None
    assert (failed.failures, failed.duration_observed, failed.terminal_since) == (
        1,
        True,
        1_700_000_650.0,
    )
    assert failed.snapshot.assessments == (
        Assessment(
            metric="snr",
            expected=">=20",
            actual="12",
            status=1,
            actual_value=12.0,
            expected_min=20.0,
        ),
    )
    assert failed.snapshot.body_hash is None
    assert (jobs["job-api"].poll_interval, jobs["job-api"].source) == (60.0, "api")
    # Schema 1 did not say which provider a tombstone's job had: restore fills it in.
    assert loaded.tombstones == {
        JobKey("hw", "job-gone"): Tombstone("", "expired", 1_700_000_500.0, 1_700_000_500.0)
    }
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "forgotten" not in tables
    again = await _load(path)  # a migrated file opens as any other
    assert (again.jobs, again.tombstones) == (loaded.jobs, loaded.tombstones)


async def test_a_schema_2_file_is_migrated_and_its_jobs_resume_as_their_clouds_default_kind(
    tmp_path: Path,
) -> None:
    """state-v2.sqlite was written at a43478a, before jobs had kinds."""
    path = _copy("state-v2.sqlite", tmp_path)
    loaded = await _load(path)
    assert sorted(state.key.job_id for state in loaded.jobs) == ["job-api", "job-failed"]
    assert {state.kind for state in loaded.jobs} == {None}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (
            str(SCHEMA_VERSION),
        )
    store = Store()
    settings = Settings(
        accounts={"hw": {"provider": "huawei_metastudio", "region": "r", "project_id": "p"}}  # type: ignore[dict-item]
    )
    Lifecycle(store, settings, {"hw": "huawei_metastudio"}).restore(loaded)
    state = store.get(JobKey("hw", "job-api"))
    assert state is not None
    assert state.kind == "short_job"
    again = await _load(path)  # a migrated file opens as any other
    assert again.jobs == loaded.jobs


async def test_a_newer_file_is_refused_in_one_line_naming_it_and_both_versions(
    tmp_path: Path,
) -> None:
    path = _copy("state-v3.sqlite", tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StateFileError) as raised:
        await _load(path)
    message = str(raised.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"this exporter's {SCHEMA_VERSION}" in message
    # The file is left as it was, for the newer exporter.
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    assert row == (str(SCHEMA_VERSION + 1),)


def test_the_exporter_refuses_a_newer_state_file_in_one_line_and_exits_2(tmp_path: Path) -> None:
    path = _copy("state-v3.sqlite", tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    config = tmp_path / "config.yaml"
    config.write_text(f"listen: 127.0.0.1:0\nstate_file: {path}\n")
    result = run_cli("--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "state_file" in line]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert "schema version 99" in lines[0]
    assert f"this exporter's {SCHEMA_VERSION}" in lines[0]


def test_the_codec_carries_every_field_of_a_job_and_its_snapshot() -> None:
    state = job_with_every_field_set()
    assert job_from_row(job_row(state, 99.0)) == (state, 99.0)
    assert state.snapshot is not None
    assert decode_snapshot(encode_snapshot(state.snapshot)) == state.snapshot


def test_the_codec_leaves_out_the_body_hash_which_is_seeded_per_process() -> None:
    state = job_with_every_field_set()
    assert state.snapshot is not None
    encoded = encode_snapshot(JobSnapshot(**{**_asdict(state.snapshot), "body_hash": 12345}))
    assert "body_hash" not in encoded
    assert decode_snapshot(encoded).body_hash is None


def _asdict(snapshot: JobSnapshot) -> dict[str, object]:
    return {item.name: getattr(snapshot, item.name) for item in fields(JobSnapshot)}


async def test_counters_with_other_buckets_are_left_behind_not_misread(tmp_path: Path) -> None:
    path = _copy("state-v3.sqlite", tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE job_durations SET bounds = '[1.0, 2.0]'")
    loaded = await _load(path)
    assert loaded.job_durations == {}
    assert len(JOB_DURATION_BUCKETS) > 2
