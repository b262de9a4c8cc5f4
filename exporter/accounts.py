"""Every cloud's account model and how its secrets are read, with the pieces every config model
shares (strict models, durations, label names, ConfigError).

It sits below the cloud registry (exporter/clouds.py), which config.py asks for the union of
account models, so nothing here imports config.py. Pydantic and the standard library: no HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from exporter.model import JobSnapshot
from exporter.states import HUAWEI_STATES, HUAWEI_TABLE, TENCENT_STATES, TENCENT_TABLE

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


Seconds = Annotated[float, BeforeValidator(parse_duration)]
# Every time-valued key is one of these two, so that each takes "30s" as well as 30.
Duration = Annotated[Seconds, Field(gt=0)]
DurationOrOff = Annotated[Seconds, Field(ge=0)]  # 0 turns the thing off


def check_label_names(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"invalid label name {name!r}")
        if name in RESERVED_LABELS:
            raise ValueError(f"label {name!r} is set by the exporter itself")
    return labels


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CloudAccount(Strict):
    """What the exporter asks of any cloud's account; each cloud narrows `provider` to its name."""

    provider: str

    @property
    def base_url(self) -> str:
        """The API's root URL: `endpoint`, or the cloud's public one for the region."""
        raise NotImplementedError

    def secret_files(self) -> list[Path]:
        """The `*_file` sources of its secrets, watched for rotation."""
        auth = getattr(self, "auth", None)
        if not isinstance(auth, BaseModel):
            return []
        return [
            value
            for name in type(auth).model_fields
            if name.endswith("_file") and isinstance(value := getattr(auth, name), Path)
        ]


def _budget(budget: float | None, max_rps: float | None, default: float | None) -> float | None:
    """The request rate an account plans its polls within: `api_budget_rps` (never above a
    `max_rps`; 0 for none), else `max_rps`, else the cloud's default."""
    if budget == 0:
        return max_rps
    if budget is not None:
        return budget if max_rps is None else min(budget, max_rps)
    return max_rps if max_rps is not None else default


def _one_source_each(auth: BaseModel, secrets: tuple[str, ...]) -> None:
    """Each secret comes from its `<name>_env` variable or its `<name>_file`, never both: with
    both set, which one wins would be a guess."""
    for name in secrets:
        if getattr(auth, f"{name}_env") is not None and getattr(auth, f"{name}_file") is not None:
            raise ValueError(f"set {name}_env or {name}_file, not both")


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
        _one_source_each(self, ("token", "ak", "sk"))
        return self

    @property
    def uses_token(self) -> bool:
        return self.token_env is not None or self.token_file is not None


class ListDiscovery(Strict):
    """What discovery and bulk refresh (exporter/discovery.py, refresh.py) read of any cloud's
    `discover`: each cloud's model adds its list API's filters."""

    lookback: Duration = 86400.0
    interval: Duration = 300.0
    page_size: int = Field(default=100, ge=1, le=100)
    # Static labels for every discovered job, as `jobs[].labels` for listed ones.
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_label_names(labels)

    @property
    def walks(self) -> tuple[str, ...]:
        """One list walk per job type; "" walks every type at once."""
        raise NotImplementedError

    @property
    def job_kind(self) -> str | None:
        """The `jobs[].kind` of the jobs it finds; None for a cloud with one kind of job."""
        return None

    @property
    def list_states(self) -> tuple[str, ...]:
        """The states discovery lists (empty: every state)."""
        raise NotImplementedError

    @property
    def unfinished_states(self) -> tuple[str, ...]:
        """The states a refresh round lists: every documented state that does not end a job."""
        raise NotImplementedError

    def walk_of(self, snapshot: JobSnapshot) -> str | None:
        """The walk whose pages show this job, states and creation time aside; None if none."""
        raise NotImplementedError


def _check_states(states: list[str], known: Mapping[str, object], extra: tuple[str, ...]) -> None:
    for state in states:
        if state not in known and state not in extra:
            raise ValueError(f"unknown state {state!r} (known: {', '.join([*known, *extra])})")


