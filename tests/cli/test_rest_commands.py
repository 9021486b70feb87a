"""The REST commands (sipauth, call, handoff): tables or JSON, exit codes for scripts,
passwords kept off argv."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from app import create_app
from sipguard.commands import rest
from sipguard.plivo.api import PAGE_SIZE, RESOURCES
from tests.support.config import API, BASE_URL
from tests.support.signing import SignedPost, inbound

CREDENTIALS = API + "SipAuth/Credential/"
ACLS = API + "SipAuth/IpAccessControlList/"
CALLS = API + "Call/"
APPLICATIONS = API + "Application/"
PASSWORD = "Cli-Secret-Pw-7x9Q"  # meets Plivo's rules; must reach Plivo and nowhere else
CALL_UUID = "a1b2c3d4-0000-4000-8000-000000000001"
ENTRY = RESOURCES["entry"].fields  # our field names -> Plivo's


def entries_url(acl_uuid: str) -> str:
    return f"{ACLS}{acl_uuid}/Entry/"


def credential(uuid: str, username: str) -> dict[str, Any]:
    """A credential as Plivo returns it."""
    return {
        "credential_uuid": uuid,
        "username": username,
        "realm": "app.plivo.com",
        "resource_uri": f"/v1/Account/x/SipAuth/Credential/{uuid}/",
    }


def ip_acl(uuid: str, name: str) -> dict[str, Any]:
    """An IP ACL as Plivo returns it."""
    return {"ip_acl_uuid": uuid, "name": name}


def wire_entry(uuid: str, ip: str, prefix: int, description: str | None = None) -> dict[str, Any]:
    """An IP ACL entry as Plivo returns it, named per the RESOURCES table."""
    found = {"entry_uuid": uuid, ENTRY["ip"]: ip, ENTRY["prefix"]: prefix}
    if description is not None:
        found[ENTRY["description"]] = description
    return found


def register_list(rsps: responses.RequestsMock, url: str, objects: list[dict[str, Any]]) -> None:
    """Answer a list GET the way Plivo does: pages of PAGE_SIZE, with meta."""
    chunks = [objects[i : i + PAGE_SIZE] for i in range(0, len(objects), PAGE_SIZE)] or [[]]
    for number, chunk in enumerate(chunks):
        offset = number * PAGE_SIZE
        more = number + 1 < len(chunks)
        meta = {
            "limit": PAGE_SIZE,
            "offset": offset,
            "total_count": len(objects),
            "next": f"{url}?limit={PAGE_SIZE}&offset={offset + PAGE_SIZE}" if more else None,
        }
        rsps.get(
            url,
            json={"api_id": f"list-{number}", "meta": meta, "objects": chunk},
            match=[matchers.query_param_matcher({"limit": str(PAGE_SIZE), "offset": str(offset)})],
        )


def body(call: Any) -> dict[str, Any]:
    """The JSON body of a recorded request."""
    return dict(json.loads(call.request.body))


def requests_made(rsps: responses.RequestsMock) -> list[tuple[str, str]]:
    """(method, URL without query) of every request sent."""
    return [(str(c.request.method), str(c.request.url).split("?", 1)[0]) for c in rsps.calls]


def table(output: str) -> list[list[str]]:
    """Split a printed table into rows of cells (no cell in these tests holds a space)."""
    return [line.split() for line in output.splitlines()]


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    # Tests assert on the calls made; an unregistered call fails as a connection error.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# -- 1. tables by default, JSON with --json ------------------------------------------------------


LISTINGS = [
    pytest.param(
        ["sipauth", "credential", "list"],
        CREDENTIALS,
        [credential("c-1", "pbx-trunk"), credential("c-22", "night")],
        ["UUID", "USERNAME", "REALM"],
        [["c-1", "pbx-trunk", "app.plivo.com"], ["c-22", "night", "app.plivo.com"]],
        id="credential-list",
    ),
    pytest.param(
        ["sipauth", "acl", "list"],
        ACLS,
        [ip_acl("a-1", "office"), ip_acl("a-2", "sipguard-12345")],
        ["UUID", "NAME"],
        [["a-1", "office"], ["a-2", "sipguard-12345"]],
        id="acl-list",
    ),
    pytest.param(
        ["sipauth", "entry", "list", "a-1"],
        entries_url("a-1"),
        [wire_entry("e-1", "203.0.113.0", 24, "office"), wire_entry("e-2", "2001:db8::", 32)],
        ["UUID", "IP", "PREFIX", "DESCRIPTION"],
        [["e-1", "203.0.113.0", "24", "office"], ["e-2", "2001:db8::", "32"]],
        id="entry-list",
    ),
]


@pytest.mark.parametrize(("args", "url", "objects", "header", "rows"), LISTINGS)
def test_lists_print_a_table_with_one_row_per_object(
    runner, rsps, args, url, objects, header, rows
) -> None:
    register_list(rsps, url, objects)
    result = runner.invoke(args=args)
    assert result.exit_code == rest.EXIT_OK, result.output
    assert table(result.stdout) == [header, *rows]
    assert result.stderr == ""


@pytest.mark.parametrize(("args", "url", "objects", "header", "rows"), LISTINGS)
def test_lists_with_json_give_the_same_data(runner, rsps, args, url, objects, header, rows) -> None:
    register_list(rsps, url, objects)
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == rest.EXIT_OK, result.output
    data = json.loads(result.stdout)
    columns = [name.lower() for name in header]
    assert [[_text(item.get(c)) for c in columns] for item in data] == [
        row + [""] * (len(columns) - len(row)) for row in rows
    ]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (["sipauth", "credential", "list"], CREDENTIALS),
        (["sipauth", "acl", "list"], ACLS),
        (["sipauth", "entry", "list", "a-1"], entries_url("a-1")),
    ],
)
def test_empty_lists_say_none_or_give_an_empty_json_array(runner, rsps, args, url) -> None:
    register_list(rsps, url, [])
    assert runner.invoke(args=args).stdout == "(none)\n"
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == rest.EXIT_OK
    assert json.loads(result.stdout) == []


def test_lists_follow_plivos_pages(runner, rsps) -> None:
    many = [credential(f"c-{i}", f"user-{i:02d}") for i in range(PAGE_SIZE + 5)]
    register_list(rsps, CREDENTIALS, many)
    result = runner.invoke(args=["sipauth", "credential", "list", "--json"])
    assert result.exit_code == rest.EXIT_OK, result.output
    assert [item["uuid"] for item in json.loads(result.stdout)] == [f"c-{i}" for i in range(25)]
    assert len(rsps.calls) == 2


def test_credential_show_prints_one_row_or_json(runner, rsps) -> None:
    rsps.get(CREDENTIALS + "c-1/", json={"api_id": "x", **credential("c-1", "pbx-trunk")})
    result = runner.invoke(args=["sipauth", "credential", "show", "c-1"])
    assert result.exit_code == rest.EXIT_OK, result.output
    assert table(result.stdout) == [
        ["UUID", "USERNAME", "REALM"],
        ["c-1", "pbx-trunk", "app.plivo.com"],
    ]
    result = runner.invoke(args=["sipauth", "credential", "show", "c-1", "--json"])
    data = json.loads(result.stdout)
    assert (data["uuid"], data["username"], data["realm"]) == ("c-1", "pbx-trunk", "app.plivo.com")
    assert "password" not in data


def test_acl_show_prints_the_acl_and_its_entries(runner, rsps) -> None:
    rsps.get(ACLS + "a-1/", json={"api_id": "x", **ip_acl("a-1", "office")})
    register_list(
        rsps,
        entries_url("a-1"),
        [wire_entry("e-1", "203.0.113.0", 24, "hq"), wire_entry("e-2", "2001:db8::", 32)],
    )
    result = runner.invoke(args=["sipauth", "acl", "show", "a-1"])
    assert result.exit_code == rest.EXIT_OK, result.output
    assert table(result.stdout) == [
        ["UUID", "NAME"],
        ["a-1", "office"],
        [],
        ["UUID", "IP", "PREFIX", "DESCRIPTION"],
        ["e-1", "203.0.113.0", "24", "hq"],
        ["e-2", "2001:db8::", "32"],
    ]


def test_acl_show_json_includes_the_entries_in_our_field_names(runner, rsps) -> None:
    rsps.get(ACLS + "a-1/", json={"api_id": "x", **ip_acl("a-1", "office")})
    register_list(rsps, entries_url("a-1"), [wire_entry("e-1", "203.0.113.0", 24, "hq")])
    result = runner.invoke(args=["sipauth", "acl", "show", "a-1", "--json"])
    assert result.exit_code == rest.EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert (data["uuid"], data["name"]) == ("a-1", "office")
    [found] = data["entries"]
    assert {k: found[k] for k in ("uuid", "ip", "prefix", "description")} == {
        "uuid": "e-1",
        "ip": "203.0.113.0",
        "prefix": 24,
        "description": "hq",
    }


def test_acl_show_with_no_entries_says_none(runner, rsps) -> None:
    rsps.get(ACLS + "a-1/", json=ip_acl("a-1", "office"))
    register_list(rsps, entries_url("a-1"), [])
    result = runner.invoke(args=["sipauth", "acl", "show", "a-1"])
    assert result.stdout.splitlines()[-1] == "(none)"
    assert (
        json.loads(runner.invoke(args=["sipauth", "acl", "show", "a-1", "--json"]).stdout)[
            "entries"
        ]
        == []
    )


def _register_account(rsps: responses.RequestsMock) -> None:
    register_list(rsps, CREDENTIALS, [credential("c-1", "pbx-trunk")])
    register_list(rsps, ACLS, [ip_acl("a-1", "office"), ip_acl("a-2", "lab")])
    register_list(
        rsps, entries_url("a-1"), [wire_entry(f"e-{i}", f"192.0.2.{i}", 32) for i in range(3)]
    )
    register_list(rsps, entries_url("a-2"), [])


def test_quotas_table_counts_every_documented_quota(runner, rsps) -> None:
    _register_account(rsps)
    result = runner.invoke(args=["sipauth", "quotas"])
    assert result.exit_code == rest.EXIT_OK, result.output
    assert [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()] == [
        ["RESOURCE", "USED", "LIMIT"],
        ["credentials", "1", "200"],
        ["ip_acls", "2", "100"],
        ["entries in office", "3", "50"],
        ["entries in lab", "0", "50"],
    ]


def test_quotas_json_gives_the_same_numbers(runner, rsps) -> None:
    _register_account(rsps)
    result = runner.invoke(args=["sipauth", "quotas", "--json"])
    assert result.exit_code == rest.EXIT_OK, result.output
    assert json.loads(result.stdout) == [
        {"resource": "credentials", "used": 1, "limit": 200},
        {"resource": "ip_acls", "used": 2, "limit": 100},
        {"resource": "entries in office", "used": 3, "limit": 50},
        {"resource": "entries in lab", "used": 0, "limit": 50},
    ]


# -- 2. exit codes -------------------------------------------------------------------------------


INVALID = [
    pytest.param(
        ["sipauth", "credential", "create", "ab", "--password-stdin"],
        PASSWORD + "\n",
        "username",
        id="username-too-short",
    ),
    pytest.param(
        ["sipauth", "credential", "create", "pbx-trunk", "--password-stdin"],
        "No-Digits-In-Here\n",
        "digit",
        id="password-without-digit",
    ),
    pytest.param(
        ["sipauth", "credential", "set-password", "c-1", "--password-stdin"],
        "short1A\n",
        "12-128",
        id="set-password-too-short",
    ),
    pytest.param(
        ["sipauth", "credential", "create", "pbx-trunk"], None, "password is needed", id="no-pw"
    ),
    pytest.param(
        ["sipauth", "entry", "add", "a-1", "192.0.2.0/33"], None, "0-32", id="ipv4-prefix-33"
    ),
    pytest.param(
        ["sipauth", "entry", "add", "a-1", "2001:db8::/129"], None, "0-128", id="ipv6-prefix-129"
    ),
    pytest.param(
        ["sipauth", "entry", "add", "a-1", "pbx.example.com/32"],
        None,
        "hostnames are not supported",
        id="hostname-as-cidr",
    ),
    pytest.param(
        [
            "sipauth",
            "credential",
            "create",
            "pbx-trunk",
            "--password-stdin",
            "--password-env",
            "PW",
        ],
        PASSWORD + "\n",
        "one password source",
        id="two-password-sources",
    ),
    pytest.param(
        ["sipauth", "credential", "create", "pbx-trunk", "--password-env", "SIPGUARD_UNSET_PW"],
        None,
        "SIPGUARD_UNSET_PW is not set",
        id="unset-password-env",
    ),
    pytest.param(
        ["sipauth", "assign", "--app-id", "12345", "--mode", "credential"],
        None,
        "needs credential_uuid",
        id="assign-without-credential",
    ),
    pytest.param(
        ["sipauth", "setup", "--app-id", "12345", "--mode", "ip_acl"],
        None,
        "--allow",
        id="setup-ip-acl-without-allow",
    ),
    pytest.param(
        ["call", "+14155550199", "--from", "+14155550100", "--sip-auth-username", "agent"]
        + ["--password-stdin"],
        PASSWORD + "\n",
        "only accepted when `to` is a SIP URI",
        id="call-credentials-to-a-number",
    ),
    pytest.param(
        ["handoff", CALL_UUID, "nobody"], None, "no agent group named", id="handoff-group"
    ),
]


@pytest.mark.parametrize(("args", "stdin", "message"), INVALID)
def test_invalid_input_exits_2_and_sends_nothing(runner, rsps, args, stdin, message) -> None:
    result = runner.invoke(args=args, input=stdin)
    assert result.exit_code == rest.EXIT_INVALID, result.output
    assert len(rsps.calls) == 0
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert PASSWORD not in result.output


@pytest.mark.parametrize(("args", "stdin", "message"), INVALID)
def test_invalid_input_in_json_mode_is_a_json_error_on_stderr(
    runner, rsps, args, stdin, message
) -> None:
    result = runner.invoke(args=[*args, "--json"], input=stdin)
    assert result.exit_code == rest.EXIT_INVALID, result.output
    assert len(rsps.calls) == 0
    assert result.stdout == ""
    assert message in json.loads(result.stderr)["error"]


def test_a_handoff_to_a_closed_group_exits_2_and_transfers_nothing(runner, rsps, set_clock) -> None:
    set_clock(datetime(2026, 12, 2, 23, tzinfo=UTC))  # Wednesday 18:00 in New York
    result = runner.invoke(args=["handoff", CALL_UUID, "daytime"])
    assert result.exit_code == rest.EXIT_INVALID, result.output
    assert len(rsps.calls) == 0
    assert result.stderr == "error: group 'daytime' is closed until 2026-12-03T14:00:00Z\n"


def test_hostname_error_names_the_field(runner, rsps) -> None:
    result = runner.invoke(args=["sipauth", "entry", "add", "a-1", "pbx.example.com", "--json"])
    assert result.exit_code == rest.EXIT_INVALID
    assert json.loads(result.stderr)["field"] == "ip"


PLIVO_FAILURES = [
    pytest.param(400, {}, rest.EXIT_REFUSED, id="400"),
    pytest.param(404, {}, rest.EXIT_REFUSED, id="404"),
    pytest.param(409, {}, rest.EXIT_REFUSED, id="409"),
    pytest.param(401, {}, rest.EXIT_CREDENTIALS, id="401-wrong-credentials"),
    pytest.param(429, {"Retry-After": "30"}, rest.EXIT_RATE_LIMITED, id="429"),
    pytest.param(500, {}, rest.EXIT_UNAVAILABLE, id="500"),
    pytest.param(503, {}, rest.EXIT_UNAVAILABLE, id="503"),
]


@pytest.mark.parametrize(("status", "headers", "code"), PLIVO_FAILURES)
def test_plivo_errors_map_to_exit_codes(runner, rsps, status, headers, code) -> None:
    rsps.get(
        CREDENTIALS + "c-1/",
        json={"api_id": "api-err-1", "error": "something went wrong"},
        status=status,
        headers=headers,
    )
    result = runner.invoke(args=["sipauth", "credential", "show", "c-1"])
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: Plivo API: HTTP {status}: something went wrong")
    assert "[api_id api-err-1]" in result.stderr


@pytest.mark.parametrize(("status", "headers", "code"), PLIVO_FAILURES)
def test_plivo_errors_in_json_mode_carry_status_and_api_id(
    runner, rsps, status, headers, code
) -> None:
    rsps.get(
        CREDENTIALS + "c-1/",
        json={"api_id": "api-err-1", "error": "something went wrong"},
        status=status,
        headers=headers,
    )
    result = runner.invoke(args=["sipauth", "credential", "show", "c-1", "--json"])
    assert result.exit_code == code
    assert result.stdout == ""
    error = json.loads(result.stderr)
    assert error["error"] == "something went wrong"
    assert error["status"] == status
    assert error["api_id"] == "api-err-1"
    assert error["retry_after"] == headers.get("Retry-After")


def test_rate_limit_shows_retry_after(runner, rsps) -> None:
    rsps.post(
        ACLS,
        json={"api_id": "api-429", "error": "too many requests"},
        status=429,
        headers={"Retry-After": "30"},
    )
    register_list(rsps, ACLS, [])
    result = runner.invoke(args=["sipauth", "acl", "create", "office"])
    assert result.exit_code == rest.EXIT_RATE_LIMITED
    assert "retry after 30 s" in result.stderr


def test_connection_error_exits_5_without_the_url(runner, rsps) -> None:
    rsps.post(CALLS, body=requests.ConnectionError("boom " + API))
    result = runner.invoke(args=["call", "+14155550199", "--from", "+14155550100"])
    assert result.exit_code == rest.EXIT_UNAVAILABLE
    assert "could not reach api.plivo.com (ConnectionError)" in result.stderr
    assert API not in result.output
    result = runner.invoke(args=["call", "+14155550199", "--from", "+14155550100", "--json"])
    assert result.exit_code == rest.EXIT_UNAVAILABLE
    error = json.loads(result.stderr)
    assert error["status"] is None and error["api_id"] is None
    assert "ConnectionError" in error["error"]


@pytest.fixture
def app_without_auth_id(app_config: dict[str, str]) -> Iterator[Any]:
    application = create_app({**app_config, "PLIVO_AUTH_ID": ""})
    yield application
    application.extensions["sipguard"].store.dispose()


@pytest.mark.parametrize(
    "args",
    [
        ["sipauth", "credential", "list"],
        ["sipauth", "quotas"],
        ["call", "sip:agent@pbx.example.com", "--from", "+14155550100"],
        ["handoff", CALL_UUID, "support"],
    ],
)
def test_missing_auth_id_is_a_setting_error_exit_2(app_without_auth_id, rsps, args) -> None:
    runner = app_without_auth_id.test_cli_runner()
    result = runner.invoke(args=args)
    assert result.exit_code == rest.EXIT_INVALID == 2, result.output
    assert "PLIVO_AUTH_ID is not set" in result.stderr
    assert len(rsps.calls) == 0
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == rest.EXIT_INVALID
    assert "PLIVO_AUTH_ID" in json.loads(result.stderr)["error"]


def test_every_exit_code_is_described() -> None:
    assert [code for code, _ in rest.EXIT_CODES] == list(range(7))


@pytest.mark.parametrize("args", [["sipauth"], ["call"], ["handoff"]])
def test_exit_codes_are_listed_in_the_commands_help(runner, args) -> None:
    shown = runner.invoke(args=[*args, "--help"]).output
    for code, _ in rest.EXIT_CODES:
        assert re.search(rf"\n +{code}  \w", shown), code
    assert "the call may have been placed" in shown


# -- 3. passwords --------------------------------------------------------------------------------


def _register_credential_create(rsps: responses.RequestsMock) -> None:
    register_list(rsps, CREDENTIALS, [])
    rsps.post(
        CREDENTIALS,
        json={"api_id": "x", **credential("c-9", "pbx-trunk")},
        status=201,
    )


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        f"{record.getMessage()} {record.args!r} {record.__dict__!r}" for record in caplog.records
    )


@pytest.mark.parametrize("source", ["stdin", "env", "file"])
def test_password_reaches_plivo_but_no_output_or_log(
    runner, rsps, app_logs, monkeypatch, tmp_path: Path, source: str
) -> None:
    app_logs.set_level(logging.DEBUG)
    _register_credential_create(rsps)
    args = ["sipauth", "credential", "create", "pbx-trunk"]
    stdin = None
    if source == "stdin":
        args.append("--password-stdin")
        stdin = PASSWORD + "\n"
    elif source == "env":
        monkeypatch.setenv("SIPGUARD_TEST_PW", PASSWORD)
        args += ["--password-env", "SIPGUARD_TEST_PW"]
    else:
        path = tmp_path / "pw.txt"
        path.write_text(PASSWORD + "\nsecond line is ignored\n", encoding="utf-8")
        args += ["--password-file", str(path)]
    for as_json in ([], ["--json"]):
        result = runner.invoke(args=[*args, *as_json], input=stdin)
        assert result.exit_code == rest.EXIT_OK, result.output
        assert PASSWORD not in result.stdout and PASSWORD not in result.stderr
    posts = [c for c in rsps.calls if c.request.method == "POST"]
    assert len(posts) == 2
    for post in posts:
        assert post.request.url == CREDENTIALS
        assert body(post) == {"username": "pbx-trunk", "password": PASSWORD}
    assert PASSWORD not in app_logs.text
    assert PASSWORD not in _logged(app_logs)


def test_created_credential_is_shown_as_a_table(runner, rsps) -> None:
    _register_credential_create(rsps)
    result = runner.invoke(
        args=["sipauth", "credential", "create", "pbx-trunk", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == rest.EXIT_OK, result.output
    assert table(result.stdout) == [
        ["UUID", "USERNAME", "REALM"],
        ["c-9", "pbx-trunk", "app.plivo.com"],
    ]


def test_set_password_sends_the_new_password_and_shows_none(runner, rsps, app_logs) -> None:
    rsps.post(CREDENTIALS + "c-1/", json={"api_id": "x", "message": "changed"}, status=202)
    result = runner.invoke(
        args=["sipauth", "credential", "set-password", "c-1", "--password-stdin"],
        input=PASSWORD + "\r\n",
    )
    assert result.exit_code == rest.EXIT_OK, result.output
    assert result.stdout == "password updated for credential c-1\n"
    assert body(rsps.calls[0]) == {"password": PASSWORD}
    assert PASSWORD not in app_logs.text


def test_password_echoed_in_a_plivo_error_is_masked(runner, rsps, app_logs) -> None:
    register_list(rsps, CREDENTIALS, [])
    rsps.post(
        CREDENTIALS,
        json={"api_id": "x", "error": f"password {PASSWORD} is too weak"},
        status=400,
    )
    result = runner.invoke(
        args=["sipauth", "credential", "create", "pbx-trunk", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == rest.EXIT_REFUSED
    assert PASSWORD not in result.output
    assert "password *** is too weak" in result.stderr
    assert PASSWORD not in app_logs.text


GENERATED = re.compile(r"generated password \(shown once, store it now\): (\S+)")


def _assert_plivo_compliant(password: str) -> None:
    assert 12 <= len(password) <= 128
    assert any(c.isupper() for c in password)
    assert any(c.islower() for c in password)
    assert any(c.isdigit() for c in password)


def test_generate_shows_the_password_once_and_sends_it(runner, rsps, app_logs) -> None:
    _register_credential_create(rsps)
    result = runner.invoke(args=["sipauth", "credential", "create", "pbx-trunk", "--generate"])
    assert result.exit_code == rest.EXIT_OK, result.output
    [password] = GENERATED.findall(result.stdout)
    assert result.output.count(password) == 1
    _assert_plivo_compliant(password)
    post = rsps.calls[-1]
    assert post.request.method == "POST"
    assert body(post) == {"username": "pbx-trunk", "password": password}
    assert password not in app_logs.text


def test_generate_in_json_mode_returns_the_password_once(runner, rsps) -> None:
    _register_credential_create(rsps)
    result = runner.invoke(
        args=["sipauth", "credential", "create", "pbx-trunk", "--generate", "--json"]
    )
    assert result.exit_code == rest.EXIT_OK, result.output
    data = json.loads(result.stdout)
    password = data["generated_password"]
    assert result.output.count(password) == 1
    _assert_plivo_compliant(password)
    assert body(rsps.calls[-1])["password"] == password
    assert data["uuid"] == "c-9"


def test_generated_passwords_differ(runner, rsps) -> None:
    rsps.post(CREDENTIALS + "c-1/", json={"api_id": "x"}, status=202)
    args = ["sipauth", "credential", "set-password", "c-1", "--generate", "--json"]
    first, second = (json.loads(runner.invoke(args=args).stdout) for _ in range(2))
    assert first["generated_password"] != second["generated_password"]
    assert [body(c)["password"] for c in rsps.calls] == [
        first["generated_password"],
        second["generated_password"],
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["sipauth", "credential", "create", "pbx-trunk", "--password", PASSWORD],
        ["sipauth", "credential", "set-password", "c-1", "--password", PASSWORD],
        ["sipauth", "setup", "--app-id", "1", "--mode", "credential", "--password", PASSWORD],
        ["call", "sip:a@pbx.example.com", "--from", "+14155550100", "--password", PASSWORD],
    ],
)
def test_there_is_no_password_option_on_the_command_line(runner, rsps, args) -> None:
    result = runner.invoke(args=args)
    assert result.exit_code == 2  # click's usage error
    assert "No such option '--password'" in result.stderr
    assert PASSWORD not in result.output
    assert len(rsps.calls) == 0


# -- 4. deleting something still assigned --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (["sipauth", "credential", "delete", "c-1"], CREDENTIALS + "c-1/"),
        (["sipauth", "acl", "delete", "a-1"], ACLS + "a-1/"),
    ],
)
@pytest.mark.parametrize("status", [400, 409])
def test_deleting_something_assigned_says_to_unassign_first(
    runner, rsps, args, url, status
) -> None:
    rsps.delete(url, json={"api_id": "api-del", "error": "resource in use"}, status=status)
    result = runner.invoke(args=args)
    assert result.exit_code == rest.EXIT_REFUSED
    assert "sipauth assign" in result.stderr and "--mode none" in result.stderr
    result = runner.invoke(args=[*args, "--json"])
    error = json.loads(result.stderr)
    assert (error["status"], error["api_id"]) == (status, "api-del")
    assert "--mode none" in error["hint"]


@pytest.mark.parametrize(
    ("args", "url", "line"),
    [
        (
            ["sipauth", "credential", "delete", "c-1"],
            CREDENTIALS + "c-1/",
            "deleted credential c-1",
        ),
        (["sipauth", "acl", "delete", "a-1"], ACLS + "a-1/", "deleted IP ACL a-1"),
        (
            ["sipauth", "entry", "remove", "a-1", "e-1"],
            entries_url("a-1") + "e-1/",
            "removed entry e-1",
        ),
    ],
)
def test_deletes_answered_204_succeed(runner, rsps, args, url, line) -> None:
    rsps.delete(url, status=204)
    result = runner.invoke(args=args)
    assert result.exit_code == rest.EXIT_OK, result.output
    assert result.stdout == line + "\n"
    assert requests_made(rsps) == [("DELETE", url)]


def test_delete_of_an_unknown_uuid_gets_no_unassign_hint(runner, rsps) -> None:
    rsps.delete(CREDENTIALS + "nope/", json={"api_id": "x", "error": "not found"}, status=404)
    result = runner.invoke(args=["sipauth", "credential", "delete", "nope"])
    assert result.exit_code == rest.EXIT_REFUSED
    assert "--mode none" not in result.stderr


# -- 5. setup ------------------------------------------------------------------------------------


SETUP = [
    "sipauth",
    "setup",
    "--app-id",
    "12345",
    "--mode",
    "ip_acl_and_credential",
    "--allow",
    "203.0.113.0/24",
    "--allow",
    "2001:db8::/32",
    "--credential-user",
    "pbx-trunk",
]


def test_setup_from_nothing_creates_acl_entries_credential_and_assigns(
    runner, rsps, monkeypatch, app_logs
) -> None:
    monkeypatch.setenv("SIPGUARD_TEST_PW", PASSWORD)
    register_list(rsps, ACLS, [])
    register_list(rsps, CREDENTIALS, [])
    rsps.post(ACLS, json={"api_id": "x", **ip_acl("acl-1", "sipguard-12345")}, status=201)
    rsps.post(entries_url("acl-1"), json={"api_id": "x", "entry_uuid": "e-n"}, status=201)
    rsps.post(CREDENTIALS, json={"api_id": "x", **credential("c-1", "pbx-trunk")}, status=201)
    rsps.post(APPLICATIONS + "12345/", json={"api_id": "x", "message": "changed"}, status=202)

    result = runner.invoke(args=[*SETUP, "--password-env", "SIPGUARD_TEST_PW"])

    assert result.exit_code == rest.EXIT_OK, result.output
    assert requests_made(rsps) == [
        ("GET", ACLS),
        ("GET", CREDENTIALS),
        ("POST", ACLS),
        ("POST", entries_url("acl-1")),
        ("POST", entries_url("acl-1")),
        ("POST", CREDENTIALS),
        ("POST", APPLICATIONS + "12345/"),
    ]
    sent = [body(c) for c in rsps.calls[2:]]
    assert sent == [
        {"name": "sipguard-12345"},
        {ENTRY["ip"]: "203.0.113.0", ENTRY["prefix"]: 24},
        {ENTRY["ip"]: "2001:db8::", ENTRY["prefix"]: 32},
        {"username": "pbx-trunk", "password": PASSWORD},
        {
            "sip_auth_type": "ip_acl_and_credential",
            "ip_acl_uuid": "acl-1",
            "credential_uuid": "c-1",
        },
    ]
    assert "sip:12345@app.plivo.com" in result.stdout
    assert "sipguard-12345 (acl-1): created" in result.stdout
    assert "pbx-trunk (c-1): created" in result.stdout
    assert PASSWORD not in result.output and PASSWORD not in app_logs.text


@pytest.mark.parametrize(
    ("idless", "effect"),
    [
        ("acl", "the IP ACL may have been created"),
        ("entry", "the entry may have been added"),
        ("credential", "the credential may have been created"),
    ],
)
def test_setup_step_accepted_without_its_id_exits_6_and_stops(
    runner, rsps, monkeypatch, idless: str, effect: str
) -> None:
    """A 2xx without the new resource's id: it may exist, so say so and assign nothing."""
    monkeypatch.setenv("SIPGUARD_TEST_PW", PASSWORD)
    register_list(rsps, ACLS, [])
    register_list(rsps, CREDENTIALS, [])
    answers = {
        "acl": (ACLS, ip_acl("acl-1", "sipguard-12345")),
        "entry": (entries_url("acl-1"), {"entry_uuid": "e-n"}),
        "credential": (CREDENTIALS, credential("c-1", "pbx-trunk")),
    }
    for kind, (url, answer) in answers.items():
        if kind == idless:
            answer = {key: value for key, value in answer.items() if not key.endswith("_uuid")}
        rsps.post(url, json={"api_id": f"api-{kind}", **answer}, status=201)
    rsps.post(APPLICATIONS + "12345/", json={"api_id": "x", "message": "changed"}, status=202)

    result = runner.invoke(args=[*SETUP, "--password-env", "SIPGUARD_TEST_PW"])

    assert result.exit_code == rest.EXIT_UNCERTAIN, result.output
    assert effect in result.stderr and f"[api_id api-{idless}]" in result.stderr
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert ("POST", APPLICATIONS + "12345/") not in requests_made(rsps)


