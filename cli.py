"""Flask CLI commands: `flask --app app:create_app db upgrade|purge-nonces`."""

from __future__ import annotations

import shlex
import uuid

import click
from flask import Flask
from flask.cli import AppGroup

from signature import signed_headers
from webhooks.context import runtime

db = AppGroup("db", help="Database schema and housekeeping.")


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
def sign_request(path: str, fields: tuple[str, ...]) -> None:
    """Print a curl command POSTing FIELDS (KEY=VALUE) to PATH, signed as Plivo would sign it."""
    rt = runtime()
    params: dict[str, list[str]] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="FIELDS")
        params.setdefault(key, []).append(value)
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


def init_app(app: Flask) -> None:
    """Register the command groups."""
    app.cli.add_command(db)
    app.cli.add_command(sign_request)
