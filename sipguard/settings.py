"""Typed settings from the environment, validated once at start-up.

`SETTINGS` is the one table of every environment variable the project reads: the app's own
(`load_settings`), gunicorn's (gunicorn.conf.py), the sandbox's and the demo's. The test
fixtures and the
bench clear the same names, so a developer's shell never changes what they see.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from sipguard.errors import ConfigError
from sipguard.notify.alerts import SLACK, WEBHOOK, Receiver
from sipguard.notify.signing import check_secret

MIN_SECRET_KEY_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16

# Who reads a setting: the app (load_settings), gunicorn (gunicorn.conf.py), the sandbox or
# devtools (make demo).
APP, GUNICORN, SANDBOX, DEVTOOLS = "app", "gunicorn", "sandbox", "devtools"

Parser = Callable[[str, str], Any]


def _secret(environ: Mapping[str, str], name: str) -> str | None:
    """Read NAME, or the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    value = environ.get(name, "").strip()
    path = environ.get(f"{name}_FILE", "").strip()
    if value and path:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            # The path is not echoed: a secret pasted here by mistake must not reach a log.
            raise ConfigError(
                f"{name}_FILE: cannot read the file it names ({exc.strerror})"
            ) from None
        except UnicodeDecodeError:
            # Neither the offending byte nor its position: both tell something of the secret.
            raise ConfigError(f"{name}_FILE: the file it names is not UTF-8 text") from None
        if not value:
            raise ConfigError(f"{name}_FILE: the file it names is empty")
    return value or None


