"""Store bookkeeping and the exposition the collector renders from it."""

from __future__ import annotations

from dataclasses import fields, replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.model import NotFoundError, UpstreamError
from exporter.store import JobKey, JobState, Store, Tombstone
from tests.conftest import assessment, job_with_every_field_set, promtool_check_metrics, snapshot
from tests.reference_exposition import ReferenceCollector
from tests.support import series

KEY = JobKey("hw", "job-1")


def _render(store: Store, now: float = 2000.0) -> bytes:
    registry = CollectorRegistry()
    registry.register(ReferenceCollector(store.view, lambda: now))
    return generate_latest(registry)


def test_job_reentering_audit_failed_counts_a_second_failure() -> None:
    store = Store()
    store.track(KEY, "huawei_metastudio", {})
    for state in ("CREATING", "AUDIT_FAILED", "AUDIT_FAILED", "AUDITING", "AUDIT_FAILED"):
        store.record_success(KEY, snapshot(state), 1000.0)
    state = store.get(KEY)
    assert state is not None
    assert state.failures == 2


def test_a_job_first_seen_failed_counts_one_failure() -> None:
    store = Store()
    store.track(KEY, "huawei_metastudio", {})
    transition = store.record_success(KEY, snapshot("FAILED"), 1000.0)
    assert transition is not None
    assert transition.entered_failed
    assert store.get(KEY).failures == 1  # type: ignore[union-attr]


def test_a_failed_poll_keeps_the_last_good_snapshot() -> None:
    store = Store()
    store.track(KEY, "huawei_metastudio", {})
    store.record_success(KEY, snapshot("PROCESSING"), 1000.0)
    store.record_failure(KEY, UpstreamError("HTTP 500", status="500"), 1010.0)
    state = store.get(KEY)
    assert state is not None
    assert state.snapshot is not None
    assert state.snapshot.state == "PROCESSING"
    assert state.last_poll_success is False
    assert state.last_poll_at == 1010.0
    assert state.last_success_at == 1000.0
    assert state.last_error is not None
    assert state.last_error.reason == "upstream"


def test_the_exposition_has_every_series_with_exact_names_and_is_lint_clean() -> None:
    store = Store()
    store.track(KEY, "huawei_metastudio", {"team": "voice"})
    store.track(JobKey("hw", "job-2"), "huawei_metastudio", {})
    store.track(JobKey("hw", "never-polled"), "huawei_metastudio", {})
    assessments = (
        assessment("snr", ">=25", "18dB", -1),
        assessment("speed", "[3.5, 5.5]", "4.2", 0),
    )
    store.record_success(
        KEY,
        snapshot(
            "AUDIT_FAILED",
            created_at=1000.0,
            updated_at=1500.0,
            failure_code="MSS.10010001",
            failure_reason="noise",
            assessments=assessments,
        ),
        1600.0,
    )
    store.record_success(JobKey("hw", "job-2"), snapshot("QUALITY_CHECKING", "job-2"), 1600.0)
    store.record_failure(JobKey("hw", "never-polled"), NotFoundError("gone", status="404"), 1600.0)
    store.on_exchange("hw", "huawei_metastudio", "200", 0.03)
    store.on_exchange("hw", "huawei_metastudio", "404", 0.2)
    text = _render(store)
    promtool_check_metrics(text)

    job = {
        ("account", "hw"),
        ("provider", "huawei_metastudio"),
        ("job_id", "job-1"),
        ("team", "voice"),
    }
    states = series(text, "cloudjob_job_state")
    mine = {dict(k)["state"]: v for k, v in states.items() if job <= k}
    assert len(mine) == 16  # the SDK's JobState
    assert mine["AUDIT_FAILED"] == 1.0
    assert sum(mine.values()) == 1.0
    other = {dict(k)["state"]: v for k, v in states.items() if ("job_id", "job-2") in k}
    # An undocumented state: one series more, at 1, beside the 16 documented ones at 0.
    assert other["QUALITY_CHECKING"] == 1.0
    assert len(other) == 17
    phases = {
        dict(k)["phase"]: v for k, v in series(text, "cloudjob_job_phase").items() if job <= k
    }
    assert phases == {
        "pending": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 1,
        "cancelled": 0,
        "unknown": 0,
    }
    assert series(text, "cloudjob_job_info")[frozenset(job | {("job_type", "VOICE_ASSESS")})] == 1
    assert series(text, "cloudjob_job_created_timestamp_seconds")[frozenset(job)] == 1000.0
    assert series(text, "cloudjob_job_updated_timestamp_seconds")[frozenset(job)] == 1500.0
    assert series(text, "cloudjob_job_age_seconds")[frozenset(job)] == 1000.0
    assert series(text, "cloudjob_job_failures_total")[frozenset(job)] == 1.0
    assert (
        series(text, "cloudjob_job_failure_info")[frozenset(job | {("code", "MSS.10010001")})]
        == 1.0
    )
    assert (
        series(text, "cloudjob_job_assessment_actual")[frozenset(job | {("metric", "snr")})] == 18
    )
    assert (
        series(text, "cloudjob_job_assessment_status")[frozenset(job | {("metric", "snr")})] == -1
    )
    assert (
        series(text, "cloudjob_job_assessment_expected_min")[frozenset(job | {("metric", "speed")})]
        == 3.5
    )
    assert (
        series(text, "cloudjob_job_assessment_expected_max")[frozenset(job | {("metric", "speed")})]
        == 5.5
    )
    assert frozenset(job | {("metric", "snr")}) not in series(
        text, "cloudjob_job_assessment_expected_max"
    )
    assert series(text, "cloudjob_job_last_poll_success")[frozenset(job)] == 1.0
    assert series(text, "cloudjob_job_last_poll_timestamp_seconds")[frozenset(job)] == 1600.0
    never = frozenset(
        {("account", "hw"), ("provider", "huawei_metastudio"), ("job_id", "never-polled")}
    )
    assert series(text, "cloudjob_job_last_poll_success")[never] == 0.0
    jobs = series(text, "cloudjob_jobs")
    by_phase = {dict(k)["phase"]: v for k, v in jobs.items()}
    assert by_phase["failed"] == 1
    assert by_phase["running"] == 1
    assert by_phase["unknown"] == 1
    requests = series(text, "cloudjob_api_requests_total")
    assert (
        requests[
            frozenset({("account", "hw"), ("provider", "huawei_metastudio"), ("status", "404")})
        ]
        == 1
    )
    assert b'cloudjob_api_request_duration_seconds_bucket{account="hw",le="0.05",' in text
    assert b"cloudjob_api_request_duration_seconds_count" in text
    assert b"cloudjob_exporter_build_info{" in text
    assert (
        b'cloudjob_poll_errors_total{account="hw",provider="huawei_metastudio",'
        b'reason="not_found"} 1.0' in text
    )
    # No sample carries a timestamp: values are as of the last poll, said in HELP instead.
    for line in text.decode().splitlines():
        if not line.startswith("#"):
            value = line.rsplit("} ", 1)[-1] if "{" in line else line.split(" ", 1)[1]
            assert len(value.split()) == 1, line


