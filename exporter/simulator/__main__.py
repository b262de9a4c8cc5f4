"""`python -m exporter.simulator`: serve a demo MetaStudio for manual poking and benchmarks.

Credentials default to the published demo ones; a real-looking secret can come from the
CLOUDJOB_SIMULATOR_SK environment variable instead of the command line, where `ps` would show it.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from aiohttp import web

from exporter.simulator.metastudio import (
    DEMO_ACCESS_KEY,
    DEMO_JOBS,
    DEMO_PROJECT_ID,
    DEMO_SECRET_KEY,
    demo_simulator,
)

logger = logging.getLogger("exporter.simulator")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator", description="Serve a fake Huawei MetaStudio."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8180)
    parser.add_argument("--jobs", type=int, default=len(DEMO_JOBS), help="number of demo jobs")
    parser.add_argument("--speed", type=float, default=30.0, help="simulated seconds per second")
    parser.add_argument("--project-id", default=DEMO_PROJECT_ID)
    parser.add_argument("--access-key", default=DEMO_ACCESS_KEY)
    parser.add_argument(
        "--token", action="append", default=[], help="accepted X-Auth-Token (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 0:
        parser.error("--jobs must not be negative")
    if not args.speed > 0:
        parser.error("--speed must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sim = demo_simulator(
        project_id=args.project_id,
        access_key=args.access_key,
        secret_key=os.environ.get("CLOUDJOB_SIMULATOR_SK", DEMO_SECRET_KEY),
        speed=args.speed,
        jobs=args.jobs,
        tokens=args.token,
    )
    logger.info(
        "simulator_ready project_id=%s access_key=%s jobs=%d",
        args.project_id,
        args.access_key,
        len(sim.job_ids()),
    )
    web.run_app(sim.app(), host=args.host, port=args.port, print=logger.info)


if __name__ == "__main__":
    main()
