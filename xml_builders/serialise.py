"""The one place Plivo XML becomes bytes."""

from __future__ import annotations

from lxml import etree

from sipguard.errors import ValidationError
from xml_builders.elements import Element

# Plivo refuses XML documents over 100 KB (docs/plivo.md, XML); the decimal reading is the safe one.
MAX_DOCUMENT_BYTES = 100_000


def to_bytes(root: Element) -> bytes:
    """Serialise a ``<Response>`` to UTF-8 bytes, refusing documents Plivo would reject."""
    if root.tag != "Response":
        raise ValidationError("Response", "the document root must be <Response>")
    body = etree.tostring(root, encoding="UTF-8", xml_declaration=True)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValidationError("Response", f"document is over {MAX_DOCUMENT_BYTES} bytes")
    return body


def carries_credentials(root: Element) -> bool:
    """Tell whether the document holds SIP digest credentials (so it must not be cached)."""
    return any(child.get("sipAuthPassword") is not None for child in root.iter("User"))


def carries_call_data(root: Element) -> bool:
    """Tell whether the document holds the caller's details (a Stream's extraHeaders carry
    From and To), so it must not be cached either."""
    return any(child.get("extraHeaders") is not None for child in root.iter("Stream"))
