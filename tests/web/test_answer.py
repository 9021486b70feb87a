"""POST /answer: route by the SIP-auth result Plivo attached, answer Plivo XML."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from lxml import etree

from sipguard.calls.routing import AUTH_NOT_RUNNING
from tests.support.config import BASE_URL, CANARIES, CAROL_PASSWORD
from tests.support.queries import stored_events
from tests.support.signing import SignedPost, inbound


def _xml(response) -> etree._Element:
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/xml"
    return etree.fromstring(response.data)


def _events(app) -> list[dict]:
    return stored_events(app.extensions["sipguard"].store)


def test_authenticated_pbx_call_dials_first_agent_with_digest_credentials(
    signed_post: SignedPost, app
) -> None:
    form = inbound(
        SIPAuthType="ip_acl_and_credential", SIPAuthUser="frontdesk", SIPSourceIP="203.0.113.7"
    )
    response = signed_post("/answer", form)
    root = _xml(response)
    assert root.xpath("count(/Response/Dial)") == 1
    dial = root.find("Dial")
    assert dial.get("action") == f"{BASE_URL}/dial-action?group=support&attempt=0"
    assert dial.get("method") == "POST"
    assert dial.get("timeout") == "15"
    assert dial.get("callerId") == "+14155550100"
    users = root.xpath("/Response/Dial/User")
    assert [u.text for u in users] == ["sip:alice@pbx.example.test"]
    assert users[0].get("sipAuthUsername") == "alice"
    assert users[0].get("sipAuthPassword") == CANARIES["AGENT_ALICE_PASSWORD"]
    assert users[0].get("sipHeaders") == "Team=support"
    assert response.headers["Cache-Control"] == "no-store"
    [event] = _events(app)
    assert event["route"] == "answer"
    assert event["decision"] == "dial:support"
    assert event["rule"] == "pbx-both"
    assert event["call_uuid"] == form["CallUUID"]
    assert event["sip_auth_type"] == "ip_acl_and_credential"
    assert event["sip_auth_user"] == "frontdesk"
    assert event["sip_source_ip"] == "203.0.113.7"


def test_ipv6_source_in_the_acl_range_matches(signed_post: SignedPost) -> None:
    form = inbound(
        SIPAuthType="ip_acl_and_credential", SIPAuthUser="frontdesk", SIPSourceIP="2001:db8:100::5"
    )
    root = _xml(signed_post("/answer", form))
    assert root.xpath("string(/Response/Dial/User)") == "sip:alice@pbx.example.test"


def test_source_outside_the_rule_cidr_falls_through_to_the_next_rule(
    signed_post: SignedPost,
) -> None:
    form = inbound(
        SIPAuthType="ip_acl_and_credential", SIPAuthUser="frontdesk", SIPSourceIP="198.51.100.1"
    )
    root = _xml(signed_post("/answer", form))
    assert root.xpath("count(/Response/Dial)") == 0
    assert root.xpath("string(/Response/Redirect)").startswith("https://ai.example.test/")


def test_credential_user_rule_dials_a_simultaneous_group(signed_post: SignedPost) -> None:
    root = _xml(signed_post("/answer", inbound(SIPAuthType="credential", SIPAuthUser="night")))
    users = root.xpath("/Response/Dial/User")
    assert [u.text for u in users] == [
        "sips:carol@cc.example.test",
        "sip:dave@ipauth.example.test",
        "sip:erin@cc.example.test",
    ]
    assert users[0].get("sipAuthPassword") == CAROL_PASSWORD  # from password_file
    assert users[1].get("sipAuthUsername") is None  # dave's PBX uses IP auth
    assert users[1].get("sipAuthPassword") is None
    assert users[2].get("sipAuthPassword") == CANARIES["AGENT_ERIN_PASSWORD"]


def test_ai_redirect_carries_a_call_bound_handoff_url(signed_post: SignedPost, app) -> None:
    form = inbound(SIPAuthType="ip_acl", SIPSourceIP="192.0.2.1")
    root = _xml(signed_post("/answer", form))
    target = root.xpath("string(/Response/Redirect)")
    assert root.find("Redirect").get("method") == "POST"
    parts = urlsplit(target)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "ai.example.test", "/plivo/answer")
    query = parse_qs(parts.query)
    assert query["tenant"] == ["acme"]  # the configured URL's own query is kept
    handoff = urlsplit(query["handoff_url"][0])
    assert f"{handoff.scheme}://{handoff.netloc}{handoff.path}" == f"{BASE_URL}/handoff/support"
    assert "token" in parse_qs(handoff.query)
    [event] = _events(app)
    assert event["decision"] == "redirect:handoff=support"
    assert "token" not in (event["reason"] or "")


def test_unauthenticated_sip_call_is_rejected_and_explained(
    signed_post: SignedPost, app, app_logs
) -> None:
    form = inbound()  # a SIP From, no SIPAuthType
    root = _xml(signed_post("/answer", form))
    assert etree.tostring(root) == b'<Response><Hangup reason="rejected"/></Response>'
    warnings = [r.getMessage() for r in app_logs.records if r.levelname == "WARNING"]
    assert any(AUTH_NOT_RUNNING in w and form["CallUUID"] in w for w in warnings)
    [event] = _events(app)
    assert (event["decision"], event["rule"]) == ("reject", "unauthenticated-sip")


def test_rule_may_take_unauthenticated_sip_calls_on_purpose(signed_post: SignedPost) -> None:
    form = inbound(From="sip:trunk@legacy.example.net")
    root = _xml(signed_post("/answer", form))
    assert root.xpath("string(/Response/Speak)").startswith("This trunk is being retired")
    assert root.xpath("count(/Response/Hangup)") == 1


def test_phone_call_is_not_treated_as_unauthenticated_sip(signed_post: SignedPost) -> None:
    form = inbound(From="+14155550123", To="+14155550100")
    root = _xml(signed_post("/answer", form))
    assert root.xpath("count(/Response/Redirect)") == 1


def test_answer_without_credentials_is_cacheable_as_usual(signed_post: SignedPost) -> None:
    response = signed_post("/answer", inbound())
    assert "no-store" not in response.headers.get("Cache-Control", "")


def test_missing_call_uuid_is_a_clear_400(signed_post: SignedPost, app) -> None:
    form = inbound(SIPAuthType="ip_acl")
    del form["CallUUID"]
    response = signed_post("/answer", form)
    assert response.status_code == 400
    assert response.get_json() == {"error": "CallUUID: is required"}
    assert _events(app) == []


def test_answer_still_answers_when_the_database_is_down(
    signed_post: SignedPost, app, app_logs, break_database
) -> None:
    form = inbound(SIPAuthType="ip_acl_and_credential", SIPAuthUser="frontdesk")
    form["SIPSourceIP"] = "203.0.113.7"
    with break_database(app):
        response = signed_post("/answer", form)
    assert response.status_code == 200
    assert b"<Dial" in response.data
    errors = [r.getMessage() for r in app_logs.records if r.levelname == "ERROR"]
    assert any("not recorded" in e and form["CallUUID"] in e for e in errors)


def test_one_log_line_per_callback_without_numbers(signed_post: SignedPost, app_logs) -> None:
    form = inbound(SIPAuthType="ip_acl", From="+14155550199", To="+14155550100")
    signed_post("/answer", form)
    lines = [r.getMessage() for r in app_logs.records if r.getMessage().startswith("callback")]
    assert lines == [
        f"callback route=answer call={form['CallUUID']} decision=redirect:handoff=support "
        "reason=rule ai-first status=200"
    ]
    assert "+14155550199" not in app_logs.text
    assert "+14155550100" not in app_logs.text


def test_unknown_sip_auth_type_is_not_trusted_by_default_rules(
    signed_post: SignedPost, app
) -> None:
    """A type Plivo might add later must be named in the config before it routes anywhere."""
    root = _xml(signed_post("/answer", inbound(SIPAuthType="token_of_the_future")))
    assert etree.tostring(root) == b'<Response><Hangup reason="rejected"/></Response>'
    [event] = _events(app)
    assert (event["rule"], event["reason"]) == (
        "unauthenticated-sip",
        "SIP call with an unknown SIPAuthType",
    )
