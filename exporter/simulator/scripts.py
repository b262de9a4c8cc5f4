"""Job scripts for the MetaStudio simulator: which states a job walks through, and for how long.

Durations are simulated seconds and roughly realistic (a voice assessment takes minutes); the
simulator's `speed` compresses them for demos. Each script exists to exercise one thing a poller
must cope with: success, audit retries, stuck and failed jobs, out-of-range or unparseable
assessments, and a state the API document does not list.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

JOB_TYPE = "VOICE_ASSESS"

# The SDK's `JobState`, in its order, shared by short and training jobs: the 14 states of the
# ShowShortJob document and the two user-review states it omits.
DOCUMENTED_STATES = (
    "CREATING",
    "SYSTEM_AUDITING",
    "AUDITING",
    "WAITING_SPLIT",
    "SPLITTING",
    "SPLIT_FAILED",
    "ANNOTATING",
    "WAITING",
    "PROCESSING",
    "RESULT_REVIEW",
    "AUDIT_FAILED",
    "USER_RESULT_REVIEW",
    "USER_REVIEW_REJECT",
    "UPLOADING",
    "FAILED",
    "SUCCEED",
)

# A job reports `assess_result` from the first of these states on: the assessment is computed
# during PROCESSING and reviewed afterwards, so earlier states have nothing to show.
# The undocumented QUALITY_CHECKING of UNDOCUMENTED_STATE is a review too.
ASSESSED_STATES = frozenset({"RESULT_REVIEW", "USER_RESULT_REVIEW", "QUALITY_CHECKING", "SUCCEED"})


@dataclass(frozen=True, slots=True)
class Failure:
    """`job_failed_code` / `job_failed_reason`, shown only while the job is in a failed state."""

    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Step:
    """One state held for `seconds` simulated seconds (`math.inf` on a last step: stuck)."""

    state: str
    seconds: float
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class AssessProperty:
    """One `AssessProperty` of the API, strings exactly as served."""

    expected: str
    actual: str
    suggestion: str
    suggestion_en: str
    status: int


@dataclass(frozen=True, slots=True)
class AssessResult:
    """The `AssessResult` object: six properties plus an overall (Chinese) suggestion."""

    speed: AssessProperty
    sound: AssessProperty
    snr: AssessProperty
    reverb: AssessProperty
    dnsmos_ovrl: AssessProperty
    dnsmos_bak: AssessProperty
    suggestion: str

    def to_json(self) -> dict[str, object]:
        """The API's object: the fields' names and order are the document's."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Script:
    """A named sequence of steps and the assessment the job reports once it has one.

    With looping, the last step's duration is the hold before the script restarts; without,
    the job stays in its last state for good.
    """

    name: str
    steps: tuple[Step, ...]
    assessment: AssessResult | None = None

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"script {self.name!r} has no steps")
        for index, step in enumerate(self.steps):
            last = index == len(self.steps) - 1
            if not step.seconds > 0 or (math.isinf(step.seconds) and not last):
                raise ValueError(
                    f"script {self.name!r}: step {index} ({step.state}) needs a positive "
                    "duration (infinite only on the last step)"
                )

    def failure_in(self, state: str, defaults: Mapping[str, Failure]) -> Failure | None:
        """What a job forced into `state` reports as its failure: its own step's in that
        state, else the cloud's default for it."""
        for step in self.steps:
            if step.state == state and step.failure is not None:
                return step.failure
        return defaults.get(state)

    @property
    def seconds(self) -> float:
        """Length of one pass in simulated seconds, including the final hold."""
        return math.fsum(step.seconds for step in self.steps)

    @property
    def first_assessed(self) -> int | None:
        """Index of the first step that reports `assess_result`, None if none does."""
        if self.assessment is None:
            return None
        for index, step in enumerate(self.steps):
            if step.state in ASSESSED_STATES:
                return index
        return None


# What a simulator's `add_job` takes: a ready Script, or (state, seconds) pairs for tests.
ScriptLike = Script | Sequence[Step | tuple[str, float]]


def script_of(steps: ScriptLike, name: str = "custom") -> Script:
    """Accept a ready Script or, for tests, bare (state, seconds) pairs with in-range results."""
    if isinstance(steps, Script):
        return steps
    return Script(
        name=name,
        steps=tuple(step if isinstance(step, Step) else Step(*step) for step in steps),
        assessment=IN_RANGE,
    )


