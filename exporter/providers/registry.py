"""From configured accounts to provider instances, through the cloud registry."""

from __future__ import annotations

import os
from collections.abc import Mapping

import aiohttp

from exporter.clouds import cloud_of
from exporter.config import Settings
from exporter.providers.base import Provider


def build_providers(
    settings: Settings, session: aiohttp.ClientSession, environ: Mapping[str, str] | None = None
) -> dict[str, Provider]:
    """One provider per account; ConfigError if an account's credentials are missing."""
    env = os.environ if environ is None else environ
    return {
        name: cloud_of(account).build(name, account, session, settings.request_timeout, env)
        for name, account in settings.accounts.items()
    }
