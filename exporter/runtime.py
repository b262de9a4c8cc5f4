"""The running exporter's moving parts and their life cycle: providers, poller, discovery, the
state file, and hot reload of the config.

A reload builds everything new first and swaps only when all of it worked, so a broken config
keeps the old one running (Prometheus' convention, with the same metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from exporter.accounts import ListDiscovery
from exporter.budget import PollingStatus
from exporter.clouds import cloud_of
from exporter.config import (
    ConfigError,
    Discovery,
    Overlay,
    Settings,
    resolve_api_token,
    resolve_callback_tokens,
    watched_files,
)
from exporter.discovery import JobLister, discover_once, run_discovery
from exporter.hints import HintLimiter
from exporter.lifecycle import Lifecycle
from exporter.poller import Poller
from exporter.providers.base import Provider
from exporter.providers.registry import build_providers
from exporter.queues import QueueLister, QueueWatch
from exporter.refresh import BulkRefresh
from exporter.sharding import Shard
from exporter.statefile import StateFile, StateFileError
from exporter.store import Store

log = logging.getLogger(__name__)
# How often changed job state is written to the state file.
PERSIST_INTERVAL = 2.0
# How often tombstones and retired jobs past their time to live are pruned (and on reloads).
HOUSEKEEPING_INTERVAL = 60.0
# The tasks each account may run beside the poller; a reload restarts them all.
ACCOUNT_TASKS = ("discovery ", "refresh ", "queues ")
# Settings a reload cannot change in a running process.
RESTART_ONLY = ("listen", "state_file", "max_concurrency", "shard", "total_shards")

Loader = Callable[[], Settings]


class Runtime:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        environ: Mapping[str, str] | None = None,
        wall: Callable[[], float] = time.time,
        shard: Shard | None = None,
        loader: Loader | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.shard = shard or Shard()
        self.loader = loader
        self.config_path = config_path
        self._environ = environ
        self._wall = wall
        # Laid over the initial config and every reloaded one (the --demo clouds).
        self._overlay: Overlay | None = None
        self.session: aiohttp.ClientSession | None = None
        self.providers: dict[str, Provider] = {}
        self.poller: Poller | None = None
        self.lifecycle: Lifecycle | None = None
        self.api_token: SecretStr | None = None
        # The secret path segment of each account's callback route (api.py).
        self.callback_tokens: dict[str, SecretStr] = {}
        self.hints = HintLimiter(time.monotonic)
        self.statefile: StateFile | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._persist_lock = asyncio.Lock()
        self._mtimes: dict[Path, float | None] = {}

    # -- building blocks -------------------------------------------------------------------

    def polling_status(self) -> dict[tuple[str, str], PollingStatus]:
        """Each account's budget and lateness; none before polling starts."""
        return {} if self.poller is None else self.poller.polling_status()

    def _overlaid(self, settings: Settings) -> Settings:
        """Raises ConfigError when the config uses a name the overlay reserves."""
        return settings if self._overlay is None else self._overlay.apply(settings)

    def _providers_for(self, settings: Settings) -> dict[str, Provider]:
        """Raises ConfigError when credentials are missing."""
        assert self.session is not None  # noqa: S101 - started before any build
        environ = self._environ
        if self._overlay is not None:
            environ = self._overlay.environ_over(environ)
        return build_providers(settings, self.session, environ)

    def _discoveries(self, settings: Settings) -> list[tuple[str, ListDiscovery]]:
        return [
            (name, spec)
            for name, account in settings.accounts.items()
            if (spec := cloud_of(account).discovery(account)) is not None
        ]

    def _ttls(self, settings: Settings) -> dict[str, float]:
        """Tombstones of an account with discovery live for its lookback (lifecycle.py)."""
        return {account: spec.lookback for account, spec in self._discoveries(settings)}

    def _spawn(self, name: str, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks[name] = asyncio.create_task(coroutine, name=name)

    async def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            # A task that died of a bug was logged where it died; stopping it must go on.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _start_account_tasks(self, settings: Settings) -> None:
        """Discovery, bulk refresh and queue reads, for the accounts whose config asks."""
        assert self.poller is not None  # noqa: S101 - started before
        assert self.lifecycle is not None  # noqa: S101 - started before
        for account, spec in self._discoveries(settings):
            lister = self.providers.get(account)
            if isinstance(lister, JobLister):
                self._spawn(
                    f"discovery {account}",
                    run_discovery(
                        functools.partial(
                            discover_once,
                            lister,
                            spec,
                            self.poller,
                            self.lifecycle,
                            self.store,
                            wall=self._wall,
                        ),
                        account,
                        spec.interval,
                    ),
                )
        for name, config in settings.accounts.items():
            cloud, provider = cloud_of(config), self.providers.get(name)
            refresh = cloud.bulk_refresh(config)
            if refresh is not None and isinstance(provider, JobLister):
                bulk = BulkRefresh(
                    provider,
                    refresh,
                    self.poller,
                    self.store,
                    settings.poll_interval,
                    wall=self._wall,
                )
                self._spawn(f"refresh {name}", bulk.run())
            interval = cloud.queue_interval(config)
            if interval > 0 and isinstance(provider, QueueLister):
                spec = cloud.discovery(config)
                watch = QueueWatch(
                    provider,
                    self.poller.limiter(name),
                    self.store,
                    interval,
                    extra=(spec.queue_id,) if isinstance(spec, Discovery) and spec.queue_id else (),
                    wall=self._wall,
                )
                self._spawn(f"queues {name}", watch.run())
            else:
                self.store.forget_queues(name)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, session: aiohttp.ClientSession, overlay: Overlay | None = None) -> None:
        """Build and start everything; `overlay` is laid over this and every reloaded config."""
        self.session = session
        self._overlay = overlay
        settings = self.settings = self._overlaid(self.settings)
        self.providers = self._providers_for(settings)
        self.api_token = resolve_api_token(settings, self._environ)
        self.callback_tokens = resolve_callback_tokens(settings, self._environ)
        lifecycle = Lifecycle(
            self.store,
            settings,
            _accounts(self.providers),
            ttls=self._ttls(settings),
            wall=self._wall,
            owns=self.shard.owns,
        )
        self.lifecycle = lifecycle
        poller = Poller(self.store, lifecycle, self.providers, settings, wall=self._wall)
        self.poller = poller
        if settings.state_file is not None:
            self.store.track_changes = True
            self.statefile = StateFile(settings.state_file)
            try:
                loaded = await self.statefile.open()
            except StateFileError as exc:  # one line at start-up, exit 2, as for the config
                self.statefile = None
                raise ConfigError([str(exc)]) from None
            lifecycle.restore(loaded)
            log.info(
                "state_loaded",
                extra={
                    "state_file": str(settings.state_file),
                    "jobs": len(loaded.jobs),
                    "retired": len(loaded.retired),
                    "forgotten": len(loaded.tombstones),
                    "unreadable": loaded.unreadable,
                },
            )
        else:
            log.warning(
                "state_in_memory",
                extra={"hint": "set state_file to keep registered jobs across restarts"},
            )
        lifecycle.set_config_jobs(settings.jobs)
        lifecycle.prune()
        await self.persist()
        self._spawn("poller", poller.run())
        self._start_account_tasks(settings)
        self._spawn("housekeeping", self._housekeep_forever())
        if self.statefile is not None:
            self._spawn("persist", self._persist_forever())
        if self.loader is not None:
            self._on_sighup()
            if settings.reload_check_interval > 0:
                self._mtimes = self._current_mtimes(settings)
                self._spawn("config watch", self._watch_forever())

    def _on_sighup(self) -> None:
        """SIGHUP reloads, as for Prometheus; only the main thread's loop can take signals."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(
                signal.SIGHUP, lambda: self._spawn("reload sighup", self._reload_task("sighup"))
            )

    async def _reload_task(self, reason: str) -> None:
        await self.reload(reason)

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for name in list(self._tasks):
            await self._cancel(name)
        if self.statefile is not None:
            await self.persist()
            await self.statefile.close()
            self.statefile = None

    async def persist(self) -> None:
        """Write what changed to the state file (no-op in memory). Serialized: one at a time."""
        if self.statefile is None:
            return
        async with self._persist_lock:
            await self.statefile.write(self.store.take_changes())

    async def _persist_forever(self) -> None:
        while True:
            await asyncio.sleep(PERSIST_INTERVAL)
            try:
                await self.persist()
            except Exception:  # a full disk must not stop polling; said in the log
                log.exception("state_write_failed")

    async def _housekeep_forever(self) -> None:
        assert self.lifecycle is not None  # noqa: S101 - started before
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            self.lifecycle.prune()

    # -- reload ----------------------------------------------------------------------------

    def _current_mtimes(self, settings: Settings) -> dict[Path, float | None]:
        paths = ([self.config_path] if self.config_path else []) + watched_files(settings)
        mtimes: dict[Path, float | None] = {}
        for path in paths:
            try:
                mtimes[path] = path.stat().st_mtime
            except OSError:
                mtimes[path] = None
        return mtimes

    async def _watch_forever(self) -> None:
        """Reload when the config file or a credential file changes (a rotated Secret)."""
        while True:
            await asyncio.sleep(self.settings.reload_check_interval)
            mtimes = self._current_mtimes(self.settings)
            if mtimes != self._mtimes:
                self._mtimes = mtimes
                await self.reload("file_changed")

    async def reload(self, reason: str) -> tuple[bool, list[str]]:
        """Load the config again and apply it; on any problem keep the old one running."""
        if self.loader is None:
            return False, ["no config file to reload"]
        try:
            loaded = self.loader()
            settings = self._overlaid(loaded)
            providers = self._providers_for(settings)
            token = resolve_api_token(settings, self._environ)
            callback_tokens = resolve_callback_tokens(settings, self._environ)
        except ConfigError as exc:
            self.store.record_reload(ok=False, at=self._wall())
            log.error("reload_failed", extra={"reason": reason, "problems": exc.problems})
            return False, exc.problems
        ignored = [
            key for key in RESTART_ONLY if getattr(settings, key) != getattr(self.settings, key)
        ]
        if ignored:
            log.warning("reload_needs_restart", extra={"keys": ignored})
        assert self.poller is not None  # noqa: S101 - started before
        assert self.lifecycle is not None  # noqa: S101 - started before
        for name in [name for name in self._tasks if name.startswith(ACCOUNT_TASKS)]:
            await self._cancel(name)
        self.poller.reconfigure(settings, providers)
        self.lifecycle.reconfigure(settings, _accounts(providers), self._ttls(settings))
        self.lifecycle.set_config_jobs(settings.jobs)
        self.lifecycle.prune()
        self.settings = settings
        self.providers = providers
        self.api_token = token
        self.callback_tokens = callback_tokens
        self._start_account_tasks(settings)
        self._mtimes = self._current_mtimes(settings)
        self.store.record_reload(ok=True, at=self._wall())
        log.info(
            "config_reloaded",
            extra={
                "reason": reason,
                # The config's own, as at start-up: the --demo overlay is not counted.
                "accounts": len(loaded.accounts),
                "jobs": len(loaded.jobs),
            },
        )
        return True, []


def _accounts(providers: Mapping[str, Provider]) -> dict[str, str]:
    return {name: provider.provider for name, provider in providers.items()}


RUNTIME = web.AppKey("runtime", Runtime)
