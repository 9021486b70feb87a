"""The SIP edge: whether Plivo admits an inbound INVITE, decided before any XML plays.

In order, as Plivo's SIP-authentication page describes inbound authentication
(https://www.plivo.com/docs/voice/concepts/sip-authentication; docs/plivo.md, SIP
authentication): a source IP locked out after 10 failures in 60 s is refused; the application
is found from the Request-URI (only sip:{app_id}@app.plivo.com runs its sip_auth_type); the
IP ACL is checked, then the SIP digest: a 407 challenge (realm app.plivo.com, one nonce per
challenge) and its answer, checked against the credential's HA1. Each failed check counts
towards the source's lockout.

The edge only decides (`SipEdge.admit` returns a `Verdict`); the call core records the call,
ends a refused one and hands an admitted one to the XML player. A real SIP front would hand
its INVITEs to the same `admit`.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, replace
from datetime import datetime

from sandbox import digest
from sandbox.account import Account, Application, Credential
from sandbox.call import Call
from sandbox.timeline import SandboxClock
from sipguard.calls.causes import AUTH_CREDENTIAL, AUTH_IP_ACL, AUTH_IP_ACL_AND_CREDENTIAL
from sipguard.calls.forms import unmapped
from sipguard.monitoring import lockout
from sipguard.plivo.sipauth import REALM
from xml_builders import has_control, is_number, is_sip_uri

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_FIELD = 256  # a From / To / Request-URI / caller name the sandbox takes
MAX_TRACKED_SOURCES = 10_000  # source IPs followed for lockouts before idle ones are forgotten
IP_MODES = (AUTH_IP_ACL, AUTH_IP_ACL_AND_CREDENTIAL)
CREDENTIAL_MODES = (AUTH_CREDENTIAL, AUTH_IP_ACL_AND_CREDENTIAL)


@dataclass(frozen=True)
class Invite:
    """An INVITE reaching Plivo's edge: where from, to which Request-URI, with what answer."""

    source_ip: str
    request_uri: str
    from_: str | None = None
    to: str | None = None
    caller_name: str | None = None
    authorization: str | None = None  # Proxy-Authorization, answering an earlier 407

    def problem(self) -> str | None:
        """Say which field the sandbox refuses to take (too long, or a control character)."""
        fields = {
            "request_uri": self.request_uri,
            "from": self.from_,
            "to": self.to,
            "caller_name": self.caller_name,
        }
        for key, value in fields.items():
            if value is not None and (len(value) > MAX_FIELD or has_control(value)):
                return f"{key} must be at most {MAX_FIELD} printable characters"
        return None


@dataclass(frozen=True)
class InviteResult:
    """Plivo's SIP answer: 200 (connected), 407 (challenge), 403, 404 or 400."""

    status: int
    reason: str
    call_uuid: str | None = None
    challenge: str | None = None  # Proxy-Authenticate, with a 407


