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

from dashboards.generate import DASHBOARD_FILE, dashboard_text


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
