"""Flask CLI: db housekeeping, routing explanations, signed test requests."""

from __future__ import annotations

import shlex

from tests.support.config import ALL_CANARIES, BASE_URL, TOKEN


def test_voice_explain_shows_rule_agents_and_fallback_without_passwords(runner) -> None:
    result = runner.invoke(
        args=[
            "voice",
            "explain",
            "From=sip:frontdesk@203.0.113.10",
            "SIPAuthType=ip_acl_and_credential",
            "SIPAuthUser=frontdesk",
            "SIPSourceIP=203.0.113.10",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] == ["rule:   pbx-both", "reason: rule pbx-both", "action: dial:support"]
    assert "dial 0: alice" in result.output and "(digest user alice)" in result.output
    assert "dial 1: bob" in result.output
    assert lines[-1].strip() == "then:   fallback voicemail"
    for secret in ALL_CANARIES:
        assert secret not in result.output


def test_voice_explain_names_the_auth_not_running_case(runner) -> None:
    result = runner.invoke(args=["voice", "explain", "From=sip:someone@198.51.100.1"])
    assert result.exit_code == 0
    assert "rule:   unauthenticated-sip" in result.output
    assert "sip:{app_id}@app.plivo.com" in result.output
    assert "action: reject" in result.output


def test_voice_explain_refuses_malformed_fields(runner) -> None:
    result = runner.invoke(args=["voice", "explain", "no-equals-sign"])
    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.output


def test_sign_request_prints_a_curl_that_the_app_accepts(runner, client) -> None:
    result = runner.invoke(args=["sign-request", "/hangup", "CallUUID=cli-1", "Duration=3"])
    assert result.exit_code == 0, result.output
    words = shlex.split(result.output.replace("\\\n", " "))
    assert words[:3] == ["curl", "-sS", f"{BASE_URL}/hangup"]
    headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
    data = dict(
        words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--data-urlencode"
    )
    assert data == {"CallUUID": "cli-1", "Duration": "3"}
    assert TOKEN not in result.output
    assert client.post("/hangup", data=data, headers=headers).status_code == 200


def test_db_commands(runner) -> None:
    assert runner.invoke(args=["db", "upgrade"]).output == "database schema is up to date\n"
    assert runner.invoke(args=["db", "purge-nonces"]).output == "purged 0 expired nonce(s)\n"
