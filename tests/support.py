"""What many tests need: waiting without fixed sleeps, reading an exposition, a real exporter.

Ports: a server that can bind port 0 picks its own (aiohttp's test servers do; the exporter
takes `--listen 127.0.0.1:0` and prints the port it bound). Picking a "free" port first, closing
it and handing the number to a server is a race another process can win in between; for
programs that need a number up front, `dashboards.ports.start_on_a_free_port` retries the start.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from dashboards.ports import served_at
from exporter.simulator.metastudio import Simulator, start_simulator

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
Labels = frozenset[tuple[str, str]]
# pytest-aiohttp's `aiohttp_server` fixture: an app in, a started TestServer out.
ServerFactory = Callable[..., Awaitable[TestServer]]


# --- waiting -----------------------------------------------------------------------------------


class _Patience:
    """The deadline and the last answer, shared by `eventually` and `eventually_async`."""

    def __init__(self, within: float, what: str) -> None:
        self.within, self.what = within, what
        self.deadline = time.monotonic() + within
        self.last: object = None

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            last = self.last[-3000:] if isinstance(self.last, str) else repr(self.last)
            raise AssertionError(f"{self.what}: not within {self.within} s (last: {last})")


def eventually(
    check: Callable[[], T],
    *,
    within: float = 10,
    interval: float = 0.05,
    what: str = "the condition",
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """Call `check` until it returns something truthy and return that; fail after `within` s.

    `within` is a hang guard, not an assertion on speed: it should be generous. Exceptions of
    the `ignoring` types (say, connection refused while a server starts) count as "not yet".
    """
    patience = _Patience(within, what)
    while True:
        try:
            if result := check():
                return result
            patience.last = result
        except ignoring as exc:
            patience.last = exc
        patience.check_deadline()
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], T | Awaitable[T]],
    *,
    within: float = 10,
    interval: float = 0.05,
    what: str = "the condition",
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """`eventually` on a running event loop; `check` may be a plain or a coroutine function."""
    patience = _Patience(within, what)
    while True:
        try:
            outcome = check()
            result = await outcome if inspect.isawaitable(outcome) else outcome
            if result:
                return result
            patience.last = result
        except ignoring as exc:
            patience.last = exc
        patience.check_deadline()
        await asyncio.sleep(interval)


async def eventually_off_loop(check: Callable[[], object], within: float = 10) -> None:
    """`eventually` for a blocking check (a scrape of a process, a read of a file) while the
    loop goes on serving the test's in-process clouds: the check runs in a thread."""
    await eventually_async(lambda: asyncio.to_thread(check), within=within)


# --- simulated time and clouds -----------------------------------------------------------------

# A fixed moment for simulated clocks (2025-06-15T23:06:40+08:00), so answers are repeatable.
T0 = 1_750_000_000.0


@dataclass
class FakeClock:
    """A clock that stands still until the test moves `now`; sleeping on it moves it at once,
    and `slept` records each sleep, so code under test can wait without the test waiting."""

    now: float
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class SimulatedCloud(Protocol):
    def job_ids(self) -> list[str]: ...

    def state_of(self, job_id: str) -> str: ...


def states_over(
    sim: SimulatedCloud, clock: FakeClock, seconds: float, step: float = 0.1
) -> tuple[set[str], set[str], set[str]]:
    """Moving `clock` on by `seconds` in `step`s: the states the simulator's jobs were in at
    the start, every state seen on the way, and the jobs whose state changed."""
    at_start = {sim.state_of(job_id) for job_id in sim.job_ids()}
    previous = {job_id: sim.state_of(job_id) for job_id in sim.job_ids()}
    seen: set[str] = set()
    changed: set[str] = set()
    start = clock.now
    for tick in range(1, round(seconds / step) + 1):
        clock.now = start + tick * step
        for job_id in sim.job_ids():
            state = sim.state_of(job_id)
            seen.add(state)
            if state != previous[job_id]:
                changed.add(job_id)
            previous[job_id] = state
    return at_start, seen, changed


