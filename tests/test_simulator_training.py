"""The MetaStudio simulator's voice training jobs answer as the cloud does.

The official SDK signs ShowVoiceTrainingJob and ListVoiceTrainingJob requests over loopback and
parses every answer the training scripts produce; the list API pages, filters, sorts and refuses
bad parameters; the gateway refuses a query changed after signing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import (
    ClientRequestException,
    ServiceResponseException,
)
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.utils.http_utils import sanitize_for_serialization
from huaweicloudsdkmetastudio.v1 import (
    ListVoiceTrainingJobRequest,
    MetaStudioClient,
    ShowShortJobRequest,
    ShowVoiceTrainingJobRequest,
)

from exporter.simulator import (
    DEMO_TRAINING_JOBS,
    MetaStudioSimulator,
    Script,
    demo_simulator,
)
from exporter.simulator import scripts as sc
from exporter.simulator import training_scripts as ts
from exporter.simulator.__main__ import _parse_args
from exporter.simulator.faults import Fault, FaultKind
from exporter.simulator.metastudio_training import DEMO_TRAINING_SPECS
from tests.support import T0, FakeClock, serving, states_over
from tests.test_signing_huawei import sdk_sign

PROJECT = "3f0924078d1b471c884a5383d4dec9fa"
AK = "SIMTESTACCESSKEY0001"
SK = "sim-test-secret-key-0001"
LIST_PATH = f"/v1/{PROJECT}/voice-training-manage/user/jobs"
FAILED_STATES = {"AUDIT_FAILED", "SPLIT_FAILED", "USER_REVIEW_REJECT", "FAILED"}
TOP_KEYS = {
    "job_type",
    "job_id",
    "app_user_id",
    "voice_name",
    "sex",
    "language",
    "state",
    "reject_times",
    "create_time",
    "lastupdate_time",
    "allocated_resource",
    "output_language",
    "is_remake",
    "is_ondemand_resource",
}
SHORT = (("CREATING", 10.0), ("PROCESSING", 20.0), ("SUCCEED", 30.0))  # 60 s per pass


def make_sim(clock: Callable[[], float], speed: float = 1.0) -> MetaStudioSimulator:
    return MetaStudioSimulator(project_id=PROJECT, credentials={AK: SK}, clock=clock, speed=speed)


def sdk_client(base_url: str, *, secret_key: str = SK) -> MetaStudioClient:
    config = HttpConfig.get_default_config()
    config.timeout = (2, 5)
    return (
        MetaStudioClient.new_builder()
        .with_credentials(BasicCredentials(AK, secret_key, PROJECT))
        .with_http_config(config)
        .with_endpoints([base_url])
        .build()
    )


async def show(client: MetaStudioClient, job_id: str) -> Any:
    request = ShowVoiceTrainingJobRequest(job_id=job_id)
    return await asyncio.to_thread(client.show_voice_training_job, request)


async def listing(client: MetaStudioClient, **query: Any) -> Any:
    request = ListVoiceTrainingJobRequest(**query)
    return await asyncio.to_thread(client.list_voice_training_job, request)


async def list_ids(client: MetaStudioClient, **query: Any) -> list[str]:
    """Every matching job's id, walking pages of 100 until `count`, as discovery would."""
    found: list[str] = []
    while True:
        page = await listing(client, offset=len(found), limit=100, **query)
        found += [job.job_id for job in page.jobs]
        if len(found) >= page.count or not page.jobs:
            assert len(found) == page.count
            return found


