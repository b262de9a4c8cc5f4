"""TLS, basic auth and response headers from a web-config file (`--web.config.file`).

The file format is the one the Prometheus exporter-toolkit reads (node_exporter, blackbox_exporter
and friends), so a `web-config.yml` written for them works here unchanged: `tls_server_config`,
`http_server_config.headers` and `basic_auth_users` with bcrypt hashes. Three differences, each
said at start-up rather than ignored silently: toolkit keys Python's `ssl` module cannot honour
(`cert`/`key` inline, `client_allowed_sans`, `curve_preferences`, the client-auth types that ask
for a certificate without verifying it) and `rate_limit` are errors; the file is read once at
start-up, not on every request; and `http2` is accepted but aiohttp speaks HTTP/1.1 only.

Strict like the main config: an unknown key, a missing certificate or a value that is not a bcrypt
hash is one line naming the file and the key, and the process exits 2 before it listens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import bcrypt
from aiohttp import hdrs, web
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from exporter.config import ConfigError, Strict, format_errors, read_yaml

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

REALM = "cloudjob-exporter"
# `$2a$`, `$2b$` and `$2y$` are the same algorithm for the passwords htpasswd and Go produce;
# cost 04-31, then 22 characters of salt and 31 of digest in bcrypt's own base64 alphabet.
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
# bcrypt reads at most this many bytes of a password; bcrypt>=5 refuses longer ones instead of
# ignoring the rest as htpasswd and Go's bcrypt do, so we cut them as those tools did when hashing.
_BCRYPT_MAX_PASSWORD = 72
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
# Go's client-auth policies that Python can enforce; the other two ask for a certificate but do
# not verify it, which OpenSSL through `ssl` cannot do.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go's names (crypto/tls.CipherSuites, what the toolkit accepts) -> OpenSSL's. TLS 1.3 suites are
# not configurable in Go either; both leave them at their defaults.
_CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# Sent on every response unless the web config sets (or blanks) them. The status pages set their
# own Content-Security-Policy (they load the exporter's own CSS and script); everything else
# loads nothing at all.
DEFAULT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
# Only over TLS: a browser told this over plain HTTP would ignore it anyway. No includeSubDomains:
# the exporter must not decide for the rest of the domain.
HSTS = "max-age=31536000"


def _unsupported(hint: str) -> Callable[[object], object]:
    def refuse(value: object) -> object:
        if value is not None:
            raise ValueError(f"not supported by cloudjob-exporter: {hint}")
        return value

    return refuse


def _bcrypt_hash(value: SecretStr) -> SecretStr:
    # The message never repeats the value: a plain-text password here is a secret.
    if not _BCRYPT_HASH.match(value.get_secret_value()):
        raise ValueError(
            "not a bcrypt hash (want $2a$, $2b$ or $2y$ with cost 04-31, "
            "as `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)"
        )
    return value


class TLSServerConfig(Strict):
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    cert: Annotated[object, AfterValidator(_unsupported("use cert_file"))] = None
    key: Annotated[object, AfterValidator(_unsupported("use key_file"))] = None
    client_ca: Annotated[object, AfterValidator(_unsupported("use client_ca_file"))] = None
    client_allowed_sans: Annotated[
        object, AfterValidator(_unsupported("Python's ssl module cannot check SANs"))
    ] = None
    curve_preferences: Annotated[
        object, AfterValidator(_unsupported("OpenSSL's defaults apply"))
    ] = None

    @field_validator("client_auth_type")
    @classmethod
    def _known_client_auth(cls, value: str) -> str:
        if value not in _CLIENT_AUTH:
            known = ", ".join(_CLIENT_AUTH)
            raise ValueError(f"{value!r} is not supported (supported: {known})")
        return value

    @field_validator("cipher_suites")
    @classmethod
    def _known_ciphers(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in _CIPHER_SUITES]
        if unknown:
            raise ValueError(
                f"unknown cipher suite {unknown[0]!r} (Go names, e.g. "
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)"
            )
        return value

    @property
    def enabled(self) -> bool:
        """TLS is on once the section sets anything; then it needs a certificate and key."""
        return bool(self.model_fields_set)

    def problems(self) -> list[str]:
        """Cross-field rules, one line each, named by their keys."""
        problems = []
        for key in ("cert_file", "key_file"):
            if self.enabled and getattr(self, key) is None:
                problems.append(f"{key}: required key is missing")
        verifying = self.client_auth_type != "NoClientCert"
        if verifying and self.client_ca_file is None:
            problems.append(
                f"client_ca_file: required with client_auth_type {self.client_auth_type}"
            )
        if not verifying and self.client_ca_file is not None:
            problems.append(
                "client_ca_file: set, but client_auth_type is NoClientCert, so no client would "
                "be verified (use RequireAndVerifyClientCert)"
            )
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            problems.append(
                f"min_version: {self.min_version} is above max_version {self.max_version}"
            )
        return [f"tls_server_config.{problem}" for problem in problems]


class Headers(Strict):
    """The headers the toolkit lets a web config set, under the toolkit's spelling."""

    content_security_policy: str | None = Field(None, alias="Content-Security-Policy")
    x_frame_options: str | None = Field(None, alias="X-Frame-Options")
    x_content_type_options: str | None = Field(None, alias="X-Content-Type-Options")
    x_xss_protection: str | None = Field(None, alias="X-XSS-Protection")
    strict_transport_security: str | None = Field(None, alias="Strict-Transport-Security")

    @field_validator("*")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and any(ord(char) < 32 or ord(char) == 127 for char in value):
            raise ValueError("control characters are not allowed in a header value")
        return value

    @field_validator("x_frame_options")
    @classmethod
    def _frame_options(cls, value: str | None) -> str | None:
        if value and value.lower() not in {"deny", "sameorigin"}:
            raise ValueError("must be deny or sameorigin")
        return value

    @field_validator("x_content_type_options")
    @classmethod
    def _content_type_options(cls, value: str | None) -> str | None:
        if value and value.lower() != "nosniff":
            raise ValueError("must be nosniff")
        return value


