"""From configured accounts to provider instances: the one place that knows every provider."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from exporter.config import (
    HuaweiAccount,
    HuaweiCredentials,
    Settings,
    TencentAccount,
    TencentCredentials,
    resolve_credentials,
)
from exporter.providers.base import Provider
from exporter.providers.huawei_metastudio import HuaweiMetaStudio
from exporter.providers.tencent_ci import TencentCI


def build_provider(
    name: str,
    account: HuaweiAccount | TencentAccount,
    session: aiohttp.ClientSession,
    timeout: float,
    environ: Mapping[str, str] | None = None,
) -> Provider:
    """Raises ConfigError if the account's credentials are missing."""
    credentials = resolve_credentials(name, account, environ)
    if isinstance(account, TencentAccount):
        assert isinstance(credentials, TencentCredentials)  # noqa: S101 - resolved per account type
        return TencentCI(
            account=name,
            config=account,
            credentials=credentials,
            session=session,
            timeout=timeout,
        )
    assert isinstance(credentials, HuaweiCredentials)  # noqa: S101 - resolved per account type
    return HuaweiMetaStudio(
        account=name, config=account, credentials=credentials, session=session, timeout=timeout
    )


def build_providers(
    settings: Settings, session: aiohttp.ClientSession, environ: Mapping[str, str] | None = None
) -> dict[str, Provider]:
    """One provider per account."""
    return {
        name: build_provider(name, account, session, settings.request_timeout, environ)
        for name, account in settings.accounts.items()
    }
