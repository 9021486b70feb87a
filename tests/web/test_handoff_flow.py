"""An API handoff after Plivo accepts the Transfer: its Dials, attempts, states and webhooks,
driven through the signed callbacks Plivo makes (/handoff, /dial-action, /dial-event, /hangup)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import responses
from flask import Flask
from sqlalchemy import update

from app import create_app
from sipguard.calls.documents import stream_header_value
from sipguard.errors import StoreUnavailable
from sipguard.store.schema import handoffs
from tests.support.config import app_config
from tests.support.handoffs import CALL, Flow, as_dial, parse_xml
from tests.support.queries import stored_hangup

RETURN_HTTPS = "https://ai.example.test/plivo/return?tenant=acme"
RETURN_WSS = "wss://ai.example.test/stream/return"


def _attempts(flow: Flow) -> list[tuple[int, tuple[str, ...], str | None, int | None]]:
    return [(a.attempt, a.agents, a.outcome, a.code) for a in flow.handoff().attempts]


# -- dialling with the handoff's context ---------------------------------------------------------


def test_the_dial_carries_fields_and_the_handoff_id_to_every_agent(flow: Flow) -> None:
    handoff_id = flow.create(fields={"Ticket": "4417", "Tier": "gold"})
    dialled = as_dial(flow.transferred())
    encoded = "ho%5F" + handoff_id.removeprefix("ho_")
    # alice has her own Team header from the voice config; the fields and the id join it.
    assert dialled.headers(0) == f"Team=support,Ticket=4417,Tier=gold,Handoff={encoded}"
    assert len(dialled.users) == 1  # sequential: alice first
    assert unquote(encoded) == handoff_id
    assert dialled.query == {"group": ["support"], "attempt": ["0"], "handoff": [handoff_id]}
    assert dialled.callback == f"/dial-event?group=support&attempt=0&handoff={handoff_id}"
    assert dialled.dial.get("callbackMethod") == "POST"
    assert dialled.dial.get("confirmSound") is None  # no whisper asked for
    assert dialled.response.headers["Cache-Control"] == "no-store"
    assert flow.handoff().state == "ringing"
    assert _attempts(flow) == [(0, ("alice",), None, None)]
    assert flow.event_types() == ["handoff.transferred"]  # ringing is not reported


def test_the_agents_own_header_wins_and_the_id_header_is_never_a_field(flow: Flow) -> None:
    handoff_id = flow.create(fields={"team": "billing", "HANDOFF": "forged", "Ticket": "1"})
    dialled = as_dial(flow.transferred())
    encoded = "ho%5F" + handoff_id.removeprefix("ho_")
    assert dialled.headers(0) == f"Team=support,Ticket=1,Handoff={encoded}"
    bob = as_dial(flow.dial_action(dialled, DialStatus="no-answer"))
    assert bob.headers(0) == f"Ticket=1,team=billing,Handoff={encoded}"


def test_plivo_fetching_the_transfer_url_again_records_one_attempt(flow: Flow) -> None:
    flow.create()
    first = as_dial(flow.transferred())
    again = as_dial(flow.transferred())
    assert first.action == again.action
    assert _attempts(flow) == [(0, ("alice",), None, None)]
    assert flow.event_types() == ["handoff.transferred"]


def test_an_unknown_handoff_id_dials_the_group_plainly(
    flow: Flow, app: Flask, app_logs: pytest.LogCaptureFixture
) -> None:
    token = app.extensions["sipguard"].handoff.mint(CALL, "support", "ho_doesnotexist0000000000")
    path = f"/handoff/support?token={token}&handoff=ho_doesnotexist0000000000"
    dialled = as_dial(flow.post(path, {"CallUUID": CALL}))
    assert dialled.headers(0) == "Team=support"
    assert dialled.query == {"group": ["support"], "attempt": ["0"]}
    assert dialled.dial.get("callbackUrl") is None
    assert "handoff=ho_doesnotexist0000000000 is unknown" in app_logs.text


def test_a_finished_handoff_dials_the_group_plainly(
    flow: Flow, app_logs: pytest.LogCaptureFixture
) -> None:
    handoff_id = flow.create()
    flow.store.transition(handoff_id, "failed", "handoff.failed")
    dialled = as_dial(flow.transferred())
    assert dialled.headers(0) == "Team=support"
    assert "handoff" not in dialled.query
    assert flow.handoff().attempts == ()
    assert f"handoff={handoff_id} is already failed" in app_logs.text


# -- attempts and their outcomes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "outcome", "code"),
    [
        ({"DialStatus": "busy"}, "busy", None),
        ({"DialStatus": "no-answer"}, "no-answer", None),
        ({"DialStatus": "timeout"}, "no-answer", None),
        ({"DialStatus": "failed", "DialHangupCause": "sip_auth_failed"}, "sip_auth_failed", 4240),
        ({"DialStatus": "failed", "DialHangupCause": "4240"}, "sip_auth_failed", 4240),
        (
            {"DialStatus": "timeout", "DialHangupCause": "sip_auth_timeout"},
            "sip_auth_timeout",
            4250,
        ),
        ({"DialStatus": "failed", "DialHangupCause": "UNALLOCATED_NUMBER"}, "failed", None),
    ],
)
def test_a_failed_attempt_is_recorded_and_the_next_agent_rings(
    flow: Flow, form: dict[str, str], outcome: str, code: int | None
) -> None:
    handoff_id = flow.create(fields={"Ticket": "7"})
    first = as_dial(flow.transferred())
    second = as_dial(flow.dial_action(first, **form))
    assert second.users[0].text == "sip:bob@pbx.example.test"
    assert second.headers(0) == f"Ticket=7,Handoff=ho%5F{handoff_id.removeprefix('ho_')}"
    assert second.query["attempt"] == ["1"] and second.query["handoff"] == [handoff_id]
    assert _attempts(flow) == [(0, ("alice",), outcome, code), (1, ("bob",), None, None)]
    assert flow.handoff().state == "ringing"
    assert flow.event_types() == ["handoff.transferred"]


def test_a_retried_dial_action_changes_nothing(flow: Flow) -> None:
    flow.create()
    first = as_dial(flow.transferred())
    one = as_dial(flow.dial_action(first, DialStatus="busy"))
    two = as_dial(flow.dial_action(first, DialStatus="no-answer"))  # Plivo sent it again
    assert one.action == two.action
    assert _attempts(flow) == [(0, ("alice",), "busy", None), (1, ("bob",), None, None)]


# -- an agent answers ------------------------------------------------------------------------------


def test_the_dial_callback_connects_at_answer_and_the_action_changes_nothing(flow: Flow) -> None:
    handoff_id = flow.create()
    dialled = as_dial(flow.transferred())
    answered = flow.dial_event(
        dialled, DialAction="answer", DialBLegStatus="answer", DialBLegUUID="b-1"
    )
    assert parse_xml(answered).tag == "Response" and len(parse_xml(answered)) == 0
    assert flow.handoff().state == "connected"
    again = flow.dial_event(dialled, DialAction="answer", DialBLegUUID="b-1")  # a retry
    assert again.status_code == 200
    assert flow.dial_event(dialled, DialAction="connected").status_code == 200
    ended = flow.dial_action(dialled, DialStatus="completed", DialBLegUUID="b-1")
    assert len(parse_xml(ended)) == 0
    assert flow.events() == [
        ("handoff.transferred", flow.events()[0][1]),
        (
            "handoff.agent_answered",
            {
                "handoff_id": handoff_id,
                "call_uuid": CALL,
                "group": "support",
                "state": "connected",
                "attempt": 0,
                "agents": ["alice"],
            },
        ),
    ]
    assert _attempts(flow) == [(0, ("alice",), "answered", None)]
    assert flow.hangup().status_code == 200  # the call ends after the agent talked
    assert flow.handoff().state == "connected"
    assert flow.event_types() == ["handoff.transferred", "handoff.agent_answered"]


def test_without_the_dial_callback_the_completed_action_connects(flow: Flow) -> None:
    flow.create()
    first = as_dial(flow.transferred())
    second = as_dial(flow.dial_action(first, DialStatus="busy"))
    flow.dial_action(second, DialStatus="completed", DialBLegUUID="b-2")
    flow.dial_action(second, DialStatus="completed", DialBLegUUID="b-2")  # a retry
    assert flow.handoff().state == "connected"
    events = flow.events()
    assert [t for t, _ in events] == ["handoff.transferred", "handoff.agent_answered"]
    assert events[1][1]["attempt"] == 1 and events[1][1]["agents"] == ["bob"]


def test_the_dial_callback_names_who_answered_a_simultaneous_group(flow: Flow) -> None:
    flow.create(group="oncall")
    dialled = as_dial(flow.transferred())
    assert len(dialled.users) == 3
    flow.dial_event(
        dialled, DialAction="answer", DialBLegTo="sip:erin@cc.example.test;transport=tls"
    )
    assert flow.events()[-1][1]["agents"] == ["erin"]


def test_an_unknown_answering_leg_names_every_agent_rung(flow: Flow) -> None:
    flow.create(group="oncall")
    dialled = as_dial(flow.transferred())
    flow.dial_event(dialled, DialAction="answer")
    assert flow.events()[-1][1]["agents"] == ["carol", "dave", "erin"]


def test_other_dial_callbacks_change_nothing(flow: Flow) -> None:
    flow.create()
    dialled = as_dial(flow.transferred())
    assert flow.dial_event(dialled, DialAction="hangup").status_code == 200
    assert flow.dial_event(dialled, DialAction="digits").status_code == 200
    assert flow.dial_event(dialled).status_code == 200
    assert flow.handoff().state == "ringing"
    assert flow.event_types() == ["handoff.transferred"]


def test_the_dial_callback_needs_its_handoff_and_a_known_group(flow: Flow) -> None:
    flow.create()
    dialled = as_dial(flow.transferred())
    bare = flow.post("/dial-event?group=support&attempt=0", {"DialAction": "answer"})
    assert bare.status_code == 400 and bare.get_json()["error"].startswith("handoff")
    other = dialled.callback.replace("group=support", "group=nope")
    assert flow.post(other, {"DialAction": "answer"}).status_code == 400
    unknown = flow.post(
        "/dial-event?group=support&attempt=0&handoff=ho_nothing", {"DialAction": "answer"}
    )
    assert unknown.status_code == 200 and len(parse_xml(unknown)) == 0
    assert flow.handoff().state == "ringing"


# -- the last attempt fails ------------------------------------------------------------------------


def _exhaust(flow: Flow, last: dict[str, str]) -> Any:
    first = as_dial(flow.transferred())
    second = as_dial(flow.dial_action(first, DialStatus="no-answer"))
    return second, flow.dial_action(second, **last)


def test_on_failure_fallback_fails_the_handoff_and_runs_the_groups_fallback(flow: Flow) -> None:
    handoff_id = flow.create()
    second, answer = _exhaust(flow, {"DialStatus": "busy"})
    root = parse_xml(answer)
    assert [child.tag for child in root] == ["Speak", "Record", "Hangup"]  # support's voicemail
    again = flow.dial_action(second, DialStatus="busy")  # a retry
    assert again.data == answer.data
    assert flow.handoff().state == "failed"
    assert flow.events()[1:] == [
        (
            "handoff.failed",
            {
                "handoff_id": handoff_id,
                "call_uuid": CALL,
                "group": "support",
                "state": "failed",
                "outcome": "busy",
                "attempts": 2,
            },
        )
    ]
    assert _attempts(flow) == [(0, ("alice",), "no-answer", None), (1, ("bob",), "busy", None)]


def test_on_failure_return_redirects_the_caller_to_the_ai(flow: Flow) -> None:
    handoff_id = flow.create(on_failure="return", return_url=RETURN_HTTPS)
    second, answer = _exhaust(flow, {"DialStatus": "failed", "DialHangupCause": "sip_auth_failed"})
    root = parse_xml(answer)
    assert [child.tag for child in root] == ["Redirect"]
    url = urlsplit(root[0].text)
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://ai.example.test/plivo/return"
    assert parse_qs(url.query) == {
        "tenant": ["acme"],
        "handoff_id": [handoff_id],
        "outcome": ["sip_auth_failed"],
        "call_uuid": [CALL],
    }
    flow.dial_action(second, DialStatus="failed", DialHangupCause="sip_auth_failed")
    assert flow.handoff().state == "returned"
    assert flow.events()[1:] == [
        (
            "handoff.returned",
            {
                "handoff_id": handoff_id,
                "call_uuid": CALL,
                "group": "support",
                "state": "returned",
                "outcome": "sip_auth_failed",
                "attempts": 2,
            },
        )
    ]
    assert _attempts(flow)[-1] == (1, ("bob",), "sip_auth_failed", 4240)


def test_on_failure_return_streams_the_caller_back_to_a_websocket(flow: Flow) -> None:
    handoff_id = flow.create(on_failure="return", return_url=RETURN_WSS)
    _, answer = _exhaust(flow, {"DialStatus": "timeout", "DialHangupCause": "sip_auth_timeout"})
    root = parse_xml(answer)
    assert [child.tag for child in root] == ["Stream"]
    stream = root[0]
    assert stream.text == RETURN_WSS
    assert stream.get("bidirectional") == "true" and stream.get("keepCallAlive") == "true"
    assert stream.get("extraHeaders") == (
        f"handoffid={stream_header_value(handoff_id)},outcome=x" + b"sip_auth_timeout".hex()
    )
    assert bytes.fromhex(stream_header_value(handoff_id)[1:]).decode() == handoff_id
    assert flow.handoff().state == "returned"
    assert flow.events()[-1][1]["outcome"] == "sip_auth_timeout"


def test_a_group_with_one_attempt_returns_after_it(flow: Flow) -> None:
    flow.create(group="solo", on_failure="return", return_url=RETURN_HTTPS)
    dialled = as_dial(flow.transferred())
    root = parse_xml(flow.dial_action(dialled, DialStatus="no-answer"))
    assert root[0].tag == "Redirect" and "outcome=no-answer" in root[0].text
    assert flow.events()[-1][1]["attempts"] == 1


def test_an_unknown_handoff_on_the_last_attempt_runs_the_fallback(
    flow: Flow, app_logs: pytest.LogCaptureFixture
) -> None:
    answer = flow.post(
        "/dial-action?group=solo&attempt=0&handoff=ho_nothing",
        {"CallUUID": CALL, "DialStatus": "busy"},
    )
    assert [child.tag for child in parse_xml(answer)] == ["Speak", "Hangup"]
    assert "handoff=ho_nothing is unknown" in app_logs.text


# -- the caller leaves -----------------------------------------------------------------------------


def test_the_caller_leaving_during_the_dial_ends_the_handoff_once(flow: Flow) -> None:
    handoff_id = flow.create()
    dialled = as_dial(flow.transferred())
    answer = flow.dial_action(dialled, DialStatus="cancel")
    assert len(parse_xml(answer)) == 0
    flow.dial_action(dialled, DialStatus="cancel")  # a retry
    assert flow.hangup().status_code == 200  # and then the call's hangup
    assert flow.handoff().state == "caller_hung_up"
    assert flow.events()[1:] == [
        (
            "handoff.caller_hung_up",
            {
                "handoff_id": handoff_id,
                "call_uuid": CALL,
                "group": "support",
                "state": "caller_hung_up",
                "attempts": 1,
            },
        )
    ]
    assert _attempts(flow) == [(0, ("alice",), "caller_hung_up", None)]


@pytest.mark.parametrize("ring_first", [False, True])
def test_a_hangup_ends_a_handoff_no_agent_took(flow: Flow, ring_first: bool) -> None:
    handoff_id = flow.create()
    if ring_first:
        as_dial(flow.transferred())
    assert flow.hangup().status_code == 200
    assert flow.hangup().status_code == 200  # Plivo retried (another nonce)
    assert flow.handoff().state == "caller_hung_up"
    assert flow.events()[1:] == [
        (
            "handoff.caller_hung_up",
            {
                "handoff_id": handoff_id,
                "call_uuid": CALL,
                "group": "support",
                "state": "caller_hung_up",
            },
        )
    ]
    assert stored_hangup(flow.store, CALL) is not None


def test_a_replayed_hangup_ends_no_handoff(flow: Flow) -> None:
    """The handoff ends once the hangup is stored: a refused nonce stores nothing, ends nothing."""
    flow.create()
    other = {"CallUUID": "another-call", "CallStatus": "completed"}
    assert flow.post("/hangup", other, nonce="spent-nonce").status_code == 200
    sent = {"CallUUID": CALL, "CallStatus": "completed"}
    assert flow.post("/hangup", sent, nonce="spent-nonce").status_code == 403
    assert flow.handoff().state == "transferred"
    assert stored_hangup(flow.store, CALL) is None
    assert flow.hangup().status_code == 200  # Plivo's retry, signed afresh
    assert flow.handoff().state == "caller_hung_up"


def test_a_handoff_end_the_database_refused_is_retried_by_plivo(
    flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hangup is stored but its handoff could not be ended: 503, so Plivo retries."""
    flow.create()
    real = flow.store.end_for_call

    def refused(*args: Any) -> Any:
        monkeypatch.setattr(flow.store, "end_for_call", real)  # only this once
        raise StoreUnavailable("database error (OperationalError)")

    monkeypatch.setattr(flow.store, "end_for_call", refused)
    assert flow.hangup().status_code == 503
    assert stored_hangup(flow.store, CALL) is not None
    assert flow.handoff().state == "transferred"
    assert flow.hangup().status_code == 200  # the retry, signed afresh
    assert flow.handoff().state == "caller_hung_up"
    assert flow.event_types().count("handoff.caller_hung_up") == 1


