"""The sandbox wired to the app in process (callbacks go through Flask's test client), and the
same sandbox served on a loopback port for the project's REST module and CLI."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from sandbox.account import Account
from sandbox.callbacks import Http, HttpAnswer
from sandbox.client import call_in
from sandbox.config import SandboxConfig, load_sandbox_config
from sandbox.engine import Runner, Sandbox, run_inline
from sandbox.server import create_sandbox_app
from sandbox.timeline import SandboxClock
from sipguard.calls.causes import AUTH_CREDENTIAL, AUTH_IP_ACL
from tests.support.config import AUTH_ID, BASE_URL, CAROL_PASSWORD, DATA, MAIN_TOKEN, TOKEN

START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
APP_ID = "20000000000000000002"
URI = f"sip:{APP_ID}@app.plivo.com"
SANDBOX_ENV = {
    "SANDBOX_CAROL_PASSWORD": CAROL_PASSWORD,
    "SANDBOX_ERIN_PBX_PASSWORD": "Rotated-Erin-Pw-9z9z",
    "SANDBOX_TRUNK_PASSWORD": "Trunk-Password-77x",
}
CALLER_PASSWORD = "Caller-Passw0rd-42"


class FlaskHttp:
    """Deliver callbacks for BASE_URL's host to the app's test client; others are unreachable."""

    def __init__(self, client: FlaskClient, host: str = urlsplit(BASE_URL).netloc) -> None:
        self.client = client
        self.host = host
        self.sent: list[tuple[str, str, dict[str, str], bytes | None]] = []

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpAnswer:
        self.sent.append((method, url, dict(headers), body))
        parts = urlsplit(url)
        if parts.netloc != self.host:
            raise ConnectionError(f"{parts.netloc} is not reachable from the tests")
        response = self.client.open(
            parts.path + (f"?{parts.query}" if parts.query else ""),
            method=method,
            headers=dict(headers),
            data=body,
            base_url=f"{parts.scheme}://{parts.netloc}",
        )
        return HttpAnswer(response.status_code, response.content_type or "", response.data)


def load_config(environ: Mapping[str, str], path: Path = DATA / "sandbox.toml") -> SandboxConfig:
    """The suite's sandbox world, its passwords from `environ` (the app's canaries included)."""
    return load_sandbox_config(path, {**environ, **SANDBOX_ENV}, BASE_URL)


@dataclass
class World:
    """The app and a sandbox playing Plivo for it, in one process."""

    app: Flask
    sandbox: Sandbox
    http: FlaskHttp
    clock: SandboxClock
    url: str | None = None  # the sandbox's base URL when it is served (the `live` fixture)

    @property
    def account(self) -> Account:
        return self.sandbox.account

    def protect(
        self,
        mode: str,
        *,
        allow: tuple[str, ...] = (),
        username: str = "frontdesk",
        password: str = CALLER_PASSWORD,
    ) -> None:
        """Give the suite's application `mode` auth with one credential and/or ACL."""
        fields: dict[str, str] = {"sip_auth_type": mode}
        if mode != AUTH_IP_ACL:
            credential = self.account.create_credential(
                {"username": username, "password": password}
            )
            fields["credential_uuid"] = credential.uuid
        if mode != AUTH_CREDENTIAL:
            acl = self.account.create_acl({"name": "tests"})
            for cidr in allow:
                ip, _, prefix = cidr.partition("/")
                self.account.add_entry(acl.uuid, {"ip_address": ip, "cidr_prefix": prefix or None})
            fields["ip_acl_uuid"] = acl.uuid
        self.account.update_application(APP_ID, fields)

    def call(self, source_ip: str, request_uri: str = URI, **kwargs: str | None):
        """Place an inbound call as a SIP caller (answering 407 when given credentials)."""
        return call_in(self.sandbox, source_ip, request_uri, **kwargs)


def callback_forms(world: World, path: str) -> list[dict[str, str]]:
    """The decoded forms of every callback the app received on `path`, in order."""
    return [
        dict(parse_qsl((body or b"").decode(), keep_blank_values=True))
        for _method, url, _headers, body in world.http.sent
        if urlsplit(url).path == path
    ]


def hangup_form(world: World, timeout: float = 5) -> dict[str, str]:
    """The one hangup callback, waiting (at most `timeout`) for a call ending in a thread."""
    ended = threading.Event()
    world.sandbox.on_end(lambda call: ended.set())
    if not callback_forms(world, "/hangup"):
        ended.wait(timeout)
    (form,) = callback_forms(world, "/hangup")
    return form


def make_world(
    app: Flask,
    environ: Mapping[str, str],
    config: SandboxConfig | None = None,
    *,
    run: Runner = run_inline,
    start: datetime = START,
) -> World:
    """Build a sandbox for `app` on a fixed clock; callbacks run through its test client."""
    http = FlaskHttp(app.test_client())
    sandbox = new_sandbox(http, config or load_config(environ), run=run, start=start)
    return World(app, sandbox, http, sandbox.clock)


def new_sandbox(
    http: Http, config: SandboxConfig, *, run: Runner = run_inline, start: datetime = START
) -> Sandbox:
    """A sandbox for the suite's account and tokens on a fixed clock; callbacks go to `http`."""
    return Sandbox(
        Account(AUTH_ID),
        config,
        auth_token=TOKEN,
        main_token=MAIN_TOKEN,
        http=http,
        clock=SandboxClock(start),
        run=run,
    )


@contextmanager
def serve(sandbox: Sandbox, port: int = 0) -> Iterator[str]:
    """Serve `sandbox` on a loopback port in a thread; yield its base URL."""
    server = make_server("127.0.0.1", port, create_sandbox_app(sandbox, TOKEN), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