@dataclass(frozen=True)
class Setting:
    """One environment variable: its parser, its default and whether it is a secret.

    A secret may come from the file NAME_FILE names instead, and no message ever echoes it.
    `parse(name, raw)` gets the stripped, non-empty value; an unset or blank one is `default`.
    """

    name: str
    parse: Parser
    default: Any = None
    secret: bool = False
    reader: str = APP
    # The Settings attribute it fills (load_settings reads every setting that has one).
    attribute: str | None = None
    # Set for a required setting: the message, saying what to set, when it is missing.
    missing: str | None = None
    # The attribute (read earlier) that, when truthy, makes this setting optional.
    unless: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Return the variables this setting is read from."""
        return (self.name, f"{self.name}_FILE") if self.secret else (self.name,)

    def read(self, environ: Mapping[str, str], read: Mapping[str, Any] | None = None) -> Any:
        """Return the parsed value; raise ConfigError saying what to set.

        `read` holds the attributes read before this one, for `unless`.
        """
        value = self.read_optional(environ)
        if self.missing and not value and not (self.unless and (read or {}).get(self.unless)):
            raise ConfigError(self.missing)
        return value

    def read_optional(self, environ: Mapping[str, str]) -> Any:
        """Return the parsed value, or the default when unset, even for a required setting."""
        raw = (_secret(environ, self.name) if self.secret else environ.get(self.name, "")) or ""
        raw = raw.strip()
        return self.parse(self.name, raw) if raw else self.default


def _text(name: str, raw: str) -> str:
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _tokens(name: str, raw: str) -> tuple[str, ...]:
    return tuple(token.strip() for token in raw.split(",") if token.strip())


def _whole(minimum: int) -> Parser:
    """Parse a whole number of at least `minimum`."""

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}")
        return value

    return parse


def _seconds(minimum: int) -> Parser:
    whole = _whole(minimum)
    return lambda name, raw: timedelta(seconds=whole(name, raw))


MAX_RETRY_PAUSES = 32


def _pauses(name: str, raw: str) -> tuple[int, ...]:
    """Parse comma-separated whole seconds, each at least 1 (a retry schedule)."""
    whole = _whole(1)
    pauses = tuple(whole(name, part) for part in raw.split(","))
    if len(pauses) > MAX_RETRY_PAUSES:
        raise ConfigError(f"{name} lists more than {MAX_RETRY_PAUSES} pauses")
    return pauses


def _flag(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("0", "false", "no", "off"):
        return False
    if lowered in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be true or false, got {lowered!r}")


def _base_url(name: str, raw: str) -> str:
    try:
        parts = urlsplit(raw)  # raises on a malformed IPv6 host, e.g. http://[::1
        port = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        parts, port = urlsplit(""), -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(
            f"{name} must be an absolute http(s) URL with a host (and a valid port), "
            "e.g. https://voice.example.com"
        )
    if parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise ConfigError(f"{name} must not have a query or #fragment")
    return raw.rstrip("/")


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{name} must be DEBUG, INFO, WARNING or ERROR")
    return level


_SECRET_KEY_MISSING = (
    f"SECRET_KEY must be set to at least {MIN_SECRET_KEY_LENGTH} random characters "
    '(e.g. python -c "import secrets; print(secrets.token_urlsafe(48))"), '
    "or SECRET_KEY_FILE to a file holding it"
)


def _secret_key(name: str, raw: str) -> str:
    if len(raw) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(_SECRET_KEY_MISSING)
    return raw


def _metrics_token(name: str, raw: str) -> str:
    if len(raw) < MIN_METRICS_TOKEN_LENGTH:
        raise ConfigError(f"{name} must be at least {MIN_METRICS_TOKEN_LENGTH} random characters")
    return raw


def _password_hash(name: str, raw: str) -> str:
    if not raw.startswith(("scrypt:", "pbkdf2:")):
        raise ConfigError(
            f"{name} must be a password hash, not a password: make one with "
            "`flask --app app:create_app monitor hash-password` (reads the password from stdin)"
        )
    return raw


def _receiver_url(name: str, raw: str) -> str:
    """An alert receiver: https, or plain http to a loopback address (the URL is never echoed,
    since a Slack webhook URL is itself a secret)."""
    try:
        parts = urlsplit(raw)
        host, _port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        raise ConfigError(f"{name} must be an absolute https URL with a valid host") from None
    if parts.scheme == "https" and host:
        return raw
    if parts.scheme == "http" and (host == "localhost" or _loopback(host)):
        return raw
    raise ConfigError(f"{name} must be an https URL (plain http only to a loopback address)")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _webhook_secret(name: str, raw: str) -> str:
    try:
        check_secret(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc} (e.g. whsec_ and 32 random bytes in base64)") from None
    return raw


def _table(*settings: Setting) -> dict[str, Setting]:
    return {setting.name: setting for setting in settings}


# load_settings reads the app's settings in this order, so the first problem is reported first.
SETTINGS: Mapping[str, Setting] = _table(
    Setting(
        "PLIVO_AUTH_TOKEN",
        _tokens,
        (),
        secret=True,
        attribute="auth_tokens",
        missing=(
            "PLIVO_AUTH_TOKEN is not set: set it to your Plivo auth token (comma-separated, "
            "newest first, while rotating) or PLIVO_AUTH_TOKEN_FILE to a file holding it. "
            "For local development `make run` generates one."
        ),
    ),
    Setting(
        "SECRET_KEY", _secret_key, secret=True, attribute="secret_key", missing=_SECRET_KEY_MISSING
    ),
    Setting("TRUSTED_PROXY_COUNT", _whole(0), 0, attribute="trusted_proxy_count"),
    Setting(
        "PUBLIC_BASE_URL",
        _base_url,
        attribute="public_base_url",
        missing=(
            "PUBLIC_BASE_URL is not set: set it to the base URL exactly as configured in Plivo "
            "(e.g. https://voice.example.com), or set TRUSTED_PROXY_COUNT to the number of "
            "proxies in front of the app to rebuild it from X-Forwarded-* headers"
        ),
        unless="trusted_proxy_count",
    ),
    Setting(
        "VOICE_CONFIG",
        _path,
        attribute="voice_config",
        missing=(
            "VOICE_CONFIG is not set: point it at your routing and agent TOML "
            "(config/voice.sample.toml documents every key)"
        ),
    ),
    # Unset: sipguard.db under the app's instance folder (load_settings fills it in).
    Setting("DATABASE_URL", _text, attribute="database_url"),
    Setting("LOG_LEVEL", _log_level, "INFO", attribute="log_level"),
    Setting("PLIVO_MAIN_AUTH_TOKEN", _tokens, (), secret=True, attribute="main_auth_tokens"),
    Setting("PLIVO_AUTH_ID", _text, attribute="auth_id"),
    Setting("PLIVO_ACCEPT_V2", _flag, False, attribute="accept_v2"),
    Setting("NONCE_TTL_SECONDS", _seconds(1), timedelta(minutes=10), attribute="nonce_ttl"),
    Setting("HANDOFF_TOKEN_TTL_SECONDS", _whole(1), 4 * 3600, attribute="handoff_ttl_seconds"),
    Setting("MAX_CONTENT_LENGTH", _whole(1024), 64 * 1024, attribute="max_content_length"),
    Setting("PLIVO_API_URL", _base_url, "https://api.plivo.com", attribute="plivo_api_url"),
    Setting("PLIVO_API_TIMEOUT_SECONDS", _whole(1), 10, attribute="plivo_api_timeout"),
    Setting("METRICS_TOKEN", _metrics_token, secret=True, attribute="metrics_token"),
    Setting(
        "MONITOR_PASSWORD_HASH", _password_hash, secret=True, attribute="monitor_password_hash"
    ),
    Setting("RETENTION_DAYS", _whole(1), 30, attribute="retention_days"),
    Setting("AUTO_MIGRATE", _flag, True, attribute="auto_migrate"),
    # `sipguard worker`: how long one webhook delivery may wait for the receiver (to connect, then
    # to answer), and how long the worker sleeps when nothing is due.
    Setting("WEBHOOK_TIMEOUT_SECONDS", _whole(1), 10, attribute="webhook_timeout"),
    Setting("WEBHOOK_POLL_SECONDS", _whole(1), 1, attribute="webhook_poll"),
    # The pause after each failed delivery, in seconds; the last one repeats until the event is
    # given up (the default is Standard Webhooks' style of schedule, sipguard.notify.delivery).
    Setting(
        "WEBHOOK_RETRY_SECONDS",
        _pauses,
        (5, 30, 120, 600, 1800, 3600, 10800, 21600),
        attribute="webhook_retry_seconds",
    ),
    # Pushed alerts: a Slack-compatible incoming webhook and/or a generic signed JSON webhook,
    # delivered by `sipguard worker`; one per condition and subject per window.
    Setting("ALERT_SLACK_URL", _receiver_url, secret=True, attribute="alert_slack_url"),
    Setting("ALERT_WEBHOOK_URL", _receiver_url, attribute="alert_webhook_url"),
    Setting("ALERT_WEBHOOK_SECRET", _webhook_secret, secret=True, attribute="alert_webhook_secret"),
    Setting("ALERT_WINDOW_SECONDS", _seconds(60), timedelta(minutes=15), attribute="alert_window"),
    Setting("ALERT_REFUSED_PER_MINUTE", _whole(1), 20, attribute="alert_refused_per_minute"),
    # gunicorn.conf.py reads these (gunicorn itself GUNICORN_CMD_ARGS). BIND unset: 0.0.0.0:PORT.
    Setting("BIND", _text, reader=GUNICORN),
    Setting("PORT", _whole(1), 8000, reader=GUNICORN),
    Setting("WEB_CONCURRENCY", _whole(1), 2, reader=GUNICORN),
    # Threads per gunicorn worker (gthread above 1); the app sizes its database pool by it too.
    Setting("WEB_THREADS", _whole(1), 1, attribute="web_threads"),
    Setting("METRICS_BIND", _text, reader=GUNICORN),
    # Unset: gunicorn.conf.py makes a temporary directory (the app's metrics read it too).
    Setting("PROMETHEUS_MULTIPROC_DIR", _path, reader=GUNICORN),
    Setting("GUNICORN_CMD_ARGS", _text, reader=GUNICORN),
    # The sandbox's world; unset: sandbox/sample.toml, which the package carries.
    Setting("SANDBOX_CONFIG", _path, reader=SANDBOX),
    # `make demo` keeps its working directory (logs, database) instead of removing it.
    Setting("DEMO_KEEP", _flag, False, reader=DEVTOOLS),
    # `make demo` fails instead of skipping its real-SIP run without sipp and kamailio.
    Setting("REQUIRE_SIP", _flag, False, reader=DEVTOOLS),
)


def read_environment(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return what the settings are read from: ./.env, then the process environment, then
    `overrides` (tests, the CLI's own values), each later source winning."""
    dotenv = {k: v for k, v in dotenv_values(Path.cwd() / ".env").items() if v is not None}
    return {**dotenv, **os.environ, **(overrides or {})}


