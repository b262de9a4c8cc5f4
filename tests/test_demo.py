"""`--demo` as a settings overlay, and the cloud registry everything else asks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from exporter.accounts import HuaweiAccount
from exporter.app import create_app
from exporter.clouds import CLOUDS, DOCUMENTED_STATES, PROVIDERS
from exporter.config import ConfigError, JobConfig, Overlay, load_settings
from exporter.runtime import RUNTIME
from exporter.simulator.metastudio import DEMO_SECRET_KEY
from exporter.simulator.tencent_ci import DEMO_TENCENT_SECRET_KEY
from tests.support import ServerFactory, scrape, scrape_until

DEMO_ACCOUNTS = {cloud.demo_account for cloud in CLOUDS}
HW = HuaweiAccount(provider="huawei_metastudio", region="r", project_id="p")


def test_every_registered_cloud_is_its_account_models_provider_and_has_states() -> None:
    for cloud in CLOUDS:
        assert cloud.account.model_fields["provider"].annotation.__args__ == (cloud.name,)
        assert cloud.states.terminal <= set(cloud.states.phases)
    assert PROVIDERS == tuple(DOCUMENTED_STATES) == tuple(cloud.name for cloud in CLOUDS)
    assert len(DEMO_ACCOUNTS) == len(CLOUDS)


def test_the_config_accepts_each_registered_cloud_and_names_them_all_otherwise(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("accounts:\n  a: {provider: nope}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.problems == [
        f"{path}: accounts.a.provider: unknown provider 'nope' (known: {', '.join(PROVIDERS)})"
    ]


def test_an_overlay_adds_accounts_and_jobs_and_refuses_a_name_the_config_uses() -> None:
    overlay = Overlay(
        accounts={"demo-x": HW},
        jobs=[JobConfig(account="demo-x", id="j")],
        environ={"K": "s3cret-value"},
    )
    base = load_settings(None, {"accounts": {"mine": HW.model_dump()}})
    merged = overlay.apply(base)
    assert set(merged.accounts) == {"mine", "demo-x"}
    assert [(job.account, job.id) for job in merged.jobs] == [("demo-x", "j")]
    assert overlay.environ_over({"K": "outer", "L": "l"}) == {"K": "s3cret-value", "L": "l"}
    assert "s3cret-value" not in repr(overlay)
    taken = load_settings(None, {"accounts": {"demo-x": HW.model_dump()}})
    with pytest.raises(ConfigError) as caught:
        overlay.apply(taken)
    assert caught.value.problems == ["accounts.demo-x: this name is reserved for --demo"]


def _demo_series(text: str) -> set[str]:
    """The demo accounts that have job series in an exposition."""
    return {name for name in DEMO_ACCOUNTS if f'cloudjob_job_state{{account="{name}"' in text}


async def _both_demo_accounts_polled(server: TestServer) -> None:
    await scrape_until(
        server, lambda text: _demo_series(text) == DEMO_ACCOUNTS, what="both demo accounts"
    )


async def test_demo_accounts_are_polled_and_survive_reloads_and_secrets_stay_out_of_logs(
    aiohttp_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "config.yaml"
    path.write_text("poll_interval: 0.2\n")
    server = await aiohttp_server(
        create_app(load_settings(path), demo=True, loader=lambda: load_settings(path))
    )
    runtime = server.app[RUNTIME]
    assert set(runtime.settings.accounts) >= DEMO_ACCOUNTS
    await _both_demo_accounts_polled(server)

    path.write_text("poll_interval: 0.3\n")
    assert await runtime.reload("test") == (True, [])
    assert runtime.settings.poll_interval == 0.3
    assert DEMO_ACCOUNTS <= set(runtime.settings.accounts) == set(runtime.providers)
    assert {job.account for job in runtime.settings.jobs} == DEMO_ACCOUNTS
    assert any(name.startswith("discovery demo-") for name in runtime._tasks)
    await _both_demo_accounts_polled(server)

    # A reload that takes a reserved name is refused; the demo keeps running.
    path.write_text(
        "accounts:\n  demo-huawei: {provider: huawei_metastudio, region: r, project_id: p}\n"
    )
    ok, problems = await runtime.reload("test")
    assert (ok, problems) == (False, ["accounts.demo-huawei: this name is reserved for --demo"])
    assert runtime.settings.poll_interval == 0.3
    for secret in (DEMO_SECRET_KEY, DEMO_TENCENT_SECRET_KEY):
        assert secret not in caplog.text
        assert secret not in await scrape(server)


async def test_a_config_using_a_demo_name_stops_the_start_with_one_line(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("accounts:\n  demo-tencent: {provider: tencent_ci, bucket: b-1, region: r}\n")
    with pytest.raises(ConfigError) as caught:
        await aiohttp_server(create_app(load_settings(path), demo=True))
    assert caught.value.problems == ["accounts.demo-tencent: this name is reserved for --demo"]
