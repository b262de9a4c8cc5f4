"""The metric spec against the docs, and what `metrics.exclude` / `metrics.state_series` leave
in /metrics: series per job, a real scrape, a reload, and the config errors."""

from __future__ import annotations

import re
import zlib
from dataclasses import fields, replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import ConfigError, load_settings
from exporter.exposition import TEXT, JobExposition
from exporter.job_metrics import JOB_METRICS
from exporter.metric_selection import ALL, EXPORTER_FAMILIES, MetricSelection
from exporter.model import JobSnapshot, Phase
from exporter.simulator.metastudio import MetaStudioSimulator
from exporter.states import HUAWEI_STATES
from exporter.store import JobKey, JobState
from tests.conftest import job_with_every_field_set
from tests.support import ServerFactory, scrape, scrape_until
from tests.test_job_api import AUTH, call, config_text, exporter, polled

OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0"
README = Path(__file__).resolve().parent.parent / "README.md"
NOW = 1_700_000_000.0


def tencent_job() -> JobState:
    """A finished Tencent job with every field its cloud reports."""
    return JobState(
        key=JobKey("tc", "a" * 32),
        provider="tencent_ci",
        snapshot=JobSnapshot(
            job_id="a" * 32,
            job_type="SpeechRecognition",
            state="Success",
            phase=Phase.SUCCEEDED,
            terminal=True,
            created_at=NOW - 60,
            updated_at=NOW - 30,
            started_at=NOW - 50,
            finished_at=NOW - 30,
            queue_id="p" + "0" * 31,
            progress=1.0,
        ),
        failures=1,
        last_poll_success=True,
        last_poll_at=NOW,
    )


def huawei_job(*, every_field: bool) -> JobState:
    """A Huawei job with six assessment metrics (as a finished one has): with every field set
    (more than the cloud ever sends at once: failed, yet with progress), or as it succeeded."""
    job = job_with_every_field_set()
    assert job.snapshot is not None
    assessments = tuple(
        replace(job.snapshot.assessments[0], metric=f"m{index}") for index in range(6)
    )
    snapshot = replace(job.snapshot, assessments=assessments)
    if not every_field:
        snapshot = replace(
            snapshot,
            state="SUCCEED",
            phase=Phase.SUCCEEDED,
            failure_code=None,
            started_at=None,
            progress=None,
            queue_id=None,
        )
    return replace(job, snapshot=snapshot)


def series(jobs: list[JobState], chosen: MetricSelection) -> dict[str, int]:
    """Series per family of a fast render of `jobs`."""
    body = JobExposition().render(jobs, NOW, b"", TEXT, chosen)
    text = zlib.decompress(body, wbits=16 + zlib.MAX_WBITS).decode()
    return {
        family.name: len(family.samples)
        for family in text_string_to_metric_families(text)
        if family.samples
    }


SETTINGS = {
    "all": MetricSelection.of([], "all"),
    "current": MetricSelection.of([], "current"),
    "current, no assessments": MetricSelection.of(["re:cloudjob_job_assessment_.*"], "current"),
}


# Per setting: series of a Huawei job with every field set, of a succeeded Huawei job, of a
# finished Tencent job; and the setting's row in docs/metrics.md.
FIGURES = (
    ("all", 57, 54, 22, "default (`state_series: all`)"),
    ("current", 37, 34, 12, "`state_series: current`"),
    (
        "current, no assessments",
        13,
        10,
        12,
        '`current` and `exclude: ["re:cloudjob_job_assessment_.*"]`',
    ),
)


@pytest.mark.parametrize(("setting", "most", "huawei", "tencent"), [row[:4] for row in FIGURES])
def test_series_per_job_for_each_setting(
    setting: str, most: int, huawei: int, tencent: int
) -> None:
    """The figures the docs give. A succeeded Huawei job: 16 states + 6 phases + 6 assessment
    metrics x 4 + 8 others; `current` keeps 1 of the 16 and 1 of the 6."""
    chosen = SETTINGS[setting]
    counts = (
        sum(series([huawei_job(every_field=True)], chosen).values()),
        sum(series([huawei_job(every_field=False)], chosen).values()),
        sum(series([tencent_job()], chosen).values()),
    )
    print(  # noqa: T201 - the figures for the docs
        f"{setting}: Huawei at most {counts[0]}, succeeded {counts[1]}; Tencent {counts[2]}"
    )
    assert counts == (most, huawei, tencent)


