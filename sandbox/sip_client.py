"""Plivo's outbound leg over real SIP: an INVITE to an agent's PBX on this machine (UDP).

Only a `sip:` URI naming a loopback address and a port (``sip:alice@127.0.0.1:5071``) is
dialled; every datagram goes to that address and port, whatever the PBX's Contact says, so the
sandbox never sends SIP off this machine. The UAC side of RFC 3261 covered: the INVITE client
transaction (§17.1.1: Timer A retransmits from T1, doubling; Timer B = 64*T1 ends it without a
response; each non-2xx final response ACKed on the transaction's branch, again for each
retransmission of it), a 401/407 answered once with a digest from the `<User>`'s credentials
(§22.2, through sandbox/digest.py: MD5 or SHA-256, qop=auth with nc and cnonce) on a new INVITE
of the same Call-ID and From tag with CSeq + 1, the 2xx ACKed end to end (§13.2.2.4, again for
each retransmitted 2xx), CANCEL once the ring time runs out after a provisional response (§9.1),
and BYE on a non-INVITE client transaction (§17.1.2: Timer E from T1 to T2, Timer F = 64*T1).
Not covered: TCP/TLS, DNS (a host name is never dialled), Record-Route and Route sets, forking
(the first 2xx wins; others are not ACKed), re-INVITE, PRACK, and media: the SDP offer names a
discard port and no RTP is sent. An in-dialog BYE from the PBX is answered 200.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sandbox import digest, sip_message
from sandbox.sip_message import Request, Response, SipError

_TARGET = re.compile(r"sip:(?:[^@;?]+@)?(\[[0-9A-Fa-f:.]+\]|[0-9.]+):([0-9]{1,5})(?:;[^?]*)?")
_AUTH_HEADER = {401: "Authorization", 407: "Proxy-Authorization"}
_SDP = (
    "v=0\r\no=plivo-sandbox 0 0 IN {family} {host}\r\ns=-\r\nc=IN {family} {host}\r\nt=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


@dataclass(frozen=True)
class Timers:
    """RFC 3261's timer values (§17.1.1.1): T1 the round-trip estimate, T2 the longest
    non-INVITE retransmit interval. Smaller values make tests quick."""

    t1: float = 0.5
    t2: float = 4.0

    @classmethod
    def from_t1(cls, t1: float) -> Timers:
        """Timers for another T1, T2 scaled with it (RFC 3261's 4 s for 0.5 s)."""
        return cls(t1=t1, t2=8 * t1)

    @property
    def b(self) -> float:
        """Timer B (and F): how long a transaction waits for an answer, 64*T1."""
        return 64 * self.t1


def target(address: str) -> tuple[str, int] | None:
    """Return (host, port) when `address` is a sip: URI on a loopback address with a port."""
    match = _TARGET.fullmatch(address.strip())
    if match is None:
        return None
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None
    return (host, port) if loopback and 0 < port < 65536 else None


@dataclass
class Outcome:
    """How a real INVITE ended."""

    status: int | None  # the last INVITE's final status; None: no final answer in time
    challenged: int | None = None  # 401 or 407 when the PBX challenged
    authenticated: bool = False  # the last INVITE carried an answer to the challenge
    cancelled: bool = False  # the ring time ran out and the INVITE was cancelled
    steps: list[str] = field(default_factory=list)
    elapsed: float = 0.0  # real seconds from the first INVITE to the outcome
    dialog: Dialog | None = None  # the established call, when answered


class Dialog:
    """An answered leg: what a BYE needs, and the socket the leg was dialled from."""

    def __init__(self, leg: _Leg, invite: Request, answer: Response) -> None:
        self._leg = leg
        self._invite = invite
        self.remote_target = _remote_target(invite, answer)
        self.remote_to = _header(answer, "to")
        self.ended = False

    def hang_up(self) -> int | None:
        """Send BYE (once) and close the leg; return the BYE's final status (None: none)."""
        if self.ended:
            self._leg.close()
            return None
        self.ended = True
        number, _ = self._invite.cseq
        bye = self._leg.request("BYE", self.remote_target, self.remote_to, number + 1)
        try:
            answer = self._leg.non_invite(bye)
        finally:
            self._leg.close()
        return answer.status if answer is not None else None


class _Leg:
    """One outbound leg's socket, Call-ID and From tag, and its client transactions."""

    def __init__(
        self, uri: str, host: str, port: int, timers: Timers, caller: str, clock: Clock
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host if family == socket.AF_INET6 else "127.0.0.1", 0))
        address, local_port = self.sock.getsockname()[:2]
        self.host = f"[{address}]" if family == socket.AF_INET6 else address
        self.local = f"{self.host}:{local_port}"
        self.uri, self.destination, self.timers, self.clock = uri, (host, port), timers, clock
        self.call_id = f"{secrets.token_hex(12)}@sandbox.invalid"
        self.from_ = f"<sip:{caller}@{self.local}>;tag={sip_message.new_tag()}"
        self.to = f"<{uri}>"
        # Final responses already ACKed, by branch: a retransmission of one is ACKed again.
        self._acks: dict[str, bytes] = {}
        # Responses for another transaction read while a CANCEL or BYE waited for its own (the
        # INVITE's 487 may come before the CANCEL's 200): handed out next.
        self._held: list[Response] = []
        self.dialog: Dialog | None = None

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, uri: str, to: str, number: int) -> Request:
        """A request of this leg's Call-ID, From and a fresh branch (RFC 3261 §8.1.1)."""
        request = Request(method=method, uri=uri)
        request.add("Via", f"SIP/2.0/UDP {self.local};branch={sip_message.new_branch()};rport")
        request.add("Max-Forwards", "70")
        request.add("From", self.from_)
        request.add("To", to)
        request.add("Call-ID", self.call_id)
        request.add("CSeq", f"{number} {method}")
        return request

    def send(self, message: Request | Response) -> None:
        self.sock.sendto(message.serialise(), self.destination)

    def receive(self, until: float) -> Response | None:
        """Return the next response for this leg before `until`; answer requests on the way."""
        if self._held:
            return self._held.pop(0)
        while True:
            wait = until - self.clock()
            if wait <= 0:
                return None
            self.sock.settimeout(wait)
            try:
                data, source = self.sock.recvfrom(sip_message.MAX_DATAGRAM)
            except TimeoutError:
                return None
            except OSError:  # ICMP port unreachable on loopback: nothing listens there
                continue
            if source[:2] != self.destination:
                continue  # only the PBX dialled may answer
            try:
                message = sip_message.parse(data)
                if isinstance(message, Request):
                    self._answer_request(message)
                    continue
                if message.call_id != self.call_id:
                    continue
                branch = message.branch
            except SipError:
                continue
            if branch in self._acks and message.status >= 200:
                self.sock.sendto(self._acks[branch], self.destination)  # a retransmission
                continue
            return message

    def _answer_request(self, request: Request) -> None:
        """A BYE from the PBX ends the dialog (200); anything else is not for this leg (481)."""
        if request.method == "ACK":
            return
        ours = request.get("call-id") == self.call_id
        if request.method == "BYE" and ours and self.dialog is not None:
            self.dialog.ended = True
            self.send(sip_message.response_to(request, 200, "OK"))
            return
        self.send(sip_message.response_to(request, 481, "Call/Transaction Does Not Exist"))

    def invite(
        self, request: Request, ring_until: float, steps: list[str]
    ) -> tuple[Response | None, bool]:
        """Run an INVITE client transaction (RFC 3261 §17.1.1); return its final response, or
        None, and whether it was cancelled because the ring time ran out."""
        data = request.serialise()
        branch = str(request.branch)
        start = self.clock()
        timer_b = start + self.timers.b
        interval, resend = self.timers.t1, start + self.timers.t1
        proceeding = cancelled = False
        self.sock.sendto(data, self.destination)
        while True:
            if proceeding:
                until = timer_b if cancelled else ring_until
            else:
                until = min(resend, timer_b, ring_until)
            response = self.receive(until)
            now = self.clock()
            if response is None:
                if not proceeding and now >= min(timer_b, ring_until):
                    return None, False
                if proceeding and cancelled:
                    return None, True  # no final answer even to the CANCEL
                if proceeding:  # ring time over: cancel (§9.1), then wait for the 487
                    steps.append(f"rang {now - start:.1f} s unanswered; sent CANCEL")
                    self.non_invite(self._cancel(request))
                    cancelled, timer_b = True, now + self.timers.b
                    continue
                self.sock.sendto(data, self.destination)  # Timer A
                interval *= 2
                resend = now + interval
                continue
            if response.branch != branch or response.cseq[1] != "INVITE":
                continue
            if response.status < 200:
                if not proceeding:
                    steps.append(f"{response.status} {response.reason}".strip())
                proceeding = True
                continue
            if response.status >= 300:
                ack = self._ack_failure(request, response)
                self._acks[branch] = ack
                self.sock.sendto(ack, self.destination)
            return response, cancelled

    def _ack_failure(self, invite: Request, response: Response) -> bytes:
        """The ACK of a non-2xx final response: the INVITE's branch and URI (§17.1.1.3)."""
        ack = Request(method="ACK", uri=invite.uri)
        ack.add("Via", _header(invite, "via"))
        ack.add("Max-Forwards", "70")
        ack.add("From", self.from_)
        ack.add("To", _header(response, "to"))
        ack.add("Call-ID", self.call_id)
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        return ack.serialise()

    def _cancel(self, invite: Request) -> Request:
        """A CANCEL of `invite`: its Request-URI, top Via, From, To and CSeq number (§9.1)."""
        cancel = Request(method="CANCEL", uri=invite.uri)
        cancel.add("Via", _header(invite, "via"))
        cancel.add("Max-Forwards", "70")
        cancel.add("From", self.from_)
        cancel.add("To", self.to)
        cancel.add("Call-ID", self.call_id)
        cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
        return cancel

    def non_invite(self, request: Request) -> Response | None:
        """Run a non-INVITE client transaction (RFC 3261 §17.1.2); return its final response."""
        data = request.serialise()
        branch = request.branch
        start = self.clock()
        timer_f = start + self.timers.b
        interval = self.timers.t1
        resend = start + interval
        self.sock.sendto(data, self.destination)
        others: list[Response] = []
        try:
            while True:
                response = self.receive(min(resend, timer_f))
                now = self.clock()
                if response is None:
                    if now >= timer_f:
                        return None
                    self.sock.sendto(data, self.destination)  # Timer E
                    interval = min(interval * 2, self.timers.t2)
                    resend = now + interval
                    continue
                if response.branch != branch or response.cseq[1] != request.method:
                    others.append(response)
                    continue
                if response.status >= 200:
                    return response
                interval = self.timers.t2  # proceeding: retransmit at T2 (§17.1.2.2)
                resend = now + interval
        finally:
            self._held.extend(others)

    def ack_answer(self, invite: Request, answer: Response) -> None:
        """ACK a 2xx end to end: a new branch, the Contact as Request-URI (§13.2.2.4)."""
        ack = self.request(
            "ACK", _remote_target(invite, answer), _header(answer, "to"), invite.cseq[0]
        )
        self.send(ack)
        # A retransmitted 2xx carries the INVITE's branch: it is ACKed again.
        self._acks[str(invite.branch)] = ack.serialise()