class HTTPServerConfig(Strict):
    # aiohttp serves HTTP/1.1 only; accepted so toolkit files load, and has no effect.
    http2: bool = True
    headers: Headers = Field(default_factory=Headers)


class WebConfigFile(Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig | None = None
    basic_auth_users: dict[str, Annotated[SecretStr, AfterValidator(_bcrypt_hash)]] | None = None
    rate_limit: Annotated[
        object, AfterValidator(_unsupported("put a reverse proxy in front to rate-limit"))
    ] = None

    @field_validator("basic_auth_users")
    @classmethod
    def _user_names(cls, value: dict[str, SecretStr] | None) -> dict[str, SecretStr] | None:
        for user in value or {}:
            if ":" in user or not user:
                # Basic auth splits user from password at the first colon.
                raise ValueError(f"user name {user!r} cannot be empty or contain ':'")
        return value


@dataclass(frozen=True)
class WebConfig:
    """What the server needs from a web-config file, checked and loaded (certificates included)."""

    source: Path | None = None
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    # Header name -> value; an empty value removes a default header.
    headers: Mapping[str, str] = field(default_factory=dict)


def load_web_config(path: Path) -> WebConfig:
    """Read, validate and load `path`; every problem is a line of the ConfigError it raises."""
    data: dict[str, Any] = read_yaml(path)
    parsed, problems = _validate(data)
    if parsed is None or problems:
        raise ConfigError([f"{path}: {line}" for line in problems])
    tls = parsed.tls_server_config
    context = None
    if tls is not None and tls.enabled:
        try:
            context = tls_context(tls, base=path.parent)
        except ConfigError as exc:
            raise ConfigError([f"{path}: {line}" for line in exc.problems]) from None
    headers: dict[str, str] = {}
    if parsed.http_server_config is not None:
        given = parsed.http_server_config.headers.model_dump(by_alias=True, exclude_unset=True)
        headers = {name: value or "" for name, value in given.items()}
    users = {
        user: hashed.get_secret_value().encode()
        for user, hashed in (parsed.basic_auth_users or {}).items()
    }
    return WebConfig(source=path, ssl_context=context, users=users, headers=headers)


def _validate(data: dict[str, Any]) -> tuple[WebConfigFile | None, list[str]]:
    """The parsed file and every problem in it, cross-field rules included.

    The TLS section's cross-field rules are checked here, not in a model validator, so they are
    reported even when another key of the file is wrong, each on its own line.
    """
    try:
        parsed = WebConfigFile.model_validate(data)
    except ValidationError as exc:
        problems = format_errors(exc)
        try:
            tls = TLSServerConfig.model_validate(data.get("tls_server_config") or {})
        except ValidationError:
            return None, problems  # already among the problems
        return None, problems + tls.problems()
    return parsed, parsed.tls_server_config.problems() if parsed.tls_server_config else []


class _EncryptedKeyError(Exception):
    pass


def _refuse_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal and hang a container's start-up.
    raise _EncryptedKeyError


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or str(exc)
    return reason.replace("_", " ").lower()


def _readable(key: str, path: Path) -> str | None:
    try:
        path.read_bytes()
    except OSError as exc:
        return f"tls_server_config.{key}: cannot read {path}: {exc.strerror or exc}"
    return None


def tls_context(tls: TLSServerConfig, *, base: Path) -> ssl.SSLContext:
    """A server SSLContext; certificate and key problems are one ConfigError line each.

    Relative paths are relative to the web-config file's directory, as in the toolkit.
    """
    assert tls.cert_file is not None  # noqa: S101 - the model validator requires both
    assert tls.key_file is not None  # noqa: S101
    cert_file, key_file = base / tls.cert_file, base / tls.key_file
    ca_file = base / tls.client_ca_file if tls.client_ca_file is not None else None
    files = [("cert_file", cert_file), ("key_file", key_file)]
    if ca_file is not None:
        files.append(("client_ca_file", ca_file))
    problems = [p for key, file in files if (p := _readable(key, file)) is not None]
    if problems:
        raise ConfigError(problems)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    if tls.cipher_suites:
        context.set_ciphers(":".join(_CIPHER_SUITES[name] for name in tls.cipher_suites))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # Parse the certificate on its own first: OpenSSL's error for a bad one is only "PEM lib".
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=cert_file.read_text(encoding="ascii"))
    except (ssl.SSLError, ValueError):
        raise ConfigError(
            [f"tls_server_config.cert_file: {cert_file} holds no PEM certificate"]
        ) from None
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_password)
    except _EncryptedKeyError:
        raise ConfigError(
            [f"tls_server_config.key_file: {key_file} is encrypted; give an unencrypted key"]
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            message = f"{key_file} is not the key of {cert_file}"
        else:
            message = f"{key_file} holds no usable PEM private key ({_ssl_reason(exc)})"
        raise ConfigError([f"tls_server_config.key_file: {message}"]) from None
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                [
                    f"tls_server_config.client_ca_file: {ca_file} holds no PEM certificate "
                    f"({_ssl_reason(exc)})"
                ]
            ) from None
    context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    return context


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes without stalling the event loop.

    bcrypt is slow on purpose (tens of ms of CPU each), so: a check that is not cached runs in
    a worker thread, at most `concurrency` at a time, so a flood of wrong passwords cannot take
    every thread of the default executor; an unknown user is checked against a dummy hash of the
    same cost, so response time does not tell which user names exist; and a successful check is
    remembered in a bounded LRU keyed by an HMAC of (user, password) under a per-process random
    key, so Prometheus scraping every few seconds costs a hash lookup, and the cache holds
    nothing an attacker could brute-force offline. Failures are never cached: they stay slow.
    """

    def __init__(
        self, users: Mapping[str, bytes], *, cache_size: int = 256, concurrency: int = 4
    ) -> None:
        self._users = dict(users)
        cost = max((int(hashed[4:6]) for hashed in self._users.values()), default=10)
        # A salt is a valid hash to check against (it never matches); making one costs nothing.
        self._dummy = bcrypt.gensalt(rounds=cost)
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_size = cache_size
        self._slots = asyncio.Semaphore(concurrency)
        self.bcrypt_checks = 0  # how many times bcrypt ran: tests read it

    async def verify(self, user: str, password: str) -> bool:
        secret = password.encode()
        entry = hmac.new(self._key, user.encode() + b":" + secret, hashlib.sha256).digest()
        if entry in self._cache:
            self._cache.move_to_end(entry)
            return True
        async with self._slots:
            ok = await asyncio.to_thread(self._check, user, secret)
        if ok:
            self._cache[entry] = None
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ok

    def _check(self, user: str, password: bytes) -> bool:
        self.bcrypt_checks += 1
        hashed = self._users.get(user)
        match = bcrypt.checkpw(
            password[:_BCRYPT_MAX_PASSWORD], hashed if hashed is not None else self._dummy
        )
        return match and hashed is not None


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic` value; None for anything else."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 inside
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def basic_auth_middleware(auth: BasicAuth) -> Middleware:
    """Every route, every method: unknown paths answer 401 too, so they reveal nothing."""

    @web.middleware
    async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        credentials = basic_credentials(request.headers.get(hdrs.AUTHORIZATION, ""))
        if credentials is None or not await auth.verify(*credentials):
            # DEBUG only: a misconfigured scraper would otherwise log a line per scrape.
            log.debug(
                "basic_auth_refused",
                extra={"remote": request.remote, "path": request.path},
            )
            return web.Response(
                status=401,
                text="401 Unauthorized\n",
                headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}"'},
            )
        return await handler(request)

    return basic_auth


def security_headers(
    configured: Mapping[str, str],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An on_response_prepare hook: it also reaches 401s, 404s and error pages."""

    async def set_headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in DEFAULT_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        for name, value in configured.items():
            if value:
                response.headers[name] = value
            else:  # blank in the web config: the toolkit's "unset"
                response.headers.popall(name, None)

    return set_headers


BASIC_AUTH = web.AppKey("basic_auth", BasicAuth)


def install_web_security(app: web.Application, web_config: WebConfig | None) -> None:
    """Security headers on every response; basic auth in front of every route when configured."""
    web_config = web_config or WebConfig()
    if web_config.users:
        auth = app[BASIC_AUTH] = BasicAuth(web_config.users)
        # First, so a refused request costs no other middleware anything.
        app.middlewares.insert(0, basic_auth_middleware(auth))
    app.on_response_prepare.append(security_headers(web_config.headers))
