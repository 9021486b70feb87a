"""The sandbox's SIP front (sandbox/sip_server.py) driven by a Python UDP socket: transactions,
retransmissions, dialogs, the odd and the malformed. SIPp's runs are in test_sip_inbound.py."""

from __future__ import annotations

import random
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.harness import free_port, start
from sandbox import digest
from sandbox.sip_message import (
    Request,
    Response,
    authorization,
    challenge,
    new_branch,
    new_tag,
    params,
    parse,
    response_to,
)
from sandbox.sip_server import SipServer, parse_listen
from sipguard.calls.causes import AUTH_CREDENTIAL, AUTH_IP_ACL
from tests.support.config import app_config
from tests.support.sandbox import APP_ID, CALLER_PASSWORD, URI, World, callback_forms, hangup_form

CALLER_IP = "127.0.0.2"
LEGACY = "sip:trunk@legacy.example.net"  # tests/data/voice.toml speaks to it, then hangs up


class Caller:
    """A SIP caller on a loopback socket, writing its requests by hand."""

    def __init__(self, front: tuple[str, int], ip: str = CALLER_IP) -> None:
        self.front = front
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((ip, 0))
        self.socket.settimeout(5)
        self.port = self.socket.getsockname()[1]
        self.tag = new_tag()
        self.call_id = new_tag() + "@" + ip
        self.ip = ip

    def request(
        self,
        method: str,
        cseq: int = 1,
        *,
        uri: str = URI,
        caller: str | None = None,
        **headers: str,
    ) -> Request:
        request = Request(method=method, uri=uri)
        request.add("Via", f"SIP/2.0/UDP {self.ip}:{self.port};branch={new_branch()};rport")
        request.add("From", f"<{caller or f'sip:caller@{self.ip}'}>;tag={self.tag}")
        request.add("To", headers.pop("to", f"<{uri}>"))
        request.add("Call-ID", self.call_id)
        request.add("CSeq", f"{cseq} {method}")
        request.add("Contact", f"<sip:caller@{self.ip}:{self.port}>")
        for name, value in headers.items():
            request.add(name.replace("_", "-"), value)
        return request

    def send(self, message: Request | Response | bytes) -> bytes:
        data = message if isinstance(message, bytes) else message.serialise()
        self.socket.sendto(data, self.front)
        return data

    def receive(self) -> tuple[Request | Response, bytes]:
        data, _ = self.socket.recvfrom(65535)
        return parse(data), data

    def expect(self, status: int) -> tuple[Response, bytes]:
        """Receive until a response with `status` (100 Trying is skipped)."""
        while True:
            message, data = self.receive()
            if isinstance(message, Response) and message.status == 100 and status != 100:
                continue
            assert isinstance(message, Response), message.first_line()
            assert message.status == status, message.first_line()
            return message, data

    def ack(self, invite: Request, response: Response) -> Request:
        """The ACK of `response` (for a non-2xx, in the INVITE's transaction: its branch)."""
        ack = Request(method="ACK", uri=invite.uri)
        via = invite.values("via")[0] if response.status >= 300 else self.request("ACK").get("via")
        ack.add("Via", via or "")
        ack.add("From", invite.get("from") or "")
        ack.add("To", response.get("to") or "")
        ack.add("Call-ID", invite.call_id)
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        self.send(ack)
        return ack

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def front(world: World) -> Iterator[SipServer]:
    with SipServer(world.sandbox, "127.0.0.1", 0, t1=0.02) as server:
        yield server


@pytest.fixture
def caller(front: SipServer) -> Iterator[Caller]:
    found = Caller((front.host, front.port))
    yield found
    found.close()


def _challenged(caller: Caller) -> digest.Challenge:
    """Send a first INVITE; return the sandbox's 407 challenge (its ACK sent)."""
    first = caller.request("INVITE")
    caller.send(first)
    challenged, _ = caller.expect(407)
    caller.ack(first, challenged)
    offered = challenge(challenged)
    assert offered is not None and offered.realm == "app.plivo.com"
    assert offered.qop == "auth"
    return offered


def test_a_retransmitted_invite_is_answered_from_its_transaction_and_counted_once(
    world: World, front: SipServer, caller: Caller
) -> None:
    world.protect(AUTH_CREDENTIAL)
    offered = _challenged(caller)
    wrong = digest.answer(offered, "frontdesk", "Wrong-Passw0rd-99", "INVITE", URI)
    second = caller.send(caller.request("INVITE", 2, Proxy_Authorization=wrong.header()))
    refused, data = caller.expect(403)
    for _ in range(11):  # eleven resends: decided anew, they would lock the source out
        caller.send(second)
        again, resent = caller.expect(403)
        assert resent == data
    assert world.sandbox.lockouts() == []
    assert len(world.sandbox.calls) == 1
    assert len(callback_forms(world, "/hangup")) == 1