def test_current_keeps_only_the_series_that_are_1() -> None:
    jobs = [huawei_job(every_field=True), tencent_job()]
    everything, current = series(jobs, ALL), series(jobs, SETTINGS["current"])
    assert everything["cloudjob_job_state"] == 16 + 6
    assert everything["cloudjob_job_phase"] == 6 + 6
    assert current["cloudjob_job_state"] == current["cloudjob_job_phase"] == 2
    stateless = set(everything) - {"cloudjob_job_state", "cloudjob_job_phase"}
    assert {name: current[name] for name in stateless} == {
        name: everything[name] for name in stateless
    }


def test_every_family_reads_fields_that_exist_and_has_a_unique_name() -> None:
    """What a family `reads` decides when its cached text is re-rendered: a misspelt field
    would never be compared (the fast-vs-reference tests catch a field left out)."""
    job_fields = {item.name for item in fields(JobState)}
    snapshot_fields = {item.name for item in fields(JobSnapshot)}
    for metric in JOB_METRICS:
        assert metric.reads, metric.name
        for read in metric.reads:
            owner, _, name = read.rpartition(".")
            assert (owner == "" and name in job_fields) or (
                owner == "snapshot" and name in snapshot_fields
            ), f"{metric.name} reads {read!r}"
    names = [metric.name for metric in JOB_METRICS] + [name for name, _ in EXPORTER_FAMILIES]
    assert len(names) == len(set(names))


# -- The README's metric table ------------------------------------------------------------------

_ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<type>[^|]+) \| (?P<labels>[^|]+) \|")


def metric_table() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, labels) of the table under the header `| Metric | Type | Labels | Meaning |`,
    wherever it sits; "job labels" stands for the labels every per-job series has."""
    lines = README.read_text().splitlines()
    start = lines.index("| Metric | Type | Labels | Meaning |")
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        match = _ROW.match(line)
        assert match, f"a metric table row the test cannot read: {line}"
        labels = tuple(part.strip().strip("`") for part in match["labels"].split(","))
        rows[match["name"]] = (match["type"].split()[0], labels)
    return rows


def test_the_readme_metric_table_lists_exactly_the_per_job_families_of_the_spec() -> None:
    table = metric_table()
    per_job = {name: row for name, row in table.items() if row[1][0] == "job labels"}
    assert per_job == {
        metric.sample_name: (metric.type, ("job labels", *metric.labels)) for metric in JOB_METRICS
    }


def test_the_readme_metric_table_lists_the_other_families_the_exporter_has() -> None:
    table = metric_table()
    others = {name for name, row in table.items() if row[1][0] != "job labels"}
    suffix = {"counter": "_total", "info": "_info"}
    expected = {
        name + suffix.get(kind, "")
        for name, kind in EXPORTER_FAMILIES
        if not name.startswith("process_")  # named in the text under the table
    }
    assert others == expected


# -- A real scrape ------------------------------------------------------------------------------


async def scraped_families(server: TestServer) -> set[str]:
    """The families of an OpenMetrics scrape, named as prometheus-client keeps them."""
    status, text = await call(server, "GET", "/metrics", Accept=OPENMETRICS_TYPE)
    assert status == 200
    return {family.name for family in parse_openmetrics(str(text))}


async def test_the_family_lists_are_what_a_real_scrape_shows(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """EXPORTER_FAMILIES is the `metrics.exclude` check's list: it must not drift."""
    server = await exporter(aiohttp_server, tmp_path, config_text(five_job_cloud[1]))
    await scrape_until(server, polled("job-0"))
    assert await scraped_families(server) == {name for name, _ in EXPORTER_FAMILIES} | {
        metric.name for metric in JOB_METRICS
    }


