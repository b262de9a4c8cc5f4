"""The fault matrix: every way a cloud API misbehaves, one row each, against the whole exporter.

Each row runs the exporter in-process against both simulated clouds over loopback, breaks one
job (or one account), and checks the same five things: the exporter stays up, `/metrics`
answers in under a second throughout, the other jobs keep updating, the right `reason` is
counted, and the broken jobs recover once the fault is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import load_settings
from exporter.simulator.faults import Fault, FaultHit, FaultKind, Faults
from exporter.simulator.metastudio import MetaStudioSimulator, start_simulator
from exporter.simulator.scripts import HAPPY_PATH
from exporter.simulator.tencent_ci import SEED_SAMPLE_BODY, TencentCISimulator, xml_bomb_body
from exporter.simulator.tencent_scripts import STUCK
from tests import test_job_api as job_api
from tests.support import ServerFactory, eventually_async, value

Job = tuple[str, str]  # (account, job id)

PROJECT = "0123456789abcdef0123456789abcdef"
AK = "AKFAULTMATRIX0000000"
SK = "SK-fault-matrix-2b7e1c"
BUCKET = "examplebucket-1250000000"
SECRET_ID = "AKIDFAULTMATRIX000000000000000000000"
SECRET_KEY = "tc-fault-matrix-key-9d4a"
HUAWEI_JOBS = ("hw-victim", "hw-other")
TENCENT_JOBS = ("tc-victim", "tc-other")
ALL_JOBS: tuple[Job, ...] = (
    *(("hw", job_id) for job_id in HUAWEI_JOBS),
    *(("tc", job_id) for job_id in TENCENT_JOBS),
)
# A name that cannot resolve (RFC 6761 reserves .invalid).
UNRESOLVABLE_ENDPOINT = "http://does-not-exist.invalid:80"
# A scrape serves from memory in milliseconds; one this slow waited on something (a cloud, or a
# parse holding the event loop). A guard for every row, not a speed target: that scrapes never
# wait for a cloud is shown causally by the test at the end of this file.
SCRAPE_BUDGET = 1.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# -- The clouds and the exporter ---------------------------------------------------------------


@dataclass
class Clouds:
    huawei: MetaStudioSimulator
    huawei_url: str
    tencent: TencentCISimulator
    tencent_url: str

    def faults(self, account: str) -> Faults:
        return self.huawei.faults if account == "hw" else self.tencent.faults


@pytest.fixture
async def clouds() -> AsyncIterator[Clouds]:
    huawei = MetaStudioSimulator(project_id=PROJECT, credentials={AK: SK})
    for job_id in HUAWEI_JOBS:
        huawei.add_job(job_id, HAPPY_PATH)
    tencent = TencentCISimulator(bucket=BUCKET, credentials={SECRET_ID: SECRET_KEY})
    for job_id in TENCENT_JOBS:
        tencent.add_job(job_id, STUCK)
    huawei_runner, huawei_url = await start_simulator(huawei)
    tencent_runner, tencent_url = await start_simulator(tencent)
    yield Clouds(huawei, huawei_url, tencent, tencent_url)
    # Nothing may keep answering (a slow fault sleeping) while the servers shut down.
    huawei.faults.clear_all()
    tencent.faults.clear_all()
    await huawei_runner.cleanup()
    await tencent_runner.cleanup()


def _config(clouds: Clouds, secrets: Path, *, huawei_endpoint: str | None = None) -> str:
    jobs = "".join(f"  - {{account: {account}, id: {job_id}}}\n" for account, job_id in ALL_JOBS)
    return f"""
poll_interval: 0.2s
terminal_poll_interval: 0.2s
max_retries: 1
request_timeout: 0.5s
reload_check_interval: 0.2
accounts:
  hw:
    provider: huawei_metastudio
    region: cn-north-4
    project_id: "{PROJECT}"
    endpoint: "{huawei_endpoint or clouds.huawei_url}"
    auth: {{ak_env: T_AK, sk_file: {secrets / "hw"}}}
  tc:
    provider: tencent_ci
    bucket: {BUCKET}
    region: ap-beijing
    endpoint: "{clouds.tencent_url}"
    auth: {{secret_id_env: T_ID, secret_key_file: {secrets / "tc"}}}
jobs:
{jobs}"""


def _touch_later(path: Path) -> None:
    """Move the mtime on, so the exporter's file watch sees a change even within one tick."""
    later = time.time() + 5
    os.utime(path, (later, later))


