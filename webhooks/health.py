"""Unsigned liveness endpoint for load balancers and `make run`."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from webhooks.context import runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Report that the app is up and whether the database answers (it still serves if not)."""
    database = "ok" if runtime().store.ping() else "unavailable"
    response = jsonify(status="ok", database=database)
    response.headers["Cache-Control"] = "no-store"
    return response
