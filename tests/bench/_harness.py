"""Processes, /proc readings and plain HTTP: everything the benchmark measures through.

Black-box on purpose: the exporter is only ever a process that answers HTTP, so the same harness
measures the scrape path before and after a rewrite of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

from dashboards.ports import AddressInUseError, lost_the_port, start_on_a_free_port

REPO = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = resource.getpagesize()
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
# How long a process that was asked to stop gets before it is killed.
_STOP_GRACE = 3.0
_PR_SET_PDEATHSIG = 1


class BenchError(Exception):
    """An expected failure (a process did not come up, a figure cannot be taken): reported in a
    few lines with the culprit's last log lines, not as a traceback."""


def progress(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the table."""
    print(f"bench: {message}", file=sys.stderr, flush=True)  # noqa: T201


def start_listening(
    processes: Processes,
    name: str,
    argv: Callable[[int], Sequence[str]],
    ready: Callable[[Process, int], None],
    env: Mapping[str, str] | None = None,
) -> tuple[Process, int]:
    """A program that takes its port as an argument, on a free one; `ready(process, port)`
    waits for it. Started again on another port if it loses its port before binding it (see
    dashboards.ports: the pick-release-bind race is survived, not removed)."""

    def start(port: int) -> tuple[Process, int]:
        process = processes.start(name, argv(port), env)
        try:
            ready(process, port)
        except BenchError:
            if process.popen.poll() is not None and lost_the_port(process.tail(50)):
                processes.stop(process)
                raise AddressInUseError(name) from None
            raise
        return process, port

    return start_on_a_free_port(start)


def system_busy_seconds() -> float:
    """CPU-seconds all CPUs have spent busy since boot (idle and iowait left out), so that what
    other processes used during a window shows: the figures are only as good as the box is quiet.
    Steal time counts as busy: a hypervisor's other guests take CPU from us too."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: with fewer than 100 samples, p99 is the slowest one (no interpolation)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(len * q / 100)
    return ordered[int(rank) - 1]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _pending: bytes = field(default=b"", repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "    (no log)"
        last = text.splitlines()[-lines:] or ["(empty)"]
        return "\n".join(f"    {line}" for line in last)

    def failure(self, message: str) -> BenchError:
        return BenchError(
            f"{self.name}: {message}\n  last lines of {self.log_path}:\n{self.tail()}"
        )

    def check_running(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise self.failure(f"exited with code {code}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the process itself, all threads (its own rusage), from /proc."""
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                # The command name may hold spaces and parentheses: count from the last ')'.
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            raise self.failure("is gone (no /proc entry)") from None
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_bytes(self) -> int:
        try:
            with open(f"/proc/{self.pid}/statm") as statm:
                return int(statm.read().split()[1]) * PAGE_SIZE
        except OSError:
            raise self.failure("is gone (no /proc entry)") from None

    def read_line(self, timeout: float) -> str:
        """The next line the process writes to its stdout pipe; BenchError after `timeout`."""
        assert self.popen.stdout is not None, f"{self.name} has no stdout pipe"
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.failure(f"reported nothing for {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    try:
                        code = self.popen.wait(timeout=_STOP_GRACE)
                    except subprocess.TimeoutExpired:
                        code = None
                    raise self.failure(f"closed its output early (exit code {code})")
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()


class Processes:
    """Every process the benchmark starts, so that every one is stopped on the way out."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._running: list[Process] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        pipe_stdout: bool = False,
    ) -> Process:
        """`python argv...` from the repository root; its output goes to a log file."""
        slug = "".join(c if c.isalnum() else "-" for c in name)
        log_path = self._workdir / f"{slug}-{len(self._running)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, *argv],
                cwd=REPO,
                env=child_environment(env or {}),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else log,
                stderr=log,
                preexec_fn=_die_with_parent,
                # Its own session, so its own process group: the benchmark SIGSTOPs clients, and
                # when a group with a stopped member is orphaned (the shell that started a
                # detached `make bench` exits) the kernel sends the whole group SIGHUP.
                start_new_session=True,
            )
        process = Process(name, popen, log_path)
        self._running.append(process)
        return process

    def stop(self, process: Process) -> None:
        """SIGTERM, then SIGKILL after a grace period; waits, so the CPU is free afterwards."""
        if process.popen.poll() is None:
            process.popen.terminate()
            try:
                process.popen.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
        if process.popen.stdout is not None:
            process.popen.stdout.close()
        if process in self._running:
            self._running.remove(process)

    def stop_all(self) -> None:
        for process in list(reversed(self._running)):
            if process.popen.poll() is None:
                process.popen.kill()
        for process in list(self._running):
            self.stop(process)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark dies, even by SIGKILL, so that no
    simulator or exporter is left polling on its own."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """Ours without proxy settings (loopback must never go through a proxy), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARIABLES}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes  # empty unless kept
    size: int  # bytes of body received, as sent (gzip stays gzip)
    # From sending the request to the last byte of the body.
    seconds: float


# Timed reads go through one reused buffer: as fast as `curl -o /dev/null`, where collecting a
# 186 MiB body into one bytes object would add a third to a 50k-job plain scrape.
_DISCARD = memoryview(bytearray(1 << 20))


class GetOptions(TypedDict, total=False):
    """What `http_get` takes besides port and path, for the functions that pass it on."""

    headers: Mapping[str, str] | None
    timeout: float
    keep_body: bool


def http_get(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    *,
    keep_body: bool = True,
) -> Answer:
    """One GET on a fresh loopback connection; the body comes back as sent (not decompressed),
    or only its size without `keep_body`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.connect()
        started = time.perf_counter()
        connection.request("GET", path, headers=dict(headers or {}))
        response = connection.getresponse()
        if keep_body:
            body = response.read()
            size = len(body)
        else:
            body, size = b"", 0
            while chunk := response.readinto(_DISCARD):
                size += chunk
        seconds = time.perf_counter() - started
        return Answer(response.status, dict(response.headers), body, size, seconds)
    finally:
        connection.close()


def get_ok(process: Process, port: int, path: str, **options: Unpack[GetOptions]) -> Answer:
    """GET that must answer 200; anything else is the process's failure, with its log."""
    try:
        answer = http_get(port, path, **options)
    except (OSError, http.client.HTTPException) as exc:
        process.check_running()
        raise process.failure(f"GET {path} failed: {type(exc).__name__}: {exc}") from None
    if answer.status != 200:
        raise process.failure(f"GET {path} answered {answer.status}: {answer.body[:200]!r}")
    return answer


def wait_until_serving(process: Process, port: int, path: str, timeout: float) -> None:
    """Until GET `path` answers 200; BenchError naming the process if it dies or never does."""
    _wait_until(
        process,
        lambda: http_get(port, path, timeout=timeout).status == 200,
        timeout,
        f"did not answer GET {path}",
    )


def wait_for_port(process: Process, port: int, timeout: float) -> None:
    """Until the process accepts TCP connections on `port`."""

    def accepts() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    _wait_until(process, accepts, timeout, f"did not listen on 127.0.0.1:{port}")


def _wait_until(process: Process, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `ready` (connection errors count as not yet) while the process runs."""
    deadline = time.monotonic() + timeout
    while True:
        process.check_running()
        with contextlib.suppress(OSError, http.client.HTTPException):
            if ready():
                return
        if time.monotonic() > deadline:
            raise process.failure(f"{what} within {timeout:g} s")
        time.sleep(0.1)
