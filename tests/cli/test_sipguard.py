"""`sipguard`: the console script. REST commands need only the Plivo account; the others build
the app; a missing or bad setting is one line and exit 2 for every group; the sandbox comes in
through an entry point."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from click.testing import CliRunner, Result

import app as app_module
from sipguard.commands import main, rest
from sipguard.commands.context import Standalone
from sipguard.commands.plugins import GROUP, Deferred, plugins
from tests.support.config import API, AUTH_ID, BASE_URL, TOKEN

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = API + "SipAuth/Credential/"
CALLS = API + "Call/"
ACCOUNT = {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": TOKEN}
CALL = ["call", "+14155550111", "--from", "+14155550100"]
CALL_UUID = "a1b2c3d4-0000-4000-8000-000000000001"

# Every group, each with a command that needs at least one setting.
NEEDS_A_SETTING = [
    pytest.param(["sipauth", "credential", "list"], id="sipauth"),
    pytest.param(["sipauth", "setup", "--app-id", "1", "--mode", "ip_acl"], id="sipauth-setup"),
    pytest.param(CALL, id="call"),
    pytest.param(["handoff", CALL_UUID, "support"], id="handoff"),
    pytest.param(["report", "auth-failures"], id="report"),
    pytest.param(["db", "upgrade"], id="db-upgrade"),
    pytest.param(["db", "purge-events"], id="db-purge-events"),
    pytest.param(["db", "purge-nonces"], id="db-purge-nonces"),
    pytest.param(["voice", "explain", "From=sip:a@203.0.113.1"], id="voice"),
    pytest.param(["sign-request", "/answer", "CallUUID=x"], id="sign-request"),
    pytest.param(["sandbox", "calls"], id="sandbox-calls"),
    pytest.param(["sandbox", "serve"], id="sandbox-serve"),
]
APP_COMMANDS = [
    p for p in NEEDS_A_SETTING if p.id not in ("sipauth", "sipauth-setup", "call", "sandbox-calls")
]
JSON_COMMANDS = [
    p for p in NEEDS_A_SETTING if p.id in ("sipauth", "call", "handoff", "sandbox-calls")
]


def sipguard(args: list[str], environ: dict[str, str], **kwargs: Any) -> Result:
    """Run `sipguard ARGS` with exactly `environ` as its settings."""
    info = Standalone(environ)
    try:
        return CliRunner().invoke(main.cli, args, obj=info, **kwargs)
    finally:
        if info._loaded_app is not None:
            info._loaded_app.extensions["sipguard"].store.dispose()


def assert_one_line_naming_a_setting(result: Result, name: str | None = None) -> None:
    assert result.exit_code == rest.EXIT_INVALID == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    if name is None:
        assert re.search(r"\b[A-Z][A-Z_]{4,}\b", result.stderr), result.stderr
    else:
        assert name in result.stderr


# What the app logs while it is built (its start-up lines), before a command runs.
APP_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ sipguard[.\w]* .*\n", re.M)


def command_stderr(result: Result) -> str:
    """Return what the command itself wrote to stderr, the app's start-up log lines left out."""
    return APP_LOG_LINE.sub("", result.stderr)