def _register_existing(rsps: responses.RequestsMock, entries: list[dict[str, Any]]) -> None:
    register_list(rsps, ACLS, [ip_acl("a-0", "other"), ip_acl("acl-1", "sipguard-12345")])
    register_list(rsps, entries_url("acl-1"), entries)
    register_list(rsps, CREDENTIALS, [credential("c-0", "other"), credential("c-1", "pbx-trunk")])


def test_setup_reuses_everything_that_exists_and_only_assigns(runner, rsps) -> None:
    _register_existing(
        rsps,
        [wire_entry("e-1", "2001:db8::", 32), wire_entry("e-2", "203.0.113.0", 24, "office")],
    )
    rsps.post(APPLICATIONS + "12345/", json={"api_id": "x", "message": "changed"}, status=202)

    result = runner.invoke(args=[*SETUP, "--json"])

    assert result.exit_code == rest.EXIT_OK, result.output
    assert [m for m, _ in requests_made(rsps)].count("POST") == 1
    assert requests_made(rsps)[-1] == ("POST", APPLICATIONS + "12345/")
    assert body(rsps.calls[-1]) == {
        "sip_auth_type": "ip_acl_and_credential",
        "ip_acl_uuid": "acl-1",
        "credential_uuid": "c-1",
    }
    data = json.loads(result.stdout)
    assert data["request_uri"] == "sip:12345@app.plivo.com"
    assert (data["ip_acl_created"], data["entries_added"]) == (False, [])
    assert data["entries_kept"] == ["203.0.113.0/24", "2001:db8::/32"]
    assert data["credential_action"] == "kept"


