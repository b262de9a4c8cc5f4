"""Durable state: every job's last known state (tracked or retired), the tombstones of forgotten
jobs, and the job-outcome counters, in SQLite.

So a restart resumes with the same jobs and shows their last state before the first poll, and
neither forgets a failure, nor counts one twice, nor brings back a forgotten job. SQLite in WAL
mode with `synchronous=NORMAL` survives a killed process (not a power cut) without an fsync per
write. All database work runs on one dedicated thread, off the event loop.

The format is versioned (`meta.schema`): explicit columns, and an explicit codec for the
snapshot's JSON. A file of an older version is migrated when opened; a newer one is refused.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from exporter.model import Assessment, JobSnapshot, Phase
from exporter.store import (
    JOB_DURATION_BUCKETS,
    Changes,
    Histogram,
    JobKey,
    JobState,
    PollError,
    Retired,
    Tombstone,
)

SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    account TEXT NOT NULL,
    job_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    source TEXT NOT NULL,
    labels TEXT NOT NULL,
    poll_interval REAL,
    failures INTEGER NOT NULL,
    polls INTEGER NOT NULL,
    last_poll_success INTEGER,
    last_poll_at REAL,
    last_success_at REAL,
    last_error TEXT,
    terminal_since REAL,
    first_seen_at REAL,
    duration_observed INTEGER NOT NULL,
    snapshot TEXT,
    retired_at REAL,
    kind TEXT,
    PRIMARY KEY (account, job_id)
);
CREATE TABLE tombstones (
    account TEXT NOT NULL,
    job_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    kind TEXT NOT NULL,
    forgotten_at REAL NOT NULL,
    named_at REAL NOT NULL,
    PRIMARY KEY (account, job_id)
);
CREATE TABLE failure_counts (
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    job_type TEXT NOT NULL,
    code TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (account, provider, job_type, code)
);
CREATE TABLE job_durations (
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    job_type TEXT NOT NULL,
    phase TEXT NOT NULL,
    bounds TEXT NOT NULL,
    counts TEXT NOT NULL,
    total REAL NOT NULL,
    PRIMARY KEY (account, provider, job_type, phase)
);
"""
_JOB_COLUMNS = (
    "account, job_id, provider, source, labels, poll_interval, failures, polls, "
    "last_poll_success, last_poll_at, last_success_at, last_error, terminal_since, "
    "first_seen_at, duration_observed, snapshot, retired_at, kind"
)
_JOB_MARKS = ", ".join("?" * len(_JOB_COLUMNS.split(",")))

T = TypeVar("T")
Counters = tuple[dict[tuple[str, str, str, str], int], dict[tuple[str, str, str, str], Histogram]]


class StateFileError(Exception):
    """The state file cannot be opened or read; the message names the file."""


# -- the snapshot codec --------------------------------------------------------------------

# An assessment's attributes beside `metric`, each stored as it is under its own name; one list
# for both directions, and a renamed attribute fails loudly instead of changing the file.
_ASSESSMENT_VALUES = (
    "expected",
    "actual",
    "suggestion",
    "suggestion_en",
    "status",
    "actual_value",
    "expected_min",
    "expected_max",
)


def encode_snapshot(snapshot: JobSnapshot) -> dict[str, Any]:
    """Field by field, so renaming a class attribute cannot silently change the file; the
    body hash is left out (hash() is seeded per process)."""
    return {
        "job_id": snapshot.job_id,
        "job_type": snapshot.job_type,
        "state": snapshot.state,
        "phase": snapshot.phase.value,
        "terminal": snapshot.terminal,
        "created_at": snapshot.created_at,
        "updated_at": snapshot.updated_at,
        "started_at": snapshot.started_at,
        "finished_at": snapshot.finished_at,
        "failure_code": snapshot.failure_code,
        "failure_reason": snapshot.failure_reason,
        "assessments": [
            {"metric": item.metric, **{name: getattr(item, name) for name in _ASSESSMENT_VALUES}}
            for item in snapshot.assessments
        ],
        "suggestion": snapshot.suggestion,
        "known_state": snapshot.known_state,
        "queue_id": snapshot.queue_id,
        "progress": snapshot.progress,
        "parse_errors": list(snapshot.parse_errors),
        "extra": [list(pair) for pair in snapshot.extra],
    }


def decode_snapshot(document: Mapping[str, Any]) -> JobSnapshot:
    """The inverse of `encode_snapshot`; also reads schema 1's snapshots (the same names)."""
    return JobSnapshot(
        job_id=str(document["job_id"]),
        job_type=str(document["job_type"]),
        state=str(document["state"]),
        phase=Phase(document["phase"]),
        terminal=bool(document["terminal"]),
        created_at=document.get("created_at"),
        updated_at=document.get("updated_at"),
        started_at=document.get("started_at"),
        finished_at=document.get("finished_at"),
        failure_code=document.get("failure_code"),
        failure_reason=document.get("failure_reason"),
        assessments=tuple(
            Assessment(
                metric=str(item["metric"]), **{name: item.get(name) for name in _ASSESSMENT_VALUES}
            )
            for item in document.get("assessments", ())
        ),
        suggestion=document.get("suggestion"),
        known_state=bool(document.get("known_state", True)),
        queue_id=document.get("queue_id"),
        progress=document.get("progress"),
        parse_errors=tuple(document.get("parse_errors", ())),
        extra=tuple((str(k), str(v)) for k, v in document.get("extra", ())),
    )


