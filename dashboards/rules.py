"""Prometheus recording and alerting rules for cloudjob-exporter.

Alerts select on our metric names only (never on a scrape `job` label), so they work however
the exporter is scraped, and every per-job alert keeps the job's labels for routing.
"""

from __future__ import annotations

from typing import Any

import yaml

from dashboards import config

JOB = "account, provider, job_id"
QUEUE = "account, provider, queue_id"


def unfinished_jobs_per_queue(*labels: str) -> str:
    """Pending and running jobs per queue the cloud reported for them (and per `labels`)."""
    return (
        f"count by ({', '.join((QUEUE, *labels))}) "
        '((cloudjob_job_phase{phase=~"pending|running"} == 1)'
        f' * on ({JOB}) group_left (queue_id, job_type) cloudjob_job_info{{queue_id!=""}})'
    )


RECORDING_RULES: list[dict[str, str]] = [
    {
        "record": "cloudjob:jobs:sum",
        "expr": "sum by (account, provider, phase) (cloudjob_jobs)",
    },
    {
        "record": "cloudjob:api_requests:rate5m",
        "expr": "sum by (account, provider, status) (rate(cloudjob_api_requests_total[5m]))",
    },
    {
        "record": "cloudjob:poll_success:ratio",
        "expr": (
            "sum by (account, provider) (cloudjob_job_last_poll_success)"
            " / count by (account, provider) (cloudjob_job_last_poll_success)"
        ),
    },
    {
        "record": "cloudjob:failures:rate1h",
        "expr": (
            "sum by (account, provider, job_type, code) (increase(cloudjob_failures_total[1h]))"
        ),
    },
    *(
        {
            "record": f"cloudjob:completed_job_duration_seconds:p{quantile}",
            "expr": (
                f"histogram_quantile(0.{quantile}, sum by (provider, job_type, le) "
                "(rate(cloudjob_completed_job_duration_seconds_bucket[1h])))"
            ),
        }
        for quantile in ("50", "90", "99")
    ),
    {
        # For the dashboard's queue row.
        "record": "cloudjob:queue_unfinished_jobs:count",
        "expr": unfinished_jobs_per_queue("job_type", "phase"),
    },
]


def with_queue_name(per_queue: str, info: str = "cloudjob_queue_info") -> str:
    """`per_queue` (one series per account, provider and queue_id) labelled with the queue's
    `name` from `info`.

    Sharded replicas may each export the same queue, so duplicate info series collapse
    into one; a queue without info (`metrics.exclude` can drop it) keeps its value, nameless.
    """
    return (
        f"max by ({QUEUE}, name) ({info} * on ({QUEUE}) group_left () ({per_queue}))"
        f" or on ({QUEUE}) ({per_queue})"
    )


def _alert(
    name: str, expr: str, severity: str, summary: str, description: str, *, for_: str | None = None
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_ if for_ is not None else config.FOR[name],
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{config.RUNBOOK_URL}#{name.lower()}",
        },
    }


STUCK_ALERTS = (("pending", "CloudJobStuckPending"), ("running", "CloudJobStuckRunning"))


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:g}h"


def _stuck(phase: str, name: str) -> dict[str, Any]:
    """A job that has not changed state for too long in a non-terminal phase."""
    threshold = config.STUCK_SECONDS[phase]
    return _alert(
        name,
        f'(cloudjob_job_phase{{phase="{phase}"}} == 1) and on ({JOB})'
        f" (time() - cloudjob_job_updated_timestamp_seconds > {threshold})",
        "warning",
        f"Cloud job {{{{ $labels.job_id }}}} has been {phase} too long",
        f"Job {{{{ $labels.job_id }}}} of {{{{ $labels.account }}}} has been {phase} without a "
        f"state change for more than {_hours(threshold)}.",
    )


