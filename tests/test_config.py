"""Config: the documented keys load, env overrides the file, every mistake is one named line."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from exporter.accounts import HuaweiAuth, TencentAccount, TencentAuth
from exporter.clouds import CLOUDS
from exporter.config import (
    ConfigError,
    JobConfig,
    Settings,
    check_credentials,
    load_settings,
    parse_duration,
    resolve_credentials,
)

ISSUE_EXAMPLE = """
listen: "0.0.0.0:9871"
poll_interval: 30
accounts:
  hw-prod:
    provider: huawei_metastudio
    region: cn-north-4
    project_id: "0123abc"
    endpoint: "https://metastudio.example.test"
    app_user_id: "user-1"
    max_rps: 10
    auth:
      ak_env: CLOUD_SDK_AK
      sk_env: CLOUD_SDK_SK
jobs:
  - account: hw-prod
    id: "26f06524-4f75-4b3a-a853-b649a21aaf66"
    labels: {team: voice}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return [line.removeprefix(f"{path}: ") for line in caught.value.problems]


def test_the_issue_example_loads_with_every_documented_key(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, ISSUE_EXAMPLE))
    account = settings.accounts["hw-prod"]
    assert settings.listen == "0.0.0.0:9871"
    assert settings.poll_interval == 30
    assert account.base_url == "https://metastudio.example.test"
    assert account.app_user_id == "user-1"
    assert account.max_rps == 10
    assert account.auth.ak_env == "CLOUD_SDK_AK"
    assert settings.jobs[0].labels == {"team": "voice"}
    assert settings.terminal_poll_interval == 600
    assert settings.terminal_retention == 86400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1d", 86400.0),
    ],
)
def test_durations_accept_seconds_and_prometheus_style_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_environment_overrides_the_file_and_flags_override_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, ISSUE_EXAMPLE)
    monkeypatch.setenv("CLOUDJOB_LISTEN", "127.0.0.1:1111")
    monkeypatch.setenv("CLOUDJOB_POLL_INTERVAL", "2m")
    settings = load_settings(path)
    assert settings.listen == "127.0.0.1:1111"
    assert settings.poll_interval == 120
    assert load_settings(path, {"listen": "127.0.0.1:2222"}).listen == "127.0.0.1:2222"


def test_per_job_poll_interval_overrides_the_global_one(tmp_path: Path) -> None:
    text = ISSUE_EXAMPLE + "    poll_interval: 5s\n"
    assert load_settings(_write(tmp_path, text)).jobs[0].poll_interval == 5.0


def test_an_unknown_provider_is_named_with_its_key(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path, "accounts:\n  hw:\n    provider: x\n    region: r\n    project_id: p\n"
    )
    assert problems == [
        "accounts.hw.provider: unknown provider 'x' (known: huawei_metastudio, tencent_ci)"
    ]


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """
bogus: 1
poll_interval: soon
listen: nowhere
accounts:
  hw:
    provider: huawei_metastudio
    project_id: p
    max_rps: 0
    auth: {ak_env: A, token_env: T}
jobs:
  - account: hw
    id: j
    labels: {job_id: x, "bad-name": y}
""",
    )
    assert "bogus: unknown key" in problems
    assert any(p.startswith("poll_interval: not a duration: 'soon'") for p in problems)
    assert any(p.startswith("listen: expected HOST:PORT") for p in problems)
    assert "accounts.hw.region: required key is missing" in problems
    assert any(p.startswith("accounts.hw.max_rps:") for p in problems)
    assert any(p.startswith("accounts.hw.auth: set either AK/SK") for p in problems)
    assert any(p.startswith("jobs[0].labels:") for p in problems)
    assert all("\n" not in p for p in problems)