@dataclass(frozen=True)
class Verdict:
    """The edge's decision on one INVITE.

    Without `app` it is a bare SIP answer and no call exists (400, 404, 407, or 403 from a
    locked-out source at no application). With `app`, a call is recorded: admitted (200) or
    refused (403, ending sip_auth_failed 4210).
    """

    answer: InviteResult
    app: Application | None = None
    request_uri: str = ""
    source: str = ""
    mode: str = ""  # the sip_auth_type that ran, "" when none did
    username: str | None = None  # the authenticated SIP username
    counted: bool = False  # a refusal counted towards the source's lockout
    not_run: str = ""  # why no authentication ran, for an admitted call without a mode

    @property
    def admitted(self) -> bool:
        """Tell whether the call goes on to the application's XML."""
        return self.answer.status == 200

    def record(self, call: Call) -> None:
        """Write the edge's part into the call: the INVITE, the auth decision, the SIP fields."""
        call.note("invite", f"INVITE {self.request_uri} from {self.source}", source_ip=self.source)
        mode = self.mode
        if not self.admitted:
            call.note(
                "auth",
                f"{mode or 'none'}: refused, 403 Forbidden: {self.answer.reason}",
                decision="refused",
                counted=self.counted,
            )
            # Plivo's pages are silent on the hangup callback's SIP fields for a refused call
            # (docs/plivo.md, Where Plivo is silent): SIPSourceIP and SIPAuthType say who failed
            # what (monitoring counts failures per source IP). No SIPAuthUser: it is the
            # authenticated username (docs/plivo.md, SIP authentication), and nobody was.
            call.sip = {"SIPAuthType": mode, "SIPSourceIP": self.source} if mode else {}
        elif mode:
            call.sip = {"SIPAuthType": mode, "SIPSourceIP": self.source}
            if self.username is not None:
                call.sip["SIPAuthUser"] = self.username  # "Authenticated SIP username"
            who = f" as {self.username}" if self.username else ""
            call.note("auth", f"{mode}: passed{who}", decision="passed", sip_auth_type=mode)
        else:
            call.note("auth", f"not run: {self.not_run}", decision="not-run")