def _queue_paused() -> dict[str, Any]:
    """A paused queue schedules none of its waiting jobs; its value is its unfinished jobs.

    Counted here, not read from the recording rule: rule groups are evaluated independently, so
    the rule's result would lag an evaluation behind and the alert would not stand alone.
    """
    held = f"{unfinished_jobs_per_queue()} and on ({QUEUE}) (cloudjob_queue_paused == 1)"
    return _alert(
        "CloudJobQueuePaused",
        with_queue_name(held),
        "warning",
        "Queue {{ $labels.queue_id }} of {{ $labels.account }} is paused with "
        "{{ $value }} unfinished jobs",
        "Queue {{ $labels.queue_id }}{{ with $labels.name }} ({{ . }}){{ end }} of "
        "{{ $labels.account }} ({{ $labels.provider }}) is paused and holds {{ $value }} pending "
        "or running jobs: pending ones are not scheduled until the queue is resumed; running "
        "ones still finish.",
    )


DETECTION_DELAY_BUCKET = "cloudjob_state_change_detection_delay_seconds_bucket"


def detection_delay_quantile(
    quantile: float,
    window: str,
    by: str = "account, provider",
    bucket: str = DETECTION_DELAY_BUCKET,
) -> str:
    """The `quantile` of the detection delay per `by` over `window`.

    Buckets are summed before the quantile, so sharded replicas that each observe part of an
    account's changes count as one account. A window without changes gives NaN.
    """
    return f"histogram_quantile({quantile:g}, sum by ({by}, le) (rate({bucket}[{window}])))"


def _budget_exhausted() -> dict[str, Any]:
    """An account whose jobs are polled far less often than they ask: its API budget is spent.

    Each replica is compared with its own poll interval (both series come from one scrape
    target, so they match on all their labels), then the replicas of an account collapse into
    one alert whose value is the most overdue one's lag.
    """
    factor = config.OVERDUE_INTERVALS
    return _alert(
        "CloudJobExporterBudgetExhausted",
        "max by (account, provider) (cloudjob_poll_overdue_seconds"
        f" > {factor} * cloudjob_poll_interval_seconds)",
        "warning",
        "Jobs of account {{ $labels.account }} are polled {{ $value | humanizeDuration }} late",
        "The most overdue job of {{ $labels.account }} ({{ $labels.provider }}) is "
        "{{ $value | humanizeDuration }} behind the poll_interval it asked for, over "
        f"{factor} times that interval: the account's API budget cannot poll its jobs as often "
        "as they ask, so state changes are seen late.",
    )


def _detection_slow() -> dict[str, Any]:
    """State changes seen long after the cloud made them: what job alerts wait for.

    No separate guard for windows without changes: their quantile is NaN, and NaN compares
    false, so such an account does not fire.
    """
    quantile = config.DETECTION_QUANTILE
    window = config.DETECTION_WINDOW
    limit = config.DETECTION_SLOW_SECONDS
    percentile = f"p{quantile * 100:g}"
    return _alert(
        "CloudJobDetectionSlow",
        f"{detection_delay_quantile(quantile, window)} > {limit}",
        "warning",
        f"State changes of account {{{{ $labels.account }}}} are seen late ({percentile} "
        "{{ $value | humanizeDuration }})",
        f"Over the last {window}, {round(100 - quantile * 100, 6):g} % of the state changes of "
        "{{ $labels.account }} ({{ $labels.provider }}) were seen {{ $value | humanizeDuration }} "
        f"or more after the cloud made them ({percentile} limit {limit // 60}m): alerts on those "
        "jobs fire that much later.",
    )


