"""`api-key create/list/revoke`, under `sipguard` and the Flask CLI: the key and its webhook secret
are printed once, by create, and nowhere else."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask

from sipguard.commands import main
from sipguard.commands.context import Standalone
from sipguard.notify.model import webhook_secret
from tests.support.config import SECRET_KEY

KEY = re.compile(r"sgk_[0-9a-z]{16}_[A-Za-z0-9_-]{43}")
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]{44}")


def _sipguard(args: list[str], environ: dict[str, str]) -> Result:
    info = Standalone(environ)
    try:
        return CliRunner().invoke(main.cli, args, obj=info)
    finally:
        if info._loaded_app is not None:
            info._loaded_app.extensions["sipguard"].store.dispose()


def _created(result: Result) -> tuple[str, str, str]:
    assert result.exit_code == 0, result.output
    [key] = KEY.findall(result.output)
    [secret] = SECRET.findall(result.output)
    [key_id] = re.findall(r"\((key_[0-9a-z]{16})\)", result.output)
    return key, secret, key_id


def test_create_prints_the_key_and_its_webhook_secret_once(
    runner: Any, app: Flask, app_logs: pytest.LogCaptureFixture
) -> None:
    result = runner.invoke(
        args=["api-key", "create", "ai-prod", "--callback-url", "https://ai.example.test/h"]
    )
    key, secret, key_id = _created(result)
    assert "shown this once" in result.output
    assert secret == webhook_secret(SECRET_KEY, key_id)
    store = app.extensions["sipguard"].store
    assert store.authenticate(key) is not None
    listed = runner.invoke(args=["api-key", "list"])
    revoked = runner.invoke(args=["api-key", "revoke", "ai-prod"])
    for later in (listed, revoked):
        assert later.exit_code == 0, later.output
        assert key not in later.output and key.split("_", 2)[2] not in later.output
        assert secret not in later.output and secret.removeprefix("whsec_") not in later.output
    assert key not in app_logs.text and secret not in app_logs.text
    assert store.authenticate(key) is None


def test_list_shows_name_id_dates_and_callback_url(runner: Any) -> None:
    assert runner.invoke(args=["api-key", "list"]).output.startswith("no API keys")
    _, _, first = _created(runner.invoke(args=["api-key", "create", "old"]))
    _, _, second = _created(
        runner.invoke(
            args=["api-key", "create", "new", "--callback-url", "http://127.0.0.1:9000/hooks"]
        )
    )
    runner.invoke(args=["api-key", "revoke", first])
    result = runner.invoke(args=["api-key", "list"])
    assert result.exit_code == 0, result.output
    header, old, new = result.output.splitlines()
    assert header.split() == ["NAME", "ID", "CREATED", "REVOKED", "CALLBACK", "URL"]
    assert old.split()[:2] == ["old", first] and old.split()[-1] == "-"
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d{4}-\d\d-\d\d", old)
    assert new.split()[:2] == ["new", second]
    assert new.split()[-1] == "http://127.0.0.1:9000/hooks" and " - " in new


def test_revoke_by_name_or_id_is_idempotent(runner: Any) -> None:
    _, _, key_id = _created(runner.invoke(args=["api-key", "create", "ai"]))
    first = runner.invoke(args=["api-key", "revoke", key_id])
    assert first.exit_code == 0 and first.output.startswith("revoked API key ai")
    again = runner.invoke(args=["api-key", "revoke", "ai"])
    assert again.exit_code == 0 and "revoked already" in again.output
    unknown = runner.invoke(args=["api-key", "revoke", "nope"])
    assert unknown.exit_code == 2 and "no API key" in unknown.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ai", "--callback-url", "http://ai.example.test/h"], "must be https"),
        (["ai", "--callback-url", "not a url"], "absolute http(s) URL"),
        (["bad name"], "letters, digits"),
    ],
)
def test_create_refuses_bad_input(runner: Any, args: list[str], message: str) -> None:
    result = runner.invoke(args=["api-key", "create", *args])
    assert result.exit_code == 2 and message in result.output
    assert not KEY.search(result.output)
    assert runner.invoke(args=["api-key", "list"]).output.startswith("no API keys")


def test_a_taken_name_is_refused(runner: Any) -> None:
    _created(runner.invoke(args=["api-key", "create", "ai"]))
    result = runner.invoke(args=["api-key", "create", "ai"])
    assert result.exit_code == 2 and "exists already" in result.output
    assert not KEY.search(result.output)


def test_sipguard_api_key_works_on_the_apps_settings(
    app_config: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key, secret, _ = _created(_sipguard(["api-key", "create", "ai"], app_config))
    listed = _sipguard(["api-key", "list"], app_config)
    assert listed.exit_code == 0 and listed.stdout.splitlines()[1].startswith("ai ")
    assert key not in listed.output and secret not in listed.output
    assert key not in caplog.text and secret not in caplog.text
    revoked = _sipguard(["api-key", "revoke", "ai"], app_config)
    assert revoked.exit_code == 0, revoked.output


@pytest.mark.parametrize("args", [["api-key", "list"], ["api-key", "create", "ai"]])
def test_sipguard_api_key_with_nothing_set_is_one_line_and_exit_2(args: list[str]) -> None:
    result = _sipguard(args, {})
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("url", ["http://[0]/h", "https://[::1:]/h"])
def test_create_refuses_a_callback_url_whose_host_cannot_be_read(runner: Any, url: str) -> None:
    result = runner.invoke(args=["api-key", "create", "ai-bad", "--callback-url", url])
    assert result.exit_code == 2, result.output
    assert "valid host" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
