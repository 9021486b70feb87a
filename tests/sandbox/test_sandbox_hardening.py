"""Odd input and races: every sandbox edge answers 4xx, or ends the call as Plivo would; never a
500, a stuck call, or a broken clock. (Findings of the sandbox review, one test each.)"""

from __future__ import annotations

import base64
import math
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from sandbox import digest
from sandbox.digest import Nonces
from sandbox.server import create_sandbox_app
from sandbox.sip_edge import Invite
from sandbox.timeline import SandboxClock, safe_address, safe_url
from sipguard.errors import ConfigError, ValidationError
from sipguard.monitoring.lockout import Tracker
from tests.sandbox.test_sandbox_calls import XML, call_scripted, hangup_form, scripted
from tests.support.config import AUTH_ID, TOKEN
from tests.support.sandbox import CALLER_PASSWORD, START, URI, World

BASIC = {"Authorization": "Basic " + base64.b64encode(f"{AUTH_ID}:{TOKEN}".encode()).decode()}


@pytest.mark.parametrize(
    ("page", "code"),
    [
        ('<Response><Wait length="99999999999999999999"/></Response>', "4010"),
        (f'<Response><Wait length="{"9" * 5000}"/></Response>', "4010"),
        ('<Response><Record maxLength="' + "9" * 400 + '"/></Response>', "4010"),
        ("<Response><Redirect>http://[::1</Redirect></Response>", "8011"),
        ("<Response><Redirect></Redirect></Response>", "8011"),
        (f'<Response><Redirect method="G&#10;ET">{XML}/x</Redirect></Response>', "8011"),
        (
            '<Response><Dial action="notaurl"><Number>+14155550125</Number></Dial></Response>',
            "8011",
        ),
        (
            '<Response><Dial><User sipAuthUsername="a">sip:dave@ipauth.example.test</User>'
            "</Dial></Response>",
            "8011",
        ),
    ],
)
def test_odd_xml_ends_the_call_with_a_plivo_code_and_a_hangup(page: str, code: str) -> None:
    """Huge numbers are clamped; bad URLs, methods or half credentials are invalid XML (8011)."""
    sandbox, http = scripted({"/answer": page})
    call = call_scripted(sandbox)
    assert call.state == "ended" and call.settled.is_set()
    assert hangup_form(http.sent)["HangupCauseCode"] == code


def test_dial_timeout_with_huge_numbers_is_clamped() -> None:
    """A Dial timeout or timeLimit beyond 24 h is read as 24 h (docs/plivo.md, XML), not an
    overflow."""
    huge = "1" + "0" * 400
    dial = (
        f'<Response><Dial timeout="{huge}" timeLimit="{huge}">'
        "<Number>+14155550125</Number></Dial></Response>"
    )
    sandbox, http = scripted({"/answer": dial})
    call_scripted(sandbox)
    assert hangup_form(http.sent)["HangupCauseCode"] == "4010"


def test_nonces_survive_many_threads() -> None:
    """One Nonces shared by server threads (challenges never answered pile up meanwhile): no
    error, and every fresh nonce redeems exactly once."""
    nonces, errors, refused = Nonces(), [], []

    def answered() -> None:
        for _ in range(300):
            nonce = nonces.issue("r", "sip:u", START)
            if not nonces.redeem(nonce, "sip:u", START):
                refused.append(nonce)
            assert not nonces.redeem(nonce, "sip:u", START)

    def unanswered() -> None:
        for _ in range(2000):
            nonces.issue("r", "sip:u", START)

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - the test reports any failure
                errors.append(exc)

        return run

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so races show up in a short run
    try:
        threads = [threading.Thread(target=guarded(w)) for w in [answered, unanswered] * 4]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and refused == []


def test_clock_refuses_what_it_cannot_hold(world: World) -> None:
    """NaN, infinities, negative and > 366 days are 400 and leave the clock as it was."""
    client = create_sandbox_app(world.sandbox, TOKEN).test_client()
    for advance in (math.nan, math.inf, -1, 3e11, 1e400):
        answer = client.post("/sandbox/clock", json={"advance": advance}, headers=BASIC)
        assert answer.status_code == 400, advance
    assert world.clock.now() == START
    assert client.get("/sandbox/clock", headers=BASIC).status_code == 200
    with pytest.raises(ValueError):
        SandboxClock(START).advance(math.nan)


