"""What the sandbox honours beyond the auth rules: methods, fallbacks, Record, timeLimit,
redirect="false", ring_timeout, size limits, fragments, DialRingStatus; plus two auth edges.

Each test kills a mutant that the rest of the suite let live (a mutation run over sandbox/).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from sandbox import digest
from sandbox.call import Call
from sandbox.engine import Sandbox
from sandbox.sip_edge import Invite
from sandbox.timeline import safe_url
from sipguard.calls import signature
from tests.sandbox.test_sandbox_calls import (
    BOB,
    CAROL,
    DAVE,
    ERIN,
    WRONG_PASSWORD,
    XML,
    Scripted,
    call_scripted,
    dial_xml,
    forms,
    hangup_form,
    legs,
    scripted,
    user,
)
from tests.support.config import CANARIES, TOKEN
from tests.support.sandbox import APP_ID, CALLER_PASSWORD, SANDBOX_ENV, URI, World

LOCK_IP = "198.51.100.7"
AI = "https://ai.example.test/"


def _requests(http: Scripted, path: str) -> list[tuple[str, str, dict[str, str], bytes | None]]:
    """Every request the sandbox sent to `path` on any host, in order."""
    return [sent for sent in http.sent if urlsplit(sent[1]).path == path]


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _make_call(sandbox: Sandbox, to: str, **fields: str) -> Call:
    """A Make Call on a scripted sandbox (runs inline); return the one call it placed."""
    body = {
        "from": "+14155550100",
        "to": to,
        "answer_url": f"{XML}/answer",
        "hangup_url": f"{XML}/hangup",
        **fields,
    }
    [request_uuid] = sandbox.make_call(body)
    [call] = [c for c in sandbox.calls.values() if c.request_uuid == request_uuid]
    return call


# -- lockout: every failed attempt counts ------------------------------------------------------


def test_ten_unreadable_digest_answers_lock_the_ip_out(world: World) -> None:
    """10 failed attempts from one IP lock it (docs/plivo.md, SIP authentication), whatever made
    them fail (M10)."""
    world.protect("credential")
    for _ in range(10):
        garbled = world.sandbox.invite(Invite(LOCK_IP, URI, authorization="Digest garbage"))
        assert garbled.status == 403
        world.clock.advance(1)
    assert [lock.ip for lock in world.sandbox.lockouts()] == [LOCK_IP]
    good = world.call(LOCK_IP, username="frontdesk", password=CALLER_PASSWORD)
    assert good.status == 403
    assert world.call("198.51.100.8", username="frontdesk", password=CALLER_PASSWORD).status == 200


# -- inbound digest: the algorithm Plivo offered ---------------------------------------------


def test_an_answer_with_another_algorithm_than_the_offered_md5_is_refused(world: World) -> None:
    """Plivo keeps HA1 = MD5 and challenges with MD5 (docs/plivo.md, SIP authentication); an
    MD5-sess answer is refused (M28)."""
    world.protect("credential")
    first = world.sandbox.invite(Invite("203.0.113.9", URI))
    challenge = digest.Challenge.parse(str(first.challenge))
    assert challenge.algorithm == "MD5"
    sess = digest.answer(
        digest.Challenge(challenge.realm, challenge.nonce, "MD5-sess"),
        "frontdesk",
        CALLER_PASSWORD,
        "INVITE",
        URI,
    )
    refused = world.sandbox.invite(Invite("203.0.113.9", URI, authorization=sess.header()))
    assert refused.status == 403
    assert world.call("203.0.113.9", username="frontdesk", password=CALLER_PASSWORD).status == 200


# -- outbound digest: a SHA-256 PBX still checks the password -----------------------------------


def test_sha256_pbx_rejects_a_wrong_xml_password() -> None:
    """Outbound auth: RFC 7616 SHA-256 digest depends on sipAuthPassword too (wrong → 4240, M45)."""
    outcomes = []
    for password in (SANDBOX_ENV["SANDBOX_CAROL_PASSWORD"], WRONG_PASSWORD):
        sandbox, http = scripted({"/answer": dial_xml(user(CAROL, "carol", password))})
        leg = legs(call_scripted(sandbox))[CAROL]
        outcomes.append((leg["outcome"], leg["code"]))
    assert outcomes == [("answered", None), ("failed", 4240)]


# -- hangup callback fields ------------------------------------------------------------------


def test_make_call_duration_counts_from_the_answer_not_the_ringing() -> None:
    """Duration/BillDuration are the answered time (docs/plivo.md, Callbacks and signatures); bob
    rings 4 s first (M40)."""
    sandbox, http = scripted({"/answer": '<Response><Wait length="10"/></Response>'})
    _make_call(
        sandbox,
        BOB,
        sip_auth_username="bob",
        sip_auth_password=CANARIES["AGENT_BOB_PASSWORD"],
    )
    hangup = hangup_form(http.sent)
    assert hangup["HangupCauseCode"] == "4010"
    assert hangup["Duration"] == hangup["BillDuration"] == "10"


def test_refused_call_hangup_carries_plivo_hangup_cause(world: World) -> None:
    """The cause is in the HangupCauseName / PlivoHangupCause fields (docs/plivo.md, SIP
    authentication; M69)."""
    world.protect("credential")
    refused = world.call("203.0.113.9", username="frontdesk", password=WRONG_PASSWORD)
    assert refused.status == 403
    [hangup] = [
        dict(parse_qsl((body or b"").decode()))
        for _, url, _, body in world.http.sent
        if urlsplit(url).path == "/hangup"
    ]
    assert hangup["HangupCauseName"] == hangup["PlivoHangupCause"] == "sip_auth_failed"
    assert hangup["HangupCauseCode"] == "4210"


# -- Dial attributes ---------------------------------------------------------------------------


def test_dial_time_limit_cuts_the_bridged_talk() -> None:
    """timeLimit caps the bridged call (docs/plivo.md, XML); dave would talk 30 s, the limit is 10
    (M47)."""
    dial = f'<Response><Dial timeLimit="10">{user(DAVE)}</Dial></Response>'
    sandbox, http = scripted({"/answer": dial})
    call = call_scripted(sandbox)
    assert f"talked 10 s with {DAVE}" in call.text()
    assert hangup_form(http.sent)["Duration"] == "11"  # 1.05 s to answer + 10 s


def test_dial_redirect_false_posts_the_action_and_carries_on() -> None:
    """redirect="false" sends the Dial action (docs/plivo.md, XML) but runs the verbs after <Dial>
    (M48)."""
    answer = (
        f'<Response><Dial action="{XML}/action" redirect="false">{user(DAVE)}</Dial>'
        "<Speak>after the dial</Speak></Response>"
    )
    sandbox, http = scripted(
        {"/answer": answer, "/action": '<Response><Hangup reason="busy"/></Response>'}
    )
    call = call_scripted(sandbox)
    [action] = forms(http.sent, "/action")
    assert action["DialStatus"] == "completed"
    assert "speak" in [e.kind for e in call.events]
    hangup = hangup_form(http.sent)
    assert (hangup["HangupCauseCode"], hangup["CallStatus"]) == ("4010", "completed")


def test_dial_action_method_get_is_used() -> None:
    """<Dial method="GET"> (docs/plivo.md, XML) fetches the action URL with GET, the fields in the
    query (M49)."""
    dial = f'<Response><Dial action="{XML}/action" method="GET">{user(DAVE)}</Dial></Response>'
    sandbox, http = scripted({"/answer": dial})
    call_scripted(sandbox)
    [(method, url, headers, body)] = _requests(http, "/action")
    assert (method, body) == ("GET", None)
    assert _query(url)["DialStatus"] == "completed"
    assert signature.Keyring([TOKEN]).verify(headers, method, url, {}).scheme == "v3"


@pytest.mark.parametrize(
    ("child", "ring_status"),
    [(user(DAVE), "true"), (user(ERIN), "false"), ("<Number>+14155550999</Number>", "false")],
    ids=["answered", "auth-failed", "no-such-endpoint"],
)
def test_dial_ring_status_says_whether_the_endpoint_rang(child: str, ring_status: str) -> None:
    """DialRingStatus is true/false (docs/plivo.md, XML); a leg that never rang: false (M70)."""
    sandbox, http = scripted({"/answer": dial_xml(child)})
    call_scripted(sandbox)
    [action] = forms(http.sent, "/action")
    assert action["DialRingStatus"] == ring_status


# -- Record ----------------------------------------------------------------------------------


def test_record_action_gets_the_recording_and_its_xml_runs() -> None:
    """<Record action>: the action URL gets RecordUrl and its XML runs next (M56)."""
    sandbox, http = scripted(
        {
            "/answer": f'<Response><Record action="{XML}/recorded" maxLength="30"/></Response>',
            "/recorded": '<Response><Hangup reason="busy"/></Response>',
        }
    )
    call_scripted(sandbox)
    [recorded] = forms(http.sent, "/recorded")
    assert recorded["RecordUrl"].endswith(".mp3")
    assert recorded["RecordingDuration"] == "5"  # the suite's simulated caller talks 5 s
    assert hangup_form(http.sent)["HangupCauseCode"] == "3010"


def test_record_callback_url_gets_the_recording() -> None:
    """<Record callbackUrl>: the recording is reported there, with the call's fields (M71)."""
    page = f'<Response><Record callbackUrl="{XML}/recording" maxLength="30"/></Response>'
    sandbox, http = scripted({"/answer": page})
    call = call_scripted(sandbox)
    [recording] = forms(http.sent, "/recording")
    assert recording["CallUUID"] == call.uuid
    assert recording["RecordingID"] and recording["RecordUrl"].endswith(".mp3")


