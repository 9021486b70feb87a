"""GET /api/v1/groups and /api/v1/groups/{name}: what the AI may ask before it promises a human."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from sipguard.calls.agents import Quarantine
from tests.support.config import ALL_CANARIES

POLICY = Quarantine(after=2, cool_down=timedelta(minutes=15))


@pytest.fixture
def auth(app: Flask) -> dict[str, str]:
    token = app.extensions["sipguard"].store.create_api_key("ai").token
    return {"Authorization": f"Bearer {token}"}


def _get(client: FlaskClient, path: str, auth: dict[str, str]) -> Any:
    response = client.get(path, headers=auth)
    assert response.mimetype == "application/json"
    return response


def test_groups_lists_every_group_with_agents_strategy_and_fallback(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = _get(client, "/api/v1/groups", auth)
    assert response.status_code == 200
    groups = {group["name"]: group for group in response.get_json()["groups"]}
    assert set(groups) == {"support", "oncall", "solo", "daytime", "weekend"}
    assert groups["support"] == {
        "name": "support",
        "strategy": "sequential",
        "timeout": 15,
        "attempts": 2,
        "agents": [
            {"name": "alice", "digest_credentials": True, "quarantined": None},
            {"name": "bob", "digest_credentials": True, "quarantined": None},
        ],
        "fallback": "voicemail",
        "availability": {"open": True, "until": None, "agents_available": 2},  # no hours: open
    }
    assert groups["oncall"]["strategy"] == "simultaneous" and groups["oncall"]["attempts"] == 1
    assert groups["oncall"]["agents"] == [
        {"name": "carol", "digest_credentials": True, "quarantined": None},
        {"name": "dave", "digest_credentials": False, "quarantined": None},
        {"name": "erin", "digest_credentials": True, "quarantined": None},
    ]
    assert groups["oncall"]["fallback"] == "redirect"
    assert groups["solo"]["timeout"] == 20 and groups["solo"]["fallback"] == "hangup"


def test_one_group_by_name(client: FlaskClient, auth: dict[str, str]) -> None:
    response = _get(client, "/api/v1/groups/oncall", auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["name"] == "oncall" and body["timeout"] == 25
    assert body["availability"] == {"open": True, "until": None, "agents_available": 3}


def test_a_quarantined_agent_shows_its_cause_and_times(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    store = app.extensions["sipguard"].store
    for _ in range(POLICY.after):
        store.agent_failed("dave", "sip_auth_timeout", POLICY)
    health = store.quarantined_agents(["dave"])["dave"]
    body = _get(client, "/api/v1/groups/oncall", auth).get_json()
    dave = next(agent for agent in body["agents"] if agent["name"] == "dave")
    assert dave["quarantined"] == {
        "cause": "sip_auth_timeout",
        "since": health.quarantined_since.isoformat() + "Z",
        "until": health.quarantined_until.isoformat() + "Z",
    }
    assert body["availability"]["agents_available"] == 2
    solo = _get(client, "/api/v1/groups/solo", auth).get_json()
    assert solo["availability"]["agents_available"] == 0
    support = _get(client, "/api/v1/groups/support", auth).get_json()
    assert [agent["quarantined"] for agent in support["agents"]] == [None, None]


def test_an_unknown_group_is_404_json(client: FlaskClient, auth: dict[str, str]) -> None:
    response = _get(client, "/api/v1/groups/nobody", auth)
    assert response.status_code == 404
    assert response.get_json() == {"error": "no agent group named 'nobody'"}


def test_groups_never_show_a_password_or_an_agent_uri(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    for path in ("/api/v1/groups", "/api/v1/groups/support", "/api/v1/groups/oncall"):
        text = _get(client, path, auth).get_data(as_text=True)
        for secret in ALL_CANARIES:
            assert secret not in text
        assert "sip:" not in text and "sips:" not in text
        assert "password" not in text.lower()
