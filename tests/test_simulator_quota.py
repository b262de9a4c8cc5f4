"""The simulated clouds' request quota: one token bucket per account, refused with the cloud's
own throttling answer, and counted so that a bench can read how often it refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from defusedxml import ElementTree

from exporter.simulator import STATS_PATH, MetaStudioSimulator, Quota, TencentCISimulator
from exporter.simulator.__main__ import _parse_args
from tests.support import FakeClock
from tests.test_simulator_metastudio import SHORT
from tests.test_simulator_metastudio import fetch as fetch_huawei
from tests.test_simulator_metastudio import make_sim as make_huawei
from tests.test_simulator_tencent import get as get_tencent
from tests.test_simulator_tencent import make_sim as make_tencent

Client = TestClient[web.Request, web.Application]


async def huawei_client(
    clock: FakeClock, aiohttp_client: Callable[..., Any], rate: float | None, burst: float | None
) -> tuple[MetaStudioSimulator, Client]:
    sim = make_huawei(clock)
    sim.add_job("job-1", SHORT, started=clock.now)
    sim.quota.configure(rate, burst)
    return sim, await aiohttp_client(sim.app())


async def stats(client: Client) -> dict[str, Any]:
    async with client.get(STATS_PATH) as resp:
        assert resp.status == 200
        return orjson.loads(await resp.read())


async def test_metastudio_over_its_quota_answers_the_gateways_throttling_error(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> None:
    sim, client = await huawei_client(clock, aiohttp_client, rate=2.0, burst=2.0)
    statuses = [(await fetch_huawei(client, clock, "job-1"))[0] for _ in range(2)]
    status, body = await fetch_huawei(client, clock, "job-1")

    assert statuses == [200, 200]
    assert status == 429
    assert body == {
        "error_code": "APIGW.0308",
        "error_msg": "The throttling threshold has been reached",
    }
    # Half a second of the simulator's clock refills one request at 2/s, not two.
    clock.now += 0.5
    assert (await fetch_huawei(client, clock, "job-1"))[0] == 200
    assert (await fetch_huawei(client, clock, "job-1"))[0] == 429
    assert sim.quota.stats().answered == 5
    assert sim.quota.stats().throttled == 2
    # The stats route is no cloud's: neither counted nor limited.
    assert await stats(client) == {"rate": 2.0, "burst": 2.0, "answered": 5, "throttled": 2}
    assert (await stats(client))["answered"] == 5


async def test_refused_requests_take_no_token_so_a_steady_client_gets_the_rate(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> None:
    sim, client = await huawei_client(clock, aiohttp_client, rate=10.0, burst=1.0)
    ok = 0
    for _ in range(100):  # 4 tries every 0.1 s for 10 s: one in four gets through
        for _ in range(4):
            ok += (await fetch_huawei(client, clock, "job-1"))[0] == 200
        clock.now += 0.1
    assert ok == 100
    assert sim.quota.stats().throttled == 300


async def test_without_a_quota_every_request_is_answered_and_counted(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> None:
    _, client = await huawei_client(clock, aiohttp_client, rate=None, burst=None)
    statuses = {(await fetch_huawei(client, clock, "job-1"))[0] for _ in range(50)}
    async with client.get("/no/such/api") as resp:
        assert resp.status == 404  # the cloud's answers all count, errors too

    assert statuses == {200}
    assert await stats(client) == {"rate": None, "burst": 0.0, "answered": 51, "throttled": 0}


async def test_tencent_shares_one_bucket_across_its_apis_and_answers_429_in_xml(
    clock: FakeClock, aiohttp_client: Callable[..., Any]
) -> None:
    sim: TencentCISimulator = make_tencent(clock)
    sim.add_job("a" + "1" * 32, [("Submitted", 10.0), ("Running", 20.0), ("Success", 30.0)])
    sim.quota.configure(1.0, 2.0)
    client: Client = await aiohttp_client(sim.app())

    look_up = await get_tencent(client, clock, "/ai_jobs/a" + "1" * 32)
    listing = await get_tencent(client, clock, "/ai_jobs", {"queueId": "q", "tag": "Translation"})
    status, body = await get_tencent(client, clock, "/ai_queue")

    assert (look_up[0], listing[0]) == (200, 200)
    assert status == 429
    error = ElementTree.fromstring(body)
    assert error.tag == "Error"
    assert error.findtext("Code") == "RequestLimitExceeded"
    assert sim.quota.stats().throttled == 1
    assert (await stats(client))["answered"] == 3


def test_a_quota_must_be_a_positive_rate_with_a_burst_of_at_least_one() -> None:
    quota = Quota(lambda: 0.0)
    for rate, burst in ((0.0, None), (-1.0, None), (float("inf"), None), (5.0, 0.5)):
        with pytest.raises(ValueError, match="quota"):
            quota.configure(rate, burst)
    quota.configure(0.5)  # a burst of at least one request even below 1/s
    assert quota.stats().burst == 1.0
    assert quota.admit()
    assert not quota.admit()


def test_the_cli_sets_the_quota_and_refuses_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse_args(["--quota-rps", "200", "--quota-burst", "50"])
    assert (args.quota_rps, args.quota_burst) == (200.0, 50.0)
    assert _parse_args([]).quota_rps is None
    for argv, message in (
        (["--quota-rps", "0"], "--quota-rps must be positive"),
        (["--quota-burst", "5"], "--quota-burst needs --quota-rps"),
        (["--quota-rps", "5", "--quota-burst", "0.5"], "--quota-burst must be at least 1"),
    ):
        with pytest.raises(SystemExit):
            _parse_args(argv)
        assert message in capsys.readouterr().err