def test_setup_adds_only_the_missing_entry(runner, rsps) -> None:
    _register_existing(rsps, [wire_entry("e-2", "203.0.113.0", 24)])
    rsps.post(entries_url("acl-1"), json={"api_id": "x", "entry_uuid": "e-3"}, status=201)
    rsps.post(APPLICATIONS + "12345/", json={"api_id": "x"}, status=202)
    result = runner.invoke(args=SETUP)
    assert result.exit_code == rest.EXIT_OK, result.output
    posts = [(c.request.url, body(c)) for c in rsps.calls if c.request.method == "POST"]
    assert posts[0] == (entries_url("acl-1"), {ENTRY["ip"]: "2001:db8::", ENTRY["prefix"]: 32})
    assert len(posts) == 2
    assert "2001:db8::/32: added" in result.stdout
    assert "203.0.113.0/24: already present" in result.stdout


def test_setup_passing_the_entry_quota_writes_nothing(runner, rsps, monkeypatch) -> None:
    monkeypatch.setenv("SIPGUARD_TEST_PW", PASSWORD)
    _register_existing(rsps, [wire_entry(f"e-{i}", f"198.51.100.{i}", 32) for i in range(49)])
    result = runner.invoke(args=[*SETUP, "--password-env", "SIPGUARD_TEST_PW"])
    assert result.exit_code == rest.EXIT_INVALID, result.output
    assert len(rsps.calls) >= 3  # every page of the 49 entries was read
    assert {method for method, _ in requests_made(rsps)} == {"GET"}
    assert "49 entries" in result.stderr and "maximum of 50" in result.stderr


