"""POST /dial-action: next agent on failure, fallback when none is left, auth failures named."""

from __future__ import annotations

import pytest
from lxml import etree

from tests.support.config import BASE_URL
from tests.support.queries import stored_events
from tests.support.signing import SignedPost, inbound


def _action(signed_post: SignedPost, group: str, attempt: int | str, **form: str):
    fields = inbound(CallUUID="a-leg-1", CallStatus="in-progress", DialALegUUID="a-leg-1", **form)
    return signed_post(f"/dial-action?group={group}&attempt={attempt}", fields)


def _xml(response) -> etree._Element:
    assert response.status_code == 200, response.data
    return etree.fromstring(response.data)


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        ("failed", "sip_auth_failed"),
        ("failed", "4240"),
        ("timeout", "sip_auth_timeout"),
        ("busy", "USER_BUSY"),
        ("no-answer", "NO_ANSWER"),
        ("timeout", "NO_ANSWER"),
        ("failed", "CALL_REJECTED"),
    ],
)
def test_sequential_group_moves_to_the_next_agent(
    signed_post: SignedPost, status: str, cause: str
) -> None:
    root = _xml(_action(signed_post, "support", 0, DialStatus=status, DialHangupCause=cause))
    users = root.xpath("/Response/Dial/User")
    assert [u.text for u in users] == ["sip:bob@pbx.example.test"]
    assert users[0].get("sipAuthUsername") == "bob"
    assert root.find("Dial").get("action") == f"{BASE_URL}/dial-action?group=support&attempt=1"


def test_last_agent_failing_runs_the_voicemail_fallback(signed_post: SignedPost, app) -> None:
    response = _action(
        signed_post, "support", 1, DialStatus="no-answer", DialHangupCause="NO_ANSWER"
    )
    root = _xml(response)
    assert [child.tag for child in root] == ["Speak", "Record", "Hangup"]
    assert root.findtext("Speak") == "Please leave a message."
    record = root.find("Record")
    assert (record.get("maxLength"), record.get("playBeep")) == ("90", "true")
    assert "no-store" not in response.headers.get("Cache-Control", "")
    [event] = stored_events(app.extensions["sipguard"].store)
    assert (event["decision"], event["attempt"], event["dial_status"]) == (
        "fallback:voicemail",
        1,
        "no-answer",
    )


def test_simultaneous_group_failure_redirects(signed_post: SignedPost) -> None:
    root = _xml(_action(signed_post, "oncall", 0, DialStatus="timeout"))
    assert etree.tostring(root) == (
        b'<Response><Redirect method="POST">https://ai.example.test/plivo/after-hours'
        b"</Redirect></Response>"
    )


def test_hangup_fallback_speaks_then_hangs_up(signed_post: SignedPost) -> None:
    root = _xml(_action(signed_post, "solo", 0, DialStatus="busy"))
    assert [child.tag for child in root] == ["Speak", "Hangup"]


@pytest.mark.parametrize("status", ["completed", "cancel"])
def test_answered_or_abandoned_call_ends(signed_post: SignedPost, status: str) -> None:
    root = _xml(_action(signed_post, "support", 0, DialStatus=status, DialBLegUUID="b-leg-1"))
    assert etree.tostring(root) == b"<Response/>"


def test_auth_failures_are_logged_distinctly(signed_post: SignedPost, app, app_logs) -> None:
    _action(signed_post, "support", 0, DialStatus="failed", DialHangupCause="sip_auth_failed")
    _action(signed_post, "support", 0, DialStatus="timeout", DialHangupCause="4250")
    warnings = [r.getMessage() for r in app_logs.records if r.levelname == "WARNING"]
    rejected = [w for w in warnings if "rejected our SIP credentials" in w]
    silent = [w for w in warnings if "never answered the digest challenge" in w]
    assert len(rejected) == 1 and "4240" in rejected[0] and "agent=alice" in rejected[0]
    assert len(silent) == 1 and "4250" in silent[0]
    causes = [e["auth_failure"] for e in stored_events(app.extensions["sipguard"].store)]
    assert causes == ["sip_auth_failed", "sip_auth_timeout"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("group=nobody&attempt=0", "group: is not a configured agent group"),
        ("attempt=0", "group: is not a configured agent group"),
        ("group=support&attempt=2", "attempt: must be 0-1 for this group"),
        ("group=support&attempt=-1", "attempt: must be 0-1 for this group"),
        ("group=support", "attempt: must be 0-1 for this group"),
        ("group=oncall&attempt=1", "attempt: must be 0-0 for this group"),
    ],
)
def test_bad_action_url_is_a_clear_400(signed_post: SignedPost, query: str, message: str) -> None:
    response = signed_post(f"/dial-action?{query}", inbound(DialStatus="failed"))
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


def test_dial_action_query_is_covered_by_the_signature(signed_post: SignedPost) -> None:
    """Moving `attempt` forward after signing (to skip agents) breaks the signature."""
    response = signed_post(
        "/dial-action?group=support&attempt=1",
        inbound(DialStatus="failed"),
        url=BASE_URL + "/dial-action?group=support&attempt=0",
    )
    assert response.status_code == 403
