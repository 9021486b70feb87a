"""Plivo callback forms, parsed once at the web edge into frozen dataclasses."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from sipguard.calls.causes import auth_failure, auth_failure_code
from sipguard.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_FIELD_LENGTH = 1024
MAX_CALL_UUID_LENGTH = 64

_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def parse_urlencoded(body: bytes) -> list[tuple[str, str]]:
    """Return a form body's (name, value) pairs, refusing broken percent-encoding or non-UTF-8.

    The same pairs werkzeug returns for a good body, in one pass. Werkzeug decodes a bad body
    leniently (keeping ``%ZZ``, replacing bad bytes); Plivo never sends one, so it is refused
    with a clear 400 rather than half-understood.
    """
    if _BAD_PERCENT.search(body):
        raise ValidationError("body", "has broken percent-encoding")
    try:
        # parse_qsl(..., keep_blank_values=True) pair for pair, without its per-call set-up.
        return [
            (_unquote(name), _unquote(value))
            for name, _, value in (p.partition("=") for p in body.decode().split("&") if p)
        ]
    except UnicodeDecodeError:
        raise ValidationError("body", "is not valid UTF-8") from None


def _unquote(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    return unquote(text, errors="strict") if "%" in text else text


MAX_WHOLE_NUMBER = 2**31 - 1  # the store's INTEGER columns
_WHOLE_NUMBER = re.compile(r"[0-9]{1,10}")


def whole_number(text: str | None) -> int | None:
    """Read ASCII digits as a number that fits the store; None for anything else.

    str.isdigit() is not enough: it accepts "²" or "①", which int() then refuses.
    """
    if text is None or not _WHOLE_NUMBER.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_WHOLE_NUMBER else None


def dial_failure_code(cause: str, dial_hangup_cause: str | None) -> int:
    """Return the code of an agent leg's SIP-auth failure from its DialHangupCause (4240/4250)."""
    return auth_failure_code(cause, whole_number((dial_hangup_cause or "").strip()), "outbound")


def _field(form: Mapping[str, str], key: str) -> str | None:
    # `in` first: werkzeug's MultiDict.get raises and catches a KeyError for a missing key.
    value = form[key] if key in form else None
    if value is None or value == "":
        return None
    if len(value) > MAX_FIELD_LENGTH:
        raise ValidationError(key, f"is longer than {MAX_FIELD_LENGTH} characters")
    if "\x00" in value:
        # Plivo never sends one, and PostgreSQL cannot store one in text.
        raise ValidationError(key, "contains a NUL character")
    return value


def _call_uuid(form: Mapping[str, str], key: str = "CallUUID") -> str:
    value = _field(form, key)
    if value is None:
        raise ValidationError(key, "is required")
    if len(value) > MAX_CALL_UUID_LENGTH or not value.isprintable():
        raise ValidationError(key, "is not a call UUID")
    return value


def _int(form: Mapping[str, str], key: str) -> int | None:
    """Read a whole number leniently: a callback is stored even if one number is garbled."""
    value = _field(form, key)
    return whole_number(value.strip()) if value is not None else None


