"""Every threshold and duration of the bundled alerts, in one place (kubernetes-mixin style).

Change a value here, run `make dashboards`, and the rules file, its documentation in RUNBOOK.md
and the dashboard's thresholds follow.
"""

from __future__ import annotations

# Where runbooks live; each alert links to its anchor.
RUNBOOK_URL = (
    "https://github.com/cloudjob-exporter/cloudjob-exporter/blob/main/dashboards/RUNBOOK.md"
)

# How long a condition must hold before an alert fires.
FOR = {
    "CloudJobFailed": "1m",
    "CloudJobStuckPending": "5m",
    "CloudJobStuckRunning": "5m",
    "CloudJobWaitingOnUser": "5m",
    "CloudJobAssessmentOutOfRange": "1m",
    "CloudJobPollingFailing": "10m",
    "CloudJobPollsStale": "5m",
    "CloudJobAPIAuthFailing": "5m",
    "CloudJobAPIThrottled": "10m",
    "CloudJobDiscoveryFailing": "15m",
    "CloudJobQueuePaused": "10m",
    "CloudJobExporterBudgetExhausted": "15m",
    # Longer than DETECTION_WINDOW: one burst of late changes (the catch-up after a restart or
    # an outage, which CloudJobExporterAbsent already reports) leaves the window before this
    # runs out, so only slowness that lasts fires.
    "CloudJobDetectionSlow": "20m",
    "CloudJobExporterAbsent": "5m",
}

# A job in one phase for longer than this (seconds since its last state change) is stuck.
STUCK_SECONDS = {"pending": 3600, "running": 6 * 3600}

# Huawei voice training jobs: `job_type` on cloudjob_job_info is one of these training types.
TRAINING_JOB_TYPES = ("BASIC", "MIDDLE", "ADVANCE", "THIRD_PARTY", "THIRD_PARTY_LJZN", "FLEXUS")
# A training job turns recordings into a voice model over hours to days, so the short-job limits
# above would page for every normal one. Pending: WAITING queues the job for training capacity,
# which a busy region may not free within the working day, so a full day. Running: one state
# (PROCESSING alone can take a day, RESULT_REVIEW is a manual review) for three days, so a
# one-day PROCESSING with room to spare, or a review begun on a Friday evening, stays quiet.
TRAINING_STUCK_SECONDS = {"pending": 24 * 3600, "running": 72 * 3600}

# Huawei states in the failed phase that are not terminal: the job waits for its owner, and
# what the owner must do.
WAITING_ON_USER_STATES = {
    "AUDIT_FAILED": "re-upload the recordings",
    "SPLIT_FAILED": "fix the data and submit it again",
    "USER_REVIEW_REJECT": "review the rejected result",
}
# Failed states that are final: the job failed for good (Huawei, Tencent).
TERMINAL_FAILED_STATES = ("FAILED", "Failed")
# A job waiting on its owner this long (seconds since its last state change) is followed up:
# a working day's grace to notice the bounce and act.
WAITING_ON_USER_SECONDS = 24 * 3600
# A job not polled for this long has stale series (terminal jobs are polled every 10 min).
STALE_SECONDS = 1800
# Window for counting auth and throttling failures.
ERROR_WINDOW = "15m"

# An account whose most overdue job is behind its poll_interval by more than this many intervals
# has outgrown its API budget.
OVERDUE_INTERVALS = 2
# Detection delay (seen time minus the cloud's change time): the quantile, its limit in seconds
# and the window it is computed over.
DETECTION_QUANTILE = 0.9
DETECTION_SLOW_SECONDS = 300
DETECTION_WINDOW = "15m"
