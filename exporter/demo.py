"""`--demo`: start every registered cloud's simulator on loopback, and lay their accounts and jobs
over the config like any configured account.

A demo account goes through the same config, credentials, provider, signer, poller and collector
as a real one; only its endpoint and its (fixed, public) credentials are different.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from exporter.clouds import CLOUDS, DemoCloud
from exporter.config import JobConfig, Overlay

log = logging.getLogger(__name__)
DEMO_LABELS = {"team": "demo"}


@contextlib.asynccontextmanager
async def demo_overlay() -> AsyncIterator[Overlay]:
    """The simulated clouds' overlay while they run; they stop when the context ends."""
    started: list[DemoCloud] = []
    try:
        for cloud in CLOUDS:
            started.append(await cloud.simulator())
        names = [cloud.demo_account for cloud in CLOUDS]
        overlay = Overlay(
            accounts={name: demo.account for name, demo in zip(names, started, strict=True)},
            jobs=[
                JobConfig(account=name, id=job_id, labels=DEMO_LABELS, kind=demo.kinds.get(job_id))
                for name, demo in zip(names, started, strict=True)
                for job_id in demo.job_ids
            ],
            environ={key: value for demo in started for key, value in demo.environ.items()},
        )
        log.info(
            "demo_started",
            extra={
                # One field per cloud, named as always: huawei=, tencent= (demo-huawei's URL, ...).
                **{
                    name.removeprefix("demo-"): demo.url
                    for name, demo in zip(names, started, strict=True)
                },
                "jobs": len(overlay.jobs),
            },
        )
        yield overlay
    finally:
        for demo in reversed(started):
            await demo.stop()
