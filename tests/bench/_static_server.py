"""Scrape anchor (b), the lower bound: an aiohttp server answering /metrics with fixed bytes.

It serves a body the exporter produced, as it is or pre-gzipped, so its latency is what the
HTTP server and the transfer cost with no work per scrape at all. It runs in a process of its
own, as the exporter does, so the client reading it does not share its CPU.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def make_app(plain: bytes, gzipped: bytes) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(
                body=gzipped,
                headers={"Content-Type": CONTENT_TYPE, "Content-Encoding": "gzip"},
            )
        return web.Response(body=plain, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench._static_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plain", type=Path, required=True, help="the body to serve")
    parser.add_argument("--gzip", type=Path, required=True, help="the same body, gzipped")
    args = parser.parse_args(argv)
    app = make_app(args.plain.read_bytes(), args.gzip.read_bytes())
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
