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

HUAWEI = 'provider="huawei_metastudio"'


TRAINING = (HUAWEI, f'job_type=~"{"|".join(config.TRAINING_JOB_TYPES)}"')
"""Matchers for series of Huawei voice training jobs: their `job_type` is the training type."""

WAITING_ON_USER = f'state=~"{"|".join(config.WAITING_ON_USER_STATES)}"'
"""Matches the states in which a job waits for its owner."""


def training_jobs(*matchers: str) -> str:
    """The info series of voice training jobs (and `matchers`)."""
    return "cloudjob_job_info{" + ",".join((*matchers, *TRAINING)) + "}"


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:g}h"


def stuck_jobs(phase: str, phase_series: str | None = None) -> str:
    """Jobs in `phase` whose last state change is older than their kind's limit; the value is
    the seconds since that change.

    Voice training jobs are told apart by `job_type` on cloudjob_job_info; a job without that
    series (`metrics.exclude` can drop it) gets the short-job limit, as before training jobs
    existed, so dropping it never silences a short job.
    """
    series = phase_series or f'cloudjob_job_phase{{phase="{phase}"}}'

    def unchanged_for_over(seconds: int) -> str:
        # `group_left ()` keeps the phase series' labels (one-to-one matching would keep only
        # the `on` ones), so the alert's labels are those it always had.
        return (
            f"({series} == 1) * on ({JOB}) group_left ()"
            f" (time() - cloudjob_job_updated_timestamp_seconds > {seconds})"
        )

    short = unchanged_for_over(config.STUCK_SECONDS[phase])
    training = unchanged_for_over(config.TRAINING_STUCK_SECONDS[phase])
    return (
        f"({short} unless on ({JOB}) {training_jobs()})"
        f" or ({training} and on ({JOB}) {training_jobs()})"
    )


def _stuck(phase: str, name: str) -> dict[str, Any]:
    """A job that has not changed state for too long in a non-terminal phase."""
    short = _hours(config.STUCK_SECONDS[phase])
    training = _hours(config.TRAINING_STUCK_SECONDS[phase])
    return _alert(
        name,
        stuck_jobs(phase),
        "warning",
        f"Cloud job {{{{ $labels.job_id }}}} has been {phase} too long",
        f"Job {{{{ $labels.job_id }}}} of {{{{ $labels.account }}}} has been {phase} without a "
        f"state change for {{{{ $value | humanizeDuration }}}}: over the {short} limit of a short "
        f"or Tencent job, or the {training} of a voice training job.",
    )


def _choose(cases: list[tuple[str, str]], otherwise: str) -> str:
    """A Go template choosing the text of the first true condition of `cases`."""
    branches = "".join(
        f"{{{{ {'if' if index == 0 else 'else if'} {condition} }}}}{text}"
        for index, (condition, text) in enumerate(cases)
    )
    return f"{branches}{{{{ else }}}}{otherwise}{{{{ end }}}}"


def _query_job(metric: str, suffix: str = "") -> str:
    """A template pipeline querying `metric` of the alert's job."""
    return (
        f'printf "{metric}{{account=%q,provider=%q,job_id=%q}}{suffix}"'
        " $labels.account $labels.provider $labels.job_id | query"
    )


def _failed() -> dict[str, Any]:
    """A job in the failed phase, and whether it waits for its owner or failed for good.

    The job's state is read in the description (a query at alert time), not added as a label:
    labels are an alert's identity in Alertmanager, and a job can go from AUDIT_FAILED to FAILED
    without leaving the failed phase (one failure, counted once), which with a `state` label
    would resolve one alert and page a second. The expression is unchanged, so the alert fires
    without cloudjob_job_state (`metrics.exclude`) and with `state_series: current`; without the
    state, the job's finish time, present only in a terminal state, tells a final failure.
    """
    for_good = ": it failed for good; resubmit it once the cause is fixed."
    final = " ".join(f'"{state}"' for state in config.TERMINAL_FAILED_STATES)
    verdict = _choose(
        [
            (
                f'eq $state "{state}"',
                f" ({state}): it is not finished but waits for its owner to {action}.",
            )
            for state, action in config.WAITING_ON_USER_STATES.items()
        ]
        + [
            (f"eq $state {final}", " ({{ $state }})" + for_good),
            (_query_job("cloudjob_job_finished_timestamp_seconds"), for_good),
        ],
        ".",
    )
    return _alert(
        "CloudJobFailed",
        f'(cloudjob_job_phase{{phase="failed"}} == 1)'
        f" * on ({JOB}) group_left (code) cloudjob_job_failure_info",
        "warning",
        "Cloud job {{ $labels.job_id }} failed ({{ $labels.code }})",
        '{{ $state := "" }}'
        f"{{{{ range {_query_job('cloudjob_job_state', ' == 1')} }}}}"
        "{{ $state = .Labels.state }}{{ end }}"
        "Job {{ $labels.job_id }} of account {{ $labels.account }} ({{ $labels.provider }}) "
        f"is in a failed state with code {{{{ $labels.code }}}}{verdict} The reason is in the "
        "exporter's /api/v1/jobs.",
    )


def _waiting_on_user() -> dict[str, Any]:
    """A job bounced back to its owner (failed, not terminal) who has not acted for long.

    Its value is the seconds since the job's last state change. It needs cloudjob_job_state:
    only the state says that the owner must act, and what to do.
    """
    limit = config.WAITING_ON_USER_SECONDS
    todo = _choose(
        [
            (f'eq $labels.state "{state}"', action)
            for state, action in config.WAITING_ON_USER_STATES.items()
        ],
        "act",
    )
    return _alert(
        "CloudJobWaitingOnUser",
        f"(time() - cloudjob_job_updated_timestamp_seconds > {limit})"
        f" * on ({JOB}) group_left (state)"
        f" (cloudjob_job_state{{{WAITING_ON_USER}}} == 1)",
        "warning",
        "Cloud job {{ $labels.job_id }} waits for its owner ({{ $labels.state }})",
        "Job {{ $labels.job_id }} of {{ $labels.account }} has been in {{ $labels.state }} for "
        f"{{{{ $value | humanizeDuration }}}}, over {_hours(limit)}: it is not finished and does "
        f"not move until its owner acts. Ask the job's owner to {todo}; the reason is in the "
        "exporter's /api/v1/jobs.",
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
        _failed(),
        *(_stuck(phase, name) for phase, name in STUCK_ALERTS),
        _waiting_on_user(),
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