@dataclass
class Exporter:
    """The exporter under test, with a stopwatch on every scrape."""

    server: TestServer
    config: Path
    secrets: Path  # a directory: one secret key file per account
    clouds: Clouds
    scrape_times: list[float] = field(default_factory=list)

    async def get(self, path: str) -> tuple[int, bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.server.make_url(path)) as response,
        ):
            return response.status, await response.read()

    async def metrics(self) -> str:
        started = time.monotonic()
        status, body = await self.get("/metrics")
        self.scrape_times.append(time.monotonic() - started)
        assert status == 200
        return body.decode()

    async def wait_for(
        self, what: str, predicate: Callable[[str], bool], within: float = 10
    ) -> str:
        """Scrape (timing each scrape) until `predicate` holds; returns that exposition."""

        async def matching() -> str:
            text = await self.metrics()
            return text if predicate(text) else ""

        return await eventually_async(matching, within=within, what=what)

    async def job(self, job: Job) -> dict[str, object]:
        status, body = await self.get(f"/api/v1/jobs?account={job[0]}")
        assert status == 200
        jobs: list[dict[str, object]] = orjson.loads(body)["jobs"]
        return next(doc for doc in jobs if doc["job_id"] == job[1])

    def rewrite_config(self, *, huawei_endpoint: str | None = None) -> None:
        self.config.write_text(_config(self.clouds, self.secrets, huawei_endpoint=huawei_endpoint))
        _touch_later(self.config)

    def rotate_secret(self, account: str, secret: str) -> None:
        """A rotated Secret: the exporter's file watch reloads the config with it."""
        path = self.secrets / account
        path.write_text(secret + "\n")
        _touch_later(path)


@pytest.fixture
async def exporter(clouds: Clouds, aiohttp_server: ServerFactory, tmp_path: Path) -> Exporter:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "hw").write_text(SK + "\n")
    (secrets / "tc").write_text(SECRET_KEY + "\n")
    path = tmp_path / "config.yaml"
    path.write_text(_config(clouds, secrets))
    app = create_app(
        load_settings(path),
        environ={"T_AK": AK, "T_ID": SECRET_ID},
        loader=lambda: load_settings(path),
        config_path=path,
    )
    return Exporter(await aiohttp_server(app), path, secrets, clouds)


# -- Reading the exposition --------------------------------------------------------------------


def _success(text: str, job: Job) -> float | None:
    return value(text, "cloudjob_job_last_poll_success", account=job[0], job_id=job[1])


def _polled_at(text: str, job: Job) -> float:
    at = value(text, "cloudjob_job_last_poll_timestamp_seconds", account=job[0], job_id=job[1])
    return -1.0 if at is None else at


def _errors(text: str, account: str, reason: str) -> float:
    return value(text, "cloudjob_poll_errors_total", account=account, reason=reason) or 0.0


def _requests(text: str, account: str, status: str) -> float:
    return value(text, "cloudjob_api_requests_total", account=account, status=status) or 0.0