def assert_one_error_line(result: Result, code: int, *names: str) -> None:
    """The command failed with `code` and one `error:` line naming each of `names`."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    stderr = command_stderr(result)
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in stderr, stderr


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def no_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make building the web app fail the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        pytest.fail("the web app was built")

    monkeypatch.setattr(app_module, "create_app", refuse)


# -- the commands -----------------------------------------------------------------------------


def test_help_lists_every_command_and_the_exit_codes() -> None:
    shown = sipguard(["--help"], {})
    assert shown.exit_code == 0
    commands = re.findall(r"^  ([a-z][a-z-]*)  ", shown.output, re.MULTILINE)
    assert commands == [
        "api-key",
        "call",
        "db",
        "handoff",
        "monitor",
        "report",
        "sandbox",
        "sign-request",
        "sipauth",
        "voice",
        "worker",
    ]
    for code, _ in rest.EXIT_CODES:
        assert re.search(rf"\n +{code}  \w", shown.output), code


def test_the_flask_cli_has_the_same_commands(app) -> None:
    assert set(main.cli.commands) <= set(app.cli.commands)


# -- REST commands: the Plivo account alone -----------------------------------------------------


def test_sipauth_needs_only_the_account(rsps, no_app) -> None:
    rsps.get(
        CREDENTIALS,
        json={"objects": [{"credential_uuid": "c-1", "username": "pbx", "realm": "app.plivo.com"}]},
    )
    result = sipguard(["sipauth", "credential", "list"], ACCOUNT)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["UUID", "USERNAME", "REALM", "c-1", "pbx", "app.plivo.com"]


def test_plivo_api_url_points_the_rest_commands_at_a_sandbox(rsps, no_app) -> None:
    sandbox = "http://127.0.0.1:5100"
    rsps.get(f"{sandbox}/v1/Account/{AUTH_ID}/SipAuth/Credential/", json={"objects": []})
    environ = {**ACCOUNT, "PLIVO_API_URL": sandbox, "PLIVO_API_TIMEOUT_SECONDS": "3"}
    result = sipguard(["sipauth", "credential", "list", "--json"], environ)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [] and len(rsps.calls) == 1


def test_call_defaults_to_this_apps_urls_when_public_base_url_is_set(rsps, no_app) -> None:
    rsps.post(CALLS, json={"api_id": "x", "request_uuid": "req-1"}, status=201)
    environ = {**ACCOUNT, "PUBLIC_BASE_URL": "https://voice.example.com/"}
    result = sipguard(CALL, environ)
    assert result.exit_code == 0, result.output
    sent = json.loads(rsps.calls[0].request.body)
    assert sent["answer_url"] == "https://voice.example.com/answer"
    assert sent["hangup_url"] == "https://voice.example.com/hangup"


def test_call_without_public_base_url_needs_the_urls_as_options(rsps, no_app) -> None:
    refused = sipguard(CALL, ACCOUNT)
    assert_one_line_naming_a_setting(refused, "PUBLIC_BASE_URL")
    assert "--answer-url" in refused.stderr and len(rsps.calls) == 0
    rsps.post(CALLS, json={"api_id": "x", "request_uuid": "req-1"}, status=201)
    urls = ["--answer-url", "https://ai.example.com/a", "--hangup-url", "https://ai.example.com/h"]
    placed = sipguard([*CALL, *urls], ACCOUNT)
    assert placed.exit_code == 0, placed.output
    assert placed.stdout == "call fired: request_uuid req-1\n"


def test_call_accepted_without_request_uuid_exits_6(rsps, no_app) -> None:
    rsps.post(CALLS, json={"api_id": "api-odd-2"}, status=201)
    result = sipguard(CALL, {**ACCOUNT, "PUBLIC_BASE_URL": "https://voice.example.com"})
    assert result.exit_code == rest.EXIT_UNCERTAIN, result.output
    assert "may have been placed" in result.stderr and "[api_id api-odd-2]" in result.stderr


def test_password_env_reads_the_commands_environment_dot_env_included(
    rsps, no_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sipguard` reads ./.env, so --password-env VAR finds VAR there too, not in os.environ."""
    password = "Dot-Env-Pw-4k7Z"
    (tmp_path / ".env").write_text(f"PBX_PASSWORD={password}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name, value in ACCOUNT.items():
        monkeypatch.setenv(name, value)
    rsps.get(CREDENTIALS, json={"objects": []})
    rsps.post(CREDENTIALS, json={"api_id": "x", "credential_uuid": "c-1"}, status=201)
    result = CliRunner().invoke(
        main.cli, ["sipauth", "credential", "create", "pbx", "--password-env", "PBX_PASSWORD"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(rsps.calls[-1].request.body)["password"] == password


def test_monitor_hash_password_needs_no_setting() -> None:
    result = sipguard(["monitor", "hash-password"], {}, input="correct horse battery staple\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(("scrypt:", "pbkdf2:"))


# -- a missing or bad setting: one line, exit 2, for every group -------------------------------


@pytest.mark.parametrize("args", NEEDS_A_SETTING)
def test_nothing_set_is_one_line_and_exit_2(args: list[str], rsps) -> None:
    assert_one_line_naming_a_setting(sipguard(args, {}))
    assert len(rsps.calls) == 0


@pytest.mark.parametrize("args", JSON_COMMANDS)
def test_nothing_set_in_json_mode_is_one_json_line_and_exit_2(args: list[str]) -> None:
    result = sipguard([*args, "--json"], {})
    assert result.exit_code == 2 and result.stdout == ""
    assert re.search(r"\b[A-Z][A-Z_]{4,}\b", json.loads(result.stderr)["error"])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PLIVO_API_URL", "ftp://api.example.com"),
        ("PLIVO_API_TIMEOUT_SECONDS", "soon"),
        ("PLIVO_AUTH_TOKEN_FILE", "/nonexistent/token"),
    ],
)
@pytest.mark.parametrize(
    "args", [["sipauth", "quotas"], CALL, ["sandbox", "lockouts"], ["handoff", CALL_UUID, "x"]]
)
def test_a_bad_plivo_setting_is_one_line_and_exit_2(
    app_config: dict[str, str], args: list[str], name: str, value: str, rsps
) -> None:
    environ = {**app_config, name: value}
    if name.endswith("_FILE"):
        environ.pop("PLIVO_AUTH_TOKEN")
    assert_one_line_naming_a_setting(sipguard(args, environ), name)
    assert len(rsps.calls) == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", "short"),
        ("PUBLIC_BASE_URL", "voice.example.com"),
        ("VOICE_CONFIG", "/nonexistent/voice.toml"),
        ("DATABASE_URL", "not a database url"),
        ("RETENTION_DAYS", "a month"),
    ],
)
@pytest.mark.parametrize("args", APP_COMMANDS)
def test_a_bad_app_setting_is_one_line_and_exit_2(
    app_config: dict[str, str], args: list[str], name: str, value: str
) -> None:
    assert_one_line_naming_a_setting(sipguard(args, {**app_config, name: value}), name)


