"""Huawei voice training jobs: the exporter's ShowVoiceTrainingJob and ListVoiceTrainingJob
requests (held to the official SDK's signer, query strings included), their parsing, and the
config, registration and refresh rules of `jobs[].kind` and `discover`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from aiohttp import web
from huaweicloudsdkmetastudio.v1.model import (
    AssessProperty,
    AssessResult,
    ListVoiceTrainingJobResponse,
    TrainingJobInfo,
)
from hypothesis import given, settings
from pydantic import SecretStr

from exporter.accounts import HuaweiAccount, HuaweiCredentials, HuaweiDiscovery
from exporter.config import ConfigError, JobConfig, Settings, load_settings
from exporter.lifecycle import Conflict, InvalidKind, Lifecycle
from exporter.model import Phase, ResponseParseError
from exporter.providers.base import JobList
from exporter.providers.huawei_metastudio import (
    HuaweiMetaStudio,
    parse_training_job,
    parse_training_list,
)
from exporter.signing import huawei
from exporter.states import HUAWEI_TABLE
from exporter.store import JobKey, Store
from tests.support import ServerFactory
from tests.test_signing_huawei import _dates, _headers, _hosts, _keys, _paths, _query, sdk_sign

T = TypeVar("T")
PROJECT = "3f0924078d1b471c884a5383d4dec9fa"
JOB = "8c6e0a3e-5a4b-4f7e-9d2c-1b0a9f8e7d6c"


def _info(**fields: Any) -> dict[str, Any]:
    """A TrainingJobInfo as the SDK's own model serialises it (its attribute map, its types)."""
    base: dict[str, Any] = {
        "job_id": JOB,
        "job_type": "BASIC",
        "voice_name": "warm-narrator",
        "language": "CN",
        "state": "PROCESSING",
        "reject_times": 0,
        "create_time": 1_700_000_000_000,
        "lastupdate_time": 1_700_003_600_000,
        "tag": "NEWS",
        "batch_name": "autumn",
    }
    base.update(fields)
    model = TrainingJobInfo(**{k: v for k, v in base.items() if k != "assess_result"})
    document = {k: v for k, v in model.to_dict().items() if v is not None}
    if "assess_result" in base:
        document["assess_result"] = base["assess_result"]
    return document


# -- signing -------------------------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(host=_hosts, path=_paths, query=_query, headers=_headers, ak=_keys, sk=_keys, when=_dates)
def test_the_get_signer_signs_a_query_as_the_official_sdk_does(
    host: str,
    path: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    ak: str,
    sk: str,
    when: datetime,
) -> None:
    signer = huawei.GetSigner(host=host, headers=headers, access_key=ak, secret_key=sk)
    theirs = sdk_sign("GET", host, path, query, headers, b"", ak, sk, when)
    assert signer.sign(path, when, query)["Authorization"] == theirs["Authorization"]


