"""What a command runs with: the `sipguard` command's environment, or the Flask app's settings.

Under `flask --app app:create_app` (and a Flask test runner) the app is loaded first and every
command reads its settings. Under `sipguard` nothing is built up front: the REST commands read
the Plivo account from the environment alone, and only a command that needs the app (its
database, voice config or secrets) builds it, through the same ScriptInfo Flask's
`with_appcontext` uses.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from sipguard.errors import ConfigError
from sipguard.plivo.account import Account, load_account
from sipguard.plivo.outbound import UrlFor
from sipguard.runtime import Runtime
from sipguard.settings import SETTINGS, read_environment
from webhooks.context import EXTENSION, external_url


class Standalone(ScriptInfo):
    """The `sipguard` command's context: the environment (and ./.env), the app on demand."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(create_app=self._build, set_debug_flag=False)
        self.environ = dict(environ) if environ is not None else read_environment()

    def account(self) -> Account:
        """Return the Plivo account in the environment; ConfigError naming what to set."""
        return load_account(self.environ)

    def webhook_url(self, endpoint: str, **values: Any) -> str:
        """Return this app's URL for `endpoint` from PUBLIC_BASE_URL and the routes alone."""
        base = SETTINGS["PUBLIC_BASE_URL"].read_optional(self.environ)
        if not base:
            raise ConfigError(
                "PUBLIC_BASE_URL is not set: set it to this app's public base URL, or pass "
                "the webhook URLs as options (call: --answer-url and --hangup-url)"
            )
        return str(base) + _routes().build(endpoint, values)

    def _build(self) -> Flask:
        from app import create_app  # only the commands that need the app load it

        try:
            return create_app(self.environ)
        except NoSuchModuleError as exc:  # an unknown dialect or driver; the message names it
            raise ConfigError(f"DATABASE_URL cannot be used: {exc}") from None
        except (ArgumentError, ValueError):  # make_url's: their messages quote the password
            raise ConfigError(
                "DATABASE_URL is not a database URL: use dialect://user:password@host:port/name"
            ) from None


@functools.cache
def _routes() -> Any:
    """This app's webhook routes, bound for building paths; no settings are read."""
    import webhooks.views

    routes = Flask("sipguard.routes", static_folder=None)
    routes.register_blueprint(webhooks.views.bp)
    return routes.url_map.bind("localhost", script_name="/")


def _info() -> ScriptInfo:
    return click.get_current_context().ensure_object(ScriptInfo)


def app_runtime() -> Runtime:
    """Return the app's runtime, building the app under `sipguard` (ConfigError if unusable)."""
    runtime: Runtime = _info().load_app().extensions[EXTENSION]
    return runtime


def environment() -> Mapping[str, str]:
    """Return the variables commands read: `sipguard`'s environment, else the process's."""
    info = _info()
    return info.environ if isinstance(info, Standalone) else os.environ


def account() -> Account:
    """Return the Plivo account the REST commands act for."""
    info = _info()
    if isinstance(info, Standalone):
        return info.account()
    return Account.from_settings(app_runtime().settings)


def webhook_urls() -> UrlFor:
    """Return the function giving the absolute URLs of this app's webhooks."""
    info = _info()
    if isinstance(info, Standalone):
        return info.webhook_url
    app = info.load_app()

    def url_for(endpoint: str, **values: Any) -> str:
        with app.app_context():
            return external_url(endpoint, **values)

    return url_for
