"""Which jobs exist, where each came from, and when one is forgotten: the one owner of a job's
life cycle. Config reloads, API registrations and deletions, discovery, the poller's retention
check, restores from the state file and housekeeping all go through here; the store holds the
data and the poller only schedules and polls what is tracked.

The rules (docs/operations.md, "Terminal jobs"):
- A job is tracked while a source names it: the config's `jobs`, an API registration, or
  discovery. When the config stops naming it, or its account goes, it is *retired*: no series,
  no polls, but its state is kept, so a source that names it again resumes it where it was
  (nothing counted twice) instead of starting afresh.
- A terminal job is *forgotten* `terminal_retention` after it became terminal; an API DELETE
  forgets a job at once. A forgotten job keeps a tombstone: while any source still names it
  (config, discovery, a repeated registration) it stays forgotten: not polled, no series, its
  failure and duration never counted again. Only an API DELETE followed by a POST starts the
  same id afresh, on purpose.
- A tombstone lives while the config lists the job, and then for the account's time to live
  after the last time a source named it: discovery's `lookback` (a forgotten job older than that
  can no longer be listed), or 24 h for an account without discovery. Retired states expire
  alike. Both are pruned in memory and in the state file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from pydantic import ValidationError

from exporter.clouds import BY_NAME
from exporter.config import Discovery, JobConfig, Settings, kind_problem
from exporter.model import JobSnapshot
from exporter.statefile import Loaded
from exporter.store import JobKey, JobState, Store, Tombstone, Transition

log = logging.getLogger(__name__)

SOURCE_CONFIG = "config"
SOURCE_API = "api"
SOURCE_DISCOVERY = "discovery"
# Tombstone kinds.
EXPIRED = "expired"
DELETED = "deleted"
# How long a tombstone or a retired job outlives the last source that named it, for an account
# without discovery: discovery's default lookback.
DEFAULT_TTL: float = Discovery.model_fields["lookback"].default

_HINTS = {
    SOURCE_CONFIG: "it stays forgotten while `jobs` lists it: remove it from `jobs`",
    SOURCE_API: "registering it again does not bring it back: DELETE it, then POST it, to "
    "track it afresh",
    SOURCE_DISCOVERY: "discovery will not add it again",
}


class RegistrationError(Exception):
    """A job the exporter will not take; the message is for the API's caller."""


class UnknownAccount(RegistrationError):
    pass


class Conflict(RegistrationError):
    pass


class Forgotten(Conflict):
    pass


class JobLimitReached(RegistrationError):
    pass


class NotMine(RegistrationError):
    pass


class InvalidKind(RegistrationError):
    pass


def job_kind(provider: str, kind: str | None) -> str | None:
    """`kind`, or the provider's default kind (None for a cloud with one kind)."""
    if kind is not None:
        return kind
    cloud = BY_NAME.get(provider)
    return cloud.kinds[0] if cloud is not None and cloud.kinds else None


class Scheduler(Protocol):
    """What the poller offers the life cycle: new jobs to schedule. Jobs that stop being tracked
    need no call: the poller skips whatever the store no longer tracks."""

    def jobs_added(
        self, keys: Sequence[JobKey], found: Sequence[Transition | None] | None = None
    ) -> None:
        """`found`: what recording the jobs' first snapshots did, for jobs discovery found."""


