"""Request-time access to the app's runtime and to the public URLs Plivo uses for us."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Flask, Request, current_app, g, request
from werkzeug.routing import Map

from sipguard.calls.handoff import TOKEN_PARAM
from sipguard.errors import ConfigError
from sipguard.runtime import Runtime

if TYPE_CHECKING:
    from flask.ctx import _AppCtxGlobals  # flask.g's type

EXTENSION = "sipguard"
# Characters RFC 3986 allows unescaped in a path; everything else is percent-encoded again.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _behind(proxy: Any) -> Callable[[], Any]:
    return proxy._get_current_object


# The objects behind Flask's proxies, for the callbacks' hot path. Every attribute read through
# `flask.request`, `current_app` or `g` is a context look-up plus, on Python 3.11, an AttributeError
# raised and dropped inside the proxy's __getattr__, and a callback makes a few dozen: each
# function takes the object once instead. Outside a request they raise RuntimeError, as the
# proxies do.
current_request: Callable[[], Request] = _behind(request)
current_flask: Callable[[], Flask] = _behind(current_app)
current_globals: Callable[[], _AppCtxGlobals] = _behind(g)


def runtime() -> Runtime:
    """Return the current app's runtime."""
    found: Runtime = current_flask().extensions[EXTENSION]
    return found


def public_root() -> str:
    """Return the URL Plivo reaches this app's root at.

    PUBLIC_BASE_URL when set; otherwise (TRUSTED_PROXY_COUNT > 0) the scheme, host and prefix
    that ProxyFix took from the trusted X-Forwarded-* headers. Never the raw Host header.
    """
    base = runtime().settings.public_base_url
    if base is not None:
        return base
    req = current_request()
    return f"{req.scheme}://{req.host}{req.script_root}"


def signed_url() -> str:
    """Return the URL Plivo signed for this request: public root, path, raw query."""
    req = current_request()
    raw_query = req.environ.get("QUERY_STRING", "")
    # WSGI hands the query over as latin-1; undo that to get the bytes Plivo sent.
    query = raw_query.encode("latin-1", "replace").decode("utf-8", "replace")
    url = public_root() + quote(req.path, safe=_PATH_SAFE)
    return f"{url}?{query}" if query else url


def public_url(endpoint: str, **values: Any) -> str:
    """Return the absolute URL Plivo should call for `endpoint` (e.g. a Dial action URL).

    A URL without a token (a group's Dial action, say) is the same on every call: its path is
    built once per app and remembered. One with a token is new each time and is not kept.
    """
    url_map = current_flask().url_map
    if TOKEN_PARAM in values:
        return public_root() + _build(url_map, endpoint, values)
    return public_root() + _remembered(url_map, endpoint, tuple(values.items()))


def _build(url_map: Map, endpoint: str, values: dict[str, Any]) -> str:
    """Return `endpoint`'s path from the app's root (no script root, no host)."""
    return url_map.bind("localhost", script_name="/").build(endpoint, values)


@lru_cache(maxsize=1024)
def _remembered(url_map: Map, endpoint: str, values: tuple[tuple[str, Any], ...]) -> str:
    return _build(url_map, endpoint, dict(values))


def external_url(endpoint: str, **values: Any) -> str:
    """Return the absolute URL of `endpoint` outside a request (CLI, REST helpers).

    Built from PUBLIC_BASE_URL, the only root known without a request from Plivo.
    """
    base = runtime().settings.public_base_url
    if base is None:
        raise ConfigError(
            "PUBLIC_BASE_URL is not set: it is needed to tell Plivo where this app's webhooks "
            "are (or pass the URLs explicitly)"
        )
    return base + _build(current_flask().url_map, endpoint, values)
