"""The OpenAPI 3.1 document of the AI's API (/api/v1), built from the constants the code checks.

Every enum and limit below is the one `sipguard.handoffs.request`, the store and the agent
directory use, so the document cannot drift from what the API accepts and answers. Where a rule
cannot be said in JSON Schema (a URL an HTTP client can parse, a summary that is not blank), the
schema is the looser one and the description says the rest: a request the schema refuses is
always refused by the API, never the other way round.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, get_args

from sipguard.calls.agents import FallbackKind, Strategy
from sipguard.handoffs.request import (
    CALL_UUID_MAX,
    CALL_UUID_PATTERN,
    FIELDS_MAX,
    GROUP_MAX,
    IDEMPOTENCY_KEY_MAX,
    SUMMARY_MAX,
    URL_MAX,
)
from sipguard.store.api_keys import ID_ALPHABET
from sipguard.store.handoffs import ID_LENGTH, ID_PREFIX, ON_FAILURE, OUTCOMES, STATES
from xml_builders.elements import (
    RESERVED_SIP_HEADER_NAMES,
    RESERVED_SIP_HEADER_PREFIXES,
    SIP_HEADER_NAME_MAX,
    SIP_HEADER_VALUE_MAX,
)

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
# No C0 control, DEL or C1 control (has_control's set, lone surrogates aside: no regex engine
# a validator may use takes them in a class). Newline is allowed in the summary only.
_NO_CONTROL = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
_SUMMARY_TEXT = "^[^\\x00-\\x09\\x0b-\\x1f\\x7f-\\x9f]*$"
_VISIBLE_ASCII = "^[\\x21-\\x7e]+$"
# A URL's characters: no whitespace, quote, angle bracket or control (check_url's set).
_URL_TEXT = '[^\\s<>"\\x00-\\x1f\\x7f-\\x9f]'
# A loopback host, the only one plain http may name (optional user info; any letter case).
_LOOPBACK = (
    '(?:[^\\s<>"/?#@\\[\\]]*@)?'
    "(?:[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]|127\\.[0-9]+\\.[0-9]+\\.[0-9]+|\\[[0-9A-Fa-f:.]+\\])"
)


def _any_case(text: str) -> str:
    """Return a regex matching `text` in any letter case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else f"\\{c}" for c in text)


