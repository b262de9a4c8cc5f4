"""`make stack`: the demo exporter, a real Prometheus and a real Alertmanager on 127.0.0.1.

Prometheus scrapes the exporter and loads the bundled rules; Alertmanager receives the alerts.
The end-to-end test starts the same stack on free ports with shortened `for:` durations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dashboards.ports import AddressInUseError, lost_the_port, served_at, start_on_a_free_port
from dashboards.rules import rules_text

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@dataclass
class Stack:
    workdir: Path
    exporter_port: int
    prometheus_port: int
    alertmanager_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def exporter_url(self) -> str:
        return f"http://127.0.0.1:{self.exporter_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _write_alertmanager_config(stack: Stack, webhook_url: str | None) -> None:
    receiver: dict[str, Any] = {"name": "default"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    alertmanager = {
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "account", "job_id"],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "1h",
        },
        "receivers": [receiver],
    }
    (stack.workdir / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager, sort_keys=False))


def _write_prometheus_config(
    stack: Stack, *, scrape_interval: str, for_override: str | None
) -> None:
    """Needs the exporter's and Alertmanager's ports: written once both listen."""
    (stack.workdir / "rules.yaml").write_text(rules_text(for_override))
    prometheus: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": ["rules.yaml"],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{stack.alertmanager_port}"]}]}
            ]
        },
        "scrape_configs": [
            {
                "job_name": "cloudjob-exporter",
                "static_configs": [{"targets": [f"127.0.0.1:{stack.exporter_port}"]}],
            }
        ],
    }
    (stack.workdir / "prometheus.yml").write_text(yaml.safe_dump(prometheus, sort_keys=False))


def _spawn(stack: Stack, name: str, argv: Sequence[str], cwd: Path | None = None) -> None:
    log = (stack.workdir / f"{name}.log").open("wb")
    stack.processes[name] = subprocess.Popen(  # noqa: S603 - our own binaries and arguments
        list(argv), stdout=log, stderr=subprocess.STDOUT, cwd=cwd or stack.workdir
    )


def _wait_ready(stack: Stack, name: str, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = stack.processes[name]
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {process.returncode}:\n{stack.log(name)[-2000:]}"
            )
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=1) as response,  # noqa: S310 - loopback
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"{name} not ready at {url} within {timeout:.0f}s:\n{stack.log(name)[-2000:]}"
    )


def _start_exporter(stack: Stack, python: str, port: int | None, timeout: float) -> int:
    """The demo exporter; on port 0 unless told one, reading back the port it bound."""
    listen = f"127.0.0.1:{port or 0}"
    # From the checkout, so `-m exporter` is this tree's code even when it is not installed.
    _spawn(stack, "exporter", [python, "-m", "exporter", "--demo", "--listen", listen], cwd=REPO)
    deadline = time.monotonic() + timeout
    while not (found := served_at(stack.log("exporter"))):
        process = stack.processes["exporter"]
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"exporter did not start:\n{stack.log('exporter')[-2000:]}")
        time.sleep(0.1)
    return found[1]


def _start_listening(
    stack: Stack,
    name: str,
    argv: Callable[[int], list[str]],
    ready_path: str,
    *,
    port: int | None,
    timeout: float,
) -> int:
    """A program that takes its port as an argument: on `port`, or on a free one, started
    again on another if it loses the port to someone else before binding it."""

    def start(port: int) -> int:
        _spawn(stack, name, argv(port))
        try:
            _wait_ready(stack, name, f"http://127.0.0.1:{port}{ready_path}", timeout)
        except RuntimeError:
            if stack.processes[name].poll() is not None and lost_the_port(stack.log(name)):
                raise AddressInUseError(name) from None
            raise
        return port

    return start(port) if port is not None else start_on_a_free_port(start)


def start_stack(
    workdir: Path,
    *,
    ports: tuple[int, int, int] | None = None,
    scrape_interval: str = "5s",
    for_override: str | None = None,
    webhook_url: str | None = None,
    python: str = sys.executable,
) -> Stack:
    """Start exporter (demo), Alertmanager and Prometheus, each waited for until ready; on the
    given ports, or else on free ones."""
    for binary in (PROMETHEUS, ALERTMANAGER):
        if not Path(binary).exists():
            raise RuntimeError(
                f"{binary} is missing: apt-get install prometheus prometheus-alertmanager"
            )
    wanted: tuple[int | None, ...] = ports or (None, None, None)
    stack = Stack(workdir, 0, 0, 0)
    _write_alertmanager_config(stack, webhook_url)
    try:
        stack.exporter_port = _start_exporter(stack, python, wanted[0], 30)
        stack.alertmanager_port = _start_listening(
            stack,
            "alertmanager",
            lambda port: [
                ALERTMANAGER,
                f"--config.file={workdir / 'alertmanager.yml'}",
                f"--storage.path={workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            "/-/ready",
            port=wanted[2],
            timeout=30,
        )
        _write_prometheus_config(stack, scrape_interval=scrape_interval, for_override=for_override)
        stack.prometheus_port = _start_listening(
            stack,
            "prometheus",
            lambda port: [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Without it the first notification of an alert can wait a whole minute.
                "--rules.alert.resend-delay=1s",
            ],
            "/-/ready",
            port=wanted[1],
            timeout=60,
        )
        _wait_ready(stack, "exporter", f"{stack.exporter_url}/healthz", 30)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    """SIGTERM everything, then SIGKILL whatever is still running after 10 s."""
    for process in stack.processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 10
    for process in stack.processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(stack: Stack, expr: str) -> dict[str, Any]:
    """Prometheus' instant query API; the decoded JSON answer."""
    url = f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            answer: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        answer = json.load(exc)
    return answer


@contextlib.contextmanager
def running_stack(**kwargs: Any) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="cloudjob-stack-"))
    stack = start_stack(workdir, **kwargs)
    try:
        yield stack
    finally:
        stop_stack(stack)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exporter-port", type=int, default=9871)
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--alertmanager-port", type=int, default=9093)
    args = parser.parse_args(argv)
    ports = (args.exporter_port, args.prometheus_port, args.alertmanager_port)
    try:
        with running_stack(ports=ports) as stack:
            print(  # noqa: T201 - tells the user where to look
                f"exporter      {stack.exporter_url}/metrics\n"
                f"prometheus    {stack.prometheus_url}/alerts  (rules loaded, scraping every 5s)\n"
                f"alertmanager  {stack.alertmanager_url}\n"
                f"logs and configs in {stack.workdir}\n"
                "Ctrl-C stops everything.",
                flush=True,
            )
            signal.signal(signal.SIGTERM, _interrupt)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    except RuntimeError as exc:
        print(f"stack: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's error channel
        return 1
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