def job_row(state: JobState, retired_at: float | None) -> tuple[Any, ...]:
    error = state.last_error
    return (
        state.key.account,
        state.key.job_id,
        state.provider,
        state.source,
        orjson.dumps(dict(state.labels)).decode(),
        state.poll_interval,
        state.failures,
        state.polls,
        None if state.last_poll_success is None else int(state.last_poll_success),
        state.last_poll_at,
        state.last_success_at,
        None
        if error is None
        else orjson.dumps(
            {
                "reason": error.reason,
                "message": error.message,
                "code": error.code,
                "status": error.status,
            }
        ).decode(),
        state.terminal_since,
        state.first_seen_at,
        int(state.duration_observed),
        None if state.snapshot is None else orjson.dumps(encode_snapshot(state.snapshot)).decode(),
        retired_at,
        state.kind,
    )


def job_from_row(row: tuple[Any, ...]) -> tuple[JobState, float | None]:
    (
        account,
        job_id,
        provider,
        source,
        labels,
        poll_interval,
        failures,
        polls,
        last_poll_success,
        last_poll_at,
        last_success_at,
        last_error,
        terminal_since,
        first_seen_at,
        duration_observed,
        snapshot,
        retired_at,
        kind,
    ) = row
    error = None if last_error is None else orjson.loads(last_error)
    state = JobState(
        key=JobKey(account, job_id),
        provider=provider,
        labels=tuple(sorted((str(k), str(v)) for k, v in orjson.loads(labels).items())),
        snapshot=None if snapshot is None else decode_snapshot(orjson.loads(snapshot)),
        failures=int(failures),
        polls=int(polls),
        last_poll_success=None if last_poll_success is None else bool(last_poll_success),
        last_poll_at=last_poll_at,
        last_success_at=last_success_at,
        last_error=None
        if error is None
        else PollError(error["reason"], error["message"], error["code"], error["status"]),
        terminal_since=terminal_since,
        first_seen_at=first_seen_at,
        duration_observed=bool(duration_observed),
        source=source,
        poll_interval=poll_interval,
        kind=kind,
    )
    return state, retired_at


def _job_from_v1(key: JobKey, raw: str | bytes) -> JobState:
    """Schema 1 kept a JobState as one JSON document (dataclasses.asdict)."""
    document: dict[str, Any] = orjson.loads(raw)
    snapshot, error = document.get("snapshot"), document.get("last_error")
    return JobState(
        key=key,
        provider=str(document["provider"]),
        labels=tuple((str(k), str(v)) for k, v in document.get("labels", ())),
        snapshot=None if snapshot is None else decode_snapshot(snapshot),
        failures=int(document.get("failures", 0)),
        polls=int(document.get("polls", 0)),
        last_poll_success=document.get("last_poll_success"),
        last_poll_at=document.get("last_poll_at"),
        last_success_at=document.get("last_success_at"),
        last_error=None
        if error is None
        else PollError(error["reason"], error["message"], error["code"], error["status"]),
        terminal_since=document.get("terminal_since"),
        first_seen_at=document.get("first_seen_at"),
        duration_observed=bool(document.get("duration_observed", False)),
        source=str(document.get("source", "config")),
        poll_interval=document.get("poll_interval"),
    )