# -- Redirect --------------------------------------------------------------------------------


def test_redirect_method_get_is_used() -> None:
    """<Redirect method="GET"> fetches the next document with GET (docs/plivo.md, XML)."""
    sandbox, http = scripted(
        {
            "/answer": f'<Response><Redirect method="GET">{XML}/menu</Redirect></Response>',
            "/menu": "<Response><Speak>menu</Speak></Response>",
        }
    )
    call = call_scripted(sandbox)
    [(method, url, _, body)] = _requests(http, "/menu")
    assert (method, body) == ("GET", None)
    assert _query(url)["CallUUID"] == call.uuid


# -- application URLs and methods ------------------------------------------------------------


def test_fallback_answer_url_is_fetched_when_the_answer_url_fails() -> None:
    """The application's fallback_answer_url (docs/plivo.md, XML) is used when answer_url fails
    (M58)."""
    sandbox, http = scripted({"/fallback": "<Response><Speak>fallback</Speak></Response>"})
    sandbox.account.update_application(
        APP_ID,
        {
            "answer_url": "https://down.example.test/answer",
            "fallback_answer_url": f"{XML}/fallback",
        },
    )
    call = call_scripted(sandbox)
    [fallback] = forms(http.sent, "/fallback")
    assert fallback["CallUUID"] == call.uuid
    assert hangup_form(http.sent)["HangupCauseCode"] == "4010"


