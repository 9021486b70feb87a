"""SIP digest authentication (RFC 2617, RFC 7616 as SIP uses it in RFC 3261 §22): both sides.

The sandbox plays Plivo's edge for inbound calls (challenge with 407, check the answer against
the stored HA1) and Plivo's outbound leg for agents (answer a PBX's 401/407 challenge with the
`<User>`'s credentials). The simulated PBXs challenge and check as well. One implementation
serves all of them; it is checked against the RFCs' worked examples and against requests'
HTTPDigestAuth (tests/sandbox/test_sandbox_digest.py).

qop "auth" and no qop are supported, with MD5, MD5-sess, SHA-256 and SHA-256-sess. Plivo keeps
only HA1 = MD5(username:realm:password) (its SIP-authentication page, Security:
https://www.plivo.com/docs/voice/concepts/sip-authentication), so its own challenges are MD5.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

HASHES: Mapping[str, Callable[[bytes], hashlib._Hash]] = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}
# Plivo's pages are silent on nonces (docs/plivo.md, Where Plivo is silent): each is good once,
# for one Request-URI, for SIP's transaction timeout (RFC 3261 Timer B = 64*T1 = 32 s).
NONCE_TTL = timedelta(seconds=32)
MAX_NONCES = 100_000  # outstanding challenges kept; the oldest go first beyond this

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')
# Values written unquoted, the rest quoted (RFC 3261 §25.1): qop is quoted in a challenge
# (a list) and bare in the answer.
_CHALLENGE_TOKENS = frozenset({"algorithm", "stale"})
_ANSWER_TOKENS = frozenset({"algorithm", "qop", "nc"})


class DigestError(ValueError):
    """A challenge or an Authorization header that cannot be read."""


def _base(algorithm: str) -> str:
    name = algorithm.upper().removesuffix("-SESS")
    if name not in HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    return name


def _hash(algorithm: str, text: str) -> str:
    return HASHES[_base(algorithm)](text.encode("utf-8")).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """Return H(username:realm:password): what a registrar keeps instead of the password."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def parse_params(header: str) -> dict[str, str]:
    """Read ``Digest k=v, k="v"`` into a dict (keys lower-cased, quotes and escapes removed)."""
    # Any linear white space may follow the scheme (RFC 3261 §25.1), a folded line included.
    scheme, *others = header.strip().split(None, 1) or [""]
    if scheme.lower() != "digest" or not others:
        raise DigestError("not a Digest header")
    params: dict[str, str] = {}
    position = 0
    rest = others[0].strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            raise DigestError("malformed Digest parameters")
        key, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if key in params:
            raise DigestError(f"Digest parameter {key} given twice")
        params[key] = value
        position = match.end()
    return params


def _format(params: Mapping[str, str | None], tokens: frozenset[str]) -> str:
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        if key in tokens:
            parts.append(f"{key}={value}")
        else:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{key}="{escaped}"')
    return "Digest " + ", ".join(parts)


@dataclass(frozen=True)
class Challenge:
    """A 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: str | None = "auth"
    opaque: str | None = None
    stale: bool = False

    def header(self) -> str:
        """Render the challenge header's value."""
        return _format(
            {
                "realm": self.realm,
                "nonce": self.nonce,
                "opaque": self.opaque,
                "algorithm": self.algorithm,
                "qop": self.qop,
                "stale": "true" if self.stale else None,
            },
            _CHALLENGE_TOKENS,
        )

    @classmethod
    def parse(cls, header: str) -> Challenge:
        """Read a challenge header; refuse one without realm or nonce."""
        params = parse_params(header)
        if "realm" not in params or not params.get("nonce"):
            raise DigestError("a digest challenge needs realm and nonce")
        algorithm = params.get("algorithm", "MD5")
        _base(algorithm)
        offered = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
        if offered and "auth" not in offered:
            raise DigestError("only qop=auth is supported")
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=algorithm,
            qop="auth" if offered else None,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
        )


