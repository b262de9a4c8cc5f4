"""The command line as a user meets it: real processes, real ports, real signals."""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path

import orjson
import pytest

import exporter.__main__ as cli
from exporter.__main__ import parse_args
from exporter.config import Settings
from tests.conftest import promtool_check_metrics
from tests.support import eventually, run_cli, start_exporter


def test_a_bad_config_exits_2_with_one_line_per_problem_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "accounts:\n  hw:\n    provider: x\n    region: r\n    project_id: p\n"
        "jobs:\n  - {account: hw, id: j, colour: red}\n"
    )
    result = run_cli("--config", str(path), "--check-config")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert f"cloudjob-exporter: {path}: accounts.hw.provider: unknown provider 'x'" in lines[0]
    assert any("jobs[0].colour: unknown key" in line for line in lines)


def test_check_config_names_missing_credentials_and_passes_when_they_are_set(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "accounts:\n  hw:\n    provider: huawei_metastudio\n    region: r\n    project_id: p\n"
        "jobs:\n  - {account: hw, id: j}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"CLOUD_SDK_AK", "CLOUD_SDK_SK"}}
    result = run_cli("--config", str(path), "--check-config", environ=env)
    assert result.returncode == 2
    assert "accounts.hw.auth.ak_env: environment variable CLOUD_SDK_AK is not set" in result.stderr
    result = run_cli(
        "--config",
        str(path),
        "--check-config",
        env={"CLOUD_SDK_AK": "ak", "CLOUD_SDK_SK": "sk-very-secret"},
    )
    assert result.returncode == 0, result.stderr
    assert "1 accounts, 1 jobs" in result.stdout
    assert "sk-very-secret" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variable", "text", "complaint"),
    [
        ("CLOUDJOB_CONFIG", "poll_interval: never\n", "poll_interval: not a duration"),
        (
            "CLOUDJOB_WEB_CONFIG_FILE",
            "basic_auth_users:\n  alice: nope\n",
            "basic_auth_users.alice: not a bcrypt hash",
        ),
    ],
)
def test_the_config_and_web_config_paths_can_come_from_the_environment(
    tmp_path: Path, variable: str, text: str, complaint: str
) -> None:
    path = tmp_path / "from-the-environment.yaml"
    path.write_text(text)
    result = run_cli("--check-config", env={variable: str(path)})
    assert result.returncode == 2
    assert complaint in result.stderr