def test_make_call_fallback_url_is_fetched_when_the_answer_url_fails() -> None:
    """Make Call's fallback_url (docs/plivo.md, REST API) is used when answer_url fails (M55)."""
    sandbox, http = scripted({"/fallback": "<Response><Speak>fallback</Speak></Response>"})
    call = _make_call(
        sandbox,
        DAVE,
        answer_url="https://down.example.test/answer",
        fallback_url=f"{XML}/fallback",
    )
    [fallback] = forms(http.sent, "/fallback")
    assert fallback["CallUUID"] == call.uuid
    assert hangup_form(http.sent)["HangupCauseCode"] == "4010"


def test_answer_method_get_sends_a_signed_get() -> None:
    """Application answer_method GET: the answer URL is fetched with GET, signed as GET (M59)."""
    sandbox, http = scripted({"/answer": "<Response><Speak>hi</Speak></Response>"})
    sandbox.account.update_application(APP_ID, {"answer_method": "GET"})
    call = call_scripted(sandbox)
    [(method, url, headers, body)] = _requests(http, "/answer")
    assert (method, body) == ("GET", None)
    assert _query(url)["CallUUID"] == call.uuid
    assert signature.Keyring([TOKEN]).verify(headers, method, url, {}).scheme == "v3"


def test_hangup_method_get_sends_a_signed_get() -> None:
    """Application hangup_method GET: the hangup URL is fetched with GET, signed as GET (M60)."""
    sandbox, http = scripted({"/answer": "<Response><Speak>hi</Speak></Response>"})
    sandbox.account.update_application(APP_ID, {"hangup_method": "GET"})
    call_scripted(sandbox)
    [(method, url, headers, body)] = _requests(http, "/hangup")
    assert (method, body) == ("GET", None)
    assert _query(url)["HangupCauseCode"] == "4010"
    assert signature.Keyring([TOKEN]).verify(headers, method, url, {}).scheme == "v3"