@dataclass(frozen=True)
class Authorization:
    """The answer to a challenge: an Authorization / Proxy-Authorization header's fields."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def header(self) -> str:
        """Render the header's value."""
        return _format(
            {
                "username": self.username,
                "realm": self.realm,
                "nonce": self.nonce,
                "uri": self.uri,
                "response": self.response,
                "algorithm": self.algorithm,
                "cnonce": self.cnonce,
                "opaque": self.opaque,
                "qop": self.qop,
                "nc": self.nc,
            },
            _ANSWER_TOKENS,
        )

    @classmethod
    def parse(cls, header: str) -> Authorization:
        """Read an Authorization header; refuse one that lacks a required field."""
        params = parse_params(header)
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
        if missing:
            raise DigestError(f"Authorization lacks {', '.join(missing)}")
        qop = params.get("qop")
        if qop is not None and (qop != "auth" or not params.get("nc") or not params.get("cnonce")):
            raise DigestError("qop=auth needs nc and cnonce")
        if params.get("algorithm", "").upper().endswith("-SESS") and not params.get("cnonce"):
            raise DigestError("a -sess algorithm needs cnonce")
        return cls(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"].lower(),
            algorithm=params.get("algorithm", "MD5"),
            qop=qop,
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
        )


def response(
    stored_ha1: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """Compute the digest response (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1) from HA1."""
    key = stored_ha1
    if algorithm.upper().endswith("-SESS"):
        key = _hash(algorithm, f"{stored_ha1}:{nonce}:{cnonce}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{key}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{key}:{nonce}:{ha2}")


def answer(
    challenge: Challenge,
    username: str,
    password: str,
    method: str,
    uri: str,
    *,
    cnonce: str | None = None,
    nc: int = 1,
) -> Authorization:
    """Answer `challenge` as a client holding the password (a caller, or Plivo towards a PBX)."""
    cnonce = cnonce if cnonce is not None else secrets.token_hex(8)
    count = f"{nc:08x}" if challenge.qop else None
    used_cnonce = cnonce if challenge.qop or challenge.algorithm.upper().endswith("-SESS") else None
    key = ha1(username, challenge.realm, password, challenge.algorithm)
    return Authorization(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response(
            key,
            method,
            uri,
            challenge.nonce,
            algorithm=challenge.algorithm,
            qop=challenge.qop,
            nc=count,
            cnonce=used_cnonce,
        ),
        algorithm=challenge.algorithm,
        qop=challenge.qop,
        nc=count,
        cnonce=used_cnonce,
        opaque=challenge.opaque,
    )


def verify(auth: Authorization, stored_ha1: str, method: str) -> bool:
    """Tell whether `auth` was computed from the password behind `stored_ha1` (constant time)."""
    try:
        expected = response(
            stored_ha1,
            method,
            auth.uri,
            auth.nonce,
            algorithm=auth.algorithm,
            qop=auth.qop,
            nc=auth.nc,
            cnonce=auth.cnonce,
        )
    except DigestError:
        return False
    return hmac.compare_digest(expected.encode(), auth.response.encode())


@dataclass
class _Issued:
    realm: str
    uri: str
    expires: datetime


class Nonces:
    """Nonces a server has issued: each is good once, for one Request-URI, for NONCE_TTL.

    Shared by the threads of a served sandbox, so every change happens under one lock.
    """

    def __init__(self, token: Callable[[], str] = lambda: secrets.token_urlsafe(24)) -> None:
        self._token = token
        self._issued: dict[str, _Issued] = {}
        self._lock = threading.Lock()

    def issue(self, realm: str, uri: str, now: datetime) -> str:
        """Return a fresh nonce for a challenge on `uri`."""
        nonce = self._token()
        with self._lock:
            # Insertion order is issue order: expired and surplus nonces are at the front.
            while self._issued:
                oldest = next(iter(self._issued))
                if self._issued[oldest].expires > now and len(self._issued) < MAX_NONCES:
                    break
                del self._issued[oldest]
            self._issued[nonce] = _Issued(realm, uri, now + NONCE_TTL)
        return nonce

    def redeem(self, nonce: str, uri: str, now: datetime) -> bool:
        """Spend `nonce`; tell whether it was ours, unspent, unexpired and issued for `uri`."""
        with self._lock:
            issued = self._issued.pop(nonce, None)
        return issued is not None and issued.expires > now and issued.uri == uri
