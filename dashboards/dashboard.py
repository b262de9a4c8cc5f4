"""The "Cloud jobs" Grafana dashboard, built with grafana-foundation-sdk.

Written as code so its queries are reviewed with the exporter and follow its metric names, and so
its thresholds come from `dashboards.config`, where the alerts read them too. Every panel queries
`${datasource}` (no datasource UIDs: the JSON imports into any Grafana) and honours the account,
provider and job type variables; per-job series carry no `job_type`, so they are joined to
`cloudjob_job_info` for it. Aggregates come from the recording rules in `dashboards.rules`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    heatmap,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    GraphThresholdsStyleMode,
    HeatmapCellLayout,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from dashboards.config import (
    DETECTION_QUANTILE,
    DETECTION_SLOW_SECONDS,
    OVERDUE_INTERVALS,
    STALE_SECONDS,
    STUCK_SECONDS,
    TRAINING_STUCK_SECONDS,
    WAITING_ON_USER_SECONDS,
    WAITING_ON_USER_STATES,
)
from dashboards.rules import (
    DETECTION_DELAY_BUCKET,
    QUEUE,
    TRAINING,
    WAITING_ON_USER,
    detection_delay_quantile,
    stuck_jobs,
    training_jobs,
    with_queue_name,
)

UID = "cloudjob-exporter"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

JOB = "account, provider, job_id"
SCOPE = 'account=~"$account",provider=~"$provider"'
JOB_TYPE = 'job_type=~"$job_type"'
PROVIDER = 'provider=~"$provider"'
RUNNING = 'cloudjob_job_phase{phase="running"} == 1'

Steps = Sequence[tuple[float | None, str]]
GREEN: Steps = ((None, "green"),)
RED_FROM_ONE: Steps = ((None, "green"), (1, "red"))
PHASE_COLORS = {
    "pending": "yellow",
    "running": "blue",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "purple",
    "unknown": "orange",
}
QUEUE_STATE = {"0": ("active", "green"), "1": ("paused", "red")}
ASSESSMENT_STATUS = {
    "-1": ("below range", "red"),
    "0": ("in range", "green"),
    "1": ("above range", "red"),
}


def sel(metric: str, *matchers: str, scoped: bool = True) -> str:
    """`metric{...}` restricted to the selected accounts and providers (`scoped`)."""
    return metric + "{" + ",".join((SCOPE, *matchers) if scoped else matchers) + "}"


def phase_is(phase: str) -> str:
    return f'phase="{phase}"'


def per_job(expr: str) -> str:
    """Keep the per-job series of `expr` whose job matches the job type variable."""
    return f"{expr} and on ({JOB}) {sel('cloudjob_job_info', JOB_TYPE, scoped=False)}"


def target(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    return query.instant() if instant else query.range()


def column(expr: str, *labels: str, key: str = JOB) -> prometheus.Dataquery:
    """Part of a table: one row per `key` (a job unless told) and `labels`, its labels becoming
    columns."""
    by = ", ".join((key, *labels))
    return target(f"max by ({by}) ({expr})", instant=True).format(PromQueryFormat.TABLE)


def thresholds(steps: Steps) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def mapping(options: dict[str, tuple[str, str]]) -> ValueMap:
    """Value -> (text, color) mappings."""
    return ValueMap(
        {
            value: ValueMappingResult(text=text, color=color, index=index)
            for index, (value, (text, color)) in enumerate(options.items())
        }
    )


def fixed_color(color: str) -> DynamicConfigValue:
    return DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})


def dashed_line() -> DynamicConfigValue:
    """For the series a panel compares the others against (a budget, an alert's limit)."""
    return DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})


def colored_cells(options: dict[str, tuple[str, str]]) -> list[DynamicConfigValue]:
    return [
        DynamicConfigValue(id_val="mappings", value=[mapping(options)]),
        DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
    ]


def unit(name: str) -> list[DynamicConfigValue]:
    return [DynamicConfigValue(id_val="unit", value=name)]


