"""Plivo XML elements as pure functions returning lxml elements, checked against documented limits.

Names and limits are Plivo's (docs/plivo.md, XML; https://www.plivo.com/docs/voice/xml/dial):
attribute names are camelCase exactly as Plivo documents them (``sipAuthUsername``, not
``sip_auth_username``). Every function raises ``ValidationError`` naming the attribute at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from lxml import etree
from lxml.etree import _Element as Element

from sipguard.errors import ValidationError

SIP_AUTH_PASSWORD_MIN, SIP_AUTH_PASSWORD_MAX = 8, 128
SIP_AUTH_USERNAME_MAX = 128  # not documented for <User>; bounded so a typo cannot bloat the XML
SIP_HEADER_NAME_MAX, SIP_HEADER_VALUE_MAX = 24, 120
CALLER_NAME_MAX = 50
# Plivo silently drops these; refusing them here turns a silent loss into a start-up error.
RESERVED_SIP_HEADER_PREFIXES = ("ph-", "plivo", "fs-", "sipauth", "zt-", "twilio")
RESERVED_SIP_HEADER_NAMES = ("clientregion",)
HANGUP_REASONS = ("rejected", "busy")
# <Stream> (https://www.plivo.com/docs/voice/xml/audiostream; docs/plivo.md, XML)
STREAM_CONTENT_TYPES = (
    "audio/x-l16;rate=8000",
    "audio/x-l16;rate=16000",
    "audio/x-mulaw;rate=8000",
)
STREAM_AUDIO_TRACKS = ("inbound", "outbound", "both")
STREAM_EXTRA_HEADERS_MAX = 512  # bytes of the rendered k=v,k2=v2 string
METHODS = ("GET", "POST")

_SIP_URI = re.compile(r"^sips?:[^\s<>\"]+$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9]+$")
_HEADER_VALUE = re.compile(r"^[A-Za-z0-9%]+$")
_STREAM_HEADER = re.compile(r"^[A-Za-z0-9]+$")
_WS_URL = re.compile(r"wss?://[^\s<>\"/?#@]+(?:[/?#][^\s<>\"]*)?")
# An absolute http(s) URL whose authority an HTTP client can parse: optional user info, a host
# name or a bracketed IPv6 literal, a port of 0-65535; no spaces, quotes or angle brackets.
_URL = re.compile(
    r"https?://(?:[^\s<>\"/?#@\[\]]*@)?"
    r"(?:\[[0-9A-Fa-f:.]+\]|[^\s<>\"/?#@\[\]:]+)"
    r"(?::(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    r"(?:[/?#][^\s<>\"]*)?"
)
_DIGITS_TO_SEND = re.compile(r"^[0-9*#wW]+$")
_NUMBER = re.compile(r"^\+?[0-9]{1,20}$")
_CONFIRM_KEY = re.compile(r"^[0-9*#]$")
_KEYS = re.compile(r"^[0-9*#]+$")
_POLLY = re.compile(r"^Polly\.[A-Za-z0-9-]+$")
# Unicode categories Cc (C0, DEL, C1) and Cs (surrogates), as one character class: a regex scan
# is an order of magnitude faster than unicodedata.category() per character.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def has_control(value: str) -> bool:
    """Tell whether `value` holds a control character or a lone surrogate."""
    # XML 1.0 cannot carry most C0 controls, and none of them belong in a prompt or a name.
    return _CONTROL.search(value) is not None


def check_text(field: str, value: str, *, max_length: int | None = None) -> str:
    """Check a non-empty string without control characters, at most `max_length` long."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "must be a non-empty string")
    if has_control(value):
        raise ValidationError(field, "must not contain control characters")
    if max_length is not None and len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters")
    return value


def check_url(field: str, value: str) -> str:
    """Check an absolute http(s) URL with a host that an HTTP client can parse.

    One regular expression, no parsing: this runs on the answer path for every Dial action and
    Redirect the app builds.
    """
    if not isinstance(value, str) or not _URL.fullmatch(value):
        raise ValidationError(field, "must be an absolute http(s) URL")
    return value


def check_method(field: str, value: str) -> str:
    """Check an HTTP method Plivo uses for callbacks."""
    if value not in METHODS:
        raise ValidationError(field, "must be GET or POST")
    return value


