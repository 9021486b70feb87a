"""`sipguard`: the command users run (the package's console script).

It offers the commands `flask --app app:create_app` has, without needing Flask's `--app`:
`sipauth` and `call` read only the Plivo account from the environment; `handoff`, `report`,
`db`, `voice`, `api-key`, `agents`, `worker` and `sign-request` build the app from its settings
first, as the server does. Commands installed packages add (the sandbox's) come through the
"sipguard.commands" entry points. A missing or bad setting prints one line naming what to set
and exits 2; a database that does not answer prints one line naming the error's type and exits 5.
"""

from __future__ import annotations

from typing import Any

import click
from flask.cli import ScriptInfo
from sqlalchemy.exc import SQLAlchemyError

from sipguard.commands import local, rest
from sipguard.commands.context import Standalone
from sipguard.commands.plugins import plugins
from sipguard.errors import ConfigError, StoreUnavailable

HELP = """Plivo SIP Guard: SIP authentication, calls, handoffs to agents, reports.

Settings come from the environment (and ./.env). sipauth and call need only PLIVO_AUTH_ID and
PLIVO_AUTH_TOKEN (PLIVO_API_URL for a sandbox); the other commands need the app's settings.
"""


class _Sipguard(click.Group):
    """The top group: reports a configuration it cannot use in one line, exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:  # e.g. the app, built for a command, refused its settings
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(rest.EXIT_INVALID)
        except StoreUnavailable as exc:  # names the error's type only, never the URL
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(rest.EXIT_UNAVAILABLE)
        except SQLAlchemyError as exc:  # e.g. `db upgrade`, which migrates outside the store
            click.echo(f"error: database error ({type(exc).__name__})", err=True)
            ctx.exit(rest.EXIT_UNAVAILABLE)


@click.group("sipguard", cls=_Sipguard, help=HELP, epilog=rest.EXIT_CODES_HELP)
@click.pass_context
def cli(ctx: click.Context) -> None:
    if not isinstance(ctx.obj, ScriptInfo):  # a test may hand one in
        ctx.obj = Standalone()


for _command in (*local.COMMANDS, *plugins()):
    cli.add_command(_command)


def main() -> None:
    """Run `sipguard` (the console script's entry point)."""
    cli(prog_name="sipguard")
