"""Command line: flags -> settings -> logging -> the app. A bad config exits 2, no traceback."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from exporter import __version__
from exporter.api import MaskingAccessLogger
from exporter.app import create_app
from exporter.clouds import cloud_of
from exporter.config import ConfigError, Settings, check_credentials, load_settings
from exporter.eventloop import CHOICES, EventLoopError, check_choice, new_event_loop
from exporter.logs import setup_logging
from exporter.sharding import Shard, ShardError, resolve_shard
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")
PROG = "cloudjob-exporter"
# The demo should move within seconds, not minutes; a config file may still set these.
DEMO_DEFAULTS = {"poll_interval": 5.0, "terminal_poll_interval": 15.0}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Prometheus exporter for asynchronous cloud jobs."
    )
    _file_flag(
        parser,
        "--config.file",
        "--config",
        dest="config",
        env="CLOUDJOB_CONFIG",
        what="YAML config file",
    )
    _file_flag(
        parser,
        "--web.config.file",
        dest="web_config_file",
        env="CLOUDJOB_WEB_CONFIG_FILE",
        what="TLS and basic auth, exporter-toolkit format",
    )
    parser.add_argument(
        "--web.listen-address",
        "--listen",
        dest="listen",
        metavar="HOST:PORT",
        help="address to serve on (default 0.0.0.0:9871)",
    )
    parser.add_argument(
        "--web.external-prometheus-url",
        dest="external_prometheus_url",
        metavar="URL",
        help="Prometheus as people open it: the job page links to its series there",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="also poll built-in simulated clouds; needs no credentials",
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config, print every problem, exit"
    )
    parser.add_argument(
        "--log.level",
        "--log-level",
        dest="log_level",
        choices=["debug", "info", "warning", "error"],
        metavar="debug|info|warning|error",
        type=str.lower,
        help="overrides the config's log_level",
    )
    parser.add_argument(
        "--log.format",
        "--log-format",
        dest="log_format",
        choices=["text", "json"],
        metavar="text|json",
        type=str.lower,
        help="overrides the config's log_format",
    )
    parser.add_argument(
        "--shard",
        metavar="N|auto",
        help="poll only shard N of the jobs; auto: the StatefulSet pod ordinal (POD_NAME)",
    )
    parser.add_argument(
        "--total-shards", type=int, metavar="M", help="number of shards (default 1: all jobs)"
    )
    parser.add_argument(
        "--event-loop",
        type=str.lower,
        default=os.environ.get("CLOUDJOB_EVENT_LOOP") or "auto",
        metavar="|".join(CHOICES),
        help="auto (default): uvloop when installed, else asyncio's own (env CLOUDJOB_EVENT_LOOP)",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser.parse_args(argv)


def _file_flag(
    parser: argparse.ArgumentParser, *flags: str, dest: str, env: str, what: str
) -> None:
    """A file flag whose default comes from an environment variable, as a container sets it."""
    parser.add_argument(
        *flags,
        dest=dest,
        type=Path,
        default=os.environ.get(env) or None,
        metavar="FILE",
        help=f"{what} (env {env})",
    )


def _shard_flag(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def _fail(problems: Sequence[str]) -> int:
    for problem in problems:
        print(f"{PROG}: {problem}", file=sys.stderr)  # noqa: T201 - the CLI's error channel
    return 2


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - all interfaces by default


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("listen", args.listen),
            ("log_level", args.log_level),
            ("log_format", args.log_format),
            ("shard", _shard_flag(args.shard)),
            ("total_shards", args.total_shards),
            ("external_prometheus_url", args.external_prometheus_url),
        )
        if value is not None
    }
    try:
        settings = load_settings(
            args.config, overrides, defaults=DEMO_DEFAULTS if args.demo else None
        )
    except ConfigError as exc:
        return _fail(exc.problems)
    problems = check_credentials(settings)
    prefix = f"{args.config}: " if args.config else ""
    if problems:
        return _fail([prefix + problem for problem in problems])
    try:
        shard = resolve_shard(settings.shard, settings.total_shards, os.environ)
    except ShardError as exc:
        return _fail([f"{prefix}shard: {exc}"])
    try:
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except ConfigError as exc:
        return _fail(exc.problems)
    try:
        check_choice(args.event_loop)
    except EventLoopError as exc:
        return _fail([str(exc)])
    if args.check_config:
        print(  # noqa: T201 - the answer the user asked for
            f"{args.config or 'defaults'}: ok ({len(settings.accounts)} accounts, "
            f"{len(settings.jobs)} jobs)"
        )
        return 0
    setup_logging(settings.log_level, settings.log_format)

    def reload_settings() -> Settings:
        return load_settings(args.config, overrides, defaults=DEMO_DEFAULTS if args.demo else None)

    return serve(
        settings,
        demo=args.demo,
        shard=shard,
        loader=reload_settings if args.config else None,
        config_path=args.config,
        web_config=web_config,
        event_loop=args.event_loop,
    )


def serve(
    settings: Settings,
    *,
    demo: bool,
    shard: Shard,
    loader: Callable[[], Settings] | None = None,
    config_path: Path | None = None,
    web_config: WebConfig | None = None,
    event_loop: str = "auto",
) -> int:
    host, port = _split_listen(settings.listen)
    discovering = any(cloud_of(a).discovery(a) is not None for a in settings.accounts.values())
    if not settings.jobs and not demo and not discovering:
        log.warning("no_jobs_configured", extra={"hint": "add jobs to the config, or try --demo"})
    shown = "localhost" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104
    shown = f"[{shown}]" if ":" in shown else shown
    ssl_context = web_config.ssl_context if web_config is not None else None
    scheme = "https" if ssl_context is not None else "http"
    try:
        loop, loop_name = new_event_loop(event_loop)
    except EventLoopError as exc:
        return _fail([str(exc)])
    log.info(
        "starting",
        extra={
            "version": __version__,
            "listen": settings.listen,
            "demo": demo,
            "accounts": len(settings.accounts),
            "jobs": len(settings.jobs),
            "shard": str(shard),
            "tls": ssl_context is not None,
            "basic_auth": bool(web_config and web_config.users),
            "event_loop": loop_name,
        },
    )
    try:
        # Port 0 asks the kernel for a free port; bind here so the line below can name it.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, 0), family=family) if port == 0 else None
    except OSError as exc:
        return _fail([f"cannot listen on {settings.listen}: {exc.strerror or exc}"])
    if sock is not None:
        port = sock.getsockname()[1]
    try:
        web.run_app(
            create_app(
                settings,
                demo=demo,
                shard=shard,
                loader=loader,
                config_path=config_path,
                web_config=web_config,
            ),
            host=None if sock else host,
            port=None if sock else port,
            sock=sock,
            ssl_context=ssl_context,
            shutdown_timeout=3.0,
            loop=loop,
            access_log=logging.getLogger("aiohttp.access"),
            access_log_class=MaskingAccessLogger,
            print=lambda _: print(  # noqa: T201 - tells the user where to look
                f"{PROG} {__version__}: serving metrics on {scheme}://{shown}:{port}/metrics",
                flush=True,
            ),
        )
    except OSError as exc:
        return _fail([f"cannot listen on {settings.listen}: {exc.strerror or exc}"])
    except ConfigError as exc:
        return _fail(exc.problems)
    return 0


if __name__ == "__main__":
    sys.exit(main())
