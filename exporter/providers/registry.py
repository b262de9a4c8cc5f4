"""From configured accounts to provider instances: the one place that knows every provider."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from exporter.config import Settings, resolve_credentials
from exporter.providers.base import Provider
from exporter.providers.huawei_metastudio import HuaweiMetaStudio


def build_providers(
    settings: Settings, session: aiohttp.ClientSession, environ: Mapping[str, str] | None = None
) -> dict[str, Provider]:
    """One provider per account; raises ConfigError if an account's credentials are missing."""
    providers: dict[str, Provider] = {}
    for name, account in settings.accounts.items():
        providers[name] = HuaweiMetaStudio(
            account=name,
            config=account,
            credentials=resolve_credentials(name, account, environ),
            session=session,
            timeout=settings.request_timeout,
        )
    return providers
