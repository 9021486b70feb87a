"""Inbound SIP authentication through the sandbox, rule by rule of Plivo's SIP-authentication
page, https://www.plivo.com/docs/voice/concepts/sip-authentication (docs/plivo.md,
SIP authentication); FAQ and Security name sections of that page.

Request-URI resolution, ip_acl (IPv4, IPv6, mapped), credential (a real 407 digest exchange,
checked against a hand-written RFC 2617 client), ip_acl_and_credential, the brute-force lockout
(9/10 failures, 59/60/61 s), signed answer callbacks, immediate password and ACL changes, no
secret in callbacks or timelines, and the same over HTTP and through `sandbox call`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

from sandbox import digest
from sandbox.call import Call
from sandbox.client import SandboxClient, SandboxError
from sandbox.sip_edge import Invite, InviteResult
from sipguard.calls import signature
from sipguard.calls.routing import AUTH_NOT_RUNNING
from tests.support.config import AUTH_ID, BASE_URL, MAIN_TOKEN, TOKEN
from tests.support.queries import stored_events
from tests.support.sandbox import APP_ID, CALLER_PASSWORD, START, URI, World

NUMBER = "+14155550199"  # mapped to APP_ID in tests/data/sandbox.toml
NUMBER_URI = f"sip:{NUMBER}@app.plivo.com"
WRONG_PASSWORD = "Wrong-Passw0rd-99"
GOOD_IP = "203.0.113.9"
OTHER_IP = "198.51.100.23"
SIP_FIELDS = ("SIPAuthType", "SIPAuthUser", "SIPSourceIP")


# --- helpers ---------------------------------------------------------------------------------


def _forms(world: World, path: str) -> list[dict[str, str]]:
    """The decoded forms of every callback the app received on `path`."""
    forms = []
    for _method, url, _headers, body in world.http.sent:
        if urlsplit(url).path == path:
            forms.append(dict(parse_qsl((body or b"").decode(), keep_blank_values=True)))
    return forms


def _answers(world: World) -> list[dict[str, str]]:
    return _forms(world, "/answer")


def _hangups(world: World) -> list[dict[str, str]]:
    return _forms(world, "/hangup")


def _call(world: World, result: InviteResult) -> Call:
    assert result.call_uuid is not None
    return world.sandbox.calls[result.call_uuid]


def _assert_auth_failed(world: World, result: InviteResult) -> None:
    """403, no answer callback, a hangup callback with sip_auth_failed 4210 / failed."""
    assert result.status == 403
    assert _answers(world) == []
    hangups = _hangups(world)
    assert len(hangups) == 1
    assert hangups[0]["CallUUID"] == result.call_uuid
    assert hangups[0]["HangupCauseName"] == "sip_auth_failed"
    assert hangups[0]["HangupCauseCode"] == "4210"
    assert hangups[0]["CallStatus"] == "failed"


def _challenge(world: World, source_ip: str = GOOD_IP, uri: str = URI) -> digest.Challenge:
    first = world.sandbox.invite(Invite(source_ip, uri))
    assert first.status == 407
    assert first.challenge is not None
    return digest.Challenge.parse(first.challenge)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _acl_uuid(world: World) -> str:
    acl = world.account.application(APP_ID).ip_acl_uuid
    assert acl is not None
    return acl


def _credential_uuid(world: World) -> str:
    credential = world.account.application(APP_ID).credential_uuid
    assert credential is not None
    return credential


# --- 1. Request-URI resolution -----------------------------------------------------------------


def test_app_uri_reaches_the_app_and_runs_its_auth(world: World) -> None:
    """Inbound auth resolves from the Request-URI sip:{app_id}@app.plivo.com."""
    world.protect("ip_acl", allow=("203.0.113.0/24",))
    refused = world.call(OTHER_IP)
    assert refused.status == 403
    passed = world.call(GOOD_IP)
    assert passed.status == 200
    answers = _answers(world)
    assert len(answers) == 1
    assert answers[0]["CallUUID"] == passed.call_uuid
    assert answers[0]["SIPAuthType"] == "ip_acl"


@pytest.mark.parametrize("mode", ["ip_acl", "credential", "ip_acl_and_credential"])
def test_phone_number_request_uri_runs_no_auth(world: World, mode: str) -> None:
    """A phone number in the Request-URI means auth is not running, no SIPAuth* sent."""
    world.protect(mode, allow=("203.0.113.0/24",))
    result = world.sandbox.invite(Invite(OTHER_IP, NUMBER_URI))  # no credentials, IP not in ACL
    assert result.status == 200
    assert result.challenge is None
    answers = _answers(world)
    assert len(answers) == 1
    assert answers[0]["CallUUID"] == result.call_uuid
    assert not set(SIP_FIELDS) & set(answers[0])
    events = [e for e in _call(world, result).events if e.kind == "auth"]
    assert [e.data.get("decision") for e in events] == ["not-run"]


def test_to_header_does_not_matter(world: World) -> None:
    """Auth resolves from the Request-URI, not the To header; the app sees no auth."""
    world.protect("credential")
    result = world.sandbox.invite(Invite(OTHER_IP, NUMBER_URI, to=URI))
    assert result.status == 200
    answers = _answers(world)
    assert len(answers) == 1
    assert answers[0]["To"] == URI
    assert not set(SIP_FIELDS) & set(answers[0])
    store = world.app.extensions["sipguard"].store
    events = stored_events(store, result.call_uuid)
    assert [(e["route"], e["decision"]) for e in events] == [("answer", "reject")]
    assert events[0]["reason"] == AUTH_NOT_RUNNING
    assert events[0]["sip_auth_type"] is None


def test_app_uri_with_phone_number_to_still_runs_auth(world: World) -> None:
    """A To of a phone number does not switch auth off when the Request-URI names the app."""
    world.protect("ip_acl", allow=("203.0.113.0/24",))
    result = world.sandbox.invite(Invite(OTHER_IP, URI, to=NUMBER_URI))
    _assert_auth_failed(world, result)


@pytest.mark.parametrize(
    "uri",
    [
        "sip:29999999999999999999@app.plivo.com",  # unknown app id
        "sip:+14155550100@app.plivo.com",  # a number mapped to nothing
        f"sip:{APP_ID}@example.com",  # not Plivo's host
        f"sip:{APP_ID}@app.plivo.com.example.com",
    ],
)
def test_unresolvable_request_uri_is_404(world: World, uri: str) -> None:
    """Only sip:{app_id}@app.plivo.com (or a mapped number) reaches an application."""
    world.protect("credential")
    result = world.sandbox.invite(Invite(GOOD_IP, uri))
    assert result.status == 404
    assert result.call_uuid is None
    assert world.http.sent == []


@pytest.mark.parametrize("source", ["203.0.113.999", "not-an-ip", "", "2001:db8::g"])
def test_malformed_source_ip_is_400(world: World, source: str) -> None:
    """IP ACLs need a valid IPv4 or IPv6 address; a malformed source is refused."""
    result = world.sandbox.invite(Invite(source, URI))
    assert result.status == 400
    assert world.http.sent == []


# --- 2. ip_acl -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "source", "admitted"),
    [
        ("203.0.113.0/24", "203.0.113.77", True),
        ("203.0.113.0/24", "203.0.114.77", False),
        ("198.51.100.7/32", "198.51.100.7", True),
        ("198.51.100.7/32", "198.51.100.8", False),
        ("0.0.0.0/0", "192.0.2.200", True),
        ("2001:db8:100::/48", "2001:db8:100:ffff::1", True),
        ("2001:db8:100::/48", "2001:db8:101::1", False),
        ("2001:db8::5/128", "2001:db8::5", True),
        ("2001:db8::5/128", "2001:db8::6", False),
        ("203.0.113.9/32", "::ffff:203.0.113.9", True),
        ("203.0.113.9/32", "::ffff:203.0.113.10", False),
        ("::/0", "203.0.113.9", False),  # an IPv4 caller never matches an IPv6 entry
        ("2001:db8::/32", "32.1.13.184", False),
    ],
)
def test_ip_acl(world: World, entry: str, source: str, admitted: bool) -> None:
    """ip_acl admits only IPv4/IPv6 addresses inside an entry's CIDR range."""
    world.protect("ip_acl", allow=(entry,))
    result = world.call(source)
    if not admitted:
        _assert_auth_failed(world, result)
        return
    assert result.status == 200
    answers = _answers(world)
    assert len(answers) == 1
    assert answers[0]["SIPAuthType"] == "ip_acl"
    assert ipaddress.ip_address(answers[0]["SIPSourceIP"]) == ipaddress.ip_address(source)
    assert "SIPAuthUser" not in answers[0]