class Lifecycle:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        accounts: Mapping[str, str],
        *,
        ttls: Mapping[str, float] | None = None,
        wall: Callable[[], float] = time.time,
        owns: Callable[[str, str], bool] = lambda account, job_id: True,
    ) -> None:
        """`accounts` maps each account to its provider; `ttls` is discovery's lookback of the
        accounts that have discovery."""
        self._store = store
        self._wall = wall
        self._owns = owns
        self._settings = settings
        self._accounts: dict[str, str] = {}
        self._ttls: dict[str, float] = {}
        # The config's jobs (of known accounts and this shard): their tombstones are held.
        self._config: dict[JobKey, JobConfig] = {}
        self._scheduler: Scheduler | None = None
        self.reconfigure(settings, accounts, ttls)

    def attach(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def _added(
        self, keys: Sequence[JobKey], found: Sequence[Transition | None] | None = None
    ) -> None:
        if keys and self._scheduler is not None:
            self._scheduler.jobs_added(keys, found)

    # -- configuration ----------------------------------------------------------------------

    def reconfigure(
        self,
        settings: Settings,
        accounts: Mapping[str, str],
        ttls: Mapping[str, float] | None = None,
    ) -> None:
        """New settings and accounts (then `set_config_jobs`). An account that is gone takes
        its series, statuses and counters along; its jobs are retired."""
        now = self._wall()
        gone = {name for name, provider in self._accounts.items() if accounts.get(name) != provider}
        for key in [key for key in self._store.job_keys() if key.account in gone]:
            self._store.retire(key, now)
        for name in gone:
            self._store.remove_account(name)
        self._settings = settings
        self._accounts = dict(accounts)
        self._ttls = dict(ttls or {})
        self._store.set_accounts(accounts)

    def set_config_jobs(self, jobs: Iterable[JobConfig]) -> None:
        """Make the config's jobs exactly `jobs`: new ones start, dropped ones retire. Jobs
        registered through the API or found by discovery stay."""
        now = self._wall()
        wanted = {
            JobKey(job.account, job.id): job
            for job in jobs
            if job.account in self._accounts and self._owns(job.account, job.id)
        }
        for key in [key for key in self._store.job_keys() if key not in wanted]:
            state = self._store.get(key)
            if state is not None and state.source == SOURCE_CONFIG:
                self._store.retire(key, now)
        # A tombstone lives while the config names the job, and its time to live starts when
        # the config stops naming it.
        for key in (self._config.keys() | wanted.keys()) & self._store.tombstones.keys():
            self._name(key, now)
        self._config = wanted
        added = []
        for key, job in wanted.items():
            if key in self._store.tombstones:
                log.debug("job_stays_forgotten", extra={"account": key.account, "job_id": job.id})
            elif self._admit(key, job, SOURCE_CONFIG):
                added.append(key)
        self._added(added)

    def _admit(self, key: JobKey, job: JobConfig, source: str) -> bool:
        """Track a job (resuming a retired one); True when it was not tracked before."""
        is_new = key not in self._store
        provider = self._accounts[key.account]
        retired = self._store.retired.get(key)
        if is_new and retired is not None:
            if retired.state.provider == provider:
                self._store.revive(key)
            else:  # the account now names another cloud: nothing to resume
                self._store.forget(key)
        self._store.track(
            key,
            provider,
            job.labels,
            source=source,
            poll_interval=job.poll_interval,
            kind=job_kind(provider, job.kind),
        )
        return is_new

    def _name(self, key: JobKey, now: float) -> None:
        """A source named a forgotten job: its tombstone's time to live starts again."""
        tombstone = self._store.tombstones[key]
        if tombstone.named_at < now:
            self._store.bury(key, Tombstone(tombstone.provider, tombstone.kind, tombstone.at, now))

    # -- the API ----------------------------------------------------------------------------

    def register(self, job: JobConfig) -> bool:
        """Track a job handed over at run time; True if new, False if already tracked alike.

        Raises Conflict when the id is tracked with other labels, interval or kind, Forgotten
        for a job forgotten after its retention, JobLimitReached past `max_jobs`,
        UnknownAccount, InvalidKind for a kind its cloud does not have, and NotMine when another
        shard owns the job.
        """
        if job.account not in self._accounts:
            raise UnknownAccount(f"unknown account {job.account!r}")
        account = self._settings.accounts.get(job.account)
        if account is not None and (problem := kind_problem(job.kind, account)):
            raise InvalidKind(f"kind: {problem}")
        key = JobKey(job.account, job.id)
        if not self._owns(job.account, job.id):
            raise NotMine(f"job {job.id!r} of {job.account!r} belongs to another shard")
        tombstone = self._store.tombstones.get(key)
        if tombstone is not None and tombstone.kind == EXPIRED:
            self._name(key, self._wall())
            raise Forgotten(
                f"job {job.id!r} of {job.account!r} finished and was forgotten at "
                f"{_iso(tombstone.at)} (terminal_retention); it is not tracked again: "
                "DELETE it, then POST it, to track it afresh"
            )
        current = self._store.get(key)
        if current is not None:
            if (
                current.labels != tuple(sorted(job.labels.items()))
                or current.poll_interval != job.poll_interval
                or current.kind != job_kind(current.provider, job.kind)
            ):
                raise Conflict(
                    f"job {job.id!r} of {job.account!r} is already tracked "
                    f"(from {current.source}) with different labels, poll_interval or kind"
                )
            return False
        self._check_room()
        if tombstone is not None:  # deleted through the API: a new registration starts afresh
            self._store.unbury(key)
            self._store.forget(key)
        if key in self._config:  # listed, and held back by the deletion: as the config says
            self._admit(key, self._config[key], SOURCE_CONFIG)
        else:
            self._admit(key, job, SOURCE_API)
        self._added([key])
        return True

    def unregister(self, key: JobKey) -> None:
        """Forget a registered or discovered job now; its series go at the next scrape.

        A job already forgotten after its retention is marked deleted, so a POST may start it
        afresh. Raises KeyError if unknown, and Conflict for a job of the config file.
        """
        now = self._wall()
        state = self._store.get(key)
        if state is None:
            tombstone = self._store.tombstones.get(key)
            if tombstone is None or tombstone.kind == DELETED:
                raise KeyError(key)
            self._store.bury(key, Tombstone(tombstone.provider, DELETED, tombstone.at, now))
            return
        if state.source == SOURCE_CONFIG:
            raise Conflict(f"job {key.job_id!r} comes from the config file: remove it there")
        self._store.bury(key, Tombstone(state.provider, DELETED, now, now))

    def _check_room(self) -> None:
        tracked = len(self._store)
        if tracked >= self._settings.max_jobs:
            raise JobLimitReached(
                f"{tracked} jobs tracked: max_jobs ({self._settings.max_jobs}) reached"
            )

    # -- discovery --------------------------------------------------------------------------

    def add_discovered(
        self,
        account: str,
        snapshots: Iterable[JobSnapshot],
        labels: Mapping[str, str],
        kind: str | None = None,
    ) -> int:
        """Track jobs a list call found (of `kind`); their snapshot counts as a first poll.
        Returns how many were new."""
        if account not in self._accounts:
            return 0
        now = self._wall()
        keys: list[JobKey] = []
        found: list[Transition | None] = []
        for snapshot in snapshots:
            key = JobKey(account, snapshot.job_id)
            if key in self._store or not self._owns(account, key.job_id):
                continue
            if key in self._store.tombstones:
                self._name(key, now)
                continue
            try:
                self._check_room()
            except JobLimitReached:
                log.warning(
                    "job_limit_reached",
                    extra={"account": account, "max_jobs": self._settings.max_jobs},
                )
                break
            try:
                job = JobConfig(account=account, id=snapshot.job_id, labels=dict(labels), kind=kind)
            except ValidationError:
                # An id no config could name (spaces, over 256 characters): not ours to track.
                log.warning(
                    "discovered_id_refused", extra={"account": account, "job_id": key.job_id[:300]}
                )
                continue
            self._admit(key, job, SOURCE_DISCOVERY)
            keys.append(key)
            found.append(self._store.record_success(key, snapshot, now))
        self._added(keys, found)
        return len(keys)

    # -- retention --------------------------------------------------------------------------

    def expires_at(self, state: JobState) -> float | None:
        """When a terminal job is forgotten (wall clock); None while it is not terminal."""
        if state.terminal_since is None:
            return None
        return state.terminal_since + self._settings.terminal_retention

    def expire(self, keys: Iterable[JobKey]) -> list[JobKey]:
        """Forget the jobs whose retention is over; returns the others still tracked."""
        now = self._wall()
        live = []
        for key in keys:
            state = self._store.get(key)
            if state is None:
                continue
            until = self.expires_at(state)
            if until is None or now < until:
                live.append(key)
                continue
            self._store.bury(key, Tombstone(state.provider, EXPIRED, now, now))
            log.info(
                "job_forgotten",
                extra={
                    "account": key.account,
                    "job_id": key.job_id,
                    "source": state.source,
                    "hint": _HINTS.get(state.source, ""),
                },
            )
        return live

    def ttl(self, account: str) -> float:
        return self._ttls.get(account, DEFAULT_TTL)

    def prune(self) -> int:
        """Drop tombstones and retired states whose time to live is over; returns how many."""
        now = self._wall()
        held = self._config
        pruned = 0
        for key, tombstone in list(self._store.tombstones.items()):
            if key not in held and now - tombstone.named_at > self.ttl(key.account):
                self._store.unbury(key)
                pruned += 1
        for key, retired in list(self._store.retired.items()):
            if now - retired.at > self.ttl(key.account):
                self._store.forget(key)
                pruned += 1
        return pruned

    # -- restart ----------------------------------------------------------------------------

    def restore(self, loaded: Loaded) -> None:
        """Resume from the state file (before `set_config_jobs`): registered and discovered jobs
        are tracked again with their last state; config jobs wait, retired, for the config to
        name them; so do the jobs of accounts that are gone or of another shard now. The
        job-outcome counters carry on from where they were."""
        now = self._wall()
        self._store.restore_counters(loaded.failures, loaded.job_durations)
        for key, tombstone in loaded.tombstones.items():
            if not tombstone.provider:  # schema 1 did not keep it
                provider = self._accounts.get(key.account, "")
                tombstone = Tombstone(provider, tombstone.kind, tombstone.at, tombstone.named_at)
            self._store.restore_tombstone(key, tombstone)
        for was in loaded.retired:
            self._store.restore_retired(was)
        added = []
        for state in loaded.jobs:
            key = state.key
            if state.kind is None:  # saved before jobs had kinds: its cloud's default
                state = replace(state, kind=job_kind(state.provider, None))
            if (
                state.source == SOURCE_CONFIG
                or self._accounts.get(key.account) != state.provider
                or not self._owns(key.account, key.job_id)
            ):
                self._store.restore(state)
                self._store.retire(key, now)
            else:
                self._store.restore(state)
                added.append(key)
        self._added(added)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


__all__ = [
    "SOURCE_API",
    "SOURCE_CONFIG",
    "SOURCE_DISCOVERY",
    "Conflict",
    "Forgotten",
    "InvalidKind",
    "JobLimitReached",
    "Lifecycle",
    "NotMine",
    "RegistrationError",
    "UnknownAccount",
]
