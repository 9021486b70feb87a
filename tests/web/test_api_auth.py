"""/api/v1 needs a live API key on every route; an API key opens no Plivo route, and a Plivo
signature opens no API route. Refusals are 401 JSON with a Bearer challenge, never echoing the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from sipguard.store import Store
from tests.support import config
from tests.support.signing import SignedPost, inbound

WRONG_KEY = "sgk_" + "0" * 16 + "_" + "Wrong-Key-Canary-" + "w" * 26


@pytest.fixture
def app_config(database_url: str) -> dict[str, str]:
    return config.app_config(database_url)


def _store(app: Flask) -> Store:
    store: Store = app.extensions["sipguard"].store
    return store


# The one documented exception: the API's public description answers without a key.
PUBLIC = {"api.openapi"}


def _api_routes(app: Flask) -> list[tuple[str, str]]:
    """Every keyed (method, path) of /api/v1, path arguments filled with a plausible value."""
    cases = []
    rule: Rule
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or rule.endpoint in PUBLIC:
            continue
        built = rule.build({name: "support" for name in rule.arguments}, append_unknown=False)
        assert built is not None
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            cases.append((method, built[1]))
    return cases


def _assert_refused(response: Any, *secrets: str) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert set(response.get_json()) == {"error"}
    everything = response.get_data(as_text=True) + str(response.headers)
    for secret in secrets:
        assert secret not in everything


def test_the_api_has_the_routes_this_test_walks(app: Flask) -> None:
    assert {path for _, path in _api_routes(app)} >= {
        "/api/v1/groups",
        "/api/v1/groups/support",
        "/api/v1/handoffs",
        "/api/v1/handoffs/support",
    }
    assert "/api/v1/openapi.json" not in {path for _, path in _api_routes(app)}


def test_only_the_openapi_document_answers_without_a_key(app: Flask, client: FlaskClient) -> None:
    """The exception is exactly one GET route: the public description, which names no key."""
    public = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint in PUBLIC
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert public == {("/api/v1/openapi.json", "GET")}
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json()["openapi"] == "3.1.0"
    assert "WWW-Authenticate" not in response.headers
    # A wrong key there is not a reason to answer 401: the key is not read at all.
    wrong = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {WRONG_KEY}"})
    assert wrong.status_code == 200
    assert client.post("/api/v1/openapi.json").status_code == 405


def test_every_api_route_refuses_a_missing_wrong_and_revoked_key(
    app: Flask, client: FlaskClient, app_logs: pytest.LogCaptureFixture
) -> None:
    revoked = _store(app).create_api_key("old")
    _store(app).revoke_api_key("old")
    live = _store(app).create_api_key("live")
    for method, path in _api_routes(app):
        _assert_refused(client.open(path, method=method))
        for token in (WRONG_KEY, revoked.token):
            headers = {"Authorization": f"Bearer {token}"}
            _assert_refused(client.open(path, method=method, headers=headers), token)
        # The live key is accepted: the refusals above were about the key, nothing else.
        ok = client.open(path, method=method, headers={"Authorization": f"Bearer {live.token}"})
        assert ok.status_code != 401
    for token in (WRONG_KEY, revoked.token, live.token):
        assert token not in app_logs.text


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer   ",
        "Basic dXNlcjpwYXNz",
        "Token sgk_x",
        "sgk_" + "a" * 16 + "_" + "b" * 43,
        "Bearer not-a-key",
        "Bearer " + "x" * 5000,
    ],
)
def test_malformed_authorization_headers_are_refused(client: FlaskClient, header: str) -> None:
    _assert_refused(client.get("/api/v1/groups", headers={"Authorization": header}))


def test_a_live_key_passes_and_bearer_is_case_insensitive(app: Flask, client: FlaskClient) -> None:
    token = _store(app).create_api_key("ai").token
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = client.get("/api/v1/groups", headers={"Authorization": f"{scheme} {token}"})
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"


def test_two_live_keys_both_pass(app: Flask, client: FlaskClient) -> None:
    tokens = [_store(app).create_api_key(name).token for name in ("old", "new")]
    for token in tokens:
        response = client.get("/api/v1/groups", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200


def test_an_api_key_opens_no_plivo_webhook(app: Flask, client: FlaskClient) -> None:
    token = _store(app).create_api_key("ai").token
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/answer", "/hangup", "/dial-action?group=support&attempt=0", "/handoff/support"):
        response = client.post(path, data=inbound(), headers=headers)
        assert response.status_code == 403, path
        assert response.get_json() == {"error": "no Plivo signature header"}
    assert client.get("/metrics", headers=headers).status_code in (401, 404)
    assert client.get("/monitor", headers=headers).status_code != 200


def test_a_plivo_signature_opens_no_api_route(signed_post: SignedPost) -> None:
    _assert_refused(signed_post("/api/v1/groups", method="GET"))


def test_api_errors_are_json_never_html(app: Flask, client: FlaskClient) -> None:
    token = _store(app).create_api_key("ai").token
    headers = {"Authorization": f"Bearer {token}"}
    for response, status in (
        (client.get("/api/v1/nothing-here", headers=headers), 404),
        (client.post("/api/v1/groups", headers=headers), 405),
        (client.get("/api/v1/groups/nobody", headers=headers), 404),
    ):
        assert response.status_code == status
        assert response.mimetype == "application/json"
        assert set(response.get_json()) == {"error"}
        assert token not in response.get_data(as_text=True)


def test_a_database_down_is_503_json_without_the_key(
    app: Flask, client: FlaskClient, break_database: Callable[[Flask], Any]
) -> None:
    token = _store(app).create_api_key("ai").token
    with break_database(app):
        response = client.get("/api/v1/groups", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.mimetype == "application/json"
    assert "database" in response.get_json()["error"]
    assert token not in response.get_data(as_text=True)
