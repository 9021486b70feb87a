"""`sipguard sipauth|call|handoff ...`: Plivo REST operations for people and scripts.

`sipauth` and `call` need only the Plivo account (PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN, optionally
PLIVO_API_URL and PLIVO_API_TIMEOUT_SECONDS); `handoff` mints a token with the app's secret for
one of its agent groups, so it needs the app's settings. Tables by default, `--json` for scripts.
Passwords come from stdin, an environment variable or a file, never from argv (which `ps` shows
to every user); `--generate` makes one and shows it once. Exit codes, for scripts, are
`EXIT_CODES` (also at the end of every command's --help).
"""

from __future__ import annotations

import functools
import getpass
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from flask.cli import with_appcontext

from sipguard.calls.causes import AUTH_NONE, SIP_AUTH_TYPES
from sipguard.commands import context
from sipguard.errors import (
    AppError,
    ConfigError,
    PlivoAPIError,
    PlivoOutcomeUnknown,
    ValidationError,
)
from sipguard.handoffs import TransferRefused, parse_request, request_handoff
from sipguard.plivo.outbound import Calls, Outbound
from sipguard.plivo.sipauth import SetupReport, SipAuth, generate_password, request_uri
from webhooks.context import external_url

EXIT_OK = 0
EXIT_CREDENTIALS = 1  # Plivo refused PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN (401)
EXIT_INVALID = 2  # bad arguments, a missing or bad setting, or a documented limit: nothing sent
EXIT_REFUSED = 3  # Plivo answered 4xx (not found, duplicate, still assigned, ...)
EXIT_RATE_LIMITED = 4  # Plivo answered 429: retry later
EXIT_UNAVAILABLE = 5  # Plivo (or the database) could not be reached, or Plivo answered 5xx
EXIT_UNCERTAIN = 6  # Plivo accepted (2xx) but its answer lacks the new id: it may be done
EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_CREDENTIALS, "Plivo refused PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN (401)"),
    (EXIT_INVALID, "invalid input, or a missing or bad setting: nothing sent"),
    (EXIT_REFUSED, "Plivo refused the request (4xx)"),
    (EXIT_RATE_LIMITED, "rate limited by Plivo (429)"),
    (EXIT_UNAVAILABLE, "Plivo or the database unreachable, or Plivo answering 5xx or nonsense"),
    (
        EXIT_UNCERTAIN,
        "accepted (2xx) without the new id: the call may have been placed, the resource created",
    ),
)
EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES)

CREDENTIAL_COLUMNS = ("uuid", "username", "realm")
ACL_COLUMNS = ("uuid", "name")
ENTRY_COLUMNS = ("uuid", "ip", "prefix", "description")

# Plain click groups: these commands need the Plivo account only, never the app (see context).
sipauth = click.Group(
    "sipauth",
    help="SIP credentials, IP ACLs and their assignment to applications.",
    epilog=EXIT_CODES_HELP,
)
credential = click.Group("credential", help="SIP digest credentials (passwords are never shown).")
acl = click.Group("acl", help="IP access control lists.")
entry = click.Group("entry", help="Addresses and CIDR ranges in an IP ACL.")
sipauth.add_command(credential)
sipauth.add_command(acl)
sipauth.add_command(entry)

F = TypeVar("F", bound=Callable[..., Any])


# -- output -----------------------------------------------------------------------------------


def _exit_code(exc: Exception) -> int:
    if isinstance(exc, ValidationError | click.BadParameter | ConfigError):
        return EXIT_INVALID
    if isinstance(exc, AppError):  # a conflict, an unknown group, or the database down
        return EXIT_UNAVAILABLE if exc.status >= 500 else EXIT_INVALID
    assert isinstance(exc, PlivoAPIError)
    if isinstance(exc, PlivoOutcomeUnknown):
        return EXIT_UNCERTAIN  # it may have happened: a blind retry could do it twice
    if exc.rate_limited:
        return EXIT_RATE_LIMITED
    if exc.status == 401:
        return EXIT_CREDENTIALS  # PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN do not match an account
    if exc.status is None or not 400 <= exc.status < 500:
        return EXIT_UNAVAILABLE  # unreachable, failing, or an answer that makes no sense
    return EXIT_REFUSED


