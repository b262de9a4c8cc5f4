"""Random sequences of polls, reloads, restarts, registrations, deletions, discovery runs and
account removals against a real Store, Lifecycle, Poller and StateFile (a fake clock, a fake
cloud), with the lifecycle's invariants checked after every step.

Each cloud job moves at most once, from PROCESSING to FAILED or SUCCEED, and has a failure code
and a job type of its own, so each job's failures and durations have series of their own: the
test knows exactly how often each may be counted. The clock moves less than `terminal_retention` a
step and never reaches a tombstone's time to live (pruning has unit tests of its own).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from exporter.config import JobConfig, Settings
from exporter.lifecycle import DELETED, EXPIRED, Lifecycle, RegistrationError
from exporter.model import JobSnapshot, Phase, ProviderError
from exporter.poller import Poller
from exporter.statefile import StateFile
from exporter.store import JobKey, JobState, Store
from tests.support import FakeClock

ACCOUNTS = ("a1", "a2")
# j0 has failed and j1 has succeeded when the test starts; j2 runs until a step ends it.
JOB_IDS = ("j0", "j1", "j2")
KEYS = [JobKey(account, job_id) for account in ACCOUNTS for job_id in JOB_IDS]
RETENTION = 10.0
CREATED = 500.0


class Cloud:
    """Every job of every account: running, until the test makes it fail or succeed."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.finished: dict[JobKey, tuple[str, float]] = {}
        for account in ACCOUNTS:
            self.finished[JobKey(account, "j0")] = ("FAILED", CREATED + 60)
            self.finished[JobKey(account, "j1")] = ("SUCCEED", CREATED + 60)
        self.polled: list[JobKey] = []

    def snapshot(self, key: JobKey) -> JobSnapshot:
        state, at = self.finished.get(key, ("PROCESSING", 0.0))
        phase = {"FAILED": Phase.FAILED, "SUCCEED": Phase.SUCCEEDED}.get(state, Phase.RUNNING)
        return JobSnapshot(
            job_id=key.job_id,
            job_type=f"T-{key.account}-{key.job_id}",
            state=state,
            phase=phase,
            terminal=state != "PROCESSING",
            created_at=CREATED,
            finished_at=at if state != "PROCESSING" else None,
            failure_code=f"E-{key.account}-{key.job_id}" if state == "FAILED" else None,
        )


