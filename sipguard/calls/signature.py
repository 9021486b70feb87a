"""Plivo callback signatures: V3 and Ma-V3, and V2 only when asked for. No web framework here.

The canonical string is Plivo's V3 scheme (docs/plivo.md, Callbacks and signatures), checked
against Plivo's published vectors and, as an oracle, plivo-python's ``plivo/utils/signature_v3.py``:

* base = ``scheme://netloc/path`` of the URL Plivo was configured with; the port is kept, the
  query and ``#fragment`` (callback-timeout settings) are not part of the base. The path is
  signed as received, a ``;params`` suffix of its last segment included, as plivo-node, -go,
  -ruby, -php and -java do; plivo-python's ``urlparse`` drops that suffix, which would let two
  different URLs verify with one signature;
* GET: URL query and params merged (the URL's value wins for a key in both), keys sorted by code
  point, each value as ``k=v`` (values sorted, percent-decoded, not re-encoded), joined with ``&``;
  ``base?that`` or just ``base``;
* POST with a body: ``base?sortedQuery.`` + ``kv`` pairs concatenated, or ``base?`` + pairs when
  the URL has no query; POST with an empty body signs like GET with no params;
* signature = ``base64(HMAC-SHA256(token, canonical + "." + nonce))``.

V2 (deprecated, off unless asked for) signs the same base followed by the nonce, without the
params. Plivo may put several comma-separated signatures in one header (one per auth token); any
match is enough. Every comparison goes through :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

from sipguard.errors import SignatureError

V3_HEADER = "X-Plivo-Signature-V3"
MA_V3_HEADER = "X-Plivo-Signature-Ma-V3"
V3_NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
V2_HEADER = "X-Plivo-Signature-V2"
MA_V2_HEADER = "X-Plivo-Signature-Ma-V2"
V2_NONCE_HEADER = "X-Plivo-Signature-V2-Nonce"

MAX_NONCE_LENGTH = 128
MAX_SIGNATURES_PER_HEADER = 16

Params = Mapping[str, Sequence[str]]


class Headers(Protocol):
    """Anything with a case-insensitive (or exact) header lookup, e.g. werkzeug's Headers."""

    def get(self, key: str) -> str | None: ...


