"""Huawei Cloud APIG `SDK-HMAC-SHA256` request signing.

Written to match `huaweicloudsdkcore.signer.Signer` byte for byte (the tests hold it to that with
generated requests), including its quirks: the canonical URI always ends in "/", query pairs are
sorted before encoding, and header names containing "_" are sent but not signed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_DATE_HEADER_LOWER = DATE_HEADER.lower()
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# A path of unreserved characters is its own canonical form: decoding and re-encoding each
# segment changes nothing. Every ShowShortJob path is one, so the exporter's requests skip that.
_CANONICAL_PATH = re.compile(r"[A-Za-z0-9._~/-]*")


def _encode(value: str) -> str:
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    if _CANONICAL_PATH.fullmatch(path):
        return path if path.endswith("/") else path + "/"
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(query: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in sorted(query))


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    return sorted(name.lower() for name in headers if "_" not in name)


def canonical_request(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    signed: Sequence[str],
    body: bytes,
) -> str:
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered.get(name, '')}\n" for name in signed)
    payload_hash = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
    return "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            canonical_headers,
            ";".join(signed),
            payload_hash,
        )
    )


def format_date(when: datetime) -> str:
    """`when` in UTC as X-Sdk-Date wants it: one strftime a second, not two a request."""
    return _format_second(when.timestamp() // 1)


@functools.lru_cache(maxsize=4)
def _format_second(second: float) -> str:
    return datetime.fromtimestamp(second, UTC).strftime(DATE_FORMAT)


def string_to_sign(canonical: str, when: datetime) -> str:
    return _string_to_sign(canonical, when.strftime(DATE_FORMAT))


def _string_to_sign(canonical: str, date: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{date}\n{digest}"


def signature(secret_key: str, to_sign: str) -> str:
    return hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


class GetSigner:
    """Signs one account's GETs (no body: every request the exporter sends): the parts that are
    the same in every request (header lines, signed-header list, HMAC key) are made once, not
    per request. Tests hold its headers to the official SDK's, query strings included.
    """

    __slots__ = ("_after", "_auth_prefix", "_base", "_before", "_key", "_signed")

    def __init__(
        self, *, host: str, headers: Mapping[str, str], access_key: str, secret_key: str
    ) -> None:
        base = {name: value.strip() for name, value in headers.items()}
        present = {name.lower() for name in base}
        if _DATE_HEADER_LOWER in present:
            raise ValueError(f"{DATE_HEADER} is set per request, not in the fixed headers")
        if "host" not in present:
            base["Host"] = host
        signed = signed_header_names({**base, DATE_HEADER: ""})
        lowered = {name.lower(): value for name, value in base.items()}
        lines = [f"{name}:{lowered.get(name, '')}\n" for name in signed]
        at = signed.index(_DATE_HEADER_LOWER)
        self._base = base
        self._before, self._after = "".join(lines[:at]), "".join(lines[at + 1 :])
        self._signed = ";".join(signed)
        self._key = secret_key.encode()
        self._auth_prefix = f"{ALGORITHM} Access={access_key}, SignedHeaders={self._signed}, "

    def sign(
        self, path: str, when: datetime, query: Sequence[tuple[str, str]] = ()
    ) -> dict[str, str]:
        date = format_date(when)
        canonical = (
            f"GET\n{canonical_uri(path)}\n{canonical_query(query)}\n"
            f"{self._before}{_DATE_HEADER_LOWER}:{date}\n"
            f"{self._after}\n{self._signed}\n{_EMPTY_SHA256}"
        )
        to_sign = _string_to_sign(canonical, date)
        sig = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        return {
            **self._base,
            DATE_HEADER: date,
            "Authorization": f"{self._auth_prefix}Signature={sig}",
        }


@dataclass(frozen=True, slots=True)
class ParsedAuthorization:
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Split an `SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…` header; None if not one."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key] = val
    try:
        return ParsedAuthorization(
            fields["Access"], tuple(fields["SignedHeaders"].split(";")), fields["Signature"]
        )
    except KeyError:
        return None


def verify(
    *,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    secret_key: str,
    auth: ParsedAuthorization,
    when: datetime,
) -> bool:
    """Recompute a received request's signature, as the gateway (and our simulator) does."""
    canonical = canonical_request(method, path, query, headers, auth.signed_headers, body)
    expected = signature(secret_key, string_to_sign(canonical, when))
    return hmac.compare_digest(expected, auth.signature)


def parse_date(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