def check_positive(field: str, value: int) -> str:
    """Check a positive whole number; return it as Plivo's attribute text."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(field, "must be a positive whole number")
    return str(value)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def render_sip_headers(field: str, headers: Mapping[str, str]) -> str:
    """Render custom SIP headers as Plivo's ``k1=v1,k2=v2`` after checking each one."""
    rendered = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValidationError(field, f"header name {name!r} must be letters and digits only")
        if len(name) > SIP_HEADER_NAME_MAX:
            raise ValidationError(
                field, f"header name {name!r} is over {SIP_HEADER_NAME_MAX} characters"
            )
        lowered = name.lower()
        if lowered.startswith(RESERVED_SIP_HEADER_PREFIXES) or lowered in RESERVED_SIP_HEADER_NAMES:
            raise ValidationError(field, f"header name {name!r} uses a prefix Plivo reserves")
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise ValidationError(field, f"value of {name!r} must be letters, digits and %")
        if len(value) > SIP_HEADER_VALUE_MAX:
            raise ValidationError(
                field, f"value of {name!r} is over {SIP_HEADER_VALUE_MAX} characters"
            )
        rendered.append(f"{name}={value}")
    return ",".join(rendered)


def _set(element: Element, attributes: Mapping[str, str | None]) -> Element:
    for name, value in attributes.items():
        if value is not None:
            element.set(name, value)
    return element


def response(*children: Element) -> Element:
    """Return a ``<Response>`` holding `children` in order."""
    root = etree.Element("Response")
    root.extend(children)
    return root


def _target(
    tag: str,
    address: str,
    send_digits: str | None,
    send_on_preanswer: bool | None,
    sip_headers: Mapping[str, str] | None,
) -> Element:
    """Build a Dial target (<User> or <Number>) with the attributes both share."""
    if send_digits is not None and not _DIGITS_TO_SEND.fullmatch(send_digits):
        raise ValidationError(f"{tag}.sendDigits", "must be digits, *, # and w")
    element = etree.Element(tag)
    element.text = address
    return _set(
        element,
        {
            "sendDigits": send_digits,
            "sendOnPreanswer": None if send_on_preanswer is None else _bool(send_on_preanswer),
            "sipHeaders": (
                render_sip_headers(f"{tag}.sipHeaders", sip_headers) if sip_headers else None
            ),
        },
    )


def is_sip_uri(value: object) -> bool:
    """Tell whether `value` is a single sip: or sips: URI."""
    return isinstance(value, str) and _SIP_URI.fullmatch(value) is not None


def is_number(value: object) -> bool:
    """Tell whether `value` is a phone number as Plivo dials it (digits, optional +)."""
    return isinstance(value, str) and _NUMBER.fullmatch(value) is not None


def check_sip_credentials(
    fields: tuple[str, str], username: str | None, password: str | None
) -> None:
    """Check outbound digest credentials: both or neither, within the documented limits.

    Shared by `<User>` and Make Call; `fields` names them as the caller's input does.
    """
    username_field, password_field = fields
    if (username is None) != (password is None):
        raise ValidationError(password_field, f"{username_field} and {password_field} go together")
    if username is not None:
        check_text(username_field, username, max_length=SIP_AUTH_USERNAME_MAX)
    if password is not None:
        # The message names the limit only: a password never goes into an error message.
        if not isinstance(password, str) or not (
            SIP_AUTH_PASSWORD_MIN <= len(password) <= SIP_AUTH_PASSWORD_MAX
        ):
            limits = f"{SIP_AUTH_PASSWORD_MIN}-{SIP_AUTH_PASSWORD_MAX}"
            raise ValidationError(password_field, f"must be {limits} characters")
        if has_control(password):
            raise ValidationError(password_field, "must not contain control characters")


def user(
    uri: str,
    *,
    sip_auth_username: str | None = None,
    sip_auth_password: str | None = None,
    send_digits: str | None = None,
    send_on_preanswer: bool | None = None,
    sip_headers: Mapping[str, str] | None = None,
) -> Element:
    """Return a ``<User>`` for a SIP endpoint, with digest credentials when the PBX asks."""
    if not is_sip_uri(uri):
        raise ValidationError("User", "must be a sip: or sips: URI")
    check_sip_credentials(
        ("User.sipAuthUsername", "User.sipAuthPassword"), sip_auth_username, sip_auth_password
    )
    element = _target("User", uri, send_digits, send_on_preanswer, sip_headers)
    return _set(
        element, {"sipAuthUsername": sip_auth_username, "sipAuthPassword": sip_auth_password}
    )