# MetaStudio's training types (huaweicloudsdkmetastudio v1/model/job_type.py).
TrainingType = Literal["BASIC", "MIDDLE", "ADVANCE", "THIRD_PARTY", "THIRD_PARTY_LJZN", "FLEXUS"]
# What a Huawei job is, and so which API polls it: ShowShortJob or ShowVoiceTrainingJob.
HUAWEI_JOB_KINDS = ("short_job", "voice_training")


class HuaweiDiscovery(ListDiscovery):
    """Find voice training jobs through ListVoiceTrainingJob (short jobs have no list API).

    The list's time filters (`create_since`...) take a format no document gives, so the exporter
    sends none and keeps only jobs created within `lookback` itself: a forgotten job older than
    that is never added again. Training runs for hours to days, hence the week.
    """

    kind: Literal["short_job", "voice_training"] = "voice_training"
    states: list[str] = Field(default_factory=lambda: list(HUAWEI_TABLE.unfinished))
    job_types: list[TrainingType] = Field(default_factory=list)
    tag: str | None = Field(default=None, min_length=1)
    batch_name: str | None = Field(default=None, min_length=1)
    lookback: Duration = 7 * 86400.0

    @field_validator("kind")
    @classmethod
    def _listable(cls, kind: str) -> str:
        if kind != "voice_training":
            raise ValueError(
                "MetaStudio lists voice training jobs only (ListVoiceTrainingJob); short jobs "
                "have no list API: use kind: voice_training, and list short jobs in jobs"
            )
        return kind

    @field_validator("states")
    @classmethod
    def _known_states(cls, states: list[str]) -> list[str]:
        _check_states(states, HUAWEI_STATES, ())
        return states

    @field_validator("job_types")
    @classmethod
    def _each_once(cls, job_types: list[str]) -> list[str]:
        if len(set(job_types)) != len(job_types):
            raise ValueError("each job type once")
        return job_types

    @property
    def walks(self) -> tuple[str, ...]:
        return tuple(self.job_types) or ("",)

    @property
    def job_kind(self) -> str | None:
        return self.kind

    @property
    def list_states(self) -> tuple[str, ...]:
        return tuple(self.states)

    @property
    def unfinished_states(self) -> tuple[str, ...]:
        return HUAWEI_TABLE.unfinished

    def walk_of(self, snapshot: JobSnapshot) -> str | None:
        if self.tag is not None or self.batch_name is not None:
            extra = dict(snapshot.extra)
            if (self.tag is not None and extra.get("tag") != self.tag) or (
                self.batch_name is not None and extra.get("batch_name") != self.batch_name
            ):
                return None
        if not self.job_types:
            return ""
        return snapshot.job_type if snapshot.job_type in self.job_types else None


# Half of MetaStudio's documented per-tenant limits (voice-training Show/List APIs, 20/10/10
# requests/s; no row for short jobs was found): the other half is left to the application that
# creates the jobs.
HUAWEI_DEFAULT_BUDGETS = {"cn-north-4": 10.0, "cn-east-3": 5.0, "ap-southeast-3": 5.0}


class HuaweiAccount(CloudAccount):
    provider: Literal["huawei_metastudio"]
    region: str = Field(min_length=1)
    project_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    app_user_id: str | None = Field(default=None, pattern=r"^[\x21-\x7e]+$")
    max_rps: float | None = Field(default=None, gt=0)
    # The share of the tenant's request quota the exporter may spend, requests/s (poller.py
    # plans its polls within it; 0: no budget). Default: max_rps, else HUAWEI_DEFAULT_BUDGETS.
    api_budget_rps: float | None = Field(default=None, ge=0)
    auth: HuaweiAuth = HuaweiAuth()
    discover: HuaweiDiscovery | None = None
    # As for Tencent: `list` refreshes the discovered kind's jobs a list page at a time.
    refresh: Literal["list", "lookup"] | None = None

    @property
    def budget_rps(self) -> float | None:
        return _budget(self.api_budget_rps, self.max_rps, HUAWEI_DEFAULT_BUDGETS.get(self.region))

    @model_validator(mode="after")
    def _list_refresh_needs_discover(self) -> HuaweiAccount:
        _check_refresh(self.refresh, self.discover, "its kind and filters")
        return self

    @property
    def refresh_mode(self) -> Literal["list", "lookup"]:
        return _refresh_mode(self.refresh, self.discover)

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
        _one_source_each(self, ("secret_id", "secret_key", "token"))
        return self