def _error_fields(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, PlivoAPIError):
        return {
            "error": exc.error,
            "status": exc.status,
            "api_id": exc.api_id,
            "retry_after": exc.retry_after,
            "hint": exc.hint,
        }
    if isinstance(exc, ValidationError):
        return {"error": exc.message, "field": exc.field}
    if isinstance(exc, click.BadParameter):
        return {"error": exc.format_message()}
    return {"error": str(exc)}


def reports(func: F) -> F:
    """Add `--json` and turn the project's errors into a message and an exit code."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> None:
        try:
            result = func(*args, **kwargs)
        except (AppError, PlivoAPIError, click.BadParameter) as exc:
            fail(exc, as_json)
        if result is None:
            return
        data, show = result
        if as_json:
            click.echo(json.dumps(data, indent=2, default=str))
        else:
            show()

    return wrapper  # type: ignore[return-value]


def fail(exc: Exception, as_json: bool) -> NoReturn:
    """Report one of the project's errors (text, or JSON on stderr) and exit with its code."""
    if as_json:
        click.echo(json.dumps(_error_fields(exc)), err=True)
    else:
        text = exc.describe() if isinstance(exc, PlivoAPIError) else _message(exc)
        click.echo(f"error: {text}", err=True)
    sys.exit(_exit_code(exc))


