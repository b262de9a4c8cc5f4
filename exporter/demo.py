"""`--demo`: start the simulated clouds on loopback and poll them like any configured account.

The demo account goes through the same provider, signer, poller and collector as a real one;
only its endpoint and its (fixed, public) credentials are different.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from pydantic import SecretStr

from exporter.app import DEMO_JOBS, PROVIDERS, SESSION, SETTINGS
from exporter.config import ConfigError, HuaweiAccount, HuaweiCredentials, JobConfig
from exporter.providers.huawei_metastudio import HuaweiMetaStudio

# Not secrets: the simulator is built into every copy and listens on loopback only.
from exporter.simulator.metastudio import (
    DEMO_ACCESS_KEY,
    DEMO_PROJECT_ID,
    DEMO_SECRET_KEY,
    demo_simulator,
    start_simulator,
)

log = logging.getLogger(__name__)
DEMO_HUAWEI_ACCOUNT = "demo-huawei"


async def demo_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if DEMO_HUAWEI_ACCOUNT in settings.accounts:
        raise ConfigError([f"accounts.{DEMO_HUAWEI_ACCOUNT}: this name is reserved for --demo"])
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
    app[PROVIDERS][DEMO_HUAWEI_ACCOUNT] = HuaweiMetaStudio(
        account=DEMO_HUAWEI_ACCOUNT,
        config=account,
        credentials=HuaweiCredentials(
            access_key=SecretStr(DEMO_ACCESS_KEY), secret_key=SecretStr(DEMO_SECRET_KEY)
        ),
        session=app[SESSION],
        timeout=settings.request_timeout,
    )
    app[DEMO_JOBS] = [
        JobConfig(account=DEMO_HUAWEI_ACCOUNT, id=job_id, labels={"team": "demo"})
        for job_id in sim.job_ids()
    ]
    log.info("demo_started", extra={"simulator": base_url, "jobs": len(app[DEMO_JOBS])})
    yield
    await runner.cleanup()
