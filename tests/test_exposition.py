"""The fast per-job exposition against prometheus-client's rendering of the same jobs.

`tests/reference_exposition.py` builds the per-job families sample by sample through
prometheus-client; `exposition.JobExposition` renders from a cache of deflated text. For any
sequence of job states the two must parse to the same families, HELP, TYPE, samples and values,
in the text format and in OpenMetrics, scrape after scrape (the cache must never serve stale
text).
"""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import CollectorRegistry

from exporter.clouds import DOCUMENTED_STATES
from exporter.exposition import OPENMETRICS, TEXT, JobExposition, inflate_pieces
from exporter.gzip_segments import compress, crc_shift
from exporter.metric_selection import ALL, MetricSelection
from exporter.model import Assessment, JobSnapshot, Phase
from exporter.states import HUAWEI_ASSESSMENT_METRICS
from exporter.store import JobKey, JobState
from tests.conftest import promtool_check_metrics, snapshot
from tests.reference_exposition import JobFamilies

GOLDEN = Path(__file__).parent / "golden"
NOW = 1_700_000_000.0
EOF_LINE = b"# EOF\n"

Parsed = dict[str, tuple[str, str, list[tuple[str, tuple[tuple[str, str], ...], str]]]]


def inflate(body: bytes) -> bytes:
    return zlib.decompress(body, wbits=16 + zlib.MAX_WBITS)


def naive(
    jobs: Sequence[JobState], now: float, fmt: str, selection: MetricSelection = ALL
) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobFamilies(jobs, now, selection))
    if fmt == OPENMETRICS:
        return generate_openmetrics(registry)  # type: ignore[no-untyped-call,no-any-return]
    return generate_latest(registry)


def fast(
    exposition: JobExposition,
    jobs: Sequence[JobState],
    now: float,
    fmt: str,
    selection: MetricSelection = ALL,
) -> bytes:
    body = exposition.render(jobs, now, EOF_LINE if fmt == OPENMETRICS else b"", fmt, selection)
    plain = inflate(body)
    assert gzip.decompress(body) == plain  # the standard library's reader agrees
    return plain


def parsed(text: bytes, fmt: str) -> Parsed:
    parse = parse_openmetrics if fmt == OPENMETRICS else parse_text
    return {
        family.name: (
            family.type,
            family.documentation,
            sorted(
                (sample.name, tuple(sorted(sample.labels.items())), repr(float(sample.value)))
                for sample in family.samples
            ),
        )
        for family in parse(text.decode())
    }


def assert_same(
    exposition: JobExposition,
    jobs: Sequence[JobState],
    now: float = NOW,
    selection: MetricSelection = ALL,
) -> None:
    for fmt in (TEXT, OPENMETRICS):
        ours = parsed(fast(exposition, jobs, now, fmt, selection), fmt)
        assert ours == parsed(naive(jobs, now, fmt, selection), fmt)


def huawei_snapshot(job_id: str, state: str, seed: int) -> JobSnapshot:
    rng = random.Random(seed)
    phase = DOCUMENTED_STATES["huawei_metastudio"].get(state, Phase.UNKNOWN)
    done = state == "SUCCEED"
    return snapshot(
        state,
        job_id,
        created_at=NOW - rng.uniform(10, 10_000),
        updated_at=NOW - rng.uniform(0, 10),
        failure_code="MSS.0001" if phase is Phase.FAILED else None,
        assessments=tuple(
            Assessment(
                metric=metric,
                actual_value=rng.uniform(0, 50),
                status=rng.choice([-1, 0, 1]),
                expected_min=rng.choice([None, 10.0]),
                expected_max=rng.choice([None, 40.0]),
            )
            for metric in HUAWEI_ASSESSMENT_METRICS
        )
        if done
        else (),
    )


def tencent_snapshot(job_id: str, state: str, seed: int) -> JobSnapshot:
    rng = random.Random(seed)
    phase = DOCUMENTED_STATES["tencent_ci"].get(state, Phase.UNKNOWN)
    return JobSnapshot(
        job_id=job_id,
        job_type="SpeechRecognition",
        state=state,
        phase=phase,
        terminal=phase in {Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED},
        created_at=NOW - rng.uniform(10, 10_000),
        started_at=NOW - rng.uniform(5, 10) if state != "Submitted" else None,
        finished_at=NOW - rng.uniform(0, 5) if phase is Phase.SUCCEEDED else None,
        queue_id="p" + "0" * 31,
        progress=rng.uniform(0, 1) if state == "Running" else None,
    )