# --- 3. credential -------------------------------------------------------------------------------


def test_credential_first_invite_gets_407_challenge(world: World) -> None:
    """Credential auth answers an INVITE with a 407 carrying realm app.plivo.com and nonce."""
    world.protect("credential")
    result = world.sandbox.invite(Invite(GOOD_IP, URI))
    assert result.status == 407
    assert result.call_uuid is None
    assert result.challenge is not None
    params = digest.parse_params(result.challenge)
    assert params["realm"] == "app.plivo.com"
    assert params["nonce"]
    assert world.http.sent == []


def test_credential_right_password_passes(world: World) -> None:
    """A caller with the right username/password passes; SIPAuthUser is sent."""
    world.protect("credential")
    result = world.call(GOOD_IP, username="frontdesk", password=CALLER_PASSWORD)
    assert result.status == 200
    answers = _answers(world)
    assert len(answers) == 1
    assert answers[0]["SIPAuthType"] == "credential"
    assert answers[0]["SIPAuthUser"] == "frontdesk"
    assert answers[0]["SIPSourceIP"] == GOOD_IP


@pytest.mark.parametrize(
    ("username", "password"),
    [("frontdesk", WRONG_PASSWORD), ("intruder", CALLER_PASSWORD), ("Frontdesk", CALLER_PASSWORD)],
)
def test_credential_wrong_username_or_password_fails(
    world: World, username: str, password: str
) -> None:
    """Wrong credentials get 403 and end with sip_auth_failed 4210 / failed."""
    world.protect("credential")
    result = world.call(GOOD_IP, username=username, password=password)
    _assert_auth_failed(world, result)


