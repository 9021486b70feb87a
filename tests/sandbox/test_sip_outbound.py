"""Real outbound legs: the sandbox dials an agent's PBX on loopback over SIP (sandbox/sip_client).

First the client transactions against a tiny scripted UDP responder (retransmission, ACKs,
digest retry, CANCEL, BYE), then Kamailio as the agent's PBX (devtools/sip_peers.py):
401 and 407, MD5 and SHA-256, right and wrong password, a PBX that never answers the
challenge, busy; and the whole path from the app's Dial XML to its /dial-action.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from devtools.sip_peers import Pbx, kamailio_cfg
from sandbox import digest, sip_client, sip_message
from sandbox.config import SandboxConfig, load_sandbox_config
from sandbox.engine import Sandbox
from sandbox.factory import build
from sandbox.legs import DEFAULT_TALK_SECONDS, Leg, Legs
from sandbox.sip_message import Request, Response
from sandbox.timeline import SandboxClock
from sipguard.errors import ConfigError
from tests.sandbox.test_sandbox_calls import (
    XML,
    Scripted,
    assert_no_leaks,
    call_scripted,
    dial_xml,
    forms,
    legs,
    pbx_both,
    scripted,
    user,
)
from tests.support.config import CANARIES, DATA
from tests.support.sandbox import START, load_config, make_world, new_sandbox
from tests.support.sip_peers import kamailio

FAST = sip_client.Timers(t1=0.01, t2=0.08)  # Timer B = 0.64 s
PASSWORD = "Agent-Pbx-Pw-1"
WRONG = "Not-The-Pbx-Pw-2"
STOP = 5.0  # seconds a responder thread gets to finish

# -- a scripted UDP responder -------------------------------------------------------------------

Script = Callable[[Request, "Responder"], list[Response] | list[Request]]


@dataclass
class Responder:
    """A UDP peer on 127.0.0.1: every request it receives is recorded and answered by `script`
    (with responses, or with requests of its own); responses it receives are recorded."""

    script: Script
    sock: socket.socket = field(default_factory=lambda: socket.socket(type=socket.SOCK_DGRAM))
    received: list[Request] = field(default_factory=list)
    answers: list[Response] = field(default_factory=list)
    uri: str = ""

    def serve(self, done: threading.Event) -> None:
        """Answer until `done`, then read what is still queued (the last ACK, say) and stop."""
        self.sock.settimeout(0.05)
        while True:
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                if done.is_set():
                    return
                continue
            message = sip_message.parse(data)
            if isinstance(message, Response):
                self.answers.append(message)
                continue
            self.received.append(message)
            for reply_ in self.script(message, self):
                self.sock.sendto(reply_.serialise(), source)

    def sent(self, method: str) -> list[Request]:
        return [r for r in self.received if r.method == method]


@contextmanager
def responder(script: Script) -> Iterator[Responder]:
    peer = Responder(script)
    peer.sock.bind(("127.0.0.1", 0))
    peer.uri = f"sip:alice@127.0.0.1:{peer.sock.getsockname()[1]}"
    done = threading.Event()
    thread = threading.Thread(target=peer.serve, args=(done,), daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        done.set()
        thread.join(STOP)
        peer.sock.close()


def reply(request: Request, status: int, reason: str, **headers: str) -> Response:
    response = sip_message.response_to(request, status, reason, to_tag="pbx-tag")
    for name, value in headers.items():
        response.add(name.replace("_", "-"), value)
    return response


def rings_until_cancelled(request: Request, peer: Responder) -> list[Response]:
    """A phone that rings (180) until the INVITE is cancelled, then ends it with 487."""
    if request.method == "INVITE":
        return [reply(request, 180, "Ringing")]
    if request.method == "CANCEL":
        invite = peer.sent("INVITE")[0]
        return [reply(request, 200, "OK"), reply(invite, 487, "Request Terminated")]
    return []


def dial(
    uri: str, *, headers: dict[str, str] | None = None, ring_seconds: float = 5.0
) -> sip_client.Outcome:
    """Dial `uri` as alice with the PBX's password, on the fast timers."""
    return sip_client.dial(
        uri,
        username="alice",
        password=PASSWORD,
        headers=headers or {},
        ring_seconds=ring_seconds,
        timers=FAST,
    )