@pytest.mark.parametrize("ring_timeout", ["0", "abc", "1" + "0" * 400, "9" * 5000, ["1"], -5])
def test_make_call_ring_timeout_must_be_whole_seconds(world: World, ring_timeout: object) -> None:
    """ring_timeout is whole seconds from 1: anything else is a 400, not a 500 or a silent 60 s."""
    fields = {
        "from": "+14155550100",
        "to": "+14155550125",
        "answer_url": "https://voice.example.test/answer",
        "ring_timeout": ring_timeout,
    }
    with pytest.raises(ValidationError, match="ring_timeout"):
        world.sandbox.make_call(fields)
    assert world.sandbox.calls == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [("from", "not a number"), ("from", "+1415\n5550100"), ("caller_name", "x" * 51)],
)
def test_make_call_checks_from_and_caller_name(world: World, field: str, value: str) -> None:
    """from is a number or SIP URI; caller_name at most 50 characters (docs/plivo.md, REST API)."""
    fields = {
        "from": "+14155550100",
        "to": "+14155550125",
        "answer_url": "https://voice.example.test/answer",
        field: value,
    }
    with pytest.raises(ValidationError, match=field):
        world.sandbox.make_call(fields)


def test_make_call_to_many_destinations_runs_one_job(app, app_config) -> None:
    """A Make Call to several destinations starts one background job, not one per destination."""
    from tests.support.sandbox import make_world

    jobs: list[Callable[[], None]] = []
    world = make_world(app, app_config, run=jobs.append)
    uuids = world.sandbox.make_call(
        {
            "from": "+14155550100",
            "to": "+14155550125<+14155550123<+14155550124",
            "answer_url": "https://voice.example.test/answer",
        }
    )
    assert len(uuids) == 3 and len(jobs) == 1
    jobs[0]()
    states = sorted(call.state for call in world.sandbox.calls.values())
    assert states == ["ended", "ended", "parked"]  # busy, no answer; the answered one is at the AI


def test_refused_call_sends_no_sip_auth_user(world: World) -> None:
    """SIPAuthUser is the authenticated username (docs/plivo.md, SIP authentication); a refused
    caller's name is not sent."""
    world.protect("credential", username="frontdesk")
    result = world.call("198.51.100.4", username="ceo-account", password=CALLER_PASSWORD)
    assert result.status == 403
    body = world.http.sent[-1][3] or b""
    assert b"SIPAuthUser" not in body and b"ceo-account" not in body
    assert b"SIPSourceIP=198.51.100.4" in body


def test_a_digest_answer_must_echo_the_offered_qop(world: World) -> None:
    """RFC 7616: the challenge offers qop=auth, so an RFC 2069-style answer is refused."""
    world.protect("credential", username="frontdesk")
    challenge = digest.Challenge.parse(
        str(world.sandbox.invite(Invite("198.51.100.4", URI)).challenge)
    )
    legacy = digest.answer(
        digest.Challenge(challenge.realm, challenge.nonce, qop=None),
        "frontdesk",
        CALLER_PASSWORD,
        "INVITE",
        URI,
    )
    result = world.sandbox.invite(Invite("198.51.100.4", URI, authorization=legacy.header()))
    assert result.status == 403


def test_transfer_refuses_an_unusable_aleg_url(world: World) -> None:
    """aleg_url must be an absolute http(s) URL: 400 at the API, the call stays with the AI."""
    world.protect("ip_acl", allow=("198.51.100.0/24",))
    call = world.sandbox.calls[str(world.call("198.51.100.4").call_uuid)]
    assert call.state == "parked"
    for url in ("http://[::1", "ftp://x/y", "/handoff/support"):
        with pytest.raises(ValidationError, match="aleg_url"):
            world.sandbox.transfer(call.uuid, {"legs": "aleg", "aleg_url": url})
    assert call.state == "parked"


def _lock(world: World, source: str) -> None:
    world.protect("credential", username="frontdesk")
    for _ in range(10):
        assert world.call(source, username="frontdesk", password="Wrong-Passw0rd-1").status == 403


def test_a_locked_ip_gets_403_even_at_an_unknown_request_uri(world: World) -> None:
    """'All calls from that IP receive 403' (docs/plivo.md, SIP authentication), whatever they dial;
    no call is recorded."""
    _lock(world, "198.51.100.5")
    calls = len(world.sandbox.calls)
    result = world.sandbox.invite(Invite("198.51.100.5", "sip:99999999999999999999@app.plivo.com"))
    assert (result.status, result.call_uuid) == (403, None)
    assert len(world.sandbox.calls) == calls