@pytest.mark.parametrize("claimed", ["other", "request"])
def test_digest_for_another_request_uri_fails(world: World, claimed: str) -> None:
    """RFC 3261: a digest computed for another Request-URI does not authenticate."""
    world.protect("credential")
    challenge = _challenge(world)
    other = "sip:30000000000000000003@app.plivo.com"
    auth = digest.answer(challenge, "frontdesk", CALLER_PASSWORD, "INVITE", other)
    if claimed == "request":  # the uri field names the Request-URI, the hash covers another
        auth = digest.Authorization(**{**vars(auth), "uri": URI})
    result = world.sandbox.invite(Invite(GOOD_IP, URI, authorization=auth.header()))
    _assert_auth_failed(world, result)


def test_replayed_authorization_is_not_accepted(world: World) -> None:
    """RFC 2617: a spent nonce does not authenticate again; a fresh stale 407 is sent."""
    world.protect("credential")
    challenge = _challenge(world)
    header = digest.answer(challenge, "frontdesk", CALLER_PASSWORD, "INVITE", URI).header()
    first = world.sandbox.invite(Invite(GOOD_IP, URI, authorization=header))
    assert first.status == 200
    world.clock.advance(1)
    replay = world.sandbox.invite(Invite(GOOD_IP, URI, authorization=header))
    assert replay.status == 407
    assert replay.call_uuid is None
    assert replay.challenge is not None
    fresh = digest.Challenge.parse(replay.challenge)
    assert fresh.stale
    assert fresh.nonce != challenge.nonce
    assert len(_answers(world)) == 1