def test_jobs_must_name_a_configured_account_once(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        ISSUE_EXAMPLE + '  - account: nope\n    id: "x"\n'
        '  - account: hw-prod\n    id: "26f06524-4f75-4b3a-a853-b649a21aaf66"\n',
    )
    assert problems == [
        "jobs[1].account: unknown account 'nope'",
        "jobs[2].id: job '26f06524-4f75-4b3a-a853-b649a21aaf66' of 'hw-prod' is listed twice",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("listen: [1, 2\n", "invalid YAML (line 2, column 1)"),
        ("- a\n- b\n", "the top level must be a mapping"),
    ],
)
def test_broken_yaml_is_one_line_with_its_position(
    tmp_path: Path, text: str, expected: str
) -> None:
    problems = _problems(tmp_path, text)
    assert len(problems) == 1
    assert expected in problems[0]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_settings(tmp_path / "nope.yaml")


def test_credentials_come_from_default_env_vars_files_or_a_token(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, ISSUE_EXAMPLE))
    account = settings.accounts["hw-prod"]
    creds = resolve_credentials("hw-prod", account, {"CLOUD_SDK_AK": "A1", "CLOUD_SDK_SK": "S1"})
    assert creds.access_key is not None
    assert creds.access_key.get_secret_value() == "A1"
    assert "S1" not in repr(creds)
    problems = check_credentials(settings, {})
    assert problems == [
        "accounts.hw-prod.auth.ak_env: environment variable CLOUD_SDK_AK is not set",
        "accounts.hw-prod.auth.sk_env: environment variable CLOUD_SDK_SK is not set",
    ]
    (tmp_path / "ak").write_text("file-ak\n")
    (tmp_path / "sk").write_text("file-sk\n")
    files = ISSUE_EXAMPLE.replace(
        "ak_env: CLOUD_SDK_AK\n      sk_env: CLOUD_SDK_SK",
        f"ak_file: {tmp_path / 'ak'}\n      sk_file: {tmp_path / 'sk'}",
    )
    creds = resolve_credentials(
        "hw-prod", load_settings(_write(tmp_path, files)).accounts["hw-prod"], {}
    )
    assert creds.secret_key is not None
    assert creds.secret_key.get_secret_value() == "file-sk"
    token = ISSUE_EXAMPLE.replace(
        "ak_env: CLOUD_SDK_AK\n      sk_env: CLOUD_SDK_SK", "token_env: HW_TOKEN"
    )
    creds = resolve_credentials(
        "hw-prod", load_settings(_write(tmp_path, token)).accounts["hw-prod"], {"HW_TOKEN": "t"}
    )
    assert creds.token is not None
    assert creds.access_key is None


def test_accounts_default_to_the_sdk_environment_variables(tmp_path: Path) -> None:
    text = "accounts:\n  hw:\n    provider: huawei_metastudio\n    region: r\n    project_id: p\n"
    account = load_settings(_write(tmp_path, text)).accounts["hw"]
    creds = resolve_credentials("hw", account, {"CLOUD_SDK_AK": "a", "CLOUD_SDK_SK": "s"})
    assert creds.access_key is not None
    assert creds.access_key.get_secret_value() == "a"


def test_nested_keys_are_overridden_with_double_underscores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDJOB_ACCOUNTS__HW_PROD__REGION", "ap-southeast-1")
    account = load_settings(_write(tmp_path, ISSUE_EXAMPLE.replace("hw-prod", "hw_prod")))
    assert account.accounts["hw_prod"].region == "ap-southeast-1"
    assert account.accounts["hw_prod"].project_id == "0123abc"


def test_cross_key_problems_are_reported_with_the_others(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        ISSUE_EXAMPLE.replace("poll_interval: 30", "poll_interval: soon")
        + '  - account: nope\n    id: "x"\n',
    )
    assert any(p.startswith("poll_interval: not a duration") for p in problems)
    assert "jobs[1].account: unknown account 'nope'" in problems


