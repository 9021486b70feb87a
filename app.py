"""Application factory: `gunicorn 'app:create_app()'` or `flask --app app:create_app ...`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

import webhooks
from sipguard import logs
from sipguard.calls.handoff import HandoffSigner
from sipguard.calls.signature import Keyring
from sipguard.calls.voice_config import load_voice_config
from sipguard.commands import local
from sipguard.runtime import Runtime
from sipguard.settings import load_settings, read_environment
from sipguard.store import Alerting, Store
from webhooks.context import EXTENSION

log = logging.getLogger("sipguard")


def create_app(config: Mapping[str, str] | None = None) -> Flask:
    """Build the app; refuse to start (ConfigError) on a configuration it cannot use."""
    app = Flask(__name__, static_folder=None)
    environ = read_environment(config)
    settings = load_settings(environ, Path(app.instance_path))
    voice = load_voice_config(settings.voice_config, environ)
    store = Store(settings.database_url, threads=settings.web_threads)
    store.alerting = Alerting(
        receivers=tuple(settings.alert_receivers()),
        window=settings.alert_window,
        refused_per_minute=settings.alert_refused_per_minute,
    )
    rt = Runtime(
        settings=settings,
        voice=voice,
        keyring=Keyring(settings.auth_tokens, settings.main_auth_tokens, settings.accept_v2),
        store=store,
        handoff=HandoffSigner(settings.secret_key, settings.handoff_ttl_seconds),
    )
    logs.configure(settings.log_level, rt.secrets())
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME="sipguard_session",
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=(settings.public_base_url or "https:").startswith("https:"),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        SESSION_REFRESH_EACH_REQUEST=False,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        MAX_FORM_MEMORY_SIZE=settings.max_content_length,
    )
    app.extensions[EXTENSION] = rt
    if settings.auto_migrate:
        store.upgrade_if_reachable()
    webhooks.init_app(app)
    local.init_app(app)
    if settings.trusted_proxy_count:
        n = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n
        )
    log.info(
        "started: %d rule(s), %d group(s), database %s, signatures %s",
        len(voice.policy.rules),
        len(voice.groups),
        store.dialect,
        "V3/Ma-V3" + ("+V2" if settings.accept_v2 else ""),
    )
    return app