def test_the_200_is_resent_until_the_ack_then_bye_ends_the_call(
    world: World, front: SipServer, caller: Caller
) -> None:
    world.protect(AUTH_IP_ACL, allow=(f"{CALLER_IP}/32",))
    invite = caller.request("INVITE")
    caller.send(invite)
    trying, _ = caller.expect(100)
    assert trying.tag("to") is None
    ok, data = caller.expect(200)
    assert caller.expect(200)[1] == data  # not ACKed yet: the same 200 again
    assert ok.get("content-type") == "application/sdp"
    assert b"m=audio" in ok.body
    via = params(ok.values("via")[0])[1]
    assert (via["received"], via["rport"]) == (CALLER_IP, str(caller.port))
    caller.ack(invite, ok)
    bye = caller.request("BYE", 2, to=ok.get("to") or "")
    caller.send(bye)
    message, _ = caller.receive()
    while isinstance(message, Response) and message.cseq[1] == "INVITE":
        message, _ = caller.receive()  # a 200 resent before the ACK arrived
    assert isinstance(message, Response)
    assert (message.status, message.cseq) == (200, (2, "BYE"))
    assert hangup_form(world)["HangupSource"] == "Caller"


def test_an_unacked_200_ends_the_call_with_a_bye_resent_until_answered(
    world: World, front: SipServer, caller: Caller
) -> None:
    world.protect(AUTH_IP_ACL, allow=(f"{CALLER_IP}/32",))
    caller.send(caller.request("INVITE"))
    ok, _ = caller.expect(200)
    byes: list[tuple[Request, bytes]] = []
    while len(byes) < 2:  # never ACKed: after 64*T1 the sandbox gives up with a BYE, resent
        message, data = caller.receive()
        if isinstance(message, Request):
            assert message.method == "BYE"
            byes.append((message, data))
    (bye, data), (_, again) = byes
    assert again == data
    assert bye.tag("from") == ok.tag("to")
    assert bye.uri == f"sip:caller@{CALLER_IP}:{caller.port}"
    caller.send(response_to(bye, 200, "OK"))
    hangup = hangup_form(world)
    assert (hangup["CallStatus"], hangup["HangupSource"]) == ("completed", "Caller")


def test_the_sandbox_ending_the_call_sends_a_bye_after_the_ack(
    world: World, front: SipServer, caller: Caller
) -> None:
    number_uri = "sip:14155550199@app.plivo.com"
    invite = caller.request("INVITE", uri=number_uri, caller=LEGACY)
    caller.send(invite)
    ok, _ = caller.expect(200)
    (call,) = world.sandbox.calls.values()
    assert call.state == "ended"  # the XML spoke and hung up before the 200 went
    caller.ack(invite, ok)
    message, _ = caller.receive()
    while isinstance(message, Response):
        message, _ = caller.receive()
    assert (message.method, message.call_id) == ("BYE", caller.call_id)
    caller.send(response_to(message, 200, "OK"))
    assert hangup_form(world)["HangupSource"] != "Caller"


def test_an_xml_that_hangs_up_before_answering_is_603(
    world: World, front: SipServer, caller: Caller
) -> None:
    # No SIP auth ran (a phone number) and no rule takes "none" for this caller: the app
    # rejects with <Hangup/>, and the call never answered.
    invite = caller.request("INVITE", uri="sip:14155550199@app.plivo.com")
    caller.send(invite)
    declined, _ = caller.expect(603)
    assert "the call ended" in (declined.get("warning") or "")
    caller.ack(invite, declined)


def test_cancel_answers_200_and_487_and_unknown_dialogs_get_481(
    world: World, front: SipServer, caller: Caller
) -> None:
    bye = caller.request("BYE", 2, to=f"<{URI}>;tag=nobody")
    caller.send(bye)
    assert caller.expect(481)[0].cseq == (2, "BYE")
    cancel = caller.request("CANCEL")
    caller.send(cancel)
    assert caller.expect(481)[0].cseq == (1, "CANCEL")
    reinvite = caller.request("INVITE", 3, to=f"<{URI}>;tag=nobody")
    caller.send(reinvite)
    caller.ack(reinvite, caller.expect(481)[0])