def _time_key_config(key: str, value: str) -> str:
    """A config that sets `key` (a dotted path as in error messages) to `value`."""
    top_level = "." not in key and "[" not in key
    job_extra = f", poll_interval: {value}" if key == "jobs[0].poll_interval" else ""
    discover = {"lookback": "86400", "interval": "300"}
    if key.startswith("accounts.tc.discover."):
        discover[key.rpartition(".")[2]] = value
    queue_interval = value if key == "accounts.tc.queue_interval" else "1m"
    return (
        (f"{key}: {value}\n" if top_level else "")
        + "accounts:\n"
        + "  hw: {provider: huawei_metastudio, region: r, project_id: p}\n"
        + "  tc:\n    provider: tencent_ci\n    bucket: b-1250000000\n    region: ap-x\n"
        + f"    queue_interval: {queue_interval}\n"
        + "    discover: {queue_id: q, tag: Translation,"
        + f" lookback: {discover['lookback']}, interval: {discover['interval']}}}\n"
        + f"jobs:\n  - {{account: hw, id: j{job_extra}}}\n"
    )


def _time_key_value(settings: Settings, key: str) -> float:
    if key == "jobs[0].poll_interval":
        value = settings.jobs[0].poll_interval
    elif key.startswith("accounts.tc.discover."):
        account = settings.accounts["tc"]
        assert isinstance(account, TencentAccount)
        assert account.discover is not None
        value = getattr(account.discover, key.rpartition(".")[2])
    elif key.startswith("accounts.tc."):
        value = getattr(settings.accounts["tc"], key.rpartition(".")[2])
    else:
        value = getattr(settings, key)
    assert isinstance(value, float)
    return value


# Every time-valued key, and whether 0 is allowed (it turns the thing off).
TIME_KEYS = {
    "poll_interval": False,
    "terminal_poll_interval": False,
    "terminal_retention": False,
    "request_timeout": False,
    "reload_check_interval": True,
    "jobs[0].poll_interval": False,
    "accounts.tc.discover.lookback": False,
    "accounts.tc.discover.interval": False,
    "accounts.tc.queue_interval": True,
}
# Float keys that are not times.
NOT_TIME_KEYS = {"max_rps", "api_budget_rps"}


