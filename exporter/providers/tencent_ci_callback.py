"""Tencent CI job callbacks: which jobs a `TaskFinish` body names, and nothing else.

CI signs no callback, so whoever knows the URL can post one: the body is read only for its
`JobsDetail/JobId`s, each a hint to look the job up with a signed request; no state, time or
result in it is believed. The shape, XML by default or JSON (`CallBackFormat`):
`<Response><EventName>TaskFinish</EventName><JobsDetail>...</JobsDetail>*</Response>`
(older pages show no EventName); in JSON `JobsDetail` comes as an object or a list, with or
without the `Response` wrapper. Documents: "Job Callback Content" (436/47214, no EventName),
"Translation job callback" (1045/50307, EventName TaskFinish), "Workflow Callback" (436/48042,
EventName WorkflowFinish, which names no job of ours).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import orjson
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

# The event a job's end sends; a queue may also send WorkflowFinish, which names no job to poll.
TASK_FINISH = "TaskFinish"
# Longer than any CI job id (33 characters): a longer one is not an id but garbage.
MAX_JOB_ID_LENGTH = 128
_BOM = b"\xef\xbb\xbf"


class CallbackError(ValueError):
    """A body that is not a CI job callback; the message is one line naming what is wrong."""


@dataclass(frozen=True, slots=True)
class Callback:
    """The event a callback reports and the job ids it names (in order, each once)."""

    event: str | None
    job_ids: tuple[str, ...]

    @property
    def names_jobs(self) -> bool:
        """Whether the callback is about jobs finishing: TaskFinish, or no event (older pages)."""
        return self.event in (None, TASK_FINISH)


def parse_callback(body: bytes) -> Callback:
    """The callback a body holds, XML or JSON told apart by its first non-blank byte (CI's
    Content-Type is not documented per format); CallbackError if it holds none."""
    text = body.removeprefix(_BOM).lstrip()
    if text.startswith(b"<"):
        return _from_xml(text)
    if text.startswith((b"{", b"[")):
        return _from_json(text)
    return _fail("the body is neither XML nor JSON" if text else "the body is empty")


def _fail(reason: str) -> Callback:
    raise CallbackError(reason)


def _from_xml(body: bytes) -> Callback:
    try:
        root: ET.Element = fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException) as exc:
        raise CallbackError(f"the body is not well-formed XML: {_one_line(exc)}") from None
    if root.tag != "Response":
        raise CallbackError(f"the XML root is <{_one_line(root.tag)}>, not <Response>")
    event_element = root.find("EventName")
    event = None if event_element is None else (event_element.text or "").strip()
    details = root.findall("JobsDetail")
    ids = [(detail.findtext("JobId") or "").strip() for detail in details]
    return _callback(event, ids)


def _from_json(body: bytes) -> Callback:
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CallbackError(f"the body is not valid JSON: {_one_line(exc)}") from None
    if not isinstance(document, dict):
        raise CallbackError("the JSON body is not an object")
    if "Response" in document:
        document = document["Response"]
        if not isinstance(document, dict):
            raise CallbackError("Response is not an object")
    event = document.get("EventName")
    if event is not None and not isinstance(event, str):
        raise CallbackError("EventName is not a string")
    details = document.get("JobsDetail", [])
    if isinstance(details, dict):
        details = [details]
    if not isinstance(details, list) or not all(isinstance(d, dict) for d in details):
        raise CallbackError("JobsDetail is neither an object nor a list of objects")
    ids = [d.get("JobId") for d in details]
    if not all(isinstance(job_id, str) for job_id in ids):
        raise CallbackError("a JobsDetail's JobId is not a string")
    return _callback(event if event is None else event.strip(), [str(i).strip() for i in ids])


def _callback(event: str | None, ids: list[str]) -> Callback:
    """The checks both formats share: a job event names at least one job, each by a plausible id."""
    callback = Callback(event, tuple(dict.fromkeys(ids)))
    if not callback.names_jobs:
        return callback
    if not ids:
        raise CallbackError("no JobsDetail in the callback")
    for job_id in ids:
        if not job_id:
            raise CallbackError("a JobsDetail has no JobId")
        if len(job_id) > MAX_JOB_ID_LENGTH or not job_id.isprintable():
            raise CallbackError(f"a JobId is no job id: {job_id[:40]!r}")
    return callback


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())[:200]
