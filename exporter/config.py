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
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from exporter.metric_selection import MetricSelection, excluded_families

DEFAULT_LISTEN = "0.0.0.0:9871"
PROVIDERS = ("huawei_metastudio", "tencent_ci")
# Tencent CI job states, for validating `discover.states`.
TENCENT_STATES = ("Submitted", "Running", "Success", "Failed", "Pause", "Cancel")
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


def _check_label_names(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"invalid label name {name!r}")
        if name in RESERVED_LABELS:
            raise ValueError(f"label {name!r} is set by the exporter itself")
    return labels


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


class TencentAuth(Strict):
    """A SecretId/SecretKey pair, plus a session token when they are temporary credentials."""

    secret_id_env: str | None = None
    secret_key_env: str | None = None
    secret_id_file: Path | None = None
    secret_key_file: Path | None = None
    token_env: str | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_source_each(self) -> TencentAuth:
        for name in ("secret_id", "secret_key", "token"):
            if (
                getattr(self, f"{name}_env") is not None
                and getattr(self, f"{name}_file") is not None
            ):
                raise ValueError(f"set {name}_env or {name}_file, not both")
        return self


class Discovery(Strict):
    """Find jobs through the list API instead of listing every id."""

    queue_id: str | None = Field(default=None, min_length=1)
    tag: str | None = Field(default=None, min_length=1)
    states: list[str] = Field(default_factory=list)
    lookback: Duration = 86400.0
    interval: Duration = 300.0
    page_size: int = Field(default=100, ge=1, le=100)
    # Static labels for every discovered job, as `jobs[].labels` for listed ones.
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_label_names(labels)

    @field_validator("states")
    @classmethod
    def _known_states(cls, states: list[str]) -> list[str]:
        for state in states:
            if state not in TENCENT_STATES and state != "All":
                raise ValueError(
                    f"unknown state {state!r} (known: {', '.join(TENCENT_STATES)}, All)"
                )
        return states


class TencentAccount(Strict):
    provider: Literal["tencent_ci"]
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*-[0-9]+$", description="BucketName-APPID")
    region: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    max_rps: float | None = Field(default=None, gt=0)
    job_api: Literal["ai_jobs", "media_jobs"] = "ai_jobs"
    batch_size: int = Field(default=1, ge=1, le=10)
    auth: TencentAuth = TencentAuth()
    discover: Discovery | None = None

    @model_validator(mode="after")
    def _batching_needs_an_api_that_allows_it(self) -> TencentAccount:
        if self.batch_size > 1 and self.job_api == "ai_jobs":
            raise ValueError(
                "batch_size > 1 needs job_api: media_jobs (/ai_jobs/<id> documents one id)"
            )
        return self

    @property
    def base_url(self) -> str:
        endpoint = self.endpoint or f"https://{self.bucket}.ci.{self.region}.myqcloud.com"
        return endpoint.rstrip("/")


Account = Annotated[HuaweiAccount | TencentAccount, Field(discriminator="provider")]


class JobConfig(Strict):
    account: str = Field(min_length=1)
    id: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")
    labels: dict[str, str] = Field(default_factory=dict)
    poll_interval: Duration | None = None

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        return _check_label_names(labels)


class ApiConfig(Strict):
    """The write API's bearer token; without one, registrations and reloads are refused."""

    token_env: str | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ApiConfig:
        if self.token_env is not None and self.token_file is not None:
            raise ValueError("set token_env or token_file, not both")
        return self