def _split_url(url: str) -> tuple[str, str]:
    """Return the signed base (scheme://netloc/path, `;params` kept) and the raw query of `url`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), parts.query


def _query_map(query: str) -> dict[str, list[str]]:
    return parse_qs(query, keep_blank_values=True) if query else {}


def _values(value: str | Sequence[str]) -> list[str]:
    # A bare string is one value, not a sequence of one-character values.
    return [value] if isinstance(value, str) else sorted(value)


def _sorted_query(params: Mapping[str, Sequence[str]]) -> str:
    return "&".join(f"{key}={value}" for key in sorted(params) for value in _values(params[key]))


def _sorted_pairs(params: Params) -> str:
    return "".join(f"{key}{value}" for key in sorted(params) for value in _values(params[key]))


def canonical_v3(method: str, url: str, params: Params) -> str:
    """Build the string Plivo signs for a V3 signature, without the nonce."""
    base, query = _split_url(url)
    if method.upper() == "GET":
        merged: dict[str, Sequence[str]] = dict(params)
        merged.update(_query_map(query))
        joined = _sorted_query(merged)
        return f"{base}?{joined}" if joined else base
    sorted_query = _sorted_query(_query_map(query))
    if not params:
        return f"{base}?{sorted_query}" if sorted_query else base
    separator = "." if sorted_query else ""
    return f"{base}?{sorted_query}{separator}{_sorted_pairs(params)}"


def _digest(mac: hmac.HMAC, message: bytes) -> bytes:
    copy = mac.copy()
    copy.update(message)
    return base64.b64encode(copy.digest())


def _mac(token: str) -> hmac.HMAC:
    return hmac.new(token.encode("utf-8"), digestmod=hashlib.sha256)


def sign_v3(token: str, method: str, url: str, params: Params, nonce: str) -> str:
    """Compute the V3 signature Plivo would send for this request."""
    message = f"{canonical_v3(method, url, params)}.{nonce}".encode()
    return _digest(_mac(token), message).decode("ascii")


def signed_headers(
    token: str,
    method: str,
    url: str,
    params: Params,
    nonce: str,
    main_token: str | None = None,
) -> dict[str, str]:
    """Return the headers Plivo sends with a callback (used by tests and the sandbox)."""
    headers = {
        V3_NONCE_HEADER: nonce,
        V3_HEADER: sign_v3(token, method, url, params, nonce),
    }
    if main_token is not None:
        headers[MA_V3_HEADER] = sign_v3(main_token, method, url, params, nonce)
    return headers


@dataclass(frozen=True)
class Verified:
    """Which signature matched, and the nonce it covered (the replay key)."""

    scheme: str
    nonce: str


class Keyring:
    """The tokens a callback may be signed with, prepared once for fast HMACs.

    `account_tokens` sign ``X-Plivo-Signature-V3`` (newest first during a rotation);
    `main_tokens` sign ``X-Plivo-Signature-Ma-V3``. V2 is off unless `accept_v2` is set,
    because it does not cover the body.
    """

    def __init__(
        self,
        account_tokens: Sequence[str],
        main_tokens: Sequence[str] = (),
        accept_v2: bool = False,
    ) -> None:
        self._account = tuple(_mac(token) for token in account_tokens if token)
        self._main = tuple(_mac(token) for token in main_tokens if token)
        if not self._account and not self._main:
            raise ValueError("a keyring needs at least one non-empty token")
        self.accept_v2 = accept_v2

    def __repr__(self) -> str:
        return f"Keyring(account={len(self._account)}, main={len(self._main)})"

    @staticmethod
    def _matches(macs: Sequence[hmac.HMAC], message: bytes, header: str) -> bool:
        candidates = [c.strip().encode("ascii", "replace") for c in header.split(",")]
        if len(candidates) > MAX_SIGNATURES_PER_HEADER:
            raise SignatureError(f"more than {MAX_SIGNATURES_PER_HEADER} signatures in one header")
        matched = False
        for mac in macs:
            expected = _digest(mac, message)
            for candidate in candidates:
                matched |= hmac.compare_digest(expected, candidate)
        return matched

    def verify(self, headers: Headers, method: str, url: str, params: Params) -> Verified:
        """Check a callback's signature headers; raise SignatureError with the reason."""
        v3 = headers.get(V3_HEADER)
        ma_v3 = headers.get(MA_V3_HEADER)
        # Presence, not truthiness: an empty V3 header must not open the way to V2.
        if v3 is not None or ma_v3 is not None:
            nonce = _checked_nonce(headers.get(V3_NONCE_HEADER), V3_NONCE_HEADER)
            message = f"{canonical_v3(method, url, params)}.{nonce}".encode()
            if v3 and self._matches(self._account, message, v3):
                return Verified("v3", nonce)
            if ma_v3 and self._matches(self._main, message, ma_v3):
                return Verified("ma-v3", nonce)
            if ma_v3 and not v3 and not self._main:
                raise SignatureError(
                    "only X-Plivo-Signature-Ma-V3 was sent and PLIVO_MAIN_AUTH_TOKEN is not set"
                )
            raise SignatureError("V3 signature does not match")
        v2 = headers.get(V2_HEADER)
        ma_v2 = headers.get(MA_V2_HEADER)
        if v2 is not None or ma_v2 is not None:
            if not self.accept_v2:
                raise SignatureError("only a V2 signature was sent and V2 is not accepted")
            nonce = _checked_nonce(headers.get(V2_NONCE_HEADER), V2_NONCE_HEADER)
            base, _ = _split_url(url)
            message = f"{base}{nonce}".encode()
            if v2 and self._matches(self._account, message, v2):
                return Verified("v2", nonce)
            if ma_v2 and self._matches(self._main, message, ma_v2):
                return Verified("ma-v2", nonce)
            raise SignatureError("V2 signature does not match")
        raise SignatureError("no Plivo signature header")


def _checked_nonce(nonce: str | None, header: str) -> str:
    if not nonce:
        raise SignatureError(f"{header} is missing")
    if len(nonce) > MAX_NONCE_LENGTH or not nonce.isprintable():
        raise SignatureError(f"{header} is malformed")
    return nonce