@asynccontextmanager
async def serving(sim: Simulator) -> AsyncIterator[str]:
    """A simulator on a loopback port for the block: its base URL; stopped afterwards."""
    runner, url = await start_simulator(sim)
    try:
        yield url
    finally:
        await runner.cleanup()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Watched:
    """A simulator served behind a test's middleware, which sees every request where the cloud
    does: to count them by kind, or to answer some itself."""

    sim: Simulator
    middleware: Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

    def app(self) -> web.Application:
        app = self.sim.app()

        @web.middleware
        async def watch(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self.middleware(request, handler)

        app.middlewares.append(watch)
        return app


# What an in-process exporter's config starts with when a test wants several poll rounds a second
# and a failing request to show at once, not after retries.
FAST_POLLING = """poll_interval: 0.2s
terminal_poll_interval: 0.2s
max_retries: 0
request_timeout: 2
"""


# --- reading an exposition ---------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of a text exposition, keyed by (sample name, label set)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series(text: str | bytes, name: str) -> dict[Labels, float]:
    """The samples called `name`, by label set."""
    if isinstance(text, bytes):
        text = text.decode()
    return {labels: number for (sample, labels), number in samples(text).items() if sample == name}


def value(text: str, name: str, **labels: str) -> float | None:
    """The first sample called `name` whose labels include `labels`; None when there is none."""
    wanted = set(labels.items())
    for (sample, have), number in samples(text).items():
        if sample == name and wanted <= have:
            return number
    return None


def value_or_fail(text: str, name: str, **labels: str) -> float:
    """`value`, for a sample the test needs: its absence fails the test, naming it."""
    found = value(text, name, **labels)
    assert found is not None, f"no {name}{labels or ''} in the exposition:\n{text[-2000:]}"
    return found


async def scrape(server: TestServer, path: str = "/metrics") -> str:
    """GET the exposition of an in-process exporter; it must answer 200."""
    async with aiohttp.ClientSession() as session, session.get(server.make_url(path)) as response:
        assert response.status == 200, response.status
        return await response.text()


async def scrape_until(
    server: TestServer,
    predicate: Callable[[str], bool],
    *,
    within: float = 10,
    what: str = "the condition",
) -> str:
    """Scrape until `predicate` holds for the exposition, and return that exposition."""

    async def matching() -> str:
        text = await scrape(server)
        return text if predicate(text) else ""

    return await eventually_async(matching, within=within, what=what)


# --- the exporter as a process ------------------------------------------------------------------


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m exporter ARGS` to its end, from the repository root. `env` adds to this
    process's environment, `environ` replaces it; the timeout is a hang guard."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=REPO,
        env={**(os.environ if environ is None else environ), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class ExporterProcess:
    """A real `python -m exporter` on a port it picked; stderr goes to `log`."""

    process: subprocess.Popen[str]
    port: int
    scheme: str
    line: str
    log: Path
    config: Path | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait (the timeout only guards against a hang); returns the exit status.

        Whatever the exporter printed after its first line is appended to `line`.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        rest, _ = self.process.communicate(timeout=timeout)
        self.line += rest or ""
        return self.process.returncode


def start_exporter(
    *args: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    within: float = 30,
) -> ExporterProcess:
    """Start the exporter with `args` on 127.0.0.1 and a port of its choosing; return once serving.

    The exporter prints its address only after it listens, so no connect-retry loop is needed.
    """
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args, "--listen", "127.0.0.1:0"],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    deadline = time.monotonic() + within
    line = ""
    while not line and process.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline()
    found = served_at(line)
    if found is None:
        if process.poll() is None:
            process.kill()
        process.wait()
        raise AssertionError(f"the exporter did not start: {line!r}\n{log.read_text()[-3000:]}")
    assert found[1] != 0, f"the exporter printed port 0, not the one it bound: {line!r}"
    config = Path(args[args.index("--config") + 1]) if "--config" in args else None
    return ExporterProcess(process, found[1], found[0], line, log, config)


def http(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """A blocking HTTP exchange with a process; answers JSON-decoded where they are JSON."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _decoded(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decoded(exc.read())


def _decoded(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return raw.decode()
