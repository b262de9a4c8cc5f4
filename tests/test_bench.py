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
    for heading in ("Polling:", "Scrape:", "Memory:", "Growth:", "Targets:"):
        assert heading in result.stdout