# -- commands that build the app ----------------------------------------------------------------


def test_app_commands_build_the_app_from_the_environment(app_config: dict[str, str]) -> None:
    upgraded = sipguard(["db", "upgrade"], app_config)
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == "database schema is up to date\n"
    report = sipguard(["report", "auth-failures", "--json"], app_config)
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["total_failures"] == 0
    explained = sipguard(["voice", "explain", "From=sip:someone@198.51.100.1"], app_config)
    assert "rule:   unauthenticated-sip" in explained.stdout
    signed = sipguard(["sign-request", "/hangup", "CallUUID=cli-1"], app_config)
    assert signed.stdout.split()[:5] == ["curl", "\\", "-sS", "\\", f"{BASE_URL}/hangup"]


def test_handoff_uses_the_apps_settings(app_config: dict[str, str], rsps) -> None:
    rsps.post(CALLS + CALL_UUID + "/", json={"api_id": "t-1"}, status=202)
    result = sipguard(["handoff", CALL_UUID, "support", "--json"], app_config)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data.pop("id").startswith("ho_")
    assert data == {
        "call_uuid": CALL_UUID,
        "group": "support",
        "api_id": "t-1",
        "state": "transferred",
        "replayed": False,
    }
    unknown = sipguard(["handoff", CALL_UUID, "sales"], app_config)
    assert unknown.exit_code == rest.EXIT_INVALID and "no agent group named" in unknown.stderr


# -- the sandbox, through an entry point ---------------------------------------------------------


def test_the_sandbox_is_an_entry_point_loaded_when_used() -> None:
    [sandbox] = [command for command in plugins() if command.name == "sandbox"]
    assert isinstance(sandbox, Deferred)
    assert sandbox.entry_point.group == GROUP
    assert sandbox.entry_point.value == "sandbox.cli:sandbox"
    shown = sipguard(["sandbox", "--help"], {})
    assert shown.exit_code == 0 and "serve" in shown.output and "lockouts" in shown.output