def test_an_ipv6_zone_does_not_open_a_new_window(world: World) -> None:
    """fe80::1%1 is fe80::1: switching notation does not escape the lockout."""
    _lock(world, "fe80::1")
    assert world.sandbox.invite(Invite("fe80::1%1", URI)).status == 403


def test_a_failure_from_a_new_source_counts_when_many_sources_are_tracked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source whose INVITE goes over the tracking limit is forgotten with the idle ones;
    its failure still counts (a 403 that says so), it does not raise KeyError."""
    monkeypatch.setattr("sandbox.sip_edge.MAX_TRACKED_SOURCES", 2)
    world.protect("ip_acl", allow=("192.0.2.0/24",))
    for source in ("192.0.2.1", "192.0.2.2"):
        assert world.call(source).status == 200  # two idle trackers: at the limit
    result = world.call("198.51.100.9")
    assert result.status == 403
    [auth] = [e for e in world.sandbox.calls[str(result.call_uuid)].events if e.kind == "auth"]
    assert auth.data["counted"] is True


def test_idle_trackers_are_forgotten() -> None:
    """A source with no lockout and no failure in the last 60 s has nothing left to count."""
    tracker = Tracker("192.0.2.1")
    assert tracker.idle(START)
    tracker.fail(START)
    assert not tracker.idle(START + timedelta(seconds=59))
    assert tracker.idle(START + timedelta(seconds=60))
    for second in range(10):
        tracker.fail(START + timedelta(seconds=100 + second))
    assert not tracker.idle(START + timedelta(seconds=168))  # locked until 169
    assert tracker.idle(START + timedelta(seconds=169))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:Answer-Pw-123@host/answer", "https://host/answer"),
        ("https://h/a?x=1;token=SECRET", "https://h/a?…"),
        (
            "https://h/a?handoff_url=https%3A%2F%2Fx%2F%3Ftoken%3Dabc&b=2",
            "https://h/a?handoff_url=…&b=2",
        ),
        ("http://[::1", "[unreadable URL]"),
    ],
)
def test_safe_url_hides_what_could_be_a_secret(url: str, shown: str) -> None:
    """Timelines show no userinfo, no ;-separated query, no token-like values."""
    assert safe_url(url) == shown


def test_safe_address_hides_a_password_in_a_sip_uri() -> None:
    """sip:bob:hunter2@pbx is shown as sip:bob@pbx."""
    assert safe_address("sip:bob:hunter2@pbx.example.com") == "sip:bob@pbx.example.com"
    assert safe_address("sip:bob@pbx.example.com") == "sip:bob@pbx.example.com"


def test_basic_scheme_is_case_insensitive(world: World) -> None:
    """RFC 9110: 'basic' is the same scheme as 'Basic'."""
    client = create_sandbox_app(world.sandbox, TOKEN).test_client()
    header = {"Authorization": BASIC["Authorization"].replace("Basic", "basic")}
    assert client.get("/sandbox/lockouts", headers=header).status_code == 200


@pytest.mark.parametrize("field", ["from", "to", "caller_name", "request_uri"])
def test_invite_refuses_control_characters(world: World, field: str) -> None:
    """A newline in a header value could forge timeline lines: 400."""
    client = create_sandbox_app(world.sandbox, TOKEN).test_client()
    body = {"source_ip": "198.51.100.4", "request_uri": URI, field: "sip:a@b\nfake line"}
    answer = client.post("/sandbox/invite", json=body, headers=BASIC)
    assert answer.status_code == 400 and field in answer.get_json()["error"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("SipAuth/Credential/", {"username": "abc", "password": CALLER_PASSWORD, "realm": "x"}),
        ("SipAuth/IpAccessControlList/", {"name": "a", "owner": "b"}),
    ],
)
def test_unknown_fields_are_refused(world: World, path: str, body: dict[str, str]) -> None:
    """Every resource refuses a field it does not have, as Application already did."""
    client = create_sandbox_app(world.sandbox, TOKEN).test_client()
    answer = client.post(f"/v1/Account/{AUTH_ID}/{path}", json=body, headers=BASIC)
    assert answer.status_code == 400 and "unknown parameter" in answer.get_json()["error"]


def test_a_duplicate_app_id_in_the_config_is_a_config_error(app, tmp_path: Path) -> None:
    """Two [[applications]] with one app_id fail at start-up with a message, not a traceback."""
    from sandbox.factory import build

    text = "\n".join(
        ["[[applications]]", "app_id = '1'", "app_name = 'a'", "answer_url = 'https://a/'"] * 2
    )
    path = tmp_path / "sandbox.toml"
    path.write_text(text, encoding="utf-8")
    settings = app.extensions["sipguard"].settings
    with pytest.raises(ConfigError, match="already exists"):
        build(settings, {}, path)


def test_a_pbx_refuses_an_answer_without_the_offered_qop() -> None:
    """The simulated PBXs hold Plivo's side to the same RFC 7616 rule as Plivo holds callers."""
    from sandbox.config import EndpointAuth

    pbx = EndpointAuth("pbx.example.test", "alice", digest.ha1("alice", "pbx.example.test", "Pw"))
    uri = "sip:alice@pbx.example.test"
    good = digest.answer(pbx.challenge(uri, START), "alice", "Pw", "INVITE", uri)
    assert pbx.accepts(good, uri, START)
    nonce = pbx.challenge(uri, START).nonce
    legacy = digest.answer(
        digest.Challenge("pbx.example.test", nonce, qop=None), "alice", "Pw", "INVITE", uri
    )
    assert not pbx.accepts(legacy, uri, START)