@pytest.mark.parametrize(
    "odd_entry",
    [
        pytest.param(wire_entry("e-dup", "198.51.100.0", 32), id="duplicate-network"),
        pytest.param({"entry_uuid": "e-odd", "address": "192.0.2.1"}, id="unreadable"),
    ],
)
def test_setup_counts_every_entry_of_a_full_acl(runner, rsps, odd_entry) -> None:
    full = [wire_entry(f"e-{i}", f"198.51.100.{i}", 32) for i in range(49)] + [odd_entry]
    _register_existing(rsps, full)
    rsps.post(entries_url("acl-1"), json={"api_id": "x", "entry_uuid": "e-new"}, status=201)
    rsps.post(APPLICATIONS + "12345/", json={"api_id": "x"}, status=202)
    args = [
        "sipauth",
        "setup",
        "--app-id",
        "12345",
        "--mode",
        "ip_acl",
        "--allow",
        "203.0.113.0/24",
    ]
    result = runner.invoke(args=args)
    assert result.exit_code == rest.EXIT_INVALID, result.output
    assert {method for method, _ in requests_made(rsps)} == {"GET"}


def test_entry_add_to_a_full_acl_writes_nothing(runner, rsps) -> None:
    full = [wire_entry(f"e-{i}", f"198.51.100.{i}", 32) for i in range(49)]
    register_list(rsps, entries_url("acl-1"), [*full, wire_entry("e-dup", "198.51.100.0", 32)])
    result = runner.invoke(args=["sipauth", "entry", "add", "acl-1", "203.0.113.0/24"])
    assert result.exit_code == rest.EXIT_INVALID
    assert {method for method, _ in requests_made(rsps)} == {"GET"}
    assert "maximum of 50" in result.stderr


