"""create_app: settings precedence, refusal on unusable config, start-up with the database down."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from sipguard.errors import ConfigError
from tests.support.config import TOKEN
from tests.support.signing import inbound, make_signed_post


def test_dotenv_supplies_defaults_and_the_environment_wins(
    app_config: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "PLIVO_AUTH_TOKEN=token-from-dotenv\nNONCE_TTL_SECONDS=42\nHANDOFF_TOKEN_TTL_SECONDS=7\n"
    )
    monkeypatch.setenv("HANDOFF_TOKEN_TTL_SECONDS", "99")
    config = {k: v for k, v in app_config.items() if k != "PLIVO_AUTH_TOKEN"}
    app = create_app(config)
    settings = app.extensions["sipguard"].settings
    assert settings.auth_tokens == ("token-from-dotenv",)
    assert settings.nonce_ttl.total_seconds() == 42
    assert settings.handoff_ttl_seconds == 99  # the process environment beats .env
    post = make_signed_post(app.test_client())
    assert post("/hangup", inbound(), token="token-from-dotenv").status_code == 200
    assert post("/hangup", inbound(), token=TOKEN).status_code == 403


def test_explicit_overrides_beat_the_environment(
    app_config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "from-the-environment")
    app = create_app(app_config)
    assert app.extensions["sipguard"].settings.auth_tokens == (TOKEN,)


def test_unusable_config_refuses_to_start_saying_what_to_set(app_config: dict[str, str]) -> None:
    config = {k: v for k, v in app_config.items() if k != "PLIVO_AUTH_TOKEN"}
    with pytest.raises(ConfigError, match="PLIVO_AUTH_TOKEN is not set"):
        create_app(config)


def test_app_starts_and_answers_with_the_database_down(
    app_config: dict[str, str], app_logs
) -> None:
    app = create_app({**app_config, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/down"})
    errors = [r.getMessage() for r in app_logs.records if r.levelname == "ERROR"]
    assert any("database unreachable at start-up" in e for e in errors)
    post = make_signed_post(app.test_client())
    assert post("/answer", inbound(SIPAuthType="ip_acl")).status_code == 200
    assert post("/hangup", inbound()).status_code == 503
    assert app.test_client().get("/healthz").get_json()["database"] == "unavailable"


def test_the_sample_config_runs(app_config: dict[str, str]) -> None:
    sample = Path(__file__).resolve().parents[2] / "config" / "voice.sample.toml"
    app = create_app(
        {
            **app_config,
            "VOICE_CONFIG": str(sample),
            "AGENT_ALICE_PASSWORD": "Sample-Alice-1",
            "AGENT_BOB_PASSWORD": "Sample-Bob-22",
        }
    )
    post = make_signed_post(app.test_client())
    form = inbound(
        SIPAuthType="ip_acl_and_credential", SIPAuthUser="frontdesk", SIPSourceIP="203.0.113.50"
    )
    response = post("/answer", form)
    assert response.status_code == 200
    assert b'sipAuthPassword="Sample-Alice-1"' in response.data
