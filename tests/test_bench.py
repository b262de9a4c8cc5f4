"""`make bench` keeps working: its script runs on a tiny size and writes every figure.

Only that the figures exist and are positive numbers, never how fast anything is: timings on a
shared CI machine are noise, and `make bench` is where they are read.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.bench._freshness import (
    Run,
    Scrape,
    WindowLoad,
    histogram,
    histogram_check,
)
from tests.bench._freshness import detection_delays as freshness_delays
from tests.bench._freshness import targets as freshness_targets
from tests.bench._freshness_cloud import DURATIONS, plan_workload
from tests.bench._refresh import (
    REQUEST_SHARE_TARGET,
    Sightings,
    all_changes,
    delay_figures,
    detection_delays,
    job_states,
    request_counts,
    target,
)
from tests.bench._refresh_cloud import plan_jobs

REPO = Path(__file__).resolve().parents[1]
POLLING_FIGURES = (
    "polls_per_s",
    "polls_per_cpu_s",
    "cpu_s_per_1k_polls",
    "client_cpu_util",
    "simulator_cpu_util",
)
TIMING_FIGURES = ("p50_s", "p99_s", "bytes", "count")


def run_quick_bench(out: Path) -> subprocess.CompletedProcess[str]:
    """The script with --quick; on a hang, SIGTERM first, so it stops the processes it started."""
    command = [sys.executable, "-m", "tests.bench.run", "--quick", "--out", str(out)]
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=30)
            raise AssertionError(f"the quick bench took over 180 s:\n{stderr[-3000:]}") from None
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_bench_writes_every_figure_as_a_positive_number(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_quick_bench(out)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())

    assert list(results["polling"]) == ["50"]
    for polling in results["polling"].values():
        for client in ("ours", "sdk", "bare"):
            for figure in POLLING_FIGURES:
                assert positive(polling[client][figure]), (client, figure, polling[client])
        assert positive(polling["ours_vs_sdk_per_cpu"])
        assert positive(polling["ours_vs_bare_per_cpu"])
        # The clients took turns: one window each per round, and a ratio per round.
        rounds = results["meta"]["polling"]["runs"]
        for client in ("ours", "sdk", "bare"):
            assert polling[client]["windows"] == rounds
        for anchor in ("sdk", "bare"):
            assert len(polling[f"ours_vs_{anchor}_per_round"]) == rounds
            assert all(positive(ratio) for ratio in polling[f"ours_vs_{anchor}_per_round"])

    assert list(results["scrape"]) == ["50", "100"]
    for scrape in results["scrape"].values():
        for source in ("ours", "naive", "prerendered"):
            for variant in ("plain", "gzip"):
                for figure in TIMING_FIGURES:
                    assert positive(scrape[source][variant][figure]), (source, variant, figure)
        for figure in TIMING_FIGURES:
            assert positive(scrape["status_page"][figure]), ("status_page", figure)
        assert scrape["ours"]["gzip_content_encoding"] == "gzip"
        assert scrape["ours"]["promtool"] == "clean"
        assert set(scrape["naive_vs_ours"]) == {"plain_p50", "plain_p99", "gzip_p50", "gzip_p99"}
        assert all(positive(ratio) for ratio in scrape["naive_vs_ours"].values())

    assert list(results["memory"]) == ["50", "100"]
    for memory in results["memory"].values():
        for figure in ("rss_empty_bytes", "rss_loaded_bytes", "rss_scraped_bytes"):
            assert positive(memory[figure]), (figure, memory)
        # 50 jobs hold a few hundred KiB, within the RSS noise of one process: present, but
        # not necessarily above zero.
        assert math.isfinite(memory["bytes_per_job"])
        assert math.isfinite(memory["bytes_per_job_before_scrapes"])

    api = results["api"]
    assert (api["jobs"], api["page"]) == (600, 500)
    assert api["paged_calls"] == 2 * 5  # two pages a walk, five walks after the warm-up one
    assert positive(api["all_bytes"])
    for figure in ("before", "after_pages", "after_pages_idle", "after_all", "after_all_idle"):
        assert positive(api[f"rss_{figure}_bytes"]), (figure, api)
    # RSS noise: present and finite, not necessarily above zero.
    assert math.isfinite(api["retained_pages_bytes"])
    assert math.isfinite(api["retained_all_bytes"])
    assert "api 600: RSS retained after limit=500 calls" in {
        target["figure"] for target in results["targets"]
    }

    growth = results["growth"]
    assert (growth["from_jobs"], growth["to_jobs"], growth["linear"]) == (50, 100, 2)
    for name, ratio in growth["figures"].items():
        if name.startswith("scrape_"):
            assert positive(ratio), (name, ratio)
    assert "memory_rss_over_empty" in growth["figures"]  # null when 50 jobs show no growth
    assert all(positive(ratio) for ratio in growth["anchors"].values())
    assert {target["figure"] for target in results["targets"]} >= {
        "polling 50: ours/SDK per CPU-s",
        "polling 50: ours/bare per CPU-s",
    }
    assert list(results["refresh"]) == ["50"]
    for refresh in results["refresh"].values():
        assert list(refresh["modes"]) == results["meta"]["refresh"]["modes"]
        for mode in refresh["modes"].values():
            assert positive(mode["requests_per_job_hour"]), mode
            assert mode["requests_not_200"] == 0, mode
            assert mode["delay"]["changes"] > 0, mode
        assert positive(refresh["resolution_s"])
    freshness = results["freshness"]
    assert list(freshness["modes"]) == ["adaptive", "fixed"]
    for mode in freshness["modes"].values():
        assert positive(mode["requests"]), mode
        assert positive(mode["registered"]), mode  # arrivals came through the API
        assert mode["delay"]["changes"] > 0, mode
        assert mode["histogram"]["buckets"] or not mode["histogram"]["exported"]
    assert positive(freshness["oracle_requests"])
    assert {target["figure"] for target in results["targets"]} >= {
        "freshness: throttled answers, adaptive",
        "freshness: adaptive p99 / fixed p99",
    }
    for heading in (
        "Polling:",
        "Scrape:",
        "Memory:",
        "API:",
        "Refresh:",
        "Freshness:",
        "Growth:",
    ):
        assert heading in result.stdout
    assert "Targets:" in result.stdout


# -- The refresh stage's arithmetic -----------------------------------------------------------


def test_planned_jobs_are_the_same_for_the_same_seed_and_change_in_order() -> None:
    jobs = plan_jobs(20, seed=3, started=1000.0)
    assert jobs == plan_jobs(20, seed=3, started=1000.0)
    assert jobs != plan_jobs(20, seed=4, started=1000.0)
    for job in jobs:
        (running, running_at), (success, success_at) = job.changes()
        assert (running, success) == ("Running", "Success")
        assert 1000.0 <= running_at <= 1060.0
        assert 20.0 <= success_at - running_at <= 600.0


def test_job_states_reads_only_the_current_series_whatever_the_label_order() -> None:
    body = (
        b"# TYPE cloudjob_job_state gauge\n"
        b'cloudjob_job_state{account="tc",job_id="a1",provider="tencent_ci",state="Running"} 1.0\n'
        b'cloudjob_job_state{state="Submitted",job_id="a2",account="tc"} 1\n'
        b'cloudjob_job_state{account="tc",job_id="a3",state="Success"} 0.0\n'
        b'cloudjob_job_phase{account="tc",job_id="a3",phase="running"} 1.0\n'
    )
    assert job_states(body) == {"a1": "Running", "a2": "Submitted"}


def test_request_counts_sum_accounts_by_status() -> None:
    body = (
        b'cloudjob_api_requests_total{account="a",provider="tencent_ci",status="200"} 5.0\n'
        b'cloudjob_api_requests_total{account="b",provider="tencent_ci",status="200"} 2.0\n'
        b'cloudjob_api_requests_total{account="a",provider="tencent_ci",status="429"} 1.0\n'
        b'cloudjob_api_requests_created{account="a",provider="tencent_ci",status="200"} 9.0\n'
    )
    assert request_counts(body) == {"200": 7.0, "429": 1.0}


def test_a_change_is_seen_at_the_first_scrape_showing_it_or_a_later_state() -> None:
    [job] = plan_jobs(1, seed=1, started=100.0)
    (_, running_at), (_, success_at) = job.changes()
    sightings = Sightings()
    sightings.observe(running_at - 1, {job.job_id: "Submitted"})
    sightings.observe(running_at + 0.5, {job.job_id: "Submitted"})  # not polled yet
    sightings.observe(running_at + 2.0, {job.job_id: "Running"})
    sightings.observe(running_at + 3.0, {job.job_id: "Running"})
    # Success is never shown as such: the next state the job is seen in would be later.
    delays, missed = detection_delays(
        all_changes([job]), sightings.first_seen, running_at - 10, success_at + 10
    )
    assert delays == [2.0]
    assert missed == 1
    sightings.observe(success_at + 4.0, {job.job_id: "Success"})
    delays, missed = detection_delays(
        all_changes([job]), sightings.first_seen, running_at - 10, success_at + 10
    )
    assert sorted(delays) == [2.0, 4.0]
    assert missed == 0
    # Only changes inside the window count.
    inside = detection_delays(all_changes([job]), sightings.first_seen, running_at + 1, success_at)
    assert inside == ([4.0], 0)
    before = detection_delays(all_changes([job]), sightings.first_seen, 0, running_at - 1)
    assert before == ([], 0)


def test_a_running_change_skipped_between_scrapes_counts_when_success_shows() -> None:
    [job] = plan_jobs(1, seed=2, started=0.0)
    (_, running_at), (_, success_at) = job.changes()
    sightings = Sightings()
    sightings.observe(success_at + 1.0, {job.job_id: "Success"})
    delays, missed = detection_delays(all_changes([job]), sightings.first_seen, 0, success_at)
    assert sorted(delays) == [1.0, success_at + 1.0 - running_at]
    assert missed == 0


def test_delay_figures_count_a_missed_change_as_infinitely_late() -> None:
    figures = delay_figures([float(n) for n in range(1, 100)], missed=0)
    assert (figures["p50_s"], figures["p99_s"], figures["max_s"]) == (50.0, 99.0, 99.0)
    figures = delay_figures([float(n) for n in range(1, 99)], missed=2)
    assert figures["p99_s"] == math.inf
    assert (figures["changes"], figures["missed"]) == (100, 2)
    assert math.isnan(delay_figures([], missed=0)["p99_s"])


def _refresh_figures(share: float, list_p99: float, lookup_p99: float) -> dict[str, Any]:
    return {
        "jobs": 1000,
        "resolution_s": 0.5,
        "list_over_lookup_requests": share,
        "modes": {
            "lookup": {"delay": {"p99_s": lookup_p99}},
            "list": {"delay": {"p99_s": list_p99}},
        },
    }


def test_the_refresh_target_needs_few_requests_and_no_worse_p99_delay() -> None:
    def met(share: float, list_p99: float, lookup_p99: float) -> bool:
        result = target(_refresh_figures(share, list_p99, lookup_p99))
        assert result is not None
        return result[3]

    assert met(REQUEST_SHARE_TARGET, 10.0, 10.0)
    assert met(0.01, 9.5, 10.0)
    assert not met(0.01, 10.1, 10.0)  # worse, even by less than the resolution
    assert not met(REQUEST_SHARE_TARGET * 1.01, 5.0, 10.0)
    assert not met(0.01, math.inf, 10.0)  # a missed change
    lookup_only = _refresh_figures(0.01, 1.0, 1.0)
    del lookup_only["modes"]["list"]
    assert target(lookup_only) is None
    assert target({**_refresh_figures(0.01, 1.0, 1.0), "jobs": 10_000}) is None


# -- The freshness stage's arithmetic ---------------------------------------------------------


def test_the_freshness_workload_keeps_its_jobs_alive_in_a_steady_state() -> None:
    workload = plan_workload(2000, horizon=3600.0, seed=5, start=1000.0, speed=30.0)
    assert workload == plan_workload(2000, horizon=3600.0, seed=5, start=1000.0, speed=30.0)
    assert len(workload.initial) == 2000
    for moment in (0.0, 900.0, 1800.0, 3599.0):
        alive = sum(1 for job in workload.jobs if job.arrival <= moment < job.ends)
        assert 1800 <= alive <= 2200, (moment, alive)
    # Little's law: arrivals at alive / mean duration.
    expected = 2000 / DURATIONS.mean * 3600.0
    assert len(workload.arriving) == pytest.approx(expected, rel=0.05)
    failed = sum(1 for job in workload.jobs if job.outcome == "FAILED")
    assert failed / len(workload.jobs) == pytest.approx(0.1, abs=0.02)
    # Simulated seconds onto the real clock: K times slower.
    assert workload.real(300.0) == 1010.0
    changes = list(workload.changes())
    assert len(changes) == len(workload.jobs) + len(workload.arriving)


def _scrape(at: float, buckets: dict[float, float], requests: float = 0.0) -> Scrape:
    return Scrape(sent=at - 0.05, arrived=at, requests={"200": requests}, histogram=buckets)


def _run(scrapes: list[tuple[Scrape, dict[str, str]]]) -> Run:
    run = Run()
    for scrape, states in scrapes:
        run.observe(scrape, states)
    return run


def test_the_histogram_check_brackets_each_change_between_two_scrapes() -> None:
    # Job j1 ends at 100.0; scrapes at 101, 102, 103; it shows SUCCEED at 103, so its true
    # delay is between 102 - 0.05 - 100 and 103 - 100: 1.95 to 3 s.
    changes = [("j1", "PROCESSING", 50.0), ("j1", "SUCCEED", 100.0)]
    states = [{"j1": "PROCESSING"}, {"j1": "PROCESSING"}, {"j1": "SUCCEED"}]
    empty = {1.0: 0.0, 2.0: 0.0, 5.0: 0.0, math.inf: 0.0}

    def check(counted_at: dict[float, float]) -> dict[str, Any]:
        scrapes = [_scrape(101.0, empty), _scrape(102.0, empty), _scrape(103.0, counted_at)]
        run = _run(list(zip(scrapes, states, strict=True)))
        return histogram_check(changes, run, 0, 2, first_sightings=False)

    # In the 5 s bucket (and 2 s, possibly): agrees either way.
    assert check({1.0: 0.0, 2.0: 0.0, 5.0: 1.0, math.inf: 1.0})["agrees"]
    assert check({1.0: 0.0, 2.0: 1.0, 5.0: 1.0, math.inf: 1.0})["checked_changes"] == 1
    # Under 1 s is impossible, and not counting it at all is wrong.
    assert not check({1.0: 1.0, 2.0: 1.0, 5.0: 1.0, math.inf: 1.0})["agrees"]
    assert not check(empty)["agrees"]
    # An exporter without the histogram agrees with nothing.
    missing = check({})
    assert not missing["agrees"]
    assert not missing["exported"]


def test_a_first_sighting_counts_as_a_change_only_when_asked() -> None:
    changes = [("j2", "PROCESSING", 100.5)]
    scrapes = [
        (_scrape(100.0, {math.inf: 0.0}), {}),
        (_scrape(101.0, {math.inf: 1.0}), {"j2": "PROCESSING"}),
    ]
    run = _run(scrapes)
    assert histogram_check(changes, run, 0, 1, first_sightings=True)["agrees"]
    assert not histogram_check(changes, run, 0, 1, first_sightings=False)["agrees"]


def test_freshness_delays_are_simulated_seconds_and_a_terminal_state_implies_running() -> None:
    run = _run(
        [
            (_scrape(10.0, {}), {"a": "PROCESSING"}),
            (_scrape(11.0, {}), {"b": "SUCCEED"}),
        ]
    )
    changes = [("a", "PROCESSING", 9.5), ("b", "PROCESSING", 10.2), ("c", "SUCCEED", 10.5)]
    delays, missed = freshness_delays(changes, run, start=9.0, end=20.0, speed=30.0)
    assert delays == pytest.approx([15.0, 24.0])
    assert missed == 1  # c never showed
    # Outside the window: not counted at all.
    assert freshness_delays(changes, run, start=10.0, end=20.0, speed=30.0)[0] == pytest.approx(
        [24.0]
    )


def test_the_fixed_interval_is_solved_to_spend_the_adaptive_modes_requests() -> None:
    load = WindowLoad(arrivals=100, ends=90, terminal_polls=80, running_seconds=400_000.0)
    interval = load.interval_for(2_225.0)
    assert interval == pytest.approx(400_000.0 / (2_225.0 - 50 - 90 - 80))
    assert load.fixed_requests(interval) == pytest.approx(2_225.0)
    assert load.interval_for(200.0) == math.inf  # fewer than the unavoidable polls


def test_histogram_reads_cumulative_buckets_of_every_account() -> None:
    body = (
        b"# TYPE cloudjob_state_change_detection_delay_seconds histogram\n"
        b'cloudjob_state_change_detection_delay_seconds_bucket{account="a",le="1.0",'
        b'provider="p"} 2.0\n'
        b'cloudjob_state_change_detection_delay_seconds_bucket{account="b",le="1.0"} 3\n'
        b'cloudjob_state_change_detection_delay_seconds_bucket{account="a",le="+Inf"} 7.0\n'
        b'cloudjob_state_change_detection_delay_seconds_count{account="a"} 7.0\n'
    )
    assert histogram(body) == {1.0: 5.0, math.inf: 7.0}


def test_the_freshness_targets_report_each_figure() -> None:
    def mode(p50: float, p99: float, throttled: int, agrees: bool) -> dict[str, Any]:
        return {
            "delay": {"p50_s": p50, "p99_s": p99},
            "requests_throttled_simulator": throttled,
            "histogram": {"agrees": agrees, "checked_changes": 10},
        }

    met = freshness_targets(
        {"modes": {"adaptive": mode(20, 50, 0, True), "fixed": mode(30, 100, 0, True)}}
    )
    assert [target[3] for target in met] == [True] * 5
    missed = freshness_targets(
        {"modes": {"adaptive": mode(31, 51, 2, False), "fixed": mode(30, 100, 9, True)}}
    )
    assert [target[3] for target in missed] == [False, False, False, False, True]
