"""Outbound legs: Plivo ringing one endpoint of the simulated world, answering its digest.

A <Dial> rings each <User>/<Number> through here, and Make Call rings its destination. The
endpoints are the sandbox config's (agents behind PBXs, phones, trunks): whether they challenge
(401/407), accept the `<User>`'s credentials, ring, answer or are busy, and how long they talk.
A sip: URI on a loopback address with a port is dialled for real instead (`sip_client`): the
PBX listening there challenges and answers, and its final status becomes the leg's outcome.
Outbound authentication follows Plivo's SIP-authentication page, "Outbound Authentication"
(https://www.plivo.com/docs/voice/concepts/sip-authentication). Time is simulated: a leg says
at which call offset its outcome happened (a real leg: the offset plus the real seconds it took).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sandbox import digest, sip_client
from sandbox.config import SIP_TIMER_B, Endpoint
from sandbox.timeline import Event, SandboxClock, safe_address
from sipguard.calls.causes import (
    OUTBOUND_AUTH_FAILED_CODE,
    OUTBOUND_AUTH_TIMEOUT_CODE,
    SIP_AUTH_FAILED,
    SIP_AUTH_TIMEOUT,
)

# Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): a Dial without timeout
# rings a silent agent 60 s.
DEFAULT_RING_SECONDS = 60.0
DEFAULT_TALK_SECONDS = 30.0  # how long a real agent stays on, unless its endpoint says `talk`
# A real PBX's final status -> the leg's outcome, cause and code. Plivo's pages are silent here
# (docs/plivo.md, Where Plivo is silent): busy and unanswered follow the simulated endpoints; a
# refusal is Rejected (3020), an unknown user Invalid Destination Address (2000), anything else
# Destination Out Of Service (2010), codes from Plivo's table (docs/plivo.md, Hangup causes).
_SIP_OUTCOMES: dict[int, tuple[str, str, int | None]] = {
    486: ("busy", "Busy Line", 3010),
    600: ("busy", "Busy Line", 3010),
    408: ("no-answer", "No Answer", None),
    480: ("no-answer", "No Answer", None),
    487: ("no-answer", "No Answer", None),
    403: ("failed", "Rejected", 3020),
    603: ("failed", "Rejected", 3020),
    404: ("failed", "Invalid Destination Address", 2000),
    484: ("failed", "Invalid Destination Address", 2000),
}
_OUT_OF_SERVICE = ("failed", "Destination Out Of Service", 2010)


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
    headers: dict[str, str] = field(default_factory=dict)  # X-PH-* the INVITE carried
    dropped: tuple[str, ...] = ()  # sipHeaders names Plivo would not send
    confirm: str = "accept"  # the endpoint's answer to a confirmKey (config `confirm`)
    dialog: sip_client.Dialog | None = field(default=None, repr=False, compare=False)

    def hang_up(self) -> str | None:
        """End a real leg's SIP dialog with BYE; say how the PBX took it (None: not real)."""
        if self.dialog is None:
            return None
        dialog, self.dialog = self.dialog, None
        if dialog.ended:
            dialog.hang_up()  # the PBX hung up first: only the socket is left to close
            return "the PBX had already hung up (BYE)"
        status = dialog.hang_up()
        return f"sent BYE: {status}" if status is not None else "sent BYE: no answer"

    @property
    def dial_status(self) -> str:
        """The DialStatus this leg alone would give."""
        return "completed" if self.outcome == "answered" else self.outcome

    def event(self) -> Event:
        """The leg for the call's timeline, at the offset of its outcome."""
        code = f" {self.code}" if self.code else ""
        cause = f" ({self.cause}{code})" if self.cause and self.outcome != "answered" else ""
        invite = []
        if self.headers:
            sent = ", ".join(f"{name}: {value}" for name, value in self.headers.items())
            invite.append(f"INVITE carried {sent}")
        if self.dropped:
            invite.append(f"sipHeaders not sent (Plivo drops them): {', '.join(self.dropped)}")
        return Event(
            self.at,
            "leg",
            f"{safe_address(self.address)}: {self.outcome}{cause} — "
            + "; ".join([*invite, *(self.steps or ["rang"])]),
            {
                "address": safe_address(self.address),
                "outcome": self.outcome,
                "cause": self.cause,
                "code": self.code,
                "leg_uuid": self.uuid,
                "sip_headers": dict(self.headers),
                "dropped_headers": list(self.dropped),
            },
        )


