"""Callback delivery: Plivo's requests to the application, signed, sent and noted.

Every callback carries the standard parameters (plus the SIP-auth result on the answer and
hangup callbacks) and Plivo's V3 and Ma-V3 signatures over one nonce (docs/plivo.md, Callbacks
and signatures). A document fetch that cannot be reached, or answers other than 2xx, ends the
call with its kind's "Error reaching ... URL" code; a document that is not valid XML ends it
with the matching "Invalid ... XML" code (docs/plivo.md, Hangup causes). The hangup callback
closes every call.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from sandbox.call import Call, Ending
from sandbox.timeline import safe_url
from sipguard.calls.causes import (
    INBOUND_AUTH_FAILED_CODE,
    OUTBOUND_AUTH_FAILED_CODE,
    OUTBOUND_AUTH_TIMEOUT_CODE,
    SIP_AUTH_FAILED,
    SIP_AUTH_TIMEOUT,
)
from sipguard.calls.signature import signed_headers

# Hangup causes: the SIP-auth ones from Plivo's SIP-authentication page (sipguard.calls.causes),
# the rest from Plivo's hangup-code table (docs/plivo.md, Hangup causes).
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


class FetchCodes(NamedTuple):
    """The codes a failed document fetch ends a call with."""

    unreachable: int  # no answer, or not 2xx
    invalid: int  # not a Plivo <Response>, or one Plivo would refuse


# Per kind of document (docs/plivo.md, Hangup causes).
FETCH_CODES: Mapping[str, FetchCodes] = {
    "answer": FetchCodes(7011, 8011),
    "action": FetchCodes(7012, 8012),
    "transfer": FetchCodes(7013, 8013),
    "redirect": FetchCodes(7014, 8014),
}


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


@dataclass(frozen=True)
class Fetch:
    """One XML document to fetch: from where, how, as what kind, with which extra parameters."""

    url: str
    method: str
    kind: str  # answer, action, transfer or redirect
    params: Mapping[str, str] = field(default_factory=dict)


class Callbacks:
    """Send an account's callbacks with its auth tokens, each one noted in the call's timeline."""

    def __init__(self, auth_id: str, http: Http, auth_token: str, main_token: str) -> None:
        self._auth_id = auth_id
        self._http = http
        self._token = auth_token
        self._main_token = main_token

    def params(self, call: Call, kind: str = "") -> dict[str, str]:
        """The standard callback parameters, plus the SIP-auth result on answer."""
        status = "in-progress" if call.answered_at is not None else "ringing"
        params = {
            "CallUUID": call.uuid,
            "From": call.from_,
            "To": call.to,
            "Direction": call.direction,
            "CallStatus": status,
            "ParentAuthID": self._auth_id,
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
            # "When authentication succeeds, your answer_url callback receives" the SIPAuth*
            # fields (docs/plivo.md, SIP authentication).
            params.update(call.sip)
        return params

    def b_leg_params(self, call: Call, leg_uuid: str, from_: str, to: str) -> dict[str, str]:
        """The standard parameters of a dialled (B) leg that has answered."""
        return {
            "CallUUID": leg_uuid,
            "From": from_,
            "To": to,
            "Direction": "outbound",
            "CallStatus": "in-progress",
            "ALegUUID": call.uuid,
            "ParentAuthID": self._auth_id,
        }

    def fetch(self, call: Call, step: Fetch) -> bytes | Ending:
        """Fetch a document (answer_url falls back to the app's fallback_answer_url); return its
        body, or how the call ends when it cannot be had."""
        params = {**self.params(call, step.kind), **step.params}
        answer = self.send(call, step.kind, step.url, step.method, params)
        if (answer is None or not 200 <= answer.status < 300) and step.kind == "answer":
            fallback = call.app.fallback_answer_url
            if fallback:
                answer = self.send(call, "fallback", fallback, call.app.fallback_method, params)
        if answer is None or not 200 <= answer.status < 300:
            return Ending(FETCH_CODES[step.kind].unreachable, "failed", "Error")
        return answer.body

    def notify(
        self, call: Call, name: str, url: str, method: str, extra: Mapping[str, str]
    ) -> None:
        """Send a callback whose answer is not used (a recording, a Dial action not followed)."""
        self.send(call, name, url, method, {**self.params(call), **extra})

    def hangup(self, call: Call, ending: Ending) -> None:
        """Record how the call ended and send the hangup callback, if the app has a hangup_url."""
        code, status = ending.code, ending.status
        name = ending.cause or (CAUSES[code] if code is not None else "Unknown")
        duration = int(call.offset - call.answered_at) if call.answered_at is not None else 0
        ended = call.started + timedelta(seconds=call.offset)
        params = {
            **self.params(call),
            "CallStatus": status,
            "Event": "Hangup",
            # The cause is in the "HangupCauseName / PlivoHangupCause fields" (docs/plivo.md, SIP
            # authentication); Plivo's pages are silent on the legacy HangupCause (docs/plivo.md,
            # Where Plivo is silent): it carries the same name.
            "HangupCause": name,
            "HangupCauseName": name,
            "PlivoHangupCause": name,
            "HangupSource": ending.source,
            "Duration": str(duration),
            "BillDuration": str(duration),
            "StartTime": call.started.strftime("%Y-%m-%d %H:%M:%S"),
            "EndTime": ended.strftime("%Y-%m-%d %H:%M:%S"),
            # Plivo's pages are silent here (docs/plivo.md, Where Plivo is silent): the SIP-auth
            # result rides on the hangup callback too (its documented fields are the standard
            # ones plus the cause), so an app can count failures per source IP from the call's
            # end alone.
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
        call.note(
            "hangup", f"{name}{code_text}, CallStatus {status}, by {ending.source}", **call.hangup
        )
        if call.app.hangup_url:
            self.send(call, "hangup", call.app.hangup_url, call.app.hangup_method, params)

    def send(
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
