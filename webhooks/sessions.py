"""Flask's signed-cookie session, opened without its signing machinery when there is no cookie.

Only /monitor keeps a session; Plivo's callbacks and the API never send the cookie. Flask's own
interface builds an itsdangerous serializer (key derivation included) on every request before it
even looks for the cookie: a fifth of a callback's framework overhead, spent to find nothing.
Here a request without the cookie gets the same empty session straight away; one with it is
read exactly as Flask reads it.
"""

from __future__ import annotations

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface


class CookieSessions(SecureCookieSessionInterface):
    """Flask's SecureCookieSessionInterface, minus the serializer for cookie-less requests."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)
