"""POST /answer routed to `action = "stream"`: the exact <Stream> Plivo gets, its extraHeaders."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from tests.support import config
from tests.support.queries import stored_events
from tests.support.signing import SignedPost, inbound

STREAM_URL = "wss://ai.example.test/plivo/stream?tenant=acme"
FILL = "v" * 251  # "fill=" + 251: the 256 bytes fixed headers may take
VOICE = f"""
[answer]
methods = ["POST"]
unauthenticated_sip = {{ action = "reject" }}
default = {{ action = "stream", url = "ws://127.0.0.1:8765/ws" }}

[[rules]]
name = "ai-stream"
sip_auth_type = ["ip_acl", "credential", "ip_acl_and_credential"]
sip_user = ["frontdesk"]
action = "stream"
url = "{STREAM_URL}"
handoff_group = "after-hours"
content_type = "audio/x-l16;rate=16000"
extra_headers = {{ tenant = "acme" }}

[[rules]]
name = "crowded"
sip_auth_type = "credential"
sip_user = "bulk"
action = "stream"
url = "wss://ai.example.test/plivo/stream"
extra_headers = {{ fill = "{FILL}" }}

[groups.after-hours]
agents = ["a"]
[groups.after-hours.fallback]
action = "hangup"

[agents.a]
uri = "sip:a@pbx.example.test"
"""


@pytest.fixture
def app_config(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "voice.toml"
    path.write_text(VOICE, encoding="utf-8")
    return {**config.app_config(sqlite_url), "VOICE_CONFIG": str(path)}


def _hex(value: str) -> str:
    return "x" + value.encode().hex()


def _decoded(extra_headers: str) -> dict[str, str]:
    """Read extraHeaders as the AI does: split, then undo the `x` + hex encoding."""
    pairs = (item.split("=", 1) for item in extra_headers.split(","))
    return {
        name: bytes.fromhex(value[1:]).decode() if value.startswith("x") else value
        for name, value in pairs
    }


def test_stream_answer_is_the_exact_xml_with_the_call_in_extra_headers(
    signed_post: SignedPost, app
) -> None:
    form = inbound(
        From="sip:frontdesk@203.0.113.10",
        To="sip:12345678901234567890@app.plivo.com",
        SIPAuthType="ip_acl_and_credential",
        SIPAuthUser="frontdesk",
        SIPSourceIP="203.0.113.10",
    )
    response = signed_post("/answer", form)
    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    assert response.headers["Cache-Control"] == "no-store"  # it names the caller
    headers = ",".join(
        [
            "tenant=acme",
            f"handoffgroup={_hex('after-hours')}",
            f"from={_hex('sip:frontdesk@203.0.113.10')}",
            f"to={_hex('sip:12345678901234567890@app.plivo.com')}",
            f"sipauthtype={_hex('ip_acl_and_credential')}",
            "sipauthuser=frontdesk",
            f"sipsourceip={_hex('203.0.113.10')}",
        ]
    )
    assert (
        etree.tostring(etree.fromstring(response.data))
        == (
            '<Response><Stream bidirectional="true" keepCallAlive="true" '
            'contentType="audio/x-l16;rate=16000" audioTrack="inbound" '
            f'extraHeaders="{headers}">'
            "wss://ai.example.test/plivo/stream?tenant=acme</Stream></Response>"
        ).encode()
    )
    [event] = stored_events(app.extensions["sipguard"].store)
    assert (event["decision"], event["rule"], event["group_name"]) == (
        "stream",
        "ai-stream",
        "after-hours",
    )
    assert "wss://" not in str(event)


def test_the_ai_reads_back_what_plivo_sent_to_answer_url(signed_post: SignedPost) -> None:
    form = inbound(
        From="+14155550123",
        To="sip:12345678901234567890@app.plivo.com",
        SIPAuthType="credential",
        SIPAuthUser="frontdesk",
        SIPSourceIP="2001:db8:100::5",
    )
    response = signed_post("/answer", form)
    stream = etree.fromstring(response.data).find("Stream")
    decoded = _decoded(stream.get("extraHeaders"))
    assert decoded == {
        "tenant": "acme",
        "handoffgroup": "after-hours",
        "from": "+14155550123",
        "to": "sip:12345678901234567890@app.plivo.com",
        "sipauthtype": "credential",
        "sipauthuser": "frontdesk",
        "sipsourceip": "2001:db8:100::5",
    }


def test_a_phone_call_streams_without_sip_auth_headers(signed_post: SignedPost) -> None:
    """The default here streams to a loopback ws:// (local development), for a phone call."""
    response = signed_post("/answer", inbound(From="+14155550123", To="+14155550100"))
    root = etree.fromstring(response.data)
    assert root.xpath("string(/Response/Stream)") == "ws://127.0.0.1:8765/ws"
    stream = root.find("Stream")
    assert stream.get("contentType") == "audio/x-mulaw;rate=8000"  # stated, never Plivo's default
    assert stream.get("extraHeaders") == f"from={_hex('+14155550123')},to={_hex('+14155550100')}"


def test_a_value_that_does_not_fit_is_left_out_and_logged_by_name_only(
    signed_post: SignedPost, app_logs
) -> None:
    caller = "sip:" + "c" * 120 + "@203.0.113.10"  # 275 bytes encoded: past the 256 left
    form = inbound(From=caller, SIPAuthType="credential", SIPAuthUser="bulk")
    response = signed_post("/answer", form)
    stream = etree.fromstring(response.data).find("Stream")
    rendered = stream.get("extraHeaders")
    assert len(rendered.encode()) <= 512
    names = [item.split("=", 1)[0] for item in rendered.split(",")]
    assert names == ["fill", "to", "sipauthtype", "sipauthuser"]  # no SIPSourceIP in this form
    warnings = [r.getMessage() for r in app_logs.records if r.levelname == "WARNING"]
    assert warnings == [
        f"call={form['CallUUID']} stream extraHeaders left out to stay within 512 bytes: from"
    ]
    assert caller not in app_logs.text and _hex(caller) not in app_logs.text