def unmapped(address: IPAddress) -> IPAddress:
    """Read an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _ip(value: str | None) -> IPAddress | None:
    if value is None:
        return None
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _custom_headers(form: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in form.items() if key.startswith("X-PH-")}


@dataclass(frozen=True)
class InboundCall:
    """The answer_url request: who calls whom, and the SIP-auth result Plivo attached."""

    call_uuid: str
    from_: str | None
    to: str | None
    direction: str | None
    call_status: str | None
    sip_auth_type: str | None
    sip_auth_user: str | None
    sip_source_ip: IPAddress | None
    sip_source_ip_raw: str | None
    custom_headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> InboundCall:
        """Parse an answer/handoff callback; only CallUUID is required."""
        source_ip = _field(form, "SIPSourceIP")
        return cls(
            call_uuid=_call_uuid(form),
            from_=_field(form, "From"),
            to=_field(form, "To"),
            direction=_field(form, "Direction"),
            call_status=_field(form, "CallStatus"),
            sip_auth_type=_field(form, "SIPAuthType"),
            sip_auth_user=_field(form, "SIPAuthUser"),
            sip_source_ip=_ip(source_ip),
            sip_source_ip_raw=source_ip,
            custom_headers=_custom_headers(form),
        )

    @property
    def is_sip(self) -> bool:
        """Tell whether the call came in over SIP rather than from a phone number."""
        return (
            any((v or "").lower().startswith(("sip:", "sips:")) for v in (self.from_, self.to))
            or self.sip_source_ip_raw is not None
            or self.sip_auth_type is not None
        )


@dataclass(frozen=True)
class DialResult:
    """The Dial action callback: how the attempt to reach the agents ended."""

    call_uuid: str
    dial_status: str | None
    dial_hangup_cause: str | None
    a_leg_uuid: str | None
    b_leg_uuid: str | None

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> DialResult:
        """Parse a Dial action callback; only CallUUID is required."""
        return cls(
            call_uuid=_call_uuid(form),
            dial_status=(_field(form, "DialStatus") or "").lower() or None,
            dial_hangup_cause=_field(form, "DialHangupCause"),
            a_leg_uuid=_field(form, "DialALegUUID"),
            b_leg_uuid=_field(form, "DialBLegUUID"),
        )

    @property
    def auth_failure(self) -> str | None:
        """Return sip_auth_failed (4240) or sip_auth_timeout (4250) when the agent leg hit one."""
        cause = (self.dial_hangup_cause or "").strip()
        return auth_failure(cause, whole_number(cause))

    @property
    def answered(self) -> bool:
        """Tell whether an agent took the call (the bridge then ended normally)."""
        return self.dial_status == "completed"

    @property
    def outcome(self) -> str:
        """Name how the attempt ended, in the words of a handoff attempt's outcome."""
        if self.answered:
            return "answered"
        if self.dial_status == "cancel":
            return "caller_hung_up"
        cause = self.auth_failure
        if cause is not None:
            return cause
        if self.dial_status == "busy":
            return "busy"
        if self.dial_status in ("no-answer", "timeout"):
            return "no-answer"
        return "failed"

    @property
    def outcome_code(self) -> int | None:
        """Return 4240 / 4250 for an attempt that failed SIP auth, else None."""
        cause = self.auth_failure
        return dial_failure_code(cause, self.dial_hangup_cause) if cause is not None else None


@dataclass(frozen=True)
class DialEvent:
    """A Dial callbackUrl request: an agent leg answered, was bridged, or hung up.

    Plivo documents no CallUUID here, only the legs' UUIDs; nothing is required.
    """

    action: str | None
    a_leg_uuid: str | None
    b_leg_uuid: str | None
    b_leg_to: str | None
    b_leg_hangup_cause: str | None = None
    b_leg_hangup_code: int | None = None

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> DialEvent:
        """Parse a Dial callback; DialAction, else the older DialBLegStatus, says what happened."""
        action = _field(form, "DialAction") or _field(form, "DialBLegStatus")
        cause = _field(form, "DialBLegHangupCauseName") or _field(form, "DialBLegHangupCause")
        return cls(
            action=action.lower() if action else None,
            a_leg_uuid=_field(form, "DialALegUUID"),
            b_leg_uuid=_field(form, "DialBLegUUID"),
            b_leg_to=_field(form, "DialBLegTo"),
            b_leg_hangup_cause=cause,
            b_leg_hangup_code=whole_number(_field(form, "DialBLegHangupCauseCode") or ""),
        )

    @property
    def auth_failure(self) -> str | None:
        """Return sip_auth_failed / sip_auth_timeout when this agent leg's hangup says so."""
        if self.action != "hangup":
            return None
        return auth_failure(self.b_leg_hangup_cause, self.b_leg_hangup_code)


@dataclass(frozen=True)
class Hangup:
    """The hangup callback: the call's end, stored idempotently on CallUUID."""

    call_uuid: str
    call_status: str | None
    direction: str | None
    from_: str | None
    to: str | None
    hangup_cause: str | None
    hangup_cause_name: str | None
    hangup_cause_code: int | None
    hangup_source: str | None
    duration: int | None
    bill_duration: int | None
    sip_auth_type: str | None
    sip_auth_user: str | None
    sip_source_ip: str | None

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> Hangup:
        """Parse a hangup callback; the cause name is HangupCauseName or PlivoHangupCause."""
        return cls(
            call_uuid=_call_uuid(form),
            call_status=_field(form, "CallStatus"),
            direction=_field(form, "Direction"),
            from_=_field(form, "From"),
            to=_field(form, "To"),
            hangup_cause=_field(form, "HangupCause"),
            hangup_cause_name=_field(form, "HangupCauseName") or _field(form, "PlivoHangupCause"),
            hangup_cause_code=_int(form, "HangupCauseCode"),
            hangup_source=_field(form, "HangupSource"),
            duration=_int(form, "Duration"),
            bill_duration=_int(form, "BillDuration"),
            sip_auth_type=_field(form, "SIPAuthType"),
            sip_auth_user=_field(form, "SIPAuthUser"),
            sip_source_ip=_field(form, "SIPSourceIP"),
        )

    @property
    def auth_failure(self) -> str | None:
        """Return the SIP-auth failure this call ended with, if any."""
        return auth_failure(self.hangup_cause_name or self.hangup_cause, self.hangup_cause_code)