Clock = Callable[[], float]


def dial(
    uri: str,
    *,
    username: str | None,
    password: str | None,
    headers: Mapping[str, str],
    ring_seconds: float,
    timers: Timers,
    caller: str = "plivo",
    clock: Clock = time.monotonic,
) -> Outcome:
    """INVITE `uri` (a loopback `target`) and see it to a final answer: answer one challenge
    with the credentials, ACK, and CANCEL after `ring_seconds` of ringing."""
    where = target(uri)
    if where is None:
        raise ValueError("only a sip: URI on a loopback address with a port is dialled")
    leg = _Leg(uri, where[0], where[1], timers, caller, clock)
    start = clock()
    ring_until = start + ring_seconds
    outcome = Outcome(None)
    try:
        invite = _invite(leg, headers, 1, None)
        answer, outcome.cancelled = leg.invite(invite, ring_until, outcome.steps)
        if answer is not None and answer.status in _AUTH_HEADER:
            outcome.challenged = answer.status
            challenge = sip_message.challenge(answer)
            realm = f" (realm {challenge.realm})" if challenge else ""
            outcome.steps.append(f"challenged with {answer.status}{realm}")
            if challenge is not None and username is not None and password is not None:
                number = invite.cseq[0] + 1
                credentials = digest.answer(challenge, username, password, "INVITE", uri)
                header = (_AUTH_HEADER[answer.status], credentials.header())
                invite = _invite(leg, headers, number, header)
                outcome.authenticated = True
                outcome.steps.append("answered the challenge with the <User>'s credentials")
                answer, outcome.cancelled = leg.invite(invite, ring_until, outcome.steps)
        outcome.status = answer.status if answer is not None else None
        if answer is not None and answer.status < 300:
            leg.ack_answer(invite, answer)
            leg.dialog = outcome.dialog = Dialog(leg, invite, answer)
            if outcome.cancelled:  # answered just as it was cancelled: end it at once
                outcome.dialog.hang_up()
                outcome.dialog = None
    except SipError as exc:
        outcome.steps.append(f"unreadable answer from the PBX: {exc}")
        outcome.status = None
    finally:
        outcome.elapsed = clock() - start
        if outcome.dialog is None:
            leg.close()
    return outcome


def _invite(
    leg: _Leg, headers: Mapping[str, str], number: int, auth: tuple[str, str] | None
) -> Request:
    invite = leg.request("INVITE", leg.uri, leg.to, number)
    invite.add("Contact", f"<sip:plivo@{leg.local}>")
    for name, value in headers.items():
        invite.add(name, value)
    if auth is not None:
        invite.add(*auth)
    invite.add("Content-Type", "application/sdp")
    host = leg.host.strip("[]")
    invite.body = _SDP.format(family="IP6" if ":" in host else "IP4", host=host).encode()
    return invite


def _header(message: Request | Response, name: str) -> str:
    value = message.get(name)
    if value is None:
        raise SipError(f"no {name} header")
    return value


def _remote_target(invite: Request, answer: Response) -> str:
    """The 2xx's Contact URI (where in-dialog requests are addressed), else the INVITE's."""
    contact = answer.get("contact")
    return sip_message.params(contact)[0].strip("<>") if contact else invite.uri
