"""Job scripts for the Tencent CI simulator: which states an AI job walks through, and for how long.

They reuse the MetaStudio simulator's `Script`/`Step`/`Failure` (a failure's `reason` is served
as CI's `Message`). Durations are simulated seconds, roughly realistic for CI's AI jobs (seconds
to minutes); each script exercises one thing a poller must cope with: success, failure with a
code, a pause and resume, cancellation, and a job that runs for hours or never finishes.
"""

from __future__ import annotations

import math

from exporter.simulator.scripts import Failure, Script, Step

# The six states of DescribeMediaJobs' `states` parameter, in lifecycle order.
STATES = ("Submitted", "Running", "Success", "Failed", "Pause", "Cancel")
TERMINAL_STATES = frozenset({"Success", "Failed", "Cancel"})
# The `Code` of a job that has not failed.
SUCCESS_CODE = "Success"

TAGS = ("Translation", "SpeechRecognition", "WordsGeneralize", "SegmentVideoBody")
# Tags whose jobs report `Progress` (0-100) while they run; the others never send the node.
PROGRESS_TAGS = frozenset({"SpeechRecognition", "SegmentVideoBody"})

AUDIO_RECOGNITION_FAILED = Failure(
    "AudioRecognitionFailed", "speech recognition failed: no valid speech in the input audio"
)
# What a job forced into `Failed` reports when its script has no failed step of its own.
JOB_FAILED = Failure("InternalError", "the job failed because of an internal error")

_HOLD = 300.0  # how long a finished job is shown before a looping job restarts

HAPPY = Script(
    "happy",
    (Step("Submitted", 20), Step("Running", 120), Step("Success", _HOLD)),
)

FAILED = Script(
    "failed",
    (
        Step("Submitted", 20),
        Step("Running", 90),
        Step("Failed", _HOLD, AUDIO_RECOGNITION_FAILED),
    ),
)

PAUSED_RESUMED = Script(
    "paused_resumed",
    (
        Step("Submitted", 15),
        Step("Running", 60),
        Step("Pause", 120),
        Step("Running", 60),
        Step("Success", _HOLD),
    ),
)

CANCELLED = Script(
    "cancelled",
    (Step("Submitted", 30), Step("Running", 45), Step("Cancel", _HOLD)),
)

# Two simulated hours of Running: a minute of demo time per percent or so at speed 30.
SLOW = Script(
    "slow",
    (Step("Submitted", 10), Step("Running", 7200), Step("Success", _HOLD)),
)

# Never finishes; its progress stalls (see `STUCK_PROGRESS`), as a hung job's does.
STUCK = Script("stuck", (Step("Submitted", 10), Step("Running", math.inf)))
STUCK_PROGRESS = 37

ALL_SCRIPTS = (HAPPY, FAILED, PAUSED_RESUMED, CANCELLED, SLOW, STUCK)
