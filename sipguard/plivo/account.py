"""The Plivo account the REST commands act for, read from the environment alone.

Managing SIP auth or placing a call needs the account's auth ID and token and where Plivo's
API is, nothing of the web app's configuration (SECRET_KEY, VOICE_CONFIG, PUBLIC_BASE_URL).
The variables are read through the settings table, so they mean the same thing here as in
the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sipguard.errors import ConfigError
from sipguard.plivo.api import DEFAULT_BASE_URL, PlivoAPI
from sipguard.settings import SETTINGS, Settings

DEFAULT_TIMEOUT: int = SETTINGS["PLIVO_API_TIMEOUT_SECONDS"].default


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
    auth_id = SETTINGS["PLIVO_AUTH_ID"].read_optional(environ) or None
    tokens = SETTINGS["PLIVO_AUTH_TOKEN"].read_optional(environ)
    found = (("PLIVO_AUTH_ID", auth_id), ("PLIVO_AUTH_TOKEN", tokens))
    missing = [name for name, value in found if not value]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f"{' and '.join(missing)} {verb} not set: the REST commands need your Plivo "
            "account's auth ID and auth token (Plivo console, overview page; "
            "PLIVO_AUTH_TOKEN_FILE may name a file holding the token)"
        )
    return Account(
        auth_id,
        tokens[0],
        SETTINGS["PLIVO_API_URL"].read(environ),
        SETTINGS["PLIVO_API_TIMEOUT_SECONDS"].read(environ),
    )
