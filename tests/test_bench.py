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
    for heading in ("Polling:", "Scrape:", "Memory:", "Refresh:", "Growth:", "Targets:"):
        assert heading in result.stdout


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