def test_independent_rfc2617_digest_passes(world: World) -> None:
    """The 407 exchange is real digest; an answer built by hand per RFC 2617 passes."""
    world.protect("credential")
    params = digest.parse_params(world.sandbox.invite(Invite(GOOD_IP, URI)).challenge or "")
    realm, nonce = params["realm"], params["nonce"]
    assert params.get("algorithm", "MD5").upper() == "MD5"
    assert "auth" in [q.strip() for q in params.get("qop", "auth").split(",")]
    cnonce, nc = "0a4f113b", "00000001"
    ha1 = _md5(f"frontdesk:{realm}:{CALLER_PASSWORD}")
    ha2 = _md5(f"INVITE:{URI}")
    response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    header = (
        f'Digest username="frontdesk", realm="{realm}", nonce="{nonce}", uri="{URI}", '
        f'response="{response}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc={nc}'
    )
    result = world.sandbox.invite(Invite(GOOD_IP, URI, authorization=header))
    assert result.status == 200
    answers = _answers(world)
    assert len(answers) == 1
    assert answers[0]["SIPAuthUser"] == "frontdesk"


def test_hand_built_digest_with_wrong_password_fails(world: World) -> None:
    """The hand-built RFC 2617 answer is refused when its password is wrong."""
    world.protect("credential")
    params = digest.parse_params(world.sandbox.invite(Invite(GOOD_IP, URI)).challenge or "")
    realm, nonce = params["realm"], params["nonce"]
    cnonce, nc = "0a4f113b", "00000001"
    ha1 = _md5(f"frontdesk:{realm}:{WRONG_PASSWORD}")
    response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{_md5(f'INVITE:{URI}')}")
    header = (
        f'Digest username="frontdesk", realm="{realm}", nonce="{nonce}", uri="{URI}", '
        f'response="{response}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc={nc}'
    )
    _assert_auth_failed(world, world.sandbox.invite(Invite(GOOD_IP, URI, authorization=header)))


# --- 4. ip_acl_and_credential --------------------------------------------------------------------


def test_both_good_ip_and_good_password_pass(world: World) -> None:
    """ip_acl_and_credential passes when the IP check AND the credentials pass."""
    world.protect("ip_acl_and_credential", allow=("203.0.113.0/24",))
    result = world.call(GOOD_IP, username="frontdesk", password=CALLER_PASSWORD)
    assert result.status == 200
    answers = _answers(world)
    assert len(answers) == 1
    assert answers[0]["SIPAuthType"] == "ip_acl_and_credential"
    assert answers[0]["SIPAuthUser"] == "frontdesk"
    assert answers[0]["SIPSourceIP"] == GOOD_IP


def test_both_good_ip_bad_password_fails(world: World) -> None:
    """ip_acl_and_credential refuses a good IP with a wrong password."""
    world.protect("ip_acl_and_credential", allow=("203.0.113.0/24",))
    result = world.call(GOOD_IP, username="frontdesk", password=WRONG_PASSWORD)
    _assert_auth_failed(world, result)


def test_both_bad_ip_good_password_fails_without_challenge(world: World) -> None:
    """ip_acl_and_credential refuses a disallowed IP outright, with no 407 challenge."""
    world.protect("ip_acl_and_credential", allow=("203.0.113.0/24",))
    first = world.sandbox.invite(Invite(OTHER_IP, URI))
    assert first.status == 403
    assert first.challenge is None
    world.http.sent.clear()
    result = world.call(OTHER_IP, username="frontdesk", password=CALLER_PASSWORD)
    _assert_auth_failed(world, result)


# --- 5. lockout ----------------------------------------------------------------------------------

LOCK_IP = "198.51.100.7"


def _arrange(world: World, kind: str) -> None:
    """Protect the app so that LOCK_IP fails by a wrong password or by its address."""
    if kind == "password":
        world.protect("credential")
    else:
        world.protect("ip_acl_and_credential", allow=("203.0.113.0/24",))


def _fail(world: World, kind: str, source: str = LOCK_IP) -> None:
    password = WRONG_PASSWORD if kind == "password" else CALLER_PASSWORD
    result = world.call(source, username="frontdesk", password=password)
    assert result.status == 403


def _failures(world: World, kind: str, count: int, every: float = 1.0) -> None:
    """`count` failed calls from LOCK_IP, `every` seconds apart (no advance after the last)."""
    for index in range(count):
        if index:
            world.clock.advance(every)
        _fail(world, kind)


def _admit(world: World, kind: str, source: str = LOCK_IP) -> None:
    """Let `source`'s good call pass auth (for an IP failure, add it to the ACL)."""
    if kind == "ip":
        world.account.add_entry(_acl_uuid(world), {"ip_address": source})


