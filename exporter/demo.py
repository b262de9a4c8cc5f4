"""`--demo`: start the simulated clouds on loopback and poll them like any configured account.

The demo account goes through the same provider, signer, poller and collector as a real one;
only its endpoint and its (fixed, public) credentials are different.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from pydantic import SecretStr

from exporter.app import SESSION, SETTINGS
from exporter.config import (
    ConfigError,
    Discovery,
    HuaweiAccount,
    HuaweiCredentials,
    JobConfig,
    TencentAccount,
    TencentCredentials,
)
from exporter.providers.huawei_metastudio import HuaweiMetaStudio
from exporter.providers.tencent_ci import TencentCI
from exporter.runtime import RUNTIME

# Not secrets: the simulator is built into every copy and listens on loopback only.
from exporter.simulator.metastudio import (
    DEMO_ACCESS_KEY,
    DEMO_PROJECT_ID,
    DEMO_SECRET_KEY,
    demo_simulator,
    start_simulator,
)
from exporter.simulator.tencent_ci import (
    DEMO_TENCENT_BUCKET,
    DEMO_TENCENT_JOBS,
    DEMO_TENCENT_REGION,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    demo_tencent_simulator,
)

log = logging.getLogger(__name__)
DEMO_HUAWEI_ACCOUNT = "demo-huawei"
DEMO_TENCENT_ACCOUNT = "demo-tencent"
# One Tencent job is listed like a configured one; discovery finds the rest.
DEMO_TENCENT_LISTED = DEMO_TENCENT_JOBS[0].job_id


async def demo_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    runtime = app[RUNTIME]
    for name in (DEMO_HUAWEI_ACCOUNT, DEMO_TENCENT_ACCOUNT):
        if name in settings.accounts:
            raise ConfigError([f"accounts.{name}: this name is reserved for --demo"])
    sim = demo_simulator(
        project_id=DEMO_PROJECT_ID, access_key=DEMO_ACCESS_KEY, secret_key=DEMO_SECRET_KEY
    )
    runner, base_url = await start_simulator(sim)
    account = HuaweiAccount(
        provider="huawei_metastudio",
        region="demo",
        project_id=DEMO_PROJECT_ID,
        endpoint=base_url,
    )
    runtime.extra_providers[DEMO_HUAWEI_ACCOUNT] = HuaweiMetaStudio(
        account=DEMO_HUAWEI_ACCOUNT,
        config=account,
        credentials=HuaweiCredentials(
            access_key=SecretStr(DEMO_ACCESS_KEY), secret_key=SecretStr(DEMO_SECRET_KEY)
        ),
        session=app[SESSION],
        timeout=settings.request_timeout,
    )
    runtime.extra_jobs = [
        JobConfig(account=DEMO_HUAWEI_ACCOUNT, id=job_id, labels={"team": "demo"})
        for job_id in sim.job_ids()
    ]
    tencent_sim = demo_tencent_simulator(
        bucket=DEMO_TENCENT_BUCKET,
        secret_id=DEMO_TENCENT_SECRET_ID,
        secret_key=DEMO_TENCENT_SECRET_KEY,
    )
    tencent_runner, tencent_url = await start_simulator(tencent_sim)
    discovery = Discovery(lookback=86400.0, interval=10.0, labels={"team": "demo"})
    tencent = TencentAccount(
        provider="tencent_ci",
        bucket=DEMO_TENCENT_BUCKET,
        region=DEMO_TENCENT_REGION,
        endpoint=tencent_url,
        job_api="media_jobs",
        batch_size=5,
        discover=discovery,
    )
    runtime.extra_providers[DEMO_TENCENT_ACCOUNT] = TencentCI(
        account=DEMO_TENCENT_ACCOUNT,
        config=tencent,
        credentials=TencentCredentials(
            secret_id=SecretStr(DEMO_TENCENT_SECRET_ID),
            secret_key=SecretStr(DEMO_TENCENT_SECRET_KEY),
        ),
        session=app[SESSION],
        timeout=settings.request_timeout,
    )
    runtime.extra_jobs.append(
        JobConfig(account=DEMO_TENCENT_ACCOUNT, id=DEMO_TENCENT_LISTED, labels={"team": "demo"})
    )
    runtime.extra_discoveries.append((DEMO_TENCENT_ACCOUNT, discovery))
    log.info(
        "demo_started",
        extra={"huawei": base_url, "tencent": tencent_url, "jobs": len(runtime.extra_jobs)},
    )
    try:
        yield
    finally:
        await tencent_runner.cleanup()
        await runner.cleanup()
