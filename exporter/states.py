"""Each provider's documented job states and the cloud-neutral phase each one means.

Standard library only, so both the providers (which parse states) and the collector (which lists
every documented state in its StateSet) can share one table without the collector seeing HTTP.
"""

from __future__ import annotations

from exporter.model import Phase

# ShowShortJob `state`, in the document's order.
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
    "UPLOADING": Phase.RUNNING,
    "FAILED": Phase.FAILED,
    "SUCCEED": Phase.SUCCEEDED,
}
# Only these end a job: AUDIT_FAILED waits for the user to upload again, SPLIT_FAILED can be redone.
HUAWEI_TERMINAL_STATES = frozenset({"SUCCEED", "FAILED"})
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
TENCENT_TERMINAL_STATES = frozenset({"Success", "Failed", "Cancel"})

DOCUMENTED_STATES: dict[str, dict[str, Phase]] = {
    "huawei_metastudio": HUAWEI_STATES,
    "tencent_ci": TENCENT_STATES,
}


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


TERMINAL_STATES: dict[str, frozenset[str]] = {
    "huawei_metastudio": HUAWEI_TERMINAL_STATES,
    "tencent_ci": TENCENT_TERMINAL_STATES,
}


def is_terminal(provider: str, state: str, phase: Phase, known: bool) -> bool:
    """Whether the job is finished for good (slow polling, then forgotten after retention).

    An undocumented state counts as terminal only when it succeeded or was cancelled: a failed
    one may be retried (Huawei's AUDIT_FAILED waits for a new upload), so it is watched as live.
    """
    if known:
        return state in TERMINAL_STATES.get(provider, frozenset())
    return phase in (Phase.SUCCEEDED, Phase.CANCELLED)


def phase_of(provider: str, state: str) -> tuple[Phase, bool]:
    """The phase of `state`, and whether the provider's document lists it."""
    table = DOCUMENTED_STATES.get(provider, {})
    if state in table:
        return table[state], True
    return phase_by_rule(state), False