def test_setup_of_a_new_credential_without_a_password_writes_nothing(runner, rsps) -> None:
    register_list(rsps, ACLS, [])
    register_list(rsps, CREDENTIALS, [])
    result = runner.invoke(args=SETUP)
    assert result.exit_code == rest.EXIT_INVALID
    assert {method for method, _ in requests_made(rsps)} == {"GET"}
    assert "does not exist yet: give a password" in result.stderr


# -- 6. call -----------------------------------------------------------------------------------


CALL = [
    "call",
    "sip:agent@pbx.example.com",
    "--from",
    "+14155550100",
    "--sip-auth-username",
    "agent",
    "--password-stdin",
]


def test_call_to_a_sip_uri_with_digest_credentials(runner, rsps, app_logs) -> None:
    rsps.post(
        CALLS,
        json={"api_id": "x", "message": "call fired", "request_uuid": "req-1"},
        status=201,
    )
    result = runner.invoke(args=CALL, input=PASSWORD + "\n")
    assert result.exit_code == rest.EXIT_OK, result.output
    assert result.stdout == "call fired: request_uuid req-1\n"
    assert requests_made(rsps) == [("POST", CALLS)]
    assert body(rsps.calls[0]) == {
        "from": "+14155550100",
        "to": "sip:agent@pbx.example.com",
        "answer_url": BASE_URL + "/answer",
        "answer_method": "POST",
        "hangup_url": BASE_URL + "/hangup",
        "hangup_method": "POST",
        "sip_auth_username": "agent",
        "sip_auth_password": PASSWORD,
    }
    assert PASSWORD not in result.output and PASSWORD not in app_logs.text


