"""The commands that work on this app's own data: db, voice, report, monitor, api-key, agents,
sign-request, worker.

`COMMANDS` (these and the Plivo REST ones in `rest`) is what `sipguard` offers and what
`init_app` registers on the Flask CLI, with the commands installed packages add (`plugins`).
"""

from __future__ import annotations

import json
import shlex
import uuid
from datetime import UTC, datetime, timedelta

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from werkzeug.security import generate_password_hash

from sipguard.calls.agents import AgentGroup
from sipguard.calls.forms import InboundCall
from sipguard.calls.hours import YEARS, iso_utc
from sipguard.calls.routing import decide
from sipguard.calls.signature import signed_headers
from sipguard.commands import agents, keys, rest
from sipguard.commands.plugins import plugins
from sipguard.commands.worker import worker
from sipguard.errors import ValidationError
from sipguard.monitoring import analytics
from sipguard.store import now_utc
from webhooks.context import runtime

db = AppGroup("db", help="Database schema and housekeeping.")
voice = AppGroup("voice", help="Inspect the voice configuration.")
report = AppGroup("report", help="Reports over the stored callbacks.")
monitor = AppGroup("monitor", help="The /monitor page's admin password.")


MIN_MONITOR_PASSWORD = 12


def _pairs(fields: tuple[str, ...]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="FIELDS")
        params.setdefault(key, []).append(value)
    return params


@db.command("upgrade")
def upgrade() -> None:
    """Bring the database schema to the newest revision."""
    runtime().store.upgrade()
    click.echo("database schema is up to date")


@db.command("purge-nonces")
def purge_nonces() -> None:
    """Delete nonces whose replay window has passed."""
    click.echo(f"purged {runtime().store.purge_nonces()} expired nonce(s)")


@db.command("purge-events")
@click.option("--days", type=click.IntRange(min=1), help="Keep this many days (RETENTION_DAYS).")
def purge_events(days: int | None) -> None:
    """Delete call events, hangups, rejection counts and handoffs older than the retention."""
    rt = runtime()
    keep = days or rt.settings.retention_days
    counts = rt.store.purge_events(timedelta(days=keep))
    parts = ", ".join(f"{n} {table}" for table, n in counts.items())
    click.echo(f"kept {keep} day(s); purged {parts}")


@report.command("auth-failures")
@click.option(
    "--since", "span", default="1h", show_default=True, help="Look back: 90s, 15m, 1h, 7d."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def auth_failures(span: str, as_json: bool) -> None:
    """Show SIP-auth failures by IP, user and cause, likely lockouts and warnings."""
    try:
        look_back = analytics.parse_span(span)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="--since") from None
    until = now_utc()
    result = analytics.report(runtime().store, until - look_back, until)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    data = result.as_dict()
    click.echo(f"SIP auth failures {data['since']} .. {data['until']}: {data['total_failures']}")
    for title, key, label in (
        ("by source IP (inbound 4210)", "by_source_ip", "SOURCE IP"),
        ("by SIP user (inbound)", "by_sip_user", "SIP USER"),
        ("by cause", "by_cause", "CAUSE"),
        ("refused callbacks by reason", "signature_rejections", "REASON"),
    ):
        click.echo(f"\n{title}")
        rows = data[key]
        if not rows:
            click.echo("  (none)")
            continue
        width = max(len(label), *(len(row["key"]) for row in rows))
        click.echo(f"  {label.ljust(width)}  {'COUNT':>6}  LAST")
        for row in rows:
            click.echo(f"  {row['key'].ljust(width)}  {row['count']:>6}  {row['last']}")
    click.echo("\nlikely lockouts")
    for item in data["lockouts"] or []:
        state = "ACTIVE" if item["active"] else "ended"
        click.echo(f"  {item['ip']}  {item['started']} .. {item['until']}  {state}")
    if not data["lockouts"]:
        click.echo("  (none)")
    not_running = data["auth_not_running"]
    click.echo(f"\nSIP calls without SIPAuthType (auth not running): {not_running['count']}")
    for text in result.notes:  # lockouts are listed above
        click.echo(f"warning: {text}")


@monitor.command("hash-password", with_appcontext=False)  # needs no setting
def hash_password() -> None:
    """Read a password from stdin and print the MONITOR_PASSWORD_HASH value for it."""
    password = rest.read_secret_line("Monitor password: ")
    if len(password) < MIN_MONITOR_PASSWORD:
        raise click.BadParameter(f"use at least {MIN_MONITOR_PASSWORD} characters")
    click.echo(generate_password_hash(password))


