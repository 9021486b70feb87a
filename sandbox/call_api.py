"""Plivo's Call API requests as the sandbox checks them: Make Call and Transfer.

Each request is read and checked whole, as Plivo would refuse it (ValidationError or ApiError,
a 400), before any call is placed or moved (docs/plivo.md, REST API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.account import URL_FIELDS, Account, Application, field_text
from sandbox.call import MAX_CALL_SECONDS
from sipguard.calls.forms import whole_number
from sipguard.errors import ValidationError
from sipguard.plivo.outbound import CALLER_NAME_MAX, check_caller, targets
from xml_builders import check_method, check_text, check_url

# Plivo's own words for a credential sent with a phone-number `to`.
PLIVO_SIP_ONLY = "sip_auth_username and sip_auth_password are only accepted when to is a SIP URI"


@dataclass(frozen=True)
class MakeCall:
    """A checked Make Call request: one call from `caller` to each of `targets`."""

    caller: str
    targets: list[str]
    app: Application  # the request's URLs and methods, as an application would hold them
    caller_name: str | None
    username: str | None
    password: str | None = field(repr=False)
    ring_timeout: float | None

    @classmethod
    def read(cls, fields: Mapping[str, Any], account: Account) -> MakeCall:
        """Check a Make Call request as Plivo does."""

        def text(key: str, required: bool = False) -> str | None:
            return field_text(fields, key, required)

        caller = check_caller(text("from", True))
        to = text("to", True)
        answer_url = text("answer_url", True)
        username, password = text("sip_auth_username"), text("sip_auth_password")
        assert to is not None and answer_url is not None
        found = targets(to, username, password, refusal=PLIVO_SIP_ONLY)
        caller_name = text("caller_name")
        if caller_name is not None:
            check_text("caller_name", caller_name, max_length=CALLER_NAME_MAX)
        # Make Call names the application's fallback_answer_url "fallback_url".
        wire = {key: "fallback_url" if key == "fallback_answer_url" else key for key in URL_FIELDS}
        urls = {
            key: fields[wire[key]] for key in URL_FIELDS if fields.get(wire[key]) not in (None, "")
        }
        app = account.check_application(urls)
        ring = _ring_timeout(fields.get("ring_timeout"))
        return cls(caller, found, app, caller_name, username, password, ring)


@dataclass(frozen=True)
class TransferRequest:
    """A checked Transfer request: fetch the A leg's next XML from `url` with `method`."""

    url: str
    method: str

    @classmethod
    def read(cls, fields: Mapping[str, Any]) -> TransferRequest:
        """Check a Transfer request as Plivo does, for a call with no B leg."""
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
        return cls(url, method.upper())


def _ring_timeout(raw: object) -> float | None:
    """Make Call's ring_timeout (the SDK sends it): whole seconds from 1 (docs/plivo.md)."""
    if raw is None or raw == "":
        return None
    text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    value = whole_number(text) if isinstance(text, str) else None
    if not value:
        raise ValidationError("ring_timeout", "must be a whole number of seconds from 1")
    return float(min(value, MAX_CALL_SECONDS))
