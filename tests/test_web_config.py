"""--web.config.file: TLS, client certificates, basic auth and security headers, for real.

Certificates are made here with `cryptography`; the exporter runs as a real process with --demo,
and a real HTTPS client (urllib / http.client with an SSLContext) talks to it. Hashes use bcrypt
cost 4 to keep the suite fast, except the one test that measures the cache with a normal cost 10.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import ipaddress
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exporter.app import create_app
from exporter.config import ConfigError, load_settings
from exporter.webconfig import BASIC_AUTH, REALM, WebConfig, basic_credentials, load_web_config
from tests.support import eventually_async, run_cli, start_exporter

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
USER, PASSWORD = "prometheus", "s3cret-scrape-password"
FAST_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    server_cert: Path  # self-signed, SAN localhost and 127.0.0.1; also what clients trust
    server_key: Path
    client_ca: Path  # a self-signed CA that signed client_cert
    client_cert: Path
    client_key: Path
    other_key: Path  # belongs to no certificate here
    encrypted_key: Path  # server_key under a passphrase
    junk: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    """Self-signed (a CA, as `openssl req -x509` makes) unless `issuer` signs a leaf."""
    now = datetime.now(UTC)
    signer_cert, signer_key = issuer if issuer else (None, key)
    signer_public = signer_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(signer_cert.subject if signer_cert else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_public), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=issuer is None,
                crl_sign=issuer is None,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(signer_key, hashes.SHA256())


def _write_key(
    path: Path, key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None
) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _certificate("test client CA", ca_key)
    (d / "junk.pem").write_text("this is not PEM\n")
    return Pki(
        server_cert=_write_cert(
            d / "server.crt",
            _certificate("localhost", server_key, usage=ExtendedKeyUsageOID.SERVER_AUTH),
        ),
        server_key=_write_key(d / "server.key", server_key),
        client_ca=_write_cert(d / "client-ca.crt", ca),
        client_cert=_write_cert(
            d / "client.crt",
            _certificate(
                "scraper", client_key, issuer=(ca, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH
            ),
        ),
        client_key=_write_key(d / "client.key", client_key),
        other_key=_write_key(d / "other.key", ec.generate_private_key(ec.SECP256R1())),
        encrypted_key=_write_key(d / "encrypted.key", server_key, b"passphrase"),
        junk=d / "junk.pem",
    )


def _client_context(pki: Pki, *, tls12_only: bool = False, cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.server_cert))
    if tls12_only:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


# --- a real exporter process --------------------------------------------------------------------


def _web_config(tmp_path: Path, pki: Pki, body: str = "", *, hashed: str = FAST_HASH) -> Path:
    path = tmp_path / "web-config.yml"
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert}\n"
        f"  key_file: {pki.server_key}\n" + body + f"basic_auth_users:\n  {USER}: '{hashed}'\n"
    )
    return path


@contextmanager
def _exporter(tmp_path: Path, web_config: Path) -> Iterator[tuple[int, str]]:
    """The demo exporter on a port of its choosing; yields (port, the line it printed)."""
    exporter = start_exporter(
        "--demo", "--web.config.file", str(web_config), log=tmp_path / "exporter.log"
    )
    try:
        yield exporter.port, exporter.line
    finally:
        exporter.stop()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _get(
    url: str, context: ssl.SSLContext | None, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


# --- TLS and basic auth, end to end -------------------------------------------------------------


def test_metrics_over_https_need_the_right_user_and_password(tmp_path: Path, pki: Pki) -> None:
    with _exporter(tmp_path, _web_config(tmp_path, pki)) as (port, line):
        assert f"serving metrics on https://127.0.0.1:{port}/metrics" in line
        url = f"https://127.0.0.1:{port}"
        context = _client_context(pki)

        status, headers, body = _get(
            f"{url}/metrics", context, {"Authorization": _basic(USER, PASSWORD)}
        )
        assert status == 200
        assert b"cloudjob_" in body

        for authorization in (_basic(USER, "wrong"), _basic("mallory", PASSWORD), None):
            status, headers, body = _get(
                f"{url}/metrics", context, {"Authorization": authorization} if authorization else {}
            )
            assert status == 401, authorization
            assert headers["WWW-Authenticate"] == f'Basic realm="{REALM}"'
            assert b"cloudjob_" not in body


def test_every_endpoint_asks_for_credentials(tmp_path: Path, pki: Pki) -> None:
    with _exporter(tmp_path, _web_config(tmp_path, pki)) as (port, _):
        context = _client_context(pki)
        for path in ("/", "/metrics", "/healthz", "/readyz", "/api/v1/jobs", "/no/such/page"):
            status, _, _ = _get(f"https://127.0.0.1:{port}{path}", context)
            assert status == 401, path
        for method, path in (
            ("POST", "/-/reload"),
            ("POST", "/api/v1/jobs"),
            ("DELETE", "/api/v1/jobs/a/b"),
        ):
            request = urllib.request.Request(
                f"https://127.0.0.1:{port}{path}", method=method, data=b"{}"
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, context=context, timeout=10)
            assert refused.value.code == 401, path


def test_the_status_page_over_tls_sends_the_security_headers_and_hsts(
    tmp_path: Path, pki: Pki
) -> None:
    with _exporter(tmp_path, _web_config(tmp_path, pki)) as (port, _):
        status, headers, _ = _get(
            f"https://127.0.0.1:{port}/",
            _client_context(pki),
            {"Authorization": _basic(USER, PASSWORD)},
        )
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    # The status page loads its own stylesheet and script, nothing else.
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert headers["Strict-Transport-Security"] == "max-age=31536000"


def test_plain_http_to_the_tls_port_gets_no_metrics(tmp_path: Path, pki: Pki) -> None:
    with _exporter(tmp_path, _web_config(tmp_path, pki)) as (port, _):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Authorization": _basic(USER, PASSWORD)}
        try:
            connection.request("GET", "/metrics", headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException):
            return  # refused at the TLS layer: what we want
        finally:
            connection.close()
        pytest.fail(f"plain HTTP was answered: {response.status}")


def test_min_version_tls13_refuses_a_tls12_only_client(tmp_path: Path, pki: Pki) -> None:
    config = _web_config(tmp_path, pki, "  min_version: TLS13\n")
    with _exporter(tmp_path, config) as (port, _):
        url = f"https://127.0.0.1:{port}/metrics"
        auth = {"Authorization": _basic(USER, PASSWORD)}
        with pytest.raises(urllib.error.URLError) as refused:
            _get(url, _client_context(pki, tls12_only=True), auth)
        assert isinstance(refused.value.reason, ssl.SSLError)
        assert _get(url, _client_context(pki), auth)[0] == 200


def test_require_and_verify_client_cert_refuses_clients_without_one(
    tmp_path: Path, pki: Pki
) -> None:
    config = _web_config(
        tmp_path,
        pki,
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.client_ca}\n",
    )
    with _exporter(tmp_path, config) as (port, _):
        url = f"https://127.0.0.1:{port}/metrics"
        auth = {"Authorization": _basic(USER, PASSWORD)}
        with pytest.raises((OSError, http.client.HTTPException)):  # TLS alert or reset
            _get(url, _client_context(pki), auth)
        assert _get(url, _client_context(pki, cert=True), auth)[0] == 200
        # The certificate does not replace the password: both are needed.
        assert _get(url, _client_context(pki, cert=True))[0] == 401


def test_repeated_scrapes_over_tls_with_a_cost_10_hash_pass_and_wrong_passwords_fail(
    tmp_path: Path, pki: Pki
) -> None:
    """End to end over one TLS connection. That the passing ones cost one bcrypt check in all
    and every wrong one a full check is counted in process, by
    test_a_successful_check_is_cached_and_a_failed_one_never_is."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10))
    assert hashed.startswith(b"$2b$10$")
    with _exporter(tmp_path, _web_config(tmp_path, pki, hashed=hashed.decode())) as (port, _):
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=_client_context(pki), timeout=10
        )

        def scrape(password: str) -> int:
            connection.request("GET", "/healthz", headers={"Authorization": _basic(USER, password)})
            response = connection.getresponse()
            response.read()
            return response.status

        statuses = [scrape(PASSWORD) for _ in range(50)]
        refused = [scrape("wrong") for _ in range(5)]
        connection.close()

    assert statuses == [200] * 50
    assert refused == [401] * 5