# -- which URIs are dialled ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("sip:alice@127.0.0.1:5071", ("127.0.0.1", 5071)),
        ("sip:alice@127.0.0.2:5071;transport=udp", ("127.0.0.2", 5071)),
        ("sip:127.0.0.1:5080", ("127.0.0.1", 5080)),
        ("sip:alice@[::1]:5071", ("::1", 5071)),
        ("sip:alice@127.0.0.1", None),  # no port: simulated
        ("sips:alice@127.0.0.1:5071", None),  # TLS is not spoken
        ("sip:alice@10.0.0.7:5071", None),  # never off loopback
        ("sip:alice@192.0.2.1:5060", None),
        ("sip:alice@localhost:5071", None),  # no DNS, not even for localhost
        ("sip:alice@pbx.example.test:5071", None),
        ("sip:alice@127.0.0.1:0", None),
        ("+14155550123", None),
    ],
)
def test_only_a_loopback_address_with_a_port_is_dialled(
    address: str, expected: tuple[str, int] | None
) -> None:
    assert sip_client.target(address) == expected


def test_dialling_anything_else_is_refused_before_a_packet_is_sent() -> None:
    with pytest.raises(ValueError, match="loopback"):
        dial("sip:alice@192.0.2.1:5060")


# -- client transactions against the responder --------------------------------------------------


def test_invite_is_retransmitted_on_one_branch_until_answered_and_the_486_is_acked() -> None:
    """Timer A: the same INVITE again until a response; the non-2xx is ACKed on its branch."""

    def script(request: Request, peer: Responder) -> list[Response]:
        if request.method == "INVITE" and len(peer.sent("INVITE")) >= 3:
            return [reply(request, 486, "Busy Here")]
        return []

    with responder(script) as peer:
        outcome = dial(peer.uri)
    invites = peer.sent("INVITE")
    assert outcome.status == 486 and outcome.dialog is None
    assert len(invites) >= 3 and len({i.branch for i in invites}) == 1
    [ack] = peer.sent("ACK")
    assert ack.branch == invites[0].branch and ack.cseq == (1, "ACK")
    assert ack.get("to") == f"<{peer.uri}>;tag=pbx-tag"


def test_no_response_ends_the_transaction_at_timer_b() -> None:
    """Timer B = 64*T1: an INVITE nobody answers ends without a status, after retransmissions."""
    with responder(lambda request, peer: []) as peer:
        outcome = dial(peer.uri)
    assert outcome.status is None and outcome.challenged is None
    assert len(peer.sent("INVITE")) >= 2
    assert outcome.elapsed >= FAST.b


def test_a_challenge_is_answered_once_with_a_digest_the_pbx_can_verify() -> None:
    """407 → ACK, then a new INVITE: same Call-ID and From tag, CSeq + 1, a new branch and a
    Proxy-Authorization that verifies against the password; a retransmitted 407 is ACKed again."""
    ha1 = digest.ha1("alice", "pbx.test", PASSWORD, "SHA-256")
    verified: list[bool] = []

    def script(request: Request, peer: Responder) -> list[Response]:
        if request.method != "INVITE":
            return []
        auth = sip_message.authorization(request)
        if auth is None:
            challenge = digest.Challenge("pbx.test", "n-1", "SHA-256")
            challenged = reply(request, 407, "Proxy Authentication Required")
            challenged.add("Proxy-Authenticate", challenge.header())
            return [challenged, challenged]  # the second is a retransmission
        verified.append(
            auth.uri == request.uri and auth.qop == "auth" and digest.verify(auth, ha1, "INVITE")
        )
        return [reply(request, 486, "Busy Here")]

    with responder(script) as peer:
        outcome = dial(peer.uri)
    first, second = peer.sent("INVITE")
    assert (outcome.status, outcome.challenged, outcome.authenticated) == (486, 407, True)
    assert verified == [True]
    assert first.call_id == second.call_id and first.tag("from") == second.tag("from")
    assert (first.cseq[0] + 1, first.branch != second.branch) == (second.cseq[0], True)
    assert second.get("authorization") is None
    acks = peer.sent("ACK")
    assert {a.branch for a in acks} == {first.branch, second.branch}
    assert len([a for a in acks if a.branch == first.branch]) == 2


