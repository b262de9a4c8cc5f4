"""The aiohttp application: routes, and the background work's life cycle (cleanup contexts)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import html
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.collector import JobCollector
from exporter.config import Discovery, JobConfig, Settings, TencentAccount
from exporter.discovery import JobLister, run_discovery
from exporter.model import Phase
from exporter.poller import Poller
from exporter.providers.base import Provider
from exporter.providers.registry import build_providers
from exporter.sharding import Shard
from exporter.store import JobState, Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", CollectorRegistry)
SESSION = web.AppKey("session", aiohttp.ClientSession)
PROVIDERS: web.AppKey[dict[str, Provider]] = web.AppKey("providers")
POLLER = web.AppKey("poller", Poller)
# Jobs the demo context adds next to the configured ones.
DEMO_JOBS = web.AppKey("demo_jobs", list[JobConfig])
# (account, what to look for): job discovery to run next to polling.
DISCOVERIES = web.AppKey("discoveries", list[tuple[str, Discovery]])
# Responses under this are sent as they are: gzip would cost more than it saves.
_GZIP_MIN_BYTES = 1024


def create_app(
    settings: Settings,
    *,
    providers: Mapping[str, Provider] | None = None,
    demo: bool = False,
    environ: Mapping[str, str] | None = None,
    wall: Callable[[], float] = time.time,
    shard: Shard | None = None,
) -> web.Application:
    """Build the app; polling starts when it starts and stops (cancelled, awaited) when it stops.

    `providers` replaces the ones built from `settings.accounts` (tests); `demo` adds the
    built-in simulated clouds and their jobs.
    """
    app = web.Application(client_max_size=64 * 1024)
    store = Store()
    registry = CollectorRegistry(auto_describe=True)
    shard = shard or Shard()
    registry.register(JobCollector(store.view, wall, shard=(shard.index, shard.total)))
    ProcessCollector(registry=registry)
    app[SETTINGS] = settings
    app[STORE] = store
    app[REGISTRY] = registry

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        # One pooled session for every cloud call; registered first so it closes last.
        async with aiohttp.ClientSession(
            # The shard in the User-Agent lets a cloud's access logs tell replicas apart.
            headers={"User-Agent": f"cloudjob-exporter/{__version__} (shard {shard})"},
            connector=aiohttp.TCPConnector(limit=settings.max_concurrency),
        ) as session:
            app[SESSION] = session
            built: dict[str, Provider] = (
                dict(providers)
                if providers is not None
                else build_providers(settings, session, environ)
            )
            app[PROVIDERS] = built
            app[DISCOVERIES] = [
                (name, account.discover)
                for name, account in settings.accounts.items()
                if isinstance(account, TencentAccount) and account.discover is not None
            ]
            yield

    async def poller_ctx(app: web.Application) -> AsyncIterator[None]:
        built: dict[str, Provider] = app[PROVIDERS]
        poller = Poller(store, built, settings, wall=wall, owns=shard.owns)
        poller.set_jobs([*settings.jobs, *app.get(DEMO_JOBS, [])])
        app[POLLER] = poller
        tasks = [asyncio.create_task(poller.run(), name="poller")]
        for account, spec in app[DISCOVERIES]:
            lister = built[account]
            if isinstance(lister, JobLister):
                tasks.append(
                    asyncio.create_task(
                        run_discovery(lister, spec, poller, store, wall=wall),
                        name=f"discovery {account}",
                    )
                )
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            await _finish(task)

    app.cleanup_ctx.append(session_ctx)
    if demo:
        from exporter.demo import demo_ctx

        app.cleanup_ctx.append(demo_ctx)
    app.cleanup_ctx.append(poller_ctx)
    app.router.add_get("/", landing_page)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/jobs", list_jobs)
    return app


async def _finish(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[REGISTRY])
    headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
    if "gzip" in request.headers.get("Accept-Encoding", "") and len(body) >= _GZIP_MIN_BYTES:
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    headers["Vary"] = "Accept, Accept-Encoding"
    return web.Response(body=body, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Never depends on a cloud being reachable."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    poller = request.app.get(POLLER)
    if poller is None or not poller.running:
        return web.Response(status=503, text="poller not running\n")
    return web.Response(text="ok\n")


def job_document(job: JobState) -> dict[str, Any]:
    """The JSON API's view of a job: everything the metrics cannot carry (reasons, suggestions)."""
    snapshot = job.snapshot
    doc: dict[str, Any] = {
        "account": job.key.account,
        "provider": job.provider,
        "job_id": job.key.job_id,
        "labels": dict(job.labels),
        "phase": job.phase.value,
        "failures_total": job.failures,
        "poll": {
            "polls_total": job.polls,
            "last_success": job.last_poll_success,
            "last_poll_at": job.last_poll_at,
            "last_success_at": job.last_success_at,
            "error": None
            if job.last_error is None
            else {
                "reason": job.last_error.reason,
                "status": job.last_error.status,
                "code": job.last_error.code,
                "message": job.last_error.message,
            },
        },
    }
    if snapshot is None:
        return doc
    doc.update(
        job_type=snapshot.job_type,
        state=snapshot.state,
        documented_state=snapshot.known_state,
        terminal=snapshot.terminal,
        created_at=snapshot.created_at,
        updated_at=snapshot.updated_at,
        started_at=snapshot.started_at,
        finished_at=snapshot.finished_at,
        queue_id=snapshot.queue_id,
        progress=snapshot.progress,
        details=dict(snapshot.extra),
        failure=None
        if snapshot.phase is not Phase.FAILED
        else {"code": snapshot.failure_code, "reason": snapshot.failure_reason},
    )
    if snapshot.assessments or snapshot.suggestion:
        doc["assessment"] = {
            "suggestion": snapshot.suggestion,
            "metrics": {
                item.metric: {
                    "expected": item.expected,
                    "actual": item.actual,
                    "status": item.status,
                    "suggestion": item.suggestion,
                    "suggestion_en": item.suggestion_en,
                    "actual_value": item.actual_value,
                    "expected_min": item.expected_min,
                    "expected_max": item.expected_max,
                }
                for item in snapshot.assessments
            },
        }
    if snapshot.parse_errors:
        doc["parse_errors"] = list(snapshot.parse_errors)
    return doc