# --- bad web configs: one line, exit 2, no traceback -------------------------------------------


BAD_CONFIGS: list[tuple[str, str, str]] = [
    (
        "unknown_top_level_key",
        "basic_auth_user:\n  alice: '{hash}'\n",
        "basic_auth_user: unknown key",
    ),
    (
        "unknown_tls_key",
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_verison: TLS13\n",
        "tls_server_config.min_verison: unknown key",
    ),
    (
        "missing_cert_file",
        "tls_server_config:\n  cert_file: {dir}/missing.crt\n  key_file: {key}\n",
        "tls_server_config.cert_file: cannot read {dir}/missing.crt: No such file or directory",
    ),
    (
        "cert_without_key",
        "tls_server_config:\n  cert_file: {cert}\n",
        "tls_server_config.key_file: required key is missing",
    ),
    (
        "not_a_certificate",
        "tls_server_config:\n  cert_file: {junk}\n  key_file: {key}\n",
        "tls_server_config.cert_file: {junk} holds no PEM certificate",
    ),
    (
        "key_of_another_certificate",
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {other_key}\n",
        "tls_server_config.key_file: {other_key} is not the key of {cert}",
    ),
    (
        "encrypted_key",
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {encrypted_key}\n",
        "tls_server_config.key_file: {encrypted_key} is encrypted",
    ),
    (
        "plain_text_password",
        "basic_auth_users:\n  alice: hunter2-plain-text\n",
        "basic_auth_users.alice: not a bcrypt hash",
    ),
    (
        "md5_htpasswd_hash",
        "basic_auth_users:\n  alice: $apr1$abcdefgh$0123456789abcdefghijkl\n",
        "basic_auth_users.alice: not a bcrypt hash",
    ),
    (
        "unknown_tls_version",
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS14\n",
        "tls_server_config.min_version: Input should be",
    ),
    (
        "client_ca_without_client_auth",
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {ca}\n",
        "tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert",
    ),
    (
        "verify_without_ca",
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.client_ca_file: required with client_auth_type",
    ),
    (
        "toolkit_key_we_cannot_honour",
        "rate_limit:\n  interval: 1s\n  burst: 20\n",
        "rate_limit: not supported by cloudjob-exporter",
    ),
    (
        "header_outside_the_toolkit_list",
        "http_server_config:\n  headers:\n    Server: nginx\n",
        "http_server_config.headers.Server: unknown key",
    ),
    ("invalid_yaml", "basic_auth_users: [\n", "invalid YAML"),
]


