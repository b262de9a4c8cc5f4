"""The bundled Grafana dashboard: generated, committed in sync, and importable anywhere."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.generate import DASHBOARD_FILE, RULES_FILE, dashboard_text


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _model() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(Path(DASHBOARD_FILE).read_text())
    return model


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    assert Path(DASHBOARD_FILE).read_text() == dashboard_text(), (
        "run `make dashboards` and commit the result"
    )


def test_the_dashboard_has_a_fixed_uid_and_the_documented_variables() -> None:
    model = _model()
    assert model["uid"] == "cloudjob-exporter"
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for name in ("account", "provider", "job_type"):
        assert variables[name]["multi"] is True
        assert variables[name]["includeAll"] is True
    assert any(v["type"] == "adhoc" for v in variables.values())


def test_every_panel_has_a_description_a_unit_and_the_datasource_variable() -> None:
    panels = [p for p in _panels(_model()["panels"]) if p["type"] != "row"]
    assert len(panels) >= 10
    queries = 0
    for panel in panels:
        title = panel["title"]
        assert panel.get("description"), title
        assert panel["fieldConfig"]["defaults"].get("unit"), title
        assert panel["datasource"]["uid"] == "${datasource}", title
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", title
            queries += 1
    assert queries >= 10


def test_the_issue_rows_are_all_there() -> None:
    rows = [p["title"] for p in _model()["panels"] if p["type"] == "row"]
    wanted_rows = (
        "Overview",
        "Jobs",
        "Queues",
        "Failures",
        "Assessment",
        "Voice training",
        "latency",
        "health",
        "budget",
    )
    for wanted in wanted_rows:
        assert any(wanted.lower() in row.lower() for row in rows), (wanted, rows)


def test_the_polling_budget_row_shows_every_budget_metric() -> None:
    panels = _model()["panels"]
    start = next(i for i, p in enumerate(panels) if p["title"] == "Polling budget") + 1
    end = next((i for i, p in enumerate(panels[start:], start) if p["type"] == "row"), len(panels))
    row = panels[start:end]
    exprs = " ".join(t["expr"] for p in row for t in p.get("targets", []))
    for metric in (
        "cloudjob_api_budget_rps",
        "cloudjob_api_budget_utilization_ratio",
        "cloudjob_poll_overdue_seconds",
        "cloudjob_poll_interval_seconds",
        "cloudjob_state_change_detection_delay_seconds_bucket",
    ):
        assert metric in exprs, metric
    for quantile in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({quantile}, " in exprs, quantile
    heatmaps = [p for p in row if p["type"] == "heatmap"]
    assert [t["format"] for p in heatmaps for t in p["targets"]] == ["heatmap"]
    assert all(p["options"]["calculate"] is False for p in heatmaps)


def test_every_query_is_promql_that_promtool_accepts(tmp_path: Path) -> None:
    """Each query as a recording rule for `promtool check rules`, Grafana's interval variables
    replaced by a duration: a syntax error fails here without a running Prometheus."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    exprs = [
        re.sub(r"\$__\w+", "5m", target["expr"])
        for panel in _panels(_model()["panels"])
        for target in panel.get("targets", [])
    ]
    assert len(exprs) >= 10
    rules = [{"record": f"dashboard:query_{n}:check", "expr": e} for n, e in enumerate(exprs)]
    path = tmp_path / "queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout


def _row(title: str) -> list[dict[str, Any]]:
    panels = _model()["panels"]
    start = next(i for i, p in enumerate(panels) if p["title"] == title) + 1
    end = next((i for i, p in enumerate(panels[start:], start) if p["type"] == "row"), len(panels))
    return panels[start:end]


