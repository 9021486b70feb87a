"""POST /handoff/<group>: the AI agent's way to hand a call to humans, guarded by a token."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from sipguard.calls.handoff import HandoffSigner
from tests.support.config import BASE_URL, CANARIES, SECRET_KEY
from tests.support.queries import stored_events
from tests.support.signing import SignedPost, inbound


def _handoff_path_from_answer(signed_post: SignedPost, call_uuid: str) -> str:
    answer = signed_post("/answer", inbound(CallUUID=call_uuid, SIPAuthType="ip_acl"))
    target = urlsplit(answer.data.decode().split("<Redirect", 1)[1].split(">", 1)[1].split("<")[0])
    handoff_url = parse_qs(target.query.replace("&amp;", "&"))["handoff_url"][0]
    assert handoff_url.startswith(BASE_URL)
    return handoff_url.removeprefix(BASE_URL)


def _token_path(group: str, token: str) -> str:
    return f"/handoff/{group}?token={token}"


def test_answer_minted_handoff_url_dials_the_group(signed_post: SignedPost, app) -> None:
    path = _handoff_path_from_answer(signed_post, "call-1")
    response = signed_post(path, inbound(CallUUID="call-1", CallStatus="in-progress"))
    assert response.status_code == 200
    assert b'sipAuthUsername="alice"' in response.data
    assert CANARIES["AGENT_ALICE_PASSWORD"].encode() in response.data
    assert b"dial-action?group=support&amp;attempt=0" in response.data
    assert response.headers["Cache-Control"] == "no-store"
    events = stored_events(app.extensions["sipguard"].store, "call-1")
    assert [e["route"] for e in events] == ["answer", "handoff"]
    assert events[1]["decision"] == "dial:support"


def test_transfer_style_token_works_too(signed_post: SignedPost, app) -> None:
    token = app.extensions["sipguard"].handoff.mint("call-2", "oncall")
    response = signed_post(_token_path("oncall", token), inbound(CallUUID="call-2"))
    assert response.status_code == 200
    assert response.data.count(b"<User") == 3


@pytest.mark.parametrize(
    ("path_group", "token_call", "token_group", "message"),
    [
        ("support", "call-3", "oncall", "handoff token is for another group"),
        ("support", "another-call", "support", "handoff token is for another call"),
    ],
)
def test_token_for_another_call_or_group_is_refused(
    signed_post: SignedPost, app, path_group, token_call, token_group, message
) -> None:
    token = app.extensions["sipguard"].handoff.mint(token_call, token_group)
    response = signed_post(_token_path(path_group, token), inbound(CallUUID="call-3"))
    assert response.status_code == 403
    assert response.get_json() == {"error": message}


def test_missing_token_is_refused(signed_post: SignedPost) -> None:
    response = signed_post("/handoff/support", inbound(CallUUID="call-4"))
    assert response.status_code == 403
    assert response.get_json() == {"error": "handoff token is missing"}


def test_tampered_token_is_refused(signed_post: SignedPost, app) -> None:
    token = app.extensions["sipguard"].handoff.mint("call-5", "support")
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    response = signed_post(_token_path("support", tampered), inbound(CallUUID="call-5"))
    assert response.status_code == 403
    assert response.get_json() == {"error": "handoff token is invalid"}


def test_token_signed_with_another_secret_is_refused(signed_post: SignedPost) -> None:
    token = HandoffSigner("another-secret-key-" + "x" * 32, 60).mint("call-6", "support")
    response = signed_post(_token_path("support", token), inbound(CallUUID="call-6"))
    assert response.get_json() == {"error": "handoff token is invalid"}


def test_expired_token_is_refused(signed_post: SignedPost, app) -> None:
    ttl = app.extensions["sipguard"].settings.handoff_ttl_seconds
    minted_long_ago = HandoffSigner(SECRET_KEY, ttl, clock=lambda: time.time() - ttl - 5)
    token = minted_long_ago.mint("call-7", "support")
    response = signed_post(_token_path("support", token), inbound(CallUUID="call-7"))
    assert response.status_code == 403
    assert response.get_json() == {"error": "handoff token has expired"}


def test_token_expiry_boundary_with_an_injected_clock() -> None:
    now = [1_000_000.0]
    signer = HandoffSigner(SECRET_KEY, 60, clock=lambda: now[0])
    token = signer.mint("c", "g")
    now[0] += 60
    signer.check(token, "c", "g")  # exactly at the TTL: still valid
    now[0] += 1
    with pytest.raises(Exception, match="expired"):
        signer.check(token, "c", "g")


def test_unknown_group_is_404(signed_post: SignedPost, app) -> None:
    token = app.extensions["sipguard"].handoff.mint("call-8", "nobody")
    response = signed_post(_token_path("nobody", token), inbound(CallUUID="call-8"))
    assert response.status_code == 404


def test_handoff_token_in_the_url_is_covered_by_the_signature(signed_post: SignedPost, app) -> None:
    """The token sits in the signed URL: swapping it after signing breaks the signature."""
    good = app.extensions["sipguard"].handoff.mint("call-9", "support")
    response = signed_post(
        _token_path("support", good),
        inbound(CallUUID="call-9"),
        url=BASE_URL + _token_path("support", "something-else"),
    )
    assert response.status_code == 403
    assert response.get_json() == {"error": "V3 signature does not match"}