def _float_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted names of every float-valued field below `model`, optional or not."""
    found: set[str] = set()
    for name, field in model.model_fields.items():
        for kind in typing.get_args(field.annotation) or (field.annotation,):
            if kind is float:
                found.add(prefix + name)
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                found |= _float_fields(kind, f"{prefix}{name}.")
    return found


def test_every_time_valued_key_is_a_duration() -> None:
    """A new float key is either in TIME_KEYS, so the tests below prove it takes durations, or
    declared not to be a time."""
    models: list[type[BaseModel]] = [Settings, JobConfig, *(cloud.account for cloud in CLOUDS)]
    floats = set().union(*(_float_fields(model) for model in models))
    times = {key.rpartition(".")[2] for key in TIME_KEYS}
    assert {key.rpartition(".")[2] for key in floats} == times | NOT_TIME_KEYS


@pytest.mark.parametrize("key", TIME_KEYS)
@pytest.mark.parametrize(("value", "seconds"), [("1m", 60.0), ("90", 90.0), ("2.5", 2.5)])
def test_every_time_key_takes_durations_and_plain_seconds(
    tmp_path: Path, key: str, value: str, seconds: float
) -> None:
    settings = load_settings(_write(tmp_path, _time_key_config(key, value)))
    assert _time_key_value(settings, key) == seconds


@pytest.mark.parametrize(("key", "zero_allowed"), TIME_KEYS.items())
@pytest.mark.parametrize("zero", ["0s", "0"])
def test_zero_is_accepted_where_it_means_off_and_refused_naming_the_key_elsewhere(
    tmp_path: Path, key: str, zero_allowed: bool, zero: str
) -> None:
    text = _time_key_config(key, zero)
    if zero_allowed:
        assert _time_key_value(load_settings(_write(tmp_path, text)), key) == 0.0
    else:
        assert _problems(tmp_path, text) == [f"{key}: Input should be greater than 0"]


@pytest.mark.parametrize("key", TIME_KEYS)
def test_a_time_key_that_is_not_a_duration_is_one_line_naming_the_key(
    tmp_path: Path, key: str
) -> None:
    problems = _problems(tmp_path, _time_key_config(key, "-1s"))
    assert len(problems) == 1
    assert problems[0].startswith(f"{key}: not a duration: '-1s'"), problems


def test_reload_check_interval_takes_a_duration_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDJOB_RELOAD_CHECK_INTERVAL", "0s")
    assert load_settings(_write(tmp_path, "")).reload_check_interval == 0.0


@pytest.mark.parametrize(
    ("model", "secret"),
    [
        (HuaweiAuth, "ak"),
        (HuaweiAuth, "sk"),
        (HuaweiAuth, "token"),
        (TencentAuth, "secret_id"),
        (TencentAuth, "secret_key"),
        (TencentAuth, "token"),
    ],
)
def test_a_secret_from_both_a_variable_and_a_file_is_refused_naming_both_keys(
    model: type[BaseModel], secret: str
) -> None:
    with pytest.raises(ValidationError, match=f"set {secret}_env or {secret}_file, not both"):
        model.model_validate({f"{secret}_env": "SOME_VAR", f"{secret}_file": "/run/secret"})


_TENCENT = (
    "accounts:\n  tc:\n    provider: tencent_ci\n    bucket: b-1250000000\n    region: ap-x\n"
)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (
            "    discover: {tag: Translation}\n",
            "accounts.tc.discover: set queue_id: CI's list API requires queueId",
        ),
        (
            "    discover: {queue_id: q}\n",
            "accounts.tc.discover: set tag (or tags: [..]): CI's list API requires a tag",
        ),
        (
            "    discover: {queue_id: q, tag: Translation, tags: [Translation]}\n",
            "accounts.tc.discover: set tag or tags, not both",
        ),
        (
            "    discover: {queue_id: q, tags: [Translation, Translation]}\n",
            "accounts.tc.discover: tags: each tag once",
        ),
        (
            "    discover: {queue_id: q, tag: Translation, list_api: media_jobs}\n",
            "accounts.tc.discover.list_api: Input should be 'jobs' or 'ai_jobs'",
        ),
        (
            "    refresh: list\n",
            "accounts.tc: refresh: list needs discover (its queue_id and tag say which jobs",
        ),
        ("    refresh: sometimes\n", "accounts.tc.refresh: Input should be 'list' or 'lookup'"),
        ("    queue_interval: -1\n", "accounts.tc.queue_interval: Input should be greater"),
    ],
)
def test_list_and_queue_keys_fail_with_one_line_naming_the_key(
    tmp_path: Path, keys: str, problem: str
) -> None:
    (line,) = _problems(tmp_path, _TENCENT + keys)
    assert line.startswith(problem), line


@pytest.mark.parametrize(
    ("keys", "mode"),
    [
        ("", "lookup"),
        ("    discover: {queue_id: q, tag: Translation}\n", "list"),
        ("    refresh: lookup\n    discover: {queue_id: q, tags: [A, B]}\n", "lookup"),
        ("    refresh: list\n    discover: {queue_id: q, tag: Translation}\n", "list"),
    ],
)
def test_refresh_is_list_by_default_only_with_discover(
    tmp_path: Path, keys: str, mode: str
) -> None:
    account = load_settings(_write(tmp_path, _TENCENT + keys)).accounts["tc"]
    assert isinstance(account, TencentAccount)
    assert account.refresh_mode == mode
    assert account.queue_interval == 60.0
    if account.discover is not None:
        assert account.discover.list_api == "jobs"
        assert account.discover.tag_list in (("Translation",), ("A", "B"))
