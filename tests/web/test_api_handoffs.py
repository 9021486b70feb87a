"""POST /api/v1/handoffs and GET /api/v1/handoffs/{id}: the AI hands a live call to humans."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from sipguard.store import webhook_outbox
from tests.support.config import API, BASE_URL
from tests.support.signing import SignedPost, inbound

CALL = "c0ffee00-0000-4000-8000-000000000001"
SUMMARY = "Canary-Summary-7f3a: caller Jane Roe wants a refund"
HOOK = "https://ai.example.test/hooks"
TRANSFER = API + f"Call/{CALL}/"


@pytest.fixture
def auth(app: Flask) -> dict[str, str]:
    token = app.extensions["sipguard"].store.create_api_key("ai", HOOK).token
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def rsps() -> Any:
    with responses.RequestsMock() as mock:
        yield mock


def _transferred(rsps: Any, call: str = CALL) -> None:
    rsps.post(
        API + f"Call/{call}/", json={"message": "call transferred", "api_id": "t-1"}, status=202
    )


def _post(client: FlaskClient, auth: dict[str, str], body: Any, **headers: str) -> Any:
    return client.post("/api/v1/handoffs", json=body, headers={**auth, **headers})


def _body(**changes: Any) -> dict[str, Any]:
    return {"call_uuid": CALL, "group": "support", "summary": SUMMARY, **changes}


def _events(app: Flask) -> list[dict[str, Any]]:
    store = app.extensions["sipguard"].store
    with store.engine.connect() as conn:
        rows = conn.execute(select(webhook_outbox).order_by(webhook_outbox.c.created_at)).all()
    return [dict(row._mapping) for row in rows]


# -- the happy path ------------------------------------------------------------------------------


def test_handoff_transfers_the_a_leg_and_answers_202(
    app: Flask, client: FlaskClient, auth: dict[str, str], rsps: Any
) -> None:
    _transferred(rsps)
    response = _post(client, auth, _body(fields={"Ticket": "4417"}, whisper=True))
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["state"] == "transferred" and body["call_uuid"] == CALL
    assert body["group"] == "support" and body["attempts"] == []
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")
    assert "summary" not in body and SUMMARY not in response.get_data(as_text=True)
    assert response.headers["Location"] == f"/api/v1/handoffs/{body['id']}"
    assert "Idempotent-Replayed" not in response.headers
    # Exactly the documented Transfer: POST Call/{uuid}/ with legs, aleg_url, aleg_method.
    assert len(rsps.calls) == 1
    sent = rsps.calls[0].request
    assert sent.method == "POST" and sent.url == TRANSFER
    form = json.loads(sent.body)
    assert set(form) == {"legs", "aleg_url", "aleg_method"}
    assert (form["legs"], form["aleg_method"]) == ("aleg", "POST")
    url = urlsplit(form["aleg_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{BASE_URL}/handoff/support"
    query = parse_qs(url.query)
    assert query["handoff"] == [body["id"]] and query["token"]
    # The state change and its webhook were written together.
    events = _events(app)
    assert [e["event_type"] for e in events] == ["handoff.transferred"]
    assert events[0]["url"] == HOOK and events[0]["handoff_id"] == body["id"]
    assert SUMMARY not in json.dumps(events[0], default=str)


def test_get_shows_the_handoff_to_its_own_key_only(
    app: Flask, client: FlaskClient, auth: dict[str, str], rsps: Any
) -> None:
    _transferred(rsps)
    created = _post(client, auth, _body()).get_json()
    mine = client.get(f"/api/v1/handoffs/{created['id']}", headers=auth)
    assert mine.status_code == 200 and mine.get_json() == created
    other = app.extensions["sipguard"].store.create_api_key("other").token
    theirs = client.get(
        f"/api/v1/handoffs/{created['id']}", headers={"Authorization": f"Bearer {other}"}
    )
    assert theirs.status_code == 404
    missing = client.get("/api/v1/handoffs/ho_nothing", headers=auth)
    assert missing.status_code == 404 and missing.get_json()["error"]


def test_a_replay_answers_the_first_handoff_and_never_transfers_twice(
    client: FlaskClient, auth: dict[str, str], rsps: Any
) -> None:
    _transferred(rsps)
    first = _post(client, auth, _body(), **{"Idempotency-Key": "k-1"})
    again = _post(client, auth, _body(), **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert len(rsps.calls) == 1
    other = _post(client, auth, _body(group="oncall"), **{"Idempotency-Key": "k-1"})
    assert other.status_code == 422 and "Idempotency-Key" in other.get_json()["error"]
    assert len(rsps.calls) == 1


def test_a_second_live_handoff_for_the_call_is_409(
    client: FlaskClient, auth: dict[str, str], rsps: Any
) -> None:
    _transferred(rsps)
    assert _post(client, auth, _body()).status_code == 202
    second = _post(client, auth, _body(group="oncall"))
    assert second.status_code == 409
    assert len(rsps.calls) == 1


def test_unknown_group_is_404_and_nothing_is_sent(
    client: FlaskClient, auth: dict[str, str], rsps: Any
) -> None:
    response = _post(client, auth, _body(group="sales"))
    assert response.status_code == 404 and "sales" in response.get_json()["error"]
    assert len(rsps.calls) == 0


# -- Plivo refuses, the database is down ---------------------------------------------------------


@pytest.mark.parametrize("status", [400, 404, 500])
def test_plivo_refusing_is_502_with_its_api_id_and_a_failed_handoff(
    app: Flask, client: FlaskClient, auth: dict[str, str], rsps: Any, status: int
) -> None:
    rsps.post(TRANSFER, json={"error": "call not found", "api_id": "p-404"}, status=status)
    response = _post(client, auth, _body())
    assert response.status_code == 502
    body = response.get_json()
    assert body["error"] == "Plivo refused the transfer"
    assert body["plivo"] == {"status": status, "api_id": "p-404", "message": "call not found"}
    handoff = client.get(f"/api/v1/handoffs/{body['id']}", headers=auth).get_json()
    assert handoff["state"] == "failed" and handoff["plivo_api_id"] == "p-404"
    events = _events(app)
    assert [e["event_type"] for e in events] == ["handoff.failed"]
    assert json.loads(events[0]["body"])["data"]["plivo"]["api_id"] == "p-404"
    # A failed handoff is not live: the call may be handed off again.
    _transferred(rsps)
    assert _post(client, auth, _body()).status_code == 202


def test_database_down_is_503_and_nothing_is_transferred(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    rsps: Any,
    break_database: Callable[[Flask], Any],
) -> None:
    with break_database(app):
        response = _post(client, auth, _body())
    assert response.status_code == 503 and response.get_json()["error"]
    assert len(rsps.calls) == 0


def test_database_down_after_the_key_check_is_503_too(
    app: Flask, client: FlaskClient, auth: dict[str, str], rsps: Any, monkeypatch: Any
) -> None:
    from sipguard.errors import StoreUnavailable

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the database did not answer")

    monkeypatch.setattr(app.extensions["sipguard"].store, "create_handoff", down)
    assert _post(client, auth, _body()).status_code == 503
    assert len(rsps.calls) == 0


# -- refusals: 415, 400 and 422 naming the field -------------------------------------------------


def test_another_content_type_is_415(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/handoffs", data="call_uuid=x", headers=auth, content_type="text/plain"
    )
    assert response.status_code == 415 and response.mimetype == "application/json"


@pytest.mark.parametrize(
    "raw", [b"{", b"[1,", b"NaN", b'{"a": Infinity}', b"\xff\xfe", b"[" * 5000]
)
def test_malformed_json_is_400(client: FlaskClient, auth: dict[str, str], raw: bytes) -> None:
    response = client.post(
        "/api/v1/handoffs", data=raw, headers=auth, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["field"] == "body"


LONG = "x" * 121
REFUSALS = [
    # (body changes, status, field)
    ({"call_uuid": None}, 400, "call_uuid"),
    ({"call_uuid": 7}, 400, "call_uuid"),
    ({"call_uuid": ""}, 422, "call_uuid"),
    ({"call_uuid": "c" * 65}, 422, "call_uuid"),
    ({"call_uuid": "a\x00b"}, 422, "call_uuid"),
    ({"group": None}, 400, "group"),
    ({"group": ["support"]}, 400, "group"),
    ({"group": "sup\nport"}, 422, "group"),
    ({"summary": 3}, 400, "summary"),
    ({"summary": "x" * 2001}, 422, "summary"),
    ({"summary": "bell\x07"}, 422, "summary"),
    ({"summary": "   "}, 422, "summary"),
    ({"summary": "\ud800"}, 422, "summary"),
    ({"fields": []}, 400, "fields"),
    ({"fields": {"Ticket": 4417}}, 400, "fields.Ticket"),
    ({"fields": {f"K{i}": "v" for i in range(9)}}, 422, "fields"),
    ({"fields": {"X" * 25: "v"}}, 422, "fields"),
    ({"fields": {"Ticket": LONG}}, 422, "fields"),
    ({"fields": {"Tick-et": "v"}}, 422, "fields"),
    ({"fields": {"Ticket": "a b"}}, 422, "fields"),
    ({"fields": {"PlivoThing": "v"}}, 422, "fields"),
    ({"fields": {"ClientRegion": "v"}}, 422, "fields"),
    ({"whisper": "yes"}, 400, "whisper"),
    ({"whisper": True, "summary": None}, 422, "whisper"),
    ({"on_failure": 1}, 400, "on_failure"),
    ({"on_failure": "voicemail"}, 422, "on_failure"),
    ({"on_failure": "return"}, 422, "return_url"),
    ({"return_url": "http://ai.example.test/x"}, 422, "return_url"),
    ({"return_url": "wss://"}, 422, "return_url"),
    ({"return_url": "ftp://ai.example.test/x"}, 422, "return_url"),
    ({"return_url": "https://ai.example.test/\ud800"}, 422, "return_url"),
    ({"callback_url": "http://ai.example.test/hook"}, 422, "callback_url"),
    ({"callback_url": "not a url"}, 422, "callback_url"),
    ({"callback_url": False}, 400, "callback_url"),
    ({"priority": "high"}, 400, "priority"),
]


@pytest.mark.parametrize(("changes", "status", "field"), REFUSALS)
def test_every_refusal_names_its_field(
    client: FlaskClient,
    auth: dict[str, str],
    rsps: Any,
    changes: dict[str, Any],
    status: int,
    field: str,
) -> None:
    body = {key: value for key, value in _body(**changes).items() if value is not None}
    response = _post(client, auth, body)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["field"] == field
    assert SUMMARY not in response.get_data(as_text=True)
    assert len(rsps.calls) == 0


def test_not_an_object_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    response = _post(client, auth, ["call_uuid"])
    assert response.status_code == 400 and response.get_json()["field"] == "body"


def test_a_bad_idempotency_key_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    response = _post(client, auth, _body(), **{"Idempotency-Key": "k" * 256})
    assert response.status_code == 400 and response.get_json()["field"] == "Idempotency-Key"


def test_return_with_a_wss_url_and_loopback_callback_is_accepted(
    client: FlaskClient, auth: dict[str, str], rsps: Any
) -> None:
    _transferred(rsps)
    body = _body(
        on_failure="return",
        return_url="wss://ai.example.test/stream",
        callback_url="http://127.0.0.1:9/hook",
    )
    response = _post(client, auth, body)
    assert response.status_code == 202 and response.get_json()["on_failure"] == "return"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
KEYED = st.dictionaries(
    st.sampled_from(
        [
            "call_uuid",
            "group",
            "summary",
            "fields",
            "whisper",
            "on_failure",
            "return_url",
            "callback_url",
        ]
    ),
    JSON,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=JSON | KEYED)
def test_random_bodies_never_answer_5xx(
    client: FlaskClient, auth: dict[str, str], body: Any
) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, re.compile(re.escape(API) + "Call/.*"), status=404)
        response = _post(client, auth, body)
    assert response.status_code < 500 or response.status_code == 502, response.get_json()


# -- the /handoff route takes a handoff id only with its own call and group ----------------------


def _aleg_path(client: FlaskClient, auth: dict[str, str], rsps: Any) -> tuple[str, str]:
    _transferred(rsps)
    handoff = _post(client, auth, _body()).get_json()
    url = json.loads(rsps.calls[-1].request.body)["aleg_url"]
    return url.removeprefix(BASE_URL), handoff["id"]


def test_the_transfer_url_dials_the_group_for_its_call(
    client: FlaskClient, auth: dict[str, str], rsps: Any, signed_post: SignedPost
) -> None:
    path, _ = _aleg_path(client, auth, rsps)
    response = signed_post(path, inbound(CallUUID=CALL, CallStatus="in-progress"))
    assert response.status_code == 200 and b"<Dial" in response.data


def test_the_transfer_url_refuses_another_call_group_or_handoff(
    app: Flask, client: FlaskClient, auth: dict[str, str], rsps: Any, signed_post: SignedPost
) -> None:
    path, handoff_id = _aleg_path(client, auth, rsps)
    other_call = signed_post(path, inbound(CallUUID="another-call"))
    assert other_call.status_code == 403
    assert other_call.get_json() == {"error": "handoff token is for another call"}
    other_group = signed_post(
        path.replace("/handoff/support", "/handoff/oncall"), inbound(CallUUID=CALL)
    )
    assert other_group.get_json() == {"error": "handoff token is for another group"}
    swapped = signed_post(path.replace(handoff_id, "ho_" + "z" * 22), inbound(CallUUID=CALL))
    assert swapped.get_json() == {"error": "handoff token is for another handoff"}
    dropped = signed_post(path.split("&handoff=")[0], inbound(CallUUID=CALL))
    assert dropped.get_json() == {"error": "handoff token is for another handoff"}
    # A token minted for another handoff of this call does not take this one's id either.
    token = app.extensions["sipguard"].handoff.mint(CALL, "support", "ho_other")
    forged = signed_post(
        f"/handoff/support?token={token}&handoff={handoff_id}", inbound(CallUUID=CALL)
    )
    assert forged.status_code == 403


# -- the summary is personal data ----------------------------------------------------------------


def test_the_summary_is_in_no_log_line(
    app: Flask, client: FlaskClient, auth: dict[str, str], rsps: Any, app_logs: Any
) -> None:
    _transferred(rsps)
    ok = _post(client, auth, _body(), **{"Idempotency-Key": "k-9"})
    _post(client, auth, _body(), **{"Idempotency-Key": "k-9"})
    _post(client, auth, _body(summary=SUMMARY + "\x07"))
    _post(client, auth, _body(summary=SUMMARY, group="sales"))
    client.get(f"/api/v1/handoffs/{ok.get_json()['id']}", headers=auth)
    text = "\n".join(record.getMessage() for record in app_logs.records)
    assert "handoff=" in text
    assert "Canary-Summary" not in text
    assert "Canary-Summary" not in client.get("/metrics").get_data(as_text=True)


def test_a_long_unknown_key_is_cut_in_the_error(client: FlaskClient, auth: dict[str, str]) -> None:
    response = _post(client, auth, _body(**{"k" * 5000: 1}))
    assert response.status_code == 400 and response.get_json()["field"] == "k" * 40
