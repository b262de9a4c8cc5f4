"""Each cloud's documented job states, the cloud-neutral phase each one means, and the rule for
states no document lists.

Standard library only, so both the providers (which parse states) and the collector (which lists
every documented state in its StateSet) can share one table without the collector seeing HTTP.
Which table belongs to which provider name is the registry's (exporter/clouds.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.model import Phase


def phase_by_rule(state: str) -> Phase:
    """The phase of a state no document lists, so a new cloud state is exported, never dropped.

    FAIL or REJECT -> failed; SUCCE or COMPLETE -> succeeded; CANCEL -> cancelled; WAIT or
    QUEUE -> pending; a word ending in ING, or REVIEW (work under way) -> running; else unknown.
    """
    upper = state.upper()
    if "FAIL" in upper or "REJECT" in upper:
        return Phase.FAILED
    if "SUCCE" in upper or "COMPLETE" in upper:
        return Phase.SUCCEEDED
    if "CANCEL" in upper:
        return Phase.CANCELLED
    if "WAIT" in upper or "QUEUE" in upper:
        return Phase.PENDING
    if any(word.endswith("ING") for word in upper.split("_")) or "REVIEW" in upper:
        return Phase.RUNNING
    return Phase.UNKNOWN


@dataclass(frozen=True, slots=True)
class StateTable:
    """One cloud's documented states, in the document's order, and the ones that end a job."""

    phases: Mapping[str, Phase]
    terminal: frozenset[str]

    def phase_of(self, state: str) -> tuple[Phase, bool]:
        """The phase of `state`, and whether the document lists it."""
        phase = self.phases.get(state)
        if phase is not None:
            return phase, True
        return phase_by_rule(state), False

    def is_terminal(self, state: str, phase: Phase, known: bool) -> bool:
        """Whether the job is finished for good (slow polling, then forgotten after retention).

        An undocumented state counts as terminal only when it succeeded or was cancelled: a
        failed one may be retried (Huawei's AUDIT_FAILED waits for a new upload), so it is
        watched as live.
        """
        if known:
            return state in self.terminal
        return phase in (Phase.SUCCEEDED, Phase.CANCELLED)

    @property
    def unfinished(self) -> tuple[str, ...]:
        """The documented states that do not end a job, in the document's order."""
        return tuple(state for state in self.phases if state not in self.terminal)


# MetaStudio's `JobState` (huaweicloudsdkmetastudio v1/model/job_state.py), in its order: shared by
# short jobs and voice training jobs. The ShowShortJob document omits the two USER_* states.
HUAWEI_STATES: dict[str, Phase] = {
    "CREATING": Phase.PENDING,
    "SYSTEM_AUDITING": Phase.RUNNING,
    "AUDITING": Phase.RUNNING,
    "WAITING_SPLIT": Phase.PENDING,
    "SPLITTING": Phase.RUNNING,
    "SPLIT_FAILED": Phase.FAILED,
    "ANNOTATING": Phase.RUNNING,
    "WAITING": Phase.PENDING,
    "PROCESSING": Phase.RUNNING,
    "RESULT_REVIEW": Phase.RUNNING,
    "AUDIT_FAILED": Phase.FAILED,
    "USER_RESULT_REVIEW": Phase.RUNNING,
    "USER_REVIEW_REJECT": Phase.FAILED,
    "UPLOADING": Phase.RUNNING,
    "FAILED": Phase.FAILED,
    "SUCCEED": Phase.SUCCEEDED,
}
# Only these end a job: AUDIT_FAILED waits for the user to upload again, SPLIT_FAILED can be redone,
# USER_REVIEW_REJECT (the user rejected the trained result) goes back to training.
HUAWEI_TABLE = StateTable(HUAWEI_STATES, frozenset({"SUCCEED", "FAILED"}))
HUAWEI_ASSESSMENT_METRICS = ("speed", "sound", "snr", "reverb", "dnsmos_ovrl", "dnsmos_bak")

# DescribeAIJob `State`. Pause waits to be resumed (pending); Cancel was stopped by a user.
TENCENT_STATES: dict[str, Phase] = {
    "Submitted": Phase.PENDING,
    "Running": Phase.RUNNING,
    "Success": Phase.SUCCEEDED,
    "Failed": Phase.FAILED,
    "Pause": Phase.PENDING,
    "Cancel": Phase.CANCELLED,
}
TENCENT_TABLE = StateTable(TENCENT_STATES, frozenset({"Success", "Failed", "Cancel"}))