@pytest.mark.parametrize(
    ("body", "expected"),
    [pytest.param(body, expected, id=name) for name, body, expected in BAD_CONFIGS],
)
def test_a_bad_web_config_exits_2_with_one_readable_line(
    tmp_path: Path, pki: Pki, body: str, expected: str
) -> None:
    values = {
        "hash": FAST_HASH,
        "cert": pki.server_cert,
        "key": pki.server_key,
        "other_key": pki.other_key,
        "encrypted_key": pki.encrypted_key,
        "junk": pki.junk,
        "ca": pki.client_ca,
        "dir": tmp_path,
    }
    path = tmp_path / "web.yml"
    path.write_text(body.format(**values))
    # A real start, not --check-config: the server must refuse before it listens.
    result = run_cli("--demo", "--listen", "127.0.0.1:0", "--web.config.file", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"cloudjob-exporter: {path}: "), lines[0]
    assert expected.format(**values) in lines[0]
    assert "hunter2" not in result.stderr  # a plain-text password is never echoed


def test_check_config_also_checks_the_web_config_and_names_every_problem(
    tmp_path: Path,
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(
        "basic_auth_users:\n  alice: nope\n  bob: nope\ntls_server_config:\n  key_file: k\n"
    )
    result = run_cli("--check-config", "--web.config.file", str(path))
    assert result.returncode == 2
    hint = (
        "(want $2a$, $2b$ or $2y$ with cost 04-31, "
        "as `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)"
    )
    assert result.stderr.splitlines() == [
        f"cloudjob-exporter: {path}: basic_auth_users.alice: not a bcrypt hash {hint}",
        f"cloudjob-exporter: {path}: basic_auth_users.bob: not a bcrypt hash {hint}",
        f"cloudjob-exporter: {path}: tls_server_config.cert_file: required key is missing",
    ]


def test_a_toolkit_sample_config_loads_with_paths_relative_to_the_file(
    tmp_path: Path, pki: Pki
) -> None:
    (tmp_path / "server.crt").write_bytes(pki.server_cert.read_bytes())
    (tmp_path / "server.key").write_bytes(pki.server_key.read_bytes())
    path = tmp_path / "web-config.yml"
    # The exporter-toolkit's docs/web-config.yml (cert paths relative to the file) plus headers.
    path.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n"
        "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: sameorigin\n"
        "    X-XSS-Protection: ''\n"
        "basic_auth_users:\n"
        "  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze\n"
        "  bob: $2y$10$hLqFl9jSjoAAy95Z/zw8Ye8wkdMBM8c5Bn1ptYqP/AXyV0.oy0S8m\n"
    )
    loaded = load_web_config(path)
    assert loaded.ssl_context is not None
    assert loaded.ssl_context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert set(loaded.users) == {"alice", "bob"}
    assert loaded.headers == {"X-Frame-Options": "sameorigin", "X-XSS-Protection": ""}