class MetricsSettings(Strict):
    """Which families /metrics shows, to bound the series per job (metric_selection.py)."""

    # Family names (as the metric reference lists them) or `re:` patterns.
    exclude: list[str] = Field(default_factory=list)
    # current: of a StateSet (cloudjob_job_state, cloudjob_job_phase), only the series that is 1.
    state_series: Literal["all", "current"] = "all"

    @field_validator("exclude")
    @classmethod
    def _known_families(cls, exclude: list[str]) -> list[str]:
        excluded_families(exclude)
        return exclude

    @property
    def selection(self) -> MetricSelection:
        return MetricSelection.of(self.exclude, self.state_series)


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
    # This replica's share of the jobs: an index, or "auto" (the StatefulSet pod ordinal).
    shard: Annotated[int, Field(ge=0)] | Literal["auto"] = 0
    total_shards: int = Field(default=1, ge=1, le=1000)
    accounts: dict[str, Account] = Field(default_factory=dict)
    jobs: list[JobConfig] = Field(default_factory=list)
    api: ApiConfig = ApiConfig()
    # SQLite file for registered and discovered jobs and every job's last state; None: memory.
    state_file: Path | None = None
    # Registrations and discoveries past this many tracked jobs are refused.
    max_jobs: int = Field(default=50_000, ge=1, le=10_000_000)
    # How often the config file and credential files are checked for changes (0: never).
    reload_check_interval: float = Field(default=10.0, ge=0)
    metrics: MetricsSettings = MetricsSettings()

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
    def _shard_in_range(self) -> Settings:
        if isinstance(self.shard, int) and self.shard >= self.total_shards:
            raise ValueError(
                f"shard: {self.shard} is outside 0..{self.total_shards - 1} "
                f"(total_shards {self.total_shards})"
            )
        return self

    @model_validator(mode="after")
    def _jobs_name_known_accounts(self) -> Settings:
        problems = job_reference_problems(
            [(job.account, job.id) for job in self.jobs], set(self.accounts)
        )
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


def job_reference_problems(jobs: list[tuple[object, object]], accounts: set[str]) -> list[str]:
    """Jobs naming an unknown account, or listed twice."""
    problems: list[str] = []
    seen: set[tuple[object, object]] = set()
    for index, (account, job_id) in enumerate(jobs):
        if account not in accounts:
            problems.append(f"jobs[{index}].account: unknown account {account!r}")
        if (account, job_id) in seen:
            problems.append(f"jobs[{index}].id: job {job_id!r} of {account!r} is listed twice")
        seen.add((account, job_id))
    return problems


def _raw_job_reference_problems(data: Mapping[str, Any]) -> list[str]:
    """The cross-key checks, on raw data: pydantic skips them while any single key is invalid,
    and a user fixing a config wants every problem in one run."""
    accounts, jobs = data.get("accounts"), data.get("jobs")
    if not isinstance(accounts, dict) or not isinstance(jobs, list):
        return []
    pairs = [(job.get("account"), job.get("id")) for job in jobs if isinstance(job, dict)]
    if len(pairs) != len(jobs) or not all(
        isinstance(account, str) and isinstance(job_id, str) for account, job_id in pairs
    ):
        return []  # malformed entries: the per-key errors already say so
    return job_reference_problems(pairs, {str(name) for name in accounts})