def test_a_missing_config_file_is_one_line() -> None:
    result = run_cli("--config", "/nonexistent/config.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cannot read" in result.stderr


def test_a_bad_flag_value_is_refused_by_argparse() -> None:
    result = run_cli("--log-format", "xml")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def _huawei_series(url: str) -> bytes:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body if b'cloudjob_job_state{account="demo-huawei"' in body else b""


@pytest.mark.parametrize(("event_loop", "expected"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_demo_serves_huawei_series_and_exits_0_on_sigterm(
    event_loop: str, expected: str, tmp_path: Path
) -> None:
    """On either loop: uvloop (a dependency, so `auto` picks it) and asyncio's own."""
    exporter = start_exporter(
        *("--demo", "--log-format", "json", "--event-loop", event_loop),
        log=tmp_path / "exporter.log",
    )
    try:
        body = eventually(
            lambda: _huawei_series(exporter.url), within=30, what="huawei_metastudio series"
        )
        assert b'provider="huawei_metastudio"' in body
        assert b"cloudjob_job_state{" in body
        promtool_check_metrics(body)
    finally:
        code = exporter.stop(timeout=15)  # a hang guard, not a speed requirement
    stderr = exporter.log_text()
    assert code == 0, stderr
    assert f"http://127.0.0.1:{exporter.port}/metrics" in exporter.line
    events = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    (demo,) = [e for e in events if e["event"] == "demo_started"]
    # The event's fields: one URL per simulated cloud, and the listed jobs.
    assert demo["huawei"].startswith("http://127.0.0.1:"), demo
    assert demo["tencent"].startswith("http://127.0.0.1:"), demo
    assert demo["jobs"] > 0, demo
    assert [e["event_loop"] for e in events if e["event"] == "starting"] == [expected]
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("args", "env"), [(["--event-loop", "trio"], {}), ([], {"CLOUDJOB_EVENT_LOOP": "trio"})]
)
def test_an_unknown_event_loop_is_one_line_naming_the_flag(
    args: list[str], env: dict[str, str]
) -> None:
    result = run_cli("--demo", "--check-config", *args, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cloudjob-exporter: --event-loop 'trio': choose one of auto, uvloop, asyncio"
    ]


def test_without_uvloop_auto_falls_back_and_asking_for_it_is_one_line(tmp_path: Path) -> None:
    # A package that fails to import stands in for a machine without uvloop.
    (tmp_path / "uvloop").mkdir()
    (tmp_path / "uvloop" / "__init__.py").write_text("raise ImportError('not here')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    result = run_cli("--event-loop", "uvloop", "--demo", "--listen", "127.0.0.1:1", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cloudjob-exporter: --event-loop uvloop: uvloop is not installed (pip install uvloop)"
    ]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    with busy:
        # auto gets past choosing a loop (to fail on the busy port, which ends the run).
        port = busy.getsockname()[1]
        result = run_cli("--demo", "--listen", f"127.0.0.1:{port}", "--log-format", "json", env=env)
    assert result.returncode == 2
    assert "cannot listen on" in result.stderr
    starting = [orjson.loads(line) for line in result.stderr.splitlines() if '"starting"' in line]
    assert [event["event_loop"] for event in starting] == ["asyncio"]


def test_a_busy_port_is_a_clean_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_cli("--demo", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert "cannot listen on" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help(flag: str) -> None:
    result = run_cli(flag)
    assert result.returncode == 0
    assert "cloudjob-exporter" in result.stdout


def test_a_complex_environment_override_that_is_not_json_is_one_line() -> None:
    result = run_cli("--check-config", env={"CLOUDJOB_ACCOUNTS": "notjson"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert 'environment: error parsing value for field "accounts"' in result.stderr


_SPELLINGS = [
    (("--config.file", "--config"), "c.yaml", "config", Path("c.yaml")),
    (("--web.listen-address", "--listen"), "127.0.0.1:9", "listen", "127.0.0.1:9"),
    (("--log.level", "--log-level"), "DEBUG", "log_level", "debug"),
    (("--log.format", "--log-format"), "json", "log_format", "json"),
]


@pytest.mark.parametrize(("flags", "value", "dest", "parsed"), _SPELLINGS)
def test_prometheus_style_flags_and_the_old_spellings_parse_alike(
    flags: tuple[str, str], value: str, dest: str, parsed: object
) -> None:
    for flag in flags:
        assert getattr(parse_args([flag, value]), dest) == parsed, flag
        assert getattr(parse_args([f"{flag}={value}"]), dest) == parsed, flag


def test_help_names_both_spellings_of_each_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    shown = capsys.readouterr().out
    for flags, *_ in _SPELLINGS:
        assert all(flag in shown for flag in flags), flags


def test_prometheus_style_flags_reach_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("log_level: error\n")
    seen: dict[str, object] = {}

    def fake_serve(settings: Settings, **kwargs: object) -> int:
        seen.update(settings=settings, config_path=kwargs["config_path"])
        return 0

    monkeypatch.setattr(cli, "setup_logging", lambda level, fmt: seen.update(logging=(level, fmt)))
    monkeypatch.setattr(cli, "serve", fake_serve)
    argv = ["--config.file", str(path), "--web.listen-address", "127.0.0.1:9"]
    assert cli.main([*argv, "--log.level", "warning", "--log.format", "json"]) == 0
    assert seen["config_path"] == path
    assert seen["logging"] == ("warning", "json")
    settings = seen["settings"]
    assert isinstance(settings, Settings)
    assert settings.listen == "127.0.0.1:9"


def test_a_bad_value_for_a_prometheus_style_flag_names_that_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--log.format", "xml"])
    assert exit_info.value.code == 2
    assert "--log.format" in capsys.readouterr().err


def test_the_external_prometheus_url_flag_beats_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("external_prometheus_url: http://from-config:9090\n")
    seen: dict[str, Settings] = {}

    def fake_serve(settings: Settings, **kwargs: object) -> int:
        seen["settings"] = settings
        return 0

    monkeypatch.setattr(cli, "setup_logging", lambda level, fmt: None)
    monkeypatch.setattr(cli, "serve", fake_serve)
    assert cli.main(["--config.file", str(path)]) == 0
    assert seen["settings"].external_prometheus_url == "http://from-config:9090"
    flag = ["--web.external-prometheus-url", "https://prom.example/"]
    assert cli.main(["--config.file", str(path), *flag]) == 0
    assert seen["settings"].external_prometheus_url == "https://prom.example"


def test_a_bad_external_prometheus_url_is_one_line_naming_it() -> None:
    result = run_cli("--web.external-prometheus-url", "javascript:alert(1)", "--check-config")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "external_prometheus_url" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