class Discovery(ListDiscovery):
    """Find jobs through CI's list API instead of listing every id.

    `list_api: jobs` (`GET /jobs`) is the default: the CI references for AI and media jobs (docs
    1045/50305, 460/48235) and both official SDKs (cos-python-sdk-v5 `ci_list_media_jobs`,
    cos-go-sdk-v5 `DescribeMediaJobs`) list there; `ai_jobs` (`GET /ai_jobs`) is documented for
    Translation jobs only (doc 436/49385), for buckets that answer only there. Both documents
    mark `queueId` and `tag` as required, so a config must name them.
    """

    list_api: Literal["jobs", "ai_jobs"] = "jobs"
    queue_id: str | None = Field(default=None, min_length=1)
    tag: str | None = Field(default=None, min_length=1)
    # One list walk per tag (CI lists one tag at a time).
    tags: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    states: list[str] = Field(default_factory=list)

    @field_validator("states")
    @classmethod
    def _known_states(cls, states: list[str]) -> list[str]:
        _check_states(states, TENCENT_STATES, ("All",))
        return states

    @model_validator(mode="after")
    def _what_the_list_api_requires(self) -> Discovery:
        problems = []
        if self.queue_id is None:
            problems.append(
                "set queue_id: CI's list API requires queueId (docs 1045/50305, 460/48235)"
            )
        if self.tag is None and not self.tags:
            problems.append(
                "set tag (or tags: [..]): CI's list API requires a tag, such as Translation or "
                "Transcode (docs 1045/50305, 460/48235)"
            )
        if self.tag is not None and self.tags:
            problems.append("set tag or tags, not both")
        if len(set(self.tags)) != len(self.tags):
            problems.append("tags: each tag once")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def tag_list(self) -> tuple[str, ...]:
        """The tags to list, one walk each."""
        return (self.tag,) if self.tag is not None else tuple(self.tags)

    @property
    def walks(self) -> tuple[str, ...]:
        return self.tag_list  # a CI tag is the job's type

    @property
    def list_states(self) -> tuple[str, ...]:
        return tuple(self.states)

    @property
    def unfinished_states(self) -> tuple[str, ...]:
        return TENCENT_TABLE.unfinished

    def walk_of(self, snapshot: JobSnapshot) -> str | None:
        if snapshot.queue_id != self.queue_id or snapshot.job_type not in self.tag_list:
            return None
        return snapshot.job_type


class TencentAccount(CloudAccount):
    provider: Literal["tencent_ci"]
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*-[0-9]+$", description="BucketName-APPID")
    region: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    max_rps: float | None = Field(default=None, gt=0)
    # As for Huawei; CI documents no per-API limit to default to, only 100/s (50/s outside the
    # mainland) for all of its asynchronous processing.
    api_budget_rps: float | None = Field(default=None, ge=0)
    job_api: Literal["ai_jobs", "media_jobs"] = "ai_jobs"
    batch_size: int = Field(default=1, ge=1, le=10)
    auth: TencentAuth = TencentAuth()
    discover: Discovery | None = None
    # `list`: one list request refreshes up to 100 of the discover queue's jobs; `lookup`: one
    # look-up per job (or per batch_size jobs). Default: `list` with `discover`, else `lookup`.
    refresh: Literal["list", "lookup"] | None = None
    # How often the account's queues are read (paused or not); 0 turns it off.
    queue_interval: DurationOrOff = 60.0
    # The secret path segment of the job-callback route (api.py); CI signs no callback.
    callback_token_env: str | None = None
    callback_token_file: Path | None = None

    @property
    def budget_rps(self) -> float | None:
        return _budget(self.api_budget_rps, self.max_rps, None)

    @model_validator(mode="after")
    def _batching_needs_an_api_that_allows_it(self) -> TencentAccount:
        if self.batch_size > 1 and self.job_api == "ai_jobs":
            raise ValueError(
                "batch_size > 1 needs job_api: media_jobs (/ai_jobs/<id> documents one id)"
            )
        if self.callback_token_env is not None and self.callback_token_file is not None:
            raise ValueError("set callback_token_env or callback_token_file, not both")
        _check_refresh(self.refresh, self.discover, "its queue_id and tag")
        return self

    def secret_files(self) -> list[Path]:
        """The auth's files and the callback token's: a rotated one is read again."""
        files = super().secret_files()
        return files if self.callback_token_file is None else [*files, self.callback_token_file]

    @property
    def refresh_mode(self) -> Literal["list", "lookup"]:
        return _refresh_mode(self.refresh, self.discover)

    @property
    def base_url(self) -> str:
        endpoint = self.endpoint or f"https://{self.bucket}.ci.{self.region}.myqcloud.com"
        return endpoint.rstrip("/")


