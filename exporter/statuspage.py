"""The status page (`/`) and a job's page (`/jobs/{account}/{id}`): server-rendered HTML for
people, from the same store the metrics and the JSON API read.

Rendered with Jinja2 and autoescape on, so every string a cloud sends (reasons, suggestions, ids,
labels) is text, never markup. Filters, sorting and paging are query parameters: the page works
without script. Only the current page of the table and a capped attention list are rendered, so
the page stays cheap at tens of thousands of jobs.
"""

from __future__ import annotations

import heapq
import math
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import jinja2
from aiohttp import web

from exporter import __version__
from exporter.api import job_document
from exporter.model import Assessment, Phase
from exporter.runtime import RUNTIME
from exporter.store import Histogram, JobKey, JobState, StoreView

PAGE_SIZE = 100
# The attention list shows this many jobs; the rest are counted and one filter away.
ATTENTION_CAP = 50
# A running job is overdue once older than the bucket bound below which this share of its
# type's completed runs ended; it takes this many completed runs to say.
USUAL_SHARE = 0.99
MIN_COMPLETED_RUNS = 20
SORT_KEYS = ("account", "id", "type", "state", "phase", "age", "updated", "polled")
CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'"


@dataclass(frozen=True, slots=True)
class Clock:
    """The app's clock, the one polls are timed by (a test's fake one too), and the start."""

    wall: Callable[[], float]
    started_at: float


