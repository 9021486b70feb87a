"""Every webhook route refuses what Plivo did not sign, and refuses replays."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.routing import Rule

from app import create_app
from sipguard.calls import signature
from tests.support.config import BASE_URL, CANARIES, DATA, MAIN_TOKEN, OLD_TOKEN, SECRET_KEY, TOKEN
from tests.support.signing import SignedPost, inbound, make_signed_post
from tests.support.signing_v2 import sign_v2

# Not Plivo's routes: /healthz is public; the operator routes have their own guard (admin login,
# bearer token) and must NOT accept a Plivo signature instead (tests/web/test_monitor.py); the
# AI's /api/v1 routes need an API key (tests/web/test_api_auth.py).
UNSIGNED_ENDPOINTS = {
    "health.healthz",
    "monitor.metrics_endpoint",
    "monitor.login",
    "monitor.logout",
    "monitor.page",
}
API_PREFIX = "api."


def _collection_app() -> Flask:
    """An app built at collection time, only to enumerate its URL map."""
    return create_app(
        {
            "PLIVO_AUTH_TOKEN": TOKEN,
            "SECRET_KEY": SECRET_KEY,
            "PUBLIC_BASE_URL": BASE_URL,
            "VOICE_CONFIG": str(DATA / "voice.toml"),
            "DATABASE_URL": "sqlite://",
            "AUTO_MIGRATE": "0",
            **CANARIES,
        }
    )


def _route_cases() -> list[tuple[str, str, str]]:
    rules: list[Rule] = list(_collection_app().url_map.iter_rules())
    cases = []
    for rule in rules:
        if rule.endpoint in UNSIGNED_ENDPOINTS or rule.endpoint.startswith(API_PREFIX):
            continue
        path = rule.build({"group": "support", "handoff_id": "ho_x"}, append_unknown=False)
        assert path is not None
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            cases.append((rule.endpoint, method, path[1]))
    return cases


ROUTE_CASES = _route_cases()


def test_route_table_is_what_we_expect() -> None:
    """If a route is added, this list (and so the unsigned-request test) grows with it."""
    assert {endpoint for endpoint, _, _ in ROUTE_CASES} == {
        "webhooks.answer",
        "webhooks.handoff",
        "webhooks.dial_action",
        "webhooks.dial_event",
        "webhooks.whisper",
        "webhooks.hangup",
    }


@pytest.mark.parametrize(("endpoint", "method", "path"), ROUTE_CASES)
def test_every_webhook_route_refuses_an_unsigned_request(
    client, endpoint: str, method: str, path: str
) -> None:
    response = client.open(path, method=method, data=inbound())
    # /answer answers 405 to GET unless configured; everything else must be refused as unsigned.
    if (endpoint, method) == ("webhooks.answer", "GET"):
        assert response.status_code == 405
        return
    assert response.status_code == 403
    assert response.get_json() == {"error": "no Plivo signature header"}


# GET /answer is not among the test config's answer methods (it answers 405, tested above).
SIGNED_CASES = [case for case in ROUTE_CASES if case[:2] != ("webhooks.answer", "GET")]


@pytest.mark.parametrize(("endpoint", "method", "path"), SIGNED_CASES)
def test_every_webhook_route_refuses_a_signature_from_another_token(
    signed_post: SignedPost, endpoint: str, method: str, path: str
) -> None:
    response = signed_post(path, inbound(), method=method, token="someone-elses-token")
    assert response.status_code == 403
    assert response.get_json() == {"error": "V3 signature does not match"}


def test_healthz_is_the_only_unsigned_route(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_signed_request_is_accepted(signed_post: SignedPost) -> None:
    response = signed_post("/answer", inbound(SIPAuthType="ip_acl"))
    assert response.status_code == 200
    assert response.mimetype == "application/xml"


@pytest.mark.parametrize(
    "forgery",
    [
        {"url": "http://voice.example.test/answer"},
        {"url": "https://voice.example.test:8443/answer"},
        {"url": "https://attacker.example/answer"},
        {"url": BASE_URL + "/answer?x=1"},
        {"nonce": "a-different-nonce", "headers": {"X-Plivo-Signature-V3-Nonce": "other"}},
        {"token": OLD_TOKEN},
        {"signature_value": "AAAA" + "A" * 40},
    ],
    ids=["scheme", "port", "host", "query", "nonce", "old-token-not-configured", "garbage"],
)
def test_forgeries_are_refused(signed_post: SignedPost, forgery: dict) -> None:
    response = signed_post("/answer", inbound(SIPAuthType="ip_acl"), **forgery)
    assert response.status_code == 403


def test_altered_form_value_is_refused(client) -> None:
    form = inbound(SIPAuthType="ip_acl")
    nonce = uuid.uuid4().hex
    params = {k: [v] for k, v in form.items()}
    headers = signature.signed_headers(TOKEN, "POST", BASE_URL + "/answer", params, nonce)
    tampered = {**form, "SIPAuthType": "ip_acl_and_credential"}
    assert client.post("/answer", data=tampered, headers=headers).status_code == 403
    assert client.post("/answer", data=form, headers=headers).status_code == 200


def test_signed_url_comes_from_public_base_url_not_the_host_header(
    signed_post: SignedPost,
) -> None:
    """A proxy or tunnel in front changes Host; the signed URL is still PUBLIC_BASE_URL's."""
    response = signed_post(
        "/answer", inbound(SIPAuthType="ip_acl"), headers={"Host": "internal-lb:8080"}
    )
    assert response.status_code == 200
    forged = signed_post(
        "/answer",
        inbound(SIPAuthType="ip_acl"),
        url="http://internal-lb:8080/answer",
        headers={"Host": "internal-lb:8080"},
    )
    assert forged.status_code == 403


