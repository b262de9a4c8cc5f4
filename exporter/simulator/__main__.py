"""`python -m exporter.simulator`: serve a demo cloud for manual poking and benchmarks.

`--cloud huawei` (the default) serves MetaStudio, `--cloud tencent` serves Tencent CI.
Credentials default to the published demo ones; a real-looking secret (Huawei SK or Tencent
SecretKey) can come from the CLOUDJOB_SIMULATOR_SK environment variable instead of the command
line, where `ps` would show it. `--queue-cycle` pauses the second Tencent demo queue now and then,
as `--demo` does. `--quota-rps` (and `--quota-burst`) throttle the account as the cloud's
gateway would, HTTP 429 over the quota; `GET /_simulator/stats` counts answers and refusals.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from exporter.simulator.metastudio import (
    DEMO_ACCESS_KEY,
    DEMO_JOBS,
    DEMO_PROJECT_ID,
    DEMO_SECRET_KEY,
    MetaStudioSimulator,
    demo_simulator,
)
from exporter.simulator.metastudio_training import DEMO_TRAINING_JOBS
from exporter.simulator.tencent_ci import (
    DEMO_QUEUE_IDS,
    DEMO_TENCENT_BUCKET,
    DEMO_TENCENT_JOBS,
    DEMO_TENCENT_SECRET_ID,
    DEMO_TENCENT_SECRET_KEY,
    TencentCISimulator,
    demo_tencent_simulator,
)
from exporter.simulator.tencent_queues import start_queue_cycle

logger = logging.getLogger("exporter.simulator")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description="Serve a fake Huawei MetaStudio or Tencent Cloud CI.",
    )
    parser.add_argument("--cloud", choices=("huawei", "tencent"), default="huawei")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8180)
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"number of demo jobs (default: {len(DEMO_JOBS)} Huawei, "
        f"{len(DEMO_TENCENT_JOBS)} Tencent)",
    )
    parser.add_argument(
        "--training-jobs",
        type=int,
        default=None,
        help=f"Huawei: number of demo voice training jobs (default: {len(DEMO_TRAINING_JOBS)})",
    )
    parser.add_argument("--speed", type=float, default=30.0, help="simulated seconds per second")
    parser.add_argument("--project-id", default=DEMO_PROJECT_ID)
    parser.add_argument("--access-key", default=DEMO_ACCESS_KEY)
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="Huawei: accepted X-Auth-Token (repeatable); Tencent: makes the credential "
        "temporary, requiring this x-ci-security-token (the last one given)",
    )
    parser.add_argument("--bucket", default=DEMO_TENCENT_BUCKET, help="Tencent: BucketName-APPID")
    parser.add_argument("--secret-id", default=DEMO_TENCENT_SECRET_ID, help="Tencent: SecretId")
    parser.add_argument(
        "--queue-cycle",
        action="store_true",
        help=f"Tencent: pause queue {DEMO_QUEUE_IDS[1]} for 90 s of every 5 minutes",
    )
    parser.add_argument(
        "--quota-rps",
        type=float,
        default=None,
        help="requests per second the account may make (real seconds); over it, HTTP 429 "
        "(default: no quota)",
    )
    parser.add_argument(
        "--quota-burst",
        type=float,
        default=None,
        help="requests the quota lets through at once (default: one second's worth)",
    )
    args = parser.parse_args(argv)
    if args.quota_rps is not None and not args.quota_rps > 0:
        parser.error("--quota-rps must be positive")
    if args.quota_burst is not None and args.quota_rps is None:
        parser.error("--quota-burst needs --quota-rps")
    if args.quota_burst is not None and not args.quota_burst >= 1:
        parser.error("--quota-burst must be at least 1")
    if args.queue_cycle and args.cloud != "tencent":
        parser.error("--queue-cycle needs --cloud tencent")
    if args.jobs is None:
        args.jobs = len(DEMO_TENCENT_JOBS if args.cloud == "tencent" else DEMO_JOBS)
    if args.jobs < 0:
        parser.error("--jobs must not be negative")
    if args.training_jobs is not None and args.cloud != "huawei":
        parser.error("--training-jobs needs --cloud huawei")
    if args.training_jobs is None:
        args.training_jobs = len(DEMO_TRAINING_JOBS)
    if args.training_jobs < 0:
        parser.error("--training-jobs must not be negative")
    if not args.speed > 0:
        parser.error("--speed must be positive")
    return args


def _app(
    simulator: TencentCISimulator | MetaStudioSimulator, *, queue_cycle: bool
) -> web.Application:
    """The simulator's application; with `queue_cycle` it also runs the queue cycle while it
    serves."""
    app = simulator.app()
    if queue_cycle and isinstance(simulator, TencentCISimulator):
        tencent = simulator

        async def cycle(_: web.Application) -> AsyncIterator[None]:
            stop = start_queue_cycle(tencent, DEMO_QUEUE_IDS[1])
            yield
            await stop()

        app.cleanup_ctx.append(cycle)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    simulator: TencentCISimulator | MetaStudioSimulator
    if args.cloud == "tencent":
        simulator = demo_tencent_simulator(
            bucket=args.bucket,
            secret_id=args.secret_id,
            secret_key=os.environ.get("CLOUDJOB_SIMULATOR_SK", DEMO_TENCENT_SECRET_KEY),
            token=args.token[-1] if args.token else None,
            speed=args.speed,
            jobs=args.jobs,
        )
        who = f"cloud=tencent bucket={args.bucket} secret_id={args.secret_id}"
    else:
        simulator = demo_simulator(
            project_id=args.project_id,
            access_key=args.access_key,
            secret_key=os.environ.get("CLOUDJOB_SIMULATOR_SK", DEMO_SECRET_KEY),
            speed=args.speed,
            jobs=args.jobs,
            tokens=args.token,
            training_jobs=args.training_jobs,
        )
        who = (
            f"project_id={args.project_id} access_key={args.access_key} "
            f"training_jobs={len(simulator.training_job_ids())}"
        )
    simulator.quota.configure(args.quota_rps, args.quota_burst)
    logger.info("simulator_ready %s jobs=%d", who, len(simulator.job_ids()))
    app = _app(simulator, queue_cycle=args.queue_cycle)
    web.run_app(app, host=args.host, port=args.port, print=logger.info)


if __name__ == "__main__":
    main()
