"""Configuration: a YAML file, overridden by CLOUDJOB_* environment variables, overridden by flags.

Strict by design (unknown keys are errors, as in blackbox_exporter): a typo in a config key must
fail at start-up, not silently poll nothing. Every problem becomes one line naming the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_LISTEN = "0.0.0.0:9871"
PROVIDERS = ("huawei_metastudio",)
# Labels the exporter sets itself; a job's static labels may not shadow them.
RESERVED_LABELS = frozenset(
    {
        "account",
        "provider",
        "job_id",
        "job_type",
        "state",
        "phase",
        "metric",
        "code",
        "field",
        "status",
        "le",
        "quantile",
        "version",
        "reason",
        "queue_id",
    }
)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """A config that cannot run; `problems` holds one human-readable line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: object) -> object:
    """Seconds as a number, or Prometheus-style strings: "30s", "2m", "1h30m", "500ms"."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '30s', '2m', '1h')")
        return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def _listen_address(value: object) -> object:
    if isinstance(value, str):
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


ListenAddress = Annotated[str, BeforeValidator(_listen_address)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HuaweiAuth(Strict):
    """Exactly one way in: AK/SK (signed requests) or an IAM token (X-Auth-Token)."""

    ak_env: str | None = None
    sk_env: str | None = None
    ak_file: Path | None = None
    sk_file: Path | None = None
    token_env: str | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_method(self) -> HuaweiAuth:
        aksk = [self.ak_env, self.sk_env, self.ak_file, self.sk_file]
        token = [self.token_env, self.token_file]
        if any(v is not None for v in token) and any(v is not None for v in aksk):
            raise ValueError(
                "set either AK/SK (ak_env/sk_env, ak_file/sk_file) or a token "
                "(token_env/token_file), not both"
            )
        if self.token_env is not None and self.token_file is not None:
            raise ValueError("set token_env or token_file, not both")
        if self.ak_env is not None and self.ak_file is not None:
            raise ValueError("set ak_env or ak_file, not both")
        if self.sk_env is not None and self.sk_file is not None:
            raise ValueError("set sk_env or sk_file, not both")
        return self

    @property
    def uses_token(self) -> bool:
        return self.token_env is not None or self.token_file is not None


class HuaweiAccount(Strict):
    provider: Literal["huawei_metastudio"]
    region: str = Field(min_length=1)
    project_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    app_user_id: str | None = Field(default=None, pattern=r"^[\x21-\x7e]+$")
    max_rps: float | None = Field(default=None, gt=0)
    auth: HuaweiAuth = HuaweiAuth()

    @property
    def base_url(self) -> str:
        endpoint = self.endpoint or f"https://metastudio.{self.region}.myhuaweicloud.com"
        return endpoint.rstrip("/")


Account = HuaweiAccount


class JobConfig(Strict):
    account: str = Field(min_length=1)
    id: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")
    labels: dict[str, str] = Field(default_factory=dict)
    poll_interval: Duration | None = None

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not _LABEL_NAME.match(name) or name.startswith("__"):
                raise ValueError(f"invalid label name {name!r}")
            if name in RESERVED_LABELS:
                raise ValueError(f"label {name!r} is set by the exporter itself")
        return labels


class Settings(BaseSettings):
    """The whole configuration. Field names are a public contract: users' files depend on them."""

    model_config = SettingsConfigDict(
        env_prefix="CLOUDJOB_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    listen: ListenAddress = DEFAULT_LISTEN
    poll_interval: Duration = 30.0
    terminal_poll_interval: Duration = 600.0
    terminal_retention: Duration = 86400.0
    request_timeout: Duration = 10.0
    max_retries: int = Field(default=2, ge=0, le=10)
    max_concurrency: int = Field(default=32, ge=1, le=10000)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    accounts: dict[str, Account] = Field(default_factory=dict)
    jobs: list[JobConfig] = Field(default_factory=list)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("accounts")
    @classmethod
    def _account_names(cls, accounts: dict[str, Account]) -> dict[str, Account]:
        for name in accounts:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(
                    f"account name {name!r} may only use letters, digits, '_', '.', '-'"
                )
        return accounts

    @model_validator(mode="after")
    def _jobs_name_known_accounts(self) -> Settings:
        problems: list[str] = []
        seen: set[tuple[str, str]] = set()
        for index, job in enumerate(self.jobs):
            if job.account not in self.accounts:
                problems.append(f"jobs[{index}].account: unknown account {job.account!r}")
            if (job.account, job.id) in seen:
                problems.append(
                    f"jobs[{index}].id: job {job.id!r} of {job.account!r} is listed twice"
                )
            seen.add((job.account, job.id))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init) beat the environment, which beats the file (see load_settings).
        return (init_settings, env_settings, _FileSource(settings_cls))