def merged(hidden: Sequence[str], columns: dict[str, str]) -> list[DataTransformerConfig]:
    """Join instant queries on their shared labels, then hide, order and rename columns."""
    return [
        DataTransformerConfig(id_val="merge", options={}),
        DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": dict.fromkeys(("Time", *hidden), True),
                "indexByName": {name: index for index, name in enumerate(columns)},
                "renameByName": columns,
            },
        ),
    ]


P = TypeVar(
    "P",
    stat.Panel,
    timeseries.Panel,
    bargauge.Panel,
    table.Panel,
    statetimeline.Panel,
    heatmap.Panel,
)


def panel(
    builder: P,
    title: str,
    description: str,
    unit: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    size: tuple[int, int],
    steps: Steps = GREEN,
) -> P:
    """What every panel has: a description, the datasource variable, a unit and thresholds.

    Queries get ref ids A, B, ... in order; tables name their value columns after them.
    """
    width, height = size
    queries: list[Builder[Dataquery]] = [
        query.ref_id(chr(ord("A") + index)) for index, query in enumerate(targets)
    ]
    return (
        builder.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .thresholds(thresholds(steps))
        .targets(queries)
        .span(width)
        .height(height)
    )


def latest() -> common.ReduceDataOptions:
    return common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def a_stat() -> stat.Panel:
    return stat.Panel().reduce_options(latest()).graph_mode(BigValueGraphMode.NONE)


def job_count(
    title: str,
    description: str,
    series: str,
    *,
    size: tuple[int, int] = (4, 6),
    steps: Steps = RED_FROM_ONE,
) -> stat.Panel:
    """How many series `series` selects now: 0 when none, not "No data", which reads as broken."""
    return panel(
        a_stat(),
        title,
        description,
        "short",
        [target(f"count({series}) or vector(0)", instant=True)],
        size=size,
        steps=steps,
    )


def a_bargauge() -> bargauge.Panel:
    return bargauge.Panel().reduce_options(latest()).orientation(VizOrientation.HORIZONTAL)


def a_timeseries() -> timeseries.Panel:
    """Threshold steps are drawn as dashed lines (the base step draws none)."""
    dashed = common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)
    return timeseries.Panel().fill_opacity(10).thresholds_style(dashed)


def variables() -> list[Builder[model.VariableModel]]:
    def labels_of(name: str, label: str, query: str) -> dashboard.QueryVariable:
        return (
            dashboard.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )

    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        labels_of("account", "Account", "label_values(cloudjob_jobs, account)"),
        labels_of(
            "provider", "Provider", 'label_values(cloudjob_jobs{account=~"$account"}, provider)'
        ),
        labels_of(
            "job_type",
            "Job type",
            'label_values(cloudjob_job_info{account=~"$account",provider=~"$provider"}, job_type)',
        ),
        dashboard.AdHocVariable("filter")
        .label("Job labels")
        .description("Filters every query on any label, such as a job label like team.")
        .datasource(DATASOURCE),
    ]