@click.command("sign-request")
@click.argument("path")
@click.argument("fields", nargs=-1)
@with_appcontext
def sign_request(path: str, fields: tuple[str, ...]) -> None:
    """Print a curl command POSTing FIELDS (KEY=VALUE) to PATH, signed as Plivo would sign it."""
    rt = runtime()
    params = _pairs(fields)
    root = rt.settings.public_base_url or "http://127.0.0.1:5000"
    url = root + path
    headers = signed_headers(rt.settings.auth_tokens[0], "POST", url, params, uuid.uuid4().hex)
    parts = ["curl", "-sS", shlex.quote(url)]
    parts += [f"-H {shlex.quote(f'{name}: {value}')}" for name, value in headers.items()]
    parts += [
        f"--data-urlencode {shlex.quote(f'{key}={value}')}"
        for key, values in params.items()
        for value in values
    ]
    click.echo(" \\\n  ".join(parts))


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time like 2026-12-05T09:00-05:00", param_hint="--at"
        ) from None
    if moment.year not in YEARS:
        raise click.BadParameter(
            f"must be in the years {YEARS.start}-{YEARS.stop - 1}", param_hint="--at"
        )
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _availability(group: AgentGroup, now: datetime) -> str:
    """Say whether `group` takes calls at `now` and until when, in its zone and in UTC."""
    if group.hours is None:
        return "always open (no hours)"
    status = group.status(now)
    state = "open" if status.open else "closed"
    if status.until is None:
        return f"{state}, and stays so"
    local = status.until.astimezone(group.hours.zone)
    return f"{state} until {local:%a %Y-%m-%d %H:%M %Z} ({iso_utc(status.until)})"


@voice.command("explain")
@click.argument("fields", nargs=-1)
@click.option(
    "--at",
    "at",
    metavar="ISO-TIME",
    help="Read business hours at this moment, e.g. 2026-12-05T09:00-05:00 (no offset: UTC);"
    " default now.",
)
def explain(fields: tuple[str, ...], at: str | None) -> None:
    """Show how an answer_url call with FIELDS (KEY=VALUE, Plivo's names) would be routed,
    and which groups are open.

    Example: sipguard voice explain From=sip:pbx@203.0.113.7 SIPAuthType=ip_acl
    SIPSourceIP=203.0.113.7 --at 2026-12-05T09:00-05:00
    """
    moment = _moment(at)
    form = {key: values[0] for key, values in _pairs(fields).items()}
    form.setdefault("CallUUID", "explain")
    try:
        call = InboundCall.from_form(form)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="FIELDS") from None
    rt = runtime()
    now = moment or rt.clock()
    decision = decide(call, rt.voice.policy)
    click.echo(f"rule:   {decision.rule}")
    click.echo(f"reason: {decision.reason}")
    click.echo(f"action: {decision.action.describe()}")
    group_name = decision.action.group or decision.action.handoff_group
    group = rt.voice.groups.get(group_name or "")
    if group is not None:
        _explain_group(group, now)
    click.echo(f"\ngroups at {iso_utc(now)}")
    width = max(len(name) for name in rt.voice.groups) if rt.voice.groups else 0
    for each in rt.voice.groups.values():
        click.echo(f"  {each.name.ljust(width)}  {_availability(each, now)}")
        if each.hours is not None:
            click.echo(f"  {''.ljust(width)}  hours {each.hours.describe()}")


def _explain_group(group: AgentGroup, now: datetime) -> None:
    click.echo(f"group:  {group.name} ({group.strategy}, {group.timeout} s per dial)")
    click.echo(f"  now:    {_availability(group, now)}")
    if group.closed is not None and not group.open_at(now):
        instead = "return to the AI" if group.closed.return_to_ai else group.closed.plan.kind
        click.echo(f"  closed: {instead} instead of ringing; when open:")
    for attempt in range(group.attempts()):
        for agent in group.agents_for(attempt):
            digest = f"digest user {agent.username}" if agent.username else "no digest credentials"
            click.echo(f"  dial {attempt}: {agent.name:<12} {agent.uri}  ({digest})")
    click.echo(f"  then:   fallback {group.fallback.kind}")


COMMANDS: tuple[click.Command, ...] = (
    rest.sipauth,
    rest.call,
    rest.handoff,
    report,
    db,
    voice,
    monitor,
    keys.api_key,
    agents.agents,
    sign_request,
    worker,
)


def init_app(app: Flask) -> None:
    """Register the commands on the app's Flask CLI, installed packages' ones included."""
    for command in (*COMMANDS, *plugins()):
        app.cli.add_command(command)