def test_callback_url_fragment_configures_plivo_and_is_not_sent() -> None:
    """#ct=...&rt=... is Plivo's callback config (docs/plivo.md, XML); the request and signature
    omit it (M67)."""
    sandbox, http = scripted({"/answer": "<Response><Speak>hi</Speak></Response>"})
    sandbox.account.update_application(APP_ID, {"answer_url": f"{XML}/answer#ct=2000&rt=3000"})
    call_scripted(sandbox)
    [(method, url, headers, body)] = _requests(http, "/answer")
    assert url == f"{XML}/answer"
    params = {k: [v] for k, v in parse_qsl((body or b"").decode(), keep_blank_values=True)}
    assert signature.Keyring([TOKEN]).verify(headers, method, url, params).scheme == "v3"


def test_safe_url_drops_the_fragment() -> None:
    """Timelines show a callback URL without its #fragment (timeline.py docstring, M66)."""
    assert safe_url("https://h/answer#ct=2000&rt=3000") == "https://h/answer"


# -- Make Call and Transfer parameters ----------------------------------------------------------


def test_make_call_ring_timeout_limits_the_ringing(world: World) -> None:
    """ring_timeout (SDK; docs/plivo.md, REST API) is how long an unanswered destination rings
    (M54)."""
    [request_uuid] = world.sandbox.make_call(
        {
            "from": "+14155550100",
            "to": "+14155550124",  # never answers
            "answer_url": "https://voice.example.test/answer",
            "ring_timeout": "5",
        }
    )
    [call] = [c for c in world.sandbox.calls.values() if c.request_uuid == request_uuid]
    leg = legs(call)["+14155550124"]
    assert leg["outcome"] == "no-answer"
    assert leg["t"] == pytest.approx(5.05)


def test_transfer_aleg_method_get_is_used() -> None:
    """Transfer's aleg_method GET (docs/plivo.md, REST API) fetches aleg_url with GET (M52)."""
    sandbox, http = scripted(
        {
            "/answer": f"<Response><Redirect>{AI}plivo/answer</Redirect></Response>",
            "/transfer": "<Response><Speak>an agent</Speak></Response>",
        }
    )
    call = call_scripted(sandbox)
    assert call.state == "parked"
    sandbox.transfer(
        call.uuid, {"legs": "aleg", "aleg_url": f"{XML}/transfer", "aleg_method": "GET"}
    )
    [(method, url, headers, body)] = _requests(http, "/transfer")
    assert (method, body) == ("GET", None)
    assert _query(url)["CallUUID"] == call.uuid
    assert signature.Keyring([TOKEN]).verify(headers, method, url, {}).scheme == "v3"
    assert hangup_form(http.sent)["HangupCauseCode"] == "4010"


# -- XML size --------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "code"), [(100_000, "4010"), (100_001, "8011")])
def test_answer_xml_over_100_kb_is_invalid(size: int, code: str) -> None:
    """A document is at most 100 KB (docs/plivo.md, XML); one byte more is invalid XML (M61)."""
    head, tail = b"<Response><Speak>", b"</Speak></Response>"
    page = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(page) == size
    sandbox, http = scripted({"/answer": page})
    call_scripted(sandbox)
    assert hangup_form(http.sent)["HangupCauseCode"] == code
