"""Flask CLI: db housekeeping, routing explanations, signed test requests."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime

import pytest

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
    assert lines[lines.index("") - 1].strip() == "then:   fallback voicemail"
    for secret in ALL_CANARIES:
        assert secret not in result.output


def test_voice_explain_names_the_auth_not_running_case(runner) -> None:
    result = runner.invoke(args=["voice", "explain", "From=sip:someone@198.51.100.1"])
    assert result.exit_code == 0
    assert "rule:   unauthenticated-sip" in result.output
    assert "sip:{app_id}@app.plivo.com" in result.output
    assert "action: reject" in result.output


DAY_DESK = ["voice", "explain", "SIPAuthType=credential", "SIPAuthUser=day"]


def test_voice_explain_at_a_closed_time_says_what_plays_and_when_it_opens(runner) -> None:
    result = runner.invoke(args=[*DAY_DESK, "--at", "2026-12-05T09:00-05:00"])  # Saturday
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[3:6] == [
        "group:  daytime (simultaneous, 20 s per dial)",
        "  now:    closed until Mon 2026-12-07 09:00 EST (2026-12-07T14:00:00Z)",
        "  closed: voicemail instead of ringing; when open:",
    ]
    groups = lines[lines.index("groups at 2026-12-05T14:00:00Z") + 1 :]
    assert groups == [
        "  support  always open (no hours)",
        "  oncall   always open (no hours)",
        "  solo     always open (no hours)",
        "  daytime  closed until Mon 2026-12-07 09:00 EST (2026-12-07T14:00:00Z)",
        "           hours America/New_York: mon-fri 09:00-17:30, fri 22:00-02:00;"
        " closed 2026-12-25",
        "  weekend  open until Sat 2026-12-05 16:00 GMT (2026-12-05T16:00:00Z)",
        "           hours Europe/London: sat,sun 10:00-16:00",
    ]


def test_voice_explain_at_an_open_time_and_in_utc_without_an_offset(runner) -> None:
    result = runner.invoke(args=[*DAY_DESK, "--at", "2026-12-04T14:00"])  # Friday 09:00 EST
    assert result.exit_code == 0, result.output
    assert "  now:    open until Fri 2026-12-04 17:30 EST (2026-12-04T22:30:00Z)" in result.output
    assert "closed:" not in result.output
    assert "groups at 2026-12-04T14:00:00Z" in result.output


def test_voice_explain_refuses_a_bad_time(runner) -> None:
    result = runner.invoke(args=[*DAY_DESK, "--at", "saturday 9am"])
    assert result.exit_code == 2
    assert "is not an ISO 8601 time" in result.output


@pytest.mark.parametrize("moment", ["0001-01-01T00:00", "9999-12-31T23:00", "3000-01-01"])
def test_voice_explain_refuses_a_time_past_the_years_it_reads(runner, moment: str) -> None:
    """Near datetime's limits a week's search would overflow: a clear refusal, no traceback."""
    result = runner.invoke(args=[*DAY_DESK, "--at", moment])
    assert result.exit_code == 2
    assert "must be in the years 1970-2999" in result.output


def test_voice_explain_reads_the_app_clock_without_at(runner, set_clock) -> None:
    set_clock(datetime(2026, 11, 1, 5, 30, tzinfo=UTC))  # Sunday 01:30 EDT
    result = runner.invoke(args=DAY_DESK)
    assert result.exit_code == 0, result.output
    assert "groups at 2026-11-01T05:30:00Z" in result.output
    assert "closed until Mon 2026-11-02 09:00 EST (2026-11-02T14:00:00Z)" in result.output


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