def test_a_forgotten_job_vanishes_from_the_next_scrape() -> None:
    store = Store()
    store.track(KEY, "huawei_metastudio", {})
    store.record_success(KEY, snapshot("PROCESSING"), 1000.0)
    assert b'job_id="job-1"' in _render(store)
    store.forget(KEY)
    assert b'job_id="job-1"' not in _render(store)


def test_the_openmetrics_rendering_parses() -> None:
    store = Store()
    store.track(KEY, "huawei_metastudio", {})
    store.record_success(KEY, snapshot("FAILED", failure_code="E1"), 1000.0)
    store.on_exchange("hw", "huawei_metastudio", "200", 0.03)
    registry = CollectorRegistry()
    registry.register(ReferenceCollector(store.view, lambda: 2000.0))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_openmetrics(registry).decode())
    }
    assert families["cloudjob_job_failures"].type == "counter"
    assert families["cloudjob_job_failure"].type == "info"
    assert families["cloudjob_api_request_duration_seconds"].type == "histogram"


def test_unparseable_fields_are_counted_per_provider_and_field() -> None:
    store = Store()
    store.track(KEY, "huawei_metastudio", {})
    store.record_success(KEY, snapshot("SUCCEED", parse_errors=("assess_result.snr.actual",)), 1.0)
    store.record_success(KEY, snapshot("SUCCEED", parse_errors=("assess_result.snr.actual",)), 2.0)
    text = _render(store)
    assert (
        b'cloudjob_parse_errors_total{field="assess_result.snr.actual",'
        b'provider="huawei_metastudio"} 2.0'
    ) in text


