"""Plivo XML: element builders (pure, lxml) and the single serialiser."""

from xml_builders.elements import (
    Element,
    dial,
    hangup,
    number,
    record,
    redirect,
    render_sip_headers,
    response,
    speak,
    user,
)
from xml_builders.serialise import MAX_DOCUMENT_BYTES, carries_credentials, to_bytes

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "Element",
    "carries_credentials",
    "dial",
    "hangup",
    "number",
    "record",
    "redirect",
    "render_sip_headers",
    "response",
    "speak",
    "to_bytes",
    "user",
]
