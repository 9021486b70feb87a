"""The sandbox's TOML world: the sample loads, and every mistake is a ConfigError naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import digest
from sandbox.config import load_sandbox_config
from sandbox.factory import DEFAULT_CONFIG
from sipguard.errors import ConfigError

ENV = {"SANDBOX_ALICE_PBX_PASSWORD": "Alice-Pbx-Pw-1", "AGENT_BOB_PASSWORD": "Bob-Pw-22222"}
BASE = "http://127.0.0.1:5000"


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "sandbox.toml"
    path.write_text(text, encoding="utf-8")
    return load_sandbox_config(path, ENV if env is None else env, BASE)


def test_the_sample_loads_with_relative_urls_resolved_and_passwords_as_ha1() -> None:
    """sandbox/sample.toml (make demo's world) loads; PBX passwords are kept as HA1."""
    config = load_sandbox_config(DEFAULT_CONFIG, ENV, BASE)
    [app] = config.applications
    assert app.fields["answer_url"] == f"{BASE}/answer"
    assert app.numbers == ("+14155550199",)
    alice = config.endpoints["sip:alice@pbx.example.com"].auth
    assert alice is not None and alice.status == 407
    assert alice.ha1 == digest.ha1("alice", "pbx.example.com", ENV["SANDBOX_ALICE_PBX_PASSWORD"])
    assert ENV["SANDBOX_ALICE_PBX_PASSWORD"] not in repr(config)
    assert config.ai_urls == ("https://ai-agent.example.com/",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1", "unknown key"),
        ("sandbox = 5", "must be a table"),
        ("[sandbox]\nai_url = []", "unknown key"),
        ("[sandbox]\nai_urls = 'https://x/'", "ai_urls must be a list"),
        ("[sandbox]\nmessage_seconds = -1", "message_seconds must be a number"),
        ("applications = 3", "applications must be"),
        ("[[applications]]\napp_name = 'a'\nanswer_url = '/a'\nhangup = '/h'", "unknown key"),
        ("[[applications]]\napp_id = 'abc'\napp_name = 'a'\nanswer_url = '/a'", "app_id"),
        ("[[applications]]\napp_name = 'a'\nanswer_url = '/a'\nnumbers = ['x']", "numbers"),
        ("[endpoints.'pbx.example.com']", "not a SIP URI"),
        ("[endpoints.'sip:a@b.c']\nanswer = 'maybe'", "answer must be one of"),
        ("[endpoints.'sip:a@b.c']\ntalk = 'long'", "talk must be a number"),
        ("[endpoints.'sip:a@b.c']\nauth = 1", "must be a table"),
        ("[endpoints.'sip:a@b.c'.auth]\nrealm = 'r'\nusername = 'a'", "password_env is required"),
        (
            "[endpoints.'sip:a@b.c'.auth]\nrealm = 'r'\nusername = 'a'\npassword_env = 'NOPE'",
            "NOPE, which is not set",
        ),
        (
            "[endpoints.'sip:a@b.c'.auth]\nrealm='r'\nusername='a'\npassword_env='AGENT_BOB_PASSWORD'"
            "\nstatus = 403",
            "401 or 407",
        ),
        (
            "[endpoints.'sip:a@b.c'.auth]\nrealm='r'\nusername='a'\npassword_env='AGENT_BOB_PASSWORD'"
            "\nalgorithm = 'SHA-1'",
            "MD5 or SHA-256",
        ),
        (
            "[endpoints.'sip:a@b.c'.auth]\nrealm='r'\nusername='a'\npassword_env='AGENT_BOB_PASSWORD'"
            "\nreply = 'never'",
            "reply must be one of",
        ),
        ("not toml [", "SANDBOX_CONFIG"),
    ],
)
def test_mistakes_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Unknown keys and bad values fail at start-up with a message naming them."""
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_a_relative_url_needs_public_base_url(tmp_path: Path) -> None:
    """'/answer' is relative to the app's PUBLIC_BASE_URL; without one it cannot be resolved."""
    path = tmp_path / "sandbox.toml"
    path.write_text("[[applications]]\napp_name = 'a'\nanswer_url = '/answer'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="relative; set PUBLIC_BASE_URL"):
        load_sandbox_config(path, ENV, None)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable SANDBOX_CONFIG names the file instead of raising OSError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_sandbox_config(tmp_path / "absent.toml", ENV, BASE)
