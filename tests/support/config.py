"""The suites' configuration: test tokens, canary secrets and the app config built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipguard.settings import environ_names

TESTS = Path(__file__).resolve().parent.parent
DATA = TESTS / "data"
TOKEN = "test-account-token-V3-0123456789"
OLD_TOKEN = "test-account-token-old-9876543210"
MAIN_TOKEN = "test-main-account-token-ABCDEFGH"
SECRET_KEY = "test-secret-key-" + "s" * 32
BASE_URL = "https://voice.example.test"
AUTH_ID = "MATESTAUTHID00000001"
API = f"https://api.plivo.com/v1/Account/{AUTH_ID}/"
# Agent passwords of tests/data/voice.toml: distinctive, so finding one in output is a leak.
CANARIES = {
    "AGENT_ALICE_PASSWORD": "Canary-Alice-Pw-a1ice",
    "AGENT_BOB_PASSWORD": "Canary-Bob-Pw-b0bby",
    "AGENT_ERIN_PASSWORD": "Canary-Erin-Pw-3r1n",
}
CAROL_PASSWORD = (DATA / "carol.pw").read_text().strip()
ALL_CANARIES = (*CANARIES.values(), CAROL_PASSWORD)


def app_config(database_url: str) -> dict[str, str]:
    """Return the configuration the suites' apps run with, on `database_url`."""
    return {
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": TOKEN,
        "PLIVO_MAIN_AUTH_TOKEN": MAIN_TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "PUBLIC_BASE_URL": BASE_URL,
        "VOICE_CONFIG": str(DATA / "voice.toml"),
        "DATABASE_URL": database_url,
        **CANARIES,
    }


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every variable of the settings table and leave any developer .env behind.

    A developer's own shell must not change what the tests see.
    """
    for name in environ_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(TESTS)  # it holds no .env