class _FileSource(PydanticBaseSettingsSource):
    """The YAML file's contents, handed over by `load_settings` through a class attribute."""

    data: Mapping[str, Any] = {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping of keys, not {type(data).__name__}"]
        )
    return data


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_errors(error: ValidationError) -> list[str]:
    """One line per problem, named by its key path, as a user would write it in YAML."""
    lines = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        where = _location(loc)
        message = item["msg"]
        if item["type"] == "literal_error" and loc and loc[-1] == "provider":
            message = f"unknown provider {item['input']!r} (known: {', '.join(PROVIDERS)})"
        elif item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        if not loc:  # cross-field rules name their own keys
            lines.extend(message.split("; "))
            continue
        lines.append(f"{where}: {message}" if where else message)
    return lines


def load_settings(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the file, apply CLOUDJOB_* variables and flag overrides, validate; ConfigError if bad.

    `defaults` sit under the file (the demo's shorter intervals, which a file may still change).
    """
    data = {**(defaults or {}), **(read_yaml(path) if path is not None else {})}
    prefix = f"{path}: " if path is not None else ""
    _FileSource.data = data
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError([prefix + line for line in format_errors(exc)]) from None
    finally:
        _FileSource.data = {}


@dataclass(frozen=True, slots=True)
class HuaweiCredentials:
    """Resolved secrets. Only `reveal()` at the moment of signing; repr never shows them."""

    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    token: SecretStr | None = None


def _read_secret(
    where: str, env_name: str | None, file: Path | None, environ: Mapping[str, str]
) -> tuple[SecretStr | None, str | None]:
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            return None, f"{where}_file: cannot read {file}: {exc.strerror or exc}"
        if not value:
            return None, f"{where}_file: {file} is empty"
        return SecretStr(value), None
    if env_name is not None:
        value = environ.get(env_name, "").strip()
        if not value:
            return None, f"{where}_env: environment variable {env_name} is not set"
        return SecretStr(value), None
    return None, None


def resolve_credentials(
    name: str, account: Account, environ: Mapping[str, str] | None = None
) -> HuaweiCredentials:
    """Read the account's secrets from env or files; ConfigError names what is missing."""
    env = os.environ if environ is None else environ
    auth = account.auth
    base = f"accounts.{name}.auth."
    if auth.uses_token:
        token, problem = _read_secret(base + "token", auth.token_env, auth.token_file, env)
        if problem:
            raise ConfigError([problem])
        return HuaweiCredentials(token=token)
    ak_env = auth.ak_env if auth.ak_file is None else None
    sk_env = auth.sk_env if auth.sk_file is None else None
    ak, ak_problem = _read_secret(
        base + "ak", ak_env or ("CLOUD_SDK_AK" if auth.ak_file is None else None), auth.ak_file, env
    )
    sk, sk_problem = _read_secret(
        base + "sk", sk_env or ("CLOUD_SDK_SK" if auth.sk_file is None else None), auth.sk_file, env
    )
    problems = [p for p in (ak_problem, sk_problem) if p]
    if problems:
        raise ConfigError(problems)
    return HuaweiCredentials(access_key=ak, secret_key=sk)


def check_credentials(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    problems: list[str] = []
    for name, account in settings.accounts.items():
        try:
            resolve_credentials(name, account, environ)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems
