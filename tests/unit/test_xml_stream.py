"""The ``<Stream>`` builder, against Plivo's page (docs/plivo.md, XML;
https://www.plivo.com/docs/voice/xml/audiostream) and the plivo-python SDK's StreamElement."""

from __future__ import annotations

import pytest
from lxml import etree
from plivo import plivoxml

from sipguard.calls.documents import stream_header_value, stream_headers, stream_to_ai
from sipguard.errors import ValidationError
from xml_builders import render_stream_headers, response, stream, to_bytes

WSS = "wss://ai.example.com/plivo/stream"


def test_stream_renders_every_attribute_under_plivo_names() -> None:
    element = stream(
        WSS,
        bidirectional=True,
        keep_call_alive=True,
        content_type="audio/x-mulaw;rate=8000",
        audio_track="inbound",
        stream_timeout=600,
        status_callback_url="https://app.example.com/stream-status",
        status_callback_method="POST",
        extra_headers={"from": "14155550100", "sipauthtype": "digest"},
    )
    doc = etree.fromstring(to_bytes(response(element)))
    (found,) = doc.xpath("/Response/Stream")
    assert found.text == WSS
    assert dict(found.attrib) == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "contentType": "audio/x-mulaw;rate=8000",
        "audioTrack": "inbound",
        "streamTimeout": "600",
        "statusCallbackUrl": "https://app.example.com/stream-status",
        "statusCallbackMethod": "POST",
        "extraHeaders": "from=14155550100,sipauthtype=digest",
    }


def test_stream_matches_the_plivo_sdk_for_the_same_options() -> None:
    ours = etree.fromstring(
        to_bytes(
            response(
                stream(
                    WSS,
                    bidirectional=True,
                    keep_call_alive=True,
                    content_type="audio/x-l16;rate=16000",
                    extra_headers={"a": "1"},
                )
            )
        )
    )
    sdk = plivoxml.ResponseElement()
    sdk.add(
        plivoxml.StreamElement(
            WSS,
            bidirectional=True,
            keepCallAlive=True,
            contentType="audio/x-l16;rate=16000",
            extraHeaders="a=1",
        )
    )
    theirs = etree.fromstring(sdk.to_string().encode())
    assert ours[0].text == theirs[0].text
    assert dict(ours[0].attrib) == dict(theirs[0].attrib)


def test_stream_without_options_is_only_its_url() -> None:
    element = stream("ws://127.0.0.1:8765/ws")
    assert element.text == "ws://127.0.0.1:8765/ws" and dict(element.attrib) == {}


@pytest.mark.parametrize(
    "url", ["https://ai.example.com/ws", "wss://", "wss://host/ws path", "", "ftp://x/y"]
)
def test_stream_refuses_a_url_that_is_not_a_websocket(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        stream(url)
    assert caught.value.field == "Stream"


def test_stream_refuses_an_unknown_content_type_and_audio_track() -> None:
    with pytest.raises(ValidationError, match="contentType"):
        stream(WSS, content_type="audio/wav")
    with pytest.raises(ValidationError, match="audioTrack"):
        stream(WSS, audio_track="all")


@pytest.mark.parametrize("track", ["outbound", "both"])
def test_bidirectional_stream_only_carries_the_inbound_track(track: str) -> None:
    with pytest.raises(ValidationError) as caught:
        stream(WSS, bidirectional=True, audio_track=track)
    assert caught.value.field == "Stream.audioTrack"
    stream(WSS, bidirectional=False, audio_track=track)  # allowed one way


@pytest.mark.parametrize(
    "headers",
    [{"user-id": "1"}, {"a": "x-y"}, {"a": "+1415"}, {"": "1"}, {"a": ""}, {"a": "b c"}],
)
def test_extra_headers_are_letters_and_digits_only(headers: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as caught:
        render_stream_headers("Stream.extraHeaders", headers)
    assert caught.value.field == "Stream.extraHeaders"


def test_extra_headers_are_bounded_at_512_bytes() -> None:
    fits = {"k": "v" * 510}  # "k=" + 510 = 512
    assert len(render_stream_headers("f", fits)) == 512
    with pytest.raises(ValidationError, match="512 bytes"):
        render_stream_headers("f", {"k": "v" * 511})


@pytest.mark.parametrize(
    "value", ["+14155550100", "sip:alice@203.0.113.7", "203.0.113.7", "xray", "é", "a b", "x"]
)
def test_stream_header_values_round_trip_through_letters_and_digits(value: str) -> None:
    encoded = stream_header_value(value)
    assert encoded.isascii() and encoded.isalnum()
    decoded = bytes.fromhex(encoded[1:]).decode() if encoded.startswith("x") else encoded
    assert decoded == value


def test_plain_values_are_sent_as_they_are() -> None:
    assert stream_header_value("14155550100") == "14155550100"
    assert stream_header_value("digest") == "digest"


def test_stream_headers_keep_fixed_ones_and_drop_per_call_ones_that_do_not_fit() -> None:
    headers, dropped = stream_headers(
        {"tenant": "acme"}, {"from": "+1415", "to": None, "big": "y" * 600, "user": "bob"}
    )
    assert headers == {"tenant": "acme", "from": "x2b31343135", "user": "bob"}
    assert dropped == ("big",)
    assert len(render_stream_headers("f", headers).encode()) <= 512
    fits, _ = stream_headers({}, {"k": "v" * 510})
    assert len(render_stream_headers("f", fits)) == 512


def test_stream_to_ai_is_a_bidirectional_kept_alive_stream_with_a_stated_content_type() -> None:
    doc = etree.fromstring(to_bytes(stream_to_ai(WSS, {"from": "14155550100"})))
    (found,) = doc.xpath("/Response/Stream")
    assert found.text == WSS
    assert found.get("bidirectional") == "true" and found.get("keepCallAlive") == "true"
    assert found.get("contentType") == "audio/x-mulaw;rate=8000"
    assert found.get("audioTrack") == "inbound"
    assert found.get("extraHeaders") == "from=14155550100"
