"""The vocabulary of Plivo's SIP authentication: its auth types, and its failures' causes and codes.

Both come from https://www.plivo.com/docs/voice/concepts/sip-authentication (docs/plivo.md,
SIP authentication and Hangup causes).
"""

from __future__ import annotations

# The SIPAuthType Plivo reports on an inbound call that passed SIP auth; an application's
# sip_auth_type takes the same values.
AUTH_IP_ACL = "ip_acl"
AUTH_CREDENTIAL = "credential"
AUTH_IP_ACL_AND_CREDENTIAL = "ip_acl_and_credential"
SIP_AUTH_TYPES = (AUTH_IP_ACL, AUTH_CREDENTIAL, AUTH_IP_ACL_AND_CREDENTIAL)
# No SIP auth: what a routing rule names for a call without SIPAuthType, and the CLI's mode for
# removing an application's assignment; not a SIPAuthType value Plivo documents.
AUTH_NONE = "none"

# Hangup causes and codes of a failed SIP auth.
SIP_AUTH_FAILED = "sip_auth_failed"
SIP_AUTH_TIMEOUT = "sip_auth_timeout"
INBOUND_AUTH_FAILED_CODE = 4210
OUTBOUND_AUTH_FAILED_CODE = 4240
OUTBOUND_AUTH_TIMEOUT_CODE = 4250
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