def test_the_served_sandbox_under_parallel_calls_and_rest_changes() -> None:
    """8 threads of digest calls, REST changes and listings on loopback: no 500, no lost nonce."""
    from sandbox.client import SandboxClient
    from tests.support.sandbox import serve

    sandbox, _ = scripted({"/answer": "<Response><Speak>hi</Speak></Response>"})
    account = sandbox.account
    credential = account.create_credential({"username": "frontdesk", "password": CALLER_PASSWORD})
    account.update_application(
        "20000000000000000002", {"sip_auth_type": "credential", "credential_uuid": credential.uuid}
    )
    spare = account.create_acl({"name": "spare"})
    statuses: list[int] = []
    failures: list[BaseException] = []

    with serve(sandbox) as url:

        def caller(index: int) -> None:
            client = SandboxClient(url, AUTH_ID, TOKEN)
            for _ in range(25):
                answer = client.call(f"198.51.100.{index}", URI, username="frontdesk",
                                     password=CALLER_PASSWORD)  # fmt: skip
                statuses.append(answer["status"])

        def changer() -> None:
            import requests

            session = requests.Session()
            session.auth = (AUTH_ID, TOKEN)
            root = f"{url}/v1/Account/{AUTH_ID}/SipAuth/IpAccessControlList/{spare.uuid}/Entry/"
            for index in range(25):
                made = session.post(root, json={"ip_address": f"192.0.2.{index}"}, timeout=10)
                statuses.append(made.status_code)
                listed = session.get(f"{url}/sandbox/calls", timeout=10)
                statuses.append(listed.status_code)
                gone = session.delete(f"{root}{made.json()['entry_uuid']}/", timeout=10)
                statuses.append(gone.status_code)

        def run(target: Callable[..., None], *args: int) -> threading.Thread:
            def guarded() -> None:
                try:
                    target(*args)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failures.append(exc)

            thread = threading.Thread(target=guarded)
            thread.start()
            return thread

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # switch threads often, so races show up in a short run
        try:
            threads = [run(caller, i) for i in range(1, 7)] + [run(changer), run(changer)]
            for thread in threads:
                thread.join(timeout=60)
        finally:
            sys.setswitchinterval(interval)
    assert failures == []
    assert statuses.count(200) == 6 * 25 + 2 * 25  # every call connected, every listing
    assert sorted(set(statuses)) == [200, 201, 204]


def test_dial_attributes_the_sandbox_does_not_play_are_named_in_the_timeline() -> None:
    """dialMusic and the like are not simulated, and the timeline says so."""
    dial = (
        '<Response><Dial dialMusic="real" hangupOnStar="true">'
        "<Number>+14155550125</Number></Dial></Response>"
    )
    sandbox, _ = scripted({"/answer": dial})
    call = call_scripted(sandbox)
    assert "not simulated: dialMusic, hangupOnStar" in call.text()