def job(index: int, seed: int = 0) -> JobState:
    """Job `index` in one of a few shapes; `seed` moves it along (state, values)."""
    rng = random.Random(index * 1000 + seed)
    if index % 2:
        states = list(DOCUMENTED_STATES["tencent_ci"])
        key = JobKey("tc", f"a{index:031x}")
        snap = tencent_snapshot(key.job_id, rng.choice(states), index + seed)
        provider = "tencent_ci"
    else:
        states = list(DOCUMENTED_STATES["huawei_metastudio"])
        key = JobKey("hw", f"{index:08x}-0000-4000-8000-000000000000")
        snap = huawei_snapshot(key.job_id, rng.choice(states), index + seed)
        provider = "huawei_metastudio"
    return JobState(
        key=key,
        provider=provider,
        labels=(("team", "voice"),) if index % 3 == 0 else (),
        snapshot=None if index % 17 == 5 else snap,
        failures=rng.choice([0, 0, 1, 2]),
        last_poll_success=None if index % 17 == 5 else rng.random() > 0.1,
        last_poll_at=None if index % 17 == 5 else NOW - rng.uniform(0, 30),
    )


def test_hundreds_of_jobs_render_the_same_as_prometheus_client_in_both_formats() -> None:
    assert_same(JobExposition(), [job(i) for i in range(300)])


def test_scrape_after_scrape_the_cache_follows_every_change_and_removal() -> None:
    exposition = JobExposition()
    jobs = {index: job(index) for index in range(200)}
    assert_same(exposition, list(jobs.values()))
    rng = random.Random(3)
    for step in range(1, 12):
        for index in rng.sample(sorted(jobs), 15):  # new polls: state, values, failures
            jobs[index] = job(index, step)
        for index in rng.sample(sorted(jobs), 10):  # polled again, nothing new
            jobs[index] = replace(jobs[index], polls=jobs[index].polls + 1, last_poll_at=NOW)
        if step % 3 == 0:
            del jobs[rng.choice(sorted(jobs))]  # forgotten
            jobs[1000 + step] = job(1000 + step)  # and a new one
        if step == 5:  # a job's static labels change
            jobs[0] = replace(jobs[0], labels=(("team", "speech"),))
        assert_same(exposition, list(jobs.values()), NOW + step)


def test_a_changed_selection_renders_as_prometheus_client_does_from_the_next_scrape() -> None:
    """metrics.exclude and metrics.state_series change on a reload: the cache must follow."""
    exposition = JobExposition()
    jobs = [job(i) for i in range(200)]
    for chosen in (
        ALL,
        MetricSelection.of(["re:cloudjob_job_assessment_.*", "cloudjob_job_info"], "current"),
        MetricSelection.of(["cloudjob_job_age_seconds", "cloudjob_job_failures_total"], "all"),
        MetricSelection.of([], "current"),
        ALL,
    ):
        assert_same(exposition, jobs, NOW, chosen)
        jobs[4] = job(4, seed=len(chosen.excluded) + 1)  # and a job moves on meanwhile


def test_growing_and_shrinking_past_the_group_thresholds_keeps_every_job() -> None:
    exposition = JobExposition()
    for size in (1, 130, 131, 600, 2100, 2100, 400, 90, 0, 70):
        jobs = [job(i) for i in range(size)]
        assert_same(exposition, jobs)


labels_text = st.text(alphabet=st.sampled_from('ab"\\\n€ =,{}'), max_size=6)
numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e12, max_value=1e12),
)


