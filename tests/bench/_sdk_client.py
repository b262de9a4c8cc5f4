"""Polling anchor (a): Huawei's official SDK, `MetaStudioClient.show_short_job` on 16 threads.

This is what a user polls with when not using the exporter. The benchmark runs it in a process
of its own, so `getrusage(RUSAGE_SELF)` is exactly its CPU, every thread included. It reports
marks (polls so far, CPU so far) on stdout, one JSON line each time the benchmark asks (see
`_marks`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import SdkException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkmetastudio.v1 import MetaStudioClient, ShowShortJobRequest

from tests.bench._marks import add_client_arguments, serve_marks


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench._sdk_client")
    parser.add_argument("--threads", type=int, default=16)
    add_client_arguments(parser)
    args = parser.parse_args(argv)
    job_ids = Path(args.ids_file).read_text().split()

    # One client for every thread, as an application would hold it; its connection pool is as
    # large as the thread count, so no thread waits for or throws away a connection.
    config = HttpConfig.get_default_config()
    config.timeout = (5, 30)
    config.pool_connections = 1
    config.pool_maxsize = args.threads
    client = (
        MetaStudioClient.new_builder()
        .with_credentials(
            BasicCredentials(os.environ["BENCH_HW_AK"], os.environ["BENCH_HW_SK"], args.project_id)
        )
        .with_http_config(config)
        .with_endpoints([f"http://127.0.0.1:{args.port}"])
        .build()
    )
    turn = itertools.count()  # next() on it is atomic under the GIL: a shared round robin
    polls = [0] * args.threads
    errors = [0] * args.threads
    stop = threading.Event()

    def poll_forever(slot: int) -> None:
        while not stop.is_set():
            job_id = job_ids[next(turn) % len(job_ids)]
            try:
                client.show_short_job(ShowShortJobRequest(job_id=job_id))
            except SdkException:
                errors[slot] += 1
                time.sleep(0.01)  # a broken simulator must not turn this into a busy loop
            else:
                polls[slot] += 1

    threads = [
        threading.Thread(target=poll_forever, args=(slot,), daemon=True)
        for slot in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    try:
        serve_marks(lambda: (sum(polls), sum(errors)))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)


if __name__ == "__main__":
    main()