def test_a_hangup_leaves_finished_handoffs_and_other_calls_alone(flow: Flow) -> None:
    handoff_id = flow.create()
    flow.store.transition(handoff_id, "returned", "handoff.returned")
    assert flow.hangup().status_code == 200
    assert flow.hangup(CallUUID="another-call").status_code == 200
    assert flow.handoff().state == "returned"
    assert flow.event_types() == ["handoff.transferred", "handoff.returned"]


# -- the database is down --------------------------------------------------------------------------


def test_with_the_database_down_the_caller_still_gets_xml(
    flow: Flow,
    app: Flask,
    break_database: Callable[[Flask], Any],
    app_logs: pytest.LogCaptureFixture,
) -> None:
    handoff_id = flow.create(fields={"Ticket": "9"}, whisper=True, summary="Canary-Db-Down-55")
    encoded = "ho%5F" + handoff_id.removeprefix("ho_")
    with break_database(app):
        dialled = as_dial(flow.transferred())
        # Dialled by its id alone: the fields and the whisper need the database.
        assert dialled.headers(0) == f"Team=support,Handoff={encoded}"
        assert dialled.dial.get("confirmSound") is None
        assert dialled.query["handoff"] == [handoff_id]
        second = as_dial(flow.dial_action(dialled, DialStatus="busy"))
        assert second.headers(0) == f"Handoff={encoded}"
        fallback = parse_xml(flow.dial_action(second, DialStatus="busy"))
        assert [child.tag for child in fallback] == ["Speak", "Record", "Hangup"]
        assert flow.dial_event(dialled, DialAction="answer").status_code == 200
        assert flow.hangup().status_code == 503  # the hangup itself must be stored: Plivo retries
    errors = [r for r in app_logs.records if r.levelno >= logging.ERROR]
    assert any(f"handoff={handoff_id}" in r.getMessage() for r in errors)
    assert all("Canary-Db-Down-55" not in r.getMessage() for r in app_logs.records)
    assert flow.handoff().state == "transferred"  # nothing was recorded meanwhile
    assert flow.hangup().status_code == 200  # the retry, with the database back
    assert flow.handoff().state == "caller_hung_up"