# -- The five checks every row makes -----------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What a fault must look like from outside: the error `reason` of the broken jobs' polls,
    and the `status` their requests are counted under in `cloudjob_api_requests_total`."""

    reason: str
    status: str
    # A fault that ends by itself (a burst): the jobs need not be seen failing at a scrape.
    ends_by_itself: bool = False
    # Words the broken jobs' error message (JSON API) must contain.
    message: str = ""


async def survive(
    exporter: Exporter,
    victims: list[Job],
    expected: Expected,
    *,
    inject: Callable[[], Awaitable[None]],
    clear: Callable[[], Awaitable[None]],
) -> None:
    """Break `victims` with `inject`, check that the exporter lives with it, `clear`, and see
    the victims recover."""
    others = [job for job in ALL_JOBS if job not in victims]
    accounts = sorted({account for account, _ in victims})
    await exporter.wait_for(
        "every job is polled successfully before the fault",
        lambda t: all(_success(t, job) == 1 for job in ALL_JOBS),
    )
    exporter.scrape_times.clear()

    await inject()

    def counted(text: str) -> bool:
        wrong = [
            line
            for line in text.splitlines()
            if line.startswith("cloudjob_poll_errors_total{")
            and f'reason="{expected.reason}"' not in line
        ]
        assert not wrong, f"errors counted under another reason: {wrong}"
        return all(
            _errors(text, account, expected.reason) >= 1
            and _requests(text, account, expected.status) >= 1
            for account in accounts
        ) and (expected.ends_by_itself or all(_success(text, job) == 0 for job in victims))

    # The right reason is counted (and no other), for every broken account, and the requests'
    # status too.
    text = await exporter.wait_for(
        f"poll errors with reason {expected.reason!r} and requests with status "
        f"{expected.status!r}" + ("" if expected.ends_by_itself else ", the victims failing"),
        counted,
    )
    if not expected.ends_by_itself:
        for job in victims:  # the JSON API says the same, job by job
            poll = (await exporter.job(job))["poll"]
            assert isinstance(poll, dict)
            assert poll["error"]["reason"] == expected.reason, poll
            assert expected.message in poll["error"]["message"], poll

    # The other jobs keep updating while the fault is on, within a few poll intervals (a
    # Retry-After of 1 s holds the victim's own account back for that long, by design).
    polled = {job: _polled_at(text, job) for job in others}
    text = await exporter.wait_for(
        "the other jobs are polled again, successfully",
        lambda t: all(_polled_at(t, job) > polled[job] and _success(t, job) == 1 for job in others),
        within=3,
    )
    if not expected.ends_by_itself:
        assert all(_success(text, job) == 0 for job in victims), "the fault ended too early"

    # The exporter is up.
    assert (await exporter.get("/healthz"))[0] == 200
    assert (await exporter.get("/readyz"))[0] == 200

    await clear()
    await exporter.wait_for(
        "the broken jobs recover", lambda t: all(_success(t, job) == 1 for job in victims)
    )
    # No scrape, from the fault's start to the recovery, had to wait for the cloud.
    slowest = max(exporter.scrape_times)
    assert slowest < SCRAPE_BUDGET, f"a scrape took {slowest:.3f}s while the fault was on"


# -- The rows the simulators make --------------------------------------------------------------


def _gaps_at_least(seconds: float) -> Callable[[list[FaultHit]], None]:
    def check(hits: list[FaultHit]) -> None:
        gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(hits)]
        assert gaps, "the fault was met only once"
        # The exporter must hold every request of the account back for Retry-After.
        assert min(gaps) >= 0.9 * seconds, f"requests {gaps} s apart, Retry-After {seconds} s"

    return check


def _met_exactly(count: int) -> Callable[[list[FaultHit]], None]:
    def check(hits: list[FaultHit]) -> None:
        assert len(hits) == count

    return check


@dataclass(frozen=True)
class Row:
    account: str  # "hw" (Huawei MetaStudio) or "tc" (Tencent CI)
    fault: Fault
    expected: Expected
    # "job": the account's victim job only; "account": every job of the account.
    scope: str = "job"
    # Extra checks on the requests the fault answered, once it is over.
    check: Callable[[list[FaultHit]], None] | None = None
    # A fault worth meeting more than once before judging (a Retry-After to measure).
    min_hits: int = 1


ROWS: dict[str, Row] = {
    # Three 500s: the first poll fails after its retry, the next one succeeds on its retry.
    "http-500-burst-huawei": Row(
        "hw",
        Fault(FaultKind.STATUS, status=500, count=3),
        Expected("upstream", "500", ends_by_itself=True),
        check=_met_exactly(3),
    ),
    "http-503-burst-tencent": Row(
        "tc",
        Fault(FaultKind.STATUS, status=503, count=3),
        Expected("upstream", "503", ends_by_itself=True),
        check=_met_exactly(3),
    ),
    "http-429-with-retry-after": Row(
        "hw",
        Fault(FaultKind.STATUS, status=429, headers={"Retry-After": "1"}),
        Expected("throttled", "429"),
        check=_gaps_at_least(1.0),
        min_hits=3,
    ),
    "http-429-without-retry-after": Row(
        "tc", Fault(FaultKind.STATUS, status=429), Expected("throttled", "429")
    ),
    "slower-than-the-timeout-huawei": Row(
        "hw", Fault(FaultKind.SLOW, delay=1.0), Expected("timeout", "timeout")
    ),
    "slower-than-the-timeout-tencent": Row(
        "tc", Fault(FaultKind.SLOW, delay=1.0), Expected("timeout", "timeout")
    ),
    "connection-reset-mid-body-huawei": Row(
        "hw", Fault(FaultKind.RESET), Expected("network", "connection")
    ),
    "connection-reset-mid-body-tencent": Row(
        "tc", Fault(FaultKind.RESET), Expected("network", "connection")
    ),
    # Content-Length promises more than comes, then a clean FIN.
    "truncated-body-huawei": Row(
        "hw", Fault(FaultKind.TRUNCATED), Expected("network", "connection")
    ),
    "truncated-body-tencent": Row(
        "tc", Fault(FaultKind.TRUNCATED), Expected("network", "connection")
    ),
    # The framing is right, the document is half of one.
    "truncated-document-huawei": Row(
        "hw", Fault(FaultKind.TRUNCATED, full_length=False), Expected("parse", "200")
    ),
    "truncated-document-tencent": Row(
        "tc", Fault(FaultKind.TRUNCATED, full_length=False), Expected("parse", "200")
    ),
    "invalid-json-huawei": Row(
        "hw",
        Fault(FaultKind.BODY, body=b'{"job_id": "hw-victim", "state": RUNNING,}'),
        Expected("parse", "200"),
    ),
    "malformed-xml-tencent": Row(
        "tc", Fault(FaultKind.BODY, body=SEED_SAMPLE_BODY), Expected("parse", "200")
    ),
    "xml-bomb-tencent": Row(
        "tc", Fault(FaultKind.BODY, body=xml_bomb_body("tc-victim")), Expected("parse", "200")
    ),
    # The gateway's clock-skew answer hits every request an account signs.
    "expired-signature-huawei": Row(
        "hw", Fault(FaultKind.EXPIRED_SIGNATURE), Expected("auth", "401"), scope="account"
    ),
    "expired-signature-tencent": Row(
        "tc", Fault(FaultKind.EXPIRED_SIGNATURE), Expected("auth", "403"), scope="account"
    ),
}


@pytest.mark.parametrize(
    "row",
    [pytest.param(row, id=name) for name, row in ROWS.items()],
)
async def test_a_misbehaving_cloud_breaks_only_its_jobs_and_they_recover(
    exporter: Exporter, clouds: Clouds, row: Row
) -> None:
    faults = clouds.faults(row.account)
    ids = HUAWEI_JOBS if row.account == "hw" else TENCENT_JOBS
    target = None if row.scope == "account" else ids[0]
    victims = [(row.account, job_id) for job_id in (ids if target is None else ids[:1])]

    async def inject() -> None:
        faults.set(target, row.fault)

    async def clear() -> None:
        # A burst ends by itself; other faults are lifted once met often enough to judge them.
        enough = row.fault.count or row.min_hits
        await eventually_async(lambda: len(faults.hits) >= enough, what=f"{enough} fault hits")
        faults.clear(target)

    await survive(exporter, victims, row.expected, inject=inject, clear=clear)
    hits = [hit for hit in faults.hits if hit.fault is row.fault]
    assert hits, "the exporter never met the fault"
    if row.check is not None:
        row.check(hits)


# -- The rows the configuration makes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "status"), [("hw", "401"), ("tc", "403")], ids=["huawei", "tencent"]
)
async def test_wrong_credentials_fail_with_auth_until_the_secret_is_fixed(
    exporter: Exporter, account: str, status: str
) -> None:
    right = SK if account == "hw" else SECRET_KEY

    async def inject() -> None:
        exporter.rotate_secret(account, "not-the-" + right)

    async def clear() -> None:
        exporter.rotate_secret(account, right)

    victims = [job for job in ALL_JOBS if job[0] == account]
    await survive(exporter, victims, Expected("auth", status), inject=inject, clear=clear)


@pytest.fixture
def refused_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """aiohttp's resolver refuses `.invalid` names at once, as a resolver answering NXDOMAIN
    does, without asking this machine's resolver (whose speed is not under test)."""
    refused: list[str] = []
    resolver = aiohttp.connector.DefaultResolver
    real = resolver.resolve

    async def resolve(
        self: aiohttp.abc.AbstractResolver, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        if host.endswith(".invalid"):
            refused.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await real(self, host, port, family)  # type: ignore[arg-type]

    monkeypatch.setattr(resolver, "resolve", resolve)
    return refused


async def test_an_unresolvable_endpoint_fails_with_network_until_it_is_fixed(
    exporter: Exporter, refused_lookups: list[str]
) -> None:
    async def inject() -> None:
        exporter.rewrite_config(huawei_endpoint=UNRESOLVABLE_ENDPOINT)

    async def clear() -> None:
        exporter.rewrite_config()

    victims = [job for job in ALL_JOBS if job[0] == "hw"]
    await survive(exporter, victims, Expected("network", "connection"), inject=inject, clear=clear)
    assert "does-not-exist.invalid" in refused_lookups


# -- Size and pace -----------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


@dataclass
class RssSampler:
    """This process's resident set size, sampled every few milliseconds: its peak."""

    baseline: int = field(default_factory=_rss)
    peak: int = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, _rss())
            await asyncio.sleep(0.005)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


