"""The MetaStudio simulator's voice training jobs: their answers (`TrainingJobInfo`) and the
list API's query, filters, order and pages.

`MetaStudioSimulator` serves them next to its short jobs, behind the same gateway checks; this
module only knows what a training job reports and which of them a list request selects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from exporter.simulator.scripted import Override, Position
from exporter.simulator.scripts import DOCUMENTED_STATES, Failure, Script
from exporter.simulator.training_scripts import (
    DEFAULT_TRAINING_FAILURES,
    JOB_TAGS,
    TRAINING_AUDIT_BOUNCE,
    TRAINING_FAILED,
    TRAINING_HAPPY,
    TRAINING_JOB_TYPES,
    TRAINING_TOUR,
    UNASSESSED_STATES,
)

TRAINING_JOB_PATH = "/v1/{project_id}/voice-training-manage/user/jobs/{job_id}"
TRAINING_LIST_PATH = "/v1/{project_id}/voice-training-manage/user/jobs"

# The list API's `limit`: at most 100 jobs a page, 10 unless asked.
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 10
_MAX_OFFSET = 2147483647
_SORT_KEYS = ("create_time", "update_time")
_SORT_DIRS = ("asc", "desc")
_BOOLEANS = {"true": True, "false": False}

_NAMESPACE = uuid.UUID("3b8e4f27-90c1-4d6a-b5e2-7a0f6c1d9e84")

BodyOverride = Override[Mapping[str, object] | bytes]


@dataclass(slots=True)
class TrainingJob:
    """A voice training job on its script, with the fields it was created with."""

    job_id: str
    script: Script
    started: float
    millis: bool
    loop: bool
    job_type: str
    tag: str | None
    batch_name: str | None
    voice_name: str
    ondemand_resource: bool
    override: BodyOverride | None = None

    def __post_init__(self) -> None:
        if self.job_type not in TRAINING_JOB_TYPES:
            raise ValueError(
                f"job_type must be one of {', '.join(TRAINING_JOB_TYPES)}, got {self.job_type!r}"
            )
        if self.tag is not None and self.tag not in JOB_TAGS:
            raise ValueError(f"tag must be one of {', '.join(JOB_TAGS)}, got {self.tag!r}")


@dataclass(frozen=True, slots=True)
class TrainingView:
    """A training job at one moment: what the list API filters and sorts on, and its answer."""

    job: TrainingJob
    state: str
    created: float  # epoch seconds
    updated: float
    answer: dict[str, object]


def training_view(
    job: TrainingJob, position: Position, speed: float, pinned: Position | None = None
) -> TrainingView:
    """The job where `position` puts it; `pinned` is its position when a forced state was set.

    `reject_times` counts the AUDIT_FAILED states entered in the current pass, the forced one
    included.
    """
    script = job.script
    step = script.steps[position.step]
    state, failure = step.state, step.failure
    updated = position.created + position.offsets[-1] / speed
    rejections = _rejections(script, position.step)
    override = job.override
    if override is not None and override.state is not None:
        at_pin = position if pinned is None else pinned
        scripted_state = script.steps[at_pin.step].state
        state, updated = override.state, override.since
        failure = script.failure_in(state, DEFAULT_TRAINING_FAILURES)
        rejections = _rejections(script, at_pin.step)
        if state == "AUDIT_FAILED" and scripted_state != "AUDIT_FAILED":
            rejections += 1
    answer = _answer(job, state, failure, rejections, position.created, updated)
    return TrainingView(job, state, position.created, updated, answer)


def _rejections(script: Script, step: int) -> int:
    """How many times the script entered AUDIT_FAILED up to `step`."""
    steps = script.steps[: step + 1]
    return sum(
        1
        for index, current in enumerate(steps)
        if current.state == "AUDIT_FAILED"
        and (index == 0 or steps[index - 1].state != "AUDIT_FAILED")
    )


def _answer(
    job: TrainingJob,
    state: str,
    failure: Failure | None,
    rejections: int,
    created: float,
    updated: float,
) -> dict[str, object]:
    """The `TrainingJobInfo` body, keys in the SDK model's order."""

    def stamp(moment: float) -> int:
        return round(moment * 1000) if job.millis else int(moment)

    # Fixed per job (per pass for the asset), so answers repeat exactly.
    seed = uuid.uuid5(_NAMESPACE, job.job_id)
    language = "EN" if seed.int % 5 == 0 else "CN"
    answer: dict[str, object] = {
        "job_type": job.job_type,
        "job_id": job.job_id,
        "app_user_id": f"user-{seed.hex[:12]}",
        "voice_name": job.voice_name,
        "sex": "MALE" if seed.int % 2 else "FEMALE",
        "language": language,
        "state": state,
        "reject_times": rejections,
    }
    if state == "SUCCEED":
        answer["asset_id"] = uuid.uuid5(seed, f"asset/{int(created)}").hex
    if failure is not None:
        answer["job_failed_code"] = failure.code
        answer["job_failed_reason"] = failure.reason
    answer["create_time"] = stamp(created)
    answer["lastupdate_time"] = stamp(updated)
    if job.tag is not None:
        answer["tag"] = job.tag
    if job.batch_name is not None:
        answer["batch_name"] = job.batch_name
    expires = datetime.fromtimestamp(int(created), UTC) + timedelta(days=365)
    answer["allocated_resource"] = {
        "resource_id": uuid.uuid5(seed, "resource").hex,
        "charge_mode": "ON_DEMAND" if job.ondemand_resource else "PERIODIC",
        "expire_time": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    answer["output_language"] = language
    answer["is_remake"] = False
    if job.script.assessment is not None and state not in UNASSESSED_STATES:
        answer["assess_result"] = job.script.assessment.to_json()
    answer["is_ondemand_resource"] = job.ondemand_resource
    return answer


# -- ListVoiceTrainingJob -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListQuery:
    """One ListVoiceTrainingJob request's paging, filters and order (None: no filter)."""

    offset: int = 0
    limit: int = DEFAULT_PAGE_SIZE
    states: frozenset[str] | None = None
    job_type: str | None = None
    tag: str | None = None
    batch_name: str | None = None
    job_id: str | None = None
    voice_name: str | None = None
    ondemand_resource: bool | None = None
    sort_key: str = "create_time"
    descending: bool = True

    def selects(self, view: TrainingView) -> bool:
        job = view.job
        return (
            (self.states is None or view.state in self.states)
            and (self.job_type is None or job.job_type == self.job_type)
            and (self.tag is None or job.tag == self.tag)
            and (self.batch_name is None or job.batch_name == self.batch_name)
            and (self.job_id is None or job.job_id == self.job_id)
            and (self.voice_name is None or job.voice_name == self.voice_name)
            and (self.ondemand_resource is None or job.ondemand_resource == self.ondemand_resource)
        )

    def page(self, views: Iterable[TrainingView]) -> dict[str, object]:
        """`{count, jobs}`: how many jobs match, and this page of them in the asked order.

        Jobs with equal times keep the order they were added in, so pages never overlap.
        """
        selected = [view for view in views if self.selects(view)]
        if self.sort_key == "update_time":
            selected.sort(key=lambda view: view.updated, reverse=self.descending)
        else:
            selected.sort(key=lambda view: view.created, reverse=self.descending)
        window = selected[self.offset : self.offset + self.limit]
        return {"count": len(selected), "jobs": [view.answer for view in window]}


def parse_list_query(query: Mapping[str, str]) -> ListQuery:
    """The request's query as the API reads it; ValueError naming the first bad parameter.

    Parameters the API ignores here (`create_since`, `update_until`, ...) and unknown ones are
    accepted and ignored.
    """
    states = _choices(query, "state", DOCUMENTED_STATES)
    return ListQuery(
        offset=_integer(query, "offset", 0, 0, _MAX_OFFSET),
        limit=_integer(query, "limit", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
        states=None if states is None else frozenset(states),
        job_type=_one_of(query, "job_type", TRAINING_JOB_TYPES),
        tag=_one_of(query, "tag", JOB_TAGS),
        batch_name=query.get("batch_name"),
        job_id=query.get("job_id"),
        voice_name=query.get("voice_name"),
        ondemand_resource=_boolean(query, "is_ondemand_resource"),
        sort_key=_one_of(query, "sort_key", _SORT_KEYS) or "create_time",
        descending=(_one_of(query, "sort_dir", _SORT_DIRS) or "desc") == "desc",
    )


def _integer(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise ValueError(f"parameter {name} must be an integer from {low} to {high}, got {raw!r}")
    return int(raw)


def _choices(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> list[str] | None:
    raw = query.get(name)
    if raw is None:
        return None
    values = raw.split(",")
    for value in values:
        if value not in allowed:
            raise ValueError(f"parameter {name} has an unknown value {value!r}")
    return values


def _one_of(query: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    raw = query.get(name)
    if raw is not None and raw not in allowed:
        raise ValueError(f"parameter {name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _boolean(query: Mapping[str, str], name: str) -> bool | None:
    raw = query.get(name)
    if raw is None:
        return None
    if raw.lower() not in _BOOLEANS:
        raise ValueError(f"parameter {name} must be true or false, got {raw!r}")
    return _BOOLEANS[raw.lower()]


# -- The demo -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoTrainingJob:
    """One of the demo's training jobs, `elapsed` simulated seconds into its script."""

    job_id: str
    script: Script
    job_type: str
    elapsed: float
    millis: bool = False
    tag: str | None = None
    batch_name: str | None = None


def _leaving(script: Script, state: str, seconds_left: float, occurrence: int = 1) -> float:
    """Simulated seconds into `script` at which its `occurrence`-th step in `state` has
    `seconds_left` to go: where a demo job starts so that it changes state soon."""
    offset, seen = 0.0, 0
    for step in script.steps:
        offset += step.seconds
        if step.state == state:
            seen += 1
            if seen == occurrence:
                return offset - seconds_left
    raise ValueError(f"script {script.name!r} has no step {occurrence} in {state}")


# Staggered so that the demo shows eight different states at start-up, and each job changes
# state within its first ten real seconds at the default speed of 30 (300 simulated seconds).
DEMO_TRAINING_SPECS: tuple[DemoTrainingJob, ...] = (
    DemoTrainingJob(
        "b13b802d-756d-47bc-a32f-20322e09cc67",
        TRAINING_AUDIT_BOUNCE,
        "BASIC",
        _leaving(TRAINING_AUDIT_BOUNCE, "AUDIT_FAILED", 240),
    ),
    DemoTrainingJob(
        "d3372d22-9d18-42ef-9777-74c687f4e171",
        TRAINING_HAPPY,
        "MIDDLE",
        _leaving(TRAINING_HAPPY, "PROCESSING", 200),
    ),
    DemoTrainingJob(
        "f6a0b186-5d85-4d50-be4d-d5bd5c3bb344",
        TRAINING_TOUR,
        "ADVANCE",
        _leaving(TRAINING_TOUR, "USER_RESULT_REVIEW", 150),
        tag="ECOMMERCE",
        batch_name="spring-campaign",
    ),
    DemoTrainingJob(
        "f6e7816c-0ef5-4694-9764-eeae1f25a9c0",
        TRAINING_FAILED,
        "FLEXUS",
        _leaving(TRAINING_FAILED, "FAILED", 100),
    ),
    DemoTrainingJob(
        "7875771b-5e71-4f59-ab2f-e8447dab8521",
        TRAINING_TOUR,
        "THIRD_PARTY",
        _leaving(TRAINING_TOUR, "SPLIT_FAILED", 120),
        tag="NEWS",
        batch_name="newsroom-voices",
    ),
    DemoTrainingJob(
        "64ff3246-e8ea-4af4-8779-03830b86b93e",
        TRAINING_HAPPY,
        "BASIC",
        _leaving(TRAINING_HAPPY, "SUCCEED", 280),
        millis=True,
    ),
    DemoTrainingJob(
        "f3c9232b-c67d-427e-b247-df4da0d868d0",
        TRAINING_AUDIT_BOUNCE,
        "THIRD_PARTY_LJZN",
        _leaving(TRAINING_AUDIT_BOUNCE, "SYSTEM_AUDITING", 60),
    ),
    DemoTrainingJob(
        "2e0606bf-a410-4355-9540-a66c5590e399",
        TRAINING_TOUR,
        "MIDDLE",
        _leaving(TRAINING_TOUR, "UPLOADING", 180),
    ),
)
DEMO_TRAINING_JOBS: tuple[str, ...] = tuple(spec.job_id for spec in DEMO_TRAINING_SPECS)