def test_a_401_is_answered_with_authorization() -> None:
    def script(request: Request, peer: Responder) -> list[Response]:
        if request.method != "INVITE":
            return []
        if sip_message.authorization(request) is None:
            challenged = reply(request, 401, "Unauthorized")
            challenged.add("WWW-Authenticate", digest.Challenge("pbx.test", "n-2").header())
            return [challenged]
        return [reply(request, 403, "Forbidden")]

    with responder(script) as peer:
        outcome = dial(peer.uri)
    second = peer.sent("INVITE")[1]
    assert second.get("authorization") is not None and second.get("proxy-authorization") is None
    assert (outcome.status, outcome.challenged, outcome.authenticated) == (403, 401, True)


def test_a_2xx_is_acked_end_to_end_again_on_retransmission_and_bye_ends_the_dialog() -> None:
    """200 → ACK on a new branch to the Contact; a retransmitted 200 is ACKed again; BYE is
    retransmitted (Timer E) until the PBX answers it."""

    def script(request: Request, peer: Responder) -> list[Response]:
        if request.method == "INVITE":
            answered = reply(request, 200, "OK", Contact="<sip:alice@127.0.0.1:1>")
            return [reply(request, 180, "Ringing"), answered, answered]
        if request.method == "BYE" and len(peer.sent("BYE")) >= 2:
            return [reply(request, 200, "OK")]
        return []

    with responder(script) as peer:
        outcome = dial(peer.uri, headers={"X-PH-Team": "support"})
        assert outcome.status == 200 and outcome.dialog is not None
        assert outcome.steps == ["180 Ringing"]
        status = outcome.dialog.hang_up()
    [invite] = peer.sent("INVITE")
    acks, byes = peer.sent("ACK"), peer.sent("BYE")
    assert invite.get("x-ph-team") == "support" and invite.get("content-type") == "application/sdp"
    assert len(acks) == 2 and {a.uri for a in acks} == {"sip:alice@127.0.0.1:1"}
    assert acks[0].branch != invite.branch and acks[0].cseq == (1, "ACK")
    assert status == 200 and len(byes) >= 2 and len({b.branch for b in byes}) == 1
    assert byes[0].cseq == (2, "BYE") and byes[0].tag("to") == "pbx-tag"


def test_ringing_past_the_ring_time_is_cancelled_and_the_487_acked() -> None:
    with responder(rings_until_cancelled) as peer:
        outcome = dial(peer.uri, ring_seconds=0.2)
    [invite], [cancel] = peer.sent("INVITE"), peer.sent("CANCEL")
    assert (outcome.status, outcome.cancelled) == (487, True)
    assert cancel.branch == invite.branch and cancel.cseq == (1, "CANCEL")
    assert [a.branch for a in peer.sent("ACK")] == [invite.branch]