def environ_names() -> Iterator[str]:
    """Yield every environment variable in the table, NAME_FILE variants included."""
    for setting in SETTINGS.values():
        yield from setting.names


@dataclass(frozen=True)
class Settings:
    """Everything the app needs from its environment (the defaults are in SETTINGS)."""

    auth_tokens: tuple[str, ...] = field(repr=False)
    secret_key: str = field(repr=False)
    trusted_proxy_count: int
    public_base_url: str | None
    voice_config: Path
    database_url: str = field(repr=False)  # may hold a database password
    log_level: str
    main_auth_tokens: tuple[str, ...] = field(repr=False)
    auth_id: str | None
    accept_v2: bool
    nonce_ttl: timedelta
    handoff_ttl_seconds: int
    max_content_length: int
    plivo_api_url: str
    plivo_api_timeout: int
    metrics_token: str | None = field(repr=False)
    monitor_password_hash: str | None = field(repr=False)
    retention_days: int
    auto_migrate: bool
    webhook_timeout: int
    webhook_poll: int
    webhook_retry_seconds: tuple[int, ...]
    web_threads: int
    alert_slack_url: str | None = field(repr=False)
    alert_webhook_url: str | None
    alert_webhook_secret: str | None = field(repr=False)
    alert_window: timedelta
    alert_refused_per_minute: int

    def alert_receivers(self) -> dict[str, Receiver]:
        """Return the configured alert receivers by their outbox owner id."""
        found = {}
        if self.alert_slack_url:
            found[SLACK] = Receiver(self.alert_slack_url)
        if self.alert_webhook_url and self.alert_webhook_secret:
            found[WEBHOOK] = Receiver(self.alert_webhook_url, self.alert_webhook_secret)
        return found

    def secrets(self) -> tuple[str, ...]:
        """Return every configured secret, for the log redaction filter."""
        optional = (
            self.metrics_token,
            self.monitor_password_hash,
            self.alert_slack_url,
            self.alert_webhook_secret,
        )
        extra = tuple(s for s in optional if s)
        return (*self.auth_tokens, *self.main_auth_tokens, self.secret_key, *extra)


def load_settings(environ: Mapping[str, str], instance_path: Path) -> Settings:
    """Build Settings from environment variables; raise ConfigError saying what to set."""
    read: dict[str, Any] = {}
    for setting in SETTINGS.values():
        if setting.attribute is not None:
            read[setting.attribute] = setting.read(environ, read)
    read["database_url"] = read["database_url"] or f"sqlite:///{instance_path / 'sipguard.db'}"
    if bool(read["alert_webhook_url"]) != bool(read["alert_webhook_secret"]):
        raise ConfigError(
            "ALERT_WEBHOOK_URL and ALERT_WEBHOOK_SECRET go together: the secret (whsec_...) "
            "signs every alert sent to the URL"
        )
    return Settings(**read)
