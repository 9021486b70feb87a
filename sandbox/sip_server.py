"""The sandbox over real SIP: a UDP front where a softphone, a PBX or SIPp calls the sandbox.

An INVITE becomes the sandbox's own decision (`Sandbox.invite`, through the SIP edge's
`admit`): the application from the Request-URI, the IP ACL against the datagram's source
address (never the Via), the 407 digest exchange, the lockout. The answer goes back as SIP:
100 Trying at once, then 200 OK with a minimal SDP, or 403 / 404 / 407 / 400. The engine makes
the callbacks to the app, as it does for the HTTP control `/sandbox/invite`.

RFC 3261 over UDP only, as a UAS. Server transactions (§17.2): a retransmitted request is
answered from its transaction and never decided twice; a final response to an INVITE is resent
(T1, doubling up to T2) until its ACK or for 64*T1, the 2xx too (§13.3.1.4; a 2xx never ACKed
ends the call with a BYE). BYE ends the call (the caller hung up), CANCEL answers 200 and 487,
an unknown dialog gets 481, OPTIONS 200, other methods 405. When the call ends on the
sandbox's side (the XML hangs up, the app ends it), the caller is sent a BYE (retransmitted
until answered, for 64*T1). Responses go to the datagram's source address and port (rport,
RFC 3581). Not covered: TCP, TLS, forking, PRACK, re-INVITE and UPDATE, SDP negotiation and
media (the answer names PCMU and is inactive: no RTP), Record-Route / route sets, REGISTER.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sandbox.call import Call
from sandbox.engine import Sandbox
from sandbox.sip_edge import Invite, InviteResult
from sandbox.sip_message import (
    MAX_DATAGRAM,
    Request,
    Response,
    SipError,
    new_branch,
    new_tag,
    params,
    parse,
    received,
    response_to,
    sent_by,
)

log = logging.getLogger("sipguard.sandbox")

DEFAULT_T1 = 0.5  # RFC 3261's T1, seconds; tests shorten it
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
SERVER = "Plivo SIP Guard sandbox"
MAX_PENDING = 32  # INVITEs being decided at once; more get 503
MAX_TRANSACTIONS = 10_000  # remembered server transactions and dialogs before the oldest go
HANGUP_WAIT = 30.0  # seconds a caller's BYE waits for a call busy with a Transfer
PHRASES = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    481: "Call/Transaction Does Not Exist",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}

Peer = tuple[Any, ...]  # what recvfrom gives: (host, port) or (host, port, flow, scope)


def parse_listen(text: str) -> tuple[str, int]:
    """Read ``HOST:PORT`` (``[::1]:5060`` for IPv6) as --sip-listen takes it."""
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:5060)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address to listen on") from None
    return host, int(port)


@dataclass
class _Resend:
    """A datagram sent again at T1, 2*T1, ... (at most T2 apart) until stopped or `until`."""

    data: bytes
    peer: Peer
    interval: float
    due: float
    until: float
    expired: Callable[[], None] | None = None  # what to do when `until` passes


@dataclass
class _ServerTransaction:
    """A request being answered, and what it was last answered with."""

    request: Request
    peer: Peer
    to_tag: str
    forget_at: float = math.inf  # set once a final response is sent
    response: bytes | None = None
    final: int = 0
    cancelled: bool = False


@dataclass
class _Dialog:
    """A call the sandbox answered: what a BYE in either direction needs."""

    call_id: str
    local_tag: str
    remote_tag: str
    local: str  # the INVITE's To, with our tag: the From of our BYE
    remote: str  # the INVITE's From: the To of our BYE
    target: str  # the caller's Contact: the Request-URI of our BYE
    peer: Peer
    call_uuid: str
    invite_key: str
    confirmed: bool = False  # the ACK came
    bye_due: bool = False  # the call ended before the ACK: BYE once it comes
    cseq: int = field(default_factory=lambda: secrets.randbelow(10_000))


class SipServer:
    """The sandbox's UDP SIP front, one thread receiving and resending, one per decision."""

    def __init__(self, sandbox: Sandbox, host: str, port: int = 0, *, t1: float = DEFAULT_T1):
        if not 0 < t1 <= 10:
            raise ValueError("T1 must be between 0 and 10 seconds")
        self._sandbox = sandbox
        self._t1 = t1
        self._t2 = 8 * t1  # RFC 3261: T2 = 4 s for T1 = 500 ms
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        self._hostport = (
            f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        )
        self._lock = threading.Lock()
        self._transactions: dict[str, _ServerTransaction] = {}
        self._awaiting_ack: dict[tuple[str, int, str], str] = {}  # non-2xx finals by dialog id
        self._dialogs: dict[tuple[str, str], _Dialog] = {}  # by Call-ID and our tag
        self._by_call: dict[str, _Dialog] = {}  # by CallUUID
        self._resends: dict[str, _Resend] = {}
        self._pending = threading.BoundedSemaphore(MAX_PENDING)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="sandbox-sip")
        self.dropped = 0  # datagrams that were not SIP
        sandbox.on_end(self._call_ended)

    @property
    def uri(self) -> str:
        """Return where callers send INVITEs, as a SIP URI's host part."""
        return self._hostport

    def start(self) -> SipServer:
        """Start receiving; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop receiving and resending, and close the socket."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> SipServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop -------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._socket.settimeout(self._tick())
            try:
                data, peer = self._socket.recvfrom(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            try:
                self._receive(data, peer)
            except Exception:  # a bug on one datagram must not stop the front
                log.exception("sandbox: SIP datagram from %s failed", peer[0])

    def _tick(self) -> float:
        """Resend what is due, run what expired, forget old transactions; return the wait."""
        now = time.monotonic()
        expired: list[Callable[[], None]] = []
        with self._lock:
            for key, resend in list(self._resends.items()):
                if now >= resend.until:
                    del self._resends[key]
                    if resend.expired is not None:
                        expired.append(resend.expired)
                elif now >= resend.due:
                    self._send(resend.data, resend.peer)
                    resend.interval = min(2 * resend.interval, self._t2)
                    resend.due = now + resend.interval
            old = [k for k, t in self._transactions.items() if t.forget_at <= now]
            for key in old:
                del self._transactions[key]
            if old:
                self._awaiting_ack = {
                    k: v for k, v in self._awaiting_ack.items() if v in self._transactions
                }
            due = min((min(r.due, r.until) for r in self._resends.values()), default=now + 0.2)
        for run in expired:
            run()
        return min(max(due - now, 0.005), 0.2)

    def _send(self, data: bytes, peer: Peer) -> None:
        try:
            self._socket.sendto(data, peer)
        except OSError as exc:  # closed while stopping, or the peer's address is unreachable
            log.debug("sandbox: SIP send to %s failed: %s", peer[0], exc)

    def _receive(self, data: bytes, peer: Peer) -> None:
        try:
            message = parse(data)
        except SipError as exc:
            self.dropped += 1
            log.info("sandbox: dropped a datagram from %s that is not SIP (%s)", peer[0], exc)
            return
        try:
            if isinstance(message, Response):
                self._response(message)
                return
            handle = {
                "INVITE": self._invite,
                "ACK": self._ack,
                "BYE": self._bye,
                "CANCEL": self._cancel,
                "OPTIONS": self._options,
            }.get(message.method, self._not_allowed)
            handle(message, peer)
        except SipError as exc:  # a header a handler needs is unreadable
            log.info("sandbox: SIP %s from %s refused: %s", _method(message), peer[0], exc)
            if isinstance(message, Request) and message.method != "ACK":
                self._answer_plain(message, peer, 400, warning=str(exc))

    # -- requests -------------------------------------------------------------------------------

    def _invite(self, request: Request, peer: Peer) -> None:
        key = _key(request, "INVITE")
        # Read what the decision and the dialog need here, where an unreadable header is a 400.
        from_display, from_uri = _name_addr(request.get("from") or "")
        invite = Invite(
            source_ip=str(peer[0]),
            request_uri=request.uri,
            from_=from_uri or None,
            to=_name_addr(request.get("to") or "")[1] or None,
            caller_name=from_display or None,
            authorization=request.get("proxy-authorization"),
        )
        target = _name_addr(request.get("contact") or request.get("from") or "")[1]
        request.tag("from")  # the dialog reads it later: an unreadable tag is refused now
        to_tag = request.tag("to")
        with self._lock:
            if self._retransmitted(key, peer):
                return
            tx = _ServerTransaction(request, peer, new_tag())
            self._remember(key, tx)
            if to_tag is not None:  # a re-INVITE in a dialog
                in_dialog = (request.call_id, to_tag) in self._dialogs
                status = 488 if in_dialog else 481
                self._final(key, tx, status, warning="re-INVITE is not supported")
                return
            if not self._pending.acquire(blocking=False):
                self._final(key, tx, 503, warning="too many INVITEs at once")
                return
            self._respond(tx, 100)
        decide = partial(self._decide, key, tx, invite, target)
        threading.Thread(target=decide, daemon=True, name="sandbox-sip-invite").start()

    def _decide(self, key: str, tx: _ServerTransaction, invite: Invite, target: str) -> None:
        """Hand the INVITE to the sandbox's decision and answer with its result."""
        try:
            result = self._admit(invite, tx.peer)
        finally:
            self._pending.release()
        call = self._sandbox.calls.get(result.call_uuid or "")
        hang_up = False
        with self._lock:
            if tx.cancelled:
                hang_up = call is not None  # 487 already went; the call must not go on
            elif result.status == 200 and call is not None:
                self._connect(key, tx, call, target)
            elif result.status == 407 and result.challenge is not None:
                headers = [("Proxy-Authenticate", result.challenge)]
                self._final(key, tx, 407, headers=headers)
            else:
                self._final(key, tx, result.status, warning=result.reason)
        log.info("sandbox: SIP INVITE from %s answered %s", tx.peer[0], tx.final)
        if hang_up and call is not None:
            self._hang_up(call.uuid)  # already on a thread of its own

    def _admit(self, invite: Invite, peer: Peer) -> InviteResult:
        problem = invite.problem()
        if problem is not None:
            return InviteResult(400, problem)
        try:
            return self._sandbox.invite(invite)
        except Exception:  # the sandbox failed on it: 500, and the front keeps serving
            log.exception("sandbox: the SIP INVITE from %s failed inside the sandbox", peer[0])
            return InviteResult(500, "the sandbox failed on this INVITE (see its log)")

    def _connect(self, key: str, tx: _ServerTransaction, call: Call, target: str) -> None:
        """Answer 200 with SDP and open the dialog (under the lock)."""
        if call.state == "ended" and call.answered_at is None:
            # The XML ended the call before answering it (<Hangup/> first, a failed fetch).
            self._final(key, tx, 603, warning=f"the call ended: {_cause(call)}")
            return
        request = tx.request
        dialog = _Dialog(
            call_id=request.call_id,
            local_tag=tx.to_tag,
            remote_tag=request.tag("from") or "",
            local=f"{request.get('to')};tag={tx.to_tag}",
            remote=request.get("from") or "",
            target=target,
            peer=tx.peer,
            call_uuid=call.uuid,
            invite_key=key,
            bye_due=call.state == "ended",
        )
        if len(self._dialogs) >= MAX_TRANSACTIONS:  # calls left at the AI for ever: forget one
            self._close(next(iter(self._dialogs.values())))
        self._dialogs[(dialog.call_id, dialog.local_tag)] = dialog
        self._by_call[call.uuid] = dialog
        headers = [
            ("Contact", f"<sip:sandbox@{self._hostport}>"),
            ("Allow", ALLOW),
            ("Content-Type", "application/sdp"),
        ]
        self._final(
            key, tx, 200, headers=headers, body=self._sdp(), expired=lambda: self._unacked(dialog)
        )

    def _ack(self, request: Request, peer: Peer) -> None:
        to_tag = request.tag("to") or ""
        with self._lock:
            key = self._awaiting_ack.pop((request.call_id, request.cseq[0], to_tag), None)
            if key is not None:  # the ACK of a non-2xx final response: nothing more to send
                self._resends.pop(key, None)
                return
            dialog = self._dialogs.get((request.call_id, to_tag))
            if dialog is None or dialog.confirmed:
                return  # a stray or retransmitted ACK
            dialog.confirmed = True
            self._resends.pop(dialog.invite_key, None)
            if dialog.bye_due:
                self._send_bye(dialog)

    def _bye(self, request: Request, peer: Peer) -> None:
        key = _key(request, "BYE")
        to_tag, from_tag = request.tag("to"), request.tag("from") or ""
        with self._lock:
            if self._retransmitted(key, peer):
                return
            dialog = self._dialogs.get((request.call_id, to_tag or ""))
            tx = _ServerTransaction(request, peer, to_tag or new_tag())
            self._remember(key, tx)
            if dialog is None or dialog.remote_tag != from_tag:
                self._final(key, tx, 481)
                return
            self._final(key, tx, 200)
            self._resends.pop(dialog.invite_key, None)  # a BYE before the ACK ends it too
            self._close(dialog)
        self._hang_up_later(dialog.call_uuid)

    def _cancel(self, request: Request, peer: Peer) -> None:
        key = _key(request, "CANCEL")
        with self._lock:
            if self._retransmitted(key, peer):
                return
            invite_key = _key(request, "INVITE")
            invite = self._transactions.get(invite_key)
            tx = _ServerTransaction(request, peer, invite.to_tag if invite else new_tag())
            self._remember(key, tx)
            if invite is None:
                self._final(key, tx, 481)
                return
            self._final(key, tx, 200)
            if not invite.final:  # too late once the INVITE has its final answer (§9.2)
                invite.cancelled = True
                self._final(invite_key, invite, 487)

    def _options(self, request: Request, peer: Peer) -> None:
        self._answer_plain(
            request, peer, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")]
        )

    def _not_allowed(self, request: Request, peer: Peer) -> None:
        self._answer_plain(request, peer, 405, headers=[("Allow", ALLOW)])

    def _answer_plain(
        self,
        request: Request,
        peer: Peer,
        status: int,
        *,
        headers: list[tuple[str, str]] | None = None,
        warning: str | None = None,
    ) -> None:
        """Answer a request outside any dialog, once per transaction."""
        try:
            key = _key(request, request.method)
        except SipError:
            return  # not even a transaction to answer in
        with self._lock:
            if self._retransmitted(key, peer):
                return
            tx = _ServerTransaction(request, peer, new_tag())
            self._remember(key, tx)
            self._final(key, tx, status, headers=headers, warning=warning)

    def _response(self, response: Response) -> None:
        """A response to our BYE: stop resending it once final."""
        if response.status >= 200 and response.cseq[1] == "BYE":
            with self._lock:
                self._resends.pop(f"bye:{response.branch}", None)

    # -- the call's end -------------------------------------------------------------------------

    def _call_ended(self, call: Call) -> None:
        """The sandbox ended a call: tell the caller with a BYE (after the ACK, RFC 3261 §15)."""
        with self._lock:
            dialog = self._by_call.get(call.uuid)
            if dialog is None:
                return  # not a SIP call, or the caller ended it
            if dialog.confirmed:
                self._send_bye(dialog)
            else:
                dialog.bye_due = True

    def _unacked(self, dialog: _Dialog) -> None:
        """No ACK for the 200 in 64*T1: end the call with a BYE (RFC 3261 §13.3.1.4)."""
        with self._lock:
            if dialog.confirmed or self._by_call.get(dialog.call_uuid) is not dialog:
                return
            self._send_bye(dialog)
        log.info("sandbox: no ACK from %s for the 200; the call ends", dialog.peer[0])
        self._hang_up_later(dialog.call_uuid)

    def _send_bye(self, dialog: _Dialog) -> None:
        """Send the caller a BYE, resent until answered (under the lock)."""
        self._close(dialog)
        dialog.cseq += 1
        branch = new_branch()
        bye = Request(method="BYE", uri=dialog.target)
        bye.add("Via", f"SIP/2.0/UDP {self._hostport};branch={branch};rport")
        bye.add("Max-Forwards", "70")
        bye.add("From", dialog.local)
        bye.add("To", dialog.remote)
        bye.add("Call-ID", dialog.call_id)
        bye.add("CSeq", f"{dialog.cseq} BYE")
        bye.add("User-Agent", SERVER)
        data = bye.serialise()
        self._send(data, dialog.peer)
        now = time.monotonic()
        self._resends[f"bye:{branch}"] = _Resend(
            data, dialog.peer, self._t1, now + self._t1, now + 64 * self._t1
        )

    def _close(self, dialog: _Dialog) -> None:
        self._dialogs.pop((dialog.call_id, dialog.local_tag), None)
        if self._by_call.get(dialog.call_uuid) is dialog:
            del self._by_call[dialog.call_uuid]

    def _hang_up_later(self, call_uuid: str) -> None:
        """Hang the call up on a thread of its own: it may wait for a Transfer to finish."""
        threading.Thread(
            target=self._hang_up, args=(call_uuid,), daemon=True, name="sandbox-sip-hangup"
        ).start()

    def _hang_up(self, call_uuid: str) -> None:
        """The caller hung up: end the call once it waits at the AI agent or has ended."""
        deadline = time.monotonic() + HANGUP_WAIT
        while time.monotonic() < deadline:
            try:
                call = self._sandbox.wait(call_uuid, deadline - time.monotonic())
                if call.state == "ended":
                    return
                self._sandbox.hang_up(call_uuid)
                return
            except LookupError:  # a Transfer holds it for a moment, or it was forgotten
                if call_uuid not in self._sandbox.calls:
                    return
                time.sleep(self._t1 / 10)
        log.warning("sandbox: call %s was still busy when its caller hung up", call_uuid)

    # -- answering ------------------------------------------------------------------------------

    def _retransmitted(self, key: str, peer: Peer) -> bool:
        """Answer a retransmission with the transaction's last response (under the lock)."""
        tx = self._transactions.get(key)
        if tx is None:
            return False
        if tx.response is not None:
            self._send(tx.response, peer)
        return True

    def _remember(self, key: str, tx: _ServerTransaction) -> None:
        self._transactions[key] = tx
        if len(self._transactions) > MAX_TRANSACTIONS:
            for old in list(self._transactions)[: MAX_TRANSACTIONS // 10]:
                if self._transactions[old].final:
                    del self._transactions[old]

    def _respond(
        self,
        tx: _ServerTransaction,
        status: int,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        warning: str | None = None,
    ) -> bytes:
        """Send `status` to the transaction's peer and keep it for retransmissions."""
        response = response_to(tx.request, status, PHRASES.get(status, "Error"), tx.to_tag)
        _stamp(response, tx.peer)
        response.add("Server", SERVER)
        if warning:
            text = warning.replace("\\", "\\\\").replace('"', '\\"')
            response.add("Warning", f'399 {self._hostport} "{text}"')
        for name, value in headers or []:
            response.add(name, value)
        response.body = body
        data = response.serialise()
        tx.response = data
        self._send(data, tx.peer)
        return data

    def _final(
        self,
        key: str,
        tx: _ServerTransaction,
        status: int,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        warning: str | None = None,
        expired: Callable[[], None] | None = None,
    ) -> None:
        """Send a final response; an INVITE's is resent until its ACK (under the lock)."""
        data = self._respond(tx, status, headers=headers, body=body, warning=warning)
        tx.final = status
        now = time.monotonic()
        tx.forget_at = now + 64 * self._t1
        if tx.request.method != "INVITE":
            return
        self._resends[key] = _Resend(
            data, tx.peer, self._t1, now + self._t1, now + 64 * self._t1, expired
        )
        if status >= 300:
            self._awaiting_ack[(tx.request.call_id, tx.request.cseq[0], tx.to_tag)] = key

    def _sdp(self) -> bytes:
        """A minimal SDP answer: PCMU, inactive (the sandbox carries no media)."""
        version = "IP6" if ":" in self.host else "IP4"
        session = secrets.randbelow(2**31)
        lines = [
            "v=0",
            f"o=- {session} {session} IN {version} {self.host}",
            "s=Plivo sandbox",
            f"c=IN {version} {self.host}",
            "t=0 0",
            "m=audio 9 RTP/AVP 0",  # the discard port: nothing is sent or received
            "a=rtpmap:0 PCMU/8000",
            "a=inactive",
        ]
        return ("\r\n".join(lines) + "\r\n").encode()


def _key(request: Request, method: str) -> str:
    """Name the server transaction a request belongs to (RFC 3261 §17.2.3); ACK and CANCEL
    find their INVITE's by passing "INVITE"."""
    via = request.values("via")[0]
    branch = params(via)[1].get("branch", "")
    if branch.startswith("z9hG4bK"):
        host, port = sent_by(via)
        return f"{branch}|{host}:{port}|{method}"
    # RFC 2543 peers: Request-URI, From tag, Call-ID, CSeq number and the top Via.
    uri = request.uri
    return f"{uri}|{request.tag('from')}|{request.call_id}|{request.cseq[0]}|{via}|{method}"


def _stamp(response: Response, peer: Peer) -> None:
    """Stamp the top Via with where the request came from (received, rport: RFC 3581)."""
    for index, (name, value) in enumerate(response.headers):
        if name == "Via":
            response.headers[index] = (name, received(value, str(peer[0]), int(peer[1])))
            return


def _name_addr(value: str) -> tuple[str, str]:
    """Split ``"Name" <sip:u@h>;tag=x`` into the display name and the URI."""
    main, _ = params(value)
    if "<" not in main:
        return "", main
    display, _, rest = main.partition("<")
    return display.strip().strip('"'), rest.rpartition(">")[0]


def _cause(call: Call) -> str:
    hangup = call.hangup or {}
    return f"{hangup.get('HangupCauseName', 'unknown')} {hangup.get('HangupCauseCode', '')}".strip()


def _method(message: Request | Response) -> str:
    return message.method if isinstance(message, Request) else str(message.status)