class _FileSource(PydanticBaseSettingsSource):
    """The YAML file's contents, handed over by `load_settings` through a class attribute."""

    data: Mapping[str, Any] = {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


# libyaml's safe loader when PyYAML was built with it: a 10,000-job config loads in 0.23 s,
# not 1.0 s, with a fraction of the pure-Python loader's node objects.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader, C or Python
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
    odd = [key for key in data if not isinstance(key, str)]
    if odd:
        raise ConfigError([f"{path}: top-level keys must be names, not {key!r}" for key in odd])
    return data


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


def _location(loc: tuple[int | str, ...]) -> str:
    """`accounts.hw.auth`, `jobs[2].id`; an odd key (spaces, newlines) is shown quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int) or not _PLAIN_KEY.match(part):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


def format_errors(error: ValidationError) -> list[str]:
    """One line per problem, named by its key path, as a user would write it in YAML."""
    lines = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if len(loc) >= 3 and loc[0] == "accounts" and loc[2] in PROVIDERS:
            loc = (*loc[:2], *loc[3:])  # the union member's tag is not a key the user wrote
        where = _location(loc)
        message = item["msg"]
        if item["type"] == "union_tag_invalid":
            loc = (*loc, "provider")
            where = _location(loc)
            tag = (item.get("ctx") or {}).get("tag", item["input"])
            message = f"unknown provider {tag!r} (known: {', '.join(PROVIDERS)})"
        elif item["type"] == "union_tag_not_found":
            loc = (*loc, "provider")
            where = _location(loc)
            message = f"required key is missing (one of: {', '.join(PROVIDERS)})"
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
    # One problem, one line, whatever the file contained.
    return [" ".join(line.split("\n")) for line in lines]


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
        problems = format_errors(exc)
        problems += [p for p in _raw_job_reference_problems(data) if p not in problems]
        raise ConfigError([prefix + line for line in problems]) from None
    except SettingsError as exc:
        # A CLOUDJOB_* variable holding a complex value that is not JSON.
        raise ConfigError([f"environment: {exc}"]) from None
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


@dataclass(frozen=True, slots=True)
class TencentCredentials:
    """SecretId/SecretKey, and the session token of temporary credentials."""

    secret_id: SecretStr
    secret_key: SecretStr
    token: SecretStr | None = None


Credentials = HuaweiCredentials | TencentCredentials


def _secrets(
    base: str, pairs: list[tuple[str, str | None, Path | None]], environ: Mapping[str, str]
) -> list[SecretStr]:
    values, problems = [], []
    for name, env_name, file in pairs:
        value, problem = _read_secret(base + name, env_name, file, environ)
        if value is not None:
            values.append(value)
        else:
            problems.append(problem or f"{base}{name}: no source set")
    if problems:
        raise ConfigError(problems)
    return values


def resolve_credentials(
    name: str, account: HuaweiAccount | TencentAccount, environ: Mapping[str, str] | None = None
) -> Credentials:
    """Read the account's secrets from env or files; ConfigError names what is missing."""
    env = os.environ if environ is None else environ
    base = f"accounts.{name}.auth."
    if isinstance(account, TencentAccount):
        tc = account.auth
        secret_id, secret_key = _secrets(
            base,
            [
                (
                    "secret_id",
                    _default_env(tc.secret_id_env, tc.secret_id_file, "TENCENTCLOUD_SECRET_ID"),
                    tc.secret_id_file,
                ),
                (
                    "secret_key",
                    _default_env(tc.secret_key_env, tc.secret_key_file, "TENCENTCLOUD_SECRET_KEY"),
                    tc.secret_key_file,
                ),
            ],
            env,
        )
        token = None
        if tc.token_env is not None or tc.token_file is not None:
            (token,) = _secrets(base, [("token", tc.token_env, tc.token_file)], env)
        return TencentCredentials(secret_id=secret_id, secret_key=secret_key, token=token)
    auth = account.auth
    if auth.uses_token:
        (token,) = _secrets(base, [("token", auth.token_env, auth.token_file)], env)
        return HuaweiCredentials(token=token)
    ak, sk = _secrets(
        base,
        [
            ("ak", _default_env(auth.ak_env, auth.ak_file, "CLOUD_SDK_AK"), auth.ak_file),
            ("sk", _default_env(auth.sk_env, auth.sk_file, "CLOUD_SDK_SK"), auth.sk_file),
        ],
        env,
    )
    return HuaweiCredentials(access_key=ak, secret_key=sk)


def _default_env(env_name: str | None, file: Path | None, default: str) -> str | None:
    """The SDKs' own variable names apply unless the user named another variable or a file."""
    if file is not None:
        return None
    return env_name or default


def resolve_api_token(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> SecretStr | None:
    """The write API's token, or None when none is configured; ConfigError if unreadable."""
    api = settings.api
    if api.token_env is None and api.token_file is None:
        return None
    env = os.environ if environ is None else environ
    (token,) = _secrets("api.", [("token", api.token_env, api.token_file)], env)
    return token


def watched_files(settings: Settings) -> list[Path]:
    """Credential files whose change should reload the config (a rotated Kubernetes Secret)."""
    paths: list[Path] = []
    for account in settings.accounts.values():
        auth = account.auth
        for name in type(auth).model_fields:
            value = getattr(auth, name)
            if name.endswith("_file") and value is not None:
                paths.append(value)
    if settings.api.token_file is not None:
        paths.append(settings.api.token_file)
    return paths


def check_credentials(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    problems: list[str] = []
    for name, account in settings.accounts.items():
        try:
            resolve_credentials(name, account, environ)
        except ConfigError as exc:
            problems.extend(exc.problems)
    try:
        resolve_api_token(settings, environ)
    except ConfigError as exc:
        problems.extend(exc.problems)
    return problems
