"""The services one app instance runs with, built once in create_app."""

from __future__ import annotations

from dataclasses import dataclass

from sipguard.calls.handoff import HandoffSigner
from sipguard.calls.signature import Keyring
from sipguard.calls.voice_config import VoiceConfig
from sipguard.errors import ConfigError
from sipguard.plivo.api import PlivoAPI
from sipguard.settings import Settings
from sipguard.store import Store


@dataclass(frozen=True)
class Runtime:
    """Settings, voice config and the services built from them."""

    settings: Settings
    voice: VoiceConfig
    keyring: Keyring
    store: Store
    handoff: HandoffSigner

    def secrets(self) -> tuple[str, ...]:
        """Return every secret the app holds, for the log redaction filter."""
        return (*self.settings.secrets(), *self.voice.secrets())

    def plivo(self) -> PlivoAPI:
        """Return a Plivo REST client for the configured account (auth ID + newest token)."""
        if not self.settings.auth_id:
            raise ConfigError(
                "PLIVO_AUTH_ID is not set: the REST commands need your account's auth ID "
                "(Plivo console, overview page) beside PLIVO_AUTH_TOKEN"
            )
        return PlivoAPI(
            self.settings.auth_id,
            self.settings.auth_tokens[0],
            base_url=self.settings.plivo_api_url,
            timeout=self.settings.plivo_api_timeout,
        )