async def _answering(
    aiohttp_server: ServerFactory,
    answer: Callable[[web.Request], dict[str, Any]],
    call: Callable[[HuaweiMetaStudio], Awaitable[T]],
    **discover: Any,
) -> T:
    """What `call` returns from a provider (AK/SK, an app user id, `discover`) whose endpoint
    answers every GET with `answer(request)`."""

    async def respond(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(answer(request)), content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", respond)
    server = await aiohttp_server(app)
    account = HuaweiAccount(
        provider="huawei_metastudio",
        region="cn-north-4",
        project_id=PROJECT,
        endpoint=str(server.make_url("/")),
        app_user_id="user-7",
        discover=HuaweiDiscovery(**discover),
    )
    credentials = HuaweiCredentials(access_key=SecretStr("ak-1"), secret_key=SecretStr("sk-1"))
    async with aiohttp.ClientSession() as session:
        provider = HuaweiMetaStudio(
            account="hw",
            config=account,
            credentials=credentials,
            session=session,
            timeout=5,
            now=time.time,
        )
        return await call(provider)


async def _sent(
    aiohttp_server: ServerFactory,
    body: dict[str, Any],
    call: Callable[[HuaweiMetaStudio], Awaitable[object]],
    **discover: Any,
) -> web.Request:
    """The one request the provider sends for `call`, answered with `body`."""
    captured: list[web.Request] = []

    def record(request: web.Request) -> dict[str, Any]:
        captured.append(request)
        return body

    await _answering(aiohttp_server, record, call, **discover)
    (request,) = captured
    return request


def _resigned_by_the_sdk(request: web.Request) -> str:
    """huaweicloudsdkcore's Signer, given what arrived (path, every query pair, the signed
    headers) at the moment we signed: the Authorization it computes."""
    auth = huawei.parse_authorization(request.headers["Authorization"])
    assert auth is not None
    when = huawei.parse_date(request.headers[huawei.DATE_HEADER])
    assert when is not None
    headers = {
        name: request.headers[name]
        for name in auth.signed_headers
        if name not in ("x-sdk-date", "host")
    }
    signed = sdk_sign(
        "GET",
        request.headers["Host"],
        request.path,
        list(request.query.items()),
        headers,
        b"",
        "ak-1",
        "sk-1",
        when,
    )
    return signed["Authorization"]


LIST_ANSWER = {"count": 0, "jobs": []}


@pytest.mark.parametrize(
    ("discover", "call", "query"),
    [
        (
            {},
            lambda p: p.list_jobs(1.7e9, None, job_type="", states=HUAWEI_TABLE.unfinished),
            {
                "offset": "0",
                "limit": "100",
                "state": "CREATING,SYSTEM_AUDITING,AUDITING,WAITING_SPLIT,SPLITTING,"
                "SPLIT_FAILED,ANNOTATING,WAITING,PROCESSING,RESULT_REVIEW,AUDIT_FAILED,"
                "USER_RESULT_REVIEW,USER_REVIEW_REJECT,UPLOADING",
                "sort_key": "create_time",
                "sort_dir": "desc",
            },
        ),
        (
            {"tag": "NEWS", "batch_name": "autumn 2026/β", "page_size": 50},
            lambda p: p.list_jobs(1.7e9, "150", job_type="FLEXUS", states=["FAILED"]),
            {
                "offset": "150",
                "limit": "50",
                "state": "FAILED",
                "job_type": "FLEXUS",
                "tag": "NEWS",
                "batch_name": "autumn 2026/β",
                "sort_key": "create_time",
                "sort_dir": "desc",
            },
        ),
    ],
)
async def test_every_list_request_has_the_sdks_query_and_verifies_with_its_signer(
    aiohttp_server: ServerFactory, discover: dict[str, Any], call: Any, query: dict[str, str]
) -> None:
    """MetaStudioClient.list_voice_training_job's path and query names, signed as its Signer
    signs them (the query included)."""
    request = await _sent(aiohttp_server, LIST_ANSWER, call, **discover)
    assert request.path == f"/v1/{PROJECT}/voice-training-manage/user/jobs"
    assert dict(request.query) == query
    assert len(request.query) == len(query)  # each name once
    assert request.headers["Authorization"] == _resigned_by_the_sdk(request)
    assert request.headers["X-App-UserId"] == "user-7"


async def test_a_training_look_up_takes_the_training_path_and_verifies_with_the_sdk(
    aiohttp_server: ServerFactory,
) -> None:
    request = await _sent(
        aiohttp_server, _info(), lambda p: p.fetch_many([JOB], {}, {JOB: "voice_training"})
    )
    assert request.path == f"/v1/{PROJECT}/voice-training-manage/user/jobs/{JOB}"
    assert not request.query
    assert request.headers["Authorization"] == _resigned_by_the_sdk(request)


async def test_a_job_without_a_kind_is_a_short_job(aiohttp_server: ServerFactory) -> None:
    request = await _sent(aiohttp_server, {"state": "WAITING"}, lambda p: p.fetch_many([JOB], {}))
    assert request.path == f"/v1/{PROJECT}/voice-training-manage/user/short-jobs/{JOB}"


# -- parsing -------------------------------------------------------------------------------


def test_a_training_job_parses_into_the_snapshot_a_short_job_would_give() -> None:
    assess = AssessResult(
        snr=AssessProperty(expected=">=20", actual="31", status=0, suggestion="ok"),
        suggestion="good",
    ).to_dict()
    body = orjson.dumps(
        _info(
            state="AUDIT_FAILED",
            reject_times=1,
            job_failed_code="MSS.20010001",
            job_failed_reason="recording 3 is too noisy",
            assess_result={k: v for k, v in assess.items() if v is not None},
        )
    )
    snapshot = parse_training_job(body, JOB)
    assert (snapshot.job_id, snapshot.job_type, snapshot.state) == (JOB, "BASIC", "AUDIT_FAILED")
    assert (snapshot.phase, snapshot.terminal) == (Phase.FAILED, False)
    assert (snapshot.failure_code, snapshot.failure_reason) == (
        "MSS.20010001",
        "recording 3 is too noisy",
    )
    assert (snapshot.created_at, snapshot.updated_at) == (1_700_000_000.0, 1_700_003_600.0)
    assert dict(snapshot.extra) == {
        "voice_name": "warm-narrator",
        "language": "CN",
        "reject_times": "1",
        "tag": "NEWS",
        "batch_name": "autumn",
    }
    (snr,) = snapshot.assessments
    assert (snr.metric, snr.actual_value, snr.expected_min, snr.status) == ("snr", 31.0, 20.0, 0)
    assert snapshot.suggestion == "good"
    assert not snapshot.parse_errors


def test_a_succeeded_training_job_is_terminal_with_its_asset_and_duration() -> None:
    snapshot = parse_training_job(orjson.dumps(_info(state="SUCCEED", asset_id="asset-9")), JOB)
    assert (snapshot.phase, snapshot.terminal, snapshot.duration) == (
        Phase.SUCCEEDED,
        True,
        3600.0,
    )
    assert dict(snapshot.extra)["asset_id"] == "asset-9"
    assert snapshot.failure_code is None


def test_a_list_page_parses_every_entry_and_skips_a_broken_one() -> None:
    page: dict[str, Any] = {"count": ListVoiceTrainingJobResponse(count=7).count}
    page["jobs"] = [
        _info(job_id="a"),
        {"job_id": "b"},  # no state
        "not an object",
        _info(job_id="c", state="WAITING", job_type="FLEXUS"),
    ]
    count, entries, snapshots = parse_training_list(orjson.dumps(page))
    assert (count, entries) == (7, 4)
    assert [(s.job_id, s.job_type, s.phase) for s in snapshots] == [
        ("a", "BASIC", Phase.RUNNING),
        ("c", "FLEXUS", Phase.PENDING),
    ]


@pytest.mark.parametrize(
    "body", [b"[]", b"{}", b'{"count": 1}', b'{"count": -1, "jobs": []}', b"{not json"]
)
def test_a_broken_list_answer_is_one_parse_error(body: bytes) -> None:
    with pytest.raises(ResponseParseError):
        parse_training_list(body)


async def test_pages_follow_offsets_until_count_and_old_jobs_are_left_out(
    aiohttp_server: ServerFactory,
) -> None:
    """The token is the next offset; the last page has none; jobs created before `since` are
    dropped here, since the list's own time filter has no documented format."""
    answers = {
        "0": {"count": 3, "jobs": [_info(job_id="new", create_time=2_000), _info(job_id="x")]},
        "2": {"count": 3, "jobs": [_info(job_id="old", create_time=1_000)]},
    }

    async def both_pages(provider: HuaweiMetaStudio) -> tuple[JobList, JobList]:
        first = await provider.list_jobs(1_500, job_type="")
        return first, await provider.list_jobs(1_500, first.next_token, job_type="")

    first, second = await _answering(
        aiohttp_server, lambda request: answers[request.query["offset"]], both_pages
    )
    assert (first.next_token, second.next_token) == ("2", None)
    # create_time 1_700_000_000_000 is milliseconds, far after `since`.
    assert [job.job_id for job in first.jobs] == ["new", "x"]
    assert [job.job_id for job in second.jobs] == []


# -- config and registration ------------------------------------------------------------


HUAWEI = {"provider": "huawei_metastudio", "region": "cn-north-4", "project_id": PROJECT}
TENCENT = {"provider": "tencent_ci", "bucket": "b-1250000000", "region": "ap-beijing"}


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    return raised.value.problems


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "jobs:\n  - {account: tc, id: j1, kind: voice_training}\n",
            "jobs[0].kind: tencent_ci jobs have no kind: remove it",
        ),
        (
            "jobs:\n  - {account: hw, id: j1, kind: training}\n",
            "jobs[0].kind: unknown kind 'training' for huawei_metastudio "
            "(known: short_job, voice_training)",
        ),
        (
            "  hw2: {provider: huawei_metastudio, region: r, project_id: p, "
            "discover: {kind: short_job}}\n",
            "accounts.hw2.discover.kind: MetaStudio lists voice training jobs only",
        ),
        (
            "  hw2: {provider: huawei_metastudio, region: r, project_id: p, "
            "discover: {states: [DONE]}}\n",
            "accounts.hw2.discover.states: unknown state 'DONE'",
        ),
        (
            "  hw2: {provider: huawei_metastudio, region: r, project_id: p, "
            "discover: {page_size: 101}}\n",
            "accounts.hw2.discover.page_size: Input should be less than or equal to 100",
        ),
        (
            "  hw2: {provider: huawei_metastudio, region: r, project_id: p, refresh: list}\n",
            "accounts.hw2: refresh: list needs discover (its kind and filters say",
        ),
    ],
)
def test_kind_and_huawei_discovery_mistakes_are_one_line_naming_the_key(
    tmp_path: Path, text: str, problem: str
) -> None:
    accounts = (
        "accounts:\n"
        "  hw: {provider: huawei_metastudio, region: r, project_id: p}\n"
        "  tc: {provider: tencent_ci, bucket: b-1250000000, region: ap-beijing}\n"
    )
    (line,) = _problems(tmp_path, accounts + text)
    assert line.startswith(f"{tmp_path / 'config.yaml'}: {problem}"), line


