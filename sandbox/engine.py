"""The sandbox's call core: Plivo's calls for one account, from INVITE or Make Call to hangup.

It ties the parts together. The SIP edge (`sip_edge`) decides whether an inbound INVITE is
admitted; the XML player (`xml_player`) runs the application's XML, ringing dial legs
(`legs`); callback delivery (`callbacks`) signs and sends every callback. The core keeps the
calls: it opens and remembers them, places Make Call requests, moves a waiting call on a
Transfer or the caller's hangup, and ends each call once, whoever ends it.

Time inside a call is simulated (ringing, talking and speaking take no real time); the sandbox
clock (injectable) stamps calls and drives lockouts and nonces.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from sandbox.account import Account, Application
from sandbox.call import Call, Ending
from sandbox.call_api import MakeCall, TransferRequest
from sandbox.callbacks import Callbacks, Fetch, Http
from sandbox.config import SandboxConfig
from sandbox.legs import Leg, Legs
from sandbox.sip_edge import Invite, InviteResult, SipEdge
from sandbox.timeline import SandboxClock, safe_address, safe_url
from sandbox.xml_player import Player
from sipguard.calls.causes import INBOUND_AUTH_FAILED_CODE
from sipguard.errors import ValidationError
from sipguard.monitoring import lockout

log = logging.getLogger("sipguard.sandbox")

# After 70 transfers the call hangs up with "Loop detected" (docs/plivo.md, REST API).
MAX_TRANSFERS = 70
MAX_CALLS = 10_000  # calls (and their timelines) a running sandbox remembers

Runner = Callable[[Callable[[], None]], None]


def run_inline(job: Callable[[], None]) -> None:
    """Run a call's next steps at once (tests and the in-process API)."""
    job()


def run_in_thread(job: Callable[[], None]) -> None:
    """Run a call's next steps after the API has answered, as Plivo does (`serve`)."""
    threading.Thread(target=job, daemon=True, name="sandbox-call").start()


