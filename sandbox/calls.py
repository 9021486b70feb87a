"""The sandbox's call engine: Plivo's side of inbound auth, callbacks, XML, dial legs, hangups.

Rules come from plivo-sip-authentication.txt (the seed); where it is silent the facts file
(plivo-voice-api-facts.md) decides, and the code says "seed silent" with the choice made.
Time inside a call is simulated (ringing, talking and speaking take no real time); the
sandbox clock (injectable) stamps calls and drives lockouts and nonces.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from lxml import etree

from sandbox import digest
from sandbox.account import URL_FIELDS, Account, Application, field_text
from sandbox.config import SIP_TIMER_B, Endpoint, SandboxConfig
from sandbox.timeline import Event, SandboxClock, render, safe_address, safe_url
from sipguard.calls.causes import (
    INBOUND_AUTH_FAILED_CODE,
    OUTBOUND_AUTH_FAILED_CODE,
    OUTBOUND_AUTH_TIMEOUT_CODE,
    SIP_AUTH_FAILED,
    SIP_AUTH_TIMEOUT,
)
from sipguard.calls.forms import unmapped, whole_number
from sipguard.calls.signature import signed_headers
from sipguard.errors import ValidationError
from sipguard.monitoring import lockout
from sipguard.plivo.outbound import CALLER_NAME_MAX, check_caller, destinations
from sipguard.plivo.sipauth import REALM
from xml_builders import (
    check_method,
    check_sip_credentials,
    check_text,
    check_url,
    is_number,
    is_sip_uri,
)

log = logging.getLogger("sipguard.sandbox")

# Hangup causes: the seed's for SIP auth (callbacks.py), the facts file's table (§5) for the rest.
CAUSES: Mapping[int, str] = {
    0: "Unknown",
    1000: "Canceled",
    2000: "Invalid Destination Address",
    2060: "Loop Detected",
    3010: "Busy Line",
    3020: "Rejected",
    4000: "Normal Hangup",
    4010: "End Of XML Instructions",
    INBOUND_AUTH_FAILED_CODE: SIP_AUTH_FAILED,
    OUTBOUND_AUTH_FAILED_CODE: SIP_AUTH_FAILED,
    OUTBOUND_AUTH_TIMEOUT_CODE: SIP_AUTH_TIMEOUT,
    7011: "Error reaching Answer URL",
    7012: "Error reaching Action URL",
    7013: "Error reaching Transfer URL",
    7014: "Error reaching Redirect URL",
    8011: "Invalid Answer XML",
    8012: "Invalid Action XML",
    8013: "Invalid Transfer XML",
    8014: "Invalid Redirect XML",
}
# Which error codes each kind of XML fetch ends a call with when it fails (facts §5).
FETCH_CODES: Mapping[str, tuple[int, int]] = {
    "answer": (7011, 8011),
    "action": (7012, 8012),
    "transfer": (7013, 8013),
    "redirect": (7014, 8014),
}
# Plivo verbs the sandbox does not play out: noted in the timeline and passed over.
OTHER_VERBS = frozenset(
    {"Conference", "DTMF", "GetDigits", "GetInput", "Message", "MultiPartyCall", "Play",
     "PreAnswer", "Stream"}
)  # fmt: skip
# <Dial> attributes the sandbox reads past: no DialAction callbacks to callbackUrl, no confirm
# prompt (every agent confirms), no music, no digit matching.
DIAL_NOT_SIMULATED = (
    "callbackUrl", "confirmSound", "confirmKey", "dialMusic", "digitsMatch", "digitsMatchBLeg",
    "hangupOnStar",
)  # fmt: skip
MAX_TRANSFERS = 70  # facts §4: after 70 transfers the call hangs up with "Loop detected"
MAX_DOCUMENTS = 100  # seed silent: a redirect loop ends as "Loop Detected" after 100 documents
MAX_XML_BYTES = 100_000  # facts §7
MAX_CALLS = 10_000  # calls (and their timelines) a running sandbox remembers
MAX_TRACKED_SOURCES = 10_000  # source IPs followed for lockouts before idle ones are forgotten
MAX_CALL_SECONDS = 86_400  # facts §2: calls are cut at 24 h; longer XML durations are clamped
DEFAULT_RING_SECONDS = 60.0  # seed silent: a Dial without timeout rings a silent agent 60 s
SPEAK_WORDS_PER_SECOND = 2.5
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


@dataclass(frozen=True)
class HttpAnswer:
    """What an application's server answered to a callback."""

    status: int
    content_type: str
    body: bytes


class Http(Protocol):
    """Send one callback request; raise OSError (or ValueError for a URL no client can use)
    when the server cannot be reached."""

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpAnswer: ...


Runner = Callable[[Callable[[], None]], None]


def run_inline(job: Callable[[], None]) -> None:
    """Run a call's next steps at once (tests and the in-process API)."""
    job()


def run_in_thread(job: Callable[[], None]) -> None:
    """Run a call's next steps after the API has answered, as Plivo does (`serve`)."""
    threading.Thread(target=job, daemon=True, name="sandbox-call").start()


@dataclass(frozen=True)
class Invite:
    """An INVITE reaching Plivo's edge: where from, to which Request-URI, with what answer."""

    source_ip: str
    request_uri: str
    from_: str | None = None
    to: str | None = None
    caller_name: str | None = None
    authorization: str | None = None  # Proxy-Authorization, answering an earlier 407


