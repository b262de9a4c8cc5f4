"""The shared test helpers fail when they should: a wait that cannot time out proves nothing."""

from __future__ import annotations

import itertools

import pytest

from dashboards.ports import served_at
from tests.support import eventually, eventually_async, samples, value, value_or_fail

EXPOSITION = """\
# HELP cloudjob_job_state The job's state.
# TYPE cloudjob_job_state gauge
cloudjob_job_state{account="hw",job_id="j-1",state="RUNNING"} 1.0
cloudjob_job_state{account="hw",job_id="j-1",state="FAILED"} 0.0
# HELP cloudjob_polls_total Polls.
# TYPE cloudjob_polls_total counter
cloudjob_polls_total 7.0
"""


def test_eventually_returns_the_first_truthy_answer_and_ignores_what_it_is_told_to() -> None:
    answers = iter([OSError("refused"), 0, "", "ready", "later"])

    def check() -> object:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert eventually(check, interval=0, ignoring=(OSError,)) == "ready"


def test_eventually_fails_naming_what_and_the_last_answer() -> None:
    with pytest.raises(AssertionError, match=r"the flag: not within 0.05 s \(last: False\)"):
        eventually(lambda: False, within=0.05, interval=0.01, what="the flag")


def test_an_exception_not_ignored_propagates() -> None:
    def check() -> bool:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        eventually(check, interval=0)


async def test_eventually_async_awaits_coroutine_checks_and_fails_in_time() -> None:
    counter = itertools.count()

    async def third() -> bool:
        return next(counter) == 2

    assert await eventually_async(third, interval=0) is True
    with pytest.raises(AssertionError, match="never"):
        await eventually_async(lambda: 0, within=0.05, interval=0.01, what="never")


def test_samples_and_values_come_from_prometheus_clients_parser() -> None:
    assert samples(EXPOSITION)[("cloudjob_polls_total", frozenset())] == 7.0
    assert value(EXPOSITION, "cloudjob_job_state", state="FAILED") == 0.0
    assert value(EXPOSITION, "cloudjob_job_state", job_id="j-1", state="RUNNING") == 1.0
    assert value(EXPOSITION, "cloudjob_job_state", state="GONE") is None
    assert value(EXPOSITION, "cloudjob_job") is None  # a name, not a prefix
    with pytest.raises(AssertionError, match="no cloudjob_missing"):
        value_or_fail(EXPOSITION, "cloudjob_missing")


def test_the_exporters_start_up_line_names_scheme_and_port() -> None:
    line = "cloudjob-exporter 0.1.0: serving metrics on https://127.0.0.1:40123/metrics\n"
    assert served_at(line) == ("https", 40123)
    assert served_at("starting version=0.1.0 listen=127.0.0.1:0") is None