def overview() -> list[Builder[model.Panel]]:
    stuck = " or ".join(
        f"({stuck_jobs(phase, sel('cloudjob_job_phase', phase_is(phase)))})"
        for phase in STUCK_SECONDS
    )
    by_phase = panel(
        a_bargauge(),
        "Jobs by phase",
        "Tracked jobs per normalized phase (unknown: not polled successfully yet); the job type "
        "variable does not apply.",
        "short",
        [target(f"sum by (phase) ({sel('cloudjob:jobs:sum')})", "{{phase}}", instant=True)],
        size=(12, 6),
    )
    for phase, color in PHASE_COLORS.items():
        by_phase = by_phase.override_by_name(phase, [fixed_color(color)])
    failed = per_job(f"{sel('cloudjob_job_phase', phase_is('failed'))} == 1")
    oldest = per_job(f"{sel('cloudjob_job_age_seconds')} and on ({JOB}) ({RUNNING})")
    return [
        by_phase,
        job_count(
            "Failing now", "Jobs in the failed phase now; each one fires CloudJobFailed.", failed
        ),
        job_count(
            "Stuck",
            f"Jobs pending for over {STUCK_SECONDS['pending'] // 60} min or in one running state "
            f"for over {STUCK_SECONDS['running'] // 3600} h (voice training jobs: "
            f"{TRAINING_STUCK_SECONDS['pending'] // 3600} h and "
            f"{TRAINING_STUCK_SECONDS['running'] // 3600} h), as the stuck alerts count them.",
            per_job(f"({stuck})"),
        ),
        panel(
            a_stat(),
            "Oldest running job",
            "Time since creation of the oldest running job, to spot jobs a cloud never finishes.",
            "s",
            [target(f"max({oldest})", instant=True)],
            steps=((None, "green"), (STUCK_SECONDS["running"], "red")),
            size=(4, 6),
        ).no_value("none running"),
    ]


def job_table() -> table.Panel:
    return (
        panel(
            table.Panel(),
            "Jobs",
            "One row per tracked job: its cloud state and phase, age, freshness and failure code.",
            "none",
            [
                column(sel("cloudjob_job_info", JOB_TYPE), "job_type"),
                column(per_job(sel("cloudjob_job_state") + " == 1"), "state"),
                column(per_job(sel("cloudjob_job_phase") + " == 1"), "phase"),
                column(per_job(sel("cloudjob_job_age_seconds"))),
                column(per_job("1000 * " + sel("cloudjob_job_last_poll_timestamp_seconds"))),
                column(per_job(sel("cloudjob_job_last_poll_success"))),
                column(per_job(sel("cloudjob_job_failure_info")), "code"),
            ],
            size=(24, 10),
        )
        .transformations(
            merged(
                ("Value #A", "Value #B", "Value #C", "Value #G"),
                {
                    "account": "Account",
                    "provider": "Provider",
                    "job_id": "Job",
                    "job_type": "Type",
                    "state": "State",
                    "phase": "Phase",
                    "Value #D": "Age",
                    "Value #E": "Last poll",
                    "Value #F": "Last poll OK",
                    "code": "Failure code",
                },
            )
        )
        .override_by_name("Age", unit("s"))
        .override_by_name("Last poll", unit("dateTimeFromNow"))
        .override_by_name(
            "Phase", colored_cells({phase: (phase, color) for phase, color in PHASE_COLORS.items()})
        )
        .override_by_name(
            "Last poll OK", colored_cells({"1": ("yes", "green"), "0": ("no", "red")})
        )
        .sort_by([common.TableSortByFieldState().display_name("Age").desc(True)])
    )


def jobs() -> list[Builder[model.Panel]]:
    return [
        job_table(),
        panel(
            a_bargauge(),
            "Progress of running jobs",
            "Progress the cloud reports for each running job (Tencent CI does, MetaStudio not).",
            "percentunit",
            [
                target(
                    per_job(f"{sel('cloudjob_job_progress_ratio')} and on ({JOB}) ({RUNNING})"),
                    "{{account}} {{job_id}}",
                    instant=True,
                )
            ],
            size=(12, 8),
        )
        .min(0)
        .max(1),
        panel(
            a_timeseries(),
            "Time since last poll",
            "How old each job's values are: the exporter polls in the background, so a rising "
            "line means stale series.",
            "s",
            [
                target(
                    per_job(f"time() - {sel('cloudjob_job_last_poll_timestamp_seconds')}"),
                    "{{account}} {{job_id}}",
                )
            ],
            size=(12, 8),
            steps=((None, "green"), (STALE_SECONDS, "red")),
        ),
    ]


def per_queue(metric: str) -> str:
    """One series per selected queue: sharded replicas exporting the same queue collapse."""
    return f"max by ({QUEUE}) ({sel(metric)})"


