"""The services one app instance runs with, built once in create_app."""

from __future__ import annotations

from dataclasses import dataclass

from handoff import HandoffSigner
from settings import Settings
from signature import Keyring
from store import Store
from voice_config import VoiceConfig


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
