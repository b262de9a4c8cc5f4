"""The clouds the exporter knows, each registered once: adding one is a provider module, an account
model, a states table, a simulator and an entry in `CLOUDS`.

Everything else asks here: config for the account union and the unknown-provider message, the
collector for documented states, the runtime for providers and discovery, the demo for
simulators. Provider and simulator modules (aiohttp) are imported only when first used, so
config and the collector can import this without HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from exporter.accounts import (
    HUAWEI_JOB_KINDS,
    CloudAccount,
    HuaweiAccount,
    HuaweiAuth,
    HuaweiDiscovery,
    ListDiscovery,
    TencentAccount,
    TencentAuth,
    huawei_credentials,
    tencent_credentials,
)
from exporter.accounts import Discovery as TencentDiscovery
from exporter.model import Phase
from exporter.states import HUAWEI_TABLE, TENCENT_TABLE, StateTable

if TYPE_CHECKING:
    import aiohttp

    from exporter.providers.base import Provider

AccountT = TypeVar("AccountT", bound=CloudAccount)
CredentialsT = TypeVar("CredentialsT")


class ProviderClass(Protocol):
    """A provider's constructor (every provider takes the same arguments)."""

    def __call__(
        self,
        *,
        account: str,
        config: Any,
        credentials: Any,
        session: aiohttp.ClientSession,
        timeout: float,
    ) -> Provider: ...


@dataclass(frozen=True, slots=True)
class DemoCloud:
    """A running simulator and the account that polls it, for `--demo`."""

    account: CloudAccount
    # Ids listed like configured jobs (a cloud with discovery may list fewer than it has).
    job_ids: tuple[str, ...]
    # The simulator's published credentials, under the variable names the account's auth reads.
    environ: Mapping[str, str] = field(repr=False)
    url: str
    stop: Callable[[], Awaitable[None]]
    # The listed jobs' kinds, where not the cloud's default (`jobs[].kind`).
    kinds: Mapping[str, str] = field(default_factory=dict)


def _no_discovery(account: CloudAccount) -> None:
    return None


def _discover(account: HuaweiAccount | TencentAccount) -> ListDiscovery | None:
    return account.discover


def _bulk_refresh(account: HuaweiAccount | TencentAccount) -> ListDiscovery | None:
    return account.discover if account.refresh_mode == "list" else None


def _no_queues(account: CloudAccount) -> float:
    return 0.0


@dataclass(frozen=True, slots=True)
class Cloud(Generic[AccountT, CredentialsT]):
    """One cloud: its provider name, config model, states, provider, discovery and simulator."""

    name: str
    account: type[AccountT]
    states: StateTable
    # Reads the account's secrets; ConfigError names each missing one under `where`.
    credentials: Callable[[AccountT, str, Mapping[str, str]], CredentialsT]
    # The provider's class, imported when first asked for: its module needs aiohttp.
    provider: Callable[[], ProviderClass]
    # The name `--demo` gives the simulated account (reserved: a config may not use it).
    demo_account: str
    simulator: Callable[[], Awaitable[DemoCloud]]
    # The kinds of job it polls through different APIs (`jobs[].kind`), the default first;
    # empty: one kind, and a job may not name any.
    kinds: tuple[str, ...] = ()
    # The account's discovery settings when it finds jobs through a list API; the provider is
    # then also a `JobLister` (exporter/discovery.py).
    discovery: Callable[[AccountT], ListDiscovery | None] = _no_discovery
    # The discovery settings whose list refreshes the account's jobs in bulk (`refresh: list`;
    # the provider is a `JobLister`, exporter/refresh.py); None: each job polls on its own.
    bulk_refresh: Callable[[AccountT], ListDiscovery | None] = _no_discovery
    # How often the account's queues are read (the provider is then a `QueueLister`,
    # exporter/queues.py); 0: never.
    queue_interval: Callable[[AccountT], float] = _no_queues

    def build(
        self,
        name: str,
        account: AccountT,
        session: aiohttp.ClientSession,
        timeout: float,
        environ: Mapping[str, str],
    ) -> Provider:
        """The account's provider; ConfigError if its credentials are missing."""
        secrets = self.credentials(account, f"accounts.{name}.auth.", environ)
        return self.provider()(
            account=name, config=account, credentials=secrets, session=session, timeout=timeout
        )


# -- Huawei Cloud MetaStudio --------------------------------------------------------------------


def _huawei_provider() -> ProviderClass:
    from exporter.providers.huawei_metastudio import HuaweiMetaStudio

    return HuaweiMetaStudio


