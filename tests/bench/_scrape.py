"""Figures 2 and 3: /metrics latency and size, plain and gzip, and the exporter's memory per job,
with N jobs split between both clouds (Tencent batched ten to a request).

One exporter process per size. It starts with the accounts and no jobs, so its idle RSS is
measured in the same process; a reload (SIGHUP) then brings the N jobs, polled once each and
then left alone for an hour, so polling does not weigh on the scrapes. Next to its scrapes:

- naive: prometheus-client's `generate_latest` over the same series (one body parsed back into
  metric families, replayed by a trivial custom collector), plus gzip level 1 of its output.
  In-process and without HTTP, it flatters the naive approach a little.
- pre-rendered: the same bytes (and the same bytes gzipped) served by a bare aiohttp server in
  its own process; the lower bound, all HTTP and transfer.
"""

from __future__ import annotations

import gc
import gzip
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from tests.bench._clouds import Clouds, Exporter, exporter_config, start_exporter
from tests.bench._harness import (
    Answer,
    BenchError,
    Process,
    Processes,
    get_ok,
    percentile,
    progress,
    start_listening,
    wait_until_serving,
)
from tests.bench._polling import IN_FLIGHT

PLAIN = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}
# A 50k-job scrape of the old path takes 10-20 s; a stuck one is a failure, not a figure.
SCRAPE_TIMEOUT = 600.0


@dataclass(frozen=True)
class ScrapePlan:
    """Scrapes per variant: as many as fit in `budget` seconds (judged by a warm-up one),
    but at least `min_count` and at most `max_count`. `settle`: seconds before reading RSS."""

    budget: float
    min_count: int
    max_count: int
    settle: float = 1.0

    def count(self, first_seconds: float) -> int:
        fit = int(self.budget / max(first_seconds, 1e-3))
        return max(self.min_count, min(self.max_count, fit))