def test_options_answers_200_and_other_methods_405(
    world: World, front: SipServer, caller: Caller
) -> None:
    caller.send(caller.request("OPTIONS"))
    ok, _ = caller.expect(200)
    assert "INVITE" in (ok.get("allow") or "")
    caller.send(caller.request("REGISTER", uri="sip:app.plivo.com"))
    assert caller.expect(405)[0].get("allow") == ok.get("allow")


def test_garbage_is_dropped_and_unreadable_headers_are_400(
    world: World, front: SipServer, caller: Caller
) -> None:
    caller.send(b"\x00\xffnot SIP at all\r\n\r\n")
    invite = caller.request("INVITE")
    invite.set("From", '<sip:caller@127.0.0.2>;tag="unclosed')
    caller.send(invite)
    refused, _ = caller.expect(400)
    assert "quote" in (refused.get("warning") or "")
    assert world.sandbox.calls == {}
    invite.set("From", f"<sip:caller@127.0.0.2>;tag={caller.tag}")
    caller.ack(invite, refused)
    bye = caller.request("BYE", 3)
    bye.set("To", '<sip:x@y>;tag="unclosed')
    caller.send(bye)
    assert caller.expect(400)[0].cseq == (3, "BYE")
    caller.send(caller.request("OPTIONS", 2))
    caller.expect(200)
    assert front.dropped == 1


def test_damaged_datagrams_never_stop_the_front(
    world: World, front: SipServer, caller: Caller
) -> None:
    randomness = random.Random(15)  # fixed: the same damage on every run
    valid = [caller.request(method).serialise() for method in ("INVITE", "BYE", "CANCEL", "ACK")]
    for batch in range(10):  # in batches, so the kernel's receive buffer never overflows
        for _ in range(20):
            data = bytearray(randomness.choice(valid))
            for _ in range(randomness.randint(1, 4)):
                data[randomness.randrange(len(data))] = randomness.randrange(256)
            caller.send(bytes(data))
        caller.send(caller.request("OPTIONS", 100 + batch))
        while True:  # whatever the damaged ones were answered with, then the OPTIONS
            message, _ = caller.receive()
            if isinstance(message, Response) and message.cseq == (100 + batch, "OPTIONS"):
                assert message.status == 200
                break


def test_an_invite_with_an_overlong_from_is_400(
    world: World, front: SipServer, caller: Caller
) -> None:
    invite = caller.request("INVITE", caller="sip:" + "a" * 300 + "@127.0.0.2")
    caller.send(invite)
    refused, _ = caller.expect(400)
    assert "from must be at most 256" in (refused.get("warning") or "")
    caller.ack(invite, refused)
    assert world.sandbox.calls == {}


def test_the_digest_answer_reaches_the_edge_unchanged(
    world: World, front: SipServer, caller: Caller
) -> None:
    world.protect(AUTH_CREDENTIAL)
    offered = _challenged(caller)
    right = digest.answer(offered, "frontdesk", CALLER_PASSWORD, "INVITE", URI)
    second = caller.request("INVITE", 2, Proxy_Authorization=right.header())
    assert authorization(second) == right
    caller.send(second)
    ok, _ = caller.expect(200)
    (call,) = world.sandbox.calls.values()
    assert call.sip == {
        "SIPAuthType": AUTH_CREDENTIAL,
        "SIPSourceIP": CALLER_IP,
        "SIPAuthUser": "frontdesk",
    }
    assert call.app.app_id == APP_ID


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:5060", ("127.0.0.1", 5060)), ("[::1]:0", ("::1", 0))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "localhost:5060", "127.0.0.1:99999", ":5060"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_sandbox_serve_sip_listen_answers_sip(tmp_path: Path) -> None:
    """`sipguard sandbox serve --sip-listen` starts the front beside the HTTP sandbox."""
    port, sip_port = free_port(), free_port()
    sipguard = str(Path(sys.executable).parent / "sipguard")
    argv = [
        sipguard,
        "sandbox",
        "serve",
        "--port",
        str(port),
        "--sip-listen",
        f"127.0.0.1:{sip_port}",
    ]
    env = {
        **app_config(f"sqlite:///{tmp_path / 'db.sqlite'}"),
        "SANDBOX_ALICE_PBX_PASSWORD": "Alice-Pbx-Pw-42",
    }
    log = tmp_path / "sandbox.log"
    server = start("sandbox", argv, env=env, log=log, port=port, health_path="/sandbox/healthz")
    caller = Caller(("127.0.0.1", sip_port))
    try:
        caller.send(caller.request("OPTIONS"))
        assert caller.expect(200)[0].get("server") == "Plivo SIP Guard sandbox"
    finally:
        caller.close()
        server.stop()
    assert f"SIP over UDP at 127.0.0.1:{sip_port}" in log.read_text()