def number(
    digits: str,
    *,
    send_digits: str | None = None,
    send_on_preanswer: bool | None = None,
    sip_headers: Mapping[str, str] | None = None,
) -> Element:
    """Return a ``<Number>`` for a phone number in E.164 digits."""
    if not is_number(digits):
        raise ValidationError("Number", "must be a phone number of digits, optionally with +")
    return _target("Number", digits, send_digits, send_on_preanswer, sip_headers)


def dial(
    targets: Iterable[Element],
    *,
    action: str | None = None,
    method: str | None = None,
    timeout: int | None = None,
    time_limit: int | None = None,
    caller_id: str | None = None,
    caller_name: str | None = None,
    confirm_sound: str | None = None,
    confirm_key: str | None = None,
    dial_music: str | None = None,
    callback_url: str | None = None,
    callback_method: str | None = None,
    redirect: bool | None = None,
    sip_headers: Mapping[str, str] | None = None,
) -> Element:
    """Return a ``<Dial>`` over `targets` (``<User>``/``<Number>``); the first to answer wins."""
    children = list(targets)
    if not children or any(
        not isinstance(child, Element) or child.tag not in ("User", "Number") for child in children
    ):
        raise ValidationError("Dial", "needs at least one <User> or <Number>")
    if caller_id is not None:
        check_text("Dial.callerId", caller_id, max_length=64)
    if caller_name is not None:
        check_text("Dial.callerName", caller_name, max_length=CALLER_NAME_MAX)
    if confirm_key is not None and not _CONFIRM_KEY.fullmatch(confirm_key):
        raise ValidationError("Dial.confirmKey", "must be one of 0-9, * or #")
    if dial_music is not None and dial_music != "real":
        check_url("Dial.dialMusic", dial_music)
    element = _set(
        etree.Element("Dial"),
        {
            "action": check_url("Dial.action", action) if action is not None else None,
            "method": check_method("Dial.method", method) if method is not None else None,
            "timeout": check_positive("Dial.timeout", timeout) if timeout is not None else None,
            "timeLimit": (
                check_positive("Dial.timeLimit", time_limit) if time_limit is not None else None
            ),
            "callerId": caller_id,
            "callerName": caller_name,
            "confirmSound": (
                check_url("Dial.confirmSound", confirm_sound) if confirm_sound else None
            ),
            "confirmKey": confirm_key,
            "dialMusic": dial_music,
            "callbackUrl": check_url("Dial.callbackUrl", callback_url) if callback_url else None,
            "callbackMethod": (
                check_method("Dial.callbackMethod", callback_method) if callback_method else None
            ),
            "redirect": None if redirect is None else _bool(redirect),
            "sipHeaders": render_sip_headers("Dial.sipHeaders", sip_headers)
            if sip_headers
            else None,
        },
    )
    element.extend(children)
    return element


def speak(
    text: str, *, voice: str | None = None, language: str | None = None, loop: int | None = None
) -> Element:
    """Return a ``<Speak>`` of plain text (XML metacharacters are escaped by lxml)."""
    element = etree.Element("Speak")
    element.text = check_text("Speak", text, max_length=3000)
    if loop is not None and (isinstance(loop, bool) or not isinstance(loop, int) or loop < 0):
        raise ValidationError("Speak.loop", "must be a whole number, 0 for until the call ends")
    if voice is not None and not (
        isinstance(voice, str) and (voice in ("WOMAN", "MAN") or _POLLY.fullmatch(voice))
    ):
        raise ValidationError("Speak.voice", "must be WOMAN, MAN or Polly.<Name>")
    return _set(
        element,
        {
            "voice": voice,
            "language": check_text("Speak.language", language) if language else None,
            "loop": None if loop is None else str(loop),
        },
    )