class Legs:
    """Ring the simulated endpoints, as Plivo's outbound leg towards a PBX or a phone."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        clock: SandboxClock,
        new_uuid: Callable[[], str],
        timers: sip_client.Timers | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._clock = clock
        self._new_uuid = new_uuid
        self._timers = timers or sip_client.Timers()

    def ring(
        self,
        address: str,
        username: str | None,
        password: str | None,
        timeout: float | None,
        *,
        at: float,
        leg_uuid: str | None = None,
        headers: Mapping[str, str] | None = None,
        dropped: tuple[str, ...] = (),
    ) -> Leg:
        """Ring `address` from call offset `at` with the INVITE's X-PH-* `headers`; answer its
        challenge with the credentials given."""
        leg = Leg(leg_uuid or self._new_uuid(), address, "failed", at + 0.05)
        leg.headers, leg.dropped = dict(headers or {}), dropped
        if sip_client.target(address) is not None:
            return self._dial(leg, username, password, timeout)
        endpoint = self._endpoints.get(address)
        if endpoint is not None:
            leg.confirm = endpoint.confirm
        if endpoint is None:
            leg.cause, leg.code = "Invalid Destination Address", 2000
            leg.steps.append("no such endpoint in the sandbox config")
            return leg
        if endpoint.auth is not None:
            now = self._clock.now()
            challenge = endpoint.auth.challenge(address, now)
            leg.steps.append(f"challenged with {endpoint.auth.status} (realm {challenge.realm})")
            if username is None or password is None:
                # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): with no
                # credentials to answer the challenge, the PBX's 401/407 stands, and the leg
                # fails as a rejected authentication.
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
            # Plivo's hangup-code table has no "no answer" code (docs/plivo.md, Hangup causes):
            # none is invented here.
            leg.outcome, leg.at, leg.cause = "no-answer", leg.at + limit, "No Answer"
            leg.steps.append(f"rang {limit:g} s unanswered")
            return leg
        leg.outcome, leg.at, leg.talk = "answered", leg.at + endpoint.answer_after, endpoint.talk
        leg.steps.append(f"answered after {endpoint.answer_after:g} s")
        return leg

    def _dial(
        self, leg: Leg, username: str | None, password: str | None, timeout: float | None
    ) -> Leg:
        """Ring a PBX on this machine over real SIP; its final status is the leg's outcome."""
        limit = timeout if timeout is not None else DEFAULT_RING_SECONDS
        outcome = sip_client.dial(
            leg.address,
            username=username,
            password=password,
            headers=leg.headers,
            ring_seconds=limit,
            timers=self._timers,
        )
        leg.steps.append("dialled over SIP (UDP)")
        leg.steps.extend(outcome.steps)
        leg.at += outcome.elapsed
        status = outcome.status
        if status is not None and status < 300:
            endpoint = self._endpoints.get(leg.address)
            leg.outcome, leg.dialog = "answered", outcome.dialog
            leg.talk = endpoint.talk if endpoint is not None else DEFAULT_TALK_SECONDS
            leg.steps.append(f"answered {status}")
            return leg
        if outcome.challenged and not outcome.authenticated:
            # As for a simulated PBX: a challenge left unanswered stands, a refusal.
            leg.cause, leg.code = SIP_AUTH_FAILED, OUTBOUND_AUTH_FAILED_CODE
            missing = username is None or password is None
            leg.steps.append(
                "no sipAuthUsername/sipAuthPassword to answer it"
                if missing
                else "its challenge could not be answered"
            )
            return leg
        if outcome.authenticated and status is None:
            leg.outcome, leg.cause, leg.code = (
                "timeout",
                SIP_AUTH_TIMEOUT,
                OUTBOUND_AUTH_TIMEOUT_CODE,
            )
            leg.steps.append(f"no answer to the authenticated INVITE in {self._timers.b:g} s")
            return leg
        if outcome.authenticated and status in (401, 403, 407):
            leg.cause, leg.code = SIP_AUTH_FAILED, OUTBOUND_AUTH_FAILED_CODE
            leg.steps.append(f"the PBX rejected the credentials ({status})")
            return leg
        if status is None and outcome.cancelled:
            leg.outcome, leg.cause = "no-answer", "No Answer"
            return leg
        if status is None:
            leg.steps.append(f"no answer to the INVITE in {self._timers.b:g} s")
            leg.outcome, leg.cause, leg.code = _OUT_OF_SERVICE
            return leg
        leg.outcome, leg.cause, leg.code = _SIP_OUTCOMES.get(status, _OUT_OF_SERVICE)
        leg.steps.append(f"final answer {status}")
        return leg
