"""Loopback ports for programs that must be told their port up front.

The exporter binds `--listen 127.0.0.1:0` and prints the port it got: start it that way where
you can. Prometheus, Alertmanager and the simulators take a port number and cannot say which
one they bound, so a port is picked while free, released, and handed over. Another process can
take it in between; that race is not removed here, only survived: the start is retried on a new
port when the program reports the address in use.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
ATTEMPTS = 5
# What the exporter prints once it listens; with `--listen HOST:0` the port is the one it got.
_SERVING = re.compile(r"serving metrics on (https?)://\S+:(\d+)/metrics")


def served_at(output: str) -> tuple[str, int] | None:
    """(scheme, port) from the exporter's start-up line in `output`; None before it printed."""
    found = _SERVING.search(output)
    return (found[1], int(found[2])) if found else None


class AddressInUseError(Exception):
    """Raised by a `start` callable when its program lost its port to another process."""


def unused_port() -> int:
    """A loopback port nobody listens on at this moment (racy: see the module docstring)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def lost_the_port(log: str) -> bool:
    """Whether a program's output says its port was taken (Go, Python and aiohttp's wording)."""
    return "address already in use" in log.lower()


def start_on_a_free_port(start: Callable[[int], T], *, attempts: int = ATTEMPTS) -> T:
    """`start(port)` on a port free when picked; again on a new port while it raises
    AddressInUseError, up to `attempts` times (the last error propagates)."""
    for attempt in range(attempts):
        try:
            return start(unused_port())
        except AddressInUseError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