CLOCK = web.AppKey("status_clock", Clock)

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("exporter", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_STATIC = files("exporter") / "static"
_STATIC_TYPES = {
    "status.css": "text/css",
    "status.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Query:
    """The table's filters, sort and page, as the query string gives them."""

    account: str = ""
    phase: str = ""
    text: str = ""
    sort: str = "account"
    descending: bool = False
    page: int = 1
    limit: int = PAGE_SIZE

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Query:
        """Unknown or malformed values fall back to the defaults: a page, never an error."""
        sort = query.get("sort", "account")
        return cls(
            account=query.get("account", "").strip(),
            phase=query.get("phase", "") if query.get("phase") in set(Phase) else "",
            text=query.get("q", "").strip(),
            sort=sort if sort in SORT_KEYS else "account",
            descending=query.get("order") == "desc",
            page=max(1, _int(query.get("page"), 1)),
            limit=min(PAGE_SIZE, max(1, _int(query.get("limit"), PAGE_SIZE))),
        )

    def url(self, **changes: Any) -> str:
        """This query with `changes`, as a relative URL of the status page."""
        fields = {
            "account": self.account,
            "phase": self.phase,
            "q": self.text,
            "sort": self.sort,
            "order": "desc" if self.descending else "",
            "page": self.page,
            "limit": self.limit,
        }
        fields.update(changes)
        defaults = {"sort": "account", "page": 1, "limit": PAGE_SIZE}
        kept = {k: v for k, v in fields.items() if v not in ("", None) and defaults.get(k) != v}
        return "?" + urllib.parse.urlencode(kept) if kept else "./"

    def sort_url(self, column: str) -> str:
        """Sorting by `column`; by it again reverses the order."""
        descending = column == self.sort and not self.descending
        return self.url(sort=column, order="desc" if descending else "", page=1)

    def matches(self, job: JobState) -> bool:
        if self.account and job.key.account != self.account:
            return False
        if self.phase and job.phase.value != self.phase:
            return False
        if self.text:
            needle = self.text.casefold()
            haystack = [job.key.job_id, *(f"{name}={value}" for name, value in job.labels)]
            return any(needle in item.casefold() for item in haystack)
        return True


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _sort_value(column: str) -> Callable[[JobState], Any]:
    """The column's value of a job; None when the job has none (such jobs sort last)."""

    def snap(name: str) -> Callable[[JobState], Any]:
        return lambda job: None if job.snapshot is None else getattr(job.snapshot, name)

    def negated_creation(job: JobState) -> float | None:
        # Youngest first is the newest creation time first.
        created = _created(job)
        return None if created is None else -created

    values: dict[str, Callable[[JobState], Any]] = {
        "account": lambda job: job.key.account,
        "id": lambda job: job.key.job_id,
        "type": snap("job_type"),
        "state": snap("state"),
        "phase": lambda job: job.phase.value,
        "age": negated_creation,
        "updated": snap("updated_at"),
        "polled": lambda job: job.last_poll_at,
    }
    return values[column]


def _created(job: JobState) -> float | None:
    created = None if job.snapshot is None else job.snapshot.created_at
    return created if created is not None else job.first_seen_at


def table_page(jobs: Iterable[JobState], query: Query) -> tuple[list[JobState], int]:
    """One page of the filtered, sorted jobs, and how many jobs the filters let through.
    Ties go by (account, id); jobs without a value for the column come last either way."""
    value = _sort_value(query.sort)
    present: list[tuple[Any, JobKey, JobState]] = []
    missing: list[JobState] = []
    for job in jobs:
        if query.matches(job):
            v = value(job)
            if v is None:
                missing.append(job)
            else:
                present.append((v, job.key, job))
    # Only the rows up to this page are ordered (a heap of them, not a sort of every job): at
    # 50,000 jobs a full sort was most of a render.
    start = (query.page - 1) * query.limit
    needed = start + query.limit
    pick = heapq.nlargest if query.descending else heapq.nsmallest
    chosen = [item[2] for item in pick(needed, present, key=_value_then_key)]
    if len(chosen) < needed:
        chosen += heapq.nsmallest(needed - len(chosen), missing, key=_job_key)
    return chosen[start:needed], len(present) + len(missing)


def _value_then_key(item: tuple[Any, JobKey, JobState]) -> tuple[Any, JobKey]:
    return item[0], item[1]


def _job_key(job: JobState) -> JobKey:
    return job.key


def usual_limit(histogram: Histogram, share: float = USUAL_SHARE) -> float | None:
    """The bucket bound below which `share` of the completed runs ended; None when there are
    too few runs, or when that share reaches the open last bucket."""
    total = sum(histogram.counts)
    if total < MIN_COMPLETED_RUNS:
        return None
    needed, seen = math.ceil(share * total), 0
    for bound, count in zip(histogram.buckets, histogram.counts, strict=False):
        seen += count
        if seen >= needed:
            return bound
    return None


def usual_limits(view: StoreView) -> dict[tuple[str, str, str], float]:
    """(account, provider, job_type) -> run time past which a running job is overdue, from
    the jobs of that type seen completing (succeeded)."""
    limits: dict[tuple[str, str, str], float] = {}
    for (account, provider, job_type, phase), histogram in view.job_durations.items():
        if phase == Phase.SUCCEEDED.value and (limit := usual_limit(histogram)) is not None:
            limits[(account, provider, job_type)] = limit
    return limits


@dataclass(frozen=True, slots=True)
class Attention:
    job: JobState
    why: str  # failed, waiting_on_user, polls_failing, overdue
    detail: str


# The attention list's order: what the exporter cannot see first, then what the user must do.
ATTENTION_ORDER = ("polls_failing", "failed", "waiting_on_user", "overdue")


def needs_attention(
    jobs: Iterable[JobState], limits: Mapping[tuple[str, str, str], float], now: float
) -> tuple[list[Attention], int]:
    """The jobs someone should look at, most urgent kind first, at most ATTENTION_CAP of them;
    and how many there are in all."""
    found: dict[str, list[Attention]] = {why: [] for why in ATTENTION_ORDER}
    total = 0
    for job in jobs:
        item = _attention(job, limits, now)
        if item is not None:
            total += 1
            kind = found[item.why]
            if len(kind) < ATTENTION_CAP:  # a later kind can never displace these
                kind.append(item)
    shown = [
        item
        for why in ATTENTION_ORDER
        for item in sorted(found[why], key=lambda item: item.job.key)
    ]
    return shown[:ATTENTION_CAP], total


def _attention(
    job: JobState, limits: Mapping[tuple[str, str, str], float], now: float
) -> Attention | None:
    if job.last_poll_success is False and job.last_error is not None:
        return Attention(job, "polls_failing", job.last_error.message)
    snapshot = job.snapshot
    if snapshot is None:
        return None
    if snapshot.phase is Phase.FAILED:
        reason = " ".join(filter(None, (snapshot.failure_code, snapshot.failure_reason)))
        if not snapshot.terminal:
            # A failed state that does not end the job (states.py: AUDIT_FAILED, SPLIT_FAILED,
            # USER_REVIEW_REJECT) waits on its owner: a new upload, a redo, a review.
            return Attention(job, "waiting_on_user", reason or snapshot.state)
        return Attention(job, "failed", reason or snapshot.state)
    if snapshot.phase is Phase.RUNNING and snapshot.created_at is not None:
        limit = limits.get((job.key.account, job.provider, snapshot.job_type))
        age = now - snapshot.created_at
        if limit is not None and age > limit:
            return Attention(
                job,
                "overdue",
                f"running for {duration(age)}; {USUAL_SHARE:.0%} of its type end within "
                f"{duration(limit)}",
            )
    return None


# (account, provider) -> its failed polls in the last hour (Store.poll_errors_since).
RecentPollErrors = Callable[[str, str], int]
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class AccountSummary:
    name: str
    provider: str
    phases: dict[str, int]
    jobs: int
    poll_errors: int
    poll_errors_last_hour: int
    failing_polls: int
    budget: str


def account_summaries(
    view: StoreView,
    providers: Mapping[str, str],
    polling: Mapping[tuple[str, str], Any],
    recent_poll_errors: RecentPollErrors,
) -> list[AccountSummary]:
    counts: dict[tuple[str, str], dict[str, int]] = {key: {} for key in providers.items()}
    failing: dict[tuple[str, str], int] = {}
    for job in view.jobs:
        bucket = (job.key.account, job.provider)
        per_phase = counts.setdefault(bucket, {})
        per_phase[job.phase.value] = per_phase.get(job.phase.value, 0) + 1
        if job.last_poll_success is False:
            failing[bucket] = failing.get(bucket, 0) + 1
    errors: dict[tuple[str, str], int] = {}
    for (account, provider, _reason), count in view.poll_errors.items():
        errors[(account, provider)] = errors.get((account, provider), 0) + count
    return [
        AccountSummary(
            name=account,
            provider=provider,
            phases=per_phase,
            jobs=sum(per_phase.values()),
            poll_errors=errors.get((account, provider), 0),
            poll_errors_last_hour=recent_poll_errors(account, provider),
            failing_polls=failing.get((account, provider), 0),
            budget=_budget(polling.get((account, provider))),
        )
        for (account, provider), per_phase in sorted(counts.items())
    ]


def _budget(status: Any) -> str:
    if status is None:
        return "not polling yet"
    if status.budget_rps is None:
        return f"{status.spent_rps:.2f} req/s, no budget set"
    share = status.spent_rps / status.budget_rps if status.budget_rps else 0.0
    return f"{status.spent_rps:.2f} of {status.budget_rps:g} req/s ({share:.0%})"


def duration(seconds: float) -> str:
    """A short human duration: 45s, 12m, 3h 05m, 2d 4h."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def iso(at: float | None) -> str:
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(at: float | None, now: float) -> str:
    return "" if at is None else f"{duration(now - at)} ago"


def job_href(key: JobKey) -> str:
    quote = urllib.parse.quote
    return f"jobs/{quote(key.account, safe='')}/{quote(key.job_id, safe='')}"


_TEMPLATES.globals.update(
    duration=duration, iso=iso, ago=ago, job_href=job_href, phases=[p.value for p in Phase]
)


@dataclass(frozen=True, slots=True)
class Bar:
    """One assessment metric drawn as a bar: the expected range and the actual value on one
    scale (0..1 of the drawing's width)."""

    metric: str
    status: str  # ok, below, above, unknown
    actual: float | None
    low: float | None
    high: float | None
    raw_actual: str | None
    raw_expected: str | None


# The cloud's assessment status: -1 below the expected range, 0 within, 1 above.
_STATUS = {-1: "below", 0: "ok", 1: "above"}


def assessment_bars(assessments: Sequence[Assessment]) -> list[Bar]:
    """One bar per metric, each on its own scale: from 0 (or the lowest value, if negative)
    to a quarter past the largest of the actual value and the range's ends."""
    bars = []
    for item in assessments:
        values = [
            v
            for v in (item.actual_value, item.expected_min, item.expected_max)
            if v is not None and math.isfinite(v)
        ]
        low = min([*values, 0.0])
        span = max([*values, 0.0]) * 1.25 - low or 1.0

        def place(value: float | None, low: float = low, span: float = span) -> float | None:
            if value is None or not math.isfinite(value):
                return None
            return min(1.0, max(0.0, (value - low) / span))

        bars.append(
            Bar(
                metric=item.metric,
                status="unknown" if item.status is None else _STATUS.get(item.status, "unknown"),
                actual=place(item.actual_value),
                low=place(item.expected_min),
                high=place(item.expected_max),
                raw_actual=item.actual,
                raw_expected=item.expected,
            )
        )
    return bars


def render_status(
    view: StoreView,
    query: Query,
    *,
    now: float,
    started_at: float,
    shard: str,
    providers: Mapping[str, str],
    polling: Mapping[tuple[str, str], Any],
    recent_poll_errors: RecentPollErrors,
) -> str:
    limits = usual_limits(view)
    attention, attention_total = needs_attention(view.jobs, limits, now)
    rows, matching = table_page(view.jobs, query)
    pages = max(1, math.ceil(matching / query.limit))
    return _TEMPLATES.get_template("status.html").render(
        version=__version__,
        now=now,
        uptime=duration(now - started_at),
        shard=shard,
        reload_ok=view.reload_ok,
        reload_success_at=view.reload_success_at,
        accounts=account_summaries(view, providers, polling, recent_poll_errors),
        attention=attention,
        attention_total=attention_total,
        attention_cap=ATTENTION_CAP,
        rows=rows,
        matching=matching,
        total=len(view.jobs),
        query=query,
        pages=pages,
        sort_keys=SORT_KEYS,
    )


def render_job(job: JobState, *, now: float, prometheus_url: str | None) -> str:
    document = job_document(job)
    snapshot = job.snapshot
    return _TEMPLATES.get_template("job.html").render(
        version=__version__,
        now=now,
        job=job,
        doc=document,
        bars=assessment_bars(snapshot.assessments if snapshot else ()),
        series=_series_links(job.key, prometheus_url),
    )


def _series_links(key: JobKey, prometheus_url: str | None) -> list[tuple[str, str]]:
    """(expression, URL of its graph in Prometheus) for the job's series."""
    if prometheus_url is None:
        return []
    selector = '{account="%s",job_id="%s"}' % (_promql(key.account), _promql(key.job_id))  # noqa: UP031
    expressions = [
        f"cloudjob_job_phase{selector} == 1",
        f"cloudjob_job_state{selector} == 1",
        f"cloudjob_job_age_seconds{selector}",
        f"cloudjob_job_last_poll_success{selector}",
        f"cloudjob_job_assessment_actual{selector}",
    ]
    return [
        (
            expression,
            f"{prometheus_url}/graph?"
            + urllib.parse.urlencode({"g0.expr": expression, "g0.tab": "0"}),
        )
        for expression in expressions
    ]


def _promql(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _html(text: str, *, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store"},
    )


async def status_page(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    now = request.app[CLOCK].wall()

    def recent_poll_errors(account: str, provider: str) -> int:
        return runtime.store.poll_errors_since(account, provider, now - HOUR)

    text = render_status(
        runtime.store.view(),
        Query.parse(request.query),
        now=now,
        started_at=request.app[CLOCK].started_at,
        shard=str(runtime.shard),
        providers={name: p.provider for name, p in runtime.providers.items()},
        polling=runtime.polling_status(),
        recent_poll_errors=recent_poll_errors,
    )
    return _html(text)


async def job_page(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    key = JobKey(request.match_info["account"], request.match_info["job_id"])
    job = runtime.store.get(key)
    if job is None:
        text = _TEMPLATES.get_template("missing.html").render(version=__version__, key=key)
        return _html(text, status=404)
    prometheus_url = runtime.settings.external_prometheus_url
    return _html(render_job(job, now=request.app[CLOCK].wall(), prometheus_url=prometheus_url))


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = _STATIC_TYPES.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=(_STATIC / name).read_bytes(),
        content_type=content_type,
        headers={"Cache-Control": "max-age=300"},
    )


def add_status_routes(app: web.Application, wall: Callable[[], float]) -> None:
    app[CLOCK] = Clock(wall, wall())
    app.router.add_get("/", status_page)
    app.router.add_get("/jobs/{account}/{job_id}", job_page)
    app.router.add_get("/static/{name}", static_file)
