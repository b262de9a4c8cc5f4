"""The exporter's own families (everything but the per-job series), byte for byte.

The golden files pin every name, HELP text, label, bucket bound and value of the summary and
self-metric families in both formats; regenerate with CLOUDJOB_UPDATE_GOLDEN=1 only after
checking that the diff is intended.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.budget import PollingStatus
from exporter.collector import SummaryCollector
from exporter.model import Exchange, NotFoundError, Queue, ResponseParseError
from exporter.store import JobKey, Store, Tombstone
from tests.conftest import snapshot

GOLDEN = Path(__file__).parent / "golden"
HW, TC = "huawei_metastudio", "tencent_ci"
NOW = 2000.0


def _busy_store() -> Store:
    """A store with a sample in every family: counters, histograms (bounds on and past their
    buckets), infos, and accounts with and without their series."""
    store = Store()
    store.set_accounts({"hw": HW, "tc": TC, "idle": HW})
    for n, source in enumerate(("config", "api", "discovery", "config", "api")):
        store.track(JobKey("hw", f"j{n}"), HW, {"team": "x"}, source=source)
    store.track(JobKey("tc", "t1"), TC, {})
    done = {"created_at": 1000.0, "finished_at": 1700.0}
    store.record_success(
        JobKey("hw", "j0"), snapshot("FAILED", "j0", failure_code="MSS.1", **done), 1600.0
    )
    store.record_success(
        JobKey("hw", "j4"), snapshot("SUCCEED", "j4", created_at=0.0, finished_at=1e5), 1600.0
    )
    store.record_success(JobKey("hw", "j1"), snapshot("WAITING", "j1", updated_at=1500.0), 1500.0)
    # Seen 40 s after the cloud's change: a detection delay (the state and its time both moved).
    store.record_success(
        JobKey("hw", "j1"), snapshot("PROCESSING", "j1", updated_at=1560.0), 1600.0
    )
    store.record_failure(JobKey("hw", "j2"), NotFoundError("gone", status="404"), 1600.0)
    store.record_failure(JobKey("hw", "j3"), ResponseParseError("bad", status="200"), 1600.0)
    for status, seconds in (
        (Exchange.OK, 0.03),
        ("404", 0.2),
        (Exchange.OK, 12.0),
        (Exchange.TIMEOUT, 40.0),
        ("503", 0.1),
        (Exchange.OK, 0.025),
    ):
        store.on_exchange("hw", HW, status, seconds)
    store.on_exchange("tc", TC, Exchange.OK, 0.5)
    store.on_exchange("tc", TC, Exchange.CONNECTION, 1.5)
    store.record_discovery("hw", HW, ok=True, at=1700.0, added=3)
    store.record_discovery("tc", TC, ok=False, at=1800.0)
    store.record_queues(
        "tc",
        TC,
        (
            Queue("p-active", "ai-queue", "Active", paused=False, max_concurrent=10),
            Queue("p-paused", 'odd "name"\n', "Paused", paused=True),
        ),
        at=1800.0,
    )
    store.record_queues("tc", TC, None, at=1850.0)  # a failed read keeps the queues read before
    store.bury(JobKey("hw", "old"), Tombstone(HW, "expired", 10.0, 5.0))
    store.record_reload(ok=False, at=1900.0)
    store.record_hint("tc", TC, "callback", "scheduled", 3)
    store.record_hint("tc", TC, "callback", "rejected")
    store.record_hint("hw", HW, "api", "rate_limited")
    return store


def _render(collector: SummaryCollector, fmt: str) -> bytes:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_openmetrics(registry) if fmt == "openmetrics" else generate_latest(registry)
    # The Python version is the host's; the golden files hold a placeholder.
    host = f'python_version="{platform.python_version()}"'.encode()
    return text.replace(host, b'python_version="3"')


@pytest.mark.parametrize("fmt", ["prom", "openmetrics"])
def test_the_exporters_own_families_match_the_golden_files(fmt: str) -> None:
    polling = {
        ("hw", HW): PollingStatus(
            budget_rps=5.0, spent_rps=4.5, overdue_seconds=0.0, poll_interval=30.0
        ),
        ("tc", TC): PollingStatus(
            budget_rps=None, spent_rps=0.0, overdue_seconds=75.5, poll_interval=30.0
        ),
    }
    busy = SummaryCollector(
        _busy_store().view, lambda: NOW, shard=(1, 3), tasks=lambda: 7, polling=lambda: polling
    )
    empty = SummaryCollector(Store().view, lambda: NOW)
    for name, collector in ((f"self_metrics.{fmt}", busy), (f"self_metrics_empty.{fmt}", empty)):
        text = _render(collector, fmt)
        path = GOLDEN / name
        if os.environ.get("CLOUDJOB_UPDATE_GOLDEN"):
            path.write_bytes(text)
        assert text == path.read_bytes(), f"{name} differs; see the module docstring"
