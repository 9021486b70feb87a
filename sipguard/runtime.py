"""The services one app instance runs with, built once in create_app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

from sipguard.calls.handoff import HandoffSigner
from sipguard.calls.signature import Keyring
from sipguard.calls.voice_config import VoiceConfig
from sipguard.plivo.account import Account
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
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # business hours' "now"

    def secrets(self) -> tuple[str, ...]:
        """Return every secret the app holds, for the log redaction filter."""
        return (*self.settings.secrets(), *self.voice.secrets())

    def plivo(self) -> PlivoAPI:
        """Return the Plivo REST client for the configured account (auth ID + newest token).

        Built once (ConfigError, and again on the next call, while the auth ID is not set): its
        HTTP session keeps the connection to Plivo's API open, so a handoff's Transfer does not
        open a new TLS connection each time.
        """
        return self._plivo

    @cached_property
    def _plivo(self) -> PlivoAPI:
        return Account.from_settings(self.settings).api()