def test_a_bye_from_the_pbx_is_answered_200_and_ends_the_dialog() -> None:
    """The agent hangs up as soon as it is ACKed: the leg answers that BYE with 200 while its
    own BYE waits (here refused with 481, as by a PBX that already hung up)."""

    def script(request: Request, peer: Responder) -> list[Response] | list[Request]:
        if request.method == "INVITE":
            return [reply(request, 200, "OK", Contact=f"<{peer.uri}>")]
        if request.method == "BYE":
            return [reply(request, 481, "Call/Transaction Does Not Exist")]
        if request.method != "ACK":
            return []
        bye = Request(method="BYE", uri=str(request.get("from")).split(";")[0].strip("<>"))
        bye.add("Via", f"SIP/2.0/UDP {peer.uri.split('@')[1]};branch=z9hG4bK-pbx-bye")
        bye.add("From", str(request.get("to")))
        bye.add("To", str(request.get("from")))
        bye.add("Call-ID", request.call_id)
        bye.add("CSeq", "7 BYE")
        return [bye]

    with responder(script) as peer:
        outcome = dial(peer.uri)
        assert outcome.dialog is not None
        dialog = outcome.dialog
        said = Leg("leg-1", peer.uri, "answered", 0.0, dialog=dialog).hang_up()
    [answer] = [a for a in peer.answers if a.cseq == (7, "BYE")]
    assert (answer.status, answer.branch) == (200, "z9hG4bK-pbx-bye")
    assert said == "sent BYE: 481" and dialog.ended


# -- a real PBX's final answer as Plivo's outcome -----------------------------------------------


def ring(uri: str, timeout: float | None = None) -> Leg:
    """Ring `uri` as a <User> with credentials would be, on the fast timers."""
    legs_ = Legs({}, SandboxClock(START), lambda: "leg-1", FAST)
    return legs_.ring(uri, "alice", PASSWORD, timeout, at=5.0)


@pytest.mark.parametrize(
    ("status", "outcome", "cause", "code"),
    [
        (486, "busy", "Busy Line", 3010),
        (600, "busy", "Busy Line", 3010),
        (480, "no-answer", "No Answer", None),
        (408, "no-answer", "No Answer", None),
        (404, "failed", "Invalid Destination Address", 2000),
        (603, "failed", "Rejected", 3020),
        (403, "failed", "Rejected", 3020),  # refused before any challenge: not an auth failure
        (503, "failed", "Destination Out Of Service", 2010),
    ],
)
def test_a_final_status_without_a_challenge_maps_to_plivos_outcome(
    status: int, outcome: str, cause: str, code: int | None
) -> None:
    with responder(
        lambda request, peer: (
            [reply(request, status, "Final")] if request.method == "INVITE" else []
        )
    ) as peer:
        leg = ring(peer.uri)
    assert (leg.outcome, leg.cause, leg.code) == (outcome, cause, code)
    assert leg.at >= 5.0 and f"final answer {status}" in leg.steps


def test_no_answer_at_all_is_destination_out_of_service() -> None:
    with responder(lambda request, peer: []) as peer:
        leg = ring(peer.uri)
    assert (leg.outcome, leg.cause, leg.code) == ("failed", "Destination Out Of Service", 2010)
    assert f"no answer to the INVITE in {FAST.b:g} s" in leg.steps


def test_ringing_past_the_dial_timeout_is_no_answer() -> None:
    with responder(rings_until_cancelled) as peer:
        leg = ring(peer.uri, timeout=0.2)
    assert (leg.outcome, leg.cause, leg.code) == ("no-answer", "No Answer", None)
    assert leg.dialog is None and peer.sent("CANCEL")


def test_a_487_that_comes_before_the_cancels_200_is_still_acked() -> None:
    """The INVITE's final answer read while the CANCEL waits for its own is not lost."""

    def script(request: Request, peer: Responder) -> list[Response]:
        if request.method == "CANCEL":
            invite = peer.sent("INVITE")[0]
            return [reply(invite, 487, "Request Terminated"), reply(request, 200, "OK")]
        return rings_until_cancelled(request, peer) if request.method == "INVITE" else []

    with responder(script) as peer:
        outcome = dial(peer.uri, ring_seconds=0.2)
    assert (outcome.status, outcome.cancelled) == (487, True)
    assert [a.branch for a in peer.sent("ACK")] == [peer.sent("INVITE")[0].branch]