def record(
    *,
    action: str | None = None,
    method: str | None = None,
    max_length: int | None = None,
    timeout: int | None = None,
    finish_on_key: str | None = None,
    play_beep: bool | None = None,
    callback_url: str | None = None,
    callback_method: str | None = None,
) -> Element:
    """Return a ``<Record>`` (voicemail) element."""
    if finish_on_key is not None and not _KEYS.fullmatch(finish_on_key):
        raise ValidationError("Record.finishOnKey", "must be keys among 0-9, * and #")
    return _set(
        etree.Element("Record"),
        {
            "action": check_url("Record.action", action) if action else None,
            "method": check_method("Record.method", method) if method else None,
            "maxLength": (
                check_positive("Record.maxLength", max_length) if max_length is not None else None
            ),
            "timeout": check_positive("Record.timeout", timeout) if timeout is not None else None,
            "finishOnKey": finish_on_key,
            "playBeep": None if play_beep is None else _bool(play_beep),
            "callbackUrl": check_url("Record.callbackUrl", callback_url) if callback_url else None,
            "callbackMethod": (
                check_method("Record.callbackMethod", callback_method) if callback_method else None
            ),
        },
    )


def redirect(url: str, *, method: str = "POST") -> Element:
    """Return a ``<Redirect>`` handing the call's control to `url`."""
    element = etree.Element("Redirect", method=check_method("Redirect.method", method))
    element.text = check_url("Redirect", url)
    return element


def hangup(*, reason: str | None = None, schedule: int | None = None) -> Element:
    """Return a ``<Hangup>``; ``reason="rejected"`` refuses the call outright."""
    if reason is not None and reason not in HANGUP_REASONS:
        raise ValidationError("Hangup.reason", "must be rejected or busy")
    return _set(
        etree.Element("Hangup"),
        {
            "reason": reason,
            "schedule": (
                check_positive("Hangup.schedule", schedule) if schedule is not None else None
            ),
        },
    )


def render_stream_headers(field: str, headers: Mapping[str, str]) -> str:
    """Render ``<Stream extraHeaders>`` as ``k1=v1,k2=v2``: letters and digits, ≤512 bytes."""
    rendered = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _STREAM_HEADER.fullmatch(name):
            raise ValidationError(field, f"header name {name!r} must be letters and digits only")
        if not isinstance(value, str) or not _STREAM_HEADER.fullmatch(value):
            raise ValidationError(field, f"value of {name!r} must be letters and digits only")
        rendered.append(f"{name}={value}")
    text = ",".join(rendered)
    if len(text.encode()) > STREAM_EXTRA_HEADERS_MAX:
        raise ValidationError(field, f"must be at most {STREAM_EXTRA_HEADERS_MAX} bytes")
    return text


def stream(
    url: str,
    *,
    bidirectional: bool | None = None,
    keep_call_alive: bool | None = None,
    content_type: str | None = None,
    audio_track: str | None = None,
    stream_timeout: int | None = None,
    status_callback_url: str | None = None,
    status_callback_method: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Element:
    """Return a ``<Stream>`` of the call's audio to the WebSocket at `url` (ws:// or wss://).

    A bidirectional stream may only carry the caller's audio (``audioTrack`` inbound), as
    Plivo's page says; the SDKs do not check it, so it is checked here.
    """
    if not isinstance(url, str) or not _WS_URL.fullmatch(url):
        raise ValidationError("Stream", "must be an absolute ws:// or wss:// URL")
    if content_type is not None and content_type not in STREAM_CONTENT_TYPES:
        raise ValidationError(
            "Stream.contentType", f"must be one of {', '.join(STREAM_CONTENT_TYPES)}"
        )
    if audio_track is not None and audio_track not in STREAM_AUDIO_TRACKS:
        raise ValidationError("Stream.audioTrack", "must be inbound, outbound or both")
    if bidirectional and audio_track not in (None, "inbound"):
        raise ValidationError("Stream.audioTrack", "must be inbound on a bidirectional stream")
    element = _set(
        etree.Element("Stream"),
        {
            "bidirectional": None if bidirectional is None else _bool(bidirectional),
            "keepCallAlive": None if keep_call_alive is None else _bool(keep_call_alive),
            "contentType": content_type,
            "audioTrack": audio_track,
            "streamTimeout": (
                check_positive("Stream.streamTimeout", stream_timeout)
                if stream_timeout is not None
                else None
            ),
            "statusCallbackUrl": (
                check_url("Stream.statusCallbackUrl", status_callback_url)
                if status_callback_url
                else None
            ),
            "statusCallbackMethod": (
                check_method("Stream.statusCallbackMethod", status_callback_method)
                if status_callback_method
                else None
            ),
            "extraHeaders": (
                render_stream_headers("Stream.extraHeaders", extra_headers)
                if extra_headers
                else None
            ),
        },
    )
    element.text = url
    return element