@dataclass(frozen=True)
class InviteResult:
    """Plivo's SIP answer: 200 (connected), 407 (challenge), 403, 404 or 400."""

    status: int
    reason: str
    call_uuid: str | None = None
    challenge: str | None = None  # Proxy-Authenticate, with a 407


@dataclass
class Leg:
    """How one dialled endpoint ended up (simulated)."""

    uuid: str
    address: str
    outcome: str  # answered, busy, no-answer, failed, timeout, cancelled
    at: float  # call offset at which the outcome happened
    cause: str | None = None
    code: int | None = None
    talk: float = 0.0
    steps: list[str] = field(default_factory=list)

    @property
    def dial_status(self) -> str:
        """The DialStatus this leg alone would give."""
        return "completed" if self.outcome == "answered" else self.outcome


@dataclass
class Call:
    """One call the sandbox carries: its parties, state and timeline."""

    uuid: str
    direction: str
    from_: str
    to: str
    started: datetime
    app: Application
    caller_name: str | None = None
    request_uuid: str | None = None
    sip: dict[str, str] = field(default_factory=dict)  # SIPAuthType / SIPAuthUser / SIPSourceIP
    offset: float = 0.0
    answered_at: float | None = None
    state: str = "ringing"  # ringing, in-progress, parked, ended
    parked_since: datetime | None = None
    transfers: int = 0
    documents: int = 0
    hangup: dict[str, str] | None = None
    events: list[Event] = field(default_factory=list)
    settled: threading.Event = field(default_factory=threading.Event)  # parked or ended

    def note(self, kind: str, text: str, **data: Any) -> None:
        """Add an event at the call's current offset."""
        self.events.append(Event(self.offset, kind, text, data))

    def head(self) -> dict[str, Any]:
        """The call for listings: parties, state and outcome, without the timeline."""
        return {
            "call_uuid": self.uuid,
            "direction": self.direction,
            "from": safe_address(self.from_),
            "to": safe_address(self.to),
            "app_id": self.app.app_id,
            "started": self.started.isoformat(),
            "state": self.state,
            "sip": dict(self.sip),
            "hangup": dict(self.hangup) if self.hangup else None,
        }

    def summary(self) -> dict[str, Any]:
        """The call for JSON output: its head, and its timeline as events and as text."""
        return {
            **self.head(),
            "events": [event.as_dict() for event in self.events],
            "text": self.text(),
        }

    def text(self) -> str:
        """The timeline as readable lines."""
        parties = f"{safe_address(self.from_)} -> {safe_address(self.to)}"
        header = f"call {self.uuid} {self.direction} {parties} [{self.state}]"
        return render(header, self.events)


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
        self._token = auth_token
        self._main_token = main_token or auth_token
        self._http = http
        self._run = run
        self._new_uuid = new_uuid
        self._lock = threading.Lock()
        self._trackers: dict[str, lockout.Tracker] = {}
        self._nonces = digest.Nonces()
        self.calls: dict[str, Call] = {}
        for seed in config.applications:
            app_id = account.create_application(seed.fields, seed.app_id)
            for number in seed.numbers:
                account.assign_number(number, app_id)

    # -- inbound --------------------------------------------------------------------------------

    def invite(self, invite: Invite) -> InviteResult:
        """Take an INVITE as Plivo's edge does: lockout, resolve, authenticate, then connect."""
        now = self.clock.now()
        try:
            source = ipaddress.ip_address(invite.source_ip)
        except ValueError:
            # Seed silent: a source that is not an address is the caller's mistake (400).
            return InviteResult(400, "source IP is not an IPv4 or IPv6 address")
        resolved = self._resolve(invite.request_uri)
        app, by_app_id = resolved if resolved is not None else (None, False)
        # Only sip:{app_id}@app.plivo.com runs auth: "Inbound auth resolves from the SIP
        # Request-URI ... not the To header" (seed). A phone number there runs none.
        mode = app.sip_auth_type if app is not None and by_app_id else ""
        with self._lock:
            key = _lockout_key(source)
            tracker = self._trackers.setdefault(key, lockout.Tracker(key))
            locked = tracker.current if tracker.locked(now) else None
            self._prune_trackers(now)
        if locked is not None:
            # "During lockout, all calls from that IP receive 403 Forbidden — even with correct
            # credentials." Seed silent on which calls: every call from the IP, whatever its
            # Request-URI, as an edge rate limit would; refused attempts do not count.
            until = locked.until.isoformat(timespec="seconds")
            reason = f"source IP locked out until {until}"
            if app is None:
                return InviteResult(403, reason)  # no application: no call, no callback
            return self._refuse(invite, app, source, mode, reason)
        if app is None:
            # Seed silent: nothing answers at this Request-URI, SIP's 404 Not Found.
            return InviteResult(404, f"nothing answers at {invite.request_uri}")
        username: str | None = None
        with self.account.lock:  # what the account holds now: changes apply at once (seed FAQ)
            acl = self.account.acls.get(app.ip_acl_uuid or "")
            admitted = acl is not None and acl.admits(source)
            credential = self.account.credentials.get(app.credential_uuid or "")
            stored = replace(credential) if credential is not None else None
        if mode in ("ip_acl", "ip_acl_and_credential") and not admitted:
            return self._fail(invite, app, source, mode, "source IP is not in the IP ACL", now)
        if mode in ("credential", "ip_acl_and_credential"):
            if invite.authorization is None:
                nonce = self._nonces.issue(REALM, invite.request_uri, now)
                challenge = digest.Challenge(REALM, nonce, "MD5")
                return InviteResult(407, "Proxy Authentication Required", None, challenge.header())
            try:
                answer = digest.Authorization.parse(invite.authorization)
            except digest.DigestError as exc:
                return self._fail(invite, app, source, mode, f"unreadable digest ({exc})", now)
            if not self._nonces.redeem(answer.nonce, invite.request_uri, now):
                # Seed silent: a nonce we did not issue, or spent, or expired, is challenged
                # again (stale=true) and not counted as a failure (RFC 7616 §3.3).
                nonce = self._nonces.issue(REALM, invite.request_uri, now)
                challenge = digest.Challenge(REALM, nonce, "MD5", stale=True)
                return InviteResult(407, "stale nonce", None, challenge.header())
            if not (
                stored is not None
                and answer.username == stored.username
                and answer.realm == stored.realm
                and answer.uri == invite.request_uri
                and answer.algorithm.upper() == "MD5"  # HA1 is MD5 (seed, Security)
                and answer.qop == "auth"  # offered in the challenge, so it must come back
                and digest.verify(answer, stored.ha1, "INVITE")
            ):
                return self._fail(invite, app, source, mode, "digest credentials do not match", now)
            username = stored.username
        call = self._new_call(invite, app)
        call.note("invite", f"INVITE {invite.request_uri} from {source}", source_ip=str(source))
        if mode:
            call.sip = {"SIPAuthType": mode, "SIPSourceIP": str(source)}
            if username is not None:
                call.sip["SIPAuthUser"] = username  # "Authenticated SIP username" (seed)
            who = f" as {username}" if username else ""
            call.note("auth", f"{mode}: passed{who}", decision="passed", sip_auth_type=mode)
        else:
            why = (
                "the Request-URI is a phone number, not sip:{app_id}@app.plivo.com"
                if not by_app_id
                else "the application has no sip_auth_type"
            )
            call.note("auth", f"not run: {why}", decision="not-run")
        self._guarded(call, partial(self._connect, call))()
        return InviteResult(200, "connected", call.uuid)

    def _resolve(self, request_uri: str) -> tuple[Application, bool] | None:
        """Find the application a Request-URI reaches (a copy), and whether it named the app."""
        if not is_sip_uri(request_uri):
            return None
        user, _, host = request_uri.split(":", 1)[1].partition("@")
        host = host.split(";", 1)[0].split(":", 1)[0].lower()
        if host != REALM or not user:
            return None
        app = self.account.snapshot(user)
        if app is not None:
            return app, True
        with self.account.lock:
            number = user if user.startswith("+") else f"+{user}"
            app_id = next(
                (self.account.numbers[n] for n in (user, number) if n in self.account.numbers),
                None,
            )
        found = self.account.snapshot(app_id) if app_id is not None and is_number(user) else None
        return (found, False) if found is not None else None

    def _prune_trackers(self, now: datetime) -> None:
        """Forget sources with no lockout and no recent failure (called under self._lock)."""
        if len(self._trackers) > MAX_TRACKED_SOURCES:
            self._trackers = {k: t for k, t in self._trackers.items() if not t.idle(now)}

    def _fail(
        self,
        invite: Invite,
        app: Application,
        source: ipaddress.IPv4Address | ipaddress.IPv6Address,
        mode: str,
        reason: str,
        now: datetime,
    ) -> InviteResult:
        """A failed check: counted towards the lockout, then refused like any other."""
        with self._lock:
            started = self._trackers[_lockout_key(source)].fail(now)
        if started is not None:
            reason += (
                f"; that is {started.failures} failures within 60 s, so calls from {source} "
                f"are locked out until {started.until.isoformat(timespec='seconds')}"
            )
        return self._refuse(invite, app, source, mode, reason, counted=True)

    def _refuse(
        self,
        invite: Invite,
        app: Application,
        source: ipaddress.IPv4Address | ipaddress.IPv6Address,
        mode: str,
        reason: str,
        counted: bool = False,
    ) -> InviteResult:
        """Answer 403 and end the call with sip_auth_failed 4210 (seed, Hangup Causes)."""
        call = self._new_call(invite, app)
        call.note("invite", f"INVITE {invite.request_uri} from {source}", source_ip=str(source))
        call.note(
            "auth",
            f"{mode or 'none'}: refused, 403 Forbidden: {reason}",
            decision="refused",
            counted=counted,
        )
        # Seed silent on the hangup callback's SIP fields for a refused call: SIPSourceIP and
        # SIPAuthType say who failed what (monitoring counts failures per source IP). No
        # SIPAuthUser: the seed defines it as the authenticated username, and nobody was.
        call.sip = {"SIPAuthType": mode, "SIPSourceIP": str(source)} if mode else {}
        self._end(call, INBOUND_AUTH_FAILED_CODE, "failed", "Plivo")
        return InviteResult(403, reason, call.uuid)

    def _new_call(self, invite: Invite, app: Application, direction: str = "inbound") -> Call:
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

    # -- outbound: Make Call and Transfer ---------------------------------------------------------

    def make_call(self, fields: Mapping[str, Any]) -> list[str]:
        """Check a Make Call request as Plivo does, place each call, return the request UUIDs."""

        def text(key: str, required: bool = False) -> str | None:
            return field_text(fields, key, required)

        caller = check_caller(text("from", True))
        to = text("to", True)
        answer_url = text("answer_url", True)
        username, password = text("sip_auth_username"), text("sip_auth_password")
        assert to is not None and answer_url is not None
        targets = destinations(to)
        check_sip_credentials(("sip_auth_username", "sip_auth_password"), username, password)
        if username is not None and not all(is_sip_uri(t) for t in targets):
            # "sip_auth_username and sip_auth_password are only accepted when to is a SIP URI"
            raise ValidationError(
                "sip_auth_username",
                "sip_auth_username and sip_auth_password are only accepted when to is a SIP URI",
            )
        caller_name = text("caller_name")
        if caller_name is not None:
            check_text("caller_name", caller_name, max_length=CALLER_NAME_MAX)
        # Make Call names the application's fallback_answer_url "fallback_url" (facts §3).
        wire = {key: "fallback_url" if key == "fallback_answer_url" else key for key in URL_FIELDS}
        urls = {
            key: fields[wire[key]] for key in URL_FIELDS if fields.get(wire[key]) not in (None, "")
        }
        app = self.account.check_application(urls)
        ring = _ring_timeout(fields.get("ring_timeout"))
        placed = []
        for target in targets:
            invite = Invite("0.0.0.0", target, caller, target, caller_name)
            call = self._new_call(invite, app, "outbound")
            call.request_uuid = self._new_uuid()
            call.note("api", f"Make Call to {safe_address(target)} (request {call.request_uuid})")
            placed.append(call)
        # One job for the request, however many destinations: the calls run one after the
        # other in simulated time, and a 1000-destination request starts one thread, not 1000.
        self._run(partial(self._place_all, placed, username, password, ring))
        return [str(call.request_uuid) for call in placed]

    def _place_all(
        self, calls: list[Call], username: str | None, password: str | None, ring: float | None
    ) -> None:
        for call in calls:
            self._guarded(call, partial(self._place, call, username, password, ring))()

    def _place(
        self, call: Call, username: str | None, password: str | None, ring: float | None
    ) -> None:
        leg = self._ring(call, call.to, username, password, ring, leg_uuid=call.uuid)
        self._note_leg(call, leg)
        call.offset = leg.at
        if leg.outcome != "answered":
            code = leg.code
            status = {"no-answer": "no-answer", "busy": "busy", "timeout": "timeout"}.get(
                leg.outcome, "failed"
            )
            # Seed silent on HangupSource here: the called side ended it ("Callee", facts §5).
            self._end(call, code, status, "Callee", cause=leg.cause)
            return
        call.answered_at = call.offset
        call.state = "in-progress"
        self._follow(call, call.app.answer_url, call.app.answer_method, "answer")

    def transfer(self, call_uuid: str, fields: Mapping[str, Any]) -> None:
        """Check a Transfer request (facts §4) and move the live call's A leg to new XML."""
        with self._lock:
            call = self.calls.get(call_uuid)
        if call is None or call.state == "ended":
            raise LookupError("call not found or no longer live")
        legs = fields.get("legs", "aleg")
        if legs not in ("aleg", "bleg", "both"):
            raise ValidationError("legs", "must be aleg, bleg or both")
        if legs != "aleg":
            # A live sandbox call is one the (simulated) AI agent holds: no bridge, no B leg.
            raise ValidationError("legs", "this call has no B leg to transfer")
        url = fields.get("aleg_url")
        if not isinstance(url, str) or not url:
            raise ValidationError("aleg_url", "aleg_url parameter is missing")
        check_url("aleg_url", url)
        method = fields.get("aleg_method") or "POST"
        check_method("aleg_method", method.upper() if isinstance(method, str) else method)
        method = method.upper()
        with self._lock:
            if call.state != "parked":
                raise ValidationError("call", "the call is running XML; transfer it when it waits")
            call.state = "in-progress"
            call.settled.clear()
        self._run(self._guarded(call, lambda: self._resume(call, url, method)))

    def _resume(self, call: Call, url: str, method: str) -> None:
        self._catch_up(call)
        call.transfers += 1
        call.documents = 0  # each transfer starts a new run of XML (its own loop guard)
        call.note("transfer", f"Transfer API: A leg to {safe_url(url)}", url=safe_url(url))
        if call.transfers > MAX_TRANSFERS:
            self._end(call, 2060, "failed", "Plivo")
            return
        self._follow(call, url, method, "transfer")

    def hang_up(self, call_uuid: str) -> Call:
        """The caller hangs up a call the AI agent is holding."""
        with self._lock:
            call = self.calls.get(call_uuid)
            if call is None or call.state != "parked":
                raise LookupError("no call waiting with that CallUUID")
            call.state = "in-progress"  # claimed: a Transfer arriving now finds it busy
        self._catch_up(call)
        call.note("caller", "caller hung up")
        self._end(call, 4000, "completed", "Caller")
        return call

    def wait(self, call_uuid: str, timeout: float) -> Call:
        """Return the call once it waits at the AI agent or has ended (or after `timeout`)."""
        with self._lock:
            call = self.calls.get(call_uuid)
        if call is None:
            raise LookupError("no such call")
        call.settled.wait(timeout)
        return call

    def lockouts(self) -> list[lockout.Lockout]:
        """Return the lockouts in force now."""
        now = self.clock.now()
        with self._lock:
            return [t.current for t in self._trackers.values() if t.current and t.locked(now)]

    # -- running a call -------------------------------------------------------------------------

    def _guarded(self, call: Call, job: Callable[[], None]) -> Callable[[], None]:
        """Wrap a call's steps so a sandbox bug ends the call (0 Unknown) instead of hanging it."""

        def run() -> None:
            try:
                job()
            except Exception:  # any failure inside the sandbox: end the call, keep serving
                log.exception("sandbox: call %s failed inside the sandbox", call.uuid)
                call.note("error", "the sandbox itself failed on this call (see its log)")
                try:
                    self._end(call, 0, "failed", "Error")
                except Exception:  # the hangup callback itself failed: just settle the call
                    log.exception("sandbox: call %s could not be ended cleanly", call.uuid)
                    call.state = "ended"
                call.settled.set()

        return run

    def _catch_up(self, call: Call) -> None:
        """Count the real (or advanced) time a parked call waited into its offset."""
        if call.parked_since is not None:
            waited = (self.clock.now() - call.parked_since).total_seconds()
            call.offset += max(0.0, waited)
            call.parked_since = None

    def _connect(self, call: Call) -> None:
        self._follow(call, call.app.answer_url, call.app.answer_method, "answer")

    def _follow(
        self,
        call: Call,
        url: str,
        method: str,
        kind: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Fetch XML and run it, then whatever it leads to, until the call ends or waits."""
        step: tuple[str, str, str, Mapping[str, str]] | None = (url, method, kind, extra or {})
        while step is not None:
            url, method, kind, extra = step
            call.documents += 1
            if call.documents > MAX_DOCUMENTS:
                self._end(call, 2060, "failed", "Plivo")
                return
            if self._is_ai(url):
                self._park(call, url)
                return
            root = self._fetch_xml(call, url, method, kind, extra)
            if root is None:
                return
            step = self._execute(call, root, kind)
            if call.state == "ended":
                return
        self._end(call, 4010, "completed", "Plivo")

    def _is_ai(self, url: str) -> bool:
        return any(url.startswith(prefix) for prefix in self.config.ai_urls)

    def _park(self, call: Call, url: str) -> None:
        """The simulated AI agent takes the call and holds it until a Transfer or a hangup."""
        if call.answered_at is None:
            call.answered_at = call.offset
        handoff = "handoff_url=" in urlsplit(url).query
        call.note(
            "ai",
            f"AI agent at {safe_url(url)} has the call"
            + (" (it was given a handoff_url)" if handoff else "")
            + "; waiting for a Transfer or a hangup",
            url=safe_url(url),
            handoff_url=handoff,
        )
        with self._lock:  # a Transfer or hangup may act as soon as the state says parked
            call.parked_since = self.clock.now()
            call.state = "parked"
            call.settled.set()

    def _fetch_xml(
        self, call: Call, url: str, method: str, kind: str, extra: Mapping[str, str]
    ) -> etree._Element | None:
        reach_code, xml_code = FETCH_CODES[kind]
        params = {**self._params(call, kind), **extra}
        answer = self._callback(call, kind, url, method, params)
        if (answer is None or not 200 <= answer.status < 300) and kind == "answer":
            fallback = call.app.fallback_answer_url
            if fallback:
                answer = self._callback(
                    call, "fallback", fallback, call.app.fallback_method, params
                )
        if answer is None or not 200 <= answer.status < 300:
            self._end(call, reach_code, "failed", "Error")
            return None
        root = _parse_xml(answer.body)
        if root is None:
            call.note("xml", "the answer is not a Plivo <Response> document")
            self._end(call, xml_code, "failed", "Error")
            return None
        call.note("xml", describe(root))
        return root

    def _execute(
        self, call: Call, root: etree._Element, kind: str
    ) -> tuple[str, str, str, Mapping[str, str]] | None:
        """Run a <Response>; return the next document to fetch, or None when it runs out."""
        try:
            return self._run_verbs(call, root, kind)
        except InvalidXML as exc:
            # A URL, method or credential pair Plivo would refuse: the document is invalid.
            call.note("xml", f"invalid XML: {exc}")
            self._end(call, FETCH_CODES[kind][1], "failed", "Error")
            return None

    def _run_verbs(
        self, call: Call, root: etree._Element, kind: str
    ) -> tuple[str, str, str, Mapping[str, str]] | None:
        for element in root:
            if not isinstance(element.tag, str):
                continue  # an XML comment or processing instruction
            tag = element.tag
            if tag != "Hangup" and call.answered_at is None:
                call.answered_at = call.offset
                call.state = "in-progress"
            if tag == "Speak":
                words = len((element.text or "").split())
                call.offset += max(1.0, words / SPEAK_WORDS_PER_SECOND)
                call.note("speak", f"said {words} word(s)")
            elif tag == "Wait":
                call.offset += _seconds(element.get("length"), 1)
                call.note("wait", "waited")
            elif tag == "Hangup":
                self._hangup_verb(call, element)
                return None
            elif tag == "Redirect":
                url = _xml_url("Redirect", (element.text or "").strip())
                return url, _xml_method(element.get("method")), "redirect", {}
            elif tag == "Record":
                step = self._record(call, element)
                if step is not None:
                    return step
            elif tag == "Dial":
                step = self._dial(call, element)
                if step is not None or call.state == "ended":
                    return step
            elif tag in OTHER_VERBS:
                call.note("xml", f"<{tag}> is not simulated by the sandbox; skipped")
            else:
                raise InvalidXML(f"<{tag}> is not a Plivo verb (facts §7: <Reject/> gives 8011)")
        return None

    def _hangup_verb(self, call: Call, element: etree._Element) -> None:
        reason = element.get("reason")
        # facts §7: reason="rejected" is recorded as 3020, "busy" as 3010 (observed); a
        # <Hangup/> before the call was answered rejects it by default.
        if reason == "busy":
            self._end(call, 3010, "busy", "Answer XML")
        elif reason == "rejected" or call.answered_at is None:
            self._end(call, 3020, "failed", "Answer XML")
        else:
            self._end(call, 4000, "completed", "Answer XML")

    def _record(
        self, call: Call, element: etree._Element
    ) -> tuple[str, str, str, Mapping[str, str]] | None:
        callback = _optional_url("Record callbackUrl", element.get("callbackUrl"))
        callback_method = _xml_method(element.get("callbackMethod"))
        action = _optional_url("Record action", element.get("action"))
        method = _xml_method(element.get("method"))
        seconds = min(_seconds(element.get("maxLength"), 60), self.config.message_seconds)
        recording = self._new_uuid()
        call.offset += seconds
        call.note("record", f"recorded a {seconds:g} s message (simulated caller)")
        params = {
            "RecordUrl": f"https://sandbox.invalid/recordings/{recording}.mp3",
            "RecordingID": recording,
            "RecordingDuration": str(int(seconds)),
            "RecordingDurationMs": str(int(seconds * 1000)),
        }
        if callback:
            self._callback(
                call, "recording", callback, callback_method, {**self._params(call), **params}
            )
        return (action, method, "action", params) if action else None

    def _dial(
        self, call: Call, element: etree._Element
    ) -> tuple[str, str, str, Mapping[str, str]] | None:
        """Ring every <User>/<Number> at once; the first to answer wins (facts §2)."""
        children = [c for c in element if c.tag in ("User", "Number")]
        action = _optional_url("Dial action", element.get("action"))
        method = _xml_method(element.get("method"))
        for child in children:
            try:
                check_sip_credentials(
                    ("sipAuthUsername", "sipAuthPassword"),
                    child.get("sipAuthUsername"),
                    child.get("sipAuthPassword"),
                )
            except ValidationError as exc:
                raise InvalidXML(f"<{child.tag}> {exc.message}") from None
        ring = _seconds(element.get("timeout"), 0) or None
        limit = f", timeout {ring:g}s" if ring else ""
        call.note("dial", f"Dial {len(children)} endpoint(s){limit}")
        skipped = [name for name in DIAL_NOT_SIMULATED if element.get(name)]
        if skipped:
            call.note("dial", f"not simulated: {', '.join(skipped)} (agents take the call as is)")
        legs = [
            self._ring(
                call,
                (child.text or "").strip(),
                child.get("sipAuthUsername"),
                child.get("sipAuthPassword"),
                ring,
            )
            for child in children
        ]
        answered = [leg for leg in legs if leg.outcome == "answered"]
        winner = min(answered, key=lambda leg: leg.at) if answered else None
        for leg in legs:
            if winner is not None and leg is not winner and leg.at >= winner.at:
                leg.outcome, leg.at, leg.cause, leg.code = "cancelled", winner.at, "Canceled", 1000
                leg.steps.append("cancelled: another endpoint answered first")
        for leg in sorted(legs, key=lambda leg: leg.at):  # the timeline in time order
            self._note_leg(call, leg)
        if winner is not None:
            if call.answered_at is None:
                call.answered_at = winner.at
            cap = _seconds(element.get("timeLimit"), 0)
            talk = min(winner.talk, cap) if cap else winner.talk
            call.offset = winner.at + talk
            status, cause, b_leg = "completed", "Normal Hangup", winner.uuid
            call.note("bridge", f"talked {talk:g} s with {safe_address(winner.address)}; hung up")
        elif legs:
            last = max(legs, key=lambda leg: leg.at)
            # Seed silent on a Dial of several endpoints that all fail: the Dial ends when the
            # last leg does, and reports that leg's status and cause.
            call.offset = last.at
            status, cause, b_leg = last.dial_status, last.cause or "", ""
        else:
            status, cause, b_leg = "failed", "Invalid Destination Address", ""
        call.note("dial", f"DialStatus={status} DialHangupCause={cause}", dial_status=status)
        if not action:
            return None
        params = {
            "DialStatus": status,
            # Seed silent: a leg that failed (auth, no such endpoint) never rang.
            "DialRingStatus": "true" if any(leg.outcome != "failed" for leg in legs) else "false",
            "DialHangupCause": cause,
            "DialALegUUID": call.uuid,
            "DialBLegUUID": b_leg,
        }
        if (element.get("redirect") or "true").lower() == "false":
            self._callback(call, "action", action, method, {**self._params(call), **params})
            return None
        return action, method, "action", params

    def _ring(
        self,
        call: Call,
        address: str,
        username: str | None,
        password: str | None,
        timeout: float | None,
        leg_uuid: str | None = None,
    ) -> Leg:
        """Ring one endpoint, answering its digest challenge as Plivo would (seed, Outbound)."""
        leg = Leg(leg_uuid or self._new_uuid(), address, "failed", call.offset + 0.05)
        endpoint: Endpoint | None = self.config.endpoints.get(address)
        if endpoint is None:
            leg.cause, leg.code = "Invalid Destination Address", 2000
            leg.steps.append("no such endpoint in the sandbox config")
            return leg
        if endpoint.auth is not None:
            now = self.clock.now()
            challenge = endpoint.auth.challenge(address, now)
            leg.steps.append(f"challenged with {endpoint.auth.status} (realm {challenge.realm})")
            if username is None or password is None:
                # Seed silent: with no credentials to answer the challenge, the PBX's 401/407
                # stands, and the leg fails as a rejected authentication.
                leg.cause, leg.code = SIP_AUTH_FAILED, OUTBOUND_AUTH_FAILED_CODE
                leg.steps.append("no sipAuthUsername/sipAuthPassword to answer it")
                return leg
            answer = digest.answer(challenge, username, password, "INVITE", address)
            leg.steps.append("answered the challenge with the <User>'s credentials")
            if endpoint.auth.reply == "timeout":
                leg.outcome, leg.at = "timeout", leg.at + SIP_TIMER_B
                leg.cause, leg.code = SIP_AUTH_TIMEOUT, OUTBOUND_AUTH_TIMEOUT_CODE
                leg.steps.append(f"no reply to the authenticated INVITE in {SIP_TIMER_B:g} s")
                return leg
            if not endpoint.auth.accepts(answer, address, now):
                leg.cause, leg.code = SIP_AUTH_FAILED, OUTBOUND_AUTH_FAILED_CODE
                leg.steps.append("the PBX rejected the credentials (403)")
                return leg
            leg.steps.append("the PBX accepted the credentials")
            leg.at += 0.05
        if endpoint.answer == "busy":
            leg.outcome, leg.at, leg.cause, leg.code = "busy", leg.at + 0.5, "Busy Line", 3010
            return leg
        limit = timeout if timeout is not None else DEFAULT_RING_SECONDS
        if endpoint.answer == "no_answer" or endpoint.answer_after >= limit:
            # The facts file's code table has no "no answer" code: none is invented here.
            leg.outcome, leg.at, leg.cause = "no-answer", leg.at + limit, "No Answer"
            leg.steps.append(f"rang {limit:g} s unanswered")
            return leg
        leg.outcome, leg.at, leg.talk = "answered", leg.at + endpoint.answer_after, endpoint.talk
        leg.steps.append(f"answered after {endpoint.answer_after:g} s")
        return leg

    def _note_leg(self, call: Call, leg: Leg) -> None:
        code = f" {leg.code}" if leg.code else ""
        cause = f" ({leg.cause}{code})" if leg.cause and leg.outcome != "answered" else ""
        call.events.append(
            Event(
                leg.at,
                "leg",
                f"{safe_address(leg.address)}: {leg.outcome}{cause} — "
                + "; ".join(leg.steps or ["rang"]),
                {
                    "address": safe_address(leg.address),
                    "outcome": leg.outcome,
                    "cause": leg.cause,
                    "code": leg.code,
                    "leg_uuid": leg.uuid,
                },
            )
        )

    # -- callbacks ------------------------------------------------------------------------------

    def _params(self, call: Call, kind: str = "") -> dict[str, str]:
        """The standard callback parameters (facts §5), plus the SIP-auth result on answer."""
        status = "in-progress" if call.answered_at is not None else "ringing"
        params = {
            "CallUUID": call.uuid,
            "From": call.from_,
            "To": call.to,
            "Direction": call.direction,
            "CallStatus": status,
            "ParentAuthID": self.account.auth_id,
            "SessionStart": call.started.strftime("%Y-%m-%d %H:%M:%S.%f"),
        }
        if call.caller_name:
            params["CallerName"] = call.caller_name
        if call.direction == "outbound" and call.request_uuid:
            params.update(
                RequestUUID=call.request_uuid, ALegUUID=call.uuid, ALegRequestUUID=call.request_uuid
            )
        if kind == "answer":
            params["Event"] = "StartApp"
            # Seed: "When authentication succeeds, your answer_url callback receives" these.
            params.update(call.sip)
        return params

    def _end(
        self,
        call: Call,
        code: int | None,
        status: str,
        source: str,
        cause: str | None = None,
    ) -> None:
        """End the call and send the hangup callback (facts §5 fields, seed causes)."""
        with self._lock:  # once: a caller's hangup and the XML's end may race
            if call.state == "ended":
                return
            call.state = "ended"
        name = cause or (CAUSES[code] if code is not None else "Unknown")
        duration = int(call.offset - call.answered_at) if call.answered_at is not None else 0
        ended = call.started + timedelta(seconds=call.offset)
        params = {
            **self._params(call),
            "CallStatus": status,
            "Event": "Hangup",
            # Seed: "HangupCauseName / PlivoHangupCause fields"; HangupCause (legacy) is seed
            # silent and carries the same name.
            "HangupCause": name,
            "HangupCauseName": name,
            "PlivoHangupCause": name,
            "HangupSource": source,
            "Duration": str(duration),
            "BillDuration": str(duration),
            "StartTime": call.started.strftime("%Y-%m-%d %H:%M:%S"),
            "EndTime": ended.strftime("%Y-%m-%d %H:%M:%S"),
            # Seed silent: the SIP-auth result rides on the hangup callback too (facts §5 lists
            # the hangup's fields as the standard ones plus the cause), so an app can count
            # failures per source IP from the call's end alone.
            **call.sip,
        }
        if code is not None:
            params["HangupCauseCode"] = str(code)
        if call.answered_at is not None:
            answered = call.started + timedelta(seconds=call.answered_at)
            params["AnswerTime"] = answered.strftime("%Y-%m-%d %H:%M:%S")
        call.hangup = {
            key: params[key]
            for key in ("CallStatus", "HangupCauseName", "HangupCauseCode", "HangupSource")
            if key in params
        }
        code_text = f" {code}" if code is not None else ""
        call.note("hangup", f"{name}{code_text}, CallStatus {status}, by {source}", **call.hangup)
        if call.app.hangup_url:
            self._callback(call, "hangup", call.app.hangup_url, call.app.hangup_method, params)
        call.settled.set()

    def _callback(
        self, call: Call, name: str, url: str, method: str, params: Mapping[str, str]
    ) -> HttpAnswer | None:
        """Send a signed callback (V3 and Ma-V3, one nonce), as Plivo does, and note it."""
        target = url.split("#", 1)[0]  # the #ct=... fragment configures Plivo, it is not sent
        nonce = f"{secrets.randbelow(10**20):020d}"
        body: bytes | None
        if method == "GET":
            parts = urlsplit(target)
            query = "&".join(q for q in (parts.query, urlencode(params)) if q)
            target = urlunsplit(parts._replace(query=query))
            signed: dict[str, list[str]] = {}
            body = None
        else:
            signed = {key: [value] for key, value in params.items()}
            body = urlencode(params).encode()
        headers = {
            **signed_headers(self._token, method, target, signed, nonce, self._main_token),
            "User-Agent": "PlivoSandbox",
        }
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        shown = safe_url(url)
        try:
            answer = self._http(method, target, headers, body)
        except (OSError, ValueError) as exc:  # unreachable, or a URL no client can send to
            call.note("callback", f"{name}: {method} {shown} -> unreachable ({type(exc).__name__})")
            return None
        call.note(
            "callback",
            f"{name}: {method} {shown} -> {answer.status}",
            callback=name,
            url=shown,
            status=answer.status,
            params=sorted(params),
            sip={k: v for k, v in params.items() if k.startswith("SIP")},
        )
        return answer


def _lockout_key(source: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """One key per source, so a caller cannot multiply its attempts by switching notation: an
    IPv4-mapped IPv6 address counts as its IPv4 address and an IPv6 zone (%eth0) is dropped,
    as the ACL check reads them too."""
    return str(unmapped(source)).split("%", 1)[0]


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class InvalidXML(Exception):
    """Something in a document Plivo would refuse; the call ends 8011-8014."""


def _xml_url(where: str, value: str) -> str:
    try:
        return check_url(where, value)
    except ValidationError:
        raise InvalidXML(f"{where} is not an absolute http(s) URL") from None


def _optional_url(where: str, value: str | None) -> str | None:
    return _xml_url(where, value) if value else None


def _xml_method(value: str | None) -> str:
    method = (value or "POST").upper()
    if method not in ("GET", "POST"):
        raise InvalidXML("method must be GET or POST")
    return method


def _seconds(raw: str | None, default: float) -> float:
    """A duration attribute in whole seconds; unreadable means the default, huge is clamped."""
    value = whole_number((raw or "").strip())
    return default if value is None else float(min(value, MAX_CALL_SECONDS))


def _ring_timeout(raw: object) -> float | None:
    """Make Call's ring_timeout: whole seconds from 1 (the SDK sends it; facts §3)."""
    if raw is None or raw == "":
        return None
    text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    value = whole_number(text) if isinstance(text, str) else None
    if not value:
        raise ValidationError("ring_timeout", "must be a whole number of seconds from 1")
    return float(min(value, MAX_CALL_SECONDS))


def _parse_xml(body: bytes) -> etree._Element | None:
    if len(body) > MAX_XML_BYTES:
        return None
    try:
        root = etree.fromstring(body, _XML_PARSER)
    except etree.XMLSyntaxError:
        return None
    return root if root.tag == "Response" else None


# Attributes never shown: the seed keeps SIP credentials out of CDRs and callbacks.
_HIDDEN = {"sipAuthUsername", "sipAuthPassword"}


def describe(root: etree._Element) -> str:
    """Summarise a <Response> for the timeline: verbs, safe attributes, no credentials."""
    parts = []
    for element in root:
        if not isinstance(element.tag, str):
            continue
        if element.tag == "Dial":
            inner = []
            for child in element:
                if not isinstance(child.tag, str):
                    continue
                secret = " (with digest credentials)" if _HIDDEN & set(child.attrib) else ""
                inner.append(f"{child.tag} {(child.text or '').strip()}{secret}")
            parts.append(f"Dial[{', '.join(inner)}]")
        elif element.tag == "Redirect":
            parts.append(f"Redirect {safe_url((element.text or '').strip())}")
        elif element.tag == "Hangup" and element.get("reason"):
            parts.append(f"Hangup reason={element.get('reason')}")
        else:
            parts.append(element.tag)
    return "Response: " + (", ".join(parts) if parts else "(empty)")
