"""Malformed requests get a clear 4xx, never a 5xx, signed or not."""

from __future__ import annotations

import uuid

import pytest

from sipguard.calls import signature
from sipguard.calls.forms import whole_number
from tests.support.config import BASE_URL, TOKEN
from tests.support.queries import stored_hangup
from tests.support.signing import SignedPost, inbound

FORM = "application/x-www-form-urlencoded"

RAW_BODIES = [
    (b"CallUUID=%ZZ&From=%", FORM),
    (b"CallUUID=\xff\xfe&From=\xc3\x28", FORM),
    (b'{"CallUUID": "json-body"}', "application/json"),
    (b"<xml/>", "text/xml"),
    (b"--x\r\nContent-Disposition: form-data; name=CallUUID\r\n\r\nabc\r\n--x--", "multipart/x"),
    (b"\x00\x01\x02", "application/octet-stream"),
    (b"", FORM),
]


def _signed_raw(path: str, body: bytes, content_type: str) -> dict[str, str]:
    """Sign a raw body the way the app will read it (werkzeug's form parse)."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    request = Request(
        EnvironBuilder(path=path, method="POST", data=body, content_type=content_type).get_environ()
    )
    params = request.form.to_dict(flat=False)
    nonce = uuid.uuid4().hex
    return signature.signed_headers(TOKEN, "POST", BASE_URL + path, params, nonce)


@pytest.mark.parametrize("path", ["/answer", "/hangup", "/dial-action?group=support&attempt=0"])
@pytest.mark.parametrize(("body", "content_type"), RAW_BODIES)
def test_malformed_bodies_get_a_4xx(client, path: str, body: bytes, content_type: str) -> None:
    unsigned = client.post(path, data=body, content_type=content_type)
    assert 400 <= unsigned.status_code < 500
    signed = client.post(
        path, data=body, content_type=content_type, headers=_signed_raw(path, body, content_type)
    )
    assert 400 <= signed.status_code < 500, signed.data
    assert signed.is_json and signed.get_json()["error"]


def test_body_over_the_limit_is_413(client) -> None:
    response = client.post("/hangup", data={"CallUUID": "x", "Pad": "y" * 70_000})
    assert response.status_code == 413
    assert "error" in response.get_json()


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/answer"), ("DELETE", "/hangup"), ("GET", "/dial-action"), ("PATCH", "/healthz")],
)
def test_wrong_methods_are_405(client, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.get_json() == {"error": "The method is not allowed for the requested URL."}
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed and method not in allowed
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_wrong_method_on_the_api_is_405_with_allow_and_no_store(client) -> None:
    response = client.delete("/api/v1/groups")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.headers["Cache-Control"] == "no-store"


def test_unknown_path_is_404_json(client) -> None:
    response = client.post("/nope")
    assert response.status_code == 404
    assert "error" in response.get_json()


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/answer", "From"),
        ("/answer", "To"),
        ("/answer", "SIPAuthUser"),
        ("/answer", "SIPSourceIP"),
        ("/hangup", "HangupCauseName"),
        ("/dial-action?group=support&attempt=0", "DialHangupCause"),
    ],
)
def test_overlong_field_is_a_400_naming_it(signed_post: SignedPost, path: str, field: str) -> None:
    form = inbound(SIPAuthType="ip_acl", **{field: "9" * 1025})
    response = signed_post(path, form)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(f"{field}: ")


@pytest.mark.parametrize(
    "value",
    ["<Hangup/>", "</Response><Dial>", "\x1b[31m\x07", "😀" * 200, "' OR 1=1 --", "a" * 1024],
)
def test_hostile_values_never_break_the_xml(signed_post: SignedPost, value: str) -> None:
    form = inbound(SIPAuthType="ip_acl", From=value, To=value, SIPAuthUser=value)
    response = signed_post("/answer", form)
    assert response.status_code == 200
    assert response.data.count(b"<Redirect") == 1
    assert b"<Hangup" not in response.data and b"<Dial" not in response.data


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"CallUUID=%ZZ", FORM, 400, "body: has broken percent-encoding"),
        (b"CallUUID=abc&From=%", FORM, 400, "body: has broken percent-encoding"),
        (b"CallUUID=%FF%FE", FORM, 400, "body: is not valid UTF-8"),
        (b"CallUUID=\xc3\x28", FORM, 400, "body: is not valid UTF-8"),
        (b'{"CallUUID": "x"}', "application/json", 415, f"callbacks must be {FORM}"),
    ],
)
def test_malformed_body_messages_say_what_is_wrong(
    client, body: bytes, content_type: str, status: int, message: str
) -> None:
    response = client.post(
        "/hangup",
        data=body,
        content_type=content_type,
        headers=_signed_raw("/hangup", body, content_type),
    )
    assert response.status_code == status
    assert response.get_json() == {"error": message}


def test_well_formed_unicode_is_accepted(signed_post: SignedPost, app) -> None:
    response = signed_post("/hangup", inbound(CallUUID="uni-1", HangupCauseName="Zürich ☎"))
    assert response.status_code == 200
    row = stored_hangup(app.extensions["sipguard"].store, "uni-1")
    assert row is not None
    assert row["hangup_cause_name"] == "Zürich ☎"


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("0", 0),
        ("4210", 4210),
        ("2147483647", 2147483647),
        ("2147483648", None),  # past the store's INTEGER
        ("9" * 20, None),
        ("²", None),  # str.isdigit() says yes; int() says no
        ("①", None),
        ("٤٢١٠", None),  # Arabic-Indic digits: int() reads them, Plivo never sends them
        (" 1", None),
        ("-1", None),
        ("", None),
        (None, None),
    ],
)
def test_whole_number_reads_only_ascii_digits_that_fit(
    text: str | None, number: int | None
) -> None:
    assert whole_number(text) == number


@pytest.mark.parametrize("route", ["/answer", "/hangup"])
def test_a_nul_character_is_a_400_naming_the_field(signed_post: SignedPost, route: str) -> None:
    response = signed_post(route, inbound(From="sip:a\x00b@203.0.113.10"))
    assert response.status_code == 400
    assert response.get_json() == {"error": "From: contains a NUL character"}
