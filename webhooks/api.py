"""The AI agent's API under /api/v1: every route needs `Authorization: Bearer <API key>`.

These are not Plivo webhooks: Plivo's signature check (webhooks.views) does not apply here, and an
API key opens no Plivo route. Keys are checked against the store on every request, so a key
revoked on one instance is refused by all at once. Every answer is JSON, errors included
({"error": ...}); the key is never echoed or logged.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, request

from sipguard.calls.agents import AgentGroup
from sipguard.store import ApiKey
from webhooks.context import runtime
from webhooks.responses import error_response

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger("sipguard.api")

_BEARER = "Bearer"
_CHALLENGE = f'{_BEARER} realm="sipguard"'


def _unauthorized(message: str, *, error: str | None = None) -> Response:
    """Answer 401 with the Bearer challenge (RFC 6750, section 3)."""
    log.info("api: refused %s %s: %s", request.method, request.path, message)
    response = error_response(401, message)
    challenge = _CHALLENGE if error is None else f'{_CHALLENGE}, error="{error}"'
    response.headers["WWW-Authenticate"] = challenge
    return response


@bp.before_request
def require_api_key() -> Response | None:
    """Refuse any request to this blueprint without a live API key; remember the key."""
    header = request.headers.get("Authorization")
    if header is None:
        return _unauthorized("an API key is required: send 'Authorization: Bearer <API key>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != _BEARER.lower() or not token:
        return _unauthorized(
            "the Authorization header must be 'Bearer <API key>'", error="invalid_request"
        )
    key = runtime().store.authenticate(token)  # StoreUnavailable answers 503
    if key is None:
        return _unauthorized("the API key is not valid (wrong or revoked)", error="invalid_token")
    g.api_key = key
    return None


@bp.after_request
def _harden(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def api_key() -> ApiKey:
    """Return the API key the current request was made with."""
    key: ApiKey = g.api_key
    return key


def _group(group: AgentGroup) -> dict[str, Any]:
    """Describe a group for the AI: never an agent's URI or password."""
    return {
        "name": group.name,
        "strategy": group.strategy,
        "timeout": group.timeout,
        "attempts": group.attempts(),
        "agents": [
            {
                "name": agent.name,
                "digest_credentials": agent.username is not None and agent.password is not None,
            }
            for agent in group.agents
        ],
        "fallback": group.fallback.kind,
        # Business hours and agent quarantine come with their own issue and fill these in;
        # until then null means "unknown", never "closed".
        "availability": {"open": None, "agents_available": None},
    }


@bp.get("/groups")
def groups() -> Response:
    """List the agent groups a call can be handed to."""
    return jsonify(groups=[_group(group) for group in runtime().voice.groups.values()])


@bp.get("/groups/<name>")
def group(name: str) -> Response:
    """Describe one agent group; 404 when there is none by that name."""
    found = runtime().voice.groups.get(name)
    if found is None:
        abort(404, description=f"no agent group named {name!r}")
    return jsonify(_group(found))