async def raw_get(
    base_url: str, path: str, clock: Callable[[], float], query: Sequence[tuple[str, str]] = ()
) -> tuple[int, Any]:
    """GET signed by the official SDK's signer with the simulator's own clock."""
    host = base_url.removeprefix("http://")
    headers = {"Content-Type": "application/json", "X-Project-Id": PROJECT}
    when = datetime.fromtimestamp(clock(), UTC)
    signed = sdk_sign("GET", host, path, query, headers, b"", AK, SK, when)
    async with (
        ClientSession() as session,
        session.get(base_url + path, params=list(query), headers=signed) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


def walk_points(script: Script, started: float, speed: float) -> list[tuple[int, float]]:
    """For each step of `script`: its index and a wall moment in the middle of it."""
    points, offset = [], 0.0
    for index, step in enumerate(script.steps):
        points.append((index, started + (offset + step.seconds / 2) / speed))
        offset += step.seconds
    return points


# -- The official SDK parses every answer the scripts produce ----------------------------------


@pytest.mark.parametrize("script", ts.ALL_TRAINING_SCRIPTS, ids=lambda script: script.name)
async def test_official_sdk_parses_every_step_of_every_training_script(
    no_proxy: None, script: Script
) -> None:
    # The SDK signs with the real time: the whole script runs within ten minutes either side
    # of it, inside the gateway's 15-minute window.
    speed = script.seconds / 600
    started = float(int(time.time())) - 300
    clock = FakeClock(started)
    sim = make_sim(clock, speed=speed)
    sim.add_training_job("walker", script, started=started, tag="LIVE", batch_name="b-1")
    sim.add_training_job("walker-ms", script, started=started, millis=True)
    rejections = 0
    async with serving(sim) as base_url:
        client = sdk_client(base_url)
        for index, moment in walk_points(script, started, speed):
            clock.now = moment
            step = script.steps[index]
            if step.state == "AUDIT_FAILED" and script.steps[index - 1].state != "AUDIT_FAILED":
                rejections += 1
            for job_id in ("walker", "walker-ms"):
                parsed = await show(client, job_id)
                status, raw = await raw_get(base_url, f"{LIST_PATH}/{job_id}", clock, query=())
                assert status == 200
                assert sanitize_for_serialization(parsed) == raw
                assert parsed.state == step.state
                assert parsed.reject_times == rejections
                assert set(raw) >= TOP_KEYS
                assert ("asset_id" in raw) is (step.state == "SUCCEED")
                if step.failure is None:
                    assert "job_failed_code" not in raw
                else:
                    assert (parsed.job_failed_code, parsed.job_failed_reason) == (
                        step.failure.code,
                        step.failure.reason,
                    )
                assert ("assess_result" in raw) is (
                    step.state not in {"CREATING", "SYSTEM_AUDITING"}
                )
                listed = await listing(client, job_id=job_id)
                assert listed.count == 1
                assert sanitize_for_serialization(listed.jobs[0]) == raw
            seconds = (await show(client, "walker")).create_time
            millis = (await show(client, "walker-ms")).create_time
            assert (seconds, millis) == (int(started), round(started * 1000))


async def test_official_sdk_parses_every_forced_state(no_proxy: None) -> None:
    clock = FakeClock(float(int(time.time())))
    sim = make_sim(clock)
    sim.add_training_job("forced", ts.TRAINING_HAPPY, started=clock.now - 1000)
    async with serving(sim) as base_url:
        client = sdk_client(base_url)
        for state in sc.DOCUMENTED_STATES:
            sim.set_override("forced", state=state)
            parsed = await show(client, "forced")
            assert parsed.state == state
            assert parsed.lastupdate_time == int(clock.now)
            assert (parsed.job_failed_code is not None) is (state in FAILED_STATES)
            assert (parsed.asset_id is not None) is (state == "SUCCEED")
            assert parsed.reject_times == (1 if state == "AUDIT_FAILED" else 0)
            assert sanitize_for_serialization(parsed) == sim.answer("forced")
            assert await list_ids(client, state=state) == ["forced"]


async def test_a_succeeded_job_reports_its_asset_assessment_and_creation_fields(
    no_proxy: None,
) -> None:
    clock = FakeClock(float(int(time.time())))
    sim = make_sim(clock)
    sim.add_training_job(
        "done",
        ts.TRAINING_HAPPY,
        job_type="FLEXUS",
        tag="EDUCATION",
        batch_name="autumn",
        voice_name="晓晓 voice",
        ondemand_resource=True,
        started=clock.now - ts.TRAINING_HAPPY.seconds + 10,
    )
    async with serving(sim) as base_url:
        job = await show(sdk_client(base_url), "done")
    assert (job.job_type, job.job_id, job.state) == ("FLEXUS", "done", "SUCCEED")
    assert (job.tag, job.batch_name, job.voice_name) == ("EDUCATION", "autumn", "晓晓 voice")
    assert re.fullmatch(r"[0-9a-f]{32}", job.asset_id)
    assert job.sex in ("FEMALE", "MALE")
    assert job.language in ("CN", "EN")
    assert job.is_ondemand_resource is True
    assert job.allocated_resource.charge_mode == "ON_DEMAND"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", job.allocated_resource.expire_time)
    assert job.assess_result.snr.actual == "32.5dB"
    assert job.create_time == int(clock.now) - int(ts.TRAINING_HAPPY.seconds) + 10
    succeeded_at = ts.TRAINING_HAPPY.seconds - ts.TRAINING_HAPPY.steps[-1].seconds
    assert job.lastupdate_time == job.create_time + int(succeeded_at)


# -- The gateway and unknown jobs ---------------------------------------------------------------


@pytest.fixture
async def live(no_proxy: None) -> AsyncIterator[tuple[MetaStudioSimulator, FakeClock, str]]:
    clock = FakeClock(float(int(time.time())))
    sim = make_sim(clock)
    sim.add_job("short", sc.HAPPY_PATH, started=clock.now - 200)
    sim.add_training_job("training", ts.TRAINING_HAPPY, started=clock.now - 200)
    async with serving(sim) as base_url:
        yield sim, clock, base_url


async def test_the_two_kinds_of_job_are_separate_resources(
    live: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    sim, _, base_url = live
    client = sdk_client(base_url)
    assert sim.job_ids() == ["short"]
    assert sim.training_job_ids() == ["training"]
    assert (await show(client, "training")).job_id == "training"
    with pytest.raises(ClientRequestException) as caught:
        await show(client, "short")
    assert (caught.value.status_code, caught.value.error_code) == (404, "MSS.00000003")
    assert caught.value.error_msg == "job short does not exist"
    with pytest.raises(ClientRequestException) as caught:
        await asyncio.to_thread(client.show_short_job, ShowShortJobRequest(job_id="training"))
    assert (caught.value.status_code, caught.value.error_code) == (404, "MSS.00000003")
    assert (await listing(client)).count == 1


async def test_an_unknown_or_removed_training_job_gets_404(
    live: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    sim, _, base_url = live
    client = sdk_client(base_url)
    with pytest.raises(ClientRequestException) as caught:
        await show(client, "no-such-job")
    assert (caught.value.status_code, caught.value.error_code) == (404, "MSS.00000003")
    sim.remove_job("training")
    with pytest.raises(ClientRequestException) as caught:
        await show(client, "training")
    assert caught.value.status_code == 404
    assert (await listing(client)).count == 0


async def test_a_wrong_secret_key_is_refused_on_both_training_paths(
    live: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    _, _, base_url = live
    client = sdk_client(base_url, secret_key="not-the-key")
    for call in (show(client, "training"), listing(client, limit=5)):
        with pytest.raises(ClientRequestException) as caught:
            await call
        assert (caught.value.status_code, caught.value.error_code) == (401, "APIGW.0301")
        assert "not-the-key" not in caught.value.error_msg


async def test_a_query_changed_after_signing_is_refused(
    live: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    _, clock, base_url = live
    host = base_url.removeprefix("http://")
    headers = {"Content-Type": "application/json", "X-Project-Id": PROJECT}
    when = datetime.fromtimestamp(clock(), UTC)
    signed_for = [("limit", "10"), ("state", "CREATING,AUDITING")]
    signed = sdk_sign("GET", host, LIST_PATH, signed_for, headers, b"", AK, SK, when)
    async with ClientSession() as session:
        async with session.get(base_url + LIST_PATH, params=signed_for, headers=signed) as resp:
            assert resp.status == 200
        for sent in (
            [("limit", "100"), ("state", "CREATING,AUDITING")],
            [("limit", "10"), ("state", "CREATING,AUDITING"), ("job_type", "BASIC")],
            [("limit", "10")],
        ):
            async with session.get(base_url + LIST_PATH, params=sent, headers=signed) as resp:
                body = await resp.json()
                assert resp.status == 401, sent
                assert body["error_code"] == "APIGW.0301"
                assert "verify aksk signature fail" in body["error_msg"]


async def test_faults_and_the_quota_cover_the_training_paths(
    live: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    sim, clock, base_url = live
    client = sdk_client(base_url)
    sim.faults.set("training", Fault(FaultKind.STATUS, status=503, count=1))
    with pytest.raises(ServiceResponseException) as caught:
        await show(client, "training")
    assert caught.value.status_code == 503
    assert (await show(client, "training")).state == "SYSTEM_AUDITING"
    sim.faults.set(None, Fault(FaultKind.STATUS, status=502, count=1))
    with pytest.raises(ServiceResponseException) as caught:
        await listing(client)
    assert caught.value.status_code == 502
    assert (await listing(client)).count == 1
    # The clock stands still, so the bucket never refills after its one request.
    sim.quota.configure(rate=1.0, burst=1.0)
    assert (await raw_get(base_url, LIST_PATH, clock))[0] == 200
    status, body = await raw_get(base_url, f"{LIST_PATH}/training", clock)
    assert (status, body["error_code"]) == (429, "APIGW.0308")
    assert sim.quota.stats().throttled == 1


# -- Paging, filters and order ------------------------------------------------------------------


@pytest.fixture
async def crowd(no_proxy: None) -> AsyncIterator[tuple[MetaStudioSimulator, FakeClock, str]]:
    """250 training jobs started 160 s apart (job-249 the newest), cycling through job types,
    tags and scripts."""
    clock = FakeClock(float(int(time.time())))
    sim = make_sim(clock)
    for n in range(250):
        sim.add_training_job(
            f"job-{n:03d}",
            ts.ALL_TRAINING_SCRIPTS[n % 4],
            job_type=ts.TRAINING_JOB_TYPES[n % 6],
            tag=None if n % 5 == 0 else ts.JOB_TAGS[n % 7],
            batch_name=f"batch-{n % 3}",
            voice_name=f"voice {n % 10}",
            ondemand_resource=n % 2 == 1,
            started=clock.now - 40_000 + 160 * n,
        )
    async with serving(sim) as base_url:
        yield sim, clock, base_url


def ids(numbers: Sequence[int]) -> list[str]:
    return [f"job-{n:03d}" for n in numbers]


async def test_pages_of_100_cover_250_jobs_once_each(
    crowd: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    _, _, base_url = crowd
    client = sdk_client(base_url)
    pages = [await listing(client, offset=offset, limit=100) for offset in (0, 100, 200, 300)]
    assert [page.count for page in pages] == [250] * 4
    assert [len(page.jobs) for page in pages] == [100, 100, 50, 0]
    walked = [job.job_id for page in pages for job in page.jobs]
    assert walked == ids(range(249, -1, -1))  # newest first by default


async def test_limit_defaults_to_10_and_offset_to_0(
    crowd: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    _, clock, base_url = crowd
    status, body = await raw_get(base_url, LIST_PATH, clock)
    assert status == 200
    assert list(body) == ["count", "jobs"]
    assert body["count"] == 250
    assert [job["job_id"] for job in body["jobs"]] == ids(range(249, 239, -1))
    page = await listing(sdk_client(base_url), offset=245, limit=10)
    assert [job.job_id for job in page.jobs] == ids(range(4, -1, -1))


async def test_every_filter_selects_exactly_its_jobs(
    crowd: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    sim, _, base_url = crowd
    client = sdk_client(base_url)
    everyone = range(250)
    newest_first = sorted(everyone, reverse=True)

    def expected(keep: Callable[[int], bool]) -> list[str]:
        return ids([n for n in newest_first if keep(n)])

    assert await list_ids(client, job_type="THIRD_PARTY") == expected(lambda n: n % 6 == 3)
    assert await list_ids(client, tag="NEWS") == expected(lambda n: n % 5 and n % 7 == 1)
    assert await list_ids(client, batch_name="batch-2") == expected(lambda n: n % 3 == 2)
    assert await list_ids(client, voice_name="voice 7") == expected(lambda n: n % 10 == 7)
    assert await list_ids(client, job_id="job-123") == ["job-123"]
    assert await list_ids(client, job_id="job-999") == []
    assert await list_ids(client, is_ondemand_resource=True) == expected(lambda n: n % 2 == 1)
    assert await list_ids(client, is_ondemand_resource=False) == expected(lambda n: n % 2 == 0)
    combined = await list_ids(client, job_type="BASIC", batch_name="batch-0", tag="LIVE")
    assert combined == expected(lambda n: n % 6 == 0 and n % 3 == 0 and n % 5 and n % 7 == 3)
    assert combined  # the combination is not empty, so the test sees it select
    # States come from the simulator's own truth, not from the answers being tested.
    states = {job_id: sim.state_of(job_id) for job_id in sim.training_job_ids()}
    assert len(set(states.values())) >= 4
    for wanted in ({"FAILED"}, {"SUCCEED", "AUDIT_FAILED"}, {"UPLOADING", "PROCESSING"}):
        chosen = [job_id for job_id in reversed(list(states)) if states[job_id] in wanted]
        assert chosen, wanted
        page = await listing(client, limit=100, state=",".join(sorted(wanted)))
        assert page.count == len(chosen)
        assert [job.job_id for job in page.jobs] == chosen[:100]


async def test_the_ignored_time_filters_change_nothing(
    crowd: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    _, _, base_url = crowd
    client = sdk_client(base_url)
    plain = await list_ids(client, state="FAILED")
    timed = await list_ids(
        client,
        state="FAILED",
        create_since="2020-01-01T00:00:00Z",
        create_until="1",
        update_since="yesterday",
        update_until="2020-01-01",
    )
    assert timed == plain
    assert plain


async def test_sort_key_and_direction_order_the_jobs(
    crowd: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    sim, _, base_url = crowd
    client = sdk_client(base_url)
    assert await list_ids(client, sort_dir="asc") == ids(range(250))
    assert await list_ids(client, sort_key="create_time", sort_dir="desc") == ids(
        range(249, -1, -1)
    )
    by_update = await listing(client, limit=100, sort_key="update_time", sort_dir="asc")
    updates = [job.lastupdate_time for job in by_update.jobs]
    assert updates == sorted(updates)
    assert [job.job_id for job in by_update.jobs] != ids(range(100))  # a different order
    newest = await listing(client, limit=1, sort_key="update_time", sort_dir="desc")
    latest = max(
        (sim.transitions(job_id)[-1][1], job_id) for job_id in reversed(sim.training_job_ids())
    )
    assert newest.jobs[0].lastupdate_time == int(latest[0])


@pytest.mark.parametrize(
    ("query", "culprit", "shown"),
    [
        ({"limit": 0}, "limit", "'0'"),
        ({"limit": 101}, "limit", "'101'"),
        ({"offset": -1}, "offset", "'-1'"),
        ({"state": "RUNNING"}, "state", "'RUNNING'"),
        ({"state": "SUCCEED,"}, "state", "''"),
        ({"state": "SUCCEED,FAILD"}, "state", "'FAILD'"),
        ({"job_type": "PREMIUM"}, "job_type", "'PREMIUM'"),
        ({"tag": "GAMING"}, "tag", "'GAMING'"),
        ({"sort_key": "job_id"}, "sort_key", "'job_id'"),
        ({"sort_dir": "up"}, "sort_dir", "'up'"),
        ({"is_ondemand_resource": "maybe"}, "is_ondemand_resource", "'maybe'"),
    ],
)
async def test_a_bad_parameter_gets_400_naming_it(
    live: tuple[MetaStudioSimulator, FakeClock, str],
    query: dict[str, Any],
    culprit: str,
    shown: str,
) -> None:
    _, _, base_url = live
    with pytest.raises(ClientRequestException) as caught:
        await listing(sdk_client(base_url), **query)
    assert (caught.value.status_code, caught.value.error_code) == (400, "MSS.00000002")
    assert f"parameter {culprit} " in caught.value.error_msg
    assert caught.value.error_msg.endswith(shown)


@pytest.mark.parametrize(
    "query", [[("limit", "ten")], [("limit", "1e2")], [("offset", "")], [("limit", "\u0661\u0660")]]
)
async def test_a_limit_or_offset_that_is_not_a_plain_integer_gets_400(
    live: tuple[MetaStudioSimulator, FakeClock, str], query: list[tuple[str, str]]
) -> None:
    _, clock, base_url = live
    status, body = await raw_get(base_url, LIST_PATH, clock, query)
    assert status == 400
    assert list(body) == ["error_code", "error_msg"]


async def test_limits_1_and_100_are_accepted(
    live: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    _, _, base_url = live
    client = sdk_client(base_url)
    assert len((await listing(client, limit=1)).jobs) == 1
    assert len((await listing(client, limit=100)).jobs) == 1


# -- Scripts, overrides and the truth ------------------------------------------------------------


def test_the_tour_visits_every_state_but_succeed_and_ends_failed() -> None:
    visited = [step.state for step in ts.TRAINING_TOUR.steps]
    assert set(visited) == set(sc.DOCUMENTED_STATES) - {"SUCCEED"}
    assert visited.count("AUDIT_FAILED") == 1
    assert visited[-1] == "FAILED"
    for state in ("AUDIT_FAILED", "SPLIT_FAILED", "USER_RESULT_REVIEW", "USER_REVIEW_REJECT"):
        after = visited[visited.index(state) + 1]
        assert after != "FAILED", state  # the job goes back, not on to the end
    assert len(sc.DOCUMENTED_STATES) == len(set(sc.DOCUMENTED_STATES)) == 16


def test_every_training_script_uses_sdk_states_and_explains_its_failures() -> None:
    for script in ts.ALL_TRAINING_SCRIPTS:
        for step in script.steps:
            assert step.state in sc.DOCUMENTED_STATES, (script.name, step.state)
            assert (step.failure is not None) is (step.state in FAILED_STATES), step
            if step.failure is not None:
                assert re.fullmatch(r"MSS\.\d{8}", step.failure.code)
    assert [script.steps[-1].state for script in ts.ALL_TRAINING_SCRIPTS] == [
        "SUCCEED",
        "SUCCEED",
        "FAILED",
        "FAILED",
    ]


def test_the_audit_bounce_rejects_once_and_goes_back_to_auditing() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_training_job("bounce", ts.TRAINING_AUDIT_BOUNCE, started=T0)
    seen = []
    for index, moment in walk_points(ts.TRAINING_AUDIT_BOUNCE, T0, 1.0):
        clock.now = moment
        answer = sim.answer("bounce")
        seen.append((answer["state"], answer["reject_times"]))
        assert answer["state"] == ts.TRAINING_AUDIT_BOUNCE.steps[index].state
    assert seen[:6] == [
        ("CREATING", 0),
        ("SYSTEM_AUDITING", 0),
        ("AUDITING", 0),
        ("AUDIT_FAILED", 1),
        ("AUDITING", 1),
        ("WAITING_SPLIT", 1),
    ]
    assert seen[-1] == ("SUCCEED", 1)
    states = [state for state, _ in sim.transitions("bounce")]
    assert states.count("AUDIT_FAILED") == 1
    assert states[-1] == "SUCCEED"


def test_a_looping_training_job_starts_over_with_no_rejections() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_training_job("loop", ts.TRAINING_AUDIT_BOUNCE, loop=True, started=T0)
    clock.now = T0 + ts.TRAINING_AUDIT_BOUNCE.seconds - 1
    assert (sim.state_of("loop"), sim.answer("loop")["reject_times"]) == ("SUCCEED", 1)
    clock.now = T0 + ts.TRAINING_AUDIT_BOUNCE.seconds + 1
    answer = sim.answer("loop")
    assert (answer["state"], answer["reject_times"]) == ("CREATING", 0)
    assert answer["create_time"] == int(T0 + ts.TRAINING_AUDIT_BOUNCE.seconds)


def test_overrides_and_transitions_work_for_training_ids() -> None:
    clock = FakeClock(T0)
    sim = make_sim(clock)
    sim.add_training_job("t", SHORT, started=T0)
    clock.now = T0 + 15
    sim.set_override("t", state="AUDIT_FAILED")
    clock.now = T0 + 100
    assert sim.state_of("t") == "AUDIT_FAILED"
    answer = sim.answer("t")
    assert (answer["reject_times"], answer["lastupdate_time"]) == (1, int(T0) + 15)
    assert answer["job_failed_code"] == ts.TRAINING_AUDIT_REJECTED.code
    assert sim.transitions("t") == [
        ("CREATING", T0),
        ("PROCESSING", T0 + 10),
        ("AUDIT_FAILED", T0 + 15),
    ]
    sim.clear_override("t")
    assert sim.state_of("t") == "SUCCEED"
    assert sim.answer("t")["reject_times"] == 0


async def test_a_replaced_body_shows_on_its_job_path_but_not_in_lists(
    live: tuple[MetaStudioSimulator, FakeClock, str],
) -> None:
    sim, clock, base_url = live
    sim.set_override("training", body=b'{"state": ', status=200)
    path = f"{LIST_PATH}/training"
    host = base_url.removeprefix("http://")
    headers = {"Content-Type": "application/json", "X-Project-Id": PROJECT}
    signed = sdk_sign(
        "GET", host, path, (), headers, b"", AK, SK, datetime.fromtimestamp(clock(), UTC)
    )
    async with ClientSession() as session, session.get(base_url + path, headers=signed) as resp:
        assert (resp.status, await resp.read()) == (200, b'{"state": ')
    status, body = await raw_get(base_url, LIST_PATH, clock)
    assert status == 200
    assert body["jobs"] == [sim.answer("training")]
    assert body["jobs"][0]["state"] == "SYSTEM_AUDITING"


def test_add_training_job_refuses_taken_ids_and_unknown_enum_values() -> None:
    sim = make_sim(FakeClock(T0))
    sim.add_job("short", SHORT)
    sim.add_training_job("training", SHORT)
    for taken in ("short", "training"):
        with pytest.raises(ValueError, match="already exists"):
            sim.add_training_job(taken, SHORT)
    with pytest.raises(ValueError, match="already exists"):
        sim.add_job("training", SHORT)
    with pytest.raises(ValueError, match="job_type must be one of BASIC"):
        sim.add_training_job("x", SHORT, job_type="VOICE_ASSESS")
    with pytest.raises(ValueError, match="tag must be one of ECOMMERCE"):
        sim.add_training_job("y", SHORT, tag="GAMING")
    assert sim.training_job_ids() == ["training"]


# -- The demo ------------------------------------------------------------------------------------


def _demo(clock: FakeClock, **sizes: int) -> MetaStudioSimulator:
    return demo_simulator(project_id=PROJECT, access_key=AK, secret_key=SK, clock=clock, **sizes)


def test_demo_adds_eight_looping_training_jobs_with_fixed_ids() -> None:
    sim = _demo(FakeClock(T0))
    assert sim.training_job_ids() == list(DEMO_TRAINING_JOBS)
    assert len(DEMO_TRAINING_JOBS) == 8
    assert len(sim.job_ids()) == 8
    assert not set(sim.job_ids()) & set(DEMO_TRAINING_JOBS)
    uuid_like = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(uuid_like.fullmatch(job_id) for job_id in DEMO_TRAINING_JOBS)
    assert {spec.script for spec in DEMO_TRAINING_SPECS} == set(ts.ALL_TRAINING_SCRIPTS)
    assert len({spec.job_type for spec in DEMO_TRAINING_SPECS}) == 6
    labelled = [spec for spec in DEMO_TRAINING_SPECS if spec.tag and spec.batch_name]
    assert len(labelled) == 2
    assert any(spec.millis for spec in DEMO_TRAINING_SPECS)


def test_demo_training_jobs_show_many_states_at_start_and_change_within_ten_seconds() -> None:
    clock = FakeClock(T0)
    sim = _demo(clock, jobs=0)
    assert sim.job_ids() == []

    class TrainingOnly:
        def job_ids(self) -> list[str]:
            return sim.training_job_ids()

        def state_of(self, job_id: str) -> str:
            return sim.state_of(job_id)

    at_start, seen, changed = states_over(TrainingOnly(), clock, seconds=10)
    assert len(at_start) == 8
    assert {"AUDIT_FAILED", "SPLIT_FAILED", "FAILED", "SUCCEED"} <= at_start
    assert changed == set(DEMO_TRAINING_JOBS)
    assert len(seen) >= 12


def test_demo_scales_to_many_training_jobs_with_distinct_deterministic_ids() -> None:
    many = _demo(FakeClock(T0), training_jobs=500).training_job_ids()
    assert len(set(many)) == 500
    assert many[:8] == list(DEMO_TRAINING_JOBS)
    assert _demo(FakeClock(T0), training_jobs=500).training_job_ids() == many
    assert _demo(FakeClock(T0), training_jobs=0).training_job_ids() == []


def test_the_simulator_command_takes_a_number_of_training_jobs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _parse_args([]).training_jobs == len(DEMO_TRAINING_JOBS)
    assert _parse_args(["--training-jobs", "500"]).training_jobs == 500
    for argv, message in (
        (["--training-jobs", "-1"], "--training-jobs must not be negative"),
        (["--cloud", "tencent", "--training-jobs", "3"], "--training-jobs needs --cloud huawei"),
    ):
        with pytest.raises(SystemExit):
            _parse_args(argv)
        assert message in capsys.readouterr().err