async def test_excluded_families_and_current_states_leave_the_scrape_and_a_reload_restores_them(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    settings = (
        "metrics:\n  state_series: current\n  exclude:\n"
        "    - re:cloudjob_job_assessment_.*\n    - cloudjob_job_info\n"
        "    - cloudjob_api_requests_total\n    - re:process_.*\n"
    )
    text = config_text(five_job_cloud[1], extra=settings)
    server = await exporter(aiohttp_server, tmp_path, text)
    scraped = await scrape_until(server, polled("job-0"))
    shown = await scraped_families(server)
    gone = {"cloudjob_job", "cloudjob_api_requests"} | {
        name for name in families_all() if name.startswith(("process_", "cloudjob_job_assessment"))
    }
    assert shown == families_all() - gone
    for stateset in ("cloudjob_job_state{", "cloudjob_job_phase{"):
        lines = [line for line in scraped.splitlines() if line.startswith(stateset)]
        assert len(lines) == 1, lines
        assert lines[0].endswith(" 1.0"), lines
    # Back to the defaults on a reload: every family and every StateSet series again.
    (tmp_path / "config.yaml").write_text(config_text(five_job_cloud[1]))
    assert (await call(server, "POST", "/-/reload", **AUTH))[0] == 200
    assert await scraped_families(server) == families_all()
    scraped = await scrape(server)
    assert sum(line.startswith("cloudjob_job_state{") for line in scraped.splitlines()) == len(
        HUAWEI_STATES
    )


def families_all() -> set[str]:
    return {name for name, _ in EXPORTER_FAMILIES} | {metric.name for metric in JOB_METRICS}


# -- Config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "family"),
    [
        ("cloudjob_job_failures_total", "cloudjob_job_failures"),
        ("cloudjob_job_failures", "cloudjob_job_failures"),
        ("cloudjob_job_info", "cloudjob_job"),
        ("cloudjob_job", "cloudjob_job"),
        ("cloudjob_job_failure_info", "cloudjob_job_failure"),
        ("cloudjob_exporter_build_info", "cloudjob_exporter_build"),
        ("process_cpu_seconds_total", "process_cpu_seconds"),
        ("re:cloudjob_job_failures?_.*", "cloudjob_job_failures"),
    ],
)
def test_a_family_answers_to_its_name_and_to_its_samples_name(entry: str, family: str) -> None:
    assert family in MetricSelection.of([entry], "all").excluded


def test_a_pattern_matches_whole_names_only() -> None:
    assert MetricSelection.of(["re:cloudjob_job_assessment_.*"], "all").excluded == {
        "cloudjob_job_assessment_actual",
        "cloudjob_job_assessment_status",
        "cloudjob_job_assessment_expected_min",
        "cloudjob_job_assessment_expected_max",
    }
    assert MetricSelection.of(["re:cloudjob_job"], "all").excluded == {"cloudjob_job"}


@pytest.mark.parametrize(
    ("metrics", "problem"),
    [
        (
            "{exclude: [cloudjob_job_age]}",
            "metrics.exclude: 'cloudjob_job_age' is no metric family (see the metric reference)",
        ),
        (
            "{exclude: ['re:cloudjob_nothing_.*']}",
            "metrics.exclude: 're:cloudjob_nothing_.*' matches no metric family "
            "(see the metric reference)",
        ),
        ("{exclude: ['re:(']}", "metrics.exclude: 're:(' is not a valid regular expression"),
        ("{state_series: some}", "metrics.state_series: Input should be 'all' or 'current'"),
        ("{include: [cloudjob_jobs]}", "metrics.include: unknown key"),
    ],
)
def test_a_bad_metrics_setting_is_one_line_naming_it(
    tmp_path: Path, metrics: str, problem: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"metrics: {metrics}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}: {problem}")


def test_the_defaults_select_everything() -> None:
    assert load_settings(None).metrics.selection == ALL


def test_the_docs_give_the_series_per_job_the_test_above_measures() -> None:
    repo = Path(__file__).resolve().parent.parent
    table = (repo / "docs" / "metrics.md").read_text().split("## Series per job", 1)[1]
    for _, most, huawei, tencent, label in FIGURES:
        assert f"| {label} | {huawei} (at most {most}) | {tencent} |" in table, label
    _, _, huawei, tencent, _ = FIGURES[0]
    sentence = f"A Huawei job has {huawei} series"
    for page in ("README.md", "docs/configuration.md"):
        text = " ".join((repo / page).read_text().split())
        assert f"{sentence}, a Tencent job {tencent}" in text, page
