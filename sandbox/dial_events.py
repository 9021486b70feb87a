"""A Dial's callbackUrl events: each agent leg answering, being bridged and hanging up.

Plivo requests the Dial's `callbackUrl` (with `callbackMethod`, POST by default) when a called
party answers (`DialAction=answer`), is bridged to the caller (`connected`, after the confirm
key if any) and hangs up (`hangup`, with `Event=DialHangup` and the B leg's cause)
(https://www.plivo.com/docs/voice/xml/dial; docs/plivo.md, Where Plivo is silent, "Dial
callbackUrl" and "Dial events in the sandbox", which also covers the legs that never answer:
each sends its hangup). The answer is not used: a callbackUrl that fails is noted and changes
nothing.

The player calls these in sandbox-time order, so the application receives them in the order
Plivo would send them, among the confirmSound fetches and before the Dial action.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sandbox.call import Call
from sandbox.callbacks import Callbacks
from sandbox.legs import Leg
from sipguard.calls.causes import OUTBOUND_AUTH_FAILED_CODE

INVALID_DESTINATION_CODE = 2000  # Plivo's "Invalid Destination Address"


@dataclass
class DialEvents:
    """Send one Dial's events to its callbackUrl (none when it has no callbackUrl)."""

    callbacks: Callbacks
    call: Call
    url: str | None
    method: str
    caller_id: str
    _answered: dict[str, float] = field(default_factory=dict, init=False)  # leg UUID -> offset
    _ended: set[str] = field(default_factory=set, init=False)  # legs whose hangup was sent

    def answer(self, leg: Leg) -> None:
        """An agent's leg answered (before any confirm prompt)."""
        self._answered[leg.uuid] = leg.at
        self._send("answer", leg, leg.at, {})

    def connected(self, leg: Leg, at: float) -> None:
        """An agent's leg was bridged to the caller at offset `at`."""
        self._send("connected", leg, at, {})

    def hangups(self, legs: Iterable[Leg], before: float = float("inf")) -> None:
        """Send the hangup of every leg that ended before offset `before`, in time order.

        A leg still `answered` has not ended: it is the bridged one, or one still deciding.
        """
        done = [leg for leg in legs if leg.outcome != "answered" and leg.uuid not in self._ended]
        for leg in sorted(done, key=lambda g: g.at):
            if leg.at < before:
                self.hangup(leg, leg.at, leg.cause or "Normal Hangup", leg.code, _source(leg))

    def hangup(self, leg: Leg, at: float, cause: str, code: int | None, source: str) -> None:
        """The leg ended at offset `at`: its duration counts from its answer, if it answered."""
        self._ended.add(leg.uuid)
        answered = self._answered.get(leg.uuid)
        seconds = str(int(at - answered)) if answered is not None else "0"
        params = {
            "Event": "DialHangup",
            "DialBLegDuration": seconds,
            "DialBLegBillDuration": seconds,
            "DialBLegHangupCauseName": cause,
            "DialBLegHangupSource": source,
        }
        if code is not None:
            params["DialBLegHangupCauseCode"] = str(code)
        self._send("hangup", leg, at, params)

    def _send(self, action: str, leg: Leg, at: float, extra: dict[str, str]) -> None:
        if self.url is None:
            return
        call = self.call
        params = {
            **self.callbacks.params(call),
            "DialAction": action,
            # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): the older
            # DialBLegStatus carries the same word as DialAction.
            "DialBLegStatus": action,
            "DialALegUUID": call.uuid,
            "DialBLegUUID": leg.uuid,
            "DialBLegFrom": self.caller_id,
            "DialBLegTo": leg.address,
            **extra,
        }
        resumed = call.offset
        call.offset = at  # the request and its note happen when the leg's event does
        try:
            answer = self.callbacks.send(call, f"dial {action}", self.url, self.method, params)
            if answer is None or not 200 <= answer.status < 300:
                call.note("dial", f"callbackUrl failed on {action}; the Dial goes on unchanged")
        finally:
            call.offset = resumed


def _source(leg: Leg) -> str:
    """Who ended a leg that was never bridged (docs/plivo.md, Hangup causes)."""
    if leg.code == INVALID_DESTINATION_CODE:
        return "Error"  # no such endpoint
    if leg.outcome == "busy" or leg.code == OUTBOUND_AUTH_FAILED_CODE:
        return "Callee"  # busy, or the PBX refused the credentials
    return "Plivo"  # rang out, never pressed the key, auth timeout, or cancelled
