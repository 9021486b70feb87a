"""Make Call with SIP credentials, and transfer to an agent group through a handoff URL."""

from __future__ import annotations

import json
from typing import Any

import pytest
import responses
from flask import Flask

from app import create_app
from sipguard.calls.handoff import HandoffSigner
from sipguard.errors import ConfigError, PlivoAPIError, PlivoOutcomeUnknown, ValidationError
from sipguard.plivo.outbound import Calls, Outbound, destinations
from sipguard.secret import Secret
from tests.support.config import API, BASE_URL, SECRET_KEY
from tests.support.signing import SignedPost, inbound
from webhooks.context import external_url

PASSWORD = "Agent-Pw-12345"


class HandoffClock:
    """The time the handoff signer reads, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> HandoffClock:
    return HandoffClock()


@pytest.fixture
def calls(app: Flask) -> Any:
    rt = app.extensions["sipguard"]
    with app.app_context():
        yield Calls(api=rt.plivo(), url_for=external_url)


@pytest.fixture
def outbound(app: Flask, clock: HandoffClock) -> Any:
    rt = app.extensions["sipguard"]
    with app.app_context():
        yield Outbound(
            api=rt.plivo(),
            handoff=HandoffSigner(SECRET_KEY, rt.settings.handoff_ttl_seconds, clock),
            groups=rt.voice.groups,
            url_for=external_url,
        )


@pytest.fixture
def rsps() -> Any:
    with responses.RequestsMock() as mock:
        yield mock


def sent(rsps: Any) -> dict[str, Any]:
    return json.loads(rsps.calls[-1].request.body)


def fired(rsps: Any, request_uuid: Any = "req-1") -> None:
    rsps.post(
        API + "Call/",
        json={"message": "call fired", "request_uuid": request_uuid, "api_id": "a-1"},
        status=201,
    )


def test_make_call_to_a_sip_uri_with_credentials(calls: Calls, rsps) -> None:
    fired(rsps)
    request_uuid = calls.make_call(
        "+14155550100",
        "sip:agent@pbx.example.com",
        sip_auth_username="agent",
        sip_auth_password=Secret(PASSWORD),
        caller_name="Front desk",
        time_limit=600,
    )
    assert request_uuid == "req-1"
    assert sent(rsps) == {
        "from": "+14155550100",
        "to": "sip:agent@pbx.example.com",
        "answer_url": f"{BASE_URL}/answer",
        "answer_method": "POST",
        "hangup_url": f"{BASE_URL}/hangup",
        "hangup_method": "POST",
        "sip_auth_username": "agent",
        "sip_auth_password": PASSWORD,
        "caller_name": "Front desk",
        "time_limit": 600,
    }


def test_make_call_without_credentials_sends_none(calls: Calls, rsps) -> None:
    fired(rsps, ["r-1", "r-2"])
    got = calls.make_call(
        "+14155550100", "+14155550111<sips:desk@pbx.example.com", answer_url="https://ai.test/a"
    )
    assert got == ["r-1", "r-2"]
    body = sent(rsps)
    assert "sip_auth_username" not in body and "sip_auth_password" not in body
    assert body["answer_url"] == "https://ai.test/a"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": "+14155550111"}, "sip_auth_username"),
        ({"to": "14155550111"}, "sip_auth_username"),
        ({"to": "sip:a@pbx.example.com<+14155550111"}, "sip_auth_username"),
        ({"to": "tel:+14155550111"}, "to"),
        ({"to": "sip:a@pbx.example.com", "sip_auth_password": None}, "sip_auth_password"),
        (
            {
                "to": "sip:a@pbx.example.com",
                "sip_auth_username": None,
                "sip_auth_password": PASSWORD,
            },
            "sip_auth_password",
        ),
        ({"to": "sip:a@pbx.example.com", "sip_auth_password": "Short1A"}, "sip_auth_password"),
        ({"to": "sip:a@pbx.example.com", "sip_auth_password": "x" * 129}, "sip_auth_password"),
        ({"to": "sip:a@pbx.example.com", "sip_auth_username": ""}, "sip_auth_username"),
        ({"to": "sip:a@pbx.example.com", "caller_name": "n" * 51}, "caller_name"),
        ({"to": "sip:a@pbx.example.com", "answer_url": "ftp://x"}, "answer_url"),
        ({"to": "sip:a@pbx.example.com", "answer_method": "PUT"}, "answer_method"),
        ({"to": "sip:a@pbx.example.com", "time_limit": 0}, "time_limit"),
        ({"to": "sip:a@pbx.example.com", "from_": "front desk"}, "from"),
    ],
)
def test_make_call_refusals_send_nothing(calls: Calls, rsps, kwargs, field: str) -> None:
    args: dict[str, Any] = {
        "from_": "+14155550100",
        "sip_auth_username": "agent",
        "sip_auth_password": PASSWORD,
        **kwargs,
    }
    with pytest.raises(ValidationError) as caught:
        calls.make_call(**args)
    assert caught.value.field == field
    assert PASSWORD not in str(caught.value)
    assert len(rsps.calls) == 0


def test_make_call_password_limits_both_sides(calls: Calls, rsps) -> None:
    fired(rsps)
    fired(rsps)
    for password in ("p" * 8, "p" * 128):
        calls.make_call(
            "+14155550100",
            "sip:a@pbx.example.com",
            sip_auth_username="a",
            sip_auth_password=password,
        )
    assert len(rsps.calls) == 2


@pytest.mark.parametrize(
    ("to", "ok"),
    [
        ("<".join(f"+1415555{i:04}" for i in range(1000)), True),
        ("<".join(f"+1415555{i:04}" for i in range(1001)), False),
        ("+14155550100<+14155550100", False),
        ("+14155550100<", False),
    ],
)
def test_destination_count_and_uniqueness(to: str, ok: bool) -> None:
    if ok:
        assert len(destinations(to)) == 1000
    else:
        with pytest.raises(ValidationError):
            destinations(to)


def test_make_call_api_error_is_typed(calls: Calls, rsps) -> None:
    rsps.post(API + "Call/", json={"api_id": "e-1", "error": "invalid to"}, status=400)
    with pytest.raises(PlivoAPIError) as caught:
        calls.make_call("+14155550100", "sip:a@pbx.example.com")
    assert (caught.value.status, caught.value.api_id) == (400, "e-1")


@pytest.mark.parametrize(
    ("status", "answer", "api_id"),
    [
        pytest.param(201, {"message": "call fired", "api_id": "a-7"}, "a-7", id="no-request_uuid"),
        pytest.param(201, {"request_uuid": None, "api_id": "a-8"}, "a-8", id="null"),
        pytest.param(200, {"request_uuid": "", "api_id": "a-9"}, "a-9", id="empty"),
        pytest.param(201, {"request_uuid": [1, 2], "api_id": "a-6"}, "a-6", id="not-strings"),
        pytest.param(201, ["req-1"], None, id="not-an-object"),
        pytest.param(201, "<html>accepted</html>", None, id="not-json"),
    ],
)
def test_a_2xx_answer_without_request_uuid_says_the_call_may_have_been_placed(
    calls: Calls, rsps, status: int, answer: Any, api_id: str | None
) -> None:
    """Plivo took the request: the caller must not read "nothing sent" and place it again."""
    if isinstance(answer, str):
        rsps.post(API + "Call/", body=answer, status=status, content_type="text/html")
    else:
        rsps.post(API + "Call/", json=answer, status=status)
    with pytest.raises(PlivoOutcomeUnknown) as caught:
        calls.make_call("+14155550100", "sip:a@pbx.example.com")
    error = caught.value
    assert isinstance(error, PlivoAPIError) and not isinstance(error, ValidationError)
    assert (error.status, error.api_id) == (status, api_id)
    assert "the call may have been placed" in error.describe()
    assert "before retrying" in error.describe()
    assert len(rsps.calls) == 1


def test_default_urls_need_public_base_url(app_config: dict[str, str]) -> None:
    proxied = create_app({**app_config, "PUBLIC_BASE_URL": "", "TRUSTED_PROXY_COUNT": "1"})
    rt = proxied.extensions["sipguard"]
    with proxied.app_context():
        out = Calls(rt.plivo(), external_url)
        with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
            out.make_call("+14155550100", "sip:a@pbx.example.com")
    rt.store.dispose()


# -- transfer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["call transferred", "call transfered"])
def test_transfer_posts_aleg_url_and_accepts_202(outbound: Outbound, rsps, message: str) -> None:
    rsps.post(API + "Call/call-9/", json={"message": message, "api_id": "t-1"}, status=202)
    answer = outbound.transfer_to_group("call-9", "support")
    assert answer["api_id"] == "t-1"
    body = sent(rsps)
    assert (body["legs"], body["aleg_method"]) == ("aleg", "POST")
    assert body["aleg_url"].startswith(f"{BASE_URL}/handoff/support?token=")


def test_transfer_needs_no_particular_answer_body(outbound: Outbound, rsps) -> None:
    """A 2xx is Plivo accepting the transfer; its body is only shown (api_id), never relied on."""
    rsps.post(API + "Call/call-9/", body="accepted", status=202, content_type="text/plain")
    assert outbound.transfer_to_group("call-9", "support") == {}


def test_transfer_to_an_unknown_group_sends_nothing(outbound: Outbound, rsps) -> None:
    with pytest.raises(ValidationError, match="no agent group named 'sales'"):
        outbound.transfer_to_group("call-9", "sales")
    assert len(rsps.calls) == 0


def test_transfer_url_is_accepted_by_the_handoff_route_then_expires(
    app: Flask, outbound: Outbound, rsps, signed_post: SignedPost, clock: HandoffClock
) -> None:
    rsps.post(API + "Call/call-7/", json={"message": "call transferred"}, status=202)
    outbound.transfer_to_group("call-7", "support")
    path = sent(rsps)["aleg_url"].removeprefix(BASE_URL)
    rt = app.extensions["sipguard"]
    # The route checks with the app's own signer: share the test clock with it.
    object.__setattr__(
        rt, "handoff", HandoffSigner(SECRET_KEY, rt.settings.handoff_ttl_seconds, clock)
    )
    answered = signed_post(path, inbound(CallUUID="call-7", CallStatus="in-progress"))
    assert answered.status_code == 200
    assert b"<Dial" in answered.data
    other_call = signed_post(path, inbound(CallUUID="call-8", CallStatus="in-progress"))
    assert other_call.status_code == 403
    clock.now += rt.settings.handoff_ttl_seconds + 1
    expired = signed_post(path, inbound(CallUUID="call-7", CallStatus="in-progress"))
    assert expired.status_code == 403
    assert expired.get_json() == {"error": "handoff token has expired"}


def test_the_plivo_client_is_built_once_so_its_connection_is_reused(app: Flask, rsps) -> None:
    """Every Transfer goes through one client (one HTTP session, whose pool keeps the
    connection to Plivo's API open) instead of a new client per handoff."""
    rt = app.extensions["sipguard"]
    first, second = rt.plivo(), rt.plivo()
    assert first is second
    rsps.post(f"{API}Call/call-1/", json={"message": "call transferred", "api_id": "a1"})
    rsps.post(f"{API}Call/call-2/", json={"message": "call transferred", "api_id": "a2"})
    first.update("call", "call-1", {"aleg_url": "https://x.example/a"})
    second.update("call", "call-2", {"aleg_url": "https://x.example/b"})
    assert len(rsps.calls) == 2
