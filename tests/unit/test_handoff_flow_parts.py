"""The pieces of a handoff's flow without Flask: the store's hangup path and ringing, the
handoff id as a SIP header, whisper and return documents, Dial outcomes, purpose-bound tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from lxml import etree
from sqlalchemy import event, select

from sipguard.calls import documents
from sipguard.calls.agents import Agent, AgentGroup, Fallback
from sipguard.calls.forms import DialEvent, DialResult, Hangup
from sipguard.calls.handoff import WHISPER, HandoffSigner, handoff_sip_headers, header_value
from sipguard.errors import HandoffTokenError
from sipguard.store import HandoffRequest, Replayed, Store, webhook_outbox
from sipguard.store.handoffs import OUTCOMES, request_hash
from xml_builders import to_bytes

HOOK = "https://ai.example.test/hooks"
SECRET = "unit-secret-key-" + "k" * 32
NONCE_TTL = timedelta(minutes=5)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store(database_url)
    opened.upgrade()
    yield opened
    opened.dispose()


def _create(store: Store, call: str) -> str:
    key = store.create_api_key(f"ai-{call}", HOOK).key.id
    body = {"call_uuid": call, "group": "support"}
    request = HandoffRequest(
        api_key_id=key, call_uuid=call, group_name="support", request_hash=request_hash(body)
    )
    return store.create_handoff(request).handoff.id


def _events(store: Store) -> list[tuple[str, dict[str, Any]]]:
    rows = store.query(select(webhook_outbox).order_by(webhook_outbox.c.created_at))
    return [(row["event_type"], json.loads(row["body"])["data"]) for row in rows]


# -- the store ------------------------------------------------------------------------------------


def test_the_first_attempt_moves_the_handoff_to_ringing_once(store: Store) -> None:
    handoff_id = _create(store, "call-ring")
    store.transition(handoff_id, "transferred", from_states=("requested",))
    store.start_attempt(handoff_id, 0, ["alice"], ringing=True)
    store.start_attempt(handoff_id, 0, ["alice"], ringing=True)
    found = store.get_handoff(handoff_id)
    assert found is not None and found.state == "ringing" and len(found.attempts) == 1
    store.transition(handoff_id, "connected", "handoff.agent_answered")
    store.start_attempt(handoff_id, 1, ["bob"], ringing=True)  # never moves a connected one back
    found = store.get_handoff(handoff_id)
    assert found is not None and found.state == "connected"


@pytest.mark.parametrize("state", ["requested", "transferred", "ringing"])
def test_end_for_call_ends_a_waiting_handoff_once(store: Store, state: str) -> None:
    handoff_id = _create(store, "call-wait")
    store.transition(handoff_id, state)
    assert store.end_for_call("call-wait", "caller_hung_up", "handoff.caller_hung_up") == handoff_id
    assert store.end_for_call("call-wait", "caller_hung_up", "handoff.caller_hung_up") is None
    found = store.get_handoff(handoff_id)
    assert found is not None and found.state == "caller_hung_up"
    assert _events(store) == [
        (
            "handoff.caller_hung_up",
            {
                "handoff_id": handoff_id,
                "call_uuid": "call-wait",
                "group": "support",
                "state": "caller_hung_up",
            },
        )
    ]


@pytest.mark.parametrize("state", ["connected", "failed", "returned", "caller_hung_up"])
def test_end_for_call_leaves_a_taken_or_finished_handoff(store: Store, state: str) -> None:
    handoff_id = _create(store, "call-done")
    store.transition(handoff_id, state)
    assert store.end_for_call("call-done", "caller_hung_up", "handoff.caller_hung_up") is None
    assert store.end_for_call("no-such-call", "caller_hung_up", "handoff.caller_hung_up") is None
    found = store.get_handoff(handoff_id)
    assert found is not None and found.state == state
    assert _events(store) == []


def test_end_for_call_refuses_unknown_names(store: Store) -> None:
    with pytest.raises(ValueError):
        store.end_for_call("c", "gone", "handoff.caller_hung_up")
    with pytest.raises(ValueError):
        store.end_for_call("c", "caller_hung_up", "handoff.gone")


def _hangup(call_uuid: str) -> Hangup:
    return Hangup.from_form({"CallUUID": call_uuid, "CallStatus": "completed"})


def _record_hangup(store: Store, call_uuid: str, nonce: str | None = None) -> bool:
    return store.record(
        nonce=nonce or f"nonce-{call_uuid}", nonce_ttl=NONCE_TTL, hangup=_hangup(call_uuid)
    )


@pytest.mark.parametrize("state", ["requested", "transferred", "ringing"])
def test_a_hangup_s_record_tells_a_waiting_handoff(store: Store, state: str) -> None:
    """One statement on PostgreSQL, the same transaction on SQLite, with or without a nonce."""
    handoff_id = _create(store, "call-wait")
    store.transition(handoff_id, state)
    assert _record_hangup(store, "call-wait") is True
    assert store.record(nonce=None, nonce_ttl=NONCE_TTL, hangup=_hangup("call-wait")) is True
    assert _record_hangup(store, "call-none") is False
    assert store.record(nonce="nonce-event", nonce_ttl=NONCE_TTL) is False


@pytest.mark.parametrize("state", ["connected", "failed", "returned", "caller_hung_up"])
def test_a_hangup_s_record_ignores_a_taken_or_finished_handoff(store: Store, state: str) -> None:
    handoff_id = _create(store, "call-done")
    store.transition(handoff_id, state)
    assert _record_hangup(store, "call-done") is False


def test_a_replayed_hangup_is_refused_whatever_its_call(store: Store) -> None:
    _create(store, "call-replay")
    assert _record_hangup(store, "call-replay", nonce="nonce-once") is True
    with pytest.raises(Replayed):
        _record_hangup(store, "call-replay", nonce="nonce-once")


def test_the_hangup_look_up_uses_the_live_handoff_index(sqlite_url: str) -> None:
    """SQLite uses a partial index only when the query repeats its condition as literals.

    The hangup's record reads in its own transaction (a statement compiled once, run on the
    driver's own cursor, which SQLAlchemy's events do not see: SQLite's trace callback does)
    and the handoff is updated only when that read found one. Both statements must use the
    index.
    """
    opened = Store(sqlite_url)
    opened.upgrade()
    handoff_id = _create(opened, "call-x")
    seen: list[str] = []

    @event.listens_for(opened.engine, "connect")
    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(seen.append)

    opened.engine.dispose()  # the next checkout connects afresh, traced
    try:
        assert _record_hangup(opened, "call-y") is False
        assert _record_hangup(opened, "call-x") is True
        ended = opened.end_for_call("call-x", "caller_hung_up", "handoff.caller_hung_up")
        assert ended == handoff_id
        looked_up = [sql for sql in seen if sql.startswith(("SELECT handoffs.id", "UPDATE"))]
        looked_up = [sql for sql in looked_up if "handoffs" in sql.split("WHERE")[0]]
        with opened.engine.connect() as conn:
            plans = [
                str(row[-1])
                for sql in looked_up
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).fetchall()
            ]
    finally:
        opened.dispose()
    assert len(looked_up) == 3, looked_up  # two reads, one update
    assert all("USING INDEX ux_handoffs_live_call" in plan for plan in plans), plans


def test_caller_hung_up_is_an_attempt_outcome() -> None:
    assert "caller_hung_up" in OUTCOMES


# -- headers, documents, forms, tokens ------------------------------------------------------------


def test_the_handoff_id_header_is_percent_encoded_reversibly() -> None:
    assert header_value("ho_abc123") == "ho%5Fabc123"
    assert header_value("é-1") == "%C3%A9%2D1"
    assert unquote(header_value("ho_x y")) == "ho_x y"
    assert handoff_sip_headers({"Ticket": "1", "handoff": "x"}, "ho_a") == {
        "Ticket": "1",
        "Handoff": "ho%5Fa",
    }


def _group(**changes: Any) -> AgentGroup:
    agents = (
        Agent("alice", "sip:alice@pbx.example.test", sip_headers={"Team": "support"}),
        Agent("bob", "sip:bob@pbx.example.test"),
    )
    values: dict[str, Any] = {
        "name": "support",
        "strategy": "simultaneous",
        "agents": agents,
        "fallback": Fallback("hangup"),
        **changes,
    }
    return AgentGroup(**values)


def test_dial_group_merges_headers_and_adds_the_callback_and_whisper() -> None:
    root = documents.dial_group(
        _group(confirm_sound="https://media.example.test/c.xml", confirm_key="#"),
        0,
        "https://voice.example.test/dial-action",
        sip_headers={"TEAM": "other", "Ticket": "9"},
        callback_url="https://voice.example.test/dial-event",
        confirm_sound="https://voice.example.test/whisper/ho_a",
    )
    dial = root[0]
    assert [u.get("sipHeaders") for u in dial] == ["Team=support,Ticket=9", "TEAM=other,Ticket=9"]
    assert dial.get("callbackUrl") == "https://voice.example.test/dial-event"
    assert dial.get("callbackMethod") == "POST"
    assert dial.get("confirmSound") == "https://voice.example.test/whisper/ho_a"
    assert dial.get("confirmKey") == "#"
    plain = documents.dial_group(_group(), 0, "https://voice.example.test/dial-action")[0]
    assert [u.get("sipHeaders") for u in plain] == ["Team=support", None]
    assert plain.get("callbackUrl") is None and plain.get("confirmSound") is None


def test_a_groups_plain_dial_is_kept_per_set_of_agents_rung() -> None:
    """The plain Dial is built once and copied, keyed on the agents rung: leaving a
    quarantined agent out never gets the cached Dial that rings everyone, nor the other way."""
    group, url = _group(), "https://voice.example.test/dial-action"

    def rung(root: Any) -> list[str | None]:
        return [user.text for user in root[0]]

    everyone = ["sip:alice@pbx.example.test", "sip:bob@pbx.example.test"]
    assert rung(documents.dial_group(group, 0, url)) == everyone
    assert rung(documents.dial_group(group, 0, url, agents=group.agents[1:])) == everyone[1:]
    first = documents.dial_group(group, 0, url)
    assert rung(first) == everyone
    first[0].clear()  # a caller changing its copy changes no later call's Dial
    assert rung(documents.dial_group(group, 0, url)) == everyone


def test_the_whisper_document() -> None:
    assert to_bytes(documents.whisper("Hi\nthere", None)).endswith(
        b"<Response><Speak>Hi there</Speak></Response>"
    )
    spoken = [e.text for e in documents.whisper(None, "*")]
    assert spoken == [documents.WHISPER_GENERIC, "Press star to accept the call."]
    assert [e.text for e in documents.whisper("  ", "#")][1] == "Press hash to accept the call."


def test_return_to_ai_keeps_the_urls_own_query() -> None:
    root = documents.return_to_ai("https://ai.example.test/r?a=1#top", "ho_a", "busy", "c-1")
    url = urlsplit(root[0].text)
    assert parse_qs(url.query) == {
        "a": ["1"],
        "handoff_id": ["ho_a"],
        "outcome": ["busy"],
        "call_uuid": ["c-1"],
    }
    assert url.fragment == "top"
    stream = documents.return_to_ai("wss://ai.example.test/s", "ho_a", "busy", "c-1")[0]
    assert etree.QName(stream).localname == "Stream"
    assert stream.get("extraHeaders") == "handoffid=x686f5f61,outcome=busy"


@pytest.mark.parametrize(
    ("form", "outcome", "code"),
    [
        ({"DialStatus": "completed"}, "answered", None),
        ({"DialStatus": "CANCEL"}, "caller_hung_up", None),
        ({"DialStatus": "busy"}, "busy", None),
        ({"DialStatus": "no-answer"}, "no-answer", None),
        ({"DialStatus": "timeout"}, "no-answer", None),
        ({"DialStatus": "failed", "DialHangupCause": "sip_auth_failed"}, "sip_auth_failed", 4240),
        ({"DialStatus": "timeout", "DialHangupCause": "4250"}, "sip_auth_timeout", 4250),
        ({"DialStatus": "failed"}, "failed", None),
        ({}, "failed", None),
    ],
)
def test_dial_result_outcomes(form: dict[str, str], outcome: str, code: int | None) -> None:
    result = DialResult.from_form({"CallUUID": "c-1", **form})
    assert (result.outcome, result.outcome_code) == (outcome, code)
    assert result.outcome in OUTCOMES


def test_dial_event_reads_dial_action_else_the_older_b_leg_status() -> None:
    assert DialEvent.from_form({"DialAction": "Answer", "DialBLegStatus": "hangup"}).action == (
        "answer"
    )
    assert DialEvent.from_form({"DialBLegStatus": "answer"}).action == "answer"
    assert DialEvent.from_form({}).action is None


def test_a_purpose_token_opens_only_its_route() -> None:
    signer = HandoffSigner(SECRET, 60)
    token = signer.mint("c-1", "support", "ho_a", purpose=WHISPER)
    assert signer.check_for_handoff(token, "ho_a", WHISPER) == ("c-1", "support")
    with pytest.raises(HandoffTokenError, match="another route"):
        signer.check(token, "c-1", "support", "ho_a")
    with pytest.raises(HandoffTokenError, match="another route"):
        signer.check_for_handoff(signer.mint("c-1", "support", "ho_a"), "ho_a", WHISPER)
    with pytest.raises(HandoffTokenError, match="another handoff"):
        signer.check_for_handoff(token, "ho_b", WHISPER)
    with pytest.raises(HandoffTokenError, match="missing"):
        signer.check_for_handoff(None, "ho_a", WHISPER)
    expired = HandoffSigner(SECRET, 60, clock=lambda: 0.0).mint("c", "g", "ho_a", purpose=WHISPER)
    with pytest.raises(HandoffTokenError, match="expired"):
        signer.check_for_handoff(expired, "ho_a", WHISPER)