def queue_jobs(phase: str) -> str:
    """The selected jobs in `phase` per queue, 0 for a watched queue that holds none."""
    jobs = sel("cloudjob:queue_unfinished_jobs:count", JOB_TYPE, phase_is(phase))
    return f"sum by ({QUEUE}) ({jobs}) or 0 * {per_queue('cloudjob_queue_paused')}"


def named(per_queue_expr: str) -> str:
    """Legends and rows name the queue, as the alert does."""
    return with_queue_name(per_queue_expr, sel("cloudjob_queue_info"))


QUEUE_LEGEND = "{{account}} {{queue_id}} {{name}}"


def queue_table() -> table.Panel:
    return (
        panel(
            table.Panel(),
            "Queues",
            "One row per queue: its name, state, how many jobs it runs at once (MaxConcurrent), "
            "and its pending and running jobs of the selected types.",
            "none",
            [
                column(sel("cloudjob_queue_info"), "name", key=QUEUE),
                column(sel("cloudjob_queue_paused"), key=QUEUE),
                column(sel("cloudjob_queue_max_concurrent"), key=QUEUE),
                column(queue_jobs("pending"), key=QUEUE),
                column(queue_jobs("running"), key=QUEUE),
            ],
            size=(24, 8),
        )
        .transformations(
            merged(
                ("Value #A",),
                {
                    "account": "Account",
                    "provider": "Provider",
                    "queue_id": "Queue",
                    "name": "Name",
                    "Value #B": "State",
                    "Value #C": "Max concurrent",
                    "Value #D": "Pending jobs",
                    "Value #E": "Running jobs",
                },
            )
        )
        .override_by_name("State", colored_cells(QUEUE_STATE))
        .sort_by([common.TableSortByFieldState().display_name("Pending jobs").desc(True)])
    )


def queues() -> list[Builder[model.Panel]]:
    return [
        panel(
            statetimeline.Panel(),
            "Queue state",
            "Whether each queue the exporter watches is active or paused. A paused queue schedules "
            "none of its waiting jobs (running ones finish); CloudJobQueuePaused fires while it "
            "holds some.",
            "none",
            [target(named(per_queue("cloudjob_queue_paused")), QUEUE_LEGEND)],
            size=(12, 8),
        ).mappings([mapping(QUEUE_STATE)]),
        panel(
            a_timeseries(),
            "Waiting jobs per queue",
            "Pending jobs of the selected types per queue: a line that climbs while its queue is "
            "paused is work piling up.",
            "short",
            [target(named(queue_jobs("pending")), QUEUE_LEGEND)],
            size=(12, 8),
        ).decimals(0),
        queue_table(),
    ]


def failures() -> list[Builder[model.Panel]]:
    return [
        panel(
            a_timeseries(),
            "Failures by provider and code",
            "Jobs entering the failed phase in the past hour, by failure code: which errors recur.",
            "short",
            [
                target(
                    f"sum by (provider, code) ({sel('cloudjob:failures:rate1h', JOB_TYPE)})",
                    "{{provider}} {{code}}",
                )
            ],
            size=(12, 8),
            steps=RED_FROM_ONE,
        ),
        panel(
            a_bargauge(),
            "Failures per job",
            "How often the exporter saw each job enter the failed phase; above 1 means it failed "
            "again after a retry.",
            "short",
            [
                target(
                    f"topk(20, {per_job(sel('cloudjob_job_failures_total') + ' > 0')})",
                    "{{account}} {{job_id}}",
                    instant=True,
                )
            ],
            steps=RED_FROM_ONE,
            size=(12, 8),
        ),
    ]


