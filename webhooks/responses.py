"""How the app answers over HTTP: Plivo XML, and one shape for every error."""

from __future__ import annotations

import logging
import traceback

from flask import Response, jsonify
from werkzeug.exceptions import HTTPException

from sipguard.errors import AppError, SignatureError
from webhooks.state import callback_state
from xml_builders import Element, carries_call_data, carries_credentials, to_bytes

log = logging.getLogger("sipguard.http")


def xml_response(root: Element) -> Response:
    """Serialise Plivo XML; a document carrying SIP credentials or caller details is never
    cached."""
    response = Response(to_bytes(root), status=200, mimetype="application/xml")
    if carries_credentials(root) or carries_call_data(root):
        response.headers["Cache-Control"] = "no-store"
    return response


def error_response(status: int, message: str) -> Response:
    """Return the JSON error body every failure uses: {"error": message}."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def handle_app_error(exc: AppError) -> Response:
    """Turn one of the app's own errors into its HTTP answer."""
    decision = "refused" if exc.status in (401, 403) else "invalid"
    _ended(decision, exc.message, exc.message if isinstance(exc, SignatureError) else None)
    return error_response(exc.status, exc.message)


def handle_http_error(exc: HTTPException) -> Response:
    """Answer werkzeug's 4xx (404, 405, 413, bad form encoding...) in the same JSON shape."""
    _ended("invalid", exc.name)
    response = error_response(exc.code or 500, exc.description or exc.name)
    for name, value in exc.get_headers():
        if name.lower() == "allow":  # a 405 must say which methods the URL takes (RFC 9110)
            response.headers[name] = value
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def handle_unexpected(exc: Exception) -> Response:
    """Log an unexpected failure: type and frames, not its message (it may hold form data)."""
    if isinstance(exc, HTTPException):
        return handle_http_error(exc)
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s while handling a request\n%s", type(exc).__name__, frames)
    _ended("error", type(exc).__name__)
    return error_response(500, "internal error")


def _ended(decision: str, reason: str, rejection: str | None = None) -> None:
    """Tell a callback's commit how it ended; other requests keep no callback state."""
    state = callback_state()
    if state is not None:
        state.outcome = (decision, reason)
        if rejection is not None:
            state.rejection = rejection