def test_an_empty_web_config_changes_nothing() -> None:
    assert load_web_config(Path(os.devnull)) == WebConfig(source=Path(os.devnull))


def test_a_missing_web_config_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_web_config(tmp_path / "nope.yml")
    assert error.value.problems == [
        f"{tmp_path / 'nope.yml'}: cannot read: No such file or directory"
    ]


# --- in process: the middleware and the cache, counted ------------------------------------------


async def _client(
    aiohttp_client: ClientFactory,
    tmp_path: Path,
    users: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> TestClient[Any, Any]:
    config = tmp_path / "config.yaml"
    config.write_text("api: {token_env: T_API}\n")
    web_config = WebConfig(
        users={user: hashed.encode() for user, hashed in (users or {}).items()},
        headers=headers or {},
    )
    app = create_app(load_settings(config), environ={"T_API": "api-token"}, web_config=web_config)
    return await aiohttp_client(app)


async def test_a_successful_check_is_cached_and_a_failed_one_never_is(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, {USER: FAST_HASH})
    auth = client.app[BASIC_AUTH]
    for _ in range(50):
        async with client.get("/metrics", headers={"Authorization": _basic(USER, PASSWORD)}) as r:
            assert r.status == 200
    assert auth.bcrypt_checks == 1
    for _ in range(3):
        async with client.get("/metrics", headers={"Authorization": _basic(USER, "nope")}) as r:
            assert r.status == 401
    assert auth.bcrypt_checks == 4


async def test_an_unknown_user_costs_a_bcrypt_check_like_a_known_one(
    aiohttp_client: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=8)).decode()
    client = await _client(aiohttp_client, tmp_path, {USER: slow})
    checked_against: list[bytes] = []
    checkpw = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        checked_against.append(hashed)
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", recording)
    for user in (USER, "mallory"):
        async with client.get("/", headers={"Authorization": _basic(user, "wrong")}) as r:
            assert r.status == 401
    assert client.app[BASIC_AUTH].bcrypt_checks == 2
    # The dummy hash has the known user's cost factor, so both checks cost the same.
    assert [hashed[:7] for hashed in checked_against] == [b"$2b$08$", b"$2b$08$"]
    assert checked_against[1] != slow.encode()


