"""The aiohttp application: routes, and the background work's life cycle (cleanup contexts)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.api import add_api_routes
from exporter.collector import SummaryCollector
from exporter.config import Overlay, Settings
from exporter.demo import demo_overlay
from exporter.exposition import OPENMETRICS, TEXT, JobExposition, inflate_pieces
from exporter.runtime import RUNTIME, Loader, Runtime
from exporter.sharding import Shard
from exporter.statuspage import add_status_routes
from exporter.store import Store
from exporter.webconfig import WebConfig, install_web_security


@dataclass(frozen=True, slots=True)
class Scrapes:
    """The per-job text cache and the lock that lets one scrape at a time use it."""

    exposition: JobExposition
    lock: asyncio.Lock
    wall: Callable[[], float]


STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", CollectorRegistry)
SCRAPES = web.AppKey("scrapes", Scrapes)
SESSION = web.AppKey("session", aiohttp.ClientSession)
# Request bodies past this are refused (413): a job registration is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024


def create_app(
    settings: Settings,
    *,
    demo: bool = False,
    environ: Mapping[str, str] | None = None,
    wall: Callable[[], float] = time.time,
    shard: Shard | None = None,
    loader: Loader | None = None,
    config_path: Path | None = None,
    web_config: WebConfig | None = None,
) -> web.Application:
    """Build the app; polling starts when it starts and stops (cancelled, awaited) when it stops.

    `demo` lays the built-in simulated clouds and their jobs over the config (and over every
    reloaded one); `loader` re-reads the config for hot reloads;
    `web_config` adds basic auth in front of every route (security headers are always on).
    """
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    store = Store()
    store.record_reload(ok=True, at=wall())
    registry = CollectorRegistry(auto_describe=True)
    shard = shard or Shard()
    runtime = Runtime(
        settings,
        store,
        environ=environ,
        wall=wall,
        shard=shard,
        loader=loader,
        config_path=config_path,
    )
    registry.register(
        SummaryCollector(
            store.view,
            wall,
            shard=(shard.index, shard.total),
            tasks=_loop_tasks,
            polling=runtime.polling_status,
        )
    )
    ProcessCollector(registry=registry)
    app[STORE] = store
    app[REGISTRY] = registry
    app[SCRAPES] = Scrapes(JobExposition(), asyncio.Lock(), wall)
    app[RUNTIME] = runtime

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        # One pooled session for every cloud call; registered first so it closes last.
        async with aiohttp.ClientSession(
            # The shard in the User-Agent lets a cloud's access logs tell replicas apart.
            headers={"User-Agent": f"cloudjob-exporter/{__version__} (shard {shard})"},
            connector=aiohttp.TCPConnector(limit=settings.max_concurrency),
        ) as session:
            app[SESSION] = session
            yield

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            overlay: Overlay | None = None
            if demo:
                overlay = await stack.enter_async_context(demo_overlay())
            await runtime.start(app[SESSION], overlay)
            try:
                yield
            finally:
                await runtime.stop()

    app.cleanup_ctx.append(session_ctx)
    app.cleanup_ctx.append(runtime_ctx)
    add_status_routes(app, wall)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_api_routes(app.router)
    install_web_security(app, web_config)
    return app


def _loop_tasks() -> int | None:
    """Tasks of the running loop: scrapes are served on it; None when collected off the loop."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return None


class _Without(Collector):
    """A registry's families but the excluded ones (by family name)."""

    def __init__(self, registry: CollectorRegistry, excluded: frozenset[str]) -> None:
        self._registry, self._excluded = registry, excluded

    def collect(self) -> Iterator[Metric]:
        return (metric for metric in self._registry.collect() if metric.name not in self._excluded)


def _without(registry: CollectorRegistry, excluded: frozenset[str]) -> CollectorRegistry:
    if not excluded:
        return registry
    filtered = CollectorRegistry(auto_describe=False)
    filtered.register(_Without(registry, excluded))
    return filtered


async def metrics(request: web.Request) -> web.StreamResponse:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    fmt = OPENMETRICS if content_type.startswith("application/openmetrics-text") else TEXT
    scrapes = request.app[SCRAPES]
    async with scrapes.lock:
        # The store's view is an immutable copy, so the thread renders it while polls go on.
        jobs = request.app[STORE].view().jobs
        # The running config's, so a reload changes it.
        selection = request.app[RUNTIME].settings.metrics.selection
        tail = encoder(_without(request.app[REGISTRY], selection.excluded))
        body = await asyncio.to_thread(
            scrapes.exposition.render, jobs, scrapes.wall(), tail, fmt, selection
        )
    headers = {
        "Content-Type": content_type,
        "Cache-Control": "no-store",
        "Vary": "Accept, Accept-Encoding",
    }
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)
    if request.method == "HEAD":
        return web.Response(headers=headers)
    # Inflated a piece at a time as it is sent: tens of thousands of jobs are hundreds of
    # megabytes of text, which the exporter would otherwise hold whole (twice, with the
    # transport's buffer) per scrape.
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    for piece in inflate_pieces(body):
        await response.write(piece)
    await response.write_eof()
    return response


def accepts_gzip(accept_encoding: str) -> bool:
    """prometheus_client.exposition.gzip_accepted, honouring a refusal too: that function
    (prometheus_client 0.26) compares only the coding's name, so `gzip;q=0` would get gzip.
    `x-gzip` counts as `gzip`, as RFC 9110 (8.4.1.3) asks of a recipient."""
    header = _X_GZIP.sub("gzip", accept_encoding)
    return gzip_accepted(header) and not _refuses_gzip(header)


_X_GZIP = re.compile(r"\bx-gzip\b", re.IGNORECASE)


def _refuses_gzip(accept_encoding: str) -> bool:
    """Whether the header gives gzip a weight of 0 (`gzip;q=0`, `GZIP; Q=0.000`)."""
    for coding in accept_encoding.split(","):
        name, *params = coding.split(";")
        if name.strip().lower() == "gzip":
            return any(_is_zero_weight(param) for param in params)
    return False


def _is_zero_weight(param: str) -> bool:
    """Whether a coding's parameter is `q=0` (any spelling: `Q=0.0`, `q = 0.000`)."""
    key, _, value = param.partition("=")
    if key.strip().lower() != "q":
        return False
    try:
        return float(value) == 0.0
    except ValueError:
        return False  # a malformed weight refuses nothing


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Never depends on a cloud being reachable."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    poller = request.app[RUNTIME].poller
    if poller is None or not poller.running:
        return web.Response(status=503, text="poller not running\n")
    return web.Response(text="ok\n")