def test_call_json_gives_the_request_uuid(runner, rsps) -> None:
    rsps.post(CALLS, json={"api_id": "x", "request_uuid": "req-2"}, status=201)
    result = runner.invoke(args=[*CALL, "--json"], input=PASSWORD + "\n")
    assert result.exit_code == rest.EXIT_OK, result.output
    assert json.loads(result.stdout) == {"request_uuid": "req-2"}


def test_call_accepted_without_request_uuid_exits_6_saying_it_may_be_placed(runner, rsps) -> None:
    """Not "nothing sent" (2), which a script would retry into a second call."""
    rsps.post(CALLS, json={"api_id": "api-odd-1", "message": "call fired"}, status=201)
    result = runner.invoke(args=CALL, input=PASSWORD + "\n")
    assert result.exit_code == rest.EXIT_UNCERTAIN == 6, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "HTTP 201" in result.stderr and "the call may have been placed" in result.stderr
    assert "[api_id api-odd-1]" in result.stderr
    assert PASSWORD not in result.output
    result = runner.invoke(args=[*CALL, "--json"], input=PASSWORD + "\n")
    assert result.exit_code == rest.EXIT_UNCERTAIN
    error = json.loads(result.stderr)
    assert (error["status"], error["api_id"]) == (201, "api-odd-1")
    assert "the call may have been placed" in error["error"]