def _timing(seconds: list[float], sizes: list[int]) -> dict[str, float]:
    return {
        "p50_s": percentile(seconds, 50),
        "p99_s": percentile(seconds, 99),
        "bytes": sorted(sizes)[len(sizes) // 2],
        "count": len(seconds),
    }


def _scrape(
    process: Process, port: int, headers: dict[str, str], *, keep_body: bool = False
) -> Answer:
    return get_ok(
        process, port, "/metrics", headers=headers, timeout=SCRAPE_TIMEOUT, keep_body=keep_body
    )


def _alternate(
    process: Process, port: int, count: int
) -> tuple[dict[str, float], dict[str, float], str]:
    """`count` plain and `count` gzip scrapes, interleaved so drift hits both alike."""
    plain: list[Answer] = []
    gzipped: list[Answer] = []
    for _ in range(count):
        plain.append(_scrape(process, port, PLAIN))
        gzipped.append(_scrape(process, port, GZIP))
    encoding = gzipped[-1].headers.get("Content-Encoding", "identity")
    return (
        _timing([a.seconds for a in plain], [a.size for a in plain]),
        _timing([a.seconds for a in gzipped], [a.size for a in gzipped]),
        encoding,
    )


def _count_jobs(exporter: Exporter, query: str) -> tuple[int, list[Any]]:
    answer = get_ok(exporter.process, exporter.port, "/api/v1/jobs" + query, timeout=300)
    jobs: list[Any] = orjson.loads(answer.body)["jobs"]
    return len(jobs), jobs[:1]


def wait_until_polled(exporter: Exporter, jobs: int) -> float:
    """Until the reload has brought all `jobs` and each has been polled successfully once;
    returns the seconds it took. Progress every 5 s; BenchError on a timeout."""
    timeout = 120 + jobs / 100
    started = last_report = time.monotonic()
    while True:
        exporter.process.check_running()
        # Unpolled, then (only when none) tracked, then unpolled again: with the first two
        # alone, "none unpolled" read before the SIGHUP took effect and "all tracked" read
        # just after it once ended the wait before any job was polled. The full list (a large
        # answer, and RSS the memory figure would count) is asked for only at the ends.
        waiting, sample = _count_jobs(exporter, "?phase=unknown&all=1")
        tracked = _count_jobs(exporter, "?all=1")[0] if waiting == 0 else None
        if tracked == jobs:
            waiting, sample = _count_jobs(exporter, "?phase=unknown&all=1")
        now = time.monotonic()
        if tracked == jobs and waiting == 0:
            return now - started
        if tracked is None or tracked == jobs:
            state = f"{jobs - waiting:,} of {jobs:,} jobs polled"
        else:
            state = f"the reload has brought {tracked:,} of {jobs:,} jobs"
        if now - started > timeout:
            hint = ""
            if sample:
                error = (sample[0].get("poll") or {}).get("error")
                hint = f"; job {sample[0].get('job_id')} last poll error: {error}"
            raise exporter.process.failure(f"after {timeout:.0f} s, {state}{hint}")
        if now - last_report >= 5:
            progress(f"scrape {jobs:,} jobs: {state} ({now - started:.0f} s)")
            last_report = now
        # Listing thousands of jobs costs the exporter CPU: look less often when it has many.
        time.sleep(0.2 if jobs <= 1000 else 1.0)


class _Replay(Collector):
    """The naive collector: yields ready metric families, as a custom collector would build."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def measure_naive(body: bytes, plan: ScrapePlan, label: str) -> dict[str, dict[str, float]]:
    started = time.monotonic()
    try:
        families = list(text_string_to_metric_families(body.decode()))
    except ValueError as exc:
        raise BenchError(
            f"prometheus-client's parser cannot read the exporter's /metrics: {exc}"
        ) from None
    progress(f"{label}: parsed {len(families)} families in {time.monotonic() - started:.1f} s")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Replay(families))

    def once() -> tuple[float, float, int, int]:
        began = time.perf_counter()
        text = generate_latest(registry)
        rendered = time.perf_counter()
        compressed = gzip.compress(text, compresslevel=1)
        return rendered - began, time.perf_counter() - began, len(text), len(compressed)

    count = plan.count(once()[1])  # the first one warms up
    runs = [once() for _ in range(count)]
    return {
        "plain": _timing([r[0] for r in runs], [r[2] for r in runs]),
        "gzip": _timing([r[1] for r in runs], [r[3] for r in runs]),
    }


def measure_prerendered(
    processes: Processes, workdir: Path, body: bytes, plan: ScrapePlan, label: str
) -> dict[str, dict[str, float]]:
    plain_file, gzip_file = workdir / "prerendered.txt", workdir / "prerendered.txt.gz"
    plain_file.write_bytes(body)
    gzip_file.write_bytes(gzip.compress(body, compresslevel=1))
    server, port = start_listening(
        processes,
        f"pre-rendered server ({label})",
        lambda port: [
            *("-m", "tests.bench._static_server", "--port", str(port)),
            *("--plain", str(plain_file), "--gzip", str(gzip_file)),
        ],
        lambda server, port: wait_until_serving(server, port, "/metrics", timeout=60),
    )
    try:
        count = plan.count(_scrape(server, port, PLAIN).seconds)
        plain, gzipped, _ = _alternate(server, port, count)
    finally:
        processes.stop(server)
        plain_file.unlink()
        gzip_file.unlink()
    return {"plain": plain, "gzip": gzipped}


def promtool_check(body: bytes) -> str:
    """`clean`, `promtool missing`, or promtool's first complaint."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return "promtool missing"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False, timeout=300
    )
    complaints = (result.stdout + result.stderr).decode(errors="replace").strip()
    if result.returncode == 0 and not complaints:
        return "clean"
    return complaints.splitlines()[0] if complaints else f"exit {result.returncode}"


def _settle_rss(process: Process, plan: ScrapePlan) -> int:
    time.sleep(plan.settle)
    return process.rss_bytes()


