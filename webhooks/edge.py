"""How Flask reads a request, tuned for callbacks: the cookie session and the urlencoded form.

Only /monitor keeps a session; Plivo's callbacks and the API never send the cookie. Flask's own
session interface builds an itsdangerous serializer (key derivation included) on every request
before it even looks for the cookie. Here a request without the cookie gets the same empty
session straight away; one with it is read exactly as Flask reads it.

A urlencoded form is parsed once, strictly: the same pairs werkzeug would return, refused with
a 400 when its percent-encoding is broken or it is not UTF-8 (werkzeug would half-understand
it), instead of a separate check pass over the body before werkzeug's own parse.
"""

from __future__ import annotations

from typing import IO, Any

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.formparser import FormDataParser

from sipguard.calls.forms import parse_urlencoded


class CookieSessions(SecureCookieSessionInterface):
    """Flask's SecureCookieSessionInterface, minus the serializer for cookie-less requests."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # No Cookie header at all (every callback): not even the cookie jar is built.
        if app.secret_key and (
            "HTTP_COOKIE" not in request.environ
            or not request.cookies.get(self.get_cookie_name(app))
        ):
            return self.session_class()
        return super().open_session(app, request)


class _StrictForms(FormDataParser):
    # werkzeug's parse() dispatches urlencoded bodies to this method; multipart is untouched.
    def _parse_urlencoded(
        self, stream: IO[bytes], mimetype: str, content_length: int | None, options: Any
    ) -> Any:
        return stream, self.cls(parse_urlencoded(stream.read())), self.cls()


class StrictRequest(Request):
    """Flask's request, whose urlencoded form is checked and parsed in one pass."""

    form_data_parser_class = _StrictForms


def init_app(app: Flask) -> None:
    """Use the cheap cookie session and the strict form parser for every request."""
    app.session_interface = CookieSessions()
    app.request_class = StrictRequest