@dataclass(frozen=True, slots=True)
class Lognormal:
    """Durations whose logarithm is normal: `median` simulated seconds (e^mu) and spread
    `sigma`. Job run times are skewed this way: most near the median, a long tail of slow ones."""

    median: float
    sigma: float

    def __post_init__(self) -> None:
        if not (self.median > 0 and math.isfinite(self.median)):
            raise ValueError(f"median must be a positive number of seconds, got {self.median!r}")
        if not (self.sigma >= 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be a number >= 0, got {self.sigma!r}")

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma**2 / 2)

    def draw(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)

    def length_biased(self) -> Lognormal:
        """The durations of the jobs alive at a random moment: a long job is alive for longer,
        so it is met more often (density proportional to d * f(d)). For a lognormal that is
        the lognormal with mu + sigma^2; a job's age then is uniform over its duration."""
        return Lognormal(self.median * math.exp(self.sigma**2), self.sigma)


class LognormalScripts:
    """Scripts of one job type whose steps last lognormally distributed times.

    The generator is seeded with the seed and the job type, so each type draws the same
    durations for the same seed, whatever other types draw in between.
    """

    def __init__(self, job_type: str, steps: Sequence[tuple[str, Lognormal]], *, seed: int) -> None:
        if not steps:
            raise ValueError(f"job type {job_type!r}: no steps to draw durations for")
        self.job_type = job_type
        self._steps = tuple(steps)
        self._rng = random.Random(f"{seed}/{job_type}")  # noqa: S311 - simulated durations

    def script(self, last: Step, assessment: AssessResult | None = None) -> Script:
        """The next script: each step for a drawn time, then `last` (its own duration: the
        final hold, or `math.inf` to stay there)."""
        drawn = tuple(Step(state, durations.draw(self._rng)) for state, durations in self._steps)
        return Script(self.job_type, (*drawn, last), assessment)


# Assessments. Expected ranges use every notation seen in answers ("[a, b]", "a~b", ">=a",
# "<=b") and actual values come bare or with a unit, so parsers are exercised on each.
IN_RANGE = AssessResult(
    speed=AssessProperty("[3.5, 5.5]", "4.2", "语速适中", "Speaking rate is within range.", 0),
    sound=AssessProperty("45~75", "62.5dB", "音量适中", "Volume is within range.", 0),
    snr=AssessProperty(">=25", "32.5dB", "信噪比良好", "Signal-to-noise ratio is good.", 0),
    reverb=AssessProperty("<=0.6", "0.31", "混响较小", "Reverberation is low.", 0),
    dnsmos_ovrl=AssessProperty("3.0~5.0", "3.42", "整体音质良好", "Overall quality is good.", 0),
    dnsmos_bak=AssessProperty("[3.5, 5.0]", "4.05", "背景噪声较小", "Background noise is low.", 0),
    suggestion="音频质量良好,可用于声音训练。",
)

OUT_OF_RANGE = AssessResult(
    speed=AssessProperty(
        "[3.5, 5.5]", "6.3", "语速过快,请放慢语速", "Speaking too fast; slow down.", 1
    ),
    sound=AssessProperty(
        "45~75", "38.0dB", "音量过低,请靠近麦克风", "Volume too low; move closer to the mic.", -1
    ),
    snr=AssessProperty(
        ">=25",
        "18.2dB",
        "信噪比过低,请在安静环境中录制",
        "SNR too low; record in a quiet room.",
        -1,
    ),
    reverb=AssessProperty(
        "<=0.6", "0.85", "混响过大,请在吸音环境中录制", "Too much reverb; use a treated room.", 1
    ),
    dnsmos_ovrl=AssessProperty("3.0~5.0", "2.61", "整体音质较差", "Overall quality is poor.", -1),
    dnsmos_bak=AssessProperty("[3.5, 5.0]", "3.71", "背景噪声较小", "Background noise is low.", 0),
    suggestion="音频质量不达标,建议在安静环境中重新录制。",
)