def _check_refresh(refresh: str | None, discover: ListDiscovery | None, which: str) -> None:
    if refresh == "list" and discover is None:
        raise ValueError(f"refresh: list needs discover ({which} say which jobs to list)")


def _refresh_mode(
    refresh: Literal["list", "lookup"] | None, discover: ListDiscovery | None
) -> Literal["list", "lookup"]:
    """`refresh`, else `list` for an account with discovery and `lookup` for one without."""
    if refresh is not None:
        return refresh
    return "list" if discover is not None else "lookup"


@dataclass(frozen=True, slots=True)
class HuaweiCredentials:
    """Resolved secrets, read (get_secret_value) only at the moment of signing; repr hides them."""

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


def read_secrets(
    base: str, pairs: list[tuple[str, str | None, Path | None]], environ: Mapping[str, str]
) -> list[SecretStr]:
    """Each (name, variable, file) source's secret; ConfigError lists every one missing."""
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


def _default_env(env_name: str | None, file: Path | None, default: str) -> str | None:
    """The SDKs' own variable names apply unless the user named another variable or a file."""
    if file is not None:
        return None
    return env_name or default


def huawei_credentials(
    account: HuaweiAccount, where: str, environ: Mapping[str, str]
) -> HuaweiCredentials:
    """A token, or an AK/SK pair (by default in the SDK's CLOUD_SDK_AK/CLOUD_SDK_SK)."""
    auth = account.auth
    if auth.uses_token:
        (token,) = read_secrets(where, [("token", auth.token_env, auth.token_file)], environ)
        return HuaweiCredentials(token=token)
    ak, sk = read_secrets(
        where,
        [
            ("ak", _default_env(auth.ak_env, auth.ak_file, "CLOUD_SDK_AK"), auth.ak_file),
            ("sk", _default_env(auth.sk_env, auth.sk_file, "CLOUD_SDK_SK"), auth.sk_file),
        ],
        environ,
    )
    return HuaweiCredentials(access_key=ak, secret_key=sk)


def tencent_credentials(
    account: TencentAccount, where: str, environ: Mapping[str, str]
) -> TencentCredentials:
    """SecretId/SecretKey (by default in the SDK's TENCENTCLOUD_SECRET_*), and a token if set."""
    tc = account.auth
    secret_id, secret_key = read_secrets(
        where,
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
        environ,
    )
    token = None
    if tc.token_env is not None or tc.token_file is not None:
        (token,) = read_secrets(where, [("token", tc.token_env, tc.token_file)], environ)
    return TencentCredentials(secret_id=secret_id, secret_key=secret_key, token=token)


# A callback token is the only thing between the internet and the callback route: one short
# enough to guess is refused (`openssl rand -hex 16` gives 32 characters).
MIN_CALLBACK_TOKEN_LENGTH = 16


def tencent_callback_token(
    account: TencentAccount, where: str, environ: Mapping[str, str]
) -> SecretStr | None:
    """The secret path segment of the account's callback route; None when none is configured.
    ConfigError when it is unreadable or too short to be a secret."""
    if account.callback_token_env is None and account.callback_token_file is None:
        return None
    (token,) = read_secrets(
        where,
        [("callback_token", account.callback_token_env, account.callback_token_file)],
        environ,
    )
    if len(token.get_secret_value()) < MIN_CALLBACK_TOKEN_LENGTH:
        source = "_env" if account.callback_token_env is not None else "_file"
        raise ConfigError(
            [
                f"{where}callback_token{source}: the token has "
                f"{len(token.get_secret_value())} characters; use at least "
                f"{MIN_CALLBACK_TOKEN_LENGTH} (e.g. openssl rand -hex 16)"
            ]
        )
    return token