# -- 7. handoff -----------------------------------------------------------------------------


def _handoff(runner, rsps, *extra: str) -> Any:
    rsps.post(
        CALLS + CALL_UUID + "/",
        json={"message": "call transfered", "api_id": "x"},  # Plivo's spelling
        status=202,
    )
    return runner.invoke(args=["handoff", CALL_UUID, "support", *extra])


def test_handoff_transfers_the_a_leg_to_a_signed_url(runner, rsps) -> None:
    result = _handoff(runner, rsps)
    assert result.exit_code == rest.EXIT_OK, result.output
    assert re.fullmatch(
        f"call {CALL_UUID} transferred to group support: "
        r"handoff ho_[0-9a-z]{22} \(transferred\)\n",
        result.stdout,
    )
    assert requests_made(rsps) == [("POST", CALLS + CALL_UUID + "/")]
    sent = body(rsps.calls[0])
    assert set(sent) == {"legs", "aleg_url", "aleg_method"}
    assert (sent["legs"], sent["aleg_method"]) == ("aleg", "POST")
    assert sent["aleg_url"].startswith(BASE_URL + "/handoff/support?token=")
    assert "&handoff=ho_" in sent["aleg_url"]


def test_handoff_json(runner, rsps) -> None:
    result = _handoff(runner, rsps, "--json")
    assert result.exit_code == rest.EXIT_OK, result.output
    data = json.loads(result.stdout)
    assert data.pop("id").startswith("ho_")
    assert data == {
        "call_uuid": CALL_UUID,
        "group": "support",
        "api_id": "x",
        "state": "transferred",
        "replayed": False,
    }