def test_path_params_are_part_of_the_signed_url(signed_post: SignedPost) -> None:
    """The edge signs the path as received: /handoff/support's signature does not cover
    /handoff/support;v=1, and a signature over the full path gets past the check."""
    form = inbound()
    borrowed = signed_post("/handoff/support;v=1", form, url=BASE_URL + "/handoff/support")
    assert borrowed.status_code == 403
    assert borrowed.get_json() == {"error": "V3 signature does not match"}
    own = signed_post("/handoff/support;v=1", form)
    assert own.status_code == 404  # signed, then: no agent group named "support;v=1"
    assert "support;v=1" in own.get_json()["error"]


def test_main_account_signature_alone_is_accepted(client) -> None:
    form = inbound(SIPAuthType="ip_acl")
    params = {k: [v] for k, v in form.items()}
    headers = signature.signed_headers(
        "not-the-account-token", "POST", BASE_URL + "/answer", params, "n-ma", MAIN_TOKEN
    )
    del headers[signature.V3_HEADER]
    assert client.post("/answer", data=form, headers=headers).status_code == 200


def test_rotation_accepts_both_tokens(app_config: dict[str, str]) -> None:
    app = create_app({**app_config, "PLIVO_AUTH_TOKEN": f"{TOKEN},{OLD_TOKEN}"})
    post = make_signed_post(app.test_client())
    assert post("/answer", inbound(SIPAuthType="ip_acl"), token=TOKEN).status_code == 200
    assert post("/answer", inbound(SIPAuthType="ip_acl"), token=OLD_TOKEN).status_code == 200
    assert post("/answer", inbound(SIPAuthType="ip_acl"), token="third").status_code == 403


def test_v2_is_refused_unless_enabled(client, app_config: dict[str, str]) -> None:
    nonce = "v2-nonce-1"
    headers = {
        signature.V2_HEADER: sign_v2(TOKEN, BASE_URL + "/answer", nonce),
        signature.V2_NONCE_HEADER: nonce,
    }
    form = inbound(SIPAuthType="ip_acl")
    refused = client.post("/answer", data=form, headers=headers)
    assert refused.status_code == 403
    assert "V2" in refused.get_json()["error"]
    enabled = create_app({**app_config, "PLIVO_ACCEPT_V2": "1"}).test_client()
    assert enabled.post("/answer", data=form, headers=headers).status_code == 200


