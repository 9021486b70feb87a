"""The sandbox's calls: XML execution, agent dial legs with digest, Dial action, hangups,
Make Call and Transfer, signed callbacks and a timeline that never shows a credential."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote_plus, urlsplit

import pytest
from flask import Flask

from sandbox import digest
from sandbox.call import Call
from sandbox.callbacks import HttpAnswer
from sandbox.config import SIP_TIMER_B, Endpoint, EndpointAuth, SandboxConfig
from sandbox.engine import Sandbox
from sipguard.calls import signature
from sipguard.errors import SignatureError, ValidationError
from sipguard.plivo.outbound import Outbound
from tests.support.config import ALL_CANARIES, BASE_URL, CANARIES, MAIN_TOKEN, TOKEN
from tests.support.queries import stored_events, stored_hangup
from tests.support.sandbox import (
    APP_ID,
    CALLER_PASSWORD,
    SANDBOX_ENV,
    URI,
    World,
    load_config,
    make_world,
    new_sandbox,
)
from webhooks.context import external_url

ALICE = "sip:alice@pbx.example.test"
BOB = "sip:bob@pbx.example.test"
CAROL = "sips:carol@cc.example.test"
DAVE = "sip:dave@ipauth.example.test"
ERIN = "sip:erin@cc.example.test"
TRUNK = "sip:trunk@slow.example.test"
BUSY_NUMBER = "+14155550123"
FRONTDESK_IP = "203.0.113.10"
NIGHT_IP = "198.51.100.7"
WRONG_PASSWORD = "Not-The-Bob-Pw-42x"
ROTATED_ALICE = "Rotated-Alice-Pw-7q7q"
XML_HOST = "xml.example.test"
XML = f"https://{XML_HOST}"
# Everything that must never show in a timeline or a callback.
SECRETS = (*ALL_CANARIES, *SANDBOX_ENV.values(), CALLER_PASSWORD, WRONG_PASSWORD, ROTATED_ALICE)
Sent = list[tuple[str, str, dict[str, str], bytes | None]]


# -- helpers ------------------------------------------------------------------------------------


def forms(sent: Sent, path: str) -> list[dict[str, str]]:
    """The forms the sandbox POSTed to `path` (any host), in order."""
    return [
        dict(parse_qsl((body or b"").decode(), keep_blank_values=True))
        for _, url, _, body in sent
        if urlsplit(url).path == path
    ]


def legs(call: Call) -> dict[str, dict[str, Any]]:
    """The call's leg events by address (the last one for an address dialled twice)."""
    return {
        e.data["address"]: {**e.data, "t": e.offset, "text": e.text}
        for e in call.events
        if e.kind == "leg"
    }


def kinds(call: Call) -> list[str]:
    return [e.kind for e in call.events]


def assert_no_leaks(sandbox: Sandbox, sent: Sent, *extra: str) -> None:
    """No password, digest or XML credential attribute in any timeline or callback."""
    assert sandbox.calls
    for call in sandbox.calls.values():
        shown = json.dumps(call.summary()) + call.text() + repr(call)
        for secret in (*SECRETS, *extra):
            assert secret not in shown
        for marker in ('sipAuthPassword="', 'sipAuthUsername="', "Digest username", 'response="'):
            assert marker not in shown
    for _, url, headers, body in sent:
        raw = (body or b"").decode()
        wire = " ".join((unquote_plus(url), json.dumps(headers), raw, unquote_plus(raw)))
        for secret in (*SECRETS, *extra):
            assert secret not in wire
        assert not {"authorization", "proxy-authorization"} & {h.lower() for h in headers}


def with_endpoints(config: SandboxConfig, *changed: Endpoint) -> SandboxConfig:
    return replace(config, endpoints={**config.endpoints, **{e.address: e for e in changed}})


def pbx_auth(username: str, password: str, **kwargs: Any) -> EndpointAuth:
    """A pbx.example.test-style challenge that accepts `username`/`password`."""
    realm = kwargs.pop("realm", "pbx.example.test")
    algorithm = kwargs.get("algorithm", "MD5")
    return EndpointAuth(realm, username, digest.ha1(username, realm, password, algorithm), **kwargs)


def pbx_both(world: World) -> Call:
    """Rule pbx-both: ip_acl_and_credential from 203.0.113.x as frontdesk → group support."""
    world.protect("ip_acl_and_credential", allow=("203.0.113.0/24",))
    result = world.call(FRONTDESK_IP, username="frontdesk", password=CALLER_PASSWORD)
    assert result.status == 200
    return world.sandbox.calls[result.call_uuid]


def night_desk(world: World) -> Call:
    """Rule night-desk: credential as night → group oncall (simultaneous)."""
    world.protect("credential", username="night")
    result = world.call(NIGHT_IP, username="night", password=CALLER_PASSWORD)
    assert result.status == 200
    return world.sandbox.calls[result.call_uuid]


