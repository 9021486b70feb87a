"""V2 signatures as Plivo sends them, for tests: the app only verifies V2, it never signs one."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit, urlunsplit


def sign_v2(token: str, url: str, nonce: str) -> str:
    """Compute the (deprecated) V2 signature: base URL then nonce, no separator, no params.

    The base is scheme://netloc/path of `url`, the path as received (`;params` kept), without
    the query or #fragment (docs/plivo.md, Callbacks and signatures).
    """
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    mac = hmac.new(token.encode("utf-8"), f"{base}{nonce}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")
