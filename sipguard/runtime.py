"""The services one app instance runs with, built once in create_app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

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
        """Return a Plivo REST client for the configured account (auth ID + newest token)."""
        return Account.from_settings(self.settings).api()
