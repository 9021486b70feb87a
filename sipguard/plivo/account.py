"""The Plivo account the REST commands act for, read from the environment alone.

Managing SIP auth or placing a call needs the account's auth ID and token and where Plivo's
API is, nothing of the web app's configuration (SECRET_KEY, VOICE_CONFIG, PUBLIC_BASE_URL).
The variables are parsed by the settings module's own readers, so they mean the same thing here
as in the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sipguard.errors import ConfigError
from sipguard.plivo.api import DEFAULT_BASE_URL, PlivoAPI
from sipguard.settings import Settings, _base_url, _int, _secret, _tokens

DEFAULT_TIMEOUT = 10


@dataclass(frozen=True)
class Account:
    """An account's auth ID and newest auth token, and the API it is reached at."""

    auth_id: str | None
    auth_token: str = field(repr=False)
    api_url: str = DEFAULT_BASE_URL
    timeout: int = DEFAULT_TIMEOUT

    @classmethod
    def from_settings(cls, settings: Settings) -> Account:
        """Return the account the app's settings name."""
        return cls(
            settings.auth_id,
            settings.auth_tokens[0],
            settings.plivo_api_url,
            settings.plivo_api_timeout,
        )

    def api(self) -> PlivoAPI:
        """Return a REST client for this account; ConfigError when the auth ID is not set."""
        if not self.auth_id:
            raise ConfigError(
                "PLIVO_AUTH_ID is not set: the REST commands need your account's auth ID "
                "(Plivo console, overview page) beside PLIVO_AUTH_TOKEN"
            )
        return PlivoAPI(self.auth_id, self.auth_token, base_url=self.api_url, timeout=self.timeout)


def load_account(environ: Mapping[str, str]) -> Account:
    """Read PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN(_FILE), PLIVO_API_URL, PLIVO_API_TIMEOUT_SECONDS.

    Raise ConfigError naming every variable that is missing, in one line.
    """
    auth_id = environ.get("PLIVO_AUTH_ID", "").strip() or None
    tokens = _tokens(_secret(environ, "PLIVO_AUTH_TOKEN"))
    found = (("PLIVO_AUTH_ID", auth_id), ("PLIVO_AUTH_TOKEN", tokens))
    missing = [name for name, value in found if not value]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f"{' and '.join(missing)} {verb} not set: the REST commands need your Plivo "
            "account's auth ID and auth token (Plivo console, overview page; "
            "PLIVO_AUTH_TOKEN_FILE may name a file holding the token)"
        )
    api_url = environ.get("PLIVO_API_URL", "").strip() or DEFAULT_BASE_URL
    return Account(
        auth_id,
        tokens[0],
        _base_url(api_url, "PLIVO_API_URL"),
        _int(environ, "PLIVO_API_TIMEOUT_SECONDS", DEFAULT_TIMEOUT, minimum=1),
    )
