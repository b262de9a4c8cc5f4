"""End to end: Debian's Prometheus scrapes the demo exporter with the bundled rules loaded; every
dashboard query is answered; a failing demo job's alert reaches a webhook through a real
Alertmanager. Polls for results, never sleeps a fixed time."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dashboards import ports
from dashboards.ports import AddressInUseError, lost_the_port, start_on_a_free_port, unused_port
from dashboards.stack import Stack, query, running_stack
from tests.support import eventually_async

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "cloudjob-exporter.json"
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${account}": ".*",
    "${provider}": ".*",
    "${job_type}": ".*",
    "$account": ".*",
    "$provider": ".*",
    "$job_type": ".*",
}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every Prometheus target, variables substituted."""
    model = json.loads(DASHBOARD.read_text())
    out = []
    for panel in _panels(model["panels"]):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue
            for variable, value in SUBSTITUTIONS.items():
                expr = expr.replace(variable, value)
            out.append((panel.get("title", "?"), expr))
    return out


def _has_data(stack: Stack, expr: str) -> bool:
    answer = query(stack, expr)
    return answer.get("status") == "success" and bool(answer["data"]["result"])


@pytest.fixture
async def webhook() -> Any:
    received: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/alerts", receive)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, received
    await server.close()


async def test_prometheus_answers_every_dashboard_query_and_alerts_reach_the_webhook(
    webhook: tuple[TestServer, list[dict[str, Any]]],
) -> None:
    import asyncio

    server, received = webhook
    queries = dashboard_queries()
    assert len(queries) >= 10
    with running_stack(
        scrape_interval="1s",
        for_override="0s",
        webhook_url=str(server.make_url("/alerts")),
    ) as stack:

        def settled() -> bool:
            return all(
                _has_data(stack, expr)
                for expr in (
                    "cloudjob_job_state",
                    'cloudjob_jobs{provider="tencent_ci"}',
                    "cloudjob_completed_job_duration_seconds_count",
                    "cloudjob:api_requests:rate5m",
                )
            )

        await eventually_async(
            lambda: asyncio.to_thread(settled),
            within=90,
            interval=0.5,
            what="demo data in Prometheus",
        )

        def answered() -> list[tuple[str, str, dict[str, Any]]]:
            return [(title, expr, query(stack, expr)) for title, expr in queries]

        results = await asyncio.to_thread(answered)
        invalid = [(t, e, a.get("error")) for t, e, a in results if a.get("status") != "success"]
        assert invalid == [], invalid
        empty = [(t, e) for t, e, a in results if not a["data"]["result"]]
        coverage = 1 - len(empty) / len(results)
        print(f"e2e: {len(results)} dashboard queries, {coverage:.0%} with data; empty: {empty}")  # noqa: T201
        assert coverage >= 0.9, (
            f"{coverage:.0%} of {len(results)} queries have data; empty: {empty}"
        )

        def alert_arrived() -> bool:
            return any(
                alert["labels"].get("alertname") == "CloudJobFailed" and alert["status"] == "firing"
                for message in received
                for alert in message.get("alerts", [])
            )

        try:
            await eventually_async(alert_arrived, within=60, interval=0.5, what="CloudJobFailed")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; alertmanager log:\n{stack.log('alertmanager')[-2000:]}"
            ) from None
        alert = next(
            a for m in received for a in m["alerts"] if a["labels"]["alertname"] == "CloudJobFailed"
        )
        assert alert["labels"]["severity"] == "warning"
        assert alert["labels"]["code"]
        assert alert["annotations"]["runbook_url"].endswith("#cloudjobfailed")


def test_a_start_that_loses_its_port_is_tried_again_on_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picks = iter([taken.getsockname()[1], unused_port()])
        monkeypatch.setattr(ports, "unused_port", lambda: next(picks))
        tried: list[int] = []

        def start(port: int) -> socket.socket:
            tried.append(port)
            server = socket.socket()
            try:
                server.bind(("127.0.0.1", port))
            except OSError as exc:
                server.close()
                if lost_the_port(str(exc)):
                    raise AddressInUseError(port) from exc
                raise
            return server

        with start_on_a_free_port(start) as server:
            assert tried == [taken.getsockname()[1], server.getsockname()[1]]


@pytest.mark.parametrize(
    "line",
    [
        'msg="Error listening" err="listen tcp 127.0.0.1:9090: bind: address already in use"',
        "OSError: [Errno 98] error while attempting to bind on address "
        "('127.0.0.1', 8180): address already in use",
    ],
    ids=["prometheus", "aiohttp"],
)
def test_the_lost_port_is_recognised_in_what_the_programs_log(line: str) -> None:
    assert lost_the_port(line)
    assert not lost_the_port("level=info msg=ready")