def assessments() -> list[Builder[model.Panel]]:
    status = per_job(sel("cloudjob_job_assessment_status"))
    out_of_range = per_job(sel("cloudjob_job_assessment_status") + " != 0")
    return [
        panel(
            table.Panel(),
            "Assessment results",
            "Each assessed metric of the selected jobs against the range the cloud expects, with "
            "its verdict.",
            "none",
            [
                column(per_job(sel(f"cloudjob_job_assessment_{name}")), "metric")
                for name in ("actual", "expected_min", "expected_max", "status")
            ],
            size=(16, 10),
        )
        .transformations(
            merged(
                (),
                {
                    "account": "Account",
                    "provider": "Provider",
                    "job_id": "Job",
                    "metric": "Metric",
                    "Value #A": "Actual",
                    "Value #B": "Expected min",
                    "Value #C": "Expected max",
                    "Value #D": "Status",
                },
            )
        )
        .override_by_name("Status", colored_cells(ASSESSMENT_STATUS)),
        job_count(
            "Out-of-range assessments",
            "Assessed metrics the cloud rates outside their expected range (fires "
            "CloudJobAssessmentOutOfRange).",
            out_of_range,
            size=(8, 10),
            steps=((None, "green"), (1, "orange")),
        ),
        panel(
            statetimeline.Panel(),
            "Assessment verdicts over time",
            "The cloud's verdict per job and metric (below, in or above range) as results arrive.",
            "none",
            [target(status, "{{job_id}} {{metric}}")],
            size=(24, 8),
        ).mappings([mapping(ASSESSMENT_STATUS)]),
    ]


def latency() -> list[Builder[model.Panel]]:
    quantiles = [
        target(
            sel(f"cloudjob:completed_job_duration_seconds:p{q}", PROVIDER, JOB_TYPE, scoped=False),
            f"p{q} {{{{provider}}}} {{{{job_type}}}}",
        )
        for q in ("50", "90", "99")
    ]
    return [
        panel(
            a_timeseries(),
            "Completed job duration",
            "Creation-to-finish time of jobs completed in the past hour, p50/p90/p99 per provider "
            "and job type (a latency SLO view; the rule has no account label).",
            "s",
            quantiles,
            size=(16, 8),
        ),
        panel(
            a_bargauge(),
            "Completed jobs",
            "Jobs the exporter saw finish in the dashboard's time range, by outcome.",
            "short",
            [
                target(
                    "sum by (provider, job_type, phase) (increase("
                    f"{sel('cloudjob_completed_job_duration_seconds_count', JOB_TYPE)}"
                    "[$__range]))",
                    "{{provider}} {{job_type}} {{phase}}",
                    instant=True,
                )
            ],
            size=(8, 8),
        ).decimals(0),
    ]


