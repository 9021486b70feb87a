"""Typed settings from the environment, validated once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sipguard.errors import ConfigError

MIN_SECRET_KEY_LENGTH = 32


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
        if not value:
            raise ConfigError(f"{name}_FILE: the file it names is empty")
    return value or None


def _tokens(raw: str | None) -> tuple[str, ...]:
    return tuple(token.strip() for token in (raw or "").split(",") if token.strip())


def _int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _base_url(raw: str, name: str = "PUBLIC_BASE_URL") -> str:
    parts = urlsplit(raw)
    try:
        port = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(
            f"{name} must be an absolute http(s) URL with a host (and a valid port), "
            "e.g. https://voice.example.com"
        )
    if parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise ConfigError(f"{name} must not have a query or #fragment")
    return raw.rstrip("/")


@dataclass(frozen=True)
class Settings:
    """Everything the app needs from its environment."""

    auth_tokens: tuple[str, ...] = field(repr=False)
    secret_key: str = field(repr=False)
    voice_config: Path
    database_url: str = field(repr=False)  # may hold a database password
    public_base_url: str | None = None
    trusted_proxy_count: int = 0
    main_auth_tokens: tuple[str, ...] = field(default=(), repr=False)
    auth_id: str | None = None
    accept_v2: bool = False
    nonce_ttl: timedelta = timedelta(minutes=10)
    handoff_ttl_seconds: int = 4 * 3600
    max_content_length: int = 64 * 1024
    log_level: str = "INFO"
    plivo_api_url: str = "https://api.plivo.com"
    plivo_api_timeout: int = 10
    metrics_token: str | None = field(default=None, repr=False)
    monitor_password_hash: str | None = field(default=None, repr=False)
    retention_days: int = 30

    def secrets(self) -> tuple[str, ...]:
        """Return every configured secret, for the log redaction filter."""
        extra = tuple(s for s in (self.metrics_token, self.monitor_password_hash) if s)
        return (*self.auth_tokens, *self.main_auth_tokens, self.secret_key, *extra)


def load_settings(environ: Mapping[str, str], instance_path: Path) -> Settings:
    """Build Settings from environment variables; raise ConfigError saying what to set."""
    auth_tokens = _tokens(_secret(environ, "PLIVO_AUTH_TOKEN"))
    if not auth_tokens:
        raise ConfigError(
            "PLIVO_AUTH_TOKEN is not set: set it to your Plivo auth token (comma-separated, "
            "newest first, while rotating) or PLIVO_AUTH_TOKEN_FILE to a file holding it. "
            "For local development `make run` generates one."
        )
    secret_key = _secret(environ, "SECRET_KEY")
    if not secret_key or len(secret_key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"SECRET_KEY must be set to at least {MIN_SECRET_KEY_LENGTH} random characters "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(48))"), '
            "or SECRET_KEY_FILE to a file holding it"
        )
    trusted_proxy_count = _int(environ, "TRUSTED_PROXY_COUNT", 0)
    raw_base = environ.get("PUBLIC_BASE_URL", "").strip()
    if not raw_base and trusted_proxy_count == 0:
        raise ConfigError(
            "PUBLIC_BASE_URL is not set: set it to the base URL exactly as configured in Plivo "
            "(e.g. https://voice.example.com), or set TRUSTED_PROXY_COUNT to the number of "
            "proxies in front of the app to rebuild it from X-Forwarded-* headers"
        )
    voice_config = environ.get("VOICE_CONFIG", "").strip()
    if not voice_config:
        raise ConfigError(
            "VOICE_CONFIG is not set: point it at your routing and agent TOML "
            "(config/voice.sample.toml documents every key)"
        )
    database_url = environ.get("DATABASE_URL", "").strip() or (
        f"sqlite:///{instance_path / 'sipguard.db'}"
    )
    log_level = environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    return Settings(
        auth_tokens=auth_tokens,
        main_auth_tokens=_tokens(_secret(environ, "PLIVO_MAIN_AUTH_TOKEN")),
        auth_id=environ.get("PLIVO_AUTH_ID", "").strip() or None,
        secret_key=secret_key,
        public_base_url=_base_url(raw_base) if raw_base else None,
        trusted_proxy_count=trusted_proxy_count,
        voice_config=Path(voice_config),
        database_url=database_url,
        accept_v2=_flag(environ, "PLIVO_ACCEPT_V2"),
        nonce_ttl=timedelta(seconds=_int(environ, "NONCE_TTL_SECONDS", 600, minimum=1)),
        handoff_ttl_seconds=_int(environ, "HANDOFF_TOKEN_TTL_SECONDS", 4 * 3600, minimum=1),
        max_content_length=_int(environ, "MAX_CONTENT_LENGTH", 64 * 1024, minimum=1024),
        log_level=log_level,
        plivo_api_url=_base_url(
            environ.get("PLIVO_API_URL", "").strip() or "https://api.plivo.com", "PLIVO_API_URL"
        ),
        plivo_api_timeout=_int(environ, "PLIVO_API_TIMEOUT_SECONDS", 10, minimum=1),
        metrics_token=_metrics_token(environ),
        monitor_password_hash=_password_hash(environ),
        retention_days=_int(environ, "RETENTION_DAYS", 30, minimum=1),
    )


MIN_METRICS_TOKEN_LENGTH = 16


def _metrics_token(environ: Mapping[str, str]) -> str | None:
    token = _secret(environ, "METRICS_TOKEN")
    if token is not None and len(token) < MIN_METRICS_TOKEN_LENGTH:
        raise ConfigError(
            f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} random characters"
        )
    return token


def _password_hash(environ: Mapping[str, str]) -> str | None:
    value = _secret(environ, "MONITOR_PASSWORD_HASH")
    if value is not None and not value.startswith(("scrypt:", "pbkdf2:")):
        raise ConfigError(
            "MONITOR_PASSWORD_HASH must be a password hash, not a password: make one with "
            "`flask --app app:create_app monitor hash-password` (reads the password from stdin)"
        )
    return value