def _good(world: World, source: str = LOCK_IP) -> InviteResult:
    return world.call(source, username="frontdesk", password=CALLER_PASSWORD)


@pytest.mark.parametrize("kind", ["password", "ip"])
def test_nine_failures_do_not_lock(world: World, kind: str) -> None:
    """Fewer than 10 failed attempts in 60 s do not lock the IP out."""
    _arrange(world, kind)
    _failures(world, kind, 9)
    _admit(world, kind)
    world.clock.advance(1)
    assert _good(world).status == 200
    assert world.sandbox.lockouts() == []


@pytest.mark.parametrize("kind", ["password", "ip"])
def test_ten_failures_lock_out_even_good_credentials(world: World, kind: str) -> None:
    """10 failures from one IP in 60 s lock it; good credentials then get 403 (4210)."""
    _arrange(world, kind)
    _failures(world, kind, 10)
    _admit(world, kind)
    world.clock.advance(1)
    world.http.sent.clear()
    _assert_auth_failed(world, _good(world))
    locks = world.sandbox.lockouts()
    assert [lock.ip for lock in locks] == [LOCK_IP]
    assert locks[0].started == START + timedelta(seconds=9)
    assert locks[0].until == START + timedelta(seconds=69)


@pytest.mark.parametrize(("span", "locked"), [(59, True), (60, False)])
def test_lockout_window_is_sixty_seconds(world: World, span: int, locked: bool) -> None:
    """10 failures 'within 60 seconds' lock (1st and 10th 59 s apart); 60 s apart do not."""
    _arrange(world, "password")
    _failures(world, "password", 9)  # t = 0 .. 8
    world.clock.advance(span - 8)
    _fail(world, "password")  # the 10th, at t = span
    result = _good(world)
    assert result.status == (403 if locked else 200)
    assert bool(world.sandbox.lockouts()) is locked


@pytest.mark.parametrize(("after", "status"), [(59, 403), (60, 200), (61, 200)])
def test_lockout_lasts_sixty_seconds(world: World, after: int, status: int) -> None:
    """The lockout lifts 60 s after it started (monitoring/lockout.py: at +60 s it is over)."""
    _arrange(world, "password")
    _failures(world, "password", 10)
    world.clock.advance(after)
    assert _good(world).status == status


def test_attempts_during_lockout_do_not_extend_it_and_window_resets(world: World) -> None:
    """The lockout lifts after 60 s despite attempts during it; the count starts afresh."""
    _arrange(world, "password")
    _failures(world, "password", 10)  # the 10th at t = 9: locked until t = 69
    until = world.sandbox.lockouts()[0].until
    for _ in range(12):  # refused attempts during the lockout (t = 13 .. 57), wrong and right
        world.clock.advance(4)
        _fail(world, "password")
        assert _good(world).status == 403
    world.clock.advance(12)  # t = 69: exactly +60 s after the 10th failure
    assert world.sandbox.lockouts() == []
    assert _good(world).status == 200
    _failures(world, "password", 9)  # 9 more after it lifted, 1 s apart
    world.clock.advance(1)
    assert _good(world).status == 200
    assert world.sandbox.lockouts() == []
    assert until == START + timedelta(seconds=69)


def test_lockout_affects_only_the_failing_ip(world: World) -> None:
    """The lockout is per source IP; another IP still gets through."""
    _arrange(world, "password")
    _failures(world, "password", 10)
    assert _good(world, "198.51.100.8").status == 200
    assert _good(world, "2001:db8::7").status == 200
    assert _good(world).status == 403


def test_ipv4_mapped_ipv6_counts_as_the_same_source(world: World) -> None:
    """Failures are counted per source IP; ::ffff:a.b.c.d is a.b.c.d (ACLs agree)."""
    _arrange(world, "password")
    for index in range(10):
        world.clock.advance(1)
        _fail(world, "password", LOCK_IP if index % 2 else f"::ffff:{LOCK_IP}")
    assert [lock.ip for lock in world.sandbox.lockouts()] == [LOCK_IP]
    world.clock.advance(1)
    assert _good(world, f"::ffff:{LOCK_IP}").status == 403