async def test_bcrypt_runs_off_the_event_loop(
    aiohttp_client: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bcrypt check held up in its thread must not hold up another request."""
    client = await _client(aiohttp_client, tmp_path, {USER: FAST_HASH, "slow": FAST_HASH})
    fast_auth = {"Authorization": _basic(USER, PASSWORD)}
    async with client.get("/healthz", headers=fast_auth) as r:  # now cached
        assert r.status == 200
    entered, release = threading.Event(), threading.Event()
    checkpw = bcrypt.checkpw

    def held(password: bytes, hashed: bytes) -> bool:
        if password == b"held":
            entered.set()
            release.wait(timeout=30)  # only a hang guard: on the event loop this stalls it all
        return checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", held)

    async def status(headers: dict[str, str]) -> int:
        async with client.get("/healthz", headers=headers) as r:
            await r.read()
            return r.status

    slow_task = asyncio.create_task(status({"Authorization": _basic("slow", "held")}))
    await eventually_async(entered.is_set, what="the slow check starts")
    assert await status(fast_auth) == 200
    assert not slow_task.done()  # the fast request finished while the slow check was held
    release.set()
    assert await slow_task == 401


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
async def test_every_bcrypt_prefix_htpasswd_and_go_write_is_accepted(
    aiohttp_client: ClientFactory, tmp_path: Path, prefix: str
) -> None:
    hashed = prefix + FAST_HASH.removeprefix("$2b$")
    client = await _client(aiohttp_client, tmp_path, {USER: hashed})
    async with client.get("/metrics", headers={"Authorization": _basic(USER, PASSWORD)}) as r:
        assert r.status == 200


async def test_a_password_over_72_bytes_matches_as_htpasswd_hashed_it(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    long_password = "x" * 100
    hashed = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    client = await _client(aiohttp_client, tmp_path, {USER: hashed})
    async with client.get("/", headers={"Authorization": _basic(USER, long_password)}) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Bearer api-token",
        "Basic",
        "",
    ],
)
async def test_a_malformed_authorization_header_is_a_401_not_an_error(
    aiohttp_client: ClientFactory, tmp_path: Path, authorization: str
) -> None:
    client = await _client(aiohttp_client, tmp_path, {USER: FAST_HASH})
    async with client.get("/metrics", headers={"Authorization": authorization}) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == f'Basic realm="{REALM}"'


def test_basic_credentials_split_at_the_first_colon_only() -> None:
    header = _basic("alice", "pass:with:colons")
    assert basic_credentials(header) == ("alice", "pass:with:colons")
    assert basic_credentials("basic " + header.split()[1]) == ("alice", "pass:with:colons")


async def test_security_headers_reach_every_response_without_a_web_config(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path)
    for path, status in (("/", 200), ("/metrics", 200), ("/no/such/page", 404)):
        async with client.get(path) as r:
            assert r.status == status
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert "Strict-Transport-Security" not in r.headers  # plain HTTP
            if path != "/":
                assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    async with client.get("/") as r:  # the status page loads its packaged CSS and script
        assert r.headers["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'none'"


async def test_web_config_headers_override_and_blank_removes(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    headers = {
        "X-Frame-Options": "sameorigin",
        "Content-Security-Policy": "",
        "X-XSS-Protection": "0",
    }
    client = await _client(aiohttp_client, tmp_path, {USER: FAST_HASH}, headers)
    async with client.get("/metrics") as r:  # a 401 carries them too
        assert r.status == 401
        assert r.headers["X-Frame-Options"] == "sameorigin"
        assert r.headers["X-XSS-Protection"] == "0"
        assert "Content-Security-Policy" not in r.headers


async def test_with_basic_auth_the_write_api_still_needs_its_token(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, {USER: FAST_HASH})
    basic = {"Authorization": _basic(USER, PASSWORD)}
    async with client.post("/-/reload", headers=basic) as r:
        assert r.status == 401  # from the API: the password is not the API token
        assert "token" in (await r.json())["error"]
    async with client.post("/-/reload", headers={"X-Cloudjob-Token": "api-token"}) as r:
        assert r.status == 401  # the token is not a password either
        assert r.headers["WWW-Authenticate"].startswith("Basic")


async def test_with_basic_auth_the_write_api_takes_its_token_in_x_cloudjob_token(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, {USER: FAST_HASH})
    headers = {"Authorization": _basic(USER, PASSWORD), "X-Cloudjob-Token": "api-token"}
    async with client.post("/-/reload", headers=headers) as r:
        assert r.status != 401, await r.text()
    async with client.post("/-/reload", headers={**headers, "X-Cloudjob-Token": "wrong"}) as r:
        assert r.status == 403
