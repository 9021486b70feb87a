"""The hangup causes and codes of Plivo's SIP authentication, and how to read them."""

from __future__ import annotations

# Hangup causes of the SIP-auth feature (seed document, "Hangup Causes").
SIP_AUTH_FAILED = "sip_auth_failed"
SIP_AUTH_TIMEOUT = "sip_auth_timeout"
INBOUND_AUTH_FAILED_CODE = 4210
OUTBOUND_AUTH_FAILED_CODE = 4240
OUTBOUND_AUTH_TIMEOUT_CODE = 4250
_CODE_BY_TEXT = {str(code): code for code in (4210, 4240, 4250)}
_AUTH_CAUSE_BY_CODE = {
    INBOUND_AUTH_FAILED_CODE: SIP_AUTH_FAILED,
    OUTBOUND_AUTH_FAILED_CODE: SIP_AUTH_FAILED,
    OUTBOUND_AUTH_TIMEOUT_CODE: SIP_AUTH_TIMEOUT,
}


def auth_failure(name: str | None, code: int | None) -> str | None:
    """Return sip_auth_failed / sip_auth_timeout when a cause name or code says so."""
    if code in _AUTH_CAUSE_BY_CODE:
        return _AUTH_CAUSE_BY_CODE[code]
    lowered = (name or "").strip().lower()
    return lowered if lowered in (SIP_AUTH_FAILED, SIP_AUTH_TIMEOUT) else None


def auth_failure_code(cause: str, code: int | None, direction: str | None) -> int:
    """Return the code of a SIP-auth failure: 4210 inbound, 4240 / 4250 outbound.

    The code when Plivo sent one; otherwise timeouts are 4250 (outbound only) and a
    sip_auth_failed is 4240 on an outbound leg, 4210 on an inbound call.
    """
    if code in _AUTH_CAUSE_BY_CODE:
        return int(code)
    if cause == SIP_AUTH_TIMEOUT:
        return OUTBOUND_AUTH_TIMEOUT_CODE
    return OUTBOUND_AUTH_FAILED_CODE if direction == "outbound" else INBOUND_AUTH_FAILED_CODE


def dial_failure_code(cause: str, dial_hangup_cause: str | None) -> int:
    """Return the code of an agent leg's SIP-auth failure from its DialHangupCause (4240/4250)."""
    code = _CODE_BY_TEXT.get((dial_hangup_cause or "").strip().lstrip("0"))
    return auth_failure_code(cause, code, "outbound")
