"""`api-key`: the keys the AI side calls /api/v1 with, and the secrets its webhooks are signed with.

A key and its webhook secret are printed once, by `create`; the store keeps only the key's hash
and derives the webhook secret from SECRET_KEY, so neither can be shown again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from flask.cli import AppGroup

from sipguard.errors import StoreUnavailable, ValidationError
from sipguard.notify.model import webhook_secret
from sipguard.store.api_keys import check_callback_url, check_key_name
from webhooks.context import runtime

T = TypeVar("T")

api_key = AppGroup("api-key", help="API keys for the AI agent's calls to /api/v1.")


def stored(work: Callable[[], T]) -> T:
    """Run a store call; a database that does not answer is one line, not a traceback."""
    try:
        return work()
    except StoreUnavailable as exc:
        raise click.ClickException(exc.message) from None


def when(value: object) -> str:
    return "-" if value is None else str(value)[:19]


@api_key.command("create")
@click.argument("name")
@click.option(
    "--callback-url",
    metavar="URL",
    help="Where this key's outcome webhooks go (https; http only to a loopback address).",
)
def create(name: str, callback_url: str | None) -> None:
    """Create an API key NAME; print it and its webhook secret, this once only."""
    try:
        check_key_name(name)
    except ValidationError as exc:
        raise click.BadParameter(exc.message, param_hint="NAME") from None
    if callback_url is not None:
        try:
            check_callback_url("--callback-url", callback_url)
        except ValidationError as exc:
            raise click.BadParameter(exc.message, param_hint="--callback-url") from None
    rt = runtime()
    try:
        created = stored(lambda: rt.store.create_api_key(name, callback_url))
    except ValidationError as exc:  # the name is taken
        raise click.BadParameter(exc.message, param_hint="NAME") from None
    key = created.key
    click.echo(f"created API key {key.name} ({key.id})")
    click.echo(f"  API key:        {created.token}")
    click.echo(f"  webhook secret: {webhook_secret(rt.settings.secret_key, key.id)}")
    click.echo(f"  callback URL:   {key.callback_url or '- (none: no webhooks are sent)'}")
    click.echo(
        "Both are shown this once and cannot be shown again: store them now. Send the key as "
        "'Authorization: Bearer <API key>'; verify webhooks with the secret (Standard Webhooks)."
    )


@api_key.command("list")
def list_keys() -> None:
    """List the API keys: name, id, created, revoked, callback URL (never a secret)."""
    keys = stored(runtime().store.list_api_keys)
    if not keys:
        click.echo("no API keys (create one: sipguard api-key create NAME)")
        return
    width = max(len("NAME"), *(len(key.name) for key in keys))
    click.echo(f"{'NAME'.ljust(width)}  {'ID':<20}  {'CREATED':<19}  {'REVOKED':<19}  CALLBACK URL")
    for key in keys:
        click.echo(
            f"{key.name.ljust(width)}  {key.id:<20}  {when(key.created_at):<19}  "
            f"{when(key.revoked_at):<19}  {key.callback_url or '-'}"
        )


@api_key.command("revoke")
@click.argument("name_or_id")
def revoke(name_or_id: str) -> None:
    """Revoke the API key NAME_OR_ID at once, on every instance (revoking twice is harmless)."""
    revocation = stored(lambda: runtime().store.revoke_api_key(name_or_id))
    if revocation is None:
        raise click.BadParameter(
            f"no API key is named or has the id {name_or_id!r}", param_hint="NAME_OR_ID"
        )
    key = revocation.key
    if revocation.already:
        click.echo(f"API key {key.name} ({key.id}) was revoked already, at {when(key.revoked_at)}")
    else:
        click.echo(f"revoked API key {key.name} ({key.id})")