def _message(exc: Exception) -> str:
    if isinstance(exc, click.BadParameter):
        return exc.format_message()
    return exc.message if isinstance(exc, AppError) else str(exc)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Callable[[], None]:
    """Return a function printing `rows` as an aligned table of `columns` ("(none)" if empty)."""

    def show() -> None:
        if not rows:
            click.echo("(none)")
            return
        cells = [[_cell(row.get(column)) for column in columns] for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in cells:
            click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

    return show


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _lines(*lines: str) -> Callable[[], None]:
    return _then(lines)


# -- passwords --------------------------------------------------------------------------------


def password_options(generate: bool) -> Callable[[F], F]:
    """Add the ways a password may arrive; none of them puts it on the command line."""

    def decorate(func: F) -> F:
        options = [
            click.option(
                "--password-stdin", is_flag=True, help="Read the password from stdin (one line)."
            ),
            click.option("--password-env", metavar="VAR", help="Read it from environment VAR."),
            click.option(
                "--password-file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Read it from a file (first line).",
            ),
        ]
        if generate:
            options.append(
                click.option(
                    "--generate", is_flag=True, help="Generate a compliant one; shown once."
                )
            )
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def read_password(
    *,
    password_stdin: bool = False,
    password_env: str | None = None,
    password_file: Path | None = None,
    generate: bool = False,
) -> tuple[str | None, bool]:
    """Return (password, generated) from the one source given, or (None, False) for none."""
    chosen = [
        name
        for name, used in (
            ("--password-stdin", password_stdin),
            ("--password-env", password_env is not None),
            ("--password-file", password_file is not None),
            ("--generate", generate),
        )
        if used
    ]
    if len(chosen) > 1:
        raise click.BadParameter(f"give one password source, not {' and '.join(chosen)}")
    if generate:
        return generate_password(), True
    if password_stdin:
        return read_secret_line("Password: "), False
    if password_env is not None:
        value = context.environment().get(password_env)  # `sipguard` reads ./.env too
        if value is None:
            raise click.BadParameter(f"environment variable {password_env} is not set")
        return value, False
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise click.BadParameter(f"cannot read {password_file}: {reason}") from None
        return (lines[0] if lines else ""), False
    return None, False


def read_secret_line(prompt: str) -> str:
    """Read one line from stdin; at a terminal, without echoing it."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def _required(password: str | None) -> str:
    if password is None:
        raise click.BadParameter(
            "a password is needed: --password-stdin, --password-env VAR, --password-file PATH "
            "or --generate"
        )
    return password


def _generated_note(generated: bool, password: str | None) -> list[str]:
    if not generated:
        return []
    return [f"generated password (shown once, store it now): {password}"]


def _with_generated(data: dict[str, Any], generated: bool, password: str | None) -> dict[str, Any]:
    return {**data, "generated_password": password} if generated else data


def _sipauth() -> SipAuth:
    return SipAuth(context.account().api())


# -- sipauth credential ... -------------------------------------------------------------------


@credential.command("create")
@click.argument("username")
@password_options(generate=True)
@reports
def credential_create(username: str, **source: Any) -> tuple[Any, Callable[[], None]]:
    """Create credential USERNAME (3-64 of letters, digits, . _ -)."""
    password, generated = read_password(**source)
    record = _sipauth().create_credential(username, _required(password))
    data = _with_generated(record, generated, password)
    return data, _then(table([record], CREDENTIAL_COLUMNS), _generated_note(generated, password))


@credential.command("list")
@reports
def credential_list() -> tuple[Any, Callable[[], None]]:
    """List credentials."""
    records = _sipauth().list_credentials()
    return records, table(records, CREDENTIAL_COLUMNS)


@credential.command("show")
@click.argument("uuid")
@reports
def credential_show(uuid: str) -> tuple[Any, Callable[[], None]]:
    """Show one credential."""
    record = _sipauth().get_credential(uuid)
    return record, table([record], CREDENTIAL_COLUMNS)


@credential.command("set-password")
@click.argument("uuid")
@password_options(generate=True)
@reports
def credential_set_password(uuid: str, **source: Any) -> tuple[Any, Callable[[], None]]:
    """Change a credential's password; every app using it sees the change at once."""
    password, generated = read_password(**source)
    _sipauth().set_password(uuid, _required(password))
    data = _with_generated({"uuid": uuid, "password_updated": True}, generated, password)
    return data, _lines(
        f"password updated for credential {uuid}", *_generated_note(generated, password)
    )


@credential.command("delete")
@click.argument("uuid")
@reports
def credential_delete(uuid: str) -> tuple[Any, Callable[[], None]]:
    """Delete a credential (unassign it from every application first)."""
    _sipauth().delete_credential(uuid)
    return {"uuid": uuid, "deleted": True}, _lines(f"deleted credential {uuid}")


# -- sipauth acl ... / entry ... --------------------------------------------------------------


@acl.command("create")
@click.argument("name")
@reports
def acl_create(name: str) -> tuple[Any, Callable[[], None]]:
    """Create an IP ACL called NAME (at most 120 characters)."""
    record = _sipauth().create_acl(name)
    return record, table([record], ACL_COLUMNS)


@acl.command("list")
@reports
def acl_list() -> tuple[Any, Callable[[], None]]:
    """List IP ACLs."""
    records = _sipauth().list_acls()
    return records, table(records, ACL_COLUMNS)


@acl.command("show")
@click.argument("uuid")
@reports
def acl_show(uuid: str) -> tuple[Any, Callable[[], None]]:
    """Show an IP ACL and its entries."""
    admin = _sipauth()
    record, entries = admin.get_acl(uuid), admin.list_entries(uuid)
    data = {**record, "entries": [e for e in entries]}
    return data, _then(table([record], ACL_COLUMNS), [""], table(entries, ENTRY_COLUMNS))


@acl.command("delete")
@click.argument("uuid")
@reports
def acl_delete(uuid: str) -> tuple[Any, Callable[[], None]]:
    """Delete an IP ACL (unassign it from every application first)."""
    _sipauth().delete_acl(uuid)
    return {"uuid": uuid, "deleted": True}, _lines(f"deleted IP ACL {uuid}")


@entry.command("add")
@click.argument("acl_uuid")
@click.argument("cidr")
@click.option("--description", help="At most 255 characters.")
@reports
def entry_add(acl_uuid: str, cidr: str, description: str | None) -> tuple[Any, Callable[[], None]]:
    """Allow CIDR (IPv4 /0-32 or IPv6 /0-128; a bare address is one host) in ACL_UUID."""
    record = _sipauth().add_entry(acl_uuid, cidr, description)
    return record, table([record], ENTRY_COLUMNS)


@entry.command("list")
@click.argument("acl_uuid")
@reports
def entry_list(acl_uuid: str) -> tuple[Any, Callable[[], None]]:
    """List an IP ACL's entries."""
    records = _sipauth().list_entries(acl_uuid)
    return records, table(records, ENTRY_COLUMNS)


@entry.command("remove")
@click.argument("acl_uuid")
@click.argument("entry_uuid")
@reports
def entry_remove(acl_uuid: str, entry_uuid: str) -> tuple[Any, Callable[[], None]]:
    """Remove an entry; effective at once for every application using the ACL."""
    _sipauth().remove_entry(acl_uuid, entry_uuid)
    return {"uuid": entry_uuid, "removed": True}, _lines(f"removed entry {entry_uuid}")


# -- sipauth quotas / assign / setup ----------------------------------------------------------


@sipauth.command("quotas")
@reports
def quotas() -> tuple[Any, Callable[[], None]]:
    """Show how much of each documented quota the account uses."""
    found = _sipauth().quotas()
    rows = [{"resource": q.resource, "used": q.used, "limit": q.limit} for q in found]
    return rows, table(rows, ("resource", "used", "limit"))


MODES = click.Choice([*SIP_AUTH_TYPES, AUTH_NONE])


@sipauth.command("assign")
@click.option("--app-id", required=True, help="The Plivo application.")
@click.option("--mode", type=MODES, required=True, help='"none" removes the assignment.')
@click.option("--credential", "credential_uuid", help="Credential uuid (credential modes).")
@click.option("--acl", "ip_acl_uuid", help="IP ACL uuid (ip_acl modes).")
@reports
def assign(
    app_id: str, mode: str, credential_uuid: str | None, ip_acl_uuid: str | None
) -> tuple[Any, Callable[[], None]]:
    """Set an application's sip_auth_type and the credential / IP ACL it checks."""
    _sipauth().assign(app_id, mode, credential_uuid=credential_uuid, ip_acl_uuid=ip_acl_uuid)
    data = {
        "app_id": app_id,
        "sip_auth_type": "" if mode == AUTH_NONE else mode,
        "credential_uuid": credential_uuid,
        "ip_acl_uuid": ip_acl_uuid,
        "request_uri": request_uri(app_id),
    }
    done = "removed SIP auth from" if mode == AUTH_NONE else f"assigned {mode} to"
    return data, _lines(f"{done} application {app_id}", *_request_uri_lines(app_id, mode))


@sipauth.command("setup")
@click.option("--app-id", required=True, help="The Plivo application to protect.")
@click.option("--mode", type=click.Choice(SIP_AUTH_TYPES), required=True)
@click.option("--allow", multiple=True, metavar="CIDR", help="Trusted address or range; repeat.")
@click.option("--credential-user", metavar="NAME", help="SIP username callers authenticate as.")
@click.option("--acl-name", help="IP ACL to create or reuse (default sipguard-APP_ID).")
@click.option("--prune", is_flag=True, help="Remove entries of a reused ACL not in --allow.")
@password_options(generate=True)
@reports
def setup(
    app_id: str,
    mode: str,
    allow: tuple[str, ...],
    credential_user: str | None,
    acl_name: str | None,
    prune: bool,
    **source: Any,
) -> tuple[Any, Callable[[], None]]:
    """Create or reuse the IP ACL, entries and credential MODE needs, and assign them."""
    password, generated = read_password(**source)
    report = _sipauth().setup(
        app_id,
        mode,
        allow=allow,
        credential_user=credential_user,
        password=password,
        acl_name=acl_name,
        prune=prune,
    )
    data = _with_generated(_setup_data(report), generated, password)
    return data, _lines(*_setup_lines(report), *_generated_note(generated, password))


def _setup_data(report: SetupReport) -> dict[str, Any]:
    return {
        "app_id": report.app_id,
        "sip_auth_type": report.mode,
        "request_uri": report.request_uri,
        "ip_acl": report.acl if report.acl else None,
        "ip_acl_created": report.acl_created,
        "entries_added": report.entries_added,
        "entries_kept": report.entries_kept,
        "entries_extra": report.entries_extra,
        "entries_removed": report.entries_removed,
        "credential": report.credential if report.credential else None,
        "credential_action": report.credential_action,
    }


def _setup_lines(report: SetupReport) -> list[str]:
    lines = []
    if report.acl is not None:
        state = "created" if report.acl_created else "reused"
        lines.append(f"IP ACL      {report.acl.get('name')} ({report.acl.get('uuid')}): {state}")
        for cidr in report.entries_added:
            lines.append(f"  allow     {cidr}: added")
        for cidr in report.entries_kept:
            lines.append(f"  allow     {cidr}: already present")
        for cidr in report.entries_removed:
            lines.append(f"  allow     {cidr}: removed (--prune)")
        for cidr in report.entries_extra:
            lines.append(f"  allow     {cidr}: in the ACL but not in --allow (--prune removes it)")
    if report.credential is not None:
        lines.append(
            f"credential  {report.credential.get('username')} "
            f"({report.credential.get('uuid')}): {report.credential_action}"
        )
    lines.append(f"application {report.app_id}: sip_auth_type = {report.mode}")
    return lines + _request_uri_lines(report.app_id, report.mode)


def _request_uri_lines(app_id: str, mode: str) -> list[str]:
    if mode == AUTH_NONE:
        return []
    return [
        "",
        f"Point your SIP provider's INVITEs at the Request-URI {request_uri(app_id)}",
        "(auth is applied by the Request-URI, not the To header; a phone-number Request-URI",
        "gets no SIP auth at all).",
    ]


def _then(*parts: Callable[[], None] | Iterable[str]) -> Callable[[], None]:
    def show() -> None:
        for part in parts:
            if callable(part):
                part()
            else:
                for line in part:
                    click.echo(line)

    return show


# -- call / handoff ---------------------------------------------------------------------------


@click.command("call", epilog=EXIT_CODES_HELP)
@click.argument("to")
@click.option("--from", "from_", required=True, help="Caller ID: a Plivo number.")
@click.option("--answer-url", help="Default: this app's /answer (needs PUBLIC_BASE_URL).")
@click.option("--hangup-url", help="Default: this app's /hangup (needs PUBLIC_BASE_URL).")
@click.option("--sip-auth-username", help="Digest username for a SIP-URI TO that challenges.")
@click.option("--caller-name", help="At most 50 characters.")
@click.option("--time-limit", type=int, help="Seconds before Plivo hangs up.")
@click.option("--ring-timeout", type=int, help="Seconds to ring.")
@password_options(generate=False)
@reports
def call(
    to: str,
    from_: str,
    answer_url: str | None,
    hangup_url: str | None,
    sip_auth_username: str | None,
    caller_name: str | None,
    time_limit: int | None,
    ring_timeout: int | None,
    **source: Any,
) -> tuple[Any, Callable[[], None]]:
    """Place a call to TO (a number or a sip:/sips: URI; '<' separates several).

    With --sip-auth-username and a password source, Plivo answers TO's 401/407 challenge.
    """
    password, _ = read_password(**source)
    calls = Calls(context.account().api(), url_for=context.webhook_urls())
    request_uuid = calls.make_call(
        from_,
        to,
        answer_url=answer_url,
        hangup_url=hangup_url,
        sip_auth_username=sip_auth_username,
        sip_auth_password=password,
        caller_name=caller_name,
        time_limit=time_limit,
        ring_timeout=ring_timeout,
    )
    return {"request_uuid": request_uuid}, _lines(f"call fired: request_uuid {request_uuid}")


CLI_KEY = "cli"


def _operator_key(name: str) -> str:
    """Return the id of the live API key `name`, creating it (no callback URL) when missing."""
    store = context.app_runtime().store
    for key in store.list_api_keys():
        if key.name == name and not key.revoked:
            return key.id
    # The key's token is never shown: the operator acts through this command, not over HTTP.
    return store.create_api_key(name).key.id


def _field_option(values: Sequence[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r} is not K=V", param_hint="--field")
        fields[name] = text
    return fields


@click.command("handoff", epilog=EXIT_CODES_HELP)
@click.argument("call_uuid")
@click.argument("group")
@click.option(
    "--summary-file",
    type=click.File("r", encoding="utf-8"),
    help="Text for the human ('-' for stdin); never put it in argv, which `ps` shows.",
)
@click.option("--field", "fields", multiple=True, metavar="K=V", help="A SIP header for the agent.")
@click.option("--whisper", is_flag=True, help="Speak the summary to the agent first.")
@click.option("--on-failure", type=click.Choice(["fallback", "return"]), default="fallback")
@click.option("--return-url", help="https:// or wss:// URL of the AI (with --on-failure return).")
@click.option("--callback-url", help="Where this handoff's outcome webhooks go.")
@click.option("--idempotency-key", help="Retrying with the same key transfers once.")
@click.option(
    "--key",
    "key_name",
    default=CLI_KEY,
    show_default=True,
    help="API key the handoff belongs to (created on demand, without a callback URL).",
)
@reports  # outside with_appcontext: an app that cannot be built is reported like any error
@with_appcontext
def handoff(
    call_uuid: str,
    group: str,
    summary_file: Any,
    fields: Sequence[str],
    whisper: bool,
    on_failure: str,
    return_url: str | None,
    callback_url: str | None,
    idempotency_key: str | None,
    key_name: str,
) -> tuple[Any, Callable[[], None]]:
    """Hand live call CALL_UUID (its A leg) to agent GROUP, as POST /api/v1/handoffs does.

    The same service as the HTTP API: the handoff is stored under an API key (--key, by
    default a "cli" key made on first use), then Plivo transfers the call to a signed
    /handoff URL carrying the handoff id, and its outcome webhooks go to the key's callback URL.
    """
    body: dict[str, Any] = {"call_uuid": call_uuid, "group": group}
    if summary_file is not None:
        body["summary"] = summary_file.read().rstrip("\n")
    if fields:
        body["fields"] = _field_option(fields)
    if whisper:
        body["whisper"] = True
    body["on_failure"] = on_failure
    for name, value in (("return_url", return_url), ("callback_url", callback_url)):
        if value is not None:
            body[name] = value
    rt = context.app_runtime()
    request = parse_request(
        body, api_key_id=_operator_key(key_name), idempotency_key=idempotency_key
    )
    outbound = Outbound(
        api=rt.plivo(), handoff=rt.handoff, groups=rt.voice.groups, url_for=external_url
    )
    try:
        found, replayed = request_handoff(rt.store, outbound, request, now=rt.clock())
    except TransferRefused as exc:
        raise exc.error from None
    data = {
        "id": found.id,
        "state": found.state,
        "call_uuid": found.call_uuid,
        "group": found.group_name,
        "replayed": replayed,
        "api_id": found.plivo_api_id,
    }
    verb = "already handed off" if replayed else "transferred"
    return data, _lines(
        f"call {call_uuid} {verb} to group {group}: handoff {found.id} ({found.state})"
    )