def test_replayed_nonce_is_refused(signed_post: SignedPost) -> None:
    form = inbound(SIPAuthType="ip_acl")
    assert signed_post("/answer", form, nonce="nonce-1").status_code == 200
    replay = signed_post("/answer", form, nonce="nonce-1")
    assert replay.status_code == 403
    assert replay.get_json() == {"error": "replayed"}


def test_replay_is_refused_across_routes(signed_post: SignedPost) -> None:
    assert signed_post("/hangup", inbound(), nonce="shared").status_code == 200
    assert signed_post("/answer", inbound(SIPAuthType="ip_acl"), nonce="shared").status_code == 403


def test_forged_request_does_not_burn_the_nonce(signed_post: SignedPost) -> None:
    """A forger who saw a nonce cannot spend it before Plivo's genuine request arrives."""
    form = inbound(SIPAuthType="ip_acl")
    assert signed_post("/answer", form, nonce="n-x", token="forger").status_code == 403
    assert signed_post("/answer", form, nonce="n-x").status_code == 200


@pytest.mark.postgres
def test_replay_is_refused_when_two_instances_share_postgres(
    app_config: dict[str, str], postgres_url: str
) -> None:
    config = {**app_config, "DATABASE_URL": postgres_url}
    first = make_signed_post(create_app(config).test_client())
    second = make_signed_post(create_app(config).test_client())
    form = inbound(SIPAuthType="ip_acl")
    statuses = sorted(
        [
            first("/answer", form, nonce="pg-nonce").status_code,
            second("/answer", form, nonce="pg-nonce").status_code,
        ]
    )
    assert statuses == [200, 403]


def test_get_answer_when_configured(tmp_path: Path, app_config: dict[str, str]) -> None:
    config_text = (DATA / "voice.toml").read_text().replace('methods = ["POST"]', 'methods = "GET"')
    (tmp_path / "voice.toml").write_text(config_text)
    (tmp_path / "carol.pw").write_text((DATA / "carol.pw").read_text())
    app = create_app({**app_config, "VOICE_CONFIG": str(tmp_path / "voice.toml")})
    post = make_signed_post(app.test_client())
    response = post("/answer", inbound(SIPAuthType="ip_acl"), method="GET")
    assert response.status_code == 200
    assert b"<Redirect" in response.data
    assert post("/answer", inbound(SIPAuthType="ip_acl")).status_code == 405


def test_forwarded_headers_rebuild_the_url_only_behind_trusted_proxies(
    app_config: dict[str, str],
) -> None:
    config = {k: v for k, v in app_config.items() if k != "PUBLIC_BASE_URL"}
    app = create_app({**config, "TRUSTED_PROXY_COUNT": "1"})
    post = make_signed_post(app.test_client())
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "calls.example.test"}
    form = inbound(SIPAuthType="ip_acl_and_credential", SIPAuthUser="frontdesk")
    form["SIPSourceIP"] = "203.0.113.9"
    ok = post("/answer", form, url="https://calls.example.test/answer", headers=forwarded)
    assert ok.status_code == 200
    assert b'action="https://calls.example.test/dial-action?' in ok.data
    wrong_host = post("/answer", form, url="https://evil.example/answer", headers=forwarded)
    assert wrong_host.status_code == 403


def test_forwarded_headers_are_ignored_without_trusted_proxies(signed_post: SignedPost) -> None:
    forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example"}
    response = signed_post(
        "/answer",
        inbound(SIPAuthType="ip_acl"),
        url="http://evil.example/answer",
        headers=forwarded,
    )
    assert response.status_code == 403


def test_refusal_is_logged_with_its_reason(signed_post: SignedPost, app_logs) -> None:
    signed_post("/hangup", inbound(), token="wrong")
    refused = [r for r in app_logs.records if "status=403" in r.getMessage()]
    assert len(refused) == 1
    assert "reason=V3 signature does not match" in refused[0].getMessage()
    assert refused[0].levelname == "WARNING"


def test_signature_check_does_not_depend_on_debug(app_config: dict[str, str]) -> None:
    app = create_app(app_config)
    app.debug = True
    app.testing = True
    response = app.test_client().post("/answer", data=inbound(SIPAuthType="ip_acl"))
    assert response.status_code == 403
