"""Durable state: registered and discovered jobs, and every job's last known state, in SQLite.

So a restart resumes with the same jobs and shows their last state before the first poll, and
neither forgets a failure nor counts a finished job's duration twice. SQLite in WAL mode with
`synchronous=NORMAL` survives a killed process (not a power cut) without an fsync per write.
All database work runs on one dedicated thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from exporter.model import Assessment, JobSnapshot, Phase
from exporter.store import JobKey, JobState, PollError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    account TEXT NOT NULL,
    job_id TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (account, job_id)
);
CREATE TABLE IF NOT EXISTS forgotten (
    account TEXT NOT NULL,
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (account, job_id)
);
"""


class StateFileError(Exception):
    """The state file cannot be opened or read; the message names the file."""


def encode_state(state: JobState) -> bytes:
    document = asdict(state)
    document.pop("key")
    if document["snapshot"] is not None:
        del document["snapshot"]["body_hash"]  # hash() is seeded per process
    return orjson.dumps(document)


def decode_state(key: JobKey, raw: str | bytes) -> JobState:
    document: dict[str, Any] = orjson.loads(raw)
    snapshot = document.pop("snapshot")
    error = document.pop("last_error")
    return JobState(
        key=key,
        labels=tuple(tuple(pair) for pair in document.pop("labels")),
        snapshot=None if snapshot is None else _decode_snapshot(snapshot),
        last_error=None if error is None else PollError(**error),
        **document,
    )


def _decode_snapshot(document: dict[str, Any]) -> JobSnapshot:
    return JobSnapshot(
        **{
            **document,
            "phase": Phase(document["phase"]),
            "assessments": tuple(Assessment(**item) for item in document["assessments"]),
            "parse_errors": tuple(document["parse_errors"]),
            "extra": tuple(tuple(pair) for pair in document["extra"]),
        }
    )


@dataclass(frozen=True, slots=True)
class Loaded:
    jobs: list[JobState]
    forgotten: dict[JobKey, float]


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statefile")
        self._db: sqlite3.Connection | None = None

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def open(self) -> Loaded:
        """Open (creating it if needed) and read everything; StateFileError says why not."""
        try:
            loaded: Loaded = await self._run(self._open)
        except (sqlite3.Error, OSError, ValueError) as exc:
            await self.close()
            raise StateFileError(f"state_file {self.path}: {exc}") from None
        return loaded

    def _open(self) -> Loaded:
        db = sqlite3.connect(self.path, isolation_level=None)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise ValueError(f"schema version {row[0]}, this exporter reads {SCHEMA_VERSION}")
        jobs = []
        for account, job_id, raw in db.execute("SELECT account, job_id, state FROM jobs"):
            key = JobKey(account, job_id)
            try:
                jobs.append(decode_state(key, raw))
            except (TypeError, ValueError, KeyError):
                continue  # an unreadable row is dropped, not fatal: the job is polled afresh
        forgotten = {
            JobKey(account, job_id): at
            for account, job_id, at in db.execute("SELECT account, job_id, at FROM forgotten")
        }
        return Loaded(jobs, forgotten)

    async def write(
        self, changed: Iterable[JobState], removed: Mapping[JobKey, float | None]
    ) -> None:
        """Apply a batch of changes in one transaction."""
        rows = [(s.key.account, s.key.job_id, encode_state(s)) for s in changed]
        gone = dict(removed)
        if rows or gone:
            await self._run(self._write, rows, gone)

    def _write(self, rows: list[tuple[str, str, bytes]], gone: dict[JobKey, float | None]) -> None:
        db = self._db
        if db is None:
            return
        with db:  # one transaction
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)", rows)
            for key, tombstone in gone.items():
                db.execute(
                    "DELETE FROM jobs WHERE account = ? AND job_id = ?", (key.account, key.job_id)
                )
                if tombstone is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO forgotten VALUES (?, ?, ?)",
                        (key.account, key.job_id, tombstone),
                    )

    async def prune_forgotten(self, older_than: float) -> None:
        await self._run(self._prune, older_than)

    def _prune(self, older_than: float) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM forgotten WHERE at < ?", (older_than,))

    async def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(_close)
        self._executor.shutdown(wait=True)