def exporter_health() -> list[Builder[model.Panel]]:
    request_quantiles = [
        target(
            f"histogram_quantile({q}, sum by (account, le) "
            f"(rate({sel('cloudjob_api_request_duration_seconds_bucket')}[$__rate_interval])))",
            f"{name} {{{{account}}}}",
        )
        for q, name in (("0.5", "p50"), ("0.99", "p99"))
    ]
    poll_errors = "sum(increase({}[$__range])) or vector(0)"
    return [
        panel(
            a_timeseries(),
            "Cloud API requests by status",
            "Requests to the clouds, retries included, by HTTP status or transport error.",
            "reqps",
            [
                target(
                    f"sum by (account, status) ({sel('cloudjob:api_requests:rate5m')})",
                    "{{status}} {{account}}",
                )
            ],
            size=(8, 8),
        ).override_by_regexp("^[^2].*", [fixed_color("red")]),
        panel(
            a_timeseries(),
            "Cloud API latency",
            "Median and p99 latency of cloud API requests, failed ones included.",
            "s",
            request_quantiles,
            size=(8, 8),
        ),
        panel(
            a_stat(),
            "Poll success",
            "Share of jobs whose last poll succeeded; below 100 % some series show old values.",
            "percentunit",
            [target(sel("cloudjob:poll_success:ratio"), "{{account}}", instant=True)],
            size=(8, 8),
            steps=((None, "red"), (0.9, "orange"), (1, "green")),
        ),
        panel(
            a_timeseries(),
            "Parse errors by field",
            "Response fields the exporter could not parse: a cloud API changed its format.",
            "cps",
            [
                target(
                    "sum by (provider, field) (rate("
                    f"{sel('cloudjob_parse_errors_total', PROVIDER, scoped=False)}"
                    "[$__rate_interval]))",
                    "{{provider}} {{field}}",
                )
            ],
            size=(8, 8),
        ),
        panel(
            a_timeseries(),
            "Poll errors by reason",
            "Polls that failed after retries, by reason (auth, throttled, upstream, network...).",
            "cps",
            [
                target(
                    "sum by (account, reason) "
                    f"(rate({sel('cloudjob_poll_errors_total')}[$__rate_interval]))",
                    "{{account}} {{reason}}",
                )
            ],
            size=(8, 8),
        ),
        panel(
            a_stat(),
            "Throttled and rejected polls",
            "Polls lost to cloud throttling or rejected credentials in the time range.",
            "short",
            [
                target(
                    poll_errors.format(sel("cloudjob_poll_errors_total", f'reason="{reason}"')),
                    legend,
                    instant=True,
                )
                for reason, legend in (("throttled", "throttled"), ("auth", "auth rejected"))
            ],
            size=(8, 8),
            steps=RED_FROM_ONE,
        ).decimals(0),
        panel(
            a_stat(),
            "Job discovery",
            "Whether each account's last discovery run listed every page; if not, new jobs go "
            "unnoticed.",
            "none",
            [target(sel("cloudjob_discovery_last_success"), "{{account}}", instant=True)],
            size=(8, 6),
            steps=((None, "red"), (1, "green")),
        ).mappings([mapping({"1": ("OK", "green"), "0": ("failing", "red")})]),
        panel(
            a_stat(),
            "Queue reads",
            "Whether each account's last queue read worked; if not, the Queues row shows the "
            "queues as last read.",
            "none",
            [target(sel("cloudjob_queue_last_success"), "{{account}}", instant=True)],
            size=(8, 6),
            steps=((None, "red"), (1, "green")),
        ).mappings([mapping({"1": ("OK", "green"), "0": ("failing", "red")})]),
        panel(
            a_stat(),
            "Last discovery run",
            "When each account's job discovery last ran: a stalled poller shows an old time.",
            "dateTimeFromNow",
            [
                target(
                    f"1000 * {sel('cloudjob_discovery_last_run_timestamp_seconds')}",
                    "{{account}}",
                    instant=True,
                )
            ],
            size=(8, 6),
            steps=((None, "blue"),),
        ),
        panel(
            a_stat(),
            "Stalest job",
            "Longest time since a job was polled, per account; above the staleness limit the "
            "poller is stalled or rate-limited.",
            "s",
            [
                target(
                    "max by (account) "
                    f"(time() - {sel('cloudjob_job_last_poll_timestamp_seconds')})",
                    "{{account}}",
                    instant=True,
                )
            ],
            size=(8, 6),
            steps=((None, "green"), (STALE_SECONDS, "red")),
        ),
    ]


def per_account(expr: str, how: str = "max") -> str:
    """Sharded replicas report per-account series each: `how` folds them into one per account."""
    return f"{how} by (account) ({expr})"


