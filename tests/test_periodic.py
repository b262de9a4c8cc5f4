"""`repeat`: a steady cadence or a pause after each run, and failures logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from exporter.model import UpstreamError
from exporter.periodic import repeat


class Stop(Exception):
    """Ends the endless loop once the test has seen enough."""


async def _repeat_with(outcomes: list[float | Exception], *, from_start: bool) -> list[float]:
    """Run `repeat` over `outcomes` (a run's duration on the fake clock, or its error); returns
    the pauses it asked for."""
    now = [0.0]
    pauses: list[float] = []

    async def run() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        now[0] += outcome
        return 1

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds
        if not outcomes:
            raise Stop

    with pytest.raises(Stop):
        await repeat(
            run,
            account="tc",
            what="refresh",
            interval=10.0,
            from_start=from_start,
            sleep=sleep,
            monotonic=lambda: now[0],
        )
    return pauses


async def test_a_steady_cadence_counts_the_run_in_the_interval() -> None:
    assert await _repeat_with([3.0, 12.0, 0.5], from_start=True) == [7.0, 0.0, 9.5]
    assert await _repeat_with([3.0, 12.0, 0.5], from_start=False) == [10.0, 10.0, 10.0]


async def test_failures_warn_once_then_debug_and_the_recovery_is_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.periodic")
    error = UpstreamError("HTTP 503", status="503")
    await _repeat_with([error, error, 1.0, error], from_start=True)
    events = [(r.getMessage(), r.levelname) for r in caplog.records]
    assert events == [
        ("refresh_failed", "WARNING"),
        ("refresh_failed", "DEBUG"),
        ("refresh_recovered", "INFO"),
        ("refresh_failed", "WARNING"),
    ]
    assert caplog.records[0].__dict__["status"] == "503"


async def test_a_cancelled_loop_stops() -> None:
    async def run() -> None:
        await asyncio.sleep(3600)

    task = asyncio.create_task(repeat(run, account="tc", what="queue_read", interval=1.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_bug_in_one_run_is_logged_with_its_traceback_and_the_runs_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.periodic")
    pauses = await _repeat_with([KeyError("odd answer"), 1.0, 1.0], from_start=True)
    assert len(pauses) == 3  # every run came
    crashed = [r for r in caplog.records if r.getMessage() == "refresh_crashed"]
    assert len(crashed) == 1
    assert crashed[0].exc_info is not None
    assert [r.getMessage() for r in caplog.records][1:] == ["refresh_recovered"]