def test_a_leg_answered_for_real_hangs_up_once() -> None:
    def script(request: Request, peer: Responder) -> list[Response]:
        if request.method in ("INVITE", "BYE"):
            return [reply(request, 200, "OK", Contact=f"<{peer.uri}>")]
        return []

    with responder(script) as peer:
        leg = ring(peer.uri)
        assert leg.outcome == "answered" and leg.talk == DEFAULT_TALK_SECONDS
        said = [leg.hang_up(), leg.hang_up()]
    assert said == ["sent BYE: 200", None]
    assert len(peer.sent("BYE")) == 1


# -- [sandbox] sip_t1 ---------------------------------------------------------------------------


def world_file(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "world.toml"
    path.write_text(f"[sandbox]\n{line}\n")
    return path


def test_sip_t1_sets_every_timer(tmp_path: Path) -> None:
    config = load_sandbox_config(world_file(tmp_path, "sip_t1 = 0.05"), {}, None)
    assert config.sip_timers == sip_client.Timers(t1=0.05, t2=0.4)
    assert config.sip_timers.b == pytest.approx(3.2)
    default = load_sandbox_config(world_file(tmp_path, ""), {}, None)
    assert default.sip_timers == sip_client.Timers(t1=0.5, t2=4.0)


@pytest.mark.parametrize("value", ["0", "0.001", "11", "-1", '"fast"', "true"])
def test_sip_t1_out_of_range_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="sandbox.sip_t1"):
        load_sandbox_config(world_file(tmp_path, f"sip_t1 = {value}"), {}, None)


def test_serves_sip_t1_wins_over_the_worlds_for_the_legs(app: Flask, tmp_path: Path) -> None:
    """`sipguard sandbox serve --sip-t1` passes its T1 to build: one T1 for front and legs."""
    settings = app.extensions["sipguard"].settings
    path = world_file(tmp_path, "sip_t1 = 0.05")
    assert build(settings, {}, path).config.sip_timers == sip_client.Timers.from_t1(0.05)
    overridden = build(settings, {}, path, sip_t1=0.02).config.sip_timers
    assert overridden == sip_client.Timers(t1=0.02, t2=0.16)


# -- Kamailio as the agent's PBX ----------------------------------------------------------------


@dataclass
class Dialled:
    """One <Dial> of a Kamailio URI through the sandbox: the leg and the action form."""

    leg: dict[str, Any]
    action: dict[str, str]
    sandbox: Sandbox
    http: Scripted


def real_config(config: SandboxConfig | None = None) -> SandboxConfig:
    """The suite's world with SIP timers short enough for a test (Timer B 0.64 s)."""
    return replace(config or load_config(CANARIES), sip_timers=FAST)


def dial_pbx(running: Pbx, password: str | None = PASSWORD, attrs: str = "") -> Dialled:
    """Play `<Dial><User>` of the PBX's alice through a sandbox; stop once the call ended."""
    credentials = user(running.uri(), "alice" if password else None, password)
    xml = dial_xml(credentials).replace("<User", f"<User{attrs}", 1)
    sandbox, http = scripted({"/answer": xml}, real_config())
    call = call_scripted(sandbox)
    [action] = forms(http.sent, "/action")
    return Dialled(legs(call)[running.uri()], action, sandbox, http)