async def _huawei_simulator() -> DemoCloud:
    from exporter.simulator.metastudio import (
        DEMO_ACCESS_KEY,
        DEMO_PROJECT_ID,
        DEMO_SECRET_KEY,
        demo_simulator,
        start_simulator,
    )
    from exporter.simulator.metastudio_training import DEMO_TRAINING_JOBS

    sim = demo_simulator(
        project_id=DEMO_PROJECT_ID, access_key=DEMO_ACCESS_KEY, secret_key=DEMO_SECRET_KEY
    )
    runner, url = await start_simulator(sim)
    account = HuaweiAccount(
        provider="huawei_metastudio",
        region="demo",
        project_id=DEMO_PROJECT_ID,
        endpoint=url,
        # A budget its jobs fit in, so the demo shows the budget's series.
        api_budget_rps=5.0,
        auth=HuaweiAuth(ak_env="CLOUDJOB_DEMO_HUAWEI_AK", sk_env="CLOUDJOB_DEMO_HUAWEI_SK"),
        # Two training jobs are listed like configured ones; discovery finds the others, and
        # list rounds keep them fresh.
        discover=HuaweiDiscovery(interval=10.0, labels={"team": "demo"}),
    )
    environ = {
        "CLOUDJOB_DEMO_HUAWEI_AK": DEMO_ACCESS_KEY,
        "CLOUDJOB_DEMO_HUAWEI_SK": DEMO_SECRET_KEY,
    }
    training = DEMO_TRAINING_JOBS[:2]
    return DemoCloud(
        account,
        (*sim.job_ids(), *training),
        environ,
        url,
        runner.cleanup,
        kinds=dict.fromkeys(training, "voice_training"),
    )


# -- Tencent Cloud CI ---------------------------------------------------------------------------


def _tencent_provider() -> ProviderClass:
    from exporter.providers.tencent_ci import TencentCI

    return TencentCI


def _tencent_queue_interval(account: TencentAccount) -> float:
    return account.queue_interval


async def _tencent_simulator() -> DemoCloud:
    from exporter.simulator.metastudio import start_simulator
    from exporter.simulator.tencent_ci import (
        DEMO_QUEUE_IDS,
        DEMO_TENCENT_BUCKET,
        DEMO_TENCENT_JOBS,
        DEMO_TENCENT_REGION,
        DEMO_TENCENT_SECRET_ID,
        DEMO_TENCENT_SECRET_KEY,
        demo_tencent_simulator,
    )
    from exporter.simulator.tencent_queues import start_queue_cycle

    sim = demo_tencent_simulator(
        bucket=DEMO_TENCENT_BUCKET,
        secret_id=DEMO_TENCENT_SECRET_ID,
        secret_key=DEMO_TENCENT_SECRET_KEY,
    )
    runner, url = await start_simulator(sim)
    account = TencentAccount(
        provider="tencent_ci",
        bucket=DEMO_TENCENT_BUCKET,
        region=DEMO_TENCENT_REGION,
        endpoint=url,
        job_api="media_jobs",
        batch_size=5,
        queue_interval=15.0,  # the second queue pauses for 90 s of every 5 minutes
        auth=TencentAuth(
            secret_id_env="CLOUDJOB_DEMO_TENCENT_SECRET_ID",  # noqa: S106 - a variable name
            secret_key_env="CLOUDJOB_DEMO_TENCENT_SECRET_KEY",  # noqa: S106 - a variable name
        ),
        # Discovery lists the first queue; the second queue's jobs are listed as configured
        # ones and keep polls of their own.
        discover=TencentDiscovery(
            queue_id=DEMO_QUEUE_IDS[0],
            tags=sorted(
                {job.tag for job in DEMO_TENCENT_JOBS if job.queue_id == DEMO_QUEUE_IDS[0]}
            ),
            lookback=86400.0,
            interval=10.0,
            labels={"team": "demo"},
        ),
    )
    environ = {
        "CLOUDJOB_DEMO_TENCENT_SECRET_ID": DEMO_TENCENT_SECRET_ID,
        "CLOUDJOB_DEMO_TENCENT_SECRET_KEY": DEMO_TENCENT_SECRET_KEY,
    }
    # One job of the discovered queue is listed like a configured one, and the other queue's.
    listed = tuple(
        job.job_id
        for job in DEMO_TENCENT_JOBS
        if job is DEMO_TENCENT_JOBS[0] or job.queue_id != DEMO_QUEUE_IDS[0]
    )
    # The second queue pauses now and then, so the demo shows waiting jobs held in `Pause`.
    stop_cycle = start_queue_cycle(sim, DEMO_QUEUE_IDS[1])

    async def stop() -> None:
        await stop_cycle()
        await runner.cleanup()

    return DemoCloud(account, listed, environ, url, stop)


CLOUDS: tuple[Cloud[Any, Any], ...] = (
    Cloud(
        name="huawei_metastudio",
        account=HuaweiAccount,
        states=HUAWEI_TABLE,
        credentials=huawei_credentials,
        provider=_huawei_provider,
        demo_account="demo-huawei",
        simulator=_huawei_simulator,
        kinds=HUAWEI_JOB_KINDS,
        discovery=_discover,
        bulk_refresh=_bulk_refresh,
    ),
    Cloud(
        name="tencent_ci",
        account=TencentAccount,
        states=TENCENT_TABLE,
        credentials=tencent_credentials,
        provider=_tencent_provider,
        demo_account="demo-tencent",
        simulator=_tencent_simulator,
        discovery=_discover,
        bulk_refresh=_bulk_refresh,
        queue_interval=_tencent_queue_interval,
    ),
)
BY_NAME: dict[str, Cloud[Any, Any]] = {cloud.name: cloud for cloud in CLOUDS}
PROVIDERS = tuple(BY_NAME)
# Every cloud's documented states in the document's order, for the StateSet of each job.
DOCUMENTED_STATES: dict[str, Mapping[str, Phase]] = {
    cloud.name: cloud.states.phases for cloud in CLOUDS
}


def cloud_of(account: CloudAccount) -> Cloud[Any, Any]:
    """The registry entry of a validated account (its `provider` is always a registered name)."""
    return BY_NAME[account.provider]
