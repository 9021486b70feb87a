"""Build a sandbox from the app's settings, with a real HTTP client for its callbacks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import requests

from sandbox.account import Account, ApiError
from sandbox.callbacks import HttpAnswer
from sandbox.config import load_sandbox_config
from sandbox.engine import Runner, Sandbox, run_in_thread
from sandbox.sip_client import Timers
from sandbox.timeline import SandboxClock
from sandbox.xml_player import MAX_XML_BYTES
from sipguard.errors import ConfigError
from sipguard.settings import Settings

DEFAULT_CONFIG = Path(__file__).resolve().parent / "sample.toml"  # package data: wheels carry it
CALLBACK_TIMEOUT = (2.0, 15.0)  # connect, read: Plivo's ct default, well inside its rt
CALLBACK_DEADLINE = 30.0  # a whole callback, however the server trickles its answer
MAX_BODY = MAX_XML_BYTES + 1  # enough to tell a document is too big


class RequestsHttp:
    """Send callbacks with requests; connection failures surface as OSError."""

    def __init__(self) -> None:
        self._session = requests.Session()
        self._session.trust_env = False  # loopback callbacks must not go through a proxy

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpAnswer:
        deadline = time.monotonic() + CALLBACK_DEADLINE
        try:
            with self._session.request(
                method,
                url,
                headers=dict(headers),
                data=body,
                timeout=CALLBACK_TIMEOUT,
                allow_redirects=False,
                stream=True,
            ) as response:
                content = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    content += chunk
                    # More than a Plivo document may hold is invalid anyway; a server that
                    # trickles bytes forever is as good as unreachable.
                    if len(content) > MAX_BODY or time.monotonic() > deadline:
                        break
                if time.monotonic() > deadline:
                    raise ConnectionError("callback took longer than its total timeout")
        except requests.RequestException as exc:
            raise ConnectionError(type(exc).__name__) from None
        return HttpAnswer(
            response.status_code, response.headers.get("Content-Type", ""), bytes(content)
        )


def build(
    settings: Settings,
    environ: Mapping[str, str],
    config_path: Path = DEFAULT_CONFIG,
    *,
    clock: SandboxClock | None = None,
    run: Runner = run_in_thread,
    config_label: str = "SANDBOX_CONFIG",
    sip_t1: float | None = None,
) -> Sandbox:
    """Build a sandbox for the account in `settings` (auth ID, tokens, PUBLIC_BASE_URL).

    A bad world is a ConfigError naming `config_label`, where `config_path` came from.
    """
    if not settings.auth_id:
        raise ConfigError(
            "PLIVO_AUTH_ID is not set: the sandbox plays that account (any MA/SA id of 20 "
            "characters will do locally)"
        )
    config = load_sandbox_config(config_path, environ, settings.public_base_url, label=config_label)
    if sip_t1 is not None:  # `serve --sip-t1` wins over the world's sandbox.sip_t1
        config = replace(config, sip_timers=Timers.from_t1(sip_t1))
    try:
        return Sandbox(
            Account(settings.auth_id),
            config,
            auth_token=settings.auth_tokens[0],
            main_token=settings.main_auth_tokens[0] if settings.main_auth_tokens else None,
            http=RequestsHttp(),
            clock=clock,
            run=run,
        )
    except ApiError as exc:  # an application in the config the account refuses
        raise ConfigError(f"{config_label}: applications: {exc.error}") from None
