"""The web edge: Flask lives here and nowhere below."""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException

from sipguard.errors import AppError
from webhooks import api, edge, health, monitor, responses, views


def init_app(app: Flask) -> None:
    """Register the signed webhook routes, the keyed API, the health check, the error handler."""
    edge.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(monitor.bp)
    app.register_error_handler(AppError, responses.handle_app_error)
    app.register_error_handler(HTTPException, responses.handle_http_error)
    app.register_error_handler(Exception, responses.handle_unexpected)
