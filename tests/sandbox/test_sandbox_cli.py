"""The sandbox commands on a served sandbox: timelines, calls, hang-ups, lockouts, the clock."""

from __future__ import annotations

import json

from tests.support.config import ALL_CANARIES
from tests.support.sandbox import CALLER_PASSWORD, URI

BAD = "Wrong-Passw0rd-77"


def _invoke(live, *args: str, **env: str):
    return live.app.test_cli_runner().invoke(args=["sandbox", *args], env=env)


def test_call_then_timeline_calls_and_hangup(live) -> None:
    """A call parked at the AI shows up in `calls`, `timeline --json`, and ends with `hangup`."""
    live.protect("credential", username="ops-caller")
    placed = _invoke(
        live, "call", "--from-ip", "198.51.100.9", "--request-uri", URI,
        "--username", "ops-caller", "--password-env", "PW", "--json", PW=CALLER_PASSWORD,
    )  # fmt: skip
    assert placed.exit_code == 0, placed.output
    answer = json.loads(placed.output)
    uuid = answer["call_uuid"]
    assert answer["challenged"] is True and answer["call"]["state"] == "parked"

    listed = _invoke(live, "calls")
    assert listed.exit_code == 0 and uuid in listed.output and "parked" in listed.output

    shown = _invoke(live, "timeline", uuid, "--json")
    events = json.loads(shown.output)["events"]
    assert [e["kind"] for e in events][:3] == ["invite", "auth", "callback"]

    ended = _invoke(live, "hangup", uuid)
    assert ended.exit_code == 0 and "Normal Hangup 4000, CallStatus completed" in ended.output
    again = _invoke(live, "hangup", uuid, "--json")
    assert again.exit_code == 3 and json.loads(again.stderr)["status"] == 404
    for output in (placed.output, listed.output, shown.output, ended.output):
        assert CALLER_PASSWORD not in output
        assert not any(canary in output for canary in ALL_CANARIES)


def test_lockouts_and_clock(live) -> None:
    """`lockouts` lists an IP after 10 failures; `clock --advance 60` lifts it (the lockout
    lasts 60 s: docs/plivo.md, SIP authentication)."""
    live.protect("credential", username="ops-caller")
    assert "no source IP is locked out" in _invoke(live, "lockouts").output
    for _ in range(10):
        refused = _invoke(
            live, "call", "--from-ip", "203.0.113.66", "--request-uri", URI,
            "--username", "ops-caller", "--password-env", "PW", PW=BAD,
        )  # fmt: skip
        assert refused.exit_code == 3
    locked = json.loads(_invoke(live, "lockouts", "--json").output)
    assert [lock["ip"] for lock in locked] == ["203.0.113.66"]
    moved = _invoke(live, "clock", "--advance", "60")
    assert moved.exit_code == 0 and moved.output.strip().startswith("2026-11-29T12:01:00")
    assert json.loads(_invoke(live, "lockouts", "--json").output) == []


def test_commands_refuse_a_plivo_api_url_that_is_not_local(app) -> None:
    """The control commands only talk to a local sandbox, never to api.plivo.com."""
    done = app.test_cli_runner().invoke(args=["sandbox", "calls"])
    assert done.exit_code == 2  # a bad setting, like every command's
    assert "not a local sandbox" in done.output


def test_an_app_without_plivo_auth_id_is_one_line_and_exit_2(app_config) -> None:
    """The app starts without PLIVO_AUTH_ID, so the Flask CLI reaches the sandbox's own check."""
    from app import create_app

    environ = {k: v for k, v in app_config.items() if k != "PLIVO_AUTH_ID"}
    application = create_app({**environ, "PLIVO_API_URL": "http://127.0.0.1:5100"})
    done = application.test_cli_runner().invoke(args=["sandbox", "calls"])
    assert done.exit_code == 2 and done.stderr.count("\n") == 1
    assert "PLIVO_AUTH_ID is not set" in done.stderr
    application.extensions["sipguard"].store.dispose()


def test_unreachable_sandbox_exits_5(app_config) -> None:
    """Nothing listening at PLIVO_API_URL: exit 5 (unreachable), as the REST commands do."""
    from app import create_app
    from devtools.harness import free_port

    application = create_app({**app_config, "PLIVO_API_URL": f"http://127.0.0.1:{free_port()}"})
    done = application.test_cli_runner().invoke(args=["sandbox", "lockouts"])
    assert done.exit_code == 5
    assert "unreachable" in done.output
    application.extensions["sipguard"].store.dispose()