def polling_budget() -> list[Builder[model.Panel]]:
    budget = sel("cloudjob_api_budget_rps")
    utilization = sel("cloudjob_api_budget_utilization_ratio")
    delay_quantiles = [
        target(
            detection_delay_quantile(q, "$__rate_interval", "account", sel(DETECTION_DELAY_BUCKET)),
            f"p{q * 100:g} {{{{account}}}}",
        )
        for q in (0.5, DETECTION_QUANTILE, 0.99)
    ]
    return [
        panel(
            a_timeseries(),
            "API budget vs spent",
            "Requests/s each account may spend on its cloud API (api_budget_rps, dashed) and what "
            "it spent over the last minute, replicas added up. Spending at the budget means the "
            "poll plan is full and intervals are being stretched.",
            "reqps",
            [
                target(per_account(budget, "sum"), "budget {{account}}"),
                # Both series come from one replica's scrape, so they match on all labels.
                target(per_account(f"{utilization} * {budget}", "sum"), "spent {{account}}"),
            ],
            size=(12, 8),
        ).override_by_regexp("^budget ", [dashed_line()]),
        panel(
            a_timeseries(),
            "API budget utilization",
            "Requests/s spent over the last minute as a share of the budget, for the busiest "
            "replica of each account. Accounts without a budget have no line.",
            "percentunit",
            [target(per_account(utilization), "{{account}}")],
            size=(12, 8),
            steps=((None, "green"), (1, "orange")),
        ).min(0),
        panel(
            a_timeseries(),
            "Poll lag vs interval",
            "How far the most overdue unfinished job of each account is behind the poll_interval "
            f"it asked for, and {OVERDUE_INTERVALS} times that interval (dashed): "
            "CloudJobExporterBudgetExhausted fires when the lag stays above it for 15 minutes.",
            "s",
            [
                target(per_account(sel("cloudjob_poll_overdue_seconds")), "lag {{account}}"),
                target(
                    f"{OVERDUE_INTERVALS} * " + per_account(sel("cloudjob_poll_interval_seconds")),
                    "alert above {{account}}",
                ),
            ],
            size=(12, 8),
        ).override_by_regexp("^alert above ", [dashed_line()]),
        panel(
            a_timeseries(),
            "State change detection delay",
            "How long after the cloud changed a job's state the exporter saw it, p50/p90/p99 per "
            "account; no line while nothing changed. CloudJobDetectionSlow fires when p90 stays "
            f"above {DETECTION_SLOW_SECONDS // 60} minutes (dashed).",
            "s",
            delay_quantiles,
            size=(12, 8),
            steps=((None, "green"), (DETECTION_SLOW_SECONDS, "red")),
        ),
        panel(
            heatmap.Panel()
            .calculate(False)
            .rows_frame(heatmap.RowsHeatmapOptions().layout(HeatmapCellLayout.LE))
            .y_axis(heatmap.YAxisConfig().unit("s"))
            .color(
                heatmap.HeatmapColorOptions()
                .mode(HeatmapColorMode.SCHEME)
                .scheme("Oranges")
                .fill("dark-orange")
                .scale(HeatmapColorScale.EXPONENTIAL)
                .exponent(0.5)
                .steps(64)
            ),
            "Detection delay distribution",
            "State changes seen per detection-delay bucket over time, for the selected accounts: "
            "the shape behind the quantiles, such as a second hump at the poll interval.",
            "short",
            [
                target(
                    f"sum by (le) (increase({sel(DETECTION_DELAY_BUCKET)}[$__rate_interval]))",
                    "{{le}}",
                ).format(PromQueryFormat.HEATMAP)
            ],
            size=(24, 8),
        ),
    ]


def training(metric: str, *matchers: str) -> str:
    """`metric` of the selected voice training jobs (the job type variable applies too)."""
    return sel(metric, JOB_TYPE, *TRAINING, *matchers)


