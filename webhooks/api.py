"""The AI agent's API under /api/v1: every route needs `Authorization: Bearer <API key>`, but
its public description, GET /api/v1/openapi.json.

These are not Plivo webhooks: Plivo's signature check (webhooks.views) does not apply here, and an
API key opens no Plivo route. Keys are checked against the store on every request, so a key
revoked on one instance is refused by all at once. Every answer is JSON, errors included
({"error": ...}); the key is never echoed or logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, request, url_for

from sipguard.calls.agents import AgentGroup
from sipguard.calls.hours import iso_utc
from sipguard.errors import UnknownHandoff, ValidationError
from sipguard.handoffs import GroupClosed, TransferRefused, parse_request, request_handoff
from sipguard.handoffs.openapi import document
from sipguard.plivo.outbound import Outbound
from sipguard.store import AgentHealth, ApiKey, Handoff
from webhooks.context import public_root, public_url, runtime
from webhooks.responses import error_response

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger("sipguard.api")

_BEARER = "Bearer"
_CHALLENGE = f'{_BEARER} realm="sipguard"'
# The one route open without a key: the API's description says nothing about any account.
PUBLIC_ENDPOINTS = frozenset({"api.openapi"})


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
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
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


def _quarantines() -> dict[str, AgentHealth]:
    """Return the agents quarantined now, by name (one read for the whole answer)."""
    return runtime().store.quarantined_agents(runtime().voice.agent_names())


def _quarantine(health: AgentHealth | None) -> dict[str, Any] | None:
    if health is None:
        return None
    since, until = _time(health.quarantined_since), _time(health.quarantined_until)
    return {"cause": health.last_cause, "since": since, "until": until}


def _group(group: AgentGroup, quarantined: Mapping[str, AgentHealth]) -> dict[str, Any]:
    """Describe a group for the AI: never an agent's URI or password."""
    hours = group.status(runtime().clock())
    return {
        "name": group.name,
        "strategy": group.strategy,
        "timeout": group.timeout,
        "attempts": group.attempts(),
        "agents": [
            {
                "name": agent.name,
                "digest_credentials": agent.username is not None and agent.password is not None,
                "quarantined": _quarantine(quarantined.get(agent.name)),
            }
            for agent in group.agents
        ],
        "fallback": group.fallback.kind,
        "availability": {
            "open": hours.open,
            "until": _time(hours.until),
            "agents_available": sum(agent.name not in quarantined for agent in group.agents),
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """Describe this API as an OpenAPI 3.1 document, its server being the public URL."""
    return jsonify(document(public_root() + (bp.url_prefix or "")))


@bp.get("/groups")
def groups() -> Response:
    """List the agent groups a call can be handed to."""
    quarantined = _quarantines()
    return jsonify(groups=[_group(group, quarantined) for group in runtime().voice.groups.values()])


@bp.get("/groups/<name>")
def group(name: str) -> Response:
    """Describe one agent group; 404 when there is none by that name."""
    found = runtime().voice.groups.get(name)
    if found is None:
        abort(404, description=f"no agent group named {name!r}")
    return jsonify(_group(found, _quarantines()))


JSON_TYPE = "application/json"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@bp.errorhandler(ValidationError)
def _invalid(exc: ValidationError) -> Response:
    """Answer a refused value (400, or 422 for a rule) naming the field, never its value."""
    response = jsonify(error=exc.message, field=exc.field)
    response.status_code = exc.status
    return response


@bp.errorhandler(GroupClosed)
def _closed(exc: GroupClosed) -> Response:
    """Answer 409 naming the closed group and when it opens."""
    response = jsonify(error=exc.message, group=exc.group, closed=True, until=_time(exc.until))
    response.status_code = exc.status
    return response


@bp.errorhandler(TransferRefused)
def _refused(exc: TransferRefused) -> Response:
    response = jsonify(error=exc.message, id=exc.handoff.id, plivo=exc.plivo())
    response.status_code = exc.status
    return response


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the store keeps UTC
    return iso_utc(moment)


def _handoff(handoff: Handoff) -> dict[str, Any]:
    """Describe a handoff to the key that asked for it; the summary is never echoed back."""
    return {
        "id": handoff.id,
        "state": handoff.state,
        "call_uuid": handoff.call_uuid,
        "group": handoff.group_name,
        "whisper": handoff.whisper,
        "on_failure": handoff.on_failure,
        "fields": dict(handoff.fields),
        "error": handoff.error,
        "plivo_api_id": handoff.plivo_api_id,
        "attempts": [
            {
                "attempt": attempt.attempt,
                "agents": list(attempt.agents),
                "outcome": attempt.outcome,
                "code": attempt.code,
                "started_at": _time(attempt.started_at),
                "ended_at": _time(attempt.ended_at),
            }
            for attempt in handoff.attempts
        ],
        "created_at": _time(handoff.created_at),
        "updated_at": _time(handoff.updated_at),
    }


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_body() -> Any:
    """Read the body as strict JSON: 415 for another type, 400 for anything malformed."""
    if request.mimetype != JSON_TYPE:
        abort(415, description=f"the request body must be {JSON_TYPE}")
    try:
        return json.loads(request.get_data(), parse_constant=_no_constants)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise ValidationError("body", "is not valid JSON") from None


def outbound() -> Outbound:
    """Return the Transfer client for this app's account, groups and public URLs."""
    rt = runtime()
    return Outbound(api=rt.plivo(), handoff=rt.handoff, groups=rt.voice.groups, url_for=public_url)


@bp.post("/handoffs")
def create_handoff() -> Response:
    """Hand a live call to an agent group: 202 with the handoff, or the first one on a replay."""
    key = api_key()
    parsed = parse_request(
        _json_body(), api_key_id=key.id, idempotency_key=request.headers.get(IDEMPOTENCY_HEADER)
    )
    handoff, replayed = request_handoff(runtime().store, outbound(), parsed, now=runtime().clock())
    response = jsonify(_handoff(handoff))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_handoff", handoff_id=handoff.id)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("/handoffs/<handoff_id>")
def get_handoff(handoff_id: str) -> Response:
    """Describe one of this key's handoffs; another key's is as unknown as a missing one."""
    found = runtime().store.get_handoff(handoff_id)
    if found is None or found.api_key_id != api_key().id:
        raise UnknownHandoff(f"no handoff {handoff_id[:40]!r}")
    return jsonify(_handoff(found))
