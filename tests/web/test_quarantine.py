"""Agent quarantine through Plivo's callbacks: the Dial action counts an agent's 4240/4250
results, a quarantined agent is skipped, an all-quarantined group never rings, and `sipguard
agents` lists and releases (tests/data/voice.toml: the default `after` of 3). /metrics and
/monitor: tests/web/test_monitor.py; the API: tests/web/test_api_groups.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from werkzeug.test import TestResponse

from sipguard.calls.agents import Quarantine
from sipguard.store import Store
from tests.support.config import BASE_URL
from tests.support.handoffs import Flow, as_dial
from tests.support.signing import SignedPost, inbound

AFTER = Quarantine().after
PBX_CALL = {
    "From": "sip:frontdesk@203.0.113.10",
    "SIPAuthType": "ip_acl_and_credential",
    "SIPAuthUser": "frontdesk",
    "SIPSourceIP": "203.0.113.10",
}


def _store(app: Flask) -> Store:
    store: Store = app.extensions["sipguard"].store
    return store


def _action(
    signed_post: SignedPost, group: str, attempt: int, rang: str | None = None, **form: str
) -> TestResponse:
    call = str(uuid.uuid4())
    fields = inbound(CallUUID=call, CallStatus="in-progress", DialALegUUID=call, **form)
    named = f"&rang={rang}" if rang is not None else ""
    response = signed_post(f"/dial-action?group={group}&attempt={attempt}{named}", fields)
    assert response.status_code == 200, response.data
    return response


def _fail(signed_post: SignedPost, times: int, cause: str = "sip_auth_failed") -> None:
    """Make alice (support's first agent) fail SIP auth `times` times."""
    for _ in range(times):
        _action(signed_post, "support", 0, DialStatus="failed", DialHangupCause=cause)


def _answer(signed_post: SignedPost) -> etree._Element:
    response = signed_post("/answer", inbound(**PBX_CALL))
    assert response.status_code == 200, response.data
    return etree.fromstring(response.data)


def _rung(root: etree._Element) -> list[str]:
    return [user.text for user in root.xpath("/Response/Dial/User")]


def test_one_failure_short_of_the_threshold_still_rings_the_agent(
    signed_post: SignedPost, app: Flask
) -> None:
    _fail(signed_post, AFTER - 1)
    assert _rung(_answer(signed_post)) == ["sip:alice@pbx.example.test"]
    assert _store(app).quarantined_agents(["alice"]) == {}


def test_the_threshold_skips_the_agent_for_the_next_one(
    signed_post: SignedPost, app: Flask
) -> None:
    _fail(signed_post, AFTER - 1)
    _fail(signed_post, 1, cause="4250")
    root = _answer(signed_post)
    assert _rung(root) == ["sip:bob@pbx.example.test"]
    # The attempt is bob's own, so the Dial action that follows names him.
    assert root.find("Dial").get("action") == f"{BASE_URL}/dial-action?group=support&attempt=1"
    assert _store(app).quarantined_agents(["alice"])["alice"].last_cause == "sip_auth_timeout"


def test_a_success_in_between_resets_the_count(signed_post: SignedPost, app: Flask) -> None:
    _fail(signed_post, AFTER - 1)
    _action(signed_post, "support", 0, DialStatus="completed", DialHangupCause="NORMAL_CLEARING")
    _fail(signed_post, AFTER - 1)
    assert _rung(_answer(signed_post)) == ["sip:alice@pbx.example.test"]


def test_busy_or_no_answer_say_nothing_about_credentials(
    signed_post: SignedPost, app: Flask
) -> None:
    for _ in range(AFTER + 1):
        _action(signed_post, "support", 0, DialStatus="busy", DialHangupCause="USER_BUSY")
    assert _store(app).agent_health() == []


def test_a_replayed_dial_action_is_counted_once(signed_post: SignedPost, app: Flask) -> None:
    fields = inbound(CallStatus="in-progress", DialStatus="failed", DialHangupCause="4240")
    for _ in range(AFTER):
        signed_post("/dial-action?group=support&attempt=0", fields, nonce="same-nonce")
    assert _store(app).agent_health()[0].failures == 1


def test_the_next_attempt_skips_a_quarantined_agent_and_an_all_quarantined_rest_falls_back(
    signed_post: SignedPost, app: Flask
) -> None:
    store, policy = _store(app), Quarantine()
    for _ in range(AFTER):
        store.agent_failed("bob", "sip_auth_failed", policy)
    root = etree.fromstring(
        _action(signed_post, "support", 0, DialStatus="no-answer", DialHangupCause="NO_ANSWER").data
    )
    assert root.find("Dial") is None
    assert [child.tag for child in root] == ["Speak", "Record", "Hangup"]


def test_an_all_quarantined_group_does_not_ring_and_plays_its_fallback(
    signed_post: SignedPost, app: Flask
) -> None:
    store, policy = _store(app), Quarantine()
    for name in ("alice", "bob"):
        for _ in range(AFTER):
            store.agent_failed(name, "sip_auth_failed", policy)
    root = _answer(signed_post)
    assert root.find("Dial") is None
    assert [child.tag for child in root] == ["Speak", "Record", "Hangup"]


def test_a_simultaneous_group_rings_only_its_healthy_agents(
    signed_post: SignedPost, app: Flask
) -> None:
    store = _store(app)
    for _ in range(AFTER):
        store.agent_failed("carol", "sip_auth_failed", Quarantine())
    night = {**PBX_CALL, "SIPAuthType": "credential", "SIPAuthUser": "night"}
    root = etree.fromstring(signed_post("/answer", inbound(**night)).data)
    assert _rung(root) == ["sip:dave@ipauth.example.test", "sip:erin@cc.example.test"]


def test_a_simultaneous_dial_action_blames_no_agent(signed_post: SignedPost, app: Flask) -> None:
    # Plivo's Dial action does not say which of the legs failed.
    for _ in range(AFTER):
        _action(signed_post, "oncall", 0, DialStatus="failed", DialHangupCause="sip_auth_failed")
    assert _store(app).agent_health() == []


def test_the_one_agent_a_simultaneous_group_has_left_is_counted_from_its_dial_action(
    signed_post: SignedPost, app: Flask
) -> None:
    """carol and dave quarantined, the group rings erin alone: the Dial action names her, so
    her own 4240s count (Plivo signs that URL, so the name is not the caller's to choose)."""
    store = _store(app)
    for name in ("carol", "dave"):
        for _ in range(AFTER):
            store.agent_failed(name, "sip_auth_failed", Quarantine())
    night = {**PBX_CALL, "SIPAuthType": "credential", "SIPAuthUser": "night"}
    root = etree.fromstring(signed_post("/answer", inbound(**night)).data)
    assert _rung(root) == ["sip:erin@cc.example.test"]
    action = root.find("Dial").get("action")
    assert action == f"{BASE_URL}/dial-action?group=oncall&attempt=0&rang=erin"
    for _ in range(AFTER):
        _action(signed_post, "oncall", 0, rang="erin", DialStatus="failed",
                DialHangupCause="sip_auth_failed")  # fmt: skip
    assert set(store.quarantined_agents(["carol", "dave", "erin"])) == {"carol", "dave", "erin"}


def test_a_dial_action_naming_no_agent_of_its_attempt_blames_none(
    signed_post: SignedPost, app: Flask
) -> None:
    for _ in range(AFTER):
        _action(signed_post, "oncall", 0, rang="alice", DialStatus="failed",
                DialHangupCause="sip_auth_failed")  # fmt: skip
    assert _store(app).agent_health() == []


def test_the_first_success_after_the_cool_down_ends_it(
    signed_post: SignedPost, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(app)
    _fail(signed_post, AFTER)
    later = store.now() + Quarantine().cool_down
    monkeypatch.setattr(store, "_clock", lambda: later)
    assert _rung(_answer(signed_post)) == ["sip:alice@pbx.example.test"]  # rung again
    _action(signed_post, "support", 0, DialStatus="completed", DialHangupCause="NORMAL_CLEARING")
    assert store.agent_health()[0].state(later) == "healthy"


# -- an API handoff whose group has nobody to ring -----------------------------------------------


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def test_an_api_handoff_to_an_all_quarantined_group_returns_to_the_ai_without_ringing(
    app: Flask, client: FlaskClient, rsps: responses.RequestsMock
) -> None:
    store = _store(app)
    for name in ("alice", "bob"):
        for _ in range(AFTER):
            store.agent_failed(name, "sip_auth_failed", Quarantine())
    flow = Flow(app, client, rsps)
    flow.create(on_failure="return", return_url="https://ai.example.test/plivo/return")
    response = flow.transferred()
    root = etree.fromstring(response.data)
    assert root.find("Dial") is None
    assert "outcome=quarantined" in root.findtext("Redirect")
    assert flow.handoff().state == "returned"
    assert flow.events()[-1] == (
        "handoff.returned",
        {
            "handoff_id": flow.id,
            "call_uuid": flow.call,
            "group": "support",
            "state": "returned",
            "attempts": 0,
            "outcome": "quarantined",
        },
    )


def test_a_handoff_dial_event_blames_the_leg_it_names(
    app: Flask, client: FlaskClient, rsps: responses.RequestsMock
) -> None:
    flow = Flow(app, client, rsps)
    flow.create(group="oncall")
    dialled = as_dial(flow.transferred())
    for _ in range(AFTER):
        flow.dial_event(
            dialled,
            DialAction="hangup",
            DialBLegTo="sip:erin@cc.example.test",
            DialBLegHangupCauseCode="4240",
            DialBLegHangupCauseName="sip_auth_failed",
        )
    assert list(_store(app).quarantined_agents(["carol", "dave", "erin"])) == ["erin"]


# -- shown -----------------------------------------------------------------------------------------


def test_agents_list_and_release(signed_post: SignedPost, runner: Any, app: Flask) -> None:
    _fail(signed_post, AFTER)
    listed = runner.invoke(args=["agents", "list"])
    assert listed.exit_code == 0, listed.output
    alice = next(line for line in listed.output.splitlines() if line.startswith("alice"))
    assert "support" in alice and "quarantined" in alice and "sip_auth_failed" in alice
    bob = next(line for line in listed.output.splitlines() if line.startswith("bob"))
    assert "healthy" in bob
    released = runner.invoke(args=["agents", "release", "alice"])
    assert released.exit_code == 0 and "released agent alice" in released.output
    assert _store(app).quarantined_agents(["alice"]) == {}
    again = runner.invoke(args=["agents", "release", "alice"])
    assert again.exit_code == 0 and "was not quarantined" in again.output
    unknown = runner.invoke(args=["agents", "release", "mallory"])
    assert unknown.exit_code == 2 and "no agent named 'mallory'" in unknown.output