def test_a_handoff_finished_between_attempts_dials_the_next_agent_plainly(flow: Flow) -> None:
    flow.create(fields={"Ticket": "3"})
    dialled = as_dial(flow.transferred())
    with flow.store.engine.begin() as conn:
        conn.execute(update(handoffs).values(state="failed"))
    second = as_dial(flow.dial_action(dialled, DialStatus="busy"))
    assert second.headers(0) is None  # bob has no headers of his own
    assert "handoff" not in second.query
    assert _attempts(flow) == [(0, ("alice",), "busy", None)]


# -- both databases --------------------------------------------------------------------------------


def test_the_whole_flow_on_each_database(database_url: str, rsps: responses.RequestsMock) -> None:
    application = create_app(app_config(database_url))
    try:
        client = application.test_client()
        taken = Flow(application, client, rsps)
        taken.create(fields={"Ticket": "1"})
        first = as_dial(taken.transferred())
        second = as_dial(taken.dial_action(first, DialStatus="failed", DialHangupCause="4250"))
        taken.dial_event(second, DialAction="answer", DialBLegTo="sip:bob@pbx.example.test")
        taken.dial_action(second, DialStatus="completed")
        assert taken.hangup().status_code == 200
        assert taken.handoff().state == "connected"
        assert _attempts(taken) == [
            (0, ("alice",), "sip_auth_timeout", 4250),
            (1, ("bob",), "answered", None),
        ]
        assert taken.event_types() == ["handoff.transferred", "handoff.agent_answered"]
        left = Flow(application, client, rsps, call="c0ffee00-0000-4000-8000-0000000000f2")
        left.create()
        as_dial(left.transferred())
        assert left.hangup().status_code == 200
        assert left.handoff().state == "caller_hung_up"
        assert left.event_types() == ["handoff.transferred", "handoff.caller_hung_up"]
    finally:
        application.extensions["sipguard"].store.dispose()
