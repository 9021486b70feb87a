"""POST /hangup: the call's end, stored idempotently; 503 when it cannot be stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app import create_app
from sipguard.store import hangups
from tests.support.queries import stored_hangup
from tests.support.signing import SignedPost, inbound, make_signed_post


def _hangup_form(call_uuid: str, **fields: str) -> dict[str, str]:
    defaults = {
        "CallUUID": call_uuid,
        "CallStatus": "failed",
        "Direction": "inbound",
        "HangupCause": "sip_auth_failed",
        "HangupCauseName": "sip_auth_failed",
        "HangupCauseCode": "4210",
        "HangupSource": "Plivo",
        "Duration": "0",
        "BillDuration": "0",
        "SIPSourceIP": "198.51.100.23",
    }
    return inbound(**{**defaults, **fields})


@pytest.fixture
def db_app(app_config: dict[str, str], database_url: str):
    """The app on SQLite and on a real PostgreSQL."""
    app = create_app({**app_config, "DATABASE_URL": database_url})
    yield app
    app.extensions["sipguard"].store.dispose()


def test_hangup_is_stored_once_on_call_uuid(db_app) -> None:
    post = make_signed_post(db_app.test_client())
    first = post("/hangup", _hangup_form("h-1"))
    retry = post("/hangup", _hangup_form("h-1", Duration="99"))  # Plivo retries: a new nonce
    assert (first.status_code, retry.status_code) == (200, 200)
    assert first.data == b"<?xml version='1.0' encoding='UTF-8'?>\n<Response/>"
    row = stored_hangup(db_app.extensions["sipguard"].store, "h-1")
    assert row is not None
    assert row["duration"] == 0  # the first delivery wins
    assert row["auth_failure"] == "sip_auth_failed"
    assert row["hangup_cause_code"] == 4210
    assert row["sip_source_ip"] == "198.51.100.23"
    with db_app.extensions["sipguard"].store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(hangups)).scalar() == 1


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"HangupCauseName": "sip_auth_timeout", "HangupCauseCode": "4250"}, "sip_auth_timeout"),
        ({"HangupCauseName": "", "PlivoHangupCause": "sip_auth_failed"}, "sip_auth_failed"),
        ({"HangupCauseName": "Normal Hangup", "HangupCauseCode": "4000"}, None),
    ],
)
def test_auth_failure_cause_is_derived(signed_post: SignedPost, app, fields, expected) -> None:
    form = _hangup_form("h-2")
    form.update(fields)
    form.pop("HangupCause")
    assert signed_post("/hangup", form).status_code == 200
    row = stored_hangup(app.extensions["sipguard"].store, "h-2")
    assert row is not None
    assert row["auth_failure"] == expected


def test_garbled_numbers_are_stored_not_refused(signed_post: SignedPost, app) -> None:
    """A hangup is the only record of the call: keep it even if a number field is odd."""
    response = signed_post("/hangup", _hangup_form("h-3", Duration="12s"))
    assert response.status_code == 200
    row = stored_hangup(app.extensions["sipguard"].store, "h-3")
    assert row is not None
    assert row["duration"] is None


def test_hangup_answers_503_while_the_database_is_down_then_stores_the_retry(
    signed_post: SignedPost, app, break_database
) -> None:
    form = _hangup_form("h-4")
    with break_database(app):
        down = signed_post("/hangup", form, nonce="retry-nonce")
    assert down.status_code == 503
    assert down.get_json() == {"error": "cannot store the callback now; retry"}
    assert stored_hangup(app.extensions["sipguard"].store, "h-4") is None
    # Plivo retries; whether it reuses the nonce is not documented, so both must work.
    again = signed_post("/hangup", form, nonce="retry-nonce")
    assert again.status_code == 200
    row = stored_hangup(app.extensions["sipguard"].store, "h-4")
    assert row is not None
    assert row["call_status"] == "failed"


def test_healthz_reports_the_database_down(client, app, break_database) -> None:
    with break_database(app):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "unavailable"}


def test_malformed_call_uuid_is_a_clear_400(signed_post: SignedPost) -> None:
    response = signed_post("/hangup", _hangup_form("x" * 65))
    assert response.status_code == 400
    assert response.get_json() == {"error": "CallUUID: is not a call UUID"}
