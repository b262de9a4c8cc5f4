"""The status page and the job page, rendered from a store: what they show, how the table
filters, sorts and pages, and that nothing a cloud sends becomes markup."""

from __future__ import annotations

import base64
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp.test_utils import TestClient

from exporter.app import STORE, create_app
from exporter.config import ConfigError, load_settings
from exporter.model import Assessment, JobSnapshot, Phase, UpstreamError
from exporter.states import HUAWEI_TABLE, TENCENT_TABLE
from exporter.statuspage import (
    ATTENTION_CAP,
    PAGE_SIZE,
    SORT_KEYS,
    Query,
    _sort_value,
    assessment_bars,
    needs_attention,
    render_job,
    render_status,
    table_page,
    usual_limit,
    usual_limits,
)
from exporter.store import JOB_DURATION_BUCKETS, Histogram, JobKey, Store
from exporter.webconfig import WebConfig

NOW = 1_800_000_000.0
XSS_REASON = "<img src=x onerror=alert(1)>"
SCRIPT_REASON = "bad </script><script>alert(2)</script> input"
ClientFactory = Any


def _snapshot(job_id: str, state: str, phase: Phase, **fields: Any) -> JobSnapshot:
    fields.setdefault("created_at", NOW - 600)
    fields.setdefault("updated_at", NOW - 60)
    return JobSnapshot(
        job_id=job_id,
        job_type=fields.pop("job_type", "VOICE_ASSESS"),
        state=state,
        phase=phase,
        # As the provider decides it: AUDIT_FAILED and the other owner-waiting states do not
        # end a job.
        terminal=HUAWEI_TABLE.is_terminal(state, *HUAWEI_TABLE.phase_of(state))
        if state.isupper()
        else TENCENT_TABLE.is_terminal(state, *TENCENT_TABLE.phase_of(state)),
        **fields,
    )


def _store(count: int = 0) -> Store:
    """`count` running jobs over two accounts, a failed one with a hostile reason, and one
    waiting on the user."""
    store = Store()
    for index in range(count):
        account = "hw" if index % 2 else "tc"
        key = JobKey(account, f"job-{index:05d}")
        provider = "huawei_metastudio" if account == "hw" else "tencent_ci"
        store.track(key, provider, {"team": f"t{index % 7}"})
        store.record_success(
            key,
            _snapshot(key.job_id, "RUNNING", Phase.RUNNING, created_at=NOW - index),
            NOW - 5,
        )
    bad = JobKey("hw", "bad-<b>job</b>")
    store.track(bad, "huawei_metastudio", {"team": "<i>x</i>"})
    store.record_success(
        bad,
        _snapshot(
            bad.job_id,
            "FAILED",
            Phase.FAILED,
            failure_code="MSS.1<2>",
            failure_reason=XSS_REASON + " " + SCRIPT_REASON,
        ),
        NOW - 5,
    )
    audit = JobKey("hw", "audit")
    store.track(audit, "huawei_metastudio", {})
    store.record_success(
        audit,
        _snapshot(audit.job_id, "AUDIT_FAILED", Phase.FAILED, failure_reason="re-upload"),
        NOW - 5,
    )
    return store


def _status(store: Store, **query: str) -> str:
    return render_status(
        store.view(),
        Query.parse(query),
        now=NOW,
        started_at=NOW - 3700,
        shard="0/1",
        providers={"hw": "huawei_metastudio", "tc": "tencent_ci", "idle": "tencent_ci"},
        polling={},
        recent_poll_errors=lambda account, provider: store.poll_errors_since(
            account, provider, NOW - 3600
        ),
    )


