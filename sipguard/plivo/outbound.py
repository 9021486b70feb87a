"""Calls this app starts: Make Call to SIP URIs with digest credentials, and AI → human transfer.

Make Call parameters: docs/plivo.md, "REST API"; `sip_auth_username` / `sip_auth_password` "are
only accepted when to is a SIP URI" (https://www.plivo.com/docs/voice/concepts/sip-authentication).
Their length limits are not documented for Make Call (docs/plivo.md, Where Plivo is silent); the
`<User>` limits (password 8-128) are applied, the same credentials being sent to the same kind of
PBX. Transfer: docs/plivo.md, "REST API".

`Calls` needs only the account's REST client and where this app's webhooks are; `Outbound`
also mints handoff tokens for the configured agent groups, so it needs the app's settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sipguard.calls.agents import AgentGroup
from sipguard.calls.handoff import HANDOFF_PARAM, TOKEN_PARAM, HandoffSigner
from sipguard.errors import ValidationError
from sipguard.plivo.api import PlivoAPI
from sipguard.secret import Secret
from xml_builders import (
    check_method,
    check_positive,
    check_sip_credentials,
    check_text,
    check_url,
    is_number,
    is_sip_uri,
)

MAX_DESTINATIONS = 1000
CALLER_NAME_MAX = 50
# (endpoint, **values) -> the absolute URL Plivo reaches that webhook at.
UrlFor = Callable[..., str]


def destinations(to: str) -> list[str]:
    """Split Make Call's `to` (``<``-separated) and check each is a number or a SIP URI."""
    if not isinstance(to, str) or not to.strip():
        raise ValidationError("to", "must be a phone number or a sip:/sips: URI")
    found = [part.strip() for part in to.split("<")]
    for part in found:
        if not (is_number(part) or is_sip_uri(part)):
            raise ValidationError(
                "to", f"{part!r} is neither a phone number (digits, optional +) nor a SIP URI"
            )
    if len(found) > MAX_DESTINATIONS:
        raise ValidationError("to", f"at most {MAX_DESTINATIONS} destinations")
    if len(set(found)) != len(found):
        raise ValidationError("to", "destinations must be unique")
    return found


SIP_ONLY = (
    "SIP credentials are only accepted when `to` is a SIP URI (sip: or sips:); "
    "a phone number gets no digest challenge to answer"
)


def targets(
    to: str, username: str | None, password: str | None, *, refusal: str = SIP_ONLY
) -> list[str]:
    """Check Make Call's `to` with its digest credentials: both or neither, and credentials only
    when every destination is a SIP URI (`refusal` says why not)."""
    found = destinations(to)
    check_sip_credentials(("sip_auth_username", "sip_auth_password"), username, password)
    if username is not None and not all(is_sip_uri(part) for part in found):
        raise ValidationError("sip_auth_username", refusal)
    return found


def check_caller(from_: object) -> str:
    """Check Make Call's `from`: a phone number (digits, optional +) or a SIP URI."""
    if not isinstance(from_, str) or not (is_number(from_) or is_sip_uri(from_)):
        raise ValidationError("from", "must be a phone number (digits, optional +)")
    return from_


@dataclass(frozen=True)
class Calls:
    """Place calls, with this app's /answer and /hangup as the default URLs."""

    api: PlivoAPI
    url_for: UrlFor

    def make_call(
        self,
        from_: str,
        to: str,
        *,
        answer_url: str | None = None,
        hangup_url: str | None = None,
        answer_method: str = "POST",
        hangup_method: str = "POST",
        sip_auth_username: str | None = None,
        sip_auth_password: str | Secret | None = None,
        caller_name: str | None = None,
        time_limit: int | None = None,
        ring_timeout: int | None = None,
        fallback_url: str | None = None,
    ) -> str | list[str]:
        """Place a call; return Plivo's request UUID (a list for several destinations).

        Digest credentials are refused unless every destination is a SIP URI; every check
        happens before the request. A 2xx answer without a request_uuid raises
        PlivoOutcomeUnknown: the call may have been placed, so it must not simply be retried.
        """
        password = (
            sip_auth_password.reveal()
            if isinstance(sip_auth_password, Secret)
            else sip_auth_password
        )
        values: dict[str, Any] = {
            "from_": check_caller(from_),
            "to": "<".join(targets(to, sip_auth_username, password)),
            "answer_url": check_url("answer_url", answer_url or self.url_for("webhooks.answer")),
            "answer_method": check_method("answer_method", answer_method),
            "hangup_url": check_url("hangup_url", hangup_url or self.url_for("webhooks.hangup")),
            "hangup_method": check_method("hangup_method", hangup_method),
            "sip_auth_username": sip_auth_username,
            "sip_auth_password": password,
        }
        if caller_name is not None:
            values["caller_name"] = check_text(
                "caller_name", caller_name, max_length=CALLER_NAME_MAX
            )
        if time_limit is not None:
            values["time_limit"] = int(check_positive("time_limit", time_limit))
        if ring_timeout is not None:
            values["ring_timeout"] = int(check_positive("ring_timeout", ring_timeout))
        if fallback_url is not None:
            values["fallback_url"] = check_url("fallback_url", fallback_url)
        answer = self.api.create("call", values, effect="the call may have been placed")
        request_uuid: str | list[str] = answer["uuid"]
        return request_uuid


@dataclass(frozen=True)
class Outbound:
    """Hand live calls over to agent groups through this app's signed /handoff URLs."""

    api: PlivoAPI
    handoff: HandoffSigner
    groups: Mapping[str, AgentGroup]
    url_for: UrlFor

    def transfer_to_group(
        self, call_uuid: str, group: str, handoff_id: str | None = None
    ) -> dict[str, Any]:
        """Move a live call's A leg to `/handoff/<group>` with a freshly minted token.

        The token binds the call, the group and (for an API handoff) `handoff_id`, and expires
        after HANDOFF_TOKEN_TTL_SECONDS, so the URL is of no use for another call, another group,
        another handoff, or later.
        """
        if group not in self.groups:
            known = ", ".join(sorted(self.groups)) or "none"
            raise ValidationError("group", f"no agent group named {group!r} (configured: {known})")
        check_text("call_uuid", call_uuid, max_length=64)
        url = self.handoff_url(call_uuid, group, handoff_id)
        return self.api.update(
            "call", call_uuid, {"legs": "aleg", "aleg_url": url, "aleg_method": "POST"}
        )

    def handoff_url(self, call_uuid: str, group: str, handoff_id: str | None = None) -> str:
        """Return the signed, expiring URL that dials `group` for `call_uuid` (and `handoff_id`)."""
        values = {TOKEN_PARAM: self.handoff.mint(call_uuid, group, handoff_id)}
        if handoff_id is not None:
            values[HANDOFF_PARAM] = handoff_id
        return self.url_for("webhooks.handoff", group=group, **values)