HW = 'account="hw",provider="huawei_metastudio"'
# A training job bounced to AUDIT_FAILED and a short job in SPLIT_FAILED (state_series all: their
# other states at 0), and a Tencent job whose type shares a training type's name. Evaluated at 2h.
TRAINING_ROW_SERIES = [
    (f'cloudjob_job_info{{{HW},job_id="t1",job_type="BASIC"}}', "1x120"),
    (f'cloudjob_job_state{{{HW},job_id="t1",state="AUDIT_FAILED"}}', "1x120"),
    (f'cloudjob_job_state{{{HW},job_id="t1",state="PROCESSING"}}', "0x120"),
    (f'cloudjob_job_updated_timestamp_seconds{{{HW},job_id="t1"}}', "0x120"),
    (f'cloudjob_job_info{{{HW},job_id="s1",job_type="VOICE_ASSESS"}}', "1x120"),
    (f'cloudjob_job_state{{{HW},job_id="s1",state="SPLIT_FAILED"}}', "1x120"),
    (f'cloudjob_job_state{{{HW},job_id="s1",state="AUDIT_FAILED"}}', "0x120"),
    (f'cloudjob_job_updated_timestamp_seconds{{{HW},job_id="s1"}}', "3600x120"),
    ('cloudjob_job_info{account="tc",provider="tencent_ci",job_id="c1",job_type="BASIC"}', "1x120"),
    ('cloudjob_job_state{account="tc",provider="tencent_ci",job_id="c1",state="Failed"}', "1x120"),
    # One failure a minute: 60 in the recording rule's hour, for each of the three kinds.
    (f'cloudjob_failures_total{{{HW},job_type="BASIC",code="MSS.A"}}', "0+1x120"),
    (f'cloudjob_failures_total{{{HW},job_type="VOICE_ASSESS",code="MSS.S"}}', "0+1x120"),
    (
        'cloudjob_failures_total{account="tc",provider="tencent_ci",job_type="BASIC",code="E"}',
        "0+1x120",
    ),
    # Trainings ending between 1 h and 2 h (median 5400 s by interpolation), short jobs in 1 min.
    *(
        (
            f'cloudjob_completed_job_duration_seconds_bucket{{{HW},job_type="{job_type}",'
            f'phase="succeeded",le="{le}"}}',
            values,
        )
        for job_type, buckets in (
            ("BASIC", (("60", "0x120"), ("3600", "0x120"), ("7200", "0+1x120"))),
            ("VOICE_ASSESS", (("60", "0+5x120"), ("3600", "0+5x120"), ("7200", "0+5x120"))),
        )
        for le, values in (*buckets, ("+Inf", buckets[-1][1]))
    ),
]
# (panel title, query index) -> the samples it must return.
TRAINING_ROW_ANSWERS = {
    ("Training jobs by state", 0): [('{state="AUDIT_FAILED"}', 1)],
    ("Jobs waiting on their owner", 0): [
        (f'{{{HW},job_id="t1",state="AUDIT_FAILED"}}', 1),
        (f'{{{HW},job_id="s1",state="SPLIT_FAILED"}}', 1),
    ],
    ("Jobs waiting on their owner", 3): [
        (f'{{{HW},job_id="t1"}}', 7200),
        (f'{{{HW},job_id="s1"}}', 3600),
    ],
    ("Training failures by code", 0): [('{job_type="BASIC",code="MSS.A"}', 60)],
    ("Training duration", 0): [('{job_type="BASIC"}', 5400)],
}


def test_the_voice_training_row_answers_for_training_jobs_only(tmp_path: Path) -> None:
    """The row's queries, variables at All, against Prometheus' engine (promtool's unit tests)
    with training, short and Tencent jobs: state counts, failures and durations are the training
    jobs' alone; the waiting table lists short jobs too, since they wait on their owner alike."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    row = {panel["title"]: panel for panel in _row("Voice training")}
    assert set(row) >= {title for title, _ in TRAINING_ROW_ANSWERS}
    tests = [
        {
            "expr": re.sub(r"\$\w+", ".*", row[title]["targets"][index]["expr"]),
            "eval_time": "2h",
            "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
        }
        for (title, index), samples in TRAINING_ROW_ANSWERS.items()
    ]
    path = tmp_path / "training-row.test.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES_FILE)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {"series": series, "values": values}
                            for series, values in TRAINING_ROW_SERIES
                        ],
                        "promql_expr_test": tests,
                    }
                ],
            }
        )
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