def waiting_on_user_table() -> table.Panel:
    waiting = per_job(sel("cloudjob_job_state", WAITING_ON_USER) + " == 1")
    updated = sel("cloudjob_job_updated_timestamp_seconds")
    return (
        panel(
            table.Panel(),
            "Jobs waiting on their owner",
            f"Jobs in {', '.join(WAITING_ON_USER_STATES)}, short and training alike: not "
            "finished, and not moving until their owner re-uploads, fixes the data or reviews "
            f"the result. Red past {WAITING_ON_USER_SECONDS // 3600} h, when "
            "CloudJobWaitingOnUser fires.",
            "none",
            [
                column(waiting, "state"),
                column(
                    f"{sel('cloudjob_job_info', JOB_TYPE)} and on ({JOB}) ({waiting})", "job_type"
                ),
                column(f"1000 * {updated} and on ({JOB}) ({waiting})"),
                column(f"time() - {updated} and on ({JOB}) ({waiting})"),
            ],
            size=(12, 8),
        )
        .transformations(
            merged(
                ("Value #A", "Value #B"),
                {
                    "account": "Account",
                    "provider": "Provider",
                    "job_id": "Job",
                    "job_type": "Type",
                    "state": "State",
                    "Value #C": "Since",
                    "Value #D": "Waiting",
                },
            )
        )
        .override_by_name("Since", unit("dateTimeFromNow"))
        .override_by_name(
            "Waiting",
            [
                *unit("s"),
                DynamicConfigValue(
                    id_val="thresholds",
                    value=thresholds(((None, "green"), (WAITING_ON_USER_SECONDS, "red"))).build(),
                ),
                DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
        .sort_by([common.TableSortByFieldState().display_name("Waiting").desc(True)])
    )


def voice_training() -> list[Builder[model.Panel]]:
    """Huawei voice training jobs: ordinary jobs whose `job_type` is a training type."""
    durations = [
        target(
            f"histogram_quantile({q}, sum by (job_type, le) (rate("
            f"{training('cloudjob_completed_job_duration_seconds_bucket', phase_is('succeeded'))}"
            "[1d])))",
            f"p{q[2:]} {{{{job_type}}}}",
        )
        for q in ("0.5", "0.9")
    ]
    return [
        panel(
            a_bargauge(),
            "Training jobs by state",
            "Tracked voice training jobs per Huawei state now: where the training pipeline holds "
            f"them ({', '.join(WAITING_ON_USER_STATES)} wait for their owner).",
            "short",
            [
                target(
                    f"sum by (state) ({sel('cloudjob_job_state')} == 1"
                    f" and on ({JOB}) {training_jobs(SCOPE, JOB_TYPE)})",
                    "{{state}}",
                    instant=True,
                )
            ],
            size=(12, 8),
        ).decimals(0),
        waiting_on_user_table(),
        panel(
            a_timeseries(),
            "Training failures by code",
            "Voice training jobs entering the failed phase in the past hour, by training type and "
            "failure code; bounces back to the owner (AUDIT_FAILED, ...) count as failures too.",
            "short",
            [
                target(
                    f"sum by (job_type, code) ({training('cloudjob:failures:rate1h')})",
                    "{{job_type}} {{code}}",
                )
            ],
            size=(12, 8),
            steps=RED_FROM_ONE,
        ),
        panel(
            a_timeseries(),
            "Training duration",
            "Creation-to-success time of voice training jobs that succeeded in the past day, "
            "p50/p90 per training type. The duration histogram's last bucket is 1 day: a quantile "
            "among longer trainings reads as 1 day.",
            "s",
            durations,
            size=(12, 8),
        ),
    ]


ROWS = {
    "Overview": overview,
    "Jobs": jobs,
    "Queues": queues,
    "Failures": failures,
    "Assessment quality": assessments,
    "Voice training": voice_training,
    "Job latency": latency,
    "Exporter health": exporter_health,
    "Polling budget": polling_budget,
}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in panels:
        yield item
        yield from _panels(item.get("panels", []))


def build_dashboard() -> dict[str, Any]:
    """The dashboard model as JSON-ready data, panel ids numbered in order."""
    builder = (
        dashboard.Dashboard("Cloud jobs")
        .uid(UID)
        .description(
            "Asynchronous cloud jobs (Huawei MetaStudio, Tencent CI) from cloudjob-exporter."
        )
        .tags(["cloudjob-exporter", "cloud jobs"])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .variables(variables())
    )
    for title, row_panels in ROWS.items():
        builder = builder.with_row(dashboard.Row(title))
        for row_panel in row_panels():
            builder = builder.with_panel(row_panel)
    result: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    for number, built in enumerate(_panels(result["panels"]), start=1):
        built["id"] = number
    return result