class SipEdge:
    """Plivo's edge for one account's inbound calls: lockouts, resolution, IP ACLs, digest.

    Shared by the threads of a served sandbox: trackers change under one lock, and nonces
    under their own (digest.Nonces).
    """

    def __init__(self, account: Account, clock: SandboxClock) -> None:
        self.account = account
        self.clock = clock
        self._lock = threading.Lock()
        self._trackers: dict[str, lockout.Tracker] = {}
        self._nonces = digest.Nonces()

    def admit(self, invite: Invite) -> Verdict:
        """Decide on an INVITE as Plivo's edge does: lockout, resolve, authenticate."""
        now = self.clock.now()
        try:
            source = ipaddress.ip_address(invite.source_ip)
        except ValueError:
            # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): a source
            # that is not an address is the caller's mistake (400).
            return Verdict(InviteResult(400, "source IP is not an IPv4 or IPv6 address"))
        resolved = self._resolve(invite.request_uri)
        app, by_app_id = resolved if resolved is not None else (None, False)
        # Only sip:{app_id}@app.plivo.com runs auth: "Inbound auth resolves from the SIP
        # Request-URI ... not the To header" (docs/plivo.md, SIP authentication). A phone
        # number there runs none.
        mode = app.sip_auth_type if app is not None and by_app_id else ""
        # Admitted, unless a check below refuses it or asks for credentials.
        connected = InviteResult(200, "connected")
        verdict = Verdict(connected, app, invite.request_uri, str(source), mode)
        locked = self._lockout(source, now)
        if locked is not None:
            # "During lockout, all calls from that IP receive 403 Forbidden — even with correct
            # credentials." Plivo's pages are silent on which calls (docs/plivo.md, Where Plivo
            # is silent): every call from the IP, whatever its Request-URI, as an edge rate
            # limit would; refused attempts do not count.
            until = locked.until.isoformat(timespec="seconds")
            reason = f"source IP locked out until {until}"
            if app is None:
                return Verdict(InviteResult(403, reason))  # no application: no call, no callback
            return replace(verdict, answer=InviteResult(403, reason))
        if app is None:
            # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): nothing
            # answers at this Request-URI, SIP's 404 Not Found.
            return Verdict(InviteResult(404, f"nothing answers at {invite.request_uri}"))
        # What the account holds now: changes apply at once (docs/plivo.md, SIP authentication).
        with self.account.lock:
            acl = self.account.acls.get(app.ip_acl_uuid or "")
            admitted = acl is not None and acl.admits(source)
            credential = self.account.credentials.get(app.credential_uuid or "")
            stored = replace(credential) if credential is not None else None
        if mode in IP_MODES and not admitted:
            return self._fail(verdict, source, "source IP is not in the IP ACL", now)
        username: str | None = None
        if mode in CREDENTIAL_MODES:
            if invite.authorization is None:
                return self._challenge(invite.request_uri, now)
            try:
                answer = digest.Authorization.parse(invite.authorization)
            except digest.DigestError as exc:
                return self._fail(verdict, source, f"unreadable digest ({exc})", now)
            if not self._nonces.redeem(answer.nonce, invite.request_uri, now):
                # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): a nonce
                # we did not issue, or spent, or expired, is challenged again (stale=true) and
                # not counted as a failure (RFC 7616 §3.3).
                return self._challenge(invite.request_uri, now, stale=True)
            if stored is None or not _answers(answer, stored, invite.request_uri):
                return self._fail(verdict, source, "digest credentials do not match", now)
            username = stored.username
        not_run = ""
        if not mode:
            not_run = (
                "the Request-URI is a phone number, not sip:{app_id}@app.plivo.com"
                if not by_app_id
                else "the application has no sip_auth_type"
            )
        return replace(verdict, username=username, not_run=not_run)

    def lockouts(self) -> list[lockout.Lockout]:
        """Return the lockouts in force now."""
        now = self.clock.now()
        with self._lock:
            return [t.current for t in self._trackers.values() if t.current and t.locked(now)]

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

    def _lockout(self, source: IPAddress, now: datetime) -> lockout.Lockout | None:
        """Return the lockout `source` is under now, if any."""
        with self._lock:
            key = _lockout_key(source)
            tracker = self._trackers.setdefault(key, lockout.Tracker(key))
            locked = tracker.current if tracker.locked(now) else None
            if len(self._trackers) > MAX_TRACKED_SOURCES:
                # Forget sources with no lockout and no recent failure.
                self._trackers = {k: t for k, t in self._trackers.items() if not t.idle(now)}
        return locked

    def _challenge(self, request_uri: str, now: datetime, stale: bool = False) -> Verdict:
        """Answer 407 with a fresh nonce for `request_uri` (Plivo's own challenges are MD5)."""
        nonce = self._nonces.issue(REALM, request_uri, now)
        challenge = digest.Challenge(REALM, nonce, "MD5", stale=stale)
        reason = "stale nonce" if stale else "Proxy Authentication Required"
        return Verdict(InviteResult(407, reason, None, challenge.header()))

    def _fail(self, verdict: Verdict, source: IPAddress, reason: str, now: datetime) -> Verdict:
        """Refuse a failed check with 403, counted towards the source's lockout; the call ends
        with sip_auth_failed 4210 (docs/plivo.md, Hangup causes)."""
        key = _lockout_key(source)
        with self._lock:  # its tracker may have been pruned (idle) since the lockout check
            started = self._trackers.setdefault(key, lockout.Tracker(key)).fail(now)
        if started is not None:
            reason += (
                f"; that is {started.failures} failures within 60 s, so calls from {source} "
                f"are locked out until {started.until.isoformat(timespec='seconds')}"
            )
        return replace(verdict, answer=InviteResult(403, reason), counted=True)


def _answers(answer: digest.Authorization, stored: Credential, request_uri: str) -> bool:
    """Tell whether a digest answer proves the stored credential for this Request-URI."""
    return (
        answer.username == stored.username
        and answer.realm == stored.realm
        and answer.uri == request_uri
        and answer.algorithm.upper() == "MD5"  # HA1 is MD5 (docs/plivo.md, SIP authentication)
        and answer.qop == "auth"  # offered in the challenge, so it must come back
        and digest.verify(answer, stored.ha1, "INVITE")
    )


def _lockout_key(source: IPAddress) -> str:
    """One key per source, so a caller cannot multiply its attempts by switching notation: an
    IPv4-mapped IPv6 address counts as its IPv4 address and an IPv6 zone (%eth0) is dropped,
    as the ACL check reads them too."""
    return str(unmapped(source)).split("%", 1)[0]
