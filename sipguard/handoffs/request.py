"""The body of POST /api/v1/handoffs, parsed and checked into the store's HandoffRequest.

A value of the wrong JSON type, a missing or an unknown key is a ValidationError (400); a
well-typed value the rules refuse is a RuleViolation (422). Both name the field. No message
ever quotes the summary: it is personal data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sipguard.errors import RuleViolation, ValidationError
from sipguard.store.api_keys import check_callback_url
from sipguard.store.handoffs import ON_FAILURE, HandoffRequest, request_hash
from xml_builders import check_text, check_url, has_control, render_sip_headers

SUMMARY_MAX = 2000
FIELDS_MAX = 8
CALL_UUID_MAX = 64  # like the callbacks' CallUUID (sipguard.calls.forms)
CALL_UUID_PATTERN = f"^[A-Za-z0-9_-]{{1,{CALL_UUID_MAX}}}$"
CALL_UUID = re.compile(CALL_UUID_PATTERN)
GROUP_MAX = 64
URL_MAX = 2048
IDEMPOTENCY_KEY_MAX = 255
KEYS = (
    "call_uuid",
    "group",
    "summary",
    "fields",
    "whisper",
    "on_failure",
    "return_url",
    "callback_url",
)
_RETURN_SCHEMES = ("https://", "wss://")
NAME_SHOWN = 40  # a key name echoed in an error is cut here: the body is the client's to bloat


def _name(key: object) -> str:
    return str(key)[:NAME_SHOWN]


def _string(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise ValidationError(key, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(key, "must be a string")
    return value


def _rule(field: str, error: ValidationError) -> RuleViolation:
    return RuleViolation(field, error.message.removeprefix(f"{error.field}: "))


def _call_uuid(value: str) -> str:
    # Plivo's Transfer names the call in its URL path, where the REST client takes letters,
    # digits, '-' and '_' only: anything else would be stored as a live handoff, then never sent.
    if not CALL_UUID.fullmatch(value):
        raise RuleViolation(
            "call_uuid",
            f"is not a call UUID (1-{CALL_UUID_MAX} letters, digits, '-' or '_')",
        )
    return value


def _group(value: str) -> str:
    try:
        return check_text("group", value, max_length=GROUP_MAX)
    except ValidationError as exc:
        raise _rule("group", exc) from None


def _summary(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise RuleViolation("summary", "must not be blank (leave it out instead)")
    if len(value) > SUMMARY_MAX:
        raise RuleViolation("summary", f"must be at most {SUMMARY_MAX} characters")
    if has_control(value.replace("\n", "")):
        raise RuleViolation("summary", "must not contain control characters (newlines are fine)")
    return value


def _fields(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("fields", "must be an object of string values")
    for name, item in value.items():
        if not isinstance(item, str):
            raise ValidationError(f"fields.{_name(name)}", "must be a string")
    if len(value) > FIELDS_MAX:
        raise RuleViolation("fields", f"must have at most {FIELDS_MAX} entries")
    try:
        # The very check the Dial's sipHeaders get: nothing Plivo would drop is accepted.
        render_sip_headers("fields", value)
    except ValidationError as exc:
        raise _rule("fields", exc) from None
    return dict(value)


def _url_text(field: str, value: str) -> None:
    if len(value) > URL_MAX:
        raise RuleViolation(field, f"must be a URL of at most {URL_MAX} characters")
    if has_control(value):
        raise RuleViolation(field, "must not contain control characters")


def _return_url(value: str | None) -> str | None:
    if value is None:
        return None
    _url_text("return_url", value)
    scheme = next((s for s in _RETURN_SCHEMES if value.startswith(s)), None)
    if scheme is None:
        raise RuleViolation("return_url", "must be an https:// or wss:// URL")
    try:
        check_url("return_url", "https://" + value.removeprefix(scheme))
    except ValidationError:
        raise RuleViolation("return_url", "must be an absolute https:// or wss:// URL") from None
    return value


def _callback_url(value: str | None) -> str | None:
    if value is None:
        return None
    _url_text("callback_url", value)
    try:
        return check_callback_url("callback_url", value)
    except ValidationError as exc:
        raise _rule("callback_url", exc) from None


def check_idempotency_key(value: str | None) -> str | None:
    """Check an Idempotency-Key: 1-255 visible ASCII characters, or none."""
    if value is None:
        return None
    if not 0 < len(value) <= IDEMPOTENCY_KEY_MAX or not all(" " < c < "\x7f" for c in value):
        raise ValidationError(
            "Idempotency-Key", f"must be 1-{IDEMPOTENCY_KEY_MAX} visible ASCII characters"
        )
    return value


def parse_request(
    body: Any, *, api_key_id: str, idempotency_key: str | None = None
) -> HandoffRequest:
    """Check a handoff request's JSON body and return what the store keeps of it."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(_name(key) for key in body if key not in KEYS)
    if unknown:
        raise ValidationError(unknown[0], f"is not a known field (known: {', '.join(KEYS)})")
    call_uuid = _call_uuid(str(_string(body, "call_uuid", required=True)))
    group = _group(str(_string(body, "group", required=True)))
    summary = _summary(_string(body, "summary"))
    fields = _fields(body.get("fields"))
    whisper = body.get("whisper", False)
    if whisper is None:
        whisper = False
    if not isinstance(whisper, bool):
        raise ValidationError("whisper", "must be true or false")
    # Only a missing or null on_failure means the default: "" is a value, and not a valid one.
    on_failure = _string(body, "on_failure")
    if on_failure is None:
        on_failure = "fallback"
    return_url = _return_url(_string(body, "return_url"))
    callback_url = _callback_url(_string(body, "callback_url"))
    if on_failure not in ON_FAILURE:
        raise RuleViolation("on_failure", f"must be one of {', '.join(ON_FAILURE)}")
    if whisper and summary is None:
        raise RuleViolation("whisper", "needs a summary to speak")
    if on_failure == "return" and return_url is None:
        raise RuleViolation("return_url", 'is required when on_failure is "return"')
    return HandoffRequest(
        api_key_id=api_key_id,
        call_uuid=call_uuid,
        group_name=group,
        request_hash=request_hash(body),
        idempotency_key=check_idempotency_key(idempotency_key),
        summary=summary,
        fields=fields,
        whisper=whisper,
        on_failure=on_failure,
        return_url=return_url,
        callback_url=callback_url,
    )
