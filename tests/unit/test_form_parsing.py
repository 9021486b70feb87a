"""The callbacks' one-pass form parser reads a good body exactly as urllib (and werkzeug) do."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.calls.forms import parse_urlencoded
from sipguard.errors import ValidationError

# Pieces a form body is made of, the tricky ones included: separators, '+', escapes, UTF-8.
_PIECES = st.sampled_from(
    ["a", "B", "=", "&", "+", "%20", "%41", "%2B", "%26", "%3D", "%C3%A9", "é"]
)


@given(st.lists(_PIECES, max_size=30).map("".join))
def test_the_same_pairs_as_parse_qsl(text: str) -> None:
    body = text.encode()
    assert parse_urlencoded(body) == parse_qsl(text, keep_blank_values=True, errors="strict")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"CallUUID=%ZZ", "has broken percent-encoding"),
        (b"CallUUID=abc&From=%", "has broken percent-encoding"),
        (b"CallUUID=%FF%FE", "is not valid UTF-8"),
        (b"CallUUID=\xc3\x28", "is not valid UTF-8"),
        (b"Call%C3=x", "is not valid UTF-8"),
    ],
)
def test_a_broken_body_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_urlencoded(body)
    assert (refused.value.field, refused.value.message) == ("body", f"body: {message}")