@pytest.mark.parametrize(
    "changed",
    [{"password": 'pw"); exit; #'}, {"username": "a b"}, {"mode": "ring"}, {"challenge": 403}],
)
def test_the_generated_kamailio_cfg_takes_only_safe_values(changed: dict[str, Any]) -> None:
    """Nothing a test passes can rewrite the PBX's script."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 5071, "username": "alice"}
    with pytest.raises(ValueError):
        kamailio_cfg(**{**options, "password": PASSWORD, **changed})


@pytest.mark.parametrize("challenge", [401, 407])
@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_kamailio_verifies_the_digest_and_the_leg_is_answered_then_hung_up(
    tmp_path: Path, challenge: int, algorithm: str
) -> None:
    with kamailio(tmp_path, challenge=challenge, algorithm=algorithm, password=PASSWORD) as pbx:
        dialled = dial_pbx(pbx, attrs=' sipHeaders="Team=support"')
        log = pbx.script_lines(until="BYE")
    assert dialled.leg["outcome"] == "answered"
    assert f"challenged with {challenge} (realm 127.0.0.1)" in dialled.leg["text"]
    assert (dialled.action["DialStatus"], dialled.action["DialBLegUUID"]) == (
        "completed",
        dialled.leg["leg_uuid"],
    )
    assert "auth ok for user [alice]" in log
    assert "INVITE cseq [2] X-PH-Team [support]" in log
    assert "ACK cseq [2]" in log
    assert any(line.startswith("BYE for call") for line in log)
    assert_no_leaks(dialled.sandbox, dialled.http.sent, PASSWORD)


@pytest.mark.parametrize("challenge", [401, 407])
def test_a_wrong_password_is_refused_by_kamailio_as_sip_auth_failed_4240(
    tmp_path: Path, challenge: int
) -> None:
    with kamailio(tmp_path, challenge=challenge, algorithm="SHA-256", password=PASSWORD) as pbx:
        dialled = dial_pbx(pbx, password=WRONG)
        log = pbx.script_lines(until="ACK cseq [2]")
    leg = dialled.leg
    assert (leg["outcome"], leg["cause"], leg["code"]) == ("failed", "sip_auth_failed", 4240)
    assert "the PBX rejected the credentials (403)" in leg["text"]
    assert (dialled.action["DialStatus"], dialled.action["DialHangupCause"]) == (
        "failed",
        "sip_auth_failed",
    )
    assert "auth check -2 for user [alice]" in log
    assert "ACK cseq [2]" in log and not any(line.startswith("BYE") for line in log)
    assert_no_leaks(dialled.sandbox, dialled.http.sent, PASSWORD, WRONG)


def test_no_credentials_against_kamailios_challenge_fails_4240(tmp_path: Path) -> None:
    with kamailio(tmp_path, challenge=407) as pbx:
        dialled = dial_pbx(pbx, password=None)
        log = pbx.script_lines(until="ACK cseq [1]")
    assert (dialled.leg["cause"], dialled.leg["code"]) == ("sip_auth_failed", 4240)
    assert "no sipAuthUsername/sipAuthPassword to answer it" in dialled.leg["text"]
    assert log == [
        "INVITE cseq [1] X-PH-Team [<null>]",
        "auth check -5 for user [<null>]",
        "ACK cseq [1]",
    ]


def test_a_pbx_that_never_answers_the_challenge_gives_sip_auth_timeout_4250(
    tmp_path: Path,
) -> None:
    with kamailio(tmp_path, challenge=407, mode="silent") as pbx:
        dialled = dial_pbx(pbx)
        log = pbx.script_lines()
    leg = dialled.leg
    assert (leg["outcome"], leg["cause"], leg["code"]) == ("timeout", "sip_auth_timeout", 4250)
    assert (dialled.action["DialStatus"], dialled.action["DialHangupCause"]) == (
        "timeout",
        "sip_auth_timeout",
    )
    assert "staying silent" in log  # logged before the INVITE transaction timed out


def test_a_pbx_that_forbids_after_the_answer_gives_4240(tmp_path: Path) -> None:
    with kamailio(tmp_path, challenge=401, mode="forbid") as pbx:
        dialled = dial_pbx(pbx)
        log = pbx.script_lines()
    assert (dialled.leg["cause"], dialled.leg["code"]) == ("sip_auth_failed", 4240)
    assert "auth ok for user [alice]" in log


def test_a_busy_agent_is_busy_3010(tmp_path: Path) -> None:
    with kamailio(tmp_path, challenge=407, mode="busy") as pbx:
        dialled = dial_pbx(pbx)
    leg = dialled.leg
    assert (leg["outcome"], leg["cause"], leg["code"]) == ("busy", "Busy Line", 3010)
    assert (dialled.action["DialStatus"], dialled.action["DialHangupCause"]) == (
        "busy",
        "Busy Line",
    )


def test_an_ip_authenticated_pbx_answers_without_a_challenge(tmp_path: Path) -> None:
    with kamailio(tmp_path, challenge=None) as pbx:
        dialled = dial_pbx(pbx, password=None)
    assert dialled.leg["outcome"] == "answered"
    assert "challenged" not in dialled.leg["text"]


# -- the whole path: the app's Dial XML → Kamailio → the app's /dial-action ---------------------


def app_dialling(tmp_path: Path, app_config: dict[str, str], uri: str) -> Flask:
    """The suite's app with agent alice moved to `uri` (tests/data/voice.toml otherwise)."""
    voice = (DATA / "voice.toml").read_text().replace("sip:alice@pbx.example.test", uri)
    assert uri in voice
    path = tmp_path / "voice.toml"
    path.write_text(voice)
    (tmp_path / "carol.pw").write_text((DATA / "carol.pw").read_text())
    return create_app({**app_config, "VOICE_CONFIG": str(path)})