def test_completed_durations_are_observed_once_per_run_with_start_finish_and_queue() -> None:
    from exporter.model import JobSnapshot, Phase

    # A run as first seen (no start or progress yet), then running, then done.
    created = JobSnapshot(
        "t1", "Translation", "Running", Phase.RUNNING, False, created_at=1000.0, queue_id="q1"
    )
    running = replace(created, started_at=1010.0, progress=0.4)
    done = replace(
        running,
        state="Success",
        phase=Phase.SUCCEEDED,
        terminal=True,
        finished_at=1090.0,
        progress=None,
    )
    key = JobKey("tc", "t1")
    store = Store()
    store.track(key, "tencent_ci", {})
    store.record_success(key, running, 1100.0)
    store.record_success(key, done, 1200.0)
    store.record_success(key, done, 1300.0)  # seen again: not a second observation
    text = _render(store)
    promtool_check_metrics(text)
    labels = 'account="tc",job_type="Translation",phase="succeeded",provider="tencent_ci"'
    assert f"cloudjob_completed_job_duration_seconds_count{{{labels}}} 1.0".encode() in text
    assert f"cloudjob_completed_job_duration_seconds_sum{{{labels}}} 90.0".encode() in text
    bucket = "cloudjob_completed_job_duration_seconds_bucket"
    tail = 'phase="succeeded",provider="tencent_ci"'
    prefix = f'{bucket}{{account="tc",job_type="Translation"'
    assert f'{prefix},le="60.0",{tail}}} 0.0'.encode() in text
    assert f'{prefix},le="120.0",{tail}}} 1.0'.encode() in text
    job = frozenset({("account", "tc"), ("provider", "tencent_ci"), ("job_id", "t1")})
    assert series(text, "cloudjob_job_started_timestamp_seconds")[job] == 1010.0
    assert series(text, "cloudjob_job_finished_timestamp_seconds")[job] == 1090.0
    assert (
        series(text, "cloudjob_job_info")[
            frozenset(job | {("job_type", "Translation"), ("queue_id", "q1")})
        ]
        == 1.0
    )
    states = {dict(k)["state"]: v for k, v in series(text, "cloudjob_job_state").items()}
    assert states == {
        "Submitted": 0,
        "Running": 0,
        "Success": 1,
        "Failed": 0,
        "Pause": 0,
        "Cancel": 0,
    }
    # A new run of the same job (it left the terminal state) is observed again when it ends.
    store.record_success(key, created, 1400.0)
    assert series(_render(store), "cloudjob_job_progress_ratio") == {}
    store.record_success(key, done, 1500.0)
    assert f"cloudjob_completed_job_duration_seconds_count{{{labels}}} 2.0".encode() in _render(
        store
    )


def test_failures_are_also_counted_by_code_across_jobs() -> None:
    store = Store()
    for job_id in ("a", "b"):
        store.track(JobKey("hw", job_id), "huawei_metastudio", {})
        store.record_success(JobKey("hw", job_id), snapshot("FAILED", job_id, failure_code="E1"), 1)
    store.record_success(JobKey("hw", "a"), snapshot("FAILED", "a", failure_code="E1"), 2)
    text = _render(store)
    assert (
        b'cloudjob_failures_total{account="hw",code="E1",job_type="VOICE_ASSESS",'
        b'provider="huawei_metastudio"} 2.0'
    ) in text


def test_without_a_state_file_the_store_collects_no_changes() -> None:
    # Nothing would ever take them: with churn they would grow without end.
    store = Store()
    for n in range(100):
        store.track(JobKey("hw", f"j{n}"), "huawei_metastudio", {})
        store.bury(JobKey("hw", f"j{n}"), Tombstone("huawei_metastudio", "expired", 1.0, 1.0))
    store.track(KEY, "huawei_metastudio", {})
    store.record_success(KEY, snapshot("FAILED"), 1.0)
    assert not store.take_changes()
    store.track_changes = True
    store.track(JobKey("hw", "new"), "huawei_metastudio", {})
    changes = store.take_changes()
    assert [state.key for state in changes.jobs] == [JobKey("hw", "new")]


def test_an_unchanged_poll_keeps_the_snapshot_object_the_scrape_cache_keys_on() -> None:
    store = Store()
    store.track(KEY, "huawei_metastudio", {})
    store.record_success(KEY, snapshot("PROCESSING"), 1000.0)
    first = store.get(KEY)
    store.record_success(KEY, snapshot("PROCESSING"), 1010.0)
    second = store.get(KEY)
    assert first is not None
    assert second is not None
    assert second.snapshot is first.snapshot
    assert second.last_poll_at == 1010.0
    store.record_success(KEY, snapshot("SUCCEED"), 1020.0)
    third = store.get(KEY)
    assert third is not None
    assert third.snapshot is not first.snapshot


def test_a_successful_poll_carries_over_every_field_it_does_not_update() -> None:
    """record_success spells out JobState's fields (faster than dataclasses.replace): a field
    added later must not silently fall back to its default after the next poll."""
    restored = job_with_every_field_set()
    key, first = restored.key, restored.snapshot
    assert first is not None
    assert first.terminal
    store = Store()
    store.restore(restored)
    store.record_success(key, first, 20.0)
    after = store.get(key)
    assert after is not None
    updated = {"polls", "last_poll_success", "last_poll_at", "last_success_at", "last_error"}
    for item in fields(JobState):
        if item.name not in updated:
            assert getattr(after, item.name) == getattr(restored, item.name), item.name
    assert (after.polls, after.last_poll_at, after.last_error) == (8, 20.0, None)
