"""`GET /api/v1/jobs` over real HTTP: pages and their cursor, filters, `all=1`, a streamed body."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from exporter.api import DEFAULT_PAGE, MAX_PAGE
from exporter.app import create_app
from exporter.config import load_settings
from exporter.runtime import RUNTIME
from exporter.simulator.metastudio import MetaStudioSimulator
from exporter.store import JobKey, Store
from tests.conftest import snapshot
from tests.support import ServerFactory

PROJECT = "0123456789abcdef0123456789abcdef"
T = 1_800_000_000.0


async def exporter(aiohttp_server: ServerFactory, tmp_path: Path, url: str) -> TestServer:
    """An exporter with two Huawei accounts, hw and hw2, and no jobs: each test tracks its own in
    the store, so what the list shows is exactly what the test put there."""
    account = f"    provider: huawei_metastudio\n    region: r\n    project_id: {PROJECT}\n"
    path = tmp_path / "config.yaml"
    path.write_text(
        "poll_interval: 1h\naccounts:\n"
        f"  hw:\n{account}    endpoint: {url}\n"
        f"  hw2:\n{account}    endpoint: {url}\n"
        "jobs: []\n"
    )
    environ = {"CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk"}
    return await aiohttp_server(create_app(load_settings(path), environ=environ))


def store(server: TestServer) -> Store:
    return server.app[RUNTIME].store


def track(
    server: TestServer, account: str, job_id: str, state: str | None = None, **labels: str
) -> None:
    key = JobKey(account, job_id)
    store(server).track(key, "huawei_metastudio", labels, source="api")
    if state is not None:
        store(server).record_success(key, snapshot(state, job_id), T)


async def get(server: TestServer, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url(path)) as response,
    ):
        return response.status, orjson.loads(await response.read())


async def ids(server: TestServer, path: str) -> list[str]:
    status, doc = await get(server, path)
    assert status == 200, doc
    return [job["job_id"] for job in doc["jobs"]]


async def walk(server: TestServer, query: str, between: Any = None) -> list[tuple[str, str]]:
    """Every page of `query`, following `next`; `between(page_number)` runs after each page."""
    seen: list[tuple[str, str]] = []
    cursor = None
    for page in range(10_000):
        status, doc = await get(
            server, f"/api/v1/jobs?{query}" + ("" if cursor is None else f"&cursor={cursor}")
        )
        assert status == 200, doc
        seen += [(job["account"], job["job_id"]) for job in doc["jobs"]]
        cursor = doc["next"]
        if cursor is None:
            return seen
        if between is not None:
            between(page)
    raise AssertionError("the cursor never ran out")


@pytest.fixture
async def server(
    five_job_cloud: tuple[MetaStudioSimulator, str], aiohttp_server: ServerFactory, tmp_path: Path
) -> TestServer:
    return await exporter(aiohttp_server, tmp_path, five_job_cloud[1])


async def test_limit_100_walks_1234_jobs_each_once_in_account_then_id_order(
    server: TestServer,
) -> None:
    # Inserted out of order, ids of different lengths: the order is the key's, not insertion's.
    keys = [(account, f"j{n}") for n in range(617) for account in ("hw2", "hw")]
    for account, job_id in reversed(keys):
        track(server, account, job_id)
    seen = await walk(server, "limit=100")
    assert seen == sorted(keys)
    doc = (await get(server, "/api/v1/jobs?limit=100"))[1]
    assert len(doc["jobs"]) == 100
    assert doc["next"] is not None


async def test_a_plain_get_answers_the_first_500_and_a_cursor(server: TestServer) -> None:
    for n in range(DEFAULT_PAGE + 1):
        track(server, "hw", f"job-{n:04}")
    doc = (await get(server, "/api/v1/jobs"))[1]
    assert [j["job_id"] for j in doc["jobs"]] == [f"job-{n:04}" for n in range(DEFAULT_PAGE)]
    following = await ids(server, f"/api/v1/jobs?cursor={doc['next']}")
    assert following == [f"job-{DEFAULT_PAGE:04}"]
    # Exactly a page: no cursor to a page that would be empty.
    store(server).forget(JobKey("hw", f"job-{DEFAULT_PAGE:04}"))
    assert (await get(server, "/api/v1/jobs"))[1]["next"] is None


async def test_jobs_added_and_removed_mid_walk_cause_no_duplicate_and_no_skip(
    server: TestServer,
) -> None:
    for n in range(0, 1000, 2):  # even ids; odd ones arrive during the walk
        track(server, "hw", f"job-{n:04}")
    added, removed = [], []

    def churn(page: int) -> None:
        # Before and after the cursor alike: ones added behind it and ones removed ahead of it.
        for n in (page * 100 + 1, 999 - page * 100, 50):
            if n % 2 and store(server).get(JobKey("hw", f"job-{n:04}")) is None:
                track(server, "hw", f"job-{n:04}")
                added.append(f"job-{n:04}")
        for n in (998 - page * 100, page * 100 + 10):
            key = JobKey("hw", f"job-{n:04}")
            if store(server).get(key) is not None:
                store(server).forget(key)
                removed.append(key.job_id)

    seen = [job_id for _, job_id in await walk(server, "limit=50", churn)]
    assert len(seen) == len(set(seen)), "a job came twice"
    assert seen == sorted(seen)
    throughout = {f"job-{n:04}" for n in range(0, 1000, 2)} - set(removed)
    assert throughout <= set(seen), f"skipped: {sorted(throughout - set(seen))[:5]}"
    # The churn did happen, on both sides.
    assert added
    assert removed


async def test_filters_combine_with_and(server: TestServer) -> None:
    track(server, "hw", "a", "SUCCEED", team="voice")
    track(server, "hw", "b", "FAILED", team="voice")
    track(server, "hw", "c", "SUCCEED", team="video")
    track(server, "hw2", "d", "SUCCEED", team="voice", tier="gold")
    track(server, "hw2", "e", None, team="voice")  # never polled: no state, phase unknown
    track(server, "hw2", "f", "WAITING")
    cases = {
        "": ["a", "b", "c", "d", "e", "f"],
        "account=hw2": ["d", "e", "f"],
        "phase=succeeded": ["a", "c", "d"],
        "phase=unknown": ["e"],
        "state=FAILED": ["b"],
        "state=WAITING": ["f"],
        "state=NOPE": [],
        "label.team=voice": ["a", "b", "d", "e"],
        "label.tier=gold": ["d"],
        "label.team=": [],
        "label.nope=voice": [],
        "account=hw&phase=succeeded": ["a", "c"],
        "account=hw&label.team=voice": ["a", "b"],
        "phase=succeeded&label.team=voice": ["a", "d"],
        "state=SUCCEED&label.team=voice&label.tier=gold": ["d"],
        "account=hw&state=SUCCEED&label.team=voice&limit=1": ["a"],
        "account=nope": [],
    }
    for query, expected in cases.items():
        assert await ids(server, f"/api/v1/jobs?{query}") == expected, query
    # A filtered walk pages over the matches only.
    assert await walk(server, "label.team=voice&limit=1") == [
        ("hw", "a"),
        ("hw", "b"),
        ("hw2", "d"),
        ("hw2", "e"),
    ]


def cursor_of(*parts: Any) -> str:
    """A cursor as the API spells one, around any JSON: `cursor_of(x)` wraps x in a list."""
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


def encoded(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit: '0' is not a whole number from 1 to 5000"),
        ("limit=-3", "limit: '-3'"),
        (f"limit={MAX_PAGE + 1}", f"limit: '{MAX_PAGE + 1}'"),
        ("limit=ten", "limit: 'ten'"),
        ("limit=1.5", "limit: '1.5'"),
        ("limit=", "limit: ''"),
        ("limit=%D9%A3", "limit: '\u0663'"),  # a digit, but not an ASCII one
        ("cursor=!!!", "cursor: '!!!' is not a cursor this API gave out"),
        ("cursor=", "cursor: ''"),
        (f"cursor={cursor_of('hw')}", "cursor:"),
        (f"cursor={cursor_of('hw', 3)}", "cursor:"),
        (f"cursor={encoded({'a': 'hw', 'b': 'a'})}", "cursor:"),
        (f"cursor={encoded('hw')}", "cursor:"),
        ("phase=bogus", "unknown phase 'bogus'"),
        ("state=", "state: empty"),
        ("label.=voice", "label.: name the label"),
        ("all=yes", "all: 'yes'"),
        ("all=1&limit=10", "all: all=1 lists every job; it takes no limit or cursor"),
        (f"all=1&cursor={cursor_of('hw', 'a')}", "it takes no limit or cursor"),
    ],
)
async def test_a_bad_parameter_is_a_400_naming_it(
    server: TestServer, query: str, message: str
) -> None:
    track(server, "hw", "a", "SUCCEED")
    status, doc = await get(server, f"/api/v1/jobs?{query}")
    assert status == 400
    assert message in doc["error"]
    assert "\n" not in doc["error"]


async def test_a_cursor_names_a_key_not_a_job_so_one_of_a_forgotten_job_still_works(
    server: TestServer,
) -> None:
    for job_id in ("a", "b", "c"):
        track(server, "hw", job_id)
    doc = (await get(server, "/api/v1/jobs?limit=1"))[1]
    store(server).forget(JobKey("hw", "a"))
    assert await ids(server, f"/api/v1/jobs?cursor={doc['next']}") == ["b", "c"]
    assert await ids(server, f"/api/v1/jobs?cursor={cursor_of('hw', 'bb')}") == ["c"]


async def test_all_1_answers_every_matching_job_unpaged(server: TestServer) -> None:
    for n in range(MAX_PAGE + 7):
        track(server, "hw" if n % 3 else "hw2", f"job-{n:05}", team="voice" if n % 2 else "x")
    status, doc = await get(server, "/api/v1/jobs?all=1")
    assert status == 200
    assert doc["next"] is None
    every = sorted(("hw" if n % 3 else "hw2", f"job-{n:05}") for n in range(MAX_PAGE + 7))
    assert [(j["account"], j["job_id"]) for j in doc["jobs"]] == every
    assert doc["jobs"][0] == (await get(server, "/api/v1/jobs/hw/job-00001"))[1]
    filtered = await ids(server, "/api/v1/jobs?all=1&account=hw2&label.team=voice")
    assert filtered == [f"job-{n:05}" for n in range(MAX_PAGE + 7) if n % 3 == 0 and n % 2]


async def test_each_document_is_the_one_job_route_gives(server: TestServer) -> None:
    track(server, "hw", "a", "FAILED", team="voice")
    track(server, "hw", "b")
    doc = (await get(server, "/api/v1/jobs"))[1]
    for job in doc["jobs"]:
        assert job == (await get(server, f"/api/v1/jobs/hw/{job['job_id']}"))[1]
    assert doc["jobs"][0]["failure"] is not None


async def test_a_large_page_is_streamed_in_chunks_without_a_content_length(
    server: TestServer,
) -> None:
    for n in range(MAX_PAGE):
        track(server, "hw", f"job-{n:05}", team="voice")
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url(f"/api/v1/jobs?limit={MAX_PAGE}")) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert "Content-Length" not in response.headers
        assert response.headers["Transfer-Encoding"] == "chunked"
        # HTTP chunks, as the server wrote them (a network read may split or join them).
        chunks, pending = [], b""
        async for data, end_of_chunk in response.content.iter_chunks():
            pending += data
            if end_of_chunk:
                chunks.append(pending)
                pending = b""
    body = b"".join(chunks) + pending
    # A slice of the page at a time: never the whole JSON text in one piece.
    assert len(chunks) >= 10
    assert max(len(chunk) for chunk in chunks) < len(body) / 10
    doc = orjson.loads(body)
    assert len(doc["jobs"]) == MAX_PAGE
    assert doc["next"] is None


async def test_an_empty_list_is_still_a_document(server: TestServer) -> None:
    status, doc = await get(server, "/api/v1/jobs")
    assert (status, doc) == (200, {"jobs": [], "next": None})
    assert (await get(server, "/api/v1/jobs?all=1"))[1] == {"jobs": [], "next": None}
