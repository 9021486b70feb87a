"""Routing policy: ordered rules over the SIP-auth result decide what happens to an inbound call."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from sipguard.calls.causes import AUTH_NONE, SIP_AUTH_TYPES
from sipguard.calls.documents import STREAM_CONTENT_TYPE, stream_header_value
from sipguard.calls.forms import InboundCall, unmapped

ActionKind = Literal["dial", "redirect", "speak", "reject", "stream"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN_SIP_AUTH = "SIP call with an unknown SIPAuthType"
AUTH_NOT_RUNNING = (
    "SIP auth is not running: the provider is probably putting a phone number in the "
    "Request-URI instead of sip:{app_id}@app.plivo.com"
)
# The rule name of a SIP call without SIPAuthType that no rule took on purpose.
UNAUTHENTICATED_SIP = "unauthenticated-sip"
# extraHeaders a stream carries for what Plivo's `start` WebSocket event lacks, in the order
# they are fitted into its 512 bytes; then the name that tells the AI its handoff group.
STREAM_CALL_HEADERS = ("from", "to", "sipauthtype", "sipauthuser", "sipsourceip")
HANDOFF_GROUP_HEADER = "handoffgroup"


@dataclass(frozen=True)
class Action:
    """What to do with a call: dial a group, redirect or stream to the AI, speak, or reject."""

    kind: ActionKind
    group: str | None = None
    url: str | None = None
    handoff_group: str | None = None
    text: str | None = None
    voice: str | None = None
    language: str | None = None
    # A stream's options; its fixed extraHeaders as (name, value) pairs, in config order.
    bidirectional: bool = True
    keep_call_alive: bool = True
    content_type: str = STREAM_CONTENT_TYPE
    extra_headers: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        """Return a short label for logs and the event store (never a URL with a token)."""
        if self.kind == "dial":
            return f"dial:{self.group}"
        if self.kind == "redirect" and self.handoff_group:
            return f"redirect:handoff={self.handoff_group}"
        return self.kind

    def stream_fixed_headers(self) -> dict[str, str]:
        """Return the extraHeaders every call of this stream carries, the handoff group last."""
        # Encoded like the per-call values, so the AI reads every header one way: a configured
        # value starting with `x` would otherwise look encoded, and a group name may hold `-`.
        headers = {name: stream_header_value(value) for name, value in self.extra_headers}
        if self.handoff_group is not None:
            headers[HANDOFF_GROUP_HEADER] = stream_header_value(self.handoff_group)
        return headers


def stream_call_headers(call: InboundCall) -> dict[str, str | None]:
    """Return this call's values for `STREAM_CALL_HEADERS`, as Plivo sent them to answer_url."""
    values = (call.from_, call.to, call.sip_auth_type, call.sip_auth_user, call.sip_source_ip_raw)
    return dict(zip(STREAM_CALL_HEADERS, values, strict=True))


@dataclass(frozen=True)
class Match:
    """Conditions of a rule; each one left as None is not checked.

    `sip_auth_types` None means the SIP-auth default: a SIP call authenticated by one of the
    documented types, or a call that did not come over SIP at all. An unauthenticated SIP call
    only matches a rule that lists ``"none"`` explicitly; a type Plivo may add later matches no
    rule until the config names it.
    """

    sip_auth_types: frozenset[str] | None = None
    sip_users: frozenset[str] | None = None
    source_networks: tuple[Network, ...] | None = None
    to: re.Pattern[str] | None = None
    from_: re.Pattern[str] | None = None

    def matches(self, call: InboundCall) -> bool:
        """Tell whether every condition holds for `call`."""
        auth = call.sip_auth_type or AUTH_NONE
        if self.sip_auth_types is None:
            if call.is_sip and auth not in SIP_AUTH_TYPES:
                return False
        elif auth not in self.sip_auth_types:
            return False
        if self.sip_users is not None and call.sip_auth_user not in self.sip_users:
            return False
        if self.source_networks is not None:
            if call.sip_source_ip is None:
                return False
            source = unmapped(call.sip_source_ip)
            if not any(source in network for network in self.source_networks):
                return False
        if self.to is not None and not self.to.fullmatch(call.to or ""):
            return False
        return self.from_ is None or bool(self.from_.fullmatch(call.from_ or ""))


@dataclass(frozen=True)
class Rule:
    """A named condition and the action taken when it is the first to match."""

    name: str
    match: Match
    action: Action


@dataclass(frozen=True)
class Policy:
    """Ordered rules, then what to do with unauthenticated SIP calls and with everything else."""

    rules: tuple[Rule, ...]
    default: Action = Action("reject")
    unauthenticated_sip: Action = Action("reject")


@dataclass(frozen=True)
class Decision:
    """The routing outcome for one call, with the rule and reason that led to it."""

    action: Action
    rule: str
    reason: str
    auth_not_running: bool = False


def decide(call: InboundCall, policy: Policy) -> Decision:
    """Pick the action for an inbound call: first matching rule, else the fitting default."""
    auth_not_running = call.is_sip and call.sip_auth_type is None
    for rule in policy.rules:
        if rule.match.matches(call):
            return Decision(rule.action, rule.name, f"rule {rule.name}", auth_not_running)
    if auth_not_running:
        return Decision(policy.unauthenticated_sip, UNAUTHENTICATED_SIP, AUTH_NOT_RUNNING, True)
    if call.is_sip and call.sip_auth_type not in SIP_AUTH_TYPES:
        return Decision(policy.unauthenticated_sip, "unauthenticated-sip", UNKNOWN_SIP_AUTH)
    return Decision(policy.default, "default", "no rule matched")
