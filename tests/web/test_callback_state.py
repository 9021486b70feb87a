"""The per-request callback state: one typed object per webhook request, none for the others."""

from __future__ import annotations

from flask import Flask, Response
from flask.testing import FlaskClient

from tests.support.signing import SignedPost, inbound
from webhooks.state import CallbackState, callback_state


def _record_states(app: Flask) -> list[CallbackState | None]:
    """Keep each request's state as the app's own after_request (run after the commit) sees it."""
    seen: list[CallbackState | None] = []

    def keep(response: Response) -> Response:
        seen.append(callback_state())
        return response

    app.after_request(keep)
    return seen


def test_a_routed_call_fills_its_state(app: Flask, signed_post: SignedPost) -> None:
    seen = _record_states(app)
    form = inbound(SIPAuthType="ip_acl")
    assert signed_post("/answer", form).status_code == 200
    (state,) = seen
    assert state is not None
    assert (state.route, state.call_uuid, state.rejection) == ("answer", form["CallUUID"], None)
    assert state.verified is not None and state.verified.scheme == "v3"
    assert [event.call_uuid for event in state.events] == [form["CallUUID"]]
    assert state.outcome[0] == state.events[0].decision
    assert state.hangup is None


def test_a_hangup_fills_its_state(app: Flask, signed_post: SignedPost) -> None:
    seen = _record_states(app)
    form = inbound(HangupCause="NORMAL_CLEARING")
    assert signed_post("/hangup", form).status_code == 200
    (state,) = seen
    assert state is not None and state.hangup is not None
    assert (state.route, state.call_uuid, state.events) == ("hangup", form["CallUUID"], [])
    assert state.outcome == ("stored", "-")


def test_a_refused_signature_is_the_states_rejection(app: Flask, client: FlaskClient) -> None:
    seen = _record_states(app)
    assert client.post("/hangup", data=inbound()).status_code == 403
    (state,) = seen
    assert state is not None and state.verified is None
    assert state.outcome == ("refused", "no Plivo signature header")
    assert state.rejection == "no Plivo signature header"


def test_requests_outside_the_webhooks_keep_no_state(app: Flask, client: FlaskClient) -> None:
    seen = _record_states(app)
    assert client.get("/healthz").status_code == 200
    assert client.get("/no-such-page").status_code == 404
    assert client.get("/metrics").status_code == 404  # METRICS_TOKEN unset: Disabled
    assert seen == [None, None, None]