def alerting_rules(for_override: str | None = None) -> list[dict[str, Any]]:
    """The alerts; `for_override` shortens every `for:` (the end-to-end test uses it)."""
    rules = [
        _alert(
            "CloudJobFailed",
            f'(cloudjob_job_phase{{phase="failed"}} == 1)'
            f" * on ({JOB}) group_left (code) cloudjob_job_failure_info",
            "warning",
            "Cloud job {{ $labels.job_id }} failed ({{ $labels.code }})",
            "Job {{ $labels.job_id }} of account {{ $labels.account }} ({{ $labels.provider }}) "
            "is in a failed state with code {{ $labels.code }}. The reason is in the exporter's "
            "/api/v1/jobs.",
        ),
        *(_stuck(phase, name) for phase, name in STUCK_ALERTS),
        _alert(
            "CloudJobAssessmentOutOfRange",
            "cloudjob_job_assessment_status != 0",
            "info",
            "Assessment {{ $labels.metric }} of job {{ $labels.job_id }} is out of range",
            "The cloud rates {{ $labels.metric }} of job {{ $labels.job_id }} "
            "{{ if eq $value 1.0 }}above{{ else }}below{{ end }} its expected range.",
        ),
        _alert(
            "CloudJobPollingFailing",
            "cloudjob_job_last_poll_success == 0",
            "warning",
            "Polling cloud job {{ $labels.job_id }} fails",
            "The exporter cannot read job {{ $labels.job_id }} of {{ $labels.account }}; its "
            "series show the last good values. The error is in /api/v1/jobs.",
        ),
        _alert(
            "CloudJobPollsStale",
            f"time() - cloudjob_job_last_poll_timestamp_seconds > {config.STALE_SECONDS}",
            "warning",
            "Cloud job {{ $labels.job_id }} has not been polled recently",
            f"Job {{{{ $labels.job_id }}}} was last polled more than "
            f"{config.STALE_SECONDS // 60} minutes ago: the poller is stalled or rate-limited.",
        ),
        _alert(
            "CloudJobAPIAuthFailing",
            f'sum by (account, provider) (increase(cloudjob_poll_errors_total{{reason="auth"}}'
            f"[{config.ERROR_WINDOW}])) > 0",
            "critical",
            "Cloud API rejects the credentials of account {{ $labels.account }}",
            "Polls of {{ $labels.account }} ({{ $labels.provider }}) fail authentication: "
            "rotated or expired keys, a wrong project, or clock skew.",
        ),
        _alert(
            "CloudJobAPIThrottled",
            f'sum by (account, provider) (increase(cloudjob_poll_errors_total{{reason="throttled"}}'
            f"[{config.ERROR_WINDOW}])) > 0",
            "warning",
            "Cloud API throttles account {{ $labels.account }}",
            "Polls of {{ $labels.account }} ({{ $labels.provider }}) are lost to throttling "
            "even after retries: lower max_rps or raise poll intervals.",
        ),
        _alert(
            "CloudJobDiscoveryFailing",
            "cloudjob_discovery_last_success == 0",
            "warning",
            "Job discovery fails for account {{ $labels.account }}",
            "The list API of {{ $labels.account }} ({{ $labels.provider }}) fails: new jobs are "
            "not found. Known jobs are still polled.",
        ),
        _queue_paused(),
        _budget_exhausted(),
        _detection_slow(),
        _alert(
            "CloudJobExporterAbsent",
            "absent(cloudjob_exporter_build_info)",
            "critical",
            "cloudjob-exporter is down or not scraped",
            "No cloudjob-exporter has been scraped: every cloud job alert is blind.",
        ),
    ]
    if for_override is not None:
        for rule in rules:
            rule["for"] = for_override
    return rules


def rule_file(for_override: str | None = None) -> dict[str, Any]:
    return {
        "groups": [
            {"name": "cloudjob-exporter.rules", "rules": RECORDING_RULES},
            {"name": "cloudjob-exporter.alerts", "rules": alerting_rules(for_override)},
        ]
    }


RULES_HEADER = (
    "# Generated by `make dashboards` (python -m dashboards.generate) from dashboards/rules.py\n"
    "# and dashboards/config.py: edit those, not this file.\n"
)


def rules_text(for_override: str | None = None) -> str:
    return RULES_HEADER + yaml.safe_dump(
        rule_file(for_override), sort_keys=False, width=100, allow_unicode=True
    )