def test_locked_ip_is_refused_even_for_a_phone_number_uri(world: World) -> None:
    """'All calls from that IP receive 403' during lockout (sip_edge.py: every Request-URI)."""
    _arrange(world, "password")
    _failures(world, "password", 10)
    world.clock.advance(1)
    world.http.sent.clear()
    result = world.sandbox.invite(Invite(LOCK_IP, NUMBER_URI))
    assert result.status == 403
    assert _answers(world) == []
    assert [h["HangupCauseCode"] for h in _hangups(world)] == ["4210"]
    world.http.sent.clear()
    assert world.sandbox.invite(Invite("198.51.100.8", NUMBER_URI)).status == 200


# --- 6. signed callbacks -------------------------------------------------------------------------


def test_answer_callback_is_signed_as_plivo_signs(world: World) -> None:
    """A passed call fetches answer_url with V3 and Ma-V3 signatures, one nonce (docs/plivo.md)."""
    world.protect("credential")
    result = world.call(
        GOOD_IP, username="frontdesk", password=CALLER_PASSWORD, from_="sip:desk@pbx.test"
    )
    assert result.status == 200
    sent = [s for s in world.http.sent if urlsplit(s[1]).path == "/answer"]
    assert len(sent) == 1
    method, url, headers, body = sent[0]
    assert url == BASE_URL + "/answer"
    params = parse_qs((body or b"").decode(), keep_blank_values=True)
    v3 = signature.Keyring([TOKEN]).verify(headers, method, url, params)
    ma_v3 = signature.Keyring([], [MAIN_TOKEN]).verify(headers, method, url, params)
    assert (v3.scheme, ma_v3.scheme) == ("v3", "ma-v3")
    assert [k for k in headers if "nonce" in k.lower()] == [signature.V3_NONCE_HEADER]
    assert v3.nonce == ma_v3.nonce == headers[signature.V3_NONCE_HEADER]
    tampered = {**params, "SIPAuthUser": ["someone-else"]}
    with pytest.raises(signature.SignatureError):
        signature.Keyring([TOKEN]).verify(headers, method, url, tampered)
    form = {k: v[0] for k, v in params.items()}
    assert form["CallUUID"] == result.call_uuid
    assert form["From"] == "sip:desk@pbx.test"
    assert form["To"] == URI
    assert form["Direction"] == "inbound"
    assert form["CallStatus"] == "ringing"
    assert form["Event"] == "StartApp"
    statuses = [
        e.data["status"]
        for e in _call(world, result).events
        if e.kind == "callback" and e.data.get("callback") == "answer"
    ]
    assert statuses == [200]


# --- 7. immediate changes ------------------------------------------------------------------------


def test_password_update_takes_effect_at_once(world: World) -> None:
    """FAQ: a password update takes effect immediately for every app using it."""
    world.protect("credential")
    assert _good(world, GOOD_IP).status == 200
    new_password = "Rotated-Passw0rd-77"
    world.account.update_credential(_credential_uuid(world), {"password": new_password})
    old = world.call(GOOD_IP, username="frontdesk", password=CALLER_PASSWORD)
    assert old.status == 403
    new = world.call(GOOD_IP, username="frontdesk", password=new_password)
    assert new.status == 200


def test_acl_changes_take_effect_at_once(world: World) -> None:
    """FAQ: adding or removing ACL entries takes effect immediately."""
    world.protect("ip_acl", allow=(f"{GOOD_IP}/32",))
    assert world.call(GOOD_IP).status == 200
    acl = world.account.acl(_acl_uuid(world))
    (entry,) = list(acl.entries)
    world.account.remove_entry(acl.uuid, entry)
    assert world.call(GOOD_IP).status == 403
    ipv6 = "2001:db8:200::42"
    assert world.call(ipv6).status == 403
    world.account.add_entry(acl.uuid, {"ip_address": "2001:db8:200::", "cidr_prefix": "48"})
    assert world.call(ipv6).status == 200


# --- 8. no secret leaks --------------------------------------------------------------------------