def test_the_product_does_not_import_the_sandbox(app_config: dict[str, str]) -> None:
    """Building the app and the CLI leaves `sandbox` unimported; no product module names it."""
    script = (
        "import sys, json\n"
        "from app import create_app\n"
        "from sipguard.commands import main\n"
        f"app = create_app(json.loads({json.dumps(json.dumps(app_config))}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sandbox'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT / "tests",
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    product = [
        ROOT / "app.py",
        *(ROOT / "sipguard").rglob("*.py"),
        *(ROOT / "webhooks").rglob("*.py"),
    ]
    for path in product:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) sandbox\b", text, re.MULTILINE), path


def test_a_database_url_with_a_bad_port_is_one_line_and_exit_2(
    app_config: dict[str, str],
) -> None:
    """make_url raises ValueError for the port; the password in the URL is never echoed."""
    url = "postgresql://sipguard:hunter2-secret@db.example.com:notaport/sipguard"
    result = sipguard(["db", "upgrade"], {**app_config, "DATABASE_URL": url})
    assert_one_line_naming_a_setting(result, "DATABASE_URL")
    assert "hunter2-secret" not in result.stderr and "db.example.com" not in result.stderr


DATABASE_DOWN = "postgresql://sipguard:hunter2-secret@127.0.0.1:1/sipguard"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["db", "upgrade"], id="db-upgrade"),
        pytest.param(["db", "purge-nonces"], id="db-purge-nonces"),
        pytest.param(["db", "purge-events"], id="db-purge-events"),
        pytest.param(["report", "auth-failures"], id="report"),
    ],
)
def test_an_unreachable_database_is_one_line_and_exit_5(
    app_config: dict[str, str], args: list[str]
) -> None:
    result = sipguard(args, {**app_config, "DATABASE_URL": DATABASE_DOWN})
    assert_one_error_line(result, rest.EXIT_UNAVAILABLE, "OperationalError")
    assert "hunter2-secret" not in result.stderr and "127.0.0.1" not in result.stderr


@pytest.fixture
def bad_world(tmp_path: Path) -> Path:
    world = tmp_path / "world.toml"
    world.write_text('[sandbox]\nmessage_seconds = "long"\n', encoding="utf-8")
    return world


def test_a_bad_sandbox_config_is_one_line_and_exit_2(
    app_config: dict[str, str], bad_world: Path
) -> None:
    result = sipguard(["sandbox", "serve"], {**app_config, "SANDBOX_CONFIG": str(bad_world)})
    assert_one_error_line(result, rest.EXIT_INVALID, "SANDBOX_CONFIG: sandbox.message_seconds")


@pytest.mark.parametrize("listen", ["5060", "localhost:5060", "127.0.0.1:70000"])
def test_a_bad_sip_listen_is_one_line_and_exit_2(app_config: dict[str, str], listen: str) -> None:
    result = sipguard(["sandbox", "serve", "--sip-listen", listen], app_config)
    assert_one_error_line(result, rest.EXIT_INVALID, "--sip-listen")


def test_a_sip_port_in_use_is_one_line_and_exit_2(app_config: dict[str, str]) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        environ = {**app_config, "SANDBOX_ALICE_PBX_PASSWORD": "Alice-Pbx-Pw-42"}
        result = sipguard(["sandbox", "serve", "--port", "0", "--sip-listen", listen], environ)
    finally:
        taken.close()
    assert_one_error_line(result, rest.EXIT_INVALID, f"--sip-listen {listen}")


def test_a_bad_config_option_names_the_option_not_the_setting(
    app_config: dict[str, str], bad_world: Path
) -> None:
    result = sipguard(["sandbox", "serve", "--config", str(bad_world)], app_config)
    assert_one_error_line(result, rest.EXIT_INVALID, "--config: sandbox.message_seconds")
    assert "SANDBOX_CONFIG" not in result.stderr