class Sandbox:
    """Plivo's call handling for one account, against the application's real webhooks."""

    def __init__(
        self,
        account: Account,
        config: SandboxConfig,
        *,
        auth_token: str,
        main_token: str | None = None,
        http: Http,
        clock: SandboxClock | None = None,
        run: Runner = run_inline,
        new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.account = account
        self.config = config
        self.clock = clock or SandboxClock()
        self._run = run
        self._new_uuid = new_uuid
        self._lock = threading.Lock()  # the calls map
        self.calls: dict[str, Call] = {}
        self._dialled: dict[str, Leg] = {}  # Make Call legs answered over real SIP, by call
        self._on_end: list[Callable[[Call], None]] = []
        self._edge = SipEdge(account, self.clock)
        self._callbacks = Callbacks(account.auth_id, http, auth_token, main_token or auth_token)
        self._legs = Legs(config.endpoints, self.clock, new_uuid, config.sip_timers)
        self._player = Player(config, self.clock, self._callbacks, self._legs, new_uuid)
        for initial in config.applications:
            app_id = account.create_application(initial.fields, initial.app_id)
            for number in initial.numbers:
                account.assign_number(number, app_id)

    # -- inbound --------------------------------------------------------------------------------

    def invite(self, invite: Invite) -> InviteResult:
        """Take an INVITE: the SIP edge decides, then the call connects or is refused."""
        verdict = self._edge.admit(invite)
        if verdict.app is None:
            return verdict.answer  # a challenge, or nothing to call: no call at all
        call = self._open(invite, verdict.app)
        verdict.record(call)
        if verdict.admitted:
            answer = Fetch(call.app.answer_url, call.app.answer_method, "answer")
            self._guarded(call, partial(self._play, call, answer))()
        else:
            self.end(call, Ending(INBOUND_AUTH_FAILED_CODE, "failed", "Plivo"))
        return replace(verdict.answer, call_uuid=call.uuid)

    def lockouts(self) -> list[lockout.Lockout]:
        """Return the lockouts in force now."""
        return self._edge.lockouts()

    def on_end(self, listener: Callable[[Call], None]) -> None:
        """Have `listener` told of every call that ends, after its hangup callback (the SIP
        front sends the caller a BYE)."""
        self._on_end.append(listener)

    # -- outbound: Make Call and Transfer -------------------------------------------------------

    def make_call(self, fields: Mapping[str, Any]) -> list[str]:
        """Check a Make Call request as Plivo does, place each call, return the request UUIDs."""
        request = MakeCall.read(fields, self.account)
        placed = []
        for target in request.targets:
            invite = Invite("0.0.0.0", target, request.caller, target, request.caller_name)
            call = self._open(invite, request.app, "outbound")
            call.request_uuid = self._new_uuid()
            call.note("api", f"Make Call to {safe_address(target)} (request {call.request_uuid})")
            placed.append(call)
        # One job for the request, however many destinations: the calls run one after the
        # other in simulated time, and a 1000-destination request starts one thread, not 1000.
        self._run(partial(self._place_all, placed, request))
        return [str(call.request_uuid) for call in placed]

    def _place_all(self, calls: list[Call], request: MakeCall) -> None:
        for call in calls:
            self._guarded(call, partial(self._place, call, request))()

    def _place(self, call: Call, request: MakeCall) -> None:
        """Ring the destination; once it answers, play the request's answer_url."""
        leg = self._legs.ring(
            call.to,
            request.username,
            request.password,
            request.ring_timeout,
            at=call.offset,
            leg_uuid=call.uuid,
        )
        call.events.append(leg.event())
        call.offset = leg.at
        if leg.outcome != "answered":
            status = {"no-answer": "no-answer", "busy": "busy", "timeout": "timeout"}.get(
                leg.outcome, "failed"
            )
            # Plivo's pages are silent on HangupSource here (docs/plivo.md, Where Plivo is
            # silent): the called side ended it ("Callee", docs/plivo.md, Callbacks and
            # signatures).
            self.end(call, Ending(leg.code, status, "Callee", leg.cause))
            return
        call.answer()
        if leg.dialog is not None:  # a real leg: BYE when the call ends
            with self._lock:
                self._dialled[call.uuid] = leg
        self._play(call, Fetch(call.app.answer_url, call.app.answer_method, "answer"))

    def transfer(self, call_uuid: str, fields: Mapping[str, Any]) -> None:
        """Check a Transfer request and move the live call's A leg to new XML (docs/plivo.md,
        REST API)."""
        with self._lock:
            call = self.calls.get(call_uuid)
        if call is None or call.state == "ended":
            raise LookupError("call not found or no longer live")
        request = TransferRequest.read(fields)
        if not call.claim():
            raise ValidationError("call", "the call is running XML; transfer it when it waits")
        call.settled.clear()  # it runs XML again: settled once it waits or ends again
        self._run(self._guarded(call, partial(self._resume, call, request)))

    def _resume(self, call: Call, request: TransferRequest) -> None:
        call.catch_up(self.clock.now())
        call.transfers += 1
        call.documents = 0  # each transfer starts a new run of XML (its own loop guard)
        shown = safe_url(request.url)
        call.note("transfer", f"Transfer API: A leg to {shown}", url=shown)
        if call.transfers > MAX_TRANSFERS:
            self.end(call, Ending(2060, "failed", "Plivo"))
            return
        self._play(call, Fetch(request.url, request.method, "transfer"))

    # -- the caller's side ----------------------------------------------------------------------

    def hang_up(self, call_uuid: str) -> Call:
        """The caller hangs up a call the AI agent is holding."""
        with self._lock:
            call = self.calls.get(call_uuid)
        if call is None or not call.claim():
            raise LookupError("no call waiting with that CallUUID")
        call.catch_up(self.clock.now())
        call.note("caller", "caller hung up")
        self.end(call, Ending(4000, "completed", "Caller"))
        return call

    def wait(self, call_uuid: str, timeout: float) -> Call:
        """Return the call once it waits at the AI agent or has ended (or after `timeout`)."""
        with self._lock:
            call = self.calls.get(call_uuid)
        if call is None:
            raise LookupError("no such call")
        call.settled.wait(timeout)
        return call

    # -- a call's life --------------------------------------------------------------------------

    def end(self, call: Call, ending: Ending) -> None:
        """End the call once, whoever ends it, and send the hangup callback."""
        if not call.finish():
            return
        with self._lock:
            leg = self._dialled.pop(call.uuid, None)
        said = leg.hang_up() if leg is not None else None
        if said is not None and leg is not None:
            call.note("bye", f"{safe_address(leg.address)}: {said}", leg_uuid=leg.uuid)
        self._callbacks.hangup(call, ending)
        call.settled.set()
        for listener in self._on_end:
            listener(call)

    def _open(self, invite: Invite, app: Application, direction: str = "inbound") -> Call:
        """Start a call and remember it (the oldest are forgotten beyond MAX_CALLS)."""
        call = Call(
            uuid=self._new_uuid(),
            direction=direction,
            from_=invite.from_ or f"sip:caller@{_host(invite.source_ip)}",
            to=invite.to or invite.request_uri,
            started=self.clock.now(),
            app=app,  # a copy (Account.snapshot / check_application): the URLs at the call's start
            caller_name=invite.caller_name,
        )
        with self._lock:
            self.calls[call.uuid] = call
            if len(self.calls) > MAX_CALLS:
                # A long-running sandbox keeps the newest calls: the oldest ended ones go
                # first, then the oldest of any state (a call left with the AI for ever).
                ended = [c.uuid for c in self.calls.values() if c.state == "ended"]
                for old in (ended or list(self.calls))[:1000]:
                    del self.calls[old]
        return call

    def _play(self, call: Call, step: Fetch) -> None:
        """Run the call's XML from `step`; end the call if the XML ends it."""
        ending = self._player.play(call, step)
        if ending is not None:
            self.end(call, ending)

    def _guarded(self, call: Call, job: Callable[[], None]) -> Callable[[], None]:
        """Wrap a call's steps so a sandbox bug ends the call (0 Unknown) instead of hanging it."""

        def run() -> None:
            try:
                job()
            except Exception:  # any failure inside the sandbox: end the call, keep serving
                log.exception("sandbox: call %s failed inside the sandbox", call.uuid)
                call.note("error", "the sandbox itself failed on this call (see its log)")
                try:
                    self.end(call, Ending(0, "failed", "Error"))
                except Exception:  # the hangup callback itself failed: just settle the call
                    log.exception("sandbox: call %s could not be ended cleanly", call.uuid)
                    call.state = "ended"
                call.settled.set()

        return run


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