def test_handoff_is_the_api_service_under_a_cli_key(app, runner, rsps, tmp_path) -> None:
    """The CLI stores the handoff like the API does: under the on-demand "cli" key."""
    summary = tmp_path / "summary.txt"
    summary.write_text("Canary-Summary-cli: caller wants a refund\n")
    result = _handoff(
        runner,
        rsps,
        "--json",
        "--summary-file",
        str(summary),
        "--field",
        "Ticket=4417",
        "--whisper",
        "--idempotency-key",
        "op-1",
    )
    assert result.exit_code == rest.EXIT_OK, result.output
    store = app.extensions["sipguard"].store
    handoff = store.get_handoff(json.loads(result.stdout)["id"])
    assert handoff.summary == "Canary-Summary-cli: caller wants a refund"
    assert handoff.fields == {"Ticket": "4417"} and handoff.whisper
    assert [k.name for k in store.list_api_keys()] == ["cli"]
    assert handoff.api_key_id == store.list_api_keys()[0].id
    again = runner.invoke(
        args=[
            "handoff",
            CALL_UUID,
            "support",
            "--json",
            "--summary-file",
            str(summary),
            "--field",
            "Ticket=4417",
            "--whisper",
            "--idempotency-key",
            "op-1",
        ]
    )
    assert again.exit_code == rest.EXIT_OK and json.loads(again.stdout)["replayed"] is True
    assert len(rsps.calls) == 1  # never transferred twice
    assert "Canary-Summary" not in result.output + again.output


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        (["--field", "Tick-et=1"], "fields"),
        (["--field", "nokey"], "K=V"),
        (["--whisper"], "whisper"),
        (["--on-failure", "return"], "return_url"),
    ],
)
def test_handoff_refusals_exit_invalid_with_nothing_sent(runner, rsps, extra, text) -> None:
    result = runner.invoke(args=["handoff", CALL_UUID, "support", *extra])
    assert result.exit_code == rest.EXIT_INVALID, result.output
    assert text in result.stderr and len(rsps.calls) == 0


def test_a_second_live_handoff_exits_invalid(runner, rsps) -> None:
    assert _handoff(runner, rsps).exit_code == rest.EXIT_OK
    second = runner.invoke(args=["handoff", CALL_UUID, "oncall"])
    assert second.exit_code == rest.EXIT_INVALID and "handed off already" in second.stderr


@pytest.mark.parametrize(("call_uuid", "status"), [(CALL_UUID, 200), ("some-other-call", 403)])
def test_handoff_url_dials_the_group_for_that_call_only(
    runner, rsps, signed_post: SignedPost, call_uuid: str, status: int
) -> None:
    assert _handoff(runner, rsps).exit_code == rest.EXIT_OK
    aleg_url = body(rsps.calls[0])["aleg_url"]
    path = aleg_url.removeprefix(BASE_URL)
    response = signed_post(path, inbound(CallUUID=call_uuid, CallStatus="in-progress"))
    assert response.status_code == status
    if status == 200:
        assert response.mimetype in ("application/xml", "text/xml")
        assert b"<Dial" in response.data
    else:
        assert response.get_json() == {"error": "handoff token is for another call"}
