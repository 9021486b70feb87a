"""Business hours at the web edge: a closed group is not rung, and the AI is told so.

tests/data/voice.toml's `daytime` group (New York, mon-fri 09:00-17:30 and fri 22:00-02:00,
closed 2026-12-25) plays a voicemail when closed; `weekend` (London, sat,sun 10:00-16:00)
returns the caller to the AI. The app's clock is fixed by `set_clock`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient

from tests.support.config import API
from tests.support.handoffs import Flow, parse_xml
from tests.support.queries import stored_events
from tests.support.signing import SignedPost, inbound

SetClock = Callable[[datetime], None]
WEDNESDAY_10AM = datetime(2026, 12, 2, 15, tzinfo=UTC)  # 10:00 in New York
WEDNESDAY_6PM = datetime(2026, 12, 2, 23, tzinfo=UTC)  # 18:00 in New York
CHRISTMAS_10AM = datetime(2026, 12, 25, 15, tzinfo=UTC)
SATURDAY_11AM = datetime(2026, 12, 5, 11, tzinfo=UTC)  # 11:00 in London
SATURDAY_5PM = datetime(2026, 12, 5, 17, tzinfo=UTC)
RETURN_URL = "https://ai.example.test/plivo/back"
VOICEMAIL = "We are closed. Please leave a message."


@pytest.fixture
def auth(app: Flask) -> dict[str, str]:
    token = app.extensions["sipguard"].store.create_api_key("ai").token
    return {"Authorization": f"Bearer {token}"}


def _day_desk(signed_post: SignedPost, call_uuid: str) -> Any:
    """A call the `day-desk` rule routes to the `daytime` group."""
    form = inbound(CallUUID=call_uuid, SIPAuthType="credential", SIPAuthUser="day")
    return parse_xml(signed_post("/answer", form))


def _is_closed_voicemail(root: Any) -> None:
    assert [child.tag for child in root] == ["Speak", "Record", "Hangup"]
    assert root.find("Speak").text == VOICEMAIL
    assert root.find("Record").get("maxLength") == "60"


# --- calls routed to a group ------------------------------------------------------------------


def test_an_open_group_is_dialled(signed_post: SignedPost, set_clock: SetClock) -> None:
    set_clock(WEDNESDAY_10AM)
    root = _day_desk(signed_post, "day-1")
    assert [child.tag for child in root] == ["Dial"]
    assert root.find("Dial/User").text == "sip:dave@ipauth.example.test"


@pytest.mark.parametrize("moment", [WEDNESDAY_6PM, CHRISTMAS_10AM])
def test_a_closed_group_plays_its_closed_action_instead_of_ringing(
    signed_post: SignedPost, set_clock: SetClock, app: Flask, moment: datetime
) -> None:
    set_clock(moment)
    _is_closed_voicemail(_day_desk(signed_post, "day-2"))
    (event,) = stored_events(app.extensions["sipguard"].store, "day-2")
    assert event["decision"] == "closed:fallback:voicemail"
    assert event["group_name"] == "daytime"


def test_friday_night_window_past_midnight(signed_post: SignedPost, set_clock: SetClock) -> None:
    set_clock(datetime(2026, 12, 5, 6, 59, tzinfo=UTC))  # Saturday 01:59 in New York
    assert _day_desk(signed_post, "day-3").find("Dial") is not None
    set_clock(datetime(2026, 12, 5, 7, 0, tzinfo=UTC))  # Saturday 02:00
    _is_closed_voicemail(_day_desk(signed_post, "day-4"))


def test_a_group_without_hours_rings_at_any_time(
    signed_post: SignedPost, set_clock: SetClock
) -> None:
    set_clock(CHRISTMAS_10AM)
    form = inbound(CallUUID="night-1", SIPAuthType="credential", SIPAuthUser="night")
    assert parse_xml(signed_post("/answer", form)).find("Dial") is not None


def test_the_handoff_url_of_a_closed_group_plays_the_closed_action(
    signed_post: SignedPost, set_clock: SetClock, app: Flask
) -> None:
    """The AI redirected to its signed handoff_url after hours: no handoff to return."""
    set_clock(WEDNESDAY_6PM)
    token = app.extensions["sipguard"].handoff.mint("ho-1", "daytime")
    response = signed_post(f"/handoff/daytime?token={token}", inbound(CallUUID="ho-1"))
    _is_closed_voicemail(parse_xml(response))
    (event,) = stored_events(app.extensions["sipguard"].store, "ho-1")
    assert (event["decision"], event["reason"]) == ("closed:fallback:voicemail", "closed")


# --- the AI's API -----------------------------------------------------------------------------


def _availability(client: FlaskClient, auth: dict[str, str], name: str) -> Any:
    response = client.get(f"/api/v1/groups/{name}", headers=auth)
    assert response.status_code == 200
    return response.get_json()["availability"]


def test_groups_say_open_or_closed_and_until_when(
    client: FlaskClient, auth: dict[str, str], set_clock: SetClock
) -> None:
    set_clock(WEDNESDAY_10AM)
    assert _availability(client, auth, "daytime") == {
        "open": True,
        "until": "2026-12-02T22:30:00Z",
        "agents_available": 1,
    }
    assert _availability(client, auth, "weekend") == {
        "open": False,
        "until": "2026-12-05T10:00:00Z",
        "agents_available": 1,
    }
    assert _availability(client, auth, "support") == {
        "open": True,
        "until": None,
        "agents_available": 2,
    }
    set_clock(WEDNESDAY_6PM)
    listed = client.get("/api/v1/groups", headers=auth).get_json()["groups"]
    daytime = next(group for group in listed if group["name"] == "daytime")
    assert daytime["availability"]["open"] is False
    assert daytime["availability"]["until"] == "2026-12-03T14:00:00Z"


def test_a_handoff_to_a_closed_group_is_refused_before_any_transfer(
    client: FlaskClient,
    auth: dict[str, str],
    set_clock: SetClock,
    app: Flask,
    rsps: responses.RequestsMock,
) -> None:
    set_clock(WEDNESDAY_6PM)
    response = client.post(
        "/api/v1/handoffs",
        json={"call_uuid": "c-closed-1", "group": "daytime"},
        headers={**auth, "Idempotency-Key": "k-closed"},
    )
    assert response.status_code == 409
    assert response.get_json() == {
        "error": "group 'daytime' is closed until 2026-12-03T14:00:00Z",
        "group": "daytime",
        "closed": True,
        "until": "2026-12-03T14:00:00Z",
    }
    assert len(rsps.calls) == 0
    assert app.extensions["sipguard"].store.recent_handoffs() == []


def test_a_retry_after_closing_gets_the_first_answer_not_the_409(
    client: FlaskClient,
    auth: dict[str, str],
    set_clock: SetClock,
    rsps: responses.RequestsMock,
) -> None:
    """The AI retries a handoff it made at 10:00 (its answer was lost) after the group closed:
    the same Idempotency-Key gets the first handoff back, transferred once; another body with
    that key is still 422."""
    rsps.post(API + "Call/c-retry-1/", json={"message": "call transferred", "api_id": "t-9"})
    body = {"call_uuid": "c-retry-1", "group": "daytime"}
    headers = {**auth, "Idempotency-Key": "k-retry"}
    set_clock(WEDNESDAY_10AM)
    first = client.post("/api/v1/handoffs", json=body, headers=headers)
    assert first.status_code == 202
    set_clock(WEDNESDAY_6PM)
    again = client.post("/api/v1/handoffs", json=body, headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert len(rsps.calls) == 1
    other = client.post("/api/v1/handoffs", json={**body, "summary": "x"}, headers=headers)
    assert other.status_code == 422
    unknown = client.post("/api/v1/handoffs", json=body, headers={**auth, "Idempotency-Key": "k2"})
    assert unknown.status_code == 409 and unknown.get_json()["closed"] is True


def _after_closing(
    flow: Flow, set_clock: SetClock, opened: datetime, closed: datetime, **body: str
) -> Any:
    """Hand the call over while the group is open; Plivo fetches the Transfer once it closed."""
    set_clock(opened)
    flow.create(**body)
    set_clock(closed)
    return parse_xml(flow.transferred())


def _ended(flow: Flow, state: str) -> None:
    assert flow.handoff().state == state
    event_type, data = flow.events()[-1]
    assert (event_type, data["attempts"], data["outcome"]) == (f"handoff.{state}", 0, "closed")


def test_a_transfer_fetched_after_closing_plays_the_closed_action_and_fails_the_handoff(
    flow: Flow, set_clock: SetClock
) -> None:
    # 17:29:59 in New York; Plivo fetches the URL at 17:30.
    opened, closed = (
        datetime(2026, 12, 2, 22, 29, 59, tzinfo=UTC),
        datetime(2026, 12, 2, 22, 30, tzinfo=UTC),
    )
    _is_closed_voicemail(_after_closing(flow, set_clock, opened, closed, group="daytime"))
    _ended(flow, "failed")


def test_a_closed_group_that_returns_gives_the_caller_back_at_the_return_url(
    flow: Flow, set_clock: SetClock
) -> None:
    root = _after_closing(
        flow,
        set_clock,
        SATURDAY_11AM,
        SATURDAY_5PM,
        group="weekend",
        on_failure="return",
        return_url=RETURN_URL,
    )
    assert [child.tag for child in root] == ["Redirect"]
    target = urlsplit(root.find("Redirect").text)
    assert target._replace(query="").geturl() == RETURN_URL
    assert parse_qs(target.query) == {
        "handoff_id": [flow.id],
        "outcome": ["closed"],
        "call_uuid": [flow.call],
    }
    _ended(flow, "returned")


def test_a_return_without_a_return_url_plays_the_groups_fallback(
    flow: Flow, set_clock: SetClock
) -> None:
    root = _after_closing(flow, set_clock, SATURDAY_11AM, SATURDAY_5PM, group="weekend")
    assert [child.tag for child in root] == ["Speak", "Hangup"]
    assert root.find("Speak").text == "Nobody is in. Goodbye."
    _ended(flow, "failed")