@st.composite
def job_states(draw: st.DrawFn) -> JobState:
    provider = draw(st.sampled_from(["huawei_metastudio", "tencent_ci", "some_new_cloud"]))
    documented = list(DOCUMENTED_STATES.get(provider, {}))
    state = draw(st.sampled_from(documented) if documented and draw(st.booleans()) else labels_text)
    phase = draw(st.sampled_from(list(Phase)))
    snap = JobSnapshot(
        job_id="j",
        job_type=draw(labels_text),
        state=state,
        phase=phase,
        terminal=False,
        created_at=draw(numbers),
        updated_at=draw(numbers),
        started_at=draw(numbers),
        finished_at=draw(numbers),
        failure_code=draw(st.one_of(st.none(), labels_text)),
        queue_id=draw(st.one_of(st.none(), labels_text)),
        progress=draw(numbers),
        assessments=tuple(
            Assessment(
                metric=metric,
                actual_value=draw(numbers),
                status=draw(st.one_of(st.none(), st.sampled_from([-1, 0, 1]))),
                expected_min=draw(numbers),
                expected_max=draw(numbers),
            )
            # A job's assessed metrics are the keys of one JSON object: unique.
            for metric in draw(st.lists(labels_text, unique=True, max_size=3))
        ),
    )
    return JobState(
        key=JobKey(draw(st.sampled_from(["a", "b"])), draw(st.sampled_from(["1", "2", "3"]))),
        provider=provider,
        labels=tuple(sorted({draw(st.sampled_from(["team", "env"])): draw(labels_text)}.items())),
        snapshot=draw(st.one_of(st.none(), st.just(snap))),
        failures=draw(st.integers(0, 5)),
        last_poll_success=draw(st.one_of(st.none(), st.booleans())),
        last_poll_at=draw(st.one_of(st.none(), st.floats(0, 2e9))),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(job_states(), max_size=6), min_size=1, max_size=5),
    st.sampled_from(["all", "current"]),
)
def test_any_sequence_of_job_states_renders_as_prometheus_client_does(
    scrapes: list[list[JobState]], state_series: str
) -> None:
    exposition = JobExposition()
    chosen = MetricSelection.of([], state_series)
    for jobs in scrapes:
        unique = list({state.key: state for state in jobs}.values())  # the store has one each
        assert_same(exposition, unique, NOW, chosen)


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_pieces_compressed_apart_join_into_one_valid_gzip_with_the_right_crc(
    parts: list[bytes],
) -> None:
    from exporter.gzip_segments import assemble

    assert gzip.decompress(assemble(compress(part) for part in parts)) == b"".join(parts)


@given(st.lists(st.binary(max_size=5000), max_size=4))
def test_joined_pieces_carry_the_crc_and_size_of_their_plain_bytes(parts: list[bytes]) -> None:
    import zlib

    from exporter.gzip_segments import assemble, join

    joined = join([compress(part) for part in parts])
    plain = b"".join(parts)
    assert (joined.crc, joined.size, joined.shift) == (
        zlib.crc32(plain),
        len(plain),
        crc_shift(len(plain)),
    )
    assert gzip.decompress(assemble([joined, compress(b"tail")])) == plain + b"tail"


def test_three_thousand_jobs_are_promtool_clean() -> None:
    jobs = [job(i) for i in range(3000)]
    text = fast(JobExposition(), jobs, NOW, TEXT)
    assert promtool_check_metrics(text) == ""


def test_the_exposition_of_a_fixed_set_of_jobs_matches_the_golden_files() -> None:
    """Byte for byte: a change to the output format shows up here and in review. Regenerate
    with CLOUDJOB_UPDATE_GOLDEN=1 after checking the diff is intended."""
    import os

    jobs = [job(i) for i in range(6)]
    for fmt, name in ((TEXT, "jobs.prom"), (OPENMETRICS, "jobs.openmetrics")):
        text = fast(JobExposition(), jobs, NOW, fmt)
        path = GOLDEN / name
        if os.environ.get("CLOUDJOB_UPDATE_GOLDEN"):
            path.write_bytes(text)
        assert text == path.read_bytes(), f"{name} differs; see the docstring"


@pytest.mark.parametrize("fmt", [TEXT, OPENMETRICS])
def test_headers_are_prometheus_clients_own(fmt: str) -> None:
    text = fast(JobExposition(), [], NOW, fmt).decode()
    expected = naive([], NOW, fmt).decode().removesuffix("# EOF\n")
    assert text.removesuffix("# EOF\n") == expected


def test_the_plain_text_comes_out_in_bounded_pieces_that_add_up_to_the_whole() -> None:
    body = JobExposition().render([job(i) for i in range(2000)], NOW, b"", TEXT)
    pieces = list(inflate_pieces(body, size=100_000))
    assert len(pieces) > 10
    assert max(len(piece) for piece in pieces) <= 100_000
    assert b"".join(pieces) == inflate(body)
    with pytest.raises(ValueError, match="truncated"):
        list(inflate_pieces(body[: len(body) // 2]))


def test_a_render_that_fails_midway_never_leaves_stale_text_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """E.g. MemoryError while joining the pieces: the groups are already re-rendered, so the
    next scrape would see nothing dirty and serve the joined text of before the change."""
    import exporter.exposition

    exposition = JobExposition()
    jobs = {index: job(index) for index in range(400)}
    assert_same(exposition, list(jobs.values()))
    for index in jobs:
        jobs[index] = replace(jobs[index], failures=jobs[index].failures + 1)

    def out_of_memory(pieces: object) -> bytes:
        raise MemoryError

    with monkeypatch.context() as patch:
        patch.setattr(exporter.exposition, "join", out_of_memory)
        with pytest.raises(MemoryError):
            exposition.render(list(jobs.values()), NOW, b"", TEXT)
    assert_same(exposition, list(jobs.values()))
