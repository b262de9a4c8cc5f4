"""Configuration: a YAML file, overridden by CLOUDJOB_* environment variables, overridden by flags.

Strict by design (unknown keys are errors, as in blackbox_exporter): a typo in a config key must
fail at start-up, not silently poll nothing. Every problem becomes one line naming the key.
"""

from __future__ import annotations

import os
import re
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BeforeValidator,
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

# Defined below the cloud registry; re-exported here, where every importer looks for them.
from exporter.accounts import (
    CloudAccount,
    TencentAccount,
    check_label_names,
    read_secrets,
    tencent_callback_token,
)
from exporter.accounts import ConfigError as ConfigError
from exporter.accounts import Discovery as Discovery
from exporter.accounts import Duration as Duration
from exporter.accounts import DurationOrOff as DurationOrOff
from exporter.accounts import Strict as Strict
from exporter.accounts import parse_duration as parse_duration
from exporter.clouds import CLOUDS, PROVIDERS, cloud_of
from exporter.metric_selection import MetricSelection, excluded_families

DEFAULT_LISTEN = "0.0.0.0:9871"


def _listen_address(value: object) -> object:
    if isinstance(value, str):
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


ListenAddress = Annotated[str, BeforeValidator(_listen_address)]

if TYPE_CHECKING:
    Account = CloudAccount
else:
    # One member per registered cloud, told apart by `provider`.
    Account = Annotated[
        Union[tuple(cloud.account for cloud in CLOUDS)],  # noqa: UP007 - built at run time
        Field(discriminator="provider"),
    ]


class JobConfig(Strict):
    account: str = Field(min_length=1)
    id: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")
    labels: dict[str, str] = Field(default_factory=dict)
    poll_interval: Duration | None = None
    # What the job is, for a cloud with several kinds (its account's `Cloud.kinds`); None: the
    # cloud's first kind. Huawei: `short_job` or `voice_training`.
    kind: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_label_names(labels)


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
    reload_check_interval: DurationOrOff = 10.0
    metrics: MetricsSettings = MetricsSettings()
    # Where people open Prometheus: the status page's job page links to the job's series there.
    external_prometheus_url: str | None = None

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

    @field_validator("external_prometheus_url")
    @classmethod
    def _prometheus_url(cls, url: str | None) -> str | None:
        if url is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
            raise ValueError(f"{url!r} is not an http(s) URL of a Prometheus server")
        return None if url is None else url.rstrip("/")

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
        for index, job in enumerate(self.jobs):
            account = self.accounts.get(job.account)
            if account is not None and (problem := kind_problem(job.kind, account)):
                problems.append(f"jobs[{index}].kind: {problem}")
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


def kind_problem(kind: str | None, account: CloudAccount) -> str | None:
    """Why `kind` cannot be a job of `account`'s cloud; None when it can."""
    if kind is None:
        return None
    kinds = cloud_of(account).kinds
    if not kinds:
        return f"{account.provider} jobs have no kind: remove it"
    if kind not in kinds:
        return f"unknown kind {kind!r} for {account.provider} (known: {', '.join(kinds)})"
    return None


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


# libyaml's safe loader when PyYAML was built with it: a config of thousands of jobs loads
# several times faster, with a fraction of the pure-Python loader's node objects.
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
class Overlay:
    """Accounts and jobs laid over every loaded config (the `--demo` clouds), and the secrets
    their `auth` reads, by variable name, in place of the process environment's."""

    accounts: Mapping[str, CloudAccount]
    jobs: Sequence[JobConfig]
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Who reserves the accounts' names, for the error when a config uses one.
    origin: str = "--demo"

    def apply(self, settings: Settings) -> Settings:
        """`settings` with the overlay's accounts and jobs; ConfigError if a name is taken.

        The pieces are validated models already, so they are merged without validating the
        config's (possibly 50,000) jobs again.
        """
        taken = sorted(set(self.accounts) & set(settings.accounts))
        if taken:
            raise ConfigError(
                [f"accounts.{name}: this name is reserved for {self.origin}" for name in taken]
            )
        return settings.model_copy(
            update={
                "accounts": {**settings.accounts, **self.accounts},
                "jobs": [*settings.jobs, *self.jobs],
            }
        )

    def environ_over(self, environ: Mapping[str, str] | None) -> Mapping[str, str]:
        """`environ` (None: the process's) with the overlay's variables in front."""
        return ChainMap(dict(self.environ), dict(os.environ if environ is None else environ))


def resolve_credentials(
    name: str, account: CloudAccount, environ: Mapping[str, str] | None = None
) -> object:
    """Read the account's secrets from env or files; ConfigError names what is missing."""
    env = os.environ if environ is None else environ
    return cloud_of(account).credentials(account, f"accounts.{name}.auth.", env)


def resolve_api_token(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> SecretStr | None:
    """The write API's token, or None when none is configured; ConfigError if unreadable."""
    api = settings.api
    if api.token_env is None and api.token_file is None:
        return None
    env = os.environ if environ is None else environ
    (token,) = read_secrets("api.", [("token", api.token_env, api.token_file)], env)
    return token


def resolve_callback_tokens(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, SecretStr]:
    """The callback route's secret per account that has one; ConfigError if one is unreadable."""
    env = os.environ if environ is None else environ
    tokens: dict[str, SecretStr] = {}
    problems: list[str] = []
    for name, account in settings.accounts.items():
        if not isinstance(account, TencentAccount):
            continue
        try:
            token = tencent_callback_token(account, f"accounts.{name}.", env)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if token is not None:
            tokens[name] = token
    if problems:
        raise ConfigError(problems)
    return tokens


def watched_files(settings: Settings) -> list[Path]:
    """Credential files whose change should reload the config (a rotated Kubernetes Secret)."""
    paths: list[Path] = []
    for account in settings.accounts.values():
        paths.extend(account.secret_files())
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
    for resolve in (resolve_api_token, resolve_callback_tokens):
        try:
            resolve(settings, environ)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return problems