def measure(
    processes: Processes,
    clouds: Clouds,
    jobs: int,
    workdir: Path,
    plan: ScrapePlan,
) -> tuple[dict[str, Any], dict[str, float]]:
    """The scrape figures and the memory figures for `jobs` jobs."""
    label = f"scrape {jobs:,} jobs"

    def say(message: str) -> None:
        progress(f"{label}: {message}")

    huawei_ids = clouds.huawei.job_ids[: jobs // 2]
    tencent_ids = clouds.tencent.job_ids[: jobs - jobs // 2]
    if len(huawei_ids) + len(tencent_ids) != jobs:
        raise BenchError(f"{label}: the simulators hold too few jobs")

    def config(huawei: list[str], tencent: list[str]) -> str:
        return exporter_config(
            clouds, huawei, tencent, poll_interval="1h", max_concurrency=IN_FLIGHT
        )

    say("starting an exporter with no jobs")
    exporter = start_exporter(
        processes, f"exporter ({jobs} jobs)", workdir / f"scrape-{jobs}.yaml", config([], [])
    )
    try:
        for _ in range(3):
            _scrape(exporter.process, exporter.port, PLAIN)
        rss_empty = _settle_rss(exporter.process, plan)
        say(f"reloading with {len(huawei_ids):,} Huawei and {len(tencent_ids):,} Tencent jobs")
        exporter.reload(config(huawei_ids, tencent_ids))
        seconds = wait_until_polled(exporter, jobs)
        say(f"every job polled once, {seconds:.0f} s after the reload")
        rss_loaded = _settle_rss(exporter.process, plan)
        first = _scrape(exporter.process, exporter.port, PLAIN)
        # The body the anchors serve and parse, from a scrape of its own (untimed); a warm
        # one, unlike the first, so it is the one that says how many scrapes fit the budget.
        kept = _scrape(exporter.process, exporter.port, PLAIN, keep_body=True)
        body = kept.body
        count = plan.count(kept.seconds)
        say(f"first scrape {first.seconds:.2f} s, {first.size:,} bytes; {count} x 2 more")
        lint = promtool_check(body)
        say(f"promtool check metrics: {lint}")
        plain, gzipped, encoding = _alternate(exporter.process, exporter.port, count)
        rss_scraped = _settle_rss(exporter.process, plan)
        # After the memory figures, so the pages' renders do not count in them.
        say(f"status page: {count} x GET /")
        pages = [
            get_ok(exporter.process, exporter.port, "/", timeout=SCRAPE_TIMEOUT, keep_body=False)
            for _ in range(count)
        ]
    finally:
        processes.stop(exporter.process)
    say("naive collector (prometheus-client generate_latest)")
    naive = measure_naive(body, plan, label)
    gc.collect()
    say("pre-rendered bytes")
    prerendered = measure_prerendered(processes, workdir, body, plan, label)
    del body
    gc.collect()
    scrape: dict[str, Any] = {
        "ours": {
            "plain": plain,
            "gzip": gzipped,
            "gzip_content_encoding": encoding,
            # The first scrape after the jobs came, left out of p50/p99: what a scrape costs
            # when nothing it could reuse from an earlier one is there yet.
            "first_plain_s": first.seconds,
            # The exposition at this size, linted by the real promtool.
            "promtool": lint,
        },
        "naive": naive,
        "prerendered": prerendered,
        # GET / (the status page): its first page of jobs and the attention list.
        "status_page": _timing([a.seconds for a in pages], [a.size for a in pages]),
        "naive_vs_ours": {
            f"{variant}_{q}": naive[variant][f"{q}_s"] / ours[f"{q}_s"]
            for variant, ours in (("plain", plain), ("gzip", gzipped))
            for q in ("p50", "p99")
        },
        "loadavg": os.getloadavg()[0],
    }
    memory = {
        "rss_empty_bytes": rss_empty,
        "rss_loaded_bytes": rss_loaded,
        "rss_scraped_bytes": rss_scraped,
        "bytes_per_job": (rss_scraped - rss_empty) / jobs,
        "bytes_per_job_before_scrapes": (rss_loaded - rss_empty) / jobs,
    }
    return scrape, memory