class _Markup(HTMLParser):
    """The tags and attributes a browser would build: what the page's markup really is."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text.append(data)


def _markup(page: str) -> _Markup:
    parser = _Markup()
    parser.feed(page)
    return parser


def test_hostile_strings_render_as_text_on_both_pages() -> None:
    store = _store()
    job = store.get(JobKey("hw", "bad-<b>job</b>"))
    assert job is not None
    for page in (_status(store), render_job(job, now=NOW, prometheus_url=None)):
        markup = _markup(page)
        assert "img" not in markup.tags
        assert "b" not in markup.tags
        assert "i" not in markup.tags
        assert "onerror" not in markup.attributes
        # The only script is the packaged one, loaded by src, with no body.
        assert markup.tags.count("script") == 1
        assert markup.script_text == []
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
        assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page


def test_the_status_page_shows_the_header_and_puts_attention_first() -> None:
    page = _status(_store(3))
    assert "Up 1h 01m" in page
    assert "shard 0/1" in page
    assert page.index('id="attention"') < page.index('id="jobs"')
    attention = page[page.index('id="attention"') : page.index('id="jobs"')]
    assert "Needs attention (2)" in attention
    assert "waiting on user" in attention
    assert "re-upload" in attention
    assert "MSS.1&lt;2&gt;" in attention
    assert "job-00000" not in attention  # a running job with no history is not overdue
    # Every configured account has a row, one without jobs too.
    assert re.search(r'account=idle">idle</a></td><td>tencent_ci</td><td>0</td>', page)
    assert re.search(r'account=tc">tc</a></td><td>tencent_ci</td><td>2</td>', page)


def test_a_failed_config_reload_shows() -> None:
    store = _store()
    store.record_reload(ok=False, at=NOW)
    assert '<span class="bad">failed</span>' in _status(store)


def test_the_table_pages_by_a_hundred_and_every_job_is_on_one_page() -> None:
    store = _store(250)
    seen: list[str] = []
    for page in (1, 2, 3):
        rows, matching = table_page(store.view().jobs, Query.parse({"page": str(page)}))
        assert matching == 252
        assert len(rows) == (PAGE_SIZE if page < 3 else 52)
        seen += [job.key.job_id for job in rows]
    assert sorted(seen) == sorted(job.key.job_id for job in store.view().jobs)
    page = _status(store, page="2")
    assert "page 2 of 3" in page
    assert 'rel="prev" href="./"' in page
    assert 'rel="next" href="?page=3"' in page


def test_filters_narrow_the_table() -> None:
    view = _store(40).view()
    assert table_page(view.jobs, Query.parse({"account": "tc"}))[1] == 20
    assert table_page(view.jobs, Query.parse({"phase": "failed"}))[1] == 2
    assert table_page(view.jobs, Query.parse({"q": "TEAM=T3"}))[1] == 6  # 3, 10, 17, 24, 31, 38
    assert table_page(view.jobs, Query.parse({"q": "job-0001"}))[1] == 10
    # Nonsense falls back to defaults rather than erroring.
    assert table_page(view.jobs, Query.parse({"phase": "bogus", "page": "x"}))[1] == 42


@pytest.mark.parametrize("column", ["account", "id", "type", "state", "phase", "age", "polled"])
def test_every_column_sorts_both_ways(column: str) -> None:
    view = _store(30).view()
    up = [j.key for j in table_page(view.jobs, Query.parse({"sort": column}))[0]]
    down = [j.key for j in table_page(view.jobs, Query.parse({"sort": column, "order": "desc"}))[0]]
    assert sorted(up) == sorted(down)
    assert len(up) == 32
    if column in ("id", "age"):
        assert up == list(reversed(down))


def test_age_sorts_youngest_first() -> None:
    view = _store(5).view()
    rows = table_page(view.jobs, Query.parse({"sort": "age", "account": "tc"}))[0]
    assert [job.key.job_id for job in rows] == ["job-00000", "job-00002", "job-00004"]


def test_query_urls_keep_the_filters_and_sorting_twice_reverses() -> None:
    query = Query.parse({"account": "a b", "phase": "failed", "sort": "age"})
    assert query.url(page=2) == "?account=a+b&phase=failed&sort=age&page=2"
    assert "order=desc" in query.sort_url("age")
    assert "order" not in query.sort_url("state")
    assert Query.parse({"limit": "100000"}).limit == PAGE_SIZE


def test_usual_limit_is_the_bucket_bound_that_holds_the_share() -> None:
    histogram = Histogram(JOB_DURATION_BUCKETS)
    for _ in range(19):
        histogram.observe(100)
    assert usual_limit(histogram) is None  # too few runs to say
    for _ in range(81):
        histogram.observe(100)
    assert usual_limit(histogram) == 120.0
    histogram.observe(5000)  # 1 of 101 past 120 s: 99% still within 120 s
    assert usual_limit(histogram) == 120.0
    histogram.observe(5000)
    assert usual_limit(histogram) == 7200.0
    tail = Histogram(JOB_DURATION_BUCKETS)
    for _ in range(30):
        tail.observe(1e9)
    assert usual_limit(tail) is None  # the open last bucket bounds nothing


def test_a_job_running_past_its_types_usual_time_needs_attention() -> None:
    store = _store()
    for index in range(30):
        key = JobKey("hw", f"done-{index}")
        store.track(key, "huawei_metastudio", {})
        store.record_success(key, _snapshot(key.job_id, "RUNNING", Phase.RUNNING), NOW - 100)
        store.record_success(
            key,
            _snapshot(
                key.job_id, "SUCCEED", Phase.SUCCEEDED, created_at=NOW - 400, finished_at=NOW - 350
            ),
            NOW - 90,
        )
    for job_id, age in (("slow", 200.0), ("fine", 30.0)):
        key = JobKey("hw", job_id)
        store.track(key, "huawei_metastudio", {})
        store.record_success(
            key, _snapshot(job_id, "RUNNING", Phase.RUNNING, created_at=NOW - age), NOW
        )
    view = store.view()
    limits = usual_limits(view)
    assert limits == {("hw", "huawei_metastudio", "VOICE_ASSESS"): 60.0}
    found, total = needs_attention(view.jobs, limits, NOW)
    overdue = [item for item in found if item.why == "overdue"]
    assert [item.job.key.job_id for item in overdue] == ["slow"]
    assert "99% of its type end within 1m" in overdue[0].detail
    assert total == 3


def test_the_attention_list_is_capped_but_counts_all() -> None:
    store = Store()
    for index in range(ATTENTION_CAP + 7):
        key = JobKey("hw", f"f{index}")
        store.track(key, "huawei_metastudio", {})
        store.record_success(key, _snapshot(key.job_id, "FAILED", Phase.FAILED), NOW)
    found, total = needs_attention(store.view().jobs, {}, NOW)
    assert len(found) == ATTENTION_CAP
    assert total == ATTENTION_CAP + 7


def test_the_job_page_draws_one_bar_per_metric_and_both_suggestions() -> None:
    store = Store()
    key = JobKey("hw", "assessed")
    store.track(key, "huawei_metastudio", {"team": "a"})
    metrics = (
        Assessment("snr", ">=25", "32.5dB", "信噪比良好", "SNR is good.", 0, 32.5, 25.0, None),
        Assessment("speed", "[3.5, 5.5]", "6.1", "语速过快", "Too fast.", 1, 6.1, 3.5, 5.5),
        Assessment("reverb", "<=0.6", None, None, None, None, None, None, 0.6),
    )
    store.record_success(
        key,
        _snapshot("assessed", "SUCCEED", Phase.SUCCEEDED, assessments=metrics, suggestion="好"),
        NOW,
    )
    job = store.get(key)
    assert job is not None
    page = render_job(job, now=NOW, prometheus_url="http://prom:9090")
    assert page.count('<rect class="actual') == 3
    assert '<rect class="actual ok" data-metric="snr"' in page
    assert '<rect class="actual above" data-metric="speed"' in page
    assert '<rect class="actual unknown" data-metric="reverb"' in page
    for text in ("信噪比良好", "SNR is good.", "语速过快", "Too fast."):
        assert text in page
    assert "http://prom:9090/graph?g0.expr=cloudjob_job_phase" in page
    assert "job_id%3D%22assessed%22" in page
    assert "In Prometheus" not in render_job(job, now=NOW, prometheus_url=None)


def test_bars_place_the_value_and_the_range_on_one_scale() -> None:
    (bar,) = assessment_bars(
        [Assessment("x", status=-1, actual_value=2.0, expected_min=4.0, expected_max=8.0)]
    )
    assert bar.status == "below"
    assert bar.actual == pytest.approx(0.2)
    assert bar.low == pytest.approx(0.4)
    assert bar.high == pytest.approx(0.8)


def test_the_job_page_shows_the_poll_history_the_exporter_holds() -> None:

    store = _store()
    key = JobKey("hw", "audit")
    store.record_failure(key, UpstreamError("gateway <said> no", status="502"), NOW)
    job = store.get(key)
    assert job is not None
    page = render_job(job, now=NOW, prometheus_url=None)
    assert "gateway &lt;said&gt; no" in page
    assert "<dt>polls</dt><dd>2</dd>" in page
    assert "<dt>entered failed</dt><dd>1 time</dd>" in page  # AUDIT_FAILED, once
    assert "(status 502): gateway" in page
    attention = needs_attention(store.view().jobs, {}, NOW)[0]
    assert [item.why for item in attention if item.job.key == key] == ["polls_failing"]


def test_the_prometheus_url_flag_beats_the_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("external_prometheus_url: http://from-config:9090/\n")
    assert load_settings(config).external_prometheus_url == "http://from-config:9090"
    flagged = load_settings(config, {"external_prometheus_url": "https://flag.example/prom"})
    assert flagged.external_prometheus_url == "https://flag.example/prom"
    config.write_text("external_prometheus_url: 'javascript:alert(1)'\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert any("external_prometheus_url" in problem for problem in refused.value.problems)


async def _client(
    aiohttp_client: ClientFactory, tmp_path: Path, users: dict[str, str] | None = None
) -> TestClient[Any, Any]:
    config = tmp_path / "config.yaml"
    config.write_text("{}\n")
    web_config = WebConfig(users={u: h.encode() for u, h in (users or {}).items()})
    return await aiohttp_client(create_app(load_settings(config), web_config=web_config))


async def test_the_routes_serve_html_with_a_self_only_policy(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    store = client.app[STORE]
    key = JobKey("hw", "a/b <c>")
    store.track(key, "huawei_metastudio", {})
    store.record_success(key, _snapshot(key.job_id, "FAILED", Phase.FAILED), time.time())
    for path in ("/", "/?page=9&sort=nonsense", "/jobs/hw/a%2Fb%20%3Cc%3E"):
        async with client.get(path) as response:
            assert response.status == 200, path
            assert response.content_type == "text/html"
            assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
            assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    async with client.get("/") as response:
        assert 'href="jobs/hw/a%2Fb%20%3Cc%3E"' in await response.text()
    async with client.get("/jobs/hw/nope") as response:
        assert response.status == 404
        assert "not tracked" in await response.text()
    async with client.get("/static/status.css") as response:
        assert response.status == 200
        assert response.content_type == "text/css"
    async with client.get("/static/status.js") as response:
        assert response.content_type == "text/javascript"
    async with client.get("/static/..%2Fstatuspage.py") as response:
        assert response.status == 404


async def test_basic_auth_guards_the_pages(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    password = "page-password"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    client = await _client(aiohttp_client, tmp_path, {"ops": hashed})
    good = "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()
    for path in ("/", "/jobs/a/b", "/static/status.css"):
        async with client.get(path) as response:
            assert response.status == 401, path
    async with client.get("/", headers={"Authorization": good}) as response:
        assert response.status == 200
    async with client.get("/static/status.css", headers={"Authorization": good}) as response:
        assert response.status == 200


def test_a_capped_attention_list_keeps_the_most_urgent_kind() -> None:
    store = Store()
    for index in range(ATTENTION_CAP + 5):
        key = JobKey("hw", f"f{index:03d}")
        store.track(key, "huawei_metastudio", {})
        store.record_success(key, _snapshot(key.job_id, "FAILED", Phase.FAILED), NOW)
    late = JobKey("hw", "z-unreachable")
    store.track(late, "huawei_metastudio", {})
    store.record_failure(late, UpstreamError("503 from the gateway", status="503"), NOW)
    found, total = needs_attention(store.view().jobs, {}, NOW)
    assert found[0].job.key == late
    assert found[0].why == "polls_failing"
    assert len(found) == ATTENTION_CAP
    assert total == ATTENTION_CAP + 6


def test_poll_errors_in_the_last_hour_count_only_that_hour() -> None:
    store = _store()
    key = JobKey("hw", "audit")
    for at in (NOW - 7200, NOW - 3000, NOW - 10):
        store.record_failure(key, UpstreamError("503", status="503"), at)
    assert store.poll_errors_since("hw", "huawei_metastudio", NOW - 3600) == 2
    assert store.poll_errors_since("tc", "tencent_ci", NOW - 3600) == 0
    # The header: 2 in the last hour, 3 since start, 1 job whose polls fail.
    assert re.search(
        r'account=hw">hw</a></td><td>huawei_metastudio</td>.*?'
        r'<td class="num">2</td><td class="num">3</td><td class="num">1</td>',
        _status(store),
        flags=re.DOTALL,
    )
    store.remove_account("hw")
    assert store.poll_errors_since("hw", "huawei_metastudio", 0.0) == 0


@pytest.mark.parametrize("order", ["", "desc"])
@pytest.mark.parametrize("column", SORT_KEYS)
def test_each_page_is_the_slice_a_full_sort_would_give(column: str, order: str) -> None:
    """Only the rows up to the page asked for are ordered: they must be the ones a sort of
    every job puts there (jobs without a value last, ties by account and id)."""
    view = _store(250).view()
    value = _sort_value(column)
    present = sorted(
        ((value(job), job.key) for job in view.jobs if value(job) is not None),
        reverse=order == "desc",
    )
    expected = [key for _, key in present] + sorted(
        job.key for job in view.jobs if value(job) is None
    )
    for page in (1, 2, 3):
        asked = {"sort": column, "order": order, "page": str(page)}
        rows, total = table_page(view.jobs, Query.parse(asked))
        assert [job.key for job in rows] == expected[(page - 1) * 100 : page * 100]
        assert total == len(expected)