# -- the file ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    jobs: list[JobState] = field(default_factory=list)
    retired: list[Retired] = field(default_factory=list)
    tombstones: dict[JobKey, Tombstone] = field(default_factory=dict)
    failures: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    job_durations: dict[tuple[str, str, str, str], Histogram] = field(default_factory=dict)
    # Rows that could not be read (dropped: those jobs are polled afresh).
    unreadable: int = 0


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statefile")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def open(self) -> Loaded:
        """Open (creating or migrating it if needed) and read everything; StateFileError says
        why not, in one line naming the file."""
        try:
            return await self._run(self._open)
        except (sqlite3.Error, OSError, ValueError) as exc:
            await self.close()
            raise StateFileError(f"state_file {self.path}: {exc}") from None

    def _open(self) -> Loaded:
        db = sqlite3.connect(self.path, isolation_level=None)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        version = 0
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            version = int(row[0]) if row is not None else 0
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"schema version {version} is newer than this exporter's {SCHEMA_VERSION}: "
                "run a newer exporter, or move the file away to start afresh"
            )
        if version < SCHEMA_VERSION:
            with db:  # one transaction: a failed migration leaves the file as it was
                db.execute("BEGIN")
                if version == 1:
                    _migrate_from_v1(db)
                elif version == 2:
                    # Schema 3 adds each job's kind; schema 2's jobs were all of their cloud's
                    # default kind (NULL, as lifecycle.restore reads it).
                    db.execute("ALTER TABLE jobs ADD COLUMN kind TEXT")
                else:
                    _create_tables(db)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        return _read(db)

    async def write(self, changes: Changes) -> None:
        """Apply a batch of changes in one transaction."""
        if changes:
            await self._run(self._write, changes)

    def _write(self, changes: Changes) -> None:
        db = self._db
        if db is None:
            return
        marks = _JOB_MARKS
        with db:  # one transaction
            db.execute("BEGIN")
            db.executemany(
                f"INSERT OR REPLACE INTO jobs ({_JOB_COLUMNS}) VALUES ({marks})",  # noqa: S608
                [job_row(state, None) for state in changes.jobs]
                + [job_row(was.state, was.at) for was in changes.retired],
            )
            db.executemany("DELETE FROM jobs WHERE account = ? AND job_id = ?", changes.jobs_gone)
            db.executemany(
                "INSERT OR REPLACE INTO tombstones VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (key.account, key.job_id, t.provider, t.kind, t.at, t.named_at)
                    for key, t in changes.tombstones.items()
                ],
            )
            db.executemany(
                "DELETE FROM tombstones WHERE account = ? AND job_id = ?",
                changes.tombstones_gone,
            )
            if changes.failures is not None:
                db.execute("DELETE FROM failure_counts")
                db.executemany(
                    "INSERT INTO failure_counts VALUES (?, ?, ?, ?, ?)",
                    [(*bucket, count) for bucket, count in changes.failures.items()],
                )
            if changes.job_durations is not None:
                db.execute("DELETE FROM job_durations")
                db.executemany(
                    "INSERT INTO job_durations VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            *bucket,
                            orjson.dumps(h.buckets).decode(),
                            orjson.dumps(h.counts).decode(),
                            h.total,
                        )
                        for bucket, h in changes.job_durations.items()
                    ],
                )

    async def close(self) -> None:
        """Close the file; again is a no-op (a failed open has closed it already)."""
        if self._closed:
            return
        self._closed = True

        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(_close)
        self._executor.shutdown(wait=True)


def _create_tables(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _read(db: sqlite3.Connection) -> Loaded:
    loaded = Loaded()
    unreadable = 0
    for row in db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs"):  # noqa: S608
        try:
            state, retired_at = job_from_row(row)
        except (TypeError, ValueError, KeyError, AttributeError, orjson.JSONDecodeError):
            unreadable += 1  # an unreadable row is dropped, not fatal: polled afresh
            continue
        if retired_at is None:
            loaded.jobs.append(state)
        else:
            loaded.retired.append(Retired(state, retired_at))
    for account, job_id, provider, kind, at, named_at in db.execute(
        "SELECT account, job_id, provider, kind, forgotten_at, named_at FROM tombstones"
    ):
        loaded.tombstones[JobKey(account, job_id)] = Tombstone(provider, kind, at, named_at)
    for account, provider, job_type, code, count in db.execute(
        "SELECT account, provider, job_type, code, count FROM failure_counts"
    ):
        loaded.failures[(account, provider, job_type, code)] = int(count)
    for account, provider, job_type, phase, bounds, counts, total in db.execute(
        "SELECT account, provider, job_type, phase, bounds, counts, total FROM job_durations"
    ):
        if tuple(orjson.loads(bounds)) != JOB_DURATION_BUCKETS:
            continue  # other buckets: the counts cannot be carried over
        loaded.job_durations[(account, provider, job_type, phase)] = Histogram(
            JOB_DURATION_BUCKETS, [int(c) for c in orjson.loads(counts)], float(total)
        )
    return Loaded(
        loaded.jobs,
        loaded.retired,
        loaded.tombstones,
        loaded.failures,
        loaded.job_durations,
        unreadable=unreadable,
    )


def _migrate_from_v1(db: sqlite3.Connection) -> None:
    """Schema 1: jobs(account, job_id, state JSON), forgotten(account, job_id, at), no counters.
    Its tombstones did not say which provider: lifecycle.restore fills it in."""
    db.execute("ALTER TABLE jobs RENAME TO jobs_v1")
    db.execute("ALTER TABLE forgotten RENAME TO forgotten_v1")
    db.execute("DROP TABLE meta")
    _create_tables(db)
    rows = []
    for account, job_id, raw in db.execute("SELECT account, job_id, state FROM jobs_v1"):
        try:
            rows.append(job_row(_job_from_v1(JobKey(account, job_id), raw), None))
        except (TypeError, ValueError, KeyError, AttributeError, orjson.JSONDecodeError):
            continue  # as in schema 1: an unreadable row is dropped, the job polled afresh
    db.executemany(
        f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({_JOB_MARKS})",  # noqa: S608
        rows,
    )
    db.execute(
        "INSERT INTO tombstones SELECT account, job_id, '', 'expired', at, at FROM forgotten_v1"
    )
    db.execute("DROP TABLE jobs_v1")
    db.execute("DROP TABLE forgotten_v1")