HUGE = 50 * 1024 * 1024
MAX_RSS_GROWTH = 20 * 1024 * 1024


@pytest.mark.parametrize(
    "chunked",
    [
        pytest.param(False, id="content-length"),
        # Without a Content-Length only the reading can stop at the cap.
        pytest.param(True, id="chunked"),
    ],
)
async def test_a_50_mb_body_is_refused_at_the_size_cap_and_memory_stays_flat(
    exporter: Exporter, clouds: Clouds, chunked: bool
) -> None:
    faults = clouds.huawei.faults
    fault = Fault(FaultKind.HUGE, size=HUGE, chunked=chunked)
    sampler = RssSampler()

    async def inject() -> None:
        faults.set("hw-victim", fault)

    async def clear() -> None:
        # Several 50 MB answers, each one over before the fault is lifted.
        await eventually_async(
            lambda: len(faults.hits) >= 3 and all(hit.finished for hit in faults.hits),
            what="three huge answers, each one over",
        )
        faults.clear("hw-victim")

    async with sampler.running():
        await survive(
            exporter,
            [("hw", "hw-victim")],
            Expected("parse", "200", message=f"over the {1 << 20}-byte cap"),
            inject=inject,
            clear=clear,
        )
    growth = sampler.peak - sampler.baseline
    assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.1f} MiB for a 50 MiB body"
    sent = [hit.bytes_sent for hit in faults.hits]
    # The exporter stopped taking the body near the cap: what the simulator got out before the
    # connection closed is the cap plus what the sockets' buffers held, far from 50 MiB.
    assert max(sent) < HUGE // 4, f"bytes the simulator sent: {sent}"
    poll = (await exporter.job(("hw", "hw-victim")))["poll"]
    assert isinstance(poll, dict)
    assert poll["error"] is None  # recovered