@pytest.mark.parametrize(
    ("mode", "password", "status", "cause"),
    [
        ("answer", CANARIES["AGENT_ALICE_PASSWORD"], "completed", "Normal Hangup"),
        ("answer", PASSWORD, "failed", "sip_auth_failed"),
        ("silent", CANARIES["AGENT_ALICE_PASSWORD"], "timeout", "sip_auth_timeout"),
    ],
)
def test_the_apps_dial_reaches_kamailio_and_its_dial_action_hears_the_outcome(
    tmp_path: Path,
    app_config: dict[str, str],
    mode: str,
    password: str,
    status: str,
    cause: str,
) -> None:
    """The app's group `support` dials alice (sipAuthUsername/sipAuthPassword from
    AGENT_ALICE_PASSWORD) at Kamailio; /dial-action gets DialStatus and DialHangupCause."""
    with kamailio(tmp_path / "pbx", challenge=407, password=password, mode=mode) as pbx:
        app = app_dialling(tmp_path, app_config, pbx.uri())
        try:
            world = make_world(app, app_config, real_config())
            call = pbx_both(world)
        finally:
            app.extensions["sipguard"].store.dispose()
        log = pbx.script_lines(until="BYE" if status == "completed" else None)
    first = forms(world.http.sent, "/dial-action")[0]
    assert first["DialStatus"] == status
    if status != "completed":
        assert first["DialHangupCause"] == cause
    else:
        assert first["DialBLegUUID"] == legs(call)[pbx.uri()]["leg_uuid"]
        assert any(line.startswith("BYE for call") for line in log)
    assert "INVITE cseq [2] X-PH-Team [support]" in log  # the agent's sip_headers
    assert_no_leaks(world.sandbox, world.http.sent)


def test_make_call_to_kamailio_plays_the_answer_url_and_byes_when_the_call_ends(
    tmp_path: Path,
) -> None:
    """Make Call API: sip_auth_username/password answer Kamailio's 401; the answer_url's
    <Hangup/> ends the call, and the leg is hung up with BYE."""
    with kamailio(tmp_path, challenge=401, algorithm="SHA-256") as pbx:
        http = Scripted({"/answer": "<Response><Speak>Hello</Speak><Hangup/></Response>"})
        sandbox = new_sandbox(http, real_config())
        fields = {"from": "+14155550100", "to": pbx.uri(), "answer_url": f"{XML}/answer"}
        sandbox.make_call({**fields, "sip_auth_username": "alice", "sip_auth_password": PASSWORD})
        log = pbx.script_lines(until="BYE")
    [call] = sandbox.calls.values()
    assert (call.state, legs(call)[pbx.uri()]["outcome"]) == ("ended", "answered")
    assert [e.text for e in call.events if e.kind == "bye"] == [f"{pbx.uri()}: sent BYE: 200"]
    assert "auth ok for user [alice]" in log and any(line.startswith("BYE") for line in log)
    assert_no_leaks(sandbox, http.sent, PASSWORD)