def _callback_text(world: World) -> str:
    parts = []
    for method, url, headers, body in world.http.sent:
        parts.append(f"{method} {url} {json.dumps(headers)} {(body or b'').decode()}")
    return "\n".join(parts)


@pytest.mark.parametrize("password", [CALLER_PASSWORD, WRONG_PASSWORD])
def test_caller_password_never_leaks(world: World, password: str) -> None:
    """Security: SIP credentials are never in callbacks; the timeline holds none either."""
    world.protect("ip_acl_and_credential", allow=("203.0.113.0/24",))
    challenge = _challenge(world)
    auth = digest.answer(challenge, "frontdesk", password, "INVITE", URI)
    header = auth.header()
    result = world.sandbox.invite(Invite(GOOD_IP, URI, authorization=header))
    assert result.status == (200 if password == CALLER_PASSWORD else 403)
    call = _call(world, result)
    secrets = [
        password,
        header,
        auth.response,
        challenge.nonce,
        world.account.credential(_credential_uuid(world)).ha1,
    ]
    timeline = call.text() + "\n" + json.dumps(call.summary())
    callbacks = _callback_text(world)
    assert callbacks  # the app heard about the call
    for secret in secrets:
        assert secret not in timeline
        assert secret not in callbacks
    assert "Digest " not in timeline
    assert "Proxy-Authorization" not in timeline


# --- 9. the HTTP path and the CLI -------------------------------------------------------------


def test_http_client_does_the_407_exchange(live: Any) -> None:
    """Credential auth is a 407 challenge/response; over HTTP the caller answers it."""
    live.protect("credential")
    client = SandboxClient(live.url, AUTH_ID, TOKEN)
    answer = client.call(GOOD_IP, URI, username="frontdesk", password=CALLER_PASSWORD)
    assert answer["status"] == 200
    assert answer["challenged"] is True
    assert answer["call"]["sip"]["SIPAuthUser"] == "frontdesk"
    assert CALLER_PASSWORD not in json.dumps(answer)
    refused = client.call(GOOD_IP, URI, username="frontdesk", password=WRONG_PASSWORD)
    assert refused["status"] == 403
    assert refused["call"]["hangup"]["HangupCauseCode"] == "4210"


def test_http_control_api_refuses_a_wrong_token(live: Any) -> None:
    """Issue: the sandbox's API takes Basic auth with the account's auth ID and token."""
    client = SandboxClient(live.url, AUTH_ID, "not-the-account-token-000")
    with pytest.raises(SandboxError) as caught:
        client.call(GOOD_IP, URI)
    assert caught.value.status == 401
    assert live.sandbox.calls == {}


def _cli_call(live: Any, password: str, *extra: str) -> Any:
    args = [
        "sandbox",
        "call",
        "--from-ip",
        GOOD_IP,
        "--request-uri",
        URI,
        "--username",
        "frontdesk",
        "--password-env",
        "PW",
        *extra,
    ]
    return live.app.test_cli_runner().invoke(args=args, env={"PW": password})


def test_cli_call_prints_the_timeline(live: Any) -> None:
    """Credential auth through `sandbox call`; it prints the call's timeline."""
    live.protect("credential")
    result = _cli_call(live, CALLER_PASSWORD)
    assert result.exit_code == 0, result.output
    assert f"-> {URI}" in result.output
    assert "credential: passed as frontdesk" in result.output
    assert "result: 200" in result.output
    assert CALLER_PASSWORD not in result.output


def test_cli_call_wrong_password_exits_3(live: Any) -> None:
    """A wrong password is refused (403); the CLI exits 3 (refused)."""
    live.protect("credential")
    result = _cli_call(live, WRONG_PASSWORD)
    assert result.exit_code == 3, result.output
    assert "result: 403" in result.output
    assert WRONG_PASSWORD not in result.output


def test_cli_call_json(live: Any) -> None:
    """A refused call in --json reports status 403 and sip_auth_failed 4210."""
    live.protect("credential")
    result = _cli_call(live, WRONG_PASSWORD, "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["status"] == 403
    assert data["challenged"] is True
    assert data["call"]["hangup"]["HangupCauseName"] == "sip_auth_failed"
    assert WRONG_PASSWORD not in result.stdout
