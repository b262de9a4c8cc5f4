"""Tencent Cloud COS/CI request signing (`q-sign-algorithm=sha1`).

Written to match `qcloud_cos.cos_auth.CosS3Auth` (cos-python-sdk-v5) byte for byte; the tests
hold it to that with generated requests. Its quirks, kept on purpose because the service checks
the same string:

- the path is signed *unencoded* (`/jobs/a,b`), while the wire carries it encoded (`a%2Cb`);
- header and parameter names are percent-encoded (safe: `-_.~`) and then lower-cased, escapes
  included (`é` becomes `%c3%a9`); values are percent-encoded, case kept, never stripped;
- names equal after that keep the last value, in the caller's order;
- the signature is valid from a minute before the signing moment (`q-sign-time` and
  `q-key-time` are the same window), so a server whose clock is a little behind accepts it.

Unlike the SDK, nothing here chooses headers: the caller passes exactly the headers it wants
signed, with `host` as it goes on the wire (the SDK signs the URL's hostname without its port).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

ALGORITHM = "sha1"
# The SDK backdates every signature by this much to tolerate a server clock that lags ours.
BACKDATE_SECONDS = 60
# The header that carries a temporary credential's token to CI (COS itself uses
# `x-cos-security-token`); it must be among the signed headers.
CI_TOKEN_HEADER = "x-ci-security-token"  # noqa: S105 -- a header name, not a secret

_WINDOW = re.compile(r"(\d+);(\d+)")


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_pairs(pairs: Mapping[str, str]) -> dict[str, str]:
    """Encoded, lower-cased names to encoded values; a later name wins over an earlier equal one."""
    return {_encode(name).lower(): _encode(value) for name, value in pairs.items()}


def _joined(pairs: Mapping[str, str]) -> str:
    return "&".join(f"{name}={value}" for name, value in sorted(pairs.items()))


def format_string(
    method: str, path: str, params: Mapping[str, str], headers: Mapping[str, str]
) -> str:
    """The SDK's `HttpString`; `params` and `headers` already canonical (see canonical_pairs)."""
    return f"{method.lower()}\n{path}\n{_joined(params)}\n{_joined(headers)}\n"


def string_to_sign(key_time: str, http_string: str) -> str:
    digest = hashlib.sha1(http_string.encode()).hexdigest()  # noqa: S324 -- the protocol's hash
    return f"{ALGORITHM}\n{key_time}\n{digest}\n"


def signature(secret_key: str, key_time: str, to_sign: str) -> str:
    """HMAC-SHA1 with a key derived from the time window, so a leaked signature expires."""
    sign_key = hmac.new(secret_key.encode(), key_time.encode(), hashlib.sha1).hexdigest()
    return hmac.new(sign_key.encode(), to_sign.encode(), hashlib.sha1).hexdigest()


def _request_signature(
    secret_key: str,
    key_time: str,
    method: str,
    path: str,
    signed_params: Mapping[str, str],
    signed_headers: Mapping[str, str],
) -> str:
    """What the client sends and the server recomputes; params and headers already canonical."""
    # The SDK signs "/" for an empty key and adds the leading slash when the key lacks it.
    signed_path = path if path.startswith("/") else "/" + path
    http_string = format_string(method, signed_path, signed_params, signed_headers)
    return signature(secret_key, key_time, string_to_sign(key_time, http_string))


def sign(
    *,
    method: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    secret_id: str,
    secret_key: str,
    start: int,
    expire: int,
) -> str:
    """The `Authorization` value for a request, as `CosS3Auth` computes it.

    `path` is unencoded; `params` are the query parameters to sign (decoded); `headers` are the
    headers to sign, as sent. `start` is the signing moment in epoch seconds (the SDK's
    `time.time()`): the signature is valid from `start - BACKDATE_SECONDS` to `start + expire`.
    """
    window = f"{start - BACKDATE_SECONDS};{start + expire}"
    signed_params = canonical_pairs(params)
    signed_headers = canonical_pairs(headers)
    sig = _request_signature(secret_key, window, method, path, signed_params, signed_headers)
    return (
        f"q-sign-algorithm={ALGORITHM}&q-ak={secret_id}&q-sign-time={window}"
        f"&q-key-time={window}&q-header-list={';'.join(sorted(signed_headers))}"
        f"&q-url-param-list={';'.join(sorted(signed_params))}&q-signature={sig}"
    )


@dataclass(frozen=True, slots=True)
class ParsedCosAuthorization:
    secret_id: str
    sign_time: tuple[int, int]
    key_time: tuple[int, int]
    header_list: tuple[str, ...]
    param_list: tuple[str, ...]
    signature: str


def _window(value: str) -> tuple[int, int] | None:
    match = _WINDOW.fullmatch(value)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def _names(value: str) -> tuple[str, ...]:
    return tuple(name for name in value.split(";") if name)


def parse_authorization(value: str) -> ParsedCosAuthorization | None:
    """Split a `q-sign-algorithm=sha1&q-ak=…` value into its fields; None if it is not one."""
    fields: dict[str, str] = {}
    for part in value.strip().split("&"):
        key, sep, val = part.partition("=")
        if not sep:
            return None
        fields[key] = val
    if fields.get("q-sign-algorithm") != ALGORITHM:
        return None
    try:
        secret_id = fields["q-ak"]
        sign_time = _window(fields["q-sign-time"])
        key_time = _window(fields["q-key-time"])
        header_list = _names(fields["q-header-list"])
        param_list = _names(fields["q-url-param-list"])
        sig = fields["q-signature"]
    except KeyError:
        return None
    if not secret_id or sign_time is None or key_time is None or not sig:
        return None
    return ParsedCosAuthorization(secret_id, sign_time, key_time, header_list, param_list, sig)


def _named(pairs: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str] | None:
    canonical = canonical_pairs(pairs)
    if any(name not in canonical for name in names):
        return None
    return {name: canonical[name] for name in names}


def verify(
    *,
    method: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    secret_key: str,
    auth: ParsedCosAuthorization,
) -> bool:
    """Recompute a received request's signature, as CI (and our simulator) does.

    Only the headers and parameters the client named in `q-header-list` / `q-url-param-list`
    count; a named one that is missing fails. The sign key and string-to-sign use `q-key-time`,
    as COS's signature document specifies (the SDK sends the same window in both fields). The
    caller checks the window against its own clock.
    """
    signed_params = _named(params, auth.param_list)
    signed_headers = _named(headers, auth.header_list)
    if signed_params is None or signed_headers is None:
        return False
    key_time = f"{auth.key_time[0]};{auth.key_time[1]}"
    expected = _request_signature(secret_key, key_time, method, path, signed_params, signed_headers)
    # Bytes, because compare_digest refuses str with non-ASCII characters and headers may have them.
    return hmac.compare_digest(expected.encode(), auth.signature.encode(errors="surrogateescape"))
