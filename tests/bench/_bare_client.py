"""Polling anchor (b): the least an asyncio poller can do per poll.

One `aiohttp.ClientSession`, 100 requests in flight, each one signed (SDK-HMAC-SHA256, with the
exporter's own per-account signer, as the simulator demands) and its body parsed with orjson; no
state, no schedule, no metrics. The exporter's polls per CPU-second are held against this. It
runs in a process of its own and reports marks like the SDK client (see `_marks`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson

from exporter.signing import huawei
from tests.bench._marks import add_client_arguments, serve_marks_async


async def poll(args: argparse.Namespace, job_ids: list[str]) -> None:
    access_key, secret_key = os.environ["BENCH_HW_AK"], os.environ["BENCH_HW_SK"]
    host = f"127.0.0.1:{args.port}"
    paths = [
        f"/v1/{args.project_id}/voice-training-manage/user/short-jobs/{quote(job_id, safe='~')}"
        for job_id in job_ids
    ]
    signer = huawei.GetSigner(
        host=host,
        headers={"Accept": "application/json", "X-Project-Id": args.project_id},
        access_key=access_key,
        secret_key=secret_key,
    )
    turn = itertools.count()
    counts = [0, 0]  # polls, errors

    async def poll_forever(session: aiohttp.ClientSession) -> None:
        while True:
            path = paths[next(turn) % len(paths)]
            headers = signer.sign(path, datetime.now(UTC))
            try:
                async with session.get(f"http://{host}{path}", headers=headers) as response:
                    body = await response.read()
                if response.status == 200 and isinstance(orjson.loads(body), dict):
                    counts[0] += 1
                    continue
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                pass
            counts[1] += 1
            await asyncio.sleep(0.01)  # a broken simulator must not turn this into a busy loop

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.in_flight),
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:
        workers = [asyncio.create_task(poll_forever(session)) for _ in range(args.in_flight)]
        try:
            await serve_marks_async(lambda: (counts[0], counts[1]))
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench._bare_client")
    parser.add_argument("--in-flight", type=int, default=100)
    add_client_arguments(parser)
    args = parser.parse_args(argv)
    asyncio.run(poll(args, Path(args.ids_file).read_text().split()))


if __name__ == "__main__":
    main()
