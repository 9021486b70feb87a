"""Flask CLI commands: `flask --app app:create_app db ...|voice explain ...|sign-request ...`."""

from __future__ import annotations

import shlex
import uuid

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

import plivo_cli
from callbacks import InboundCall
from errors import ValidationError
from routing import decide
from signature import signed_headers
from webhooks.context import runtime

db = AppGroup("db", help="Database schema and housekeeping.")
voice = AppGroup("voice", help="Inspect the voice configuration.")


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


@voice.command("explain")
@click.argument("fields", nargs=-1)
def explain(fields: tuple[str, ...]) -> None:
    """Show how an answer_url call with FIELDS (KEY=VALUE, Plivo's names) would be routed.

    Example: flask voice explain From=sip:pbx@203.0.113.7 SIPAuthType=ip_acl SIPSourceIP=203.0.113.7
    """
    form = {key: values[0] for key, values in _pairs(fields).items()}
    form.setdefault("CallUUID", "explain")
    try:
        call = InboundCall.from_form(form)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="FIELDS") from None
    rt = runtime()
    decision = decide(call, rt.voice.policy)
    click.echo(f"rule:   {decision.rule}")
    click.echo(f"reason: {decision.reason}")
    click.echo(f"action: {decision.action.describe()}")
    group_name = decision.action.group or decision.action.handoff_group
    group = rt.voice.groups.get(group_name or "")
    if group is None:
        return
    click.echo(f"group:  {group.name} ({group.strategy}, {group.timeout} s per dial)")
    for attempt in range(group.attempts()):
        for agent in group.agents_for(attempt):
            digest = f"digest user {agent.username}" if agent.username else "no digest credentials"
            click.echo(f"  dial {attempt}: {agent.name:<12} {agent.uri}  ({digest})")
    click.echo(f"  then:   fallback {group.fallback.kind}")


def init_app(app: Flask) -> None:
    """Register the command groups."""
    app.cli.add_command(db)
    app.cli.add_command(voice)
    app.cli.add_command(sign_request)
    app.cli.add_command(plivo_cli.sipauth)
    app.cli.add_command(plivo_cli.call)
    app.cli.add_command(plivo_cli.handoff)
