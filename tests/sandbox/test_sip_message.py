"""SIP messages (sandbox/sip_message.py): reading, writing, parameters, RFC 4475 torture cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import digest
from sandbox.sip_message import (
    Request,
    Response,
    SipError,
    authorization,
    challenge,
    params,
    parse,
    received,
    response_to,
    sent_by,
    split_values,
)

INVITE = (
    b"INVITE sip:20000000000000000002@app.plivo.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-1;rport\r\n"
    b'From: "Caller" <sip:caller@127.0.0.2:5070>;tag=abc\r\n'
    b"To: <sip:20000000000000000002@app.plivo.com>\r\n"
    b"Call-ID: 1-2@127.0.0.2\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:caller@127.0.0.2:5070>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def _request(data: bytes = INVITE) -> Request:
    message = parse(data)
    assert isinstance(message, Request)
    return message


def test_reads_a_request() -> None:
    message = _request()
    assert (message.method, message.uri) == ("INVITE", "sip:20000000000000000002@app.plivo.com")
    assert message.call_id == "1-2@127.0.0.2"
    assert message.cseq == (1, "INVITE")
    assert message.branch == "z9hG4bK-1"
    assert message.tag("from") == "abc"
    assert message.tag("to") is None
    assert message.body == b"v=0\n"
    assert message.get("CALL-ID") == message.get("i") == "1-2@127.0.0.2"


def test_reads_a_response() -> None:
    data = INVITE.replace(
        b"INVITE sip:20000000000000000002@app.plivo.com SIP/2.0", b"SIP/2.0 180 Ringing"
    )
    message = parse(data)
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (180, "Ringing")


def test_serialise_sets_content_length() -> None:
    message = parse(INVITE)
    message.body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    again = parse(message.serialise())
    assert again.body == message.body
    assert again.values("content-length") == [str(len(message.body))]
    message.remove("content-length")
    assert parse(message.serialise()).get("l") == str(len(message.body))


def test_compact_forms_are_read_as_their_full_names() -> None:
    data = (
        b"BYE sip:caller@127.0.0.2 SIP/2.0\r\n"
        b"i: call-1\r\n"
        b"v: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKx\r\n"
        b"m: <sip:a@127.0.0.2>\r\n"
        b"t: <sip:c@d>;tag=2\r\n"
        b"f: <sip:a@b>;tag=1\r\n"
        b"CSeq: 2 BYE\r\n"
        b"k: timer\r\n"
        b"c: text/plain\r\n"
        b"l: 2\r\n\r\nhi"
    )
    message = parse(data)
    assert [name for name, _ in message.headers] == [
        "Call-ID",
        "Via",
        "Contact",
        "To",
        "From",
        "CSeq",
        "Supported",
        "Content-Type",
        "Content-Length",
    ]
    assert message.tag("to") == "2"
    assert message.body == b"hi"


def test_repeated_headers_and_comma_lists_keep_their_order() -> None:
    message = _request(
        INVITE.replace(
            b"Max-Forwards: 70\r\n",
            b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb\r\n"
            b"Max-Forwards: 70\r\n",
        )
    )
    branches = [params(via)[1]["branch"] for via in message.values("v")]
    assert branches == ["z9hG4bK-1", "z9hG4bKa", "z9hG4bKb"]
    reply = response_to(message, 200, "OK", to_tag="t1")
    assert reply.values("via") == message.values("via")


def test_unknown_headers_are_kept_as_sent() -> None:
    message = parse(INVITE.replace(b"Max-Forwards: 70", b"X-Odd-Thing :  ;;,,;;,;"))
    assert ("X-Odd-Thing", ";;,,;;,;") in message.headers
    assert b"X-Odd-Thing: ;;,,;;,;\r\n" in message.serialise()


def test_params_of_name_addr_and_addr_spec() -> None:
    assert params('"A;b <c>" <sip:a@b;transport=udp>;tag=9;lr') == (
        '"A;b <c>" <sip:a@b;transport=udp>',
        {"tag": "9", "lr": ""},
    )
    assert params("sip:a@b;tag=9") == ("sip:a@b", {"tag": "9"})
    assert params('<sip:a@b>;x="q;r"') == ("<sip:a@b>", {"x": "q;r"})
    assert split_values('"a, b" <sip:x@y>, <sip:z@w;p=1,2>') == [
        '"a, b" <sip:x@y>',
        "<sip:z@w;p=1,2>",
    ]


def test_via_sent_by_and_received() -> None:
    via = "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKx;rport"
    assert sent_by(via) == ("192.0.2.1", 5070)
    assert sent_by("SIP/2.0/UDP [::1]:5080;branch=z9hG4bKx") == ("::1", 5080)
    assert sent_by("SIP/2.0/UDP host.example") == ("host.example", None)
    stamped = received(via, "127.0.0.2", 40000)
    assert params(stamped)[1] == {"branch": "z9hG4bKx", "rport": "40000", "received": "127.0.0.2"}
    # No rport asked for: none given (RFC 3581 §4).
    assert "rport" not in received("SIP/2.0/UDP h;branch=z9hG4bKx", "127.0.0.2", 1)
    with pytest.raises(SipError):
        sent_by("HTTP/1.1 host")


def test_response_to_copies_the_dialog_headers_and_adds_a_to_tag() -> None:
    request = _request()
    reply = parse(response_to(request, 407, "Proxy Authentication Required", "t9").serialise())
    assert isinstance(reply, Response)
    assert reply.status == 407
    for name in ("via", "from", "call-id", "cseq"):
        assert reply.values(name) == request.values(name)
    assert reply.tag("to") == "t9"
    assert response_to(request, 100, "Trying", "t9").tag("to") is None
    request.set("To", "<sip:x@y>;tag=t9")
    assert response_to(request, 200, "OK", "other").tag("to") == "t9"  # a To keeps its tag


def test_digest_headers_through_sandbox_digest() -> None:
    request = _request()
    assert authorization(request) is None
    offered = digest.Challenge("app.plivo.com", "n1", "MD5")
    reply = response_to(request, 407, "Proxy Authentication Required", "t")
    reply.add("Proxy-Authenticate", offered.header())
    assert challenge(parse(reply.serialise())) == offered
    answer = digest.answer(offered, "alice", "Secret-Pw-1234", "INVITE", request.uri)
    request.add("Proxy-Authorization", answer.header())
    assert authorization(parse(request.serialise())) == answer
    request.set("Proxy-Authorization", "Digest realm")
    with pytest.raises(SipError, match="malformed Digest"):
        authorization(request)


# --- RFC 4475 §3.1.1.1 "wsinv", shortened: odd white space, folding, case, unknown headers --

SDP = b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n"
WSINV = (
    b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
    b"TO :\r\n"
    b" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
    b'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n'
    b"  ;\r\n"
    b"  tag = 98asjd8\r\n"
    b"MaX-fOrWaRdS: 0068\r\n"
    b"Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
    b"Content-Length   : " + str(len(SDP)).encode() + b"\r\n"
    b"cseq: 0009\r\n"
    b"  INVITE\r\n"
    b"Via  : SIP  /   2.0\r\n"
    b" /UDP\r\n"
    b"    192.0.2.2;branch=390skdjuw\r\n"
    b"s :\r\n"
    b"NewFangledHeader:   newfangled value\r\n"
    b" continued newfangled value\r\n"
    b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
    b"Content-Type: application/sdp\r\n"
    b"v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n"
    b"  branch  =   z9hG4bK9ikj8  ,\r\n"
    b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n"
    b" z9hG4bK30239\r\n"
    b"\r\n" + SDP
)


def test_rfc4475_wsinv() -> None:
    message = _request(WSINV)
    assert message.tag("to") == "1918181833n"
    assert message.tag("from") == "98asjd8"
    assert message.cseq == (9, "INVITE")
    assert message.get("max-forwards") == "0068"
    assert message.get("subject") == ""
    assert message.get("newfangledheader") == "newfangled value continued newfangled value"
    vias = message.values("via")
    assert [sent_by(via)[0] for via in vias] == [
        "192.0.2.2",
        "spindle.example.com",
        "192.168.255.111",
    ]
    assert [params(via)[1]["branch"] for via in vias] == [
        "390skdjuw",
        "z9hG4bK9ikj8",
        "z9hG4bK30239",
    ]
    assert message.body == SDP


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"HELLO\r\n\r\n", "start line"),
        (b"INVITE sip:a@b SIP/3.0\r\n\r\n", "version"),
        (b"INVITE nocolon SIP/2.0\r\n\r\n", "scheme"),
        (INVITE.replace(b"SIP/2.0\r\n", b"SIP/2.0\r\n no header\r\n", 1), "continuation"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "malformed header"),
        (INVITE.replace(b"Max-Forwards: 70", b"Bad Name: 70"), "malformed header"),
        (INVITE.replace(b"Call-ID: 1-2@127.0.0.2\r\n", b""), "no Call-ID"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "CSeq method"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE"), "CSeq"),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"), "CSeq"),
        # RFC 4475 §3.1.2.2 clerr, §3.1.2.5 ncl, and two Content-Lengths that disagree.
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 9999"), "shorter"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: -999"), "Content-Length"),
        (INVITE.replace(b"Content-Length: 4", b"Content-Length: 4\r\nl: 3"), "Content-Length"),
        (INVITE.replace(b"Caller", b"\xff\xfe"), "UTF-8"),
        (b"SIP/2.0 999 Nope\r\n\r\n", "out of range"),
        (INVITE.replace(b"From: ", b"X: x\r\n" * 300 + b"From: "), "header lines"),
        (b"x" * 70_000, "larger"),
    ],
)
def test_refuses_malformed_datagrams(data: bytes, error: str) -> None:
    with pytest.raises(SipError, match=error):
        parse(data)


def test_a_header_a_helper_cannot_read_raises_sip_error() -> None:
    message = parse(INVITE.replace(b"tag=abc", b'tag="abc'))
    with pytest.raises(SipError, match="quote"):
        message.tag("from")
    message = parse(INVITE.replace(b"<sip:caller@127.0.0.2:5070>;tag", b"<sip:caller;tag"))
    with pytest.raises(SipError, match="unclosed <"):
        message.tag("from")


def test_a_longer_datagram_is_cut_at_content_length_and_lf_only_is_read() -> None:
    message = parse(INVITE + b"garbage")
    assert message.body == b"v=0\n"
    lf_only = parse(INVITE.replace(b"\r\n", b"\n"))
    assert lf_only.call_id == "1-2@127.0.0.2"


# --- properties -----------------------------------------------------------------------------

_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("äé€"),
    max_size=40,
).map(str.strip)
_names = st.sampled_from(["Subject", "s", "Contact", "m", "Supported", "X-Custom", "User-Agent"])


@settings(max_examples=200, deadline=None)
@given(
    method=_token,
    user=_token,
    extra=st.lists(st.tuples(_names | _token.map(lambda t: "X-" + t), _value), max_size=8),
    body=st.binary(max_size=200),
    number=st.integers(0, 2**31 - 1),
)
def test_round_trip(
    method: str, user: str, extra: list[tuple[str, str]], body: bytes, number: int
) -> None:
    request = Request(method=method, uri=f"sip:{user}@127.0.0.1", body=body)
    request.add("Via", f"SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{user}")
    request.add("From", f"<sip:{user}@a>;tag=1")
    request.add("To", "<sip:b@c>")
    request.add("Call-ID", user)
    request.add("CSeq", f"{number} {method}")
    for name, value in extra:
        request.add(name, value)
    again = parse(request.serialise())
    assert isinstance(again, Request)
    assert (again.method, again.uri, again.body, again.cseq) == (
        method,
        request.uri,
        body,
        (number, method),
    )
    assert again.headers[: len(request.headers)] == request.headers
    assert parse(again.serialise()) == again


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_sip_error(data: bytes) -> None:
    try:
        parse(data)
    except SipError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(INVITE) - 1), st.integers(0, 255))
def test_a_damaged_invite_parses_or_raises_sip_error(position: int, byte: int) -> None:
    data = INVITE[:position] + bytes([byte]) + INVITE[position + 1 :]
    try:
        message = parse(data)
        message.tag("from"), message.branch, message.cseq  # noqa: B018
    except SipError:
        pass
