"""GET /api/v1/openapi.json: a valid OpenAPI 3.1 document that says exactly what the API does.

Its routes are the blueprint's routes, its enums and limits the code's, and every answer the web
tests' scenarios get (202, 400, 401, 404, 409, 413, 415, 422, 502, 503) is a documented status
whose body and headers validate against the document's schemas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from werkzeug.test import TestResponse

from sipguard.calls.agents import FallbackKind, Strategy
from sipguard.handoffs import request as handoff_request
from sipguard.store.handoffs import ON_FAILURE, OUTCOMES, STATES
from tests.support.config import API, BASE_URL

CALL = "c0ffee00-0000-4000-8000-00000000a001"
HOOK = "https://ai.example.test/hooks"
_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    found: dict[str, Any] = response.get_json()
    return found


@pytest.fixture
def auth(app: Flask) -> dict[str, str]:
    token = app.extensions["sipguard"].store.create_api_key("ai", HOOK).token
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref ("#/components/...") to what it names."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    # The document is the root resource, so "#/components/schemas/X" resolves inside it.
    root = {"components": document["components"], **schema}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _conforms(document: dict[str, Any], path: str, method: str, response: TestResponse) -> None:
    """Assert `response` is a documented answer of `method path`: status, type, body, headers."""
    operation = document["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path}: {status} is not documented"
    answer = _resolve(document, operation["responses"][status])
    assert response.mimetype == "application/json"
    schema = answer["content"]["application/json"]["schema"]
    errors = list(_validator(document, schema).iter_errors(response.get_json()))
    assert errors == [], f"{method} {path} {status}: {[e.message for e in errors]}"
    for name, header in answer.get("headers", {}).items():
        header = _resolve(document, header)
        value = response.headers.get(name)
        if value is None:
            assert not header.get("required"), f"{method} {path} {status}: no {name}"
            continue
        assert list(_validator(document, header["schema"]).iter_errors(value)) == []


def _body(**changes: Any) -> dict[str, Any]:
    return {"call_uuid": CALL, "group": "support", "summary": "Wants a refund", **changes}


def _transferred(rsps: responses.RequestsMock, call: str = CALL) -> None:
    rsps.post(API + f"Call/{call}/", json={"message": "call transferred", "api_id": "t-1"})


# -- the document itself -------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": f"{BASE_URL}/api/v1"}]
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["apiKey"]["description"],
    }
    assert document["security"] == [{"apiKey": []}]
    assert document["paths"]["/openapi.json"]["get"]["security"] == []


def test_the_server_url_follows_the_forwarded_public_url(app_config: dict[str, str]) -> None:
    from app import create_app

    config = {**app_config, "TRUSTED_PROXY_COUNT": "1"}
    del config["PUBLIC_BASE_URL"]
    client = create_app(config).test_client()
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "ai.example.test"}
    headers["X-Forwarded-Prefix"] = "/voice"
    body = client.get("/api/v1/openapi.json", headers=headers).get_json()
    assert body["servers"] == [{"url": "https://ai.example.test/voice/api/v1"}]


def test_every_route_of_the_blueprint_is_documented_and_nothing_else(
    app: Flask, document: dict[str, Any]
) -> None:
    routes = {
        (_ARGUMENT.sub(r"{\1}", rule.rule.removeprefix("/api/v1")), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    assert len(routes) == 5


def test_the_path_parameters_are_the_routes_arguments(app: Flask, document: dict[str, Any]) -> None:
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api."):
            continue
        path = _ARGUMENT.sub(r"{\1}", rule.rule.removeprefix("/api/v1"))
        for operation in document["paths"][path].values():
            named = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert named == set(rule.arguments)


def test_enums_and_limits_are_the_codes(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    body = schemas["HandoffRequest"]
    assert set(body["properties"]) == set(handoff_request.KEYS)
    assert body["additionalProperties"] is False
    assert schemas["Handoff"]["properties"]["state"]["enum"] == list(STATES)
    assert schemas["Handoff"]["properties"]["on_failure"]["enum"] == list(ON_FAILURE)
    assert body["properties"]["on_failure"]["enum"] == [*ON_FAILURE, None]
    assert schemas["Attempt"]["properties"]["outcome"]["enum"] == [*OUTCOMES, None]
    group = schemas["Group"]["properties"]
    assert set(group["strategy"]["enum"]) == set(get_args(Strategy))
    assert set(group["fallback"]["enum"]) == set(get_args(FallbackKind))
    props = body["properties"]
    assert props["call_uuid"]["maxLength"] == handoff_request.CALL_UUID_MAX
    assert props["group"]["maxLength"] == handoff_request.GROUP_MAX
    assert props["summary"]["maxLength"] == handoff_request.SUMMARY_MAX
    assert props["fields"]["maxProperties"] == handoff_request.FIELDS_MAX
    assert props["return_url"]["maxLength"] == props["callback_url"]["maxLength"] == 2048
    header = document["paths"]["/handoffs"]["post"]["parameters"][0]
    assert header["name"] == "Idempotency-Key"
    assert header["schema"]["maxLength"] == handoff_request.IDEMPOTENCY_KEY_MAX
    # Every optional key may be null (read as left out); the required ones may not.
    for name, prop in props.items():
        assert ("null" in prop["type"]) == (name not in body["required"]), name


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("Ticket", True),
        ("X" * 24, True),
        ("X" * 25, False),
        ("Tick-et", False),
        ("PlivoThing", False),
        ("sipAuthX", False),
        ("TWILIOx", False),
        ("ClientRegion", False),
        ("clientregion", False),
        ("ClientRegionX", True),
    ],
)
def test_field_names_in_the_schema_match_the_sip_header_check(
    document: dict[str, Any], client: FlaskClient, auth: dict[str, str], name: str, accepted: bool
) -> None:
    fields = document["components"]["schemas"]["HandoffRequest"]["properties"]["fields"]
    assert _validator(document, fields).is_valid({name: "v"}) is accepted
    response = client.post(
        "/api/v1/handoffs", json=_body(fields={name: "v"}, group="nobody"), headers=auth
    )
    # Past the body check, an unknown group is 404; the field check refuses with 422.
    assert response.status_code == (404 if accepted else 422)


@pytest.mark.parametrize(
    "changes",
    [
        {"on_failure": ""},
        {"on_failure": "voicemail"},
        {"whisper": 1},
        {"call_uuid": None},
        {"summary": ""},
        {"summary": "bell\x07"},
        {"fields": {"Ticket": "a b"}},
        {"fields": {f"K{i}": "v" for i in range(9)}},
        {"return_url": "http://ai.example.test/"},
        {"return_url": "https://ai.example.test/\x85"},
        {"callback_url": "ftp://ai.example.test/"},
        {"callback_url": "http://ai.example.test/hook"},
        {"callback_url": "http://127.0.0.1@ai.example.test/hook"},
        {"whisper": True, "summary": None},
        {"on_failure": "return"},
        {"on_failure": "return", "return_url": None},
        {"call_uuid": "c" * 65},
        {"extra": 1},
    ],
)
def test_a_body_the_schema_refuses_is_refused(
    document: dict[str, Any], client: FlaskClient, auth: dict[str, str], changes: dict[str, Any]
) -> None:
    body = _body(**changes)
    schema = document["components"]["schemas"]["HandoffRequest"]
    assert not _validator(document, schema).is_valid(body)
    response = client.post("/api/v1/handoffs", json=body, headers=auth)
    assert response.status_code in (400, 422)
    _conforms(document, "/handoffs", "post", response)


@pytest.mark.parametrize("call_uuid", ["a b", "a/b", "a.b", "..", "ça", "a\nb"])
def test_a_call_uuid_the_transfer_cannot_name_is_refused_before_it_is_stored(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    rsps: responses.RequestsMock,
    call_uuid: str,
) -> None:
    """Such a handoff used to be stored, left live (blocking the call with 409), then 400."""
    for _ in range(2):
        response = client.post("/api/v1/handoffs", json=_body(call_uuid=call_uuid), headers=auth)
        assert response.status_code == 422, response.get_json()
        assert response.get_json()["field"] == "call_uuid"
    assert app.extensions["sipguard"].store.recent_handoffs() == []
    assert len(rsps.calls) == 0


@pytest.mark.parametrize(
    "url", ["http://[0]", "http://[7DebEA.]", "https://[a:230Eef]/hook", "https://[::1:]/"]
)
def test_a_bracketed_host_that_is_no_address_is_422_not_500(
    document: dict[str, Any], client: FlaskClient, auth: dict[str, str], url: str
) -> None:
    """schemathesis found these: urlsplit raised ValueError past the URL check (a 500)."""
    response = client.post("/api/v1/handoffs", json=_body(callback_url=url), headers=auth)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["field"] == "callback_url"
    _conforms(document, "/handoffs", "post", response)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"whisper": True, "fields": {"Ticket": "4417", "Lang": "en"}},
        {"whisper": None, "summary": None, "fields": None, "on_failure": None},
        {"on_failure": "return", "return_url": "wss://ai.example.test/stream"},
        {"callback_url": "http://127.0.0.1:9/hook"},
        {"callback_url": "http://LocalHost/hook"},
        {"callback_url": "http://[::1]:8080/hook"},
        {"callback_url": "https://ai.example.test/hook"},
    ],
)
def test_a_body_the_schema_accepts_is_transferred(
    document: dict[str, Any],
    client: FlaskClient,
    auth: dict[str, str],
    rsps: responses.RequestsMock,
    changes: dict[str, Any],
) -> None:
    body = _body(**changes)
    schema = document["components"]["schemas"]["HandoffRequest"]
    assert _validator(document, schema).is_valid(body)
    _transferred(rsps)
    response = client.post("/api/v1/handoffs", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    _conforms(document, "/handoffs", "post", response)


# -- real answers validate against the document --------------------------------------------------


def test_the_read_routes_answers_conform(
    app: Flask, client: FlaskClient, document: dict[str, Any], auth: dict[str, str]
) -> None:
    _conforms(document, "/openapi.json", "get", client.get("/api/v1/openapi.json"))
    _conforms(document, "/groups", "get", client.get("/api/v1/groups", headers=auth))
    for name, status in (("support", 200), ("oncall", 200), ("nobody", 404)):
        response = client.get(f"/api/v1/groups/{name}", headers=auth)
        assert response.status_code == status
        _conforms(document, "/groups/{name}", "get", response)
    for headers in ({}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer sgk_wrong"}):
        response = client.get("/api/v1/groups", headers=headers)
        assert response.status_code == 401
        _conforms(document, "/groups", "get", response)
    missing = client.get("/api/v1/handoffs/ho_nothing", headers=auth)
    assert missing.status_code == 404
    _conforms(document, "/handoffs/{handoff_id}", "get", missing)


def test_the_handoff_answers_conform(
    app: Flask,
    client: FlaskClient,
    document: dict[str, Any],
    auth: dict[str, str],
    rsps: responses.RequestsMock,
) -> None:
    seen: set[int] = set()

    def post(body: Any, **headers: str) -> TestResponse:
        response = client.post("/api/v1/handoffs", json=body, headers={**auth, **headers})
        _conforms(document, "/handoffs", "post", response)
        seen.add(response.status_code)
        return response

    _transferred(rsps)
    first = post(_body(fields={"Ticket": "4417"}, whisper=True), **{"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    again = post(_body(fields={"Ticket": "4417"}, whisper=True), **{"Idempotency-Key": "k-1"})
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert post(_body(group="oncall"), **{"Idempotency-Key": "k-1"}).status_code == 422
    assert post(_body(group="oncall")).status_code == 409
    assert post(_body(group="sales")).status_code == 404
    assert post(_body(summary="   ")).status_code == 422
    assert post(_body(whisper="yes")).status_code == 400
    assert post(["not", "an", "object"]).status_code == 400
    assert post(_body(), **{"Idempotency-Key": "k" * 256}).status_code == 400
    other = "c0ffee00-0000-4000-8000-00000000a002"
    rsps.post(API + f"Call/{other}/", json={"error": "call not found", "api_id": "p-1"}, status=404)
    refused = post(_body(call_uuid=other))
    assert refused.status_code == 502 and refused.get_json()["plivo"]["status"] == 404
    raw = client.post("/api/v1/handoffs", data=b"{", headers=auth, content_type="application/json")
    _conforms(document, "/handoffs", "post", raw)
    plain = client.post("/api/v1/handoffs", data="x", headers=auth, content_type="text/plain")
    _conforms(document, "/handoffs", "post", plain)
    big = json.dumps(_body(summary="x" * 70_000))
    large = client.post("/api/v1/handoffs", data=big, headers=auth, content_type="application/json")
    _conforms(document, "/handoffs", "post", large)
    assert {raw.status_code, plain.status_code, large.status_code} == {400, 415, 413}
    assert seen == {202, 400, 404, 409, 422, 502}
    for response in (first, refused):
        handoff_id = response.get_json()["id"]
        shown = client.get(f"/api/v1/handoffs/{handoff_id}", headers=auth)
        assert shown.status_code == 200
        _conforms(document, "/handoffs/{handoff_id}", "get", shown)


def test_business_hours_answers_conform(
    client: FlaskClient,
    document: dict[str, Any],
    auth: dict[str, str],
    set_clock: Callable[[datetime], None],
    rsps: responses.RequestsMock,
) -> None:
    """Open with a closing time, closed with an opening, always open; and the 409 refusal."""
    set_clock(datetime(2026, 12, 2, 23, tzinfo=UTC))  # Wednesday 18:00 in New York
    for name in ("daytime", "weekend", "support"):
        _conforms(
            document, "/groups/{name}", "get", client.get(f"/api/v1/groups/{name}", headers=auth)
        )
    _conforms(document, "/groups", "get", client.get("/api/v1/groups", headers=auth))
    closed = client.post("/api/v1/handoffs", json=_body(group="daytime"), headers=auth)
    assert closed.status_code == 409 and closed.get_json()["closed"] is True
    _conforms(document, "/handoffs", "post", closed)
    assert len(rsps.calls) == 0


def test_a_handoff_with_attempts_conforms(
    app: Flask,
    client: FlaskClient,
    document: dict[str, Any],
    auth: dict[str, str],
    rsps: responses.RequestsMock,
) -> None:
    _transferred(rsps)
    handoff_id = client.post("/api/v1/handoffs", json=_body(), headers=auth).get_json()["id"]
    store = app.extensions["sipguard"].store
    store.start_attempt(handoff_id, 0, ["alice"])
    store.end_attempt(handoff_id, 0, "sip_auth_failed", 4240)
    store.start_attempt(handoff_id, 1, ["bob"])
    store.transition(handoff_id, "ringing")
    response = client.get(f"/api/v1/handoffs/{handoff_id}", headers=auth)
    attempts = response.get_json()["attempts"]
    assert [a["outcome"] for a in attempts] == ["sip_auth_failed", None]
    assert attempts[1]["ended_at"] is None and attempts[0]["code"] == 4240
    _conforms(document, "/handoffs/{handoff_id}", "get", response)


def test_a_database_down_conforms(
    app: Flask,
    client: FlaskClient,
    document: dict[str, Any],
    auth: dict[str, str],
    break_database: Callable[[Flask], Any],
) -> None:
    with break_database(app):
        cases = [
            ("/groups", "get", client.get("/api/v1/groups", headers=auth)),
            ("/groups/{name}", "get", client.get("/api/v1/groups/support", headers=auth)),
            ("/handoffs", "post", client.post("/api/v1/handoffs", json=_body(), headers=auth)),
            ("/handoffs/{handoff_id}", "get", client.get("/api/v1/handoffs/ho_x", headers=auth)),
            ("/openapi.json", "get", client.get("/api/v1/openapi.json")),
        ]
    for path, method, response in cases:
        assert response.status_code == (200 if path == "/openapi.json" else 503)
        _conforms(document, path, method, response)