UNPARSEABLE = AssessResult(
    speed=IN_RANGE.speed,
    sound=IN_RANGE.sound,
    snr=AssessProperty(">=25", "N/A", "信噪比无法评估", "SNR could not be assessed.", 0),
    reverb=IN_RANGE.reverb,
    dnsmos_ovrl=IN_RANGE.dnsmos_ovrl,
    dnsmos_bak=AssessProperty(
        "[3.5, 5.0]", "", "背景噪声无法评估", "Background noise could not be assessed.", 0
    ),
    suggestion="部分指标无法评估。",
)

# Failure codes in the MSS.xxxxxxxx shape the service uses, with English reasons.
AUDIT_REJECTED_NOISE = Failure(
    "MSS.10010001", "Audio contains background music or noise; upload clean recordings."
)
AUDIT_REJECTED_SHORT = Failure(
    "MSS.10010002", "Audio is shorter than the required 10 seconds; upload a longer recording."
)
SPLIT_NO_SPEECH = Failure("MSS.10020003", "Audio splitting failed: no speech segments detected.")
ENGINE_ERROR = Failure("MSS.10030004", "Voice assessment failed: audio could not be decoded.")

_HOLD = 1800.0  # how long a finished job is shown before a looping job restarts

HAPPY_PATH = Script(
    "happy_path",
    (
        Step("CREATING", 30),
        Step("SYSTEM_AUDITING", 60),
        Step("WAITING_SPLIT", 45),
        Step("SPLITTING", 120),
        Step("ANNOTATING", 180),
        Step("WAITING", 90),
        Step("PROCESSING", 600),
        Step("RESULT_REVIEW", 120),
        Step("SUCCEED", _HOLD),
    ),
    IN_RANGE,
)

AUDIT_LOOP = Script(
    "audit_loop",
    (
        Step("CREATING", 30),
        Step("SYSTEM_AUDITING", 60),
        Step("AUDITING", 240),
        Step("AUDIT_FAILED", 600, AUDIT_REJECTED_NOISE),
        Step("UPLOADING", 90),
        Step("AUDITING", 240),
        Step("AUDIT_FAILED", 600, AUDIT_REJECTED_SHORT),
        Step("UPLOADING", 90),
        Step("AUDITING", 240),
        Step("WAITING", 90),
        Step("PROCESSING", 600),
        Step("RESULT_REVIEW", 120),
        Step("SUCCEED", _HOLD),
    ),
    IN_RANGE,
)

SPLIT_FAILED = Script(
    "split_failed",
    (
        Step("CREATING", 30),
        Step("SYSTEM_AUDITING", 60),
        Step("WAITING_SPLIT", 45),
        Step("SPLITTING", 300),
        Step("SPLIT_FAILED", 2 * _HOLD, SPLIT_NO_SPEECH),
    ),
)

FAILED = Script(
    "failed",
    (
        Step("CREATING", 30),
        Step("SYSTEM_AUDITING", 60),
        Step("WAITING", 90),
        Step("PROCESSING", 450),
        Step("FAILED", _HOLD, ENGINE_ERROR),
    ),
)

OUT_OF_RANGE_SUCCEED = Script(
    "out_of_range",
    (
        Step("CREATING", 30),
        Step("SYSTEM_AUDITING", 60),
        Step("WAITING", 90),
        Step("PROCESSING", 600),
        Step("RESULT_REVIEW", 120),
        Step("SUCCEED", _HOLD),
    ),
    OUT_OF_RANGE,
)

# A state in neither the API document nor the SDK's JobState: a cloud may add one any day.
UNDOCUMENTED_STATE = Script(
    "undocumented_state",
    (
        Step("CREATING", 30),
        Step("SYSTEM_AUDITING", 60),
        Step("PROCESSING", 600),
        Step("QUALITY_CHECKING", 900),
        Step("SUCCEED", _HOLD),
    ),
    IN_RANGE,
)

UNPARSEABLE_ASSESSMENT = Script(
    "unparseable_assessment",
    (
        Step("CREATING", 30),
        Step("SYSTEM_AUDITING", 60),
        Step("PROCESSING", 600),
        Step("RESULT_REVIEW", 120),
        Step("SUCCEED", _HOLD),
    ),
    UNPARSEABLE,
)

ALL_SCRIPTS = (
    HAPPY_PATH,
    AUDIT_LOOP,
    SPLIT_FAILED,
    FAILED,
    OUT_OF_RANGE_SUCCEED,
    UNDOCUMENTED_STATE,
    UNPARSEABLE_ASSESSMENT,
)
