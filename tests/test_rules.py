"""The bundled Prometheus rules: valid, unit-tested per alert, documented, and in sync."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from dashboards import config
from dashboards.rules import rules_text
from exporter.accounts import TrainingType
from exporter.states import HUAWEI_TABLE, TENCENT_TABLE, Phase, StateTable

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
RULES = DASHBOARDS / "cloudjob-exporter.rules.yaml"
RULE_TESTS = DASHBOARDS / "cloudjob-exporter.rules.test.yaml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, check=False, cwd=DASHBOARDS
    )


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_committed_rules_file_is_what_the_generator_writes() -> None:
    assert RULES.read_text() == rules_text(), "run `make dashboards` and commit the result"


def test_promtool_check_rules_passes() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_non_firing_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert len(names) >= 7
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a non-firing case"


def test_every_alert_has_severity_annotations_and_a_runbook_section() -> None:
    runbook = (DASHBOARDS / "RUNBOOK.md").read_text()
    for rule in _alerts():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert f"## {rule['alert']}" in runbook
        assert anchor == rule["alert"].lower()


def test_alerts_select_on_metric_names_not_on_a_scrape_job_label() -> None:
    for rule in _alerts():
        assert "job=" not in rule["expr"].replace("job_id", "")


def _failed_states(table: StateTable, *, terminal: bool) -> set[str]:
    return {
        state
        for state, phase in table.phases.items()
        if phase is Phase.FAILED and table.is_terminal(state, phase, True) is terminal
    }


def test_the_alerts_name_the_failed_states_as_the_exporter_maps_them() -> None:
    """CloudJobFailed's text and CloudJobWaitingOnUser follow the exporter's state tables: every
    failed state that waits for its owner, and every final one, is named."""
    for state in config.WAITING_ON_USER_STATES:
        phase, known = HUAWEI_TABLE.phase_of(state)
        assert phase is Phase.FAILED, state
        assert not HUAWEI_TABLE.is_terminal(state, phase, known), state
    assert _failed_states(HUAWEI_TABLE, terminal=False) <= set(config.WAITING_ON_USER_STATES)
    final = _failed_states(HUAWEI_TABLE, terminal=True) | _failed_states(
        TENCENT_TABLE, terminal=True
    )
    assert final == set(config.TERMINAL_FAILED_STATES)


def test_the_training_types_the_rules_single_out_are_the_exporters() -> None:
    """The stuck alerts' longer limits and the Voice training row pick training jobs by these
    `job_type` values: they must be the ones the config accepts (the SDK's JobType)."""
    assert get_args(TrainingType) == config.TRAINING_JOB_TYPES