async def test_an_answer_that_trickles_in_within_the_timeout_is_read_whole(
    exporter: Exporter, clouds: Clouds
) -> None:
    # The whole answer takes 0.2 s in 4 parts, well within the 0.5 s request timeout.
    trickle = Fault(FaultKind.SLOW, delay=0.2, pieces=4)
    await exporter.wait_for(
        "every job is polled successfully",
        lambda t: all(_success(t, job) == 1 for job in ALL_JOBS),
    )
    clouds.huawei.faults.set("hw-victim", trickle)
    clouds.tencent.faults.set("tc-victim", trickle)
    await eventually_async(
        lambda: len(clouds.huawei.faults.hits) >= 3 and len(clouds.tencent.faults.hits) >= 3,
        what="the trickling answers are asked for",
    )
    text = await exporter.metrics()
    assert "cloudjob_poll_errors_total{" not in text
    assert all(_success(text, job) == 1 for job in ALL_JOBS)


# -- The fault registry itself -------------------------------------------------------------------


def test_a_job_fault_wins_over_the_simulator_wide_one_and_a_burst_clears_itself() -> None:
    faults = Faults(monotonic=iter(range(100)).__next__)
    wide = Fault(FaultKind.EXPIRED_SIGNATURE)
    burst = Fault(FaultKind.STATUS, status=500, count=2)
    faults.set(None, wide)
    faults.set("job-1", burst)
    assert faults.take(["job-0"]) is not None
    hits = [faults.take(["job-0", "job-1"]), faults.take(["job-1"])]
    assert [None if hit is None else hit.fault for hit in hits] == [burst, burst]
    assert faults.get("job-1") is None  # the burst is spent
    hit = faults.take(["job-1"])
    assert hit is not None
    assert hit.fault is wide
    assert hit.target is None
    faults.clear()
    assert faults.take(["job-1"]) is None
    assert [hit.at for hit in faults.hits] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": FaultKind.STATUS, "status": 200},
        {"kind": FaultKind.STATUS, "status": 429, "count": 0},
        {"kind": FaultKind.BODY, "status": 99},
        {"kind": FaultKind.SLOW, "delay": -1},
        {"kind": FaultKind.SLOW, "pieces": 0},
        {"kind": FaultKind.HUGE, "size": -1},
    ],
)
def test_a_fault_that_cannot_happen_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        Fault(**fields)  # type: ignore[arg-type]


async def test_a_scrape_answers_while_a_poll_waits_on_the_cloud(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    """The cloud holds the poll's request until the test lets it go: a scrape that waited for
    the cloud could not answer before that."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.json_response({}, status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", held)
    cloud = await aiohttp_server(app)
    text = job_api.config_text(str(cloud.make_url("/"))) + "request_timeout: 120\n"
    server = await job_api.exporter(aiohttp_server, tmp_path, text)
    await asyncio.wait_for(entered.wait(), 10)
    # A scrape that waited for the cloud would wait forever here: the timeout is a hang guard.
    status, body = await asyncio.wait_for(job_api.call(server, "GET", "/metrics"), 10)
    assert status == 200
    assert "cloudjob_jobs_tracked" in body
    assert not release.is_set()  # the poll's request is still open at the cloud
    release.set()