def test_huawei_discovery_defaults_list_unfinished_training_jobs_and_refresh_by_list() -> None:
    account = HuaweiAccount.model_validate({**HUAWEI, "discover": {}})
    assert account.refresh_mode == "list"
    spec = account.discover
    assert spec is not None
    assert (spec.job_kind, spec.walks, spec.page_size) == ("voice_training", ("",), 100)
    assert not {"SUCCEED", "FAILED"} & set(spec.list_states)
    assert {"AUDIT_FAILED", "USER_REVIEW_REJECT"} <= set(spec.list_states)
    assert spec.lookback == 7 * 86400
    typed = HuaweiDiscovery(job_types=["BASIC", "FLEXUS"])
    assert typed.walks == ("BASIC", "FLEXUS")


def _lifecycle() -> tuple[Lifecycle, Store]:
    store = Store()
    settings = Settings(accounts={"hw": HUAWEI, "tc": TENCENT})  # type: ignore[dict-item]
    providers = {"hw": "huawei_metastudio", "tc": "tencent_ci"}
    return Lifecycle(store, settings, providers), store


def test_a_registration_keeps_its_kind_and_a_repeat_must_name_the_same() -> None:
    lifecycle, store = _lifecycle()
    assert lifecycle.register(JobConfig(account="hw", id="t1", kind="voice_training"))
    assert lifecycle.register(JobConfig(account="hw", id="s1"))
    assert not lifecycle.register(JobConfig(account="hw", id="s1", kind="short_job"))
    assert [store.get(JobKey("hw", job_id)).kind for job_id in ("t1", "s1")] == [  # type: ignore[union-attr]
        "voice_training",
        "short_job",
    ]
    with pytest.raises(Conflict, match="poll_interval or kind"):
        lifecycle.register(JobConfig(account="hw", id="t1"))
    with pytest.raises(InvalidKind, match="tencent_ci jobs have no kind"):
        lifecycle.register(JobConfig(account="tc", id="x", kind="voice_training"))
    assert store.get(JobKey("tc", "x")) is None