class FakeProvider:
    provider = "huawei_metastudio"
    batch_size = 1

    def __init__(self, account: str, cloud: Cloud) -> None:
        self.account = account
        self.cloud = cloud

    async def fetch_many(
        self,
        job_ids: Sequence[str],
        known: Mapping[str, JobSnapshot],
        kinds: Mapping[str, str] | None = None,
    ) -> Mapping[str, JobSnapshot | ProviderError]:
        keys = [JobKey(self.account, job_id) for job_id in job_ids]
        self.cloud.polled.extend(keys)
        return {key.job_id: self.cloud.snapshot(key) for key in keys}


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = Path(tempfile.mkdtemp(prefix="lifecycle-"))
        self.clock = FakeClock(1000.0)
        self.cloud = Cloud(self.clock)
        self.accounts = set(ACCOUNTS)
        self.listed: set[JobKey] = set(KEYS)
        # The model: each job's life (a new one only after DELETE then POST), the lives in
        # which the exporter saw it failed or finished, what each counter should read, and
        # the life in which it was forgotten after its retention.
        self.life = dict.fromkeys(KEYS, 0)
        self.seen_failed: dict[JobKey, set[int]] = {key: set() for key in KEYS}
        self.seen_finished: dict[JobKey, set[int]] = {key: set() for key in KEYS}
        self.failures = dict.fromkeys(KEYS, 0)
        self.durations = dict.fromkeys(KEYS, 0)
        self.forgotten_in: dict[JobKey, int] = {}
        self._start()

    def teardown(self) -> None:
        self.loop.run_until_complete(self._stop())
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- the system under test ----------------------------------------------------------

    def _settings(self) -> Settings:
        return Settings(
            poll_interval=2.0,
            terminal_poll_interval=3.0,
            terminal_retention=RETENTION,
            accounts={
                name: {  # type: ignore[misc]
                    "provider": "huawei_metastudio",
                    "region": "r",
                    "project_id": "0" * 32,
                }
                for name in sorted(self.accounts)
            },
            jobs=[
                JobConfig(account=key.account, id=key.job_id)
                for key in KEYS
                if key in self.listed and key.account in self.accounts
            ],
            state_file=self.directory / "state.db",
        )

    def _providers(self) -> dict[str, FakeProvider]:
        return {name: FakeProvider(name, self.cloud) for name in sorted(self.accounts)}

    def _start(self) -> None:
        config = self._settings()
        providers = self._providers()
        self.store = Store()
        self.store.track_changes = True
        self.lifecycle = Lifecycle(
            self.store,
            config,
            {name: p.provider for name, p in providers.items()},
            wall=self.clock.time,
        )
        self.poller = Poller(
            self.store,
            self.lifecycle,
            providers,  # type: ignore[arg-type]
            config,
            wall=self.clock.time,
            monotonic=self.clock.time,
            sleep=self.clock.sleep,
            rng=random.Random(0),
        )
        self.statefile = StateFile(self.directory / "state.db")
        self.lifecycle.restore(self.loop.run_until_complete(self.statefile.open()))
        self.lifecycle.set_config_jobs(config.jobs)
        self.lifecycle.prune()

    async def _stop(self) -> None:
        await self.statefile.write(self.store.take_changes())
        await self.statefile.close()

    def _fingerprint(self) -> tuple[object, ...]:
        """What a restart must keep; poll counts and times are written only with other changes
        (the next poll renews them), so they are left out."""
        view = self.store.view()

        def durable(state: JobState) -> JobState:
            return replace(state, polls=0, last_poll_at=None, last_success_at=None)

        return (
            {job.key: durable(job) for job in view.jobs},
            {key: durable(was.state) for key, was in self.store.retired.items()},
            {key: (t.provider, t.kind, t.at) for key, t in self.store.tombstones.items()},
            dict(view.failures),
            {key: (h.counts, h.total) for key, h in view.job_durations.items()},
        )

    # -- rules ------------------------------------------------------------------------------

    @rule(seconds=st.floats(min_value=0.5, max_value=RETENTION - 1))
    def time_passes_and_due_jobs_are_polled(self, seconds: float) -> None:
        forgotten = set(self.store.tombstones)
        self.clock.now += seconds
        self.cloud.polled.clear()

        async def one_round() -> None:
            for account in sorted(self.accounts):
                while batch := self.poller._take_due(account, self.clock.now):
                    await self.poller._run_batch(batch)

        self.loop.run_until_complete(one_round())
        assert not forgotten & set(self.cloud.polled), "a forgotten job was polled"

    @rule(key=st.sampled_from(KEYS), failed=st.booleans())
    def a_cloud_job_finishes(self, key: JobKey, failed: bool) -> None:
        if key not in self.cloud.finished:
            self.cloud.finished[key] = ("FAILED" if failed else "SUCCEED", self.clock.now)

    @rule(listed=st.sets(st.sampled_from(KEYS)), accounts=st.sets(st.sampled_from(ACCOUNTS)))
    def the_config_is_reloaded(self, listed: set[JobKey], accounts: set[str]) -> None:
        for gone in self.accounts - accounts:
            for key in KEYS:  # its counters may vanish: they start again from nothing
                if key.account == gone:
                    self.failures[key] = self.durations[key] = 0
        self.accounts, self.listed = accounts, listed
        config = self._settings()
        providers = self._providers()
        self.poller.reconfigure(config, providers)  # type: ignore[arg-type]
        self.lifecycle.reconfigure(config, {name: p.provider for name, p in providers.items()})
        self.lifecycle.set_config_jobs(config.jobs)
        self.lifecycle.prune()

    @rule(key=st.sampled_from(KEYS))
    def the_api_registers_a_job(self, key: JobKey) -> None:
        tombstone = self.store.tombstones.get(key)
        try:
            created = self.lifecycle.register(JobConfig(account=key.account, id=key.job_id))
        except RegistrationError:
            return
        if created and tombstone is not None:
            assert tombstone.kind == DELETED, "a job forgotten after its retention came back"
            self.life[key] += 1  # DELETE then POST: afresh, on purpose

    @rule(key=st.sampled_from(KEYS))
    def the_api_deletes_a_job(self, key: JobKey) -> None:
        try:
            self.lifecycle.unregister(key)
        except (KeyError, RegistrationError):
            return
        assert key not in self.store

    @rule(account=st.sampled_from(ACCOUNTS))
    def discovery_lists_every_job_of_an_account(self, account: str) -> None:
        found = [self.cloud.snapshot(key) for key in KEYS if key.account == account]
        self.lifecycle.add_discovered(account, found, {})

    @rule()
    def the_exporter_restarts(self) -> None:
        before = self._fingerprint()
        self.loop.run_until_complete(self._stop())
        self._start()
        assert self._fingerprint() == before

    @rule()
    def housekeeping_runs(self) -> None:
        assert self.lifecycle.prune() == 0  # nothing reaches its time to live here

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def the_invariants_hold(self) -> None:
        self._follow_what_the_exporter_saw()
        self._a_job_is_tracked_retired_or_forgotten_never_two_at_once()
        self._a_forgotten_job_stays_forgotten_until_deleted_and_posted_again()
        self._each_failure_and_each_run_is_counted_exactly_once()
        self._only_configured_accounts_have_series()

    def _follow_what_the_exporter_saw(self) -> None:
        for job in self.store.view().jobs:
            snapshot, life = job.snapshot, self.life[job.key]
            if snapshot is None:
                continue
            if snapshot.phase is Phase.FAILED and life not in self.seen_failed[job.key]:
                self.seen_failed[job.key].add(life)
                self.failures[job.key] += 1
            if snapshot.terminal and life not in self.seen_finished[job.key]:
                self.seen_finished[job.key].add(life)
                self.durations[job.key] += 1
        for key, tombstone in self.store.tombstones.items():
            if tombstone.kind == EXPIRED:
                self.forgotten_in.setdefault(key, self.life[key])

    def _a_job_is_tracked_retired_or_forgotten_never_two_at_once(self) -> None:
        tracked = {job.key for job in self.store.view().jobs}
        retired, forgotten = set(self.store.retired), set(self.store.tombstones)
        assert not tracked & retired
        assert not tracked & forgotten
        assert not retired & forgotten

    def _a_forgotten_job_stays_forgotten_until_deleted_and_posted_again(self) -> None:
        for key, life in self.forgotten_in.items():
            if self.life[key] == life:
                assert key not in self.store, f"{key} came back"

    def _each_failure_and_each_run_is_counted_exactly_once(self) -> None:
        view = self.store.view()
        for key in KEYS:
            if key.account not in self.accounts:
                continue
            job_type = f"T-{key.account}-{key.job_id}"
            code = f"E-{key.account}-{key.job_id}"
            counted = view.failures.get((key.account, "huawei_metastudio", job_type, code), 0)
            assert counted == self.failures[key], (key, counted, self.failures[key])
            runs = sum(
                sum(h.counts)
                for (account, _, jt, _), h in view.job_durations.items()
                if (account, jt) == (key.account, job_type)
            )
            assert runs == self.durations[key], (key, runs, self.durations[key])

    def _only_configured_accounts_have_series(self) -> None:
        view = self.store.view()
        accounts: Iterable[str] = (
            [job.key.account for job in view.jobs]
            + [bucket[0] for bucket in view.failures]
            + [bucket[0] for bucket in view.job_durations]
            + [bucket[0] for bucket in view.forgotten]
        )
        assert set(accounts) <= self.accounts


LifecycleMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_lifecycle_holds_its_invariants = LifecycleMachine.TestCase