def _reserved_names() -> str:
    prefixes = "|".join(_any_case(prefix) for prefix in RESERVED_SIP_HEADER_PREFIXES)
    names = "|".join(_any_case(name) for name in RESERVED_SIP_HEADER_NAMES)
    return f"^(?:(?:{prefixes}).*|(?:{names}))$"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Let a request value also be JSON null, which the API reads as "left out"."""
    kind = schema["type"]
    return {**schema, "type": [kind, "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _answer(description: str, schema: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _json(_ref(schema))}
    if headers:
        answer["headers"] = {
            name: {"$ref": f"#/components/headers/{ref}"} for name, ref in headers.items()
        }
    return answer


def _request_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "call_uuid": {
            "type": "string",
            "minLength": 1,
            "maxLength": CALL_UUID_MAX,
            "pattern": CALL_UUID_PATTERN,
            "description": "The live call's CallUUID (Plivo's stream start event `start.callId`):"
            f" 1-{CALL_UUID_MAX} letters, digits, '-' or '_'.",
        },
        "group": {
            "type": "string",
            "minLength": 1,
            "maxLength": GROUP_MAX,
            "pattern": _NO_CONTROL,
            "description": "An agent group, as GET /groups lists them; another name is 404.",
        },
        "summary": _nullable(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": SUMMARY_MAX,
                "pattern": _SUMMARY_TEXT,
                "description": "What the agent should know. Not blank, no control character but"
                " newline. Personal data: never logged and never returned by the API.",
            }
        ),
        "fields": _nullable(
            {
                "type": "object",
                "maxProperties": FIELDS_MAX,
                "propertyNames": {
                    "type": "string",
                    "pattern": f"^[A-Za-z0-9]{{1,{SIP_HEADER_NAME_MAX}}}$",
                    "not": {"pattern": _reserved_names()},
                },
                "additionalProperties": {
                    "type": "string",
                    "pattern": f"^[A-Za-z0-9%]{{1,{SIP_HEADER_VALUE_MAX}}}$",
                },
                "description": "Values the agent's PBX receives as Plivo sipHeaders (X-PH-name):"
                " names of letters and digits, none with a prefix Plivo reserves; values of"
                " letters, digits and %.",
            }
        ),
        "whisper": _nullable(
            {
                "type": "boolean",
                "default": False,
                "description": "The agent hears the summary before being bridged; needs a summary.",
            }
        ),
        "on_failure": {
            "type": ["string", "null"],
            "enum": [*ON_FAILURE, None],
            "default": "fallback",
            "description": "When no agent takes the call: the group's fallback, or back to the"
            ' AI at return_url ("return" needs return_url).',
        },
        "return_url": _nullable(
            {
                "type": "string",
                "maxLength": URL_MAX,
                "pattern": f"^(?:https|wss)://{_URL_TEXT}+$",
                "description": "An absolute https:// or wss:// URL of the AI to return the"
                " caller to.",
            }
        ),
        "callback_url": _nullable(
            {
                "type": "string",
                "maxLength": URL_MAX,
                "anyOf": [
                    {"pattern": f"^https://{_URL_TEXT}+$"},
                    {"pattern": f"^http://{_LOOPBACK}(?:[:/?#]{_URL_TEXT}*)?$"},
                ],
                "description": "Where this handoff's webhooks go instead of the key's: https,"
                " plain http only to a loopback address.",
            }
        ),
    }
    return {
        "type": "object",
        "required": ["call_uuid", "group"],
        "properties": properties,
        "additionalProperties": False,
        "allOf": [
            _needs("whisper", True, "summary"),
            _needs("on_failure", "return", "return_url"),
        ],
    }


def _needs(key: str, value: object, needed: str) -> dict[str, Any]:
    """Say that `key` set to `value` needs `needed` too (a string, not null)."""
    return {
        "if": {"required": [key], "properties": {key: {"const": value}}},
        "then": {"required": [needed], "properties": {needed: {"type": "string"}}},
    }


def _nullable_time() -> dict[str, Any]:
    return {"type": ["string", "null"], "format": "date-time"}


def _schemas() -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    return {
        "HandoffRequest": _request_schema(),
        "Handoff": {
            "type": "object",
            "required": [
                "id",
                "state",
                "call_uuid",
                "group",
                "whisper",
                "on_failure",
                "fields",
                "error",
                "plivo_api_id",
                "attempts",
                "created_at",
                "updated_at",
            ],
            "properties": {
                "id": {"type": "string", "pattern": f"^{ID_PREFIX}[{ID_ALPHABET}]{{{ID_LENGTH}}}$"},
                "state": {"type": "string", "enum": list(STATES)},
                "call_uuid": {"type": "string"},
                "group": {"type": "string"},
                "whisper": {"type": "boolean"},
                "on_failure": {"type": "string", "enum": list(ON_FAILURE)},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                "error": {"type": ["string", "null"]},
                "plivo_api_id": {"type": ["string", "null"]},
                "attempts": {"type": "array", "items": _ref("Attempt")},
                "created_at": time,
                "updated_at": time,
            },
            "additionalProperties": False,
            "description": "A handoff as its own key sees it; the summary is never in it.",
        },
        "Attempt": {
            "type": "object",
            "required": ["attempt", "agents", "outcome", "code", "started_at", "ended_at"],
            "properties": {
                "attempt": {"type": "integer", "minimum": 0},
                "agents": {"type": "array", "items": {"type": "string"}},
                "outcome": {"type": ["string", "null"], "enum": [*OUTCOMES, None]},
                "code": {"type": ["integer", "null"]},
                "started_at": time,
                "ended_at": _nullable_time(),
            },
            "additionalProperties": False,
            "description": "One Dial of the group: the agents it rang and how it ended.",
        },
        "Group": {
            "type": "object",
            "required": [
                "name",
                "strategy",
                "timeout",
                "attempts",
                "agents",
                "fallback",
                "availability",
            ],
            "properties": {
                "name": {"type": "string"},
                "strategy": {"type": "string", "enum": list(get_args(Strategy))},
                "timeout": {"type": "integer", "minimum": 1},
                "attempts": {"type": "integer", "minimum": 1},
                "agents": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "digest_credentials", "quarantined"],
                        "properties": {
                            "name": {"type": "string"},
                            "digest_credentials": {"type": "boolean"},
                            "quarantined": {
                                "oneOf": [{"type": "null"}, _ref("Quarantine")],
                                "description": "null: the agent is rung. Otherwise it is "
                                "skipped until `until`, after consecutive SIP-auth failures "
                                "towards its PBX.",
                            },
                        },
                        "additionalProperties": False,
                    },
                },
                "fallback": {"type": "string", "enum": list(get_args(FallbackKind))},
                "availability": {
                    "type": "object",
                    "required": ["open", "until", "agents_available"],
                    "properties": {
                        "open": {
                            "type": ["boolean", "null"],
                            "description": "Inside the group's business hours now (a group"
                            " without hours is always open); null means unknown, never closed.",
                        },
                        "until": {
                            **_nullable_time(),
                            "description": "When `open` next changes, in UTC: the closing"
                            " time when open, the next opening when closed; null when it"
                            " never changes.",
                        },
                        "agents_available": {
                            "type": ["integer", "null"],
                            "minimum": 0,
                            "description": "Agents not quarantined now.",
                        },
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
            "description": "An agent group; never an agent's URI or password.",
        },
        "Quarantine": {
            "type": "object",
            "required": ["cause", "since", "until"],
            "properties": {
                "cause": {"type": "string", "enum": ["sip_auth_failed", "sip_auth_timeout"]},
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
            },
            "additionalProperties": False,
            "description": "Why and since when an agent is skipped (4240: its PBX rejects our "
            "credentials; 4250: it never answers the digest challenge).",
        },
        "Groups": {
            "type": "object",
            "required": ["groups"],
            "properties": {"groups": {"type": "array", "items": _ref("Group")}},
            "additionalProperties": False,
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
            "additionalProperties": False,
        },
        "FieldError": {
            "type": "object",
            "required": ["error", "field"],
            "properties": {
                "error": {"type": "string"},
                "field": {
                    "type": "string",
                    "description": "The field at fault: a body key, `fields.NAME`, `body`"
                    " or `Idempotency-Key`.",
                },
            },
            "additionalProperties": False,
        },
        "Unprocessable": {
            "oneOf": [_ref("FieldError"), _ref("Error")],
            "description": "A rule refused a field ({error, field}), or the Idempotency-Key"
            " came with another body ({error}).",
        },
        "GroupClosed": {
            "type": "object",
            "required": ["error", "group", "closed", "until"],
            "properties": {
                "error": {"type": "string"},
                "group": {"type": "string"},
                "closed": {"type": "boolean", "const": True},
                "until": {
                    **_nullable_time(),
                    "description": "When the group opens next, in UTC.",
                },
            },
            "additionalProperties": False,
            "description": "The group is outside its business hours: nothing was stored or"
            " transferred. Hand the call over after `until`, or keep it with the AI.",
        },
        "Conflict": {
            "oneOf": [_ref("GroupClosed"), _ref("Error")],
            "description": "The group is closed ({error, group, closed, until}), or the call"
            " has a live handoff already ({error}).",
        },
        "TransferRefused": {
            "type": "object",
            "required": ["error", "id", "plivo"],
            "properties": {
                "error": {"type": "string"},
                "id": {"type": "string", "description": "The handoff, now `failed`."},
                "plivo": {
                    "type": "object",
                    "required": ["status", "api_id", "message"],
                    "properties": {
                        "status": {
                            "type": ["integer", "null"],
                            "description": "Plivo's HTTP status; null when it never answered.",
                        },
                        "api_id": {"type": ["string", "null"]},
                        "message": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
        "OpenAPI": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"type": "string", "const": OPENAPI_VERSION}},
        },
    }


def _headers() -> dict[str, Any]:
    return {
        "Location": {
            "description": "The handoff's URL, to poll with GET.",
            "required": True,
            "schema": {"type": "string", "format": "uri-reference"},
        },
        "IdempotentReplayed": {
            "description": "Present on a replay: this is the first answer given again.",
            "schema": {"type": "string", "enum": ["true"]},
        },
        "WWWAuthenticate": {
            "description": 'The Bearer challenge (RFC 6750), with error="invalid_request" or'
            ' error="invalid_token" when a key was sent.',
            "required": True,
            "schema": {"type": "string", "pattern": "^Bearer "},
        },
    }


def _responses() -> dict[str, Any]:
    return {
        "Unauthorized": _answer(
            "No API key, a malformed Authorization header, or a wrong or revoked key.",
            "Error",
            **{"WWW-Authenticate": "WWWAuthenticate"},
        ),
        "NotFound": _answer("No such resource (or not one this key may see).", "Error"),
        "Unavailable": _answer("The database did not answer: retry.", "Error"),
    }


def _keyed(operation: dict[str, Any], *statuses: str) -> dict[str, Any]:
    """Add the answers every keyed route can give: 401 and 503 (the key is checked in the store)."""
    responses = operation["responses"]
    responses["401"] = _ref_response("Unauthorized")
    responses["503"] = _ref_response("Unavailable")
    for status in statuses:
        responses[status] = _ref_response("NotFound")
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _ref_response(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _paths() -> dict[str, Any]:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    handoff_id = {
        "name": "handoff_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "The same key with the same body answers the first handoff again and"
        " never transfers twice; with another body it is 422.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": IDEMPOTENCY_KEY_MAX,
            "pattern": _VISIBLE_ASCII,
        },
    }
    handoff = _answer("The handoff.", "Handoff")
    accepted = _answer(
        "Plivo accepted the Transfer (state `transferred`), or a replay of the first answer.",
        "Handoff",
        **{"Location": "Location", "Idempotent-Replayed": "IdempotentReplayed"},
    )
    return {
        "/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "summary": "This document (no API key needed)",
                "security": [],
                "responses": {"200": _answer("The OpenAPI document.", "OpenAPI")},
            }
        },
        "/groups": {
            "get": _keyed(
                {
                    "operationId": "listGroups",
                    "summary": "List the agent groups a call can be handed to",
                    "responses": {"200": _answer("Every group.", "Groups")},
                }
            )
        },
        "/groups/{name}": {
            "get": _keyed(
                {
                    "operationId": "getGroup",
                    "summary": "Describe one agent group",
                    "parameters": [name],
                    "responses": {"200": _answer("The group.", "Group")},
                },
                "404",
            )
        },
        "/handoffs": {
            "post": _keyed(
                {
                    "operationId": "createHandoff",
                    "summary": "Hand a live call to an agent group",
                    "parameters": [idempotency_key],
                    "requestBody": {"required": True, "content": _json(_ref("HandoffRequest"))},
                    "responses": {
                        "202": accepted,
                        "400": _answer(
                            "Not JSON, a wrong type, a missing or unknown field, a bad"
                            " Idempotency-Key.",
                            "FieldError",
                        ),
                        "404": _answer("No agent group by that name.", "Error"),
                        "409": _answer(
                            "The group is outside its business hours, or the call has a live"
                            " handoff already.",
                            "Conflict",
                        ),
                        "413": _answer("The body is over the size limit.", "Error"),
                        "415": _answer(f"The body is not {JSON}.", "Error"),
                        "422": _answer("Well-formed, but refused by a rule.", "Unprocessable"),
                        "502": _answer(
                            "Plivo refused the Transfer or could not be reached; the handoff is"
                            " `failed`.",
                            "TransferRefused",
                        ),
                    },
                }
            )
        },
        "/handoffs/{handoff_id}": {
            "get": _keyed(
                {
                    "operationId": "getHandoff",
                    "summary": "Describe one of this key's handoffs",
                    "parameters": [handoff_id],
                    "responses": {"200": handoff},
                },
                "404",
            )
        },
    }


def document(server_url: str) -> dict[str, Any]:
    """Return the OpenAPI document of /api/v1, its server being `server_url`."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Plivo SIP Guard: the AI's API",
            "version": version("plivo-sip-guard"),
            "description": "An AI voice agent hands a live Plivo call to human agents. Every"
            " route but this document needs `Authorization: Bearer <API key>`; every answer is"
            " JSON, errors included.",
        },
        "servers": [{"url": server_url}],
        "security": [{"apiKey": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key from `sipguard api-key create NAME`.",
                }
            },
            "schemas": _schemas(),
            "headers": _headers(),
            "responses": _responses(),
        },
    }
