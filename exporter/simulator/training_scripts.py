"""Scripts for the MetaStudio simulator's voice training jobs: which states a job walks through,
and for how long.

They reuse the short jobs' `Script`/`Step`/`Failure`. Durations are simulated seconds and roughly
realistic: training takes hours, and an audit that bounces waits for the user for hours more.
Each script exercises one thing a poller must cope with: success, an audit that bounces back to
the user once, a final failure, and a tour through every state the API can report.
"""

from __future__ import annotations

from exporter.simulator.scripts import IN_RANGE, OUT_OF_RANGE, Failure, Script, Step

# The SDK's `JobType` (the training edition) and `JobTag` (what the voice is for).
TRAINING_JOB_TYPES = ("BASIC", "MIDDLE", "ADVANCE", "THIRD_PARTY", "THIRD_PARTY_LJZN", "FLEXUS")
JOB_TAGS = ("ECOMMERCE", "NEWS", "MARKETING", "LIVE", "EDUCATION", "CUSTOMER", "STORYTELLING")

# Until the system audit has passed, the recordings have not been assessed.
UNASSESSED_STATES = frozenset({"CREATING", "SYSTEM_AUDITING"})

# Failure codes in the MSS.xxxxxxxx shape the service uses, with English reasons.
TRAINING_AUDIT_REJECTED = Failure(
    "MSS.10040001",
    "Training data failed the audit: recordings contain background noise; "
    "re-upload clean recordings.",
)
TRAINING_TEXT_MISMATCH = Failure(
    "MSS.10040002",
    "Training data failed the audit: recordings do not match the script text; re-upload them.",
)
TRAINING_SPLIT_FAILED = Failure(
    "MSS.10040003", "Audio splitting failed: sentence boundaries could not be detected."
)
TRAINING_USER_REJECTED = Failure(
    "MSS.10040004", "The trained voice was rejected in the user's review; it will be retrained."
)
TRAINING_ENGINE_ERROR = Failure(
    "MSS.10040005", "Voice model training failed: the training engine exited with an error."
)
TRAINING_UPLOAD_ERROR = Failure(
    "MSS.10040006", "Uploading the voice model to the asset library failed."
)

_HOLD = 7200.0  # how long a finished job is shown before a looping job restarts
_HOUR = 3600.0

# The common path after the audits: split, annotate, wait for and run training.
_SPLIT_TO_TRAINING = (
    Step("WAITING_SPLIT", 900),
    Step("SPLITTING", 1800),
    Step("ANNOTATING", 1.5 * _HOUR),
    Step("WAITING", 1800),
    Step("PROCESSING", 4 * _HOUR),
)
_REVIEW_AND_UPLOAD = (Step("RESULT_REVIEW", _HOUR), Step("UPLOADING", 900))

TRAINING_HAPPY = Script(
    "training_happy",
    (
        Step("CREATING", 120),
        Step("SYSTEM_AUDITING", 600),
        Step("AUDITING", _HOUR),
        *_SPLIT_TO_TRAINING,
        *_REVIEW_AND_UPLOAD,
        Step("SUCCEED", _HOLD),
    ),
    IN_RANGE,
)

TRAINING_AUDIT_BOUNCE = Script(
    "training_audit_bounce",
    (
        Step("CREATING", 120),
        Step("SYSTEM_AUDITING", 600),
        Step("AUDITING", _HOUR),
        # The user takes a working day to record again and re-upload.
        Step("AUDIT_FAILED", 8 * _HOUR, TRAINING_AUDIT_REJECTED),
        Step("AUDITING", _HOUR),
        *_SPLIT_TO_TRAINING,
        *_REVIEW_AND_UPLOAD,
        Step("SUCCEED", _HOLD),
    ),
    IN_RANGE,
)

TRAINING_FAILED = Script(
    "training_failed",
    (
        Step("CREATING", 120),
        Step("SYSTEM_AUDITING", 600),
        Step("AUDITING", _HOUR),
        *_SPLIT_TO_TRAINING[:-1],
        Step("PROCESSING", 2 * _HOUR),
        Step("FAILED", _HOLD, TRAINING_ENGINE_ERROR),
    ),
    OUT_OF_RANGE,
)

# One job through all fifteen states short of SUCCEED, each failed-but-recoverable one followed
# by the state the job goes back to, ending in FAILED.
TRAINING_TOUR = Script(
    "training_tour",
    (
        Step("CREATING", 120),
        Step("SYSTEM_AUDITING", 600),
        Step("AUDITING", 1800),
        Step("AUDIT_FAILED", 2 * _HOUR, TRAINING_TEXT_MISMATCH),
        Step("AUDITING", 1800),
        Step("WAITING_SPLIT", 900),
        Step("SPLITTING", 1800),
        Step("SPLIT_FAILED", _HOUR, TRAINING_SPLIT_FAILED),
        Step("WAITING_SPLIT", 900),
        Step("SPLITTING", 1800),
        Step("ANNOTATING", 1.5 * _HOUR),
        Step("WAITING", 1800),
        Step("PROCESSING", 2 * _HOUR),
        Step("RESULT_REVIEW", _HOUR),
        Step("USER_RESULT_REVIEW", 2 * _HOUR),
        Step("USER_REVIEW_REJECT", _HOUR, TRAINING_USER_REJECTED),
        Step("PROCESSING", 2 * _HOUR),
        Step("RESULT_REVIEW", 1800),
        Step("USER_RESULT_REVIEW", _HOUR),
        Step("UPLOADING", 900),
        Step("FAILED", _HOLD, TRAINING_UPLOAD_ERROR),
    ),
    IN_RANGE,
)

ALL_TRAINING_SCRIPTS = (TRAINING_HAPPY, TRAINING_AUDIT_BOUNCE, TRAINING_FAILED, TRAINING_TOUR)

# What a forced failed state reports when its script has no step in that state.
DEFAULT_TRAINING_FAILURES = {
    "AUDIT_FAILED": TRAINING_AUDIT_REJECTED,
    "SPLIT_FAILED": TRAINING_SPLIT_FAILED,
    "USER_REVIEW_REJECT": TRAINING_USER_REJECTED,
    "FAILED": TRAINING_ENGINE_ERROR,
}