async def list_jobs(request: web.Request) -> web.Response:
    account = request.query.get("account")
    phase = request.query.get("phase")
    if phase is not None and phase not in {p.value for p in Phase}:
        return _json({"error": f"unknown phase {phase!r}"}, status=400)
    jobs = [
        job_document(job)
        for job in sorted(request.app[STORE].view().jobs, key=lambda j: j.key)
        if (account is None or job.key.account == account)
        and (phase is None or job.phase.value == phase)
    ]
    return _json({"jobs": jobs})


def _json(document: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type="application/json")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cloudjob-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}</style></head>
<body><h1>cloudjob-exporter</h1>
<p>Prometheus exporter for asynchronous cloud jobs, version {version}.</p>
<ul><li><a href="metrics">Metrics</a></li><li><a href="api/v1/jobs">Jobs (JSON)</a></li>
<li><a href="healthz">Health</a></li><li><a href="readyz">Readiness</a></li></ul>
<h2>Accounts</h2>
<table><tr><th>account</th><th>provider</th><th>jobs</th>{phase_headers}</tr>{rows}</table>
</body></html>
"""


async def landing_page(request: web.Request) -> web.Response:
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for name, provider in request.app.get(PROVIDERS, {}).items():
        counts.setdefault((name, provider.provider), {})
    for job in request.app[STORE].view().jobs:
        per_phase = counts.setdefault((job.key.account, job.provider), {})
        per_phase[job.phase.value] = per_phase.get(job.phase.value, 0) + 1
    phases = [phase.value for phase in Phase]
    rows = "".join(
        f"<tr><td>{html.escape(account)}</td><td>{html.escape(provider)}</td>"
        f"<td>{sum(per_phase.values())}</td>"
        + "".join(f"<td>{per_phase.get(phase, 0)}</td>" for phase in phases)
        + "</tr>"
        for (account, provider), per_phase in sorted(counts.items())
    )
    page = _PAGE.format(
        version=html.escape(__version__),
        phase_headers="".join(f"<th>{phase}</th>" for phase in phases),
        rows=rows,
    )
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "Referrer-Policy": "no-referrer",
        },
    )
