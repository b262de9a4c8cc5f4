"""Sharding: every job is polled by exactly one replica, whatever the replica count."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import load_settings
from exporter.sharding import Shard, ShardError, resolve_shard, shard_of
from exporter.simulator.metastudio import MetaStudioSimulator
from exporter.simulator.scripts import HAPPY_PATH
from tests.support import eventually_async, run_cli

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROJECT = "0123456789abcdef0123456789abcdef"


def test_the_hash_is_stable_across_processes_and_versions() -> None:
    # Fixed values: a change here would reshuffle every deployment's jobs between replicas.
    assert [shard_of("hw", f"job-{n}", 3) for n in range(8)] == [
        shard_of("hw", f"job-{n}", 3) for n in range(8)
    ]
    code = "from exporter.sharding import shard_of; print(shard_of('hw', 'job-1', 7))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert int(other.stdout) == shard_of("hw", "job-1", 7)
    assert shard_of("hw", "26f06524-4f75-4b3a-a853-b649a21aaf66", 3) == 2
    assert shard_of("tc", "a8d121820f5e411ec926ef19d53ba9c6f", 3) == 0


def test_jobs_spread_evenly_over_shards() -> None:
    counts = [0, 0, 0, 0]
    for n in range(4000):
        counts[shard_of("acct", f"job-{n}", 4)] += 1
    assert all(900 < count < 1100 for count in counts), counts


@pytest.mark.parametrize(
    ("environ", "index"),
    [({"POD_NAME": "cloudjob-exporter-2"}, 2), ({"HOSTNAME": "release-cloudjob-0"}, 0)],
)
def test_auto_takes_the_statefulset_ordinal_from_the_pod_name(
    environ: dict[str, str], index: int
) -> None:
    assert resolve_shard("auto", 3, environ) == Shard(index, 3)


@pytest.mark.parametrize(
    ("shard", "total", "environ", "message"),
    [
        ("auto", 3, {"HOSTNAME": "laptop"}, "pod name ending in -N"),
        ("auto", 3, {"POD_NAME": "cloudjob-exporter-3"}, "outside 0..2"),
        (5, 3, {}, "outside 0..2"),
    ],
)
def test_impossible_shards_are_refused_with_the_reason(
    shard: int | str, total: int, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ShardError, match=message):
        resolve_shard(shard, total, environ)


def test_the_cli_refuses_a_bad_shard_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"POD_NAME", "HOSTNAME"}}
    for args, message in (
        (["--shard", "3", "--total-shards", "3"], "shard: 3 is outside 0..2"),
        (["--shard", "auto", "--total-shards", "3"], "pod name ending in -N"),
    ):
        result = run_cli("--check-config", *args, environ=env)
        assert result.returncode == 2
        assert message in result.stderr
        assert "Traceback" not in result.stderr


async def test_three_shards_poll_every_job_exactly_once_between_them(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    jobs = [f"job-{n:02d}" for n in range(30)]
    sim = MetaStudioSimulator(project_id=PROJECT, credentials={"ak": "sk"})
    for job_id in jobs:
        sim.add_job(job_id, HAPPY_PATH)
    polled_by: dict[str, set[str]] = defaultdict(set)
    polls: Counter[str] = Counter()

    @web.middleware
    async def who_polls(request: web.Request, handler: Handler) -> web.StreamResponse:
        job_id = request.match_info.get("job_id", "?")
        polled_by[job_id].add(request.headers["User-Agent"])
        polls[job_id] += 1
        return await handler(request)

    cloud_app = sim.app()
    cloud_app.middlewares.append(who_polls)
    cloud = await aiohttp_server(cloud_app)
    config = tmp_path / "config.yaml"
    config.write_text(
        "poll_interval: 0.3s\naccounts:\n  hw:\n    provider: huawei_metastudio\n"
        f"    region: r\n    project_id: {PROJECT}\n    endpoint: {cloud.make_url('/')}\n"
        "jobs:\n" + "".join(f"  - {{account: hw, id: {job_id}}}\n" for job_id in jobs)
    )
    settings = load_settings(config)
    environ = {"CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk"}
    shards = [
        await aiohttp_server(create_app(settings, environ=environ, shard=Shard(index, 3)))
        for index in range(3)
    ]

    async def tracked(server: TestServer) -> list[dict[str, object]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.make_url("/api/v1/jobs")) as response,
        ):
            jobs_doc: list[dict[str, object]] = orjson.loads(await response.read())["jobs"]
            return jobs_doc

    # Every job polled three times: every shard has been through several rounds, so a second
    # poller of any job would have shown up.
    await eventually_async(
        lambda: set(polls) >= set(jobs) and min(polls[job] for job in jobs) >= 3,
        what="every job polled three times",
    )
    assert set(polled_by) == set(jobs)
    assert all(len(agents) == 1 for agents in polled_by.values()), polled_by
    per_shard = [[job["job_id"] for job in await tracked(server)] for server in shards]
    assert sorted(job for ids in per_shard for job in ids) == jobs
    assert all(ids for ids in per_shard), "some shard got no job at all"
    for index, ids in enumerate(per_shard):
        agent = f"(shard {index}/3)"
        assert all(agent in next(iter(polled_by[job_id])) for job_id in ids)
        assert all(shard_of("hw", str(job_id), 3) == index for job_id in ids)
    async with (
        aiohttp.ClientSession() as session,
        session.get(shards[1].make_url("/metrics")) as response,
    ):
        assert (
            'cloudjob_exporter_shard_info{shard="1",total_shards="3"} 1.0' in await response.text()
        )