def ai_first(world: World) -> Call:
    """Rule ai-first: any other authenticated call goes to the AI agent and waits there."""
    world.protect("credential", username="visitor")
    result = world.call(NIGHT_IP, username="visitor", password=CALLER_PASSWORD)
    assert result.status == 200
    call = world.sandbox.calls[result.call_uuid]
    assert call.state == "parked"
    return call


def handoff_url(app: Flask, call_uuid: str, group: str = "support") -> tuple[str, str]:
    token = app.extensions["sipguard"].handoff.mint(call_uuid, group)
    return f"{BASE_URL}/handoff/{group}?token={token}", token


class Scripted:
    """A stand-in application server on XML_HOST: fixed XML per path, every request recorded."""

    def __init__(self, pages: Mapping[str, str | bytes]) -> None:
        self.pages = dict(pages)
        self.sent: Sent = []
        self.during: Callable[[str], None] | None = None

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpAnswer:
        self.sent.append((method, url, dict(headers), body))
        parts = urlsplit(url)
        if parts.netloc != XML_HOST:
            raise ConnectionError(f"{parts.netloc} is unreachable")
        if self.during is not None:
            self.during(parts.path)
        page = self.pages.get(parts.path, "<Response/>")
        content = page.encode() if isinstance(page, str) else page
        return HttpAnswer(200, "application/xml", content)


def scripted(
    pages: Mapping[str, str | bytes], config: SandboxConfig | None = None
) -> tuple[Sandbox, Scripted]:
    """A sandbox whose application answers from `pages` (no SIP auth on the app)."""
    http = Scripted(pages)
    sandbox = new_sandbox(http, config or load_config(CANARIES))
    sandbox.account.update_application(
        APP_ID, {"answer_url": f"{XML}/answer", "hangup_url": f"{XML}/hangup"}
    )
    return sandbox, http


def call_scripted(sandbox: Sandbox) -> Call:
    from sandbox.client import call_in

    result = call_in(sandbox, "192.0.2.10", URI)
    assert result.status == 200 and result.call_uuid is not None
    return sandbox.calls[result.call_uuid]


def dial_xml(*users: str, timeout: int | None = None) -> str:
    attrs = f' timeout="{timeout}"' if timeout else ""
    return f'<Response><Dial action="{XML}/action"{attrs}>{"".join(users)}</Dial></Response>'


def user(address: str, username: str | None = None, password: str | None = None) -> str:
    creds = (
        f' sipAuthUsername="{username}" sipAuthPassword="{password}"'
        if username is not None
        else ""
    )
    return f"<User{creds}>{address}</User>"


def hangup_form(sent: Sent) -> dict[str, str]:
    [form] = forms(sent, "/hangup")
    return form