def test_a_discovered_training_job_is_tracked_as_a_training_job() -> None:
    lifecycle, store = _lifecycle()
    snapshot = parse_training_job(orjson.dumps(_info()), JOB)
    assert lifecycle.add_discovered("hw", [snapshot], {"team": "voice"}, "voice_training") == 1
    state = store.get(JobKey("hw", JOB))
    assert state is not None
    assert (state.kind, state.source, state.labels) == (
        "voice_training",
        "discovery",
        (("team", "voice"),),
    )


def test_the_time_filter_left_out_is_the_one_the_sdk_has() -> None:
    """create_since/update_since exist in the SDK's request model, with no documented format:
    the exporter never sends them."""
    from huaweicloudsdkmetastudio.v1.model import ListVoiceTrainingJobRequest

    assert {"create_since", "update_since"} <= set(ListVoiceTrainingJobRequest.attribute_map)
    assert datetime.now(UTC).year >= 2026


@pytest.mark.parametrize(
    ("filters", "fields", "walk"),
    [
        ({}, {}, ""),
        ({"job_types": ["BASIC", "FLEXUS"]}, {}, "BASIC"),
        ({"job_types": ["FLEXUS"]}, {}, None),
        ({"tag": "NEWS", "batch_name": "autumn"}, {}, ""),
        ({"tag": "LIVE"}, {}, None),
        ({"batch_name": "spring"}, {}, None),
        ({"tag": "NEWS"}, {"tag": None}, None),
    ],
)
def test_a_refresh_round_covers_only_the_training_jobs_its_walks_list(
    filters: dict[str, Any], fields: dict[str, Any], walk: str | None
) -> None:
    """Which walk's pages show a job decides whether list rounds keep it fresh (refresh.py):
    one the filters leave out must keep its own polls."""
    snapshot = parse_training_job(orjson.dumps(_info(**fields)), JOB)
    assert HuaweiDiscovery(**filters).walk_of(snapshot) == walk