def stamp(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")


# -- 1. agent digest ----------------------------------------------------------------------------


def test_alice_407_accepts_the_apps_xml_credentials(world: World) -> None:
    """Outbound auth (Dial XML): Plivo answers a 407 with the <User>'s credentials → answered."""
    call = pbx_both(world)
    alice = legs(call)[ALICE]
    assert alice["outcome"] == "answered"
    assert "challenged with 407 (realm pbx.example.test)" in alice["text"]
    assert "the PBX accepted the credentials" in alice["text"]
    [action] = forms(world.http.sent, "/dial-action")
    assert (action["DialStatus"], action["DialBLegUUID"]) == ("completed", alice["leg_uuid"])
    assert_no_leaks(world.sandbox, world.http.sent)


def test_bob_401_accepts_the_apps_xml_credentials(app: Flask) -> None:
    """Outbound auth (Dial XML): a 401 (WWW-Authenticate) challenge is answered the same way."""
    config = with_endpoints(load_config(CANARIES), Endpoint(ALICE, answer="busy"))
    world = make_world(app, CANARIES, config=config)
    call = pbx_both(world)
    bob = legs(call)[BOB]
    assert bob["outcome"] == "answered"
    assert "challenged with 401 (realm pbx.example.test)" in bob["text"]
    assert "the PBX accepted the credentials" in bob["text"]
    assert_no_leaks(world.sandbox, world.http.sent)


def test_carol_sha256_pbx_accepts(app: Flask) -> None:
    """Outbound auth (Dial XML): an RFC 7616 SHA-256 challenge is answered and accepted."""
    config = with_endpoints(load_config(CANARIES), Endpoint(DAVE, answer="no_answer"))
    world = make_world(app, CANARIES, config=config)
    call = night_desk(world)
    carol = legs(call)[CAROL]
    assert carol["outcome"] == "answered"
    assert "the PBX accepted the credentials" in carol["text"]
    [action] = forms(world.http.sent, "/dial-action")
    assert (action["DialStatus"], action["DialBLegUUID"]) == ("completed", carol["leg_uuid"])
    assert_no_leaks(world.sandbox, world.http.sent)


def test_erin_pbx_with_another_password_fails_4240() -> None:
    """Outbound auth: credentials the provider rejects → sip_auth_failed 4240, DialStatus=failed."""
    erin = user(ERIN, "erin", CANARIES["AGENT_ERIN_PASSWORD"])
    sandbox, http = scripted({"/answer": dial_xml(erin)})
    call = call_scripted(sandbox)
    leg = legs(call)[ERIN]
    assert (leg["outcome"], leg["cause"], leg["code"]) == ("failed", "sip_auth_failed", 4240)
    [action] = forms(http.sent, "/action")
    assert (action["DialStatus"], action["DialHangupCause"]) == ("failed", "sip_auth_failed")
    assert action["DialBLegUUID"] == ""
    assert_no_leaks(sandbox, http.sent)


def test_reply_timeout_endpoint_gives_sip_auth_timeout_4250(app: Flask) -> None:
    """Outbound auth: the provider never answers the authenticated INVITE → 4250, timeout."""
    slow_alice = Endpoint(
        ALICE, auth=pbx_auth("alice", CANARIES["AGENT_ALICE_PASSWORD"], reply="timeout")
    )
    world = make_world(app, CANARIES, config=with_endpoints(load_config(CANARIES), slow_alice))
    call = pbx_both(world)
    leg = legs(call)[ALICE]
    assert (leg["outcome"], leg["cause"], leg["code"]) == ("timeout", "sip_auth_timeout", 4250)
    assert leg["t"] >= SIP_TIMER_B
    first = forms(world.http.sent, "/dial-action")[0]
    assert (first["DialStatus"], first["DialHangupCause"]) == ("timeout", "sip_auth_timeout")
    row = stored_events(app.extensions["sipguard"].store, call.uuid)[1]
    assert (row["route"], row["attempt"], row["auth_failure"]) == (
        "dial_action",
        0,
        "sip_auth_timeout",
    )
    assert_no_leaks(world.sandbox, world.http.sent)


def test_user_without_credentials_against_a_challenge_fails_4240() -> None:
    """Outbound auth, where Plivo's pages are silent (docs/plivo.md, Where Plivo is silent): no
    credentials to answer a 401/407 → the leg fails 4240."""
    sandbox, http = scripted({"/answer": dial_xml(user(ALICE))})
    call = call_scripted(sandbox)
    leg = legs(call)[ALICE]
    assert (leg["outcome"], leg["code"]) == ("failed", 4240)
    [action] = forms(http.sent, "/action")
    assert (action["DialStatus"], action["DialHangupCause"]) == ("failed", "sip_auth_failed")
    assert_no_leaks(sandbox, http.sent)


def test_dave_without_auth_answers_without_a_challenge() -> None:
    """Provider using IP auth: no credentials needed, no challenge, the leg is answered."""
    sandbox, http = scripted({"/answer": dial_xml(user(DAVE))})
    call = call_scripted(sandbox)
    leg = legs(call)[DAVE]
    assert leg["outcome"] == "answered"
    assert "challenged" not in leg["text"]
    [action] = forms(http.sent, "/action")
    assert (action["DialStatus"], action["DialBLegUUID"]) == ("completed", leg["leg_uuid"])
    assert_no_leaks(sandbox, http.sent)


def test_wrong_xml_password_is_rejected_by_a_pbx_that_accepts_the_right_one() -> None:
    """Outbound auth: the digest really depends on sipAuthPassword (wrong one → 4240)."""
    good = user(BOB, "bob", CANARIES["AGENT_BOB_PASSWORD"])
    bad = user(BOB, "bob", WRONG_PASSWORD)
    outcomes = []
    for xml in (dial_xml(good), dial_xml(bad)):
        sandbox, http = scripted({"/answer": xml})
        outcomes.append(legs(call_scripted(sandbox))[BOB]["outcome"])
        assert_no_leaks(sandbox, http.sent)
    assert outcomes == ["answered", "failed"]


# -- 2. sequential group ------------------------------------------------------------------------


def _alice_rejects(app: Flask) -> World:
    """A world where alice's PBX holds another password than the app's canary."""
    config = load_config({**CANARIES, "AGENT_ALICE_PASSWORD": ROTATED_ALICE})
    return make_world(app, CANARIES, config=config)


def test_sequential_alice_fails_then_bob_answers(app: Flask) -> None:
    """Dial action: failed/sip_auth_failed moves on; bob's answer → completed, hangup 4010."""
    world = _alice_rejects(app)
    call = pbx_both(world)
    first, second = forms(world.http.sent, "/dial-action")
    assert (first["DialStatus"], first["DialHangupCause"]) == ("failed", "sip_auth_failed")
    assert first["DialBLegUUID"] == ""
    bob = legs(call)[BOB]
    assert second["DialStatus"] == "completed"
    assert second["DialALegUUID"] == second["CallUUID"] == call.uuid
    assert second["DialBLegUUID"] == bob["leg_uuid"] != ""
    urls = [urlsplit(url).query for _, url, _, _ in world.http.sent if "dial-action" in url]
    assert urls == ["group=support&attempt=0", "group=support&attempt=1"]
    hangup = hangup_form(world.http.sent)
    assert (hangup["HangupCauseName"], hangup["HangupCauseCode"], hangup["CallStatus"]) == (
        "End Of XML Instructions",
        "4010",
        "completed",
    )
    rows = stored_events(app.extensions["sipguard"].store, call.uuid)
    assert [r["decision"] for r in rows] == ["dial:support", "dial:support:1", "completed"]
    assert_no_leaks(world.sandbox, world.http.sent)


def test_sequential_both_failing_runs_voicemail_then_hangup(app: Flask) -> None:
    """Dial action: the last agent failing runs the group's voicemail fallback (Speak, Record)."""
    base = load_config({**CANARIES, "AGENT_ALICE_PASSWORD": ROTATED_ALICE})
    world = make_world(app, CANARIES, config=with_endpoints(base, Endpoint(BOB, answer="busy")))
    call = pbx_both(world)
    statuses = [f["DialStatus"] for f in forms(world.http.sent, "/dial-action")]
    assert statuses == ["failed", "busy"]
    assert kinds(call)[-5:] == ["xml", "speak", "record", "hangup", "callback"]
    assert "recorded a 5 s message" in call.events[-3].text
    hangup = hangup_form(world.http.sent)
    assert (hangup["HangupSource"], hangup["HangupCauseCode"]) == ("Answer XML", "4000")
    assert_no_leaks(world.sandbox, world.http.sent)


@pytest.mark.parametrize(
    ("alice", "status", "cause"),
    [
        (Endpoint(ALICE, answer="busy"), "busy", "Busy Line"),
        (Endpoint(ALICE, answer_after=20), "no-answer", "No Answer"),  # the Dial timeout is 15
        (Endpoint(ALICE, answer="no_answer"), "no-answer", "No Answer"),
    ],
)
def test_busy_and_no_answer_legs_report_their_dial_status(
    app: Flask, alice: Endpoint, status: str, cause: str
) -> None:
    """Dial action: DialStatus is busy / no-answer for a busy or unanswered agent."""
    world = make_world(app, CANARIES, config=with_endpoints(load_config(CANARIES), alice))
    call = pbx_both(world)
    first = forms(world.http.sent, "/dial-action")[0]
    assert (first["DialStatus"], first["DialHangupCause"]) == (status, cause)
    leg = legs(call)[ALICE]
    if status == "busy":
        assert leg["code"] == 3010
    else:
        assert 15.0 <= leg["t"] < 16.0  # rang exactly the Dial's timeout
    assert_no_leaks(world.sandbox, world.http.sent)


# -- 3. simultaneous dial -----------------------------------------------------------------------


def test_simultaneous_first_to_answer_wins(world: World) -> None:
    """Simultaneous dial: dave (1 s) beats carol (6 s); carol's leg is cancelled."""
    call = night_desk(world)
    found = legs(call)
    assert found[DAVE]["outcome"] == "answered"
    assert (found[CAROL]["outcome"], found[CAROL]["code"]) == ("cancelled", 1000)
    assert found[CAROL]["t"] == found[DAVE]["t"]
    assert found[ERIN]["code"] == 4240
    [action] = forms(world.http.sent, "/dial-action")
    assert action["DialStatus"] == "completed"
    assert action["DialALegUUID"] == call.uuid
    assert action["DialBLegUUID"] == found[DAVE]["leg_uuid"]
    assert_no_leaks(world.sandbox, world.http.sent)


def test_simultaneous_all_failing_reports_the_last_leg_then_parks_at_the_ai(app: Flask) -> None:
    """Simultaneous dial, where Plivo's pages are silent (docs/plivo.md, Where Plivo is silent): all
    fail → the last leg's status; fallback → the AI."""
    config = with_endpoints(
        load_config(CANARIES),
        Endpoint(CAROL, answer="busy"),
        Endpoint(DAVE, answer="no_answer"),  # rings the oncall timeout (25 s): the last to end
    )
    world = make_world(app, CANARIES, config=config)
    call = night_desk(world)
    found = legs(call)
    assert [found[a]["outcome"] for a in (CAROL, DAVE, ERIN)] == ["busy", "no-answer", "failed"]
    [action] = forms(world.http.sent, "/dial-action")
    assert (action["DialStatus"], action["DialHangupCause"]) == ("no-answer", "No Answer")
    assert action["DialBLegUUID"] == ""
    assert call.state == "parked"
    ai = [e for e in call.events if e.kind == "ai"][-1]
    assert ai.data["url"] == "https://ai.example.test/plivo/after-hours"
    assert forms(world.http.sent, "/hangup") == []
    assert_no_leaks(world.sandbox, world.http.sent)


# -- 4. signed callbacks ------------------------------------------------------------------------


def _signed(sent: Sent, path: str) -> tuple[str, str, dict[str, str], dict[str, list[str]]]:
    [(method, url, headers, body)] = [s for s in sent if urlsplit(s[1]).path == path]
    return method, url, headers, parse_qs((body or b"").decode(), keep_blank_values=True)


@pytest.mark.parametrize("path", ["/dial-action", "/hangup"])
def test_dial_action_and_hangup_callbacks_are_signed(world: World, path: str) -> None:
    """Signature Validation: V3 and Ma-V3 over the exact URL and form the sandbox sent."""
    pbx_both(world)
    method, url, headers, params = _signed(world.http.sent, path)
    assert signature.Keyring([TOKEN]).verify(headers, method, url, params).scheme == "v3"
    main_only = signature.Keyring(["some-other-token"], [MAIN_TOKEN])
    assert main_only.verify(headers, method, url, params).scheme == "ma-v3"
    tampered = {**params, "CallStatus": ["busy"]}
    with pytest.raises(SignatureError):
        signature.Keyring([TOKEN]).verify(headers, method, url, tampered)
    with pytest.raises(SignatureError):
        signature.Keyring([TOKEN]).verify(headers, method, url + "&x=1", params)


def test_dial_action_and_hangup_carry_their_fields(world: World) -> None:
    """Dial action and hangup callback fields; Duration is the simulated time since answer."""
    call = pbx_both(world)
    [action] = forms(world.http.sent, "/dial-action")
    for key in ("DialStatus", "DialHangupCause", "DialALegUUID", "DialBLegUUID"):
        assert action[key]
    hangup = hangup_form(world.http.sent)
    for key in ("CallUUID", "CallStatus", "HangupCauseName", "HangupCauseCode", "HangupSource"):
        assert hangup[key]
    assert hangup["CallUUID"] == call.uuid
    # alice answers after 3 s (+0.1 s of SIP signalling) and talks 30 s.
    assert hangup["Duration"] == hangup["BillDuration"] == "33"
    talked = stamp(hangup["EndTime"]) - stamp(hangup["AnswerTime"])
    assert int(hangup["Duration"]) == int(talked.total_seconds())
    stored = stored_hangup(world.app.extensions["sipguard"].store, call.uuid)
    assert stored is not None
    assert (stored["duration"], stored["hangup_cause_code"]) == (33, 4010)


# -- 5. other verbs and errors ------------------------------------------------------------------


def test_hangup_reason_rejected_is_3020() -> None:
    """<Hangup reason="rejected"> is 3020 Rejected by Answer XML (docs/plivo.md, XML)."""
    sandbox, http = scripted({"/answer": '<Response><Hangup reason="rejected"/></Response>'})
    call_scripted(sandbox)
    hangup = hangup_form(http.sent)
    assert (hangup["HangupCauseCode"], hangup["HangupCauseName"]) == ("3020", "Rejected")
    assert (hangup["HangupSource"], hangup["CallStatus"]) == ("Answer XML", "failed")


@pytest.mark.parametrize(
    ("xml", "status", "code"),
    [
        ('<Response><Hangup reason="busy"/></Response>', "busy", "3010"),
        ("<Response><Hangup/></Response>", "failed", "3020"),  # unanswered: rejects by default
        ("<Response><Speak>hello</Speak><Hangup/></Response>", "completed", "4000"),
    ],
)
def test_hangup_verb_outcomes(xml: str, status: str, code: str) -> None:
    """<Hangup>: busy is 3010; as the first verb it rejects; after a verb it is 4000."""
    sandbox, http = scripted({"/answer": xml})
    call_scripted(sandbox)
    hangup = hangup_form(http.sent)
    assert (hangup["CallStatus"], hangup["HangupCauseCode"]) == (status, code)


@pytest.mark.parametrize(
    ("number", "status", "cause"),
    [(BUSY_NUMBER, "busy", "Busy Line"), ("+14155550124", "no-answer", "No Answer")],
)
def test_dial_number_busy_and_no_answer(number: str, status: str, cause: str) -> None:
    """<Dial><Number>: a busy or unanswered phone gives DialStatus busy / no-answer."""
    sandbox, http = scripted({"/answer": dial_xml(f"<Number>{number}</Number>", timeout=20)})
    call = call_scripted(sandbox)
    [action] = forms(http.sent, "/action")
    assert (action["DialStatus"], action["DialHangupCause"]) == (status, cause)
    if status == "no-answer":
        assert legs(call)[number]["t"] == pytest.approx(20.05)


def test_unreachable_answer_url_ends_7011(world: World) -> None:
    """Hangup codes: an answer_url that cannot be reached ends the call 7011 (docs/plivo.md, Hangup
    causes)."""
    world.account.update_application(APP_ID, {"answer_url": "https://down.example.test/answer"})
    result = world.call(FRONTDESK_IP)
    call = world.sandbox.calls[result.call_uuid]
    assert call.hangup == {
        "CallStatus": "failed",
        "HangupCauseName": "Error reaching Answer URL",
        "HangupCauseCode": "7011",
        "HangupSource": "Error",
    }
    assert "unreachable" in call.text()
    stored = stored_hangup(world.app.extensions["sipguard"].store, call.uuid)
    assert stored is not None
    assert stored["hangup_cause_code"] == 7011


@pytest.mark.parametrize(
    "body", [b"<Document><Speak>hi</Speak></Document>", b"this is not XML", b"<Response>"]
)
def test_answer_that_is_not_a_response_document_ends_8011(body: bytes) -> None:
    """Hangup codes: invalid answer XML ends the call 8011 (docs/plivo.md, Hangup causes)."""
    sandbox, http = scripted({"/answer": body})
    call = call_scripted(sandbox)
    assert call.hangup is not None
    assert (call.hangup["HangupCauseCode"], call.hangup["CallStatus"]) == ("8011", "failed")
    assert hangup_form(http.sent)["HangupCauseName"] == "Invalid Answer XML"


def test_redirect_loop_ends_as_loop_detected() -> None:
    """Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): a <Redirect> loop ends
    with Loop Detected 2060 instead of running forever."""
    loop = f"<Response><Redirect>{XML}/loop</Redirect></Response>"
    sandbox, http = scripted({"/answer": loop, "/loop": loop})
    call = call_scripted(sandbox)
    assert call.hangup is not None
    assert (call.hangup["HangupCauseCode"], call.hangup["HangupCauseName"]) == (
        "2060",
        "Loop Detected",
    )
    fetches = [url for _, url, _, _ in http.sent if not url.endswith("/hangup")]
    assert 2 < len(fetches) <= 100


def test_a_plivo_verb_the_sandbox_does_not_simulate_is_noted_and_skipped() -> None:
    """XML execution: a verb outside Speak/Record/Hangup/Redirect/Dial is noted, not run."""
    xml = "<Response><Play>https://media.example.test/a.mp3</Play><Speak>bye now</Speak></Response>"
    sandbox, http = scripted({"/answer": xml})
    call = call_scripted(sandbox)
    assert "<Play> is not simulated by the sandbox; skipped" in call.text()
    assert "speak" in kinds(call)
    assert hangup_form(http.sent)["HangupCauseCode"] == "4010"


def test_a_verb_that_is_not_plivo_xml_ends_8011() -> None:
    """A non-Plivo verb (Twilio's <Reject/>; docs/plivo.md, XML) is invalid answer XML → 8011."""
    sandbox, http = scripted({"/answer": "<Response><Reject/></Response>"})
    call_scripted(sandbox)
    assert hangup_form(http.sent)["HangupCauseCode"] == "8011"


def test_comments_are_skipped_and_a_bad_verb_in_a_redirect_ends_8014() -> None:
    """Invalid XML at a Redirect URL is 8014 (docs/plivo.md, Hangup causes); an XML comment is not a
    verb."""
    sandbox, http = scripted(
        {
            "/answer": f"<Response><!-- to the menu --><Redirect>{XML}/menu</Redirect></Response>",
            "/menu": "<Response><Say>hi</Say></Response>",
        }
    )
    call_scripted(sandbox)
    assert hangup_form(http.sent)["HangupCauseCode"] == "8014"


# -- 6. transfer --------------------------------------------------------------------------------


def test_transfer_of_a_parked_call_runs_the_handoff_and_counts_the_ai_time(world: World) -> None:
    """Transfer (docs/plivo.md, REST API): the A leg fetches /handoff/support, agents are dialled,
    call ends."""
    call = ai_first(world)
    ai = [e for e in call.events if e.kind == "ai"][-1]
    assert ai.data["handoff_url"] is True
    world.clock.advance(20)
    url, token = handoff_url(world.app, call.uuid)
    world.sandbox.transfer(call.uuid, {"legs": "aleg", "aleg_url": url, "aleg_method": "POST"})
    assert call.state == "ended"
    transfer = next(e for e in call.events if e.kind == "transfer")
    assert transfer.offset == 20.0
    [handoff] = forms(world.http.sent, "/handoff/support")
    assert handoff["CallUUID"] == call.uuid
    hangup = hangup_form(world.http.sent)
    assert (hangup["HangupCauseCode"], hangup["CallStatus"]) == ("4010", "completed")
    assert hangup["Duration"] == "53"  # 20 s with the AI + alice's 3 s ring + 30 s talk
    rows = stored_events(world.app.extensions["sipguard"].store, call.uuid)
    assert [r["route"] for r in rows] == ["answer", "handoff", "dial_action"]
    # The handoff tokens (the app's in the AI URL, ours in the transfer URL) are masked.
    shown = json.dumps(call.summary()) + call.text()
    assert token not in shown
    assert "handoff_url=…" in ai.text and "/handoff/support?token=…" in transfer.text
    assert_no_leaks(world.sandbox, world.http.sent)


def test_caller_hanging_up_at_the_ai_ends_4000_with_the_hold_time(world: World) -> None:
    """Hangup: the caller leaving the AI agent ends the call 4000; Duration counts the hold."""
    call = ai_first(world)
    world.clock.advance(42)
    world.sandbox.hang_up(call.uuid)
    hangup = hangup_form(world.http.sent)
    assert (hangup["CallStatus"], hangup["HangupCauseCode"]) == ("completed", "4000")
    assert (hangup["HangupSource"], hangup["Duration"]) == ("Caller", "42")
    with pytest.raises(LookupError):
        world.sandbox.hang_up(call.uuid)
    assert_no_leaks(world.sandbox, world.http.sent)


def test_transfer_limit_ends_the_call_as_loop_detected(world: World) -> None:
    """Transfer (docs/plivo.md, REST API): at most 70 transfers; the next one hangs up with Loop
    detected."""
    call = ai_first(world)
    back_to_ai = {"legs": "aleg", "aleg_url": "https://ai.example.test/plivo/again"}
    for _ in range(70):
        world.sandbox.transfer(call.uuid, back_to_ai)
        assert call.state == "parked"
    world.sandbox.transfer(call.uuid, back_to_ai)
    assert call.hangup is not None
    assert (call.hangup["HangupCauseCode"], call.hangup["HangupCauseName"]) == (
        "2060",
        "Loop Detected",
    )


@pytest.mark.parametrize("leg", ["bleg", "both"])
def test_transfer_of_other_legs_is_refused(world: World, leg: str) -> None:
    """Transfer: a call held by the AI agent has no B leg; legs other than aleg are refused."""
    call = ai_first(world)
    url, _ = handoff_url(world.app, call.uuid)
    with pytest.raises(ValidationError):
        world.sandbox.transfer(call.uuid, {"legs": leg, "aleg_url": url, "bleg_url": url})
    assert call.state == "parked"


def test_transfer_of_an_unknown_or_ended_call_is_a_lookup_error(world: World) -> None:
    """Transfer: only a live call can be transferred."""
    with pytest.raises(LookupError):
        world.sandbox.transfer("no-such-call", {"legs": "aleg", "aleg_url": f"{BASE_URL}/x"})
    ended = pbx_both(world)
    assert ended.state == "ended"
    with pytest.raises(LookupError):
        world.sandbox.transfer(ended.uuid, {"legs": "aleg", "aleg_url": f"{BASE_URL}/x"})


def test_transfer_of_a_call_that_is_not_parked_is_refused(app: Flask) -> None:
    """Transfer: a call still running its XML is not waiting for a Transfer."""
    jobs: list[Callable[[], None]] = []
    world = make_world(app, CANARIES, run=jobs.append)
    world.sandbox.make_call(
        {"from": "+14155550100", "to": DAVE, "answer_url": f"{BASE_URL}/answer"}
    )
    [call] = world.sandbox.calls.values()
    url, _ = handoff_url(app, call.uuid)
    with pytest.raises(ValidationError):
        world.sandbox.transfer(call.uuid, {"legs": "aleg", "aleg_url": url})
    for job in jobs:
        job()
    assert call.state == "ended"


def test_handoff_against_the_live_sandbox(live: World) -> None:
    """`handoff CALL_UUID support` transfers a parked call; inline, it ends in-request."""
    call = ai_first(live)
    result = live.app.test_cli_runner().invoke(args=["handoff", call.uuid, "support"])
    assert result.exit_code == 0, result.output
    assert call.state == "ended"
    assert call.hangup is not None and call.hangup["HangupCauseCode"] == "4010"
    assert forms(live.http.sent, "/handoff/support")[0]["CallUUID"] == call.uuid
    assert_no_leaks(live.sandbox, live.http.sent)


def test_outbound_transfer_to_group_against_the_live_sandbox(live: World) -> None:
    """The project's Outbound.transfer_to_group works unchanged against the sandbox."""
    call = ai_first(live)
    rt = live.app.extensions["sipguard"]
    with live.app.app_context():
        out = Outbound(rt.plivo(), rt.handoff, rt.voice.groups, external_url)
        answer = out.transfer_to_group(call.uuid, "support")
    assert answer["message"] == "call transferred"
    assert call.state == "ended"
    dialled = [e.data["address"] for e in call.events if e.kind == "leg"]
    assert dialled == [ALICE]


# -- 7. make call -------------------------------------------------------------------------------


def _make_call(world: World, to: str = BOB, **fields: str) -> str:
    body = {
        "from": "+14155550100",
        "to": to,
        "answer_url": f"{BASE_URL}/answer",
        "hangup_url": f"{BASE_URL}/hangup",
        **fields,
    }
    [request_uuid] = world.sandbox.make_call(body)
    return request_uuid


def test_make_call_with_credentials_reaches_bob_and_the_answer_url(world: World) -> None:
    """Make Call API: sip_auth_username/password answer bob's 401; answer_url gets the call."""
    password = CANARIES["AGENT_BOB_PASSWORD"]
    request_uuid = _make_call(world, sip_auth_username="bob", sip_auth_password=password)
    [call] = world.sandbox.calls.values()
    assert legs(call)[BOB]["outcome"] == "answered"
    [answer] = forms(world.http.sent, "/answer")
    assert (answer["Direction"], answer["RequestUUID"]) == ("outbound", request_uuid)
    assert answer["CallUUID"] == call.uuid
    assert any(e.kind == "callback" and e.data.get("status") == 200 for e in call.events)
    assert password not in repr(call) + json.dumps(call.summary()) + call.text()
    assert_no_leaks(world.sandbox, world.http.sent)


@pytest.mark.parametrize(
    ("to", "fields", "status", "code", "name"),
    [
        (
            BOB,
            {"sip_auth_username": "bob", "sip_auth_password": WRONG_PASSWORD},
            "failed",
            "4240",
            "sip_auth_failed",
        ),
        (
            TRUNK,
            {
                "sip_auth_username": "trunk",
                "sip_auth_password": SANDBOX_ENV["SANDBOX_TRUNK_PASSWORD"],
            },
            "timeout",
            "4250",
            "sip_auth_timeout",
        ),
        (BUSY_NUMBER, {}, "busy", "3010", "Busy Line"),
    ],
)
def test_make_call_failures_reach_the_hangup_url(
    world: World, to: str, fields: dict[str, str], status: str, code: str, name: str
) -> None:
    """Make Call API: rejected credentials 4240, no reply 4250, busy 3010 (docs/plivo.md, SIP
    authentication, Hangup causes)."""
    request_uuid = _make_call(world, to, **fields)
    assert forms(world.http.sent, "/answer") == []
    hangup = hangup_form(world.http.sent)
    assert (hangup["CallStatus"], hangup["HangupCauseCode"]) == (status, code)
    assert (hangup["HangupCauseName"], hangup["RequestUUID"]) == (name, request_uuid)
    assert_no_leaks(world.sandbox, world.http.sent)


def test_make_call_credentials_need_a_sip_uri(world: World) -> None:
    """Make Call API: sip_auth_username/password are only accepted when to is a SIP URI."""
    password = CANARIES["AGENT_BOB_PASSWORD"]
    with pytest.raises(ValidationError, match="only accepted when to is a SIP URI") as caught:
        _make_call(world, "+14155550125", sip_auth_username="bob", sip_auth_password=password)
    assert password not in str(caught.value)
    assert world.sandbox.calls == {}
    assert world.http.sent == []


# -- 9. timeline --------------------------------------------------------------------------------


def test_timeline_json_covers_every_step_in_order(app: Flask) -> None:
    """Timeline: auth decision, each callback, XML, dial and leg with its cause, the hangup."""
    world = _alice_rejects(app)
    call = pbx_both(world)
    summary = json.loads(json.dumps(call.summary()))
    events = summary["events"]
    assert all({"t", "kind", "text"} <= set(e) for e in events)
    assert {"invite", "auth", "callback", "xml", "dial", "leg", "hangup"} <= {
        e["kind"] for e in events
    }
    assert events[0]["kind"] == "invite" and events[1]["kind"] == "auth"
    assert events[-1]["kind"] == "callback" and events[-1]["callback"] == "hangup"
    # Every event but the legs is stamped at the call's running offset, which never goes back.
    steps = [e["t"] for e in events if e["kind"] != "leg"]
    assert steps == sorted(steps)
    # A leg is stamped when it ended: after its Dial began, no later than the Dial's result.
    for i, event in enumerate(events):
        if event["kind"] == "leg":
            began = max(e["t"] for e in events[:i] if e["kind"] == "dial")
            result = next(e for e in events[i:] if e["kind"] == "dial")
            assert began <= event["t"] <= result["t"]
    causes = [(e["outcome"], e["code"]) for e in events if e["kind"] == "leg"]
    assert causes == [("failed", 4240), ("answered", None)]
    assert summary["hangup"]["HangupCauseCode"] == "4010"
    assert len(call.text().splitlines()) == len(events) + 1
    assert_no_leaks(world.sandbox, world.http.sent)
