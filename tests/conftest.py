"""Fixtures: an app on a fresh database per test, and real V3-signed Plivo requests."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from werkzeug.test import TestResponse

from app import create_app
from sipguard.calls import signature

DATA = Path(__file__).parent / "data"
TOKEN = "test-account-token-V3-0123456789"
OLD_TOKEN = "test-account-token-old-9876543210"
MAIN_TOKEN = "test-main-account-token-ABCDEFGH"
SECRET_KEY = "test-secret-key-" + "s" * 32
BASE_URL = "https://voice.example.test"
AUTH_ID = "MATESTAUTHID00000001"
API = f"https://api.plivo.com/v1/Account/{AUTH_ID}/"
CANARIES = {
    "AGENT_ALICE_PASSWORD": "Canary-Alice-Pw-a1ice",
    "AGENT_BOB_PASSWORD": "Canary-Bob-Pw-b0bby",
    "AGENT_ERIN_PASSWORD": "Canary-Erin-Pw-3r1n",
}
CAROL_PASSWORD = (DATA / "carol.pw").read_text().strip()
ALL_CANARIES = (*CANARIES.values(), CAROL_PASSWORD)
PG_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Variables the suite sets itself: a developer's own shell must not change what tests see.
_APP_VARIABLES = (
    "PLIVO_AUTH_ID",
    "PLIVO_AUTH_TOKEN",
    "PLIVO_AUTH_TOKEN_FILE",
    "PLIVO_MAIN_AUTH_TOKEN",
    "PLIVO_MAIN_AUTH_TOKEN_FILE",
    "PUBLIC_BASE_URL",
    "TRUSTED_PROXY_COUNT",
    "DATABASE_URL",
    "VOICE_CONFIG",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "PLIVO_ACCEPT_V2",
    "NONCE_TTL_SECONDS",
    "HANDOFF_TOKEN_TTL_SECONDS",
    "MAX_CONTENT_LENGTH",
    "AUTO_MIGRATE",
    "PLIVO_API_URL",
    "PLIVO_API_TIMEOUT_SECONDS",
    "METRICS_TOKEN",
    "METRICS_TOKEN_FILE",
    "MONITOR_PASSWORD_HASH",
    "MONITOR_PASSWORD_HASH_FILE",
    "RETENTION_DAYS",
    "PROMETHEUS_MULTIPROC_DIR",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _APP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no developer .env is read


def _postgres_or_skip() -> None:
    try:
        with create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3}).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """Create a fresh PostgreSQL database for one test and drop it afterwards."""
    _postgres_or_skip()
    name = f"sipguard_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sipguard.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Run the test once on SQLite and once on a real PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def app_config(sqlite_url: str) -> dict[str, str]:
    return {
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": TOKEN,
        "PLIVO_MAIN_AUTH_TOKEN": MAIN_TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "PUBLIC_BASE_URL": BASE_URL,
        "VOICE_CONFIG": str(DATA / "voice.toml"),
        "DATABASE_URL": sqlite_url,
        **CANARIES,
    }


@pytest.fixture
def app(app_config: dict[str, str]) -> Iterator[Flask]:
    application = create_app(app_config)
    yield application
    application.extensions["sipguard"].store.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def app_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture the app's own log records (its logger does not propagate to the root)."""
    logger = logging.getLogger("sipguard")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG, logger="sipguard")
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


@pytest.fixture
def break_database() -> Callable[[Flask], Any]:
    """Point an app's store at a port where no database listens, for the `with` block."""

    @contextmanager
    def broken(app: Flask) -> Iterator[None]:
        store = app.extensions["sipguard"].store
        healthy = store.engine
        store.engine = create_engine(
            "postgresql+psycopg://postgres@127.0.0.1:1/unreachable",
            connect_args={"connect_timeout": 1},
            hide_parameters=True,
        )
        try:
            yield
        finally:
            store.engine.dispose()
            store.engine = healthy

    return broken


SignedPost = Callable[..., TestResponse]


def make_signed_post(client: FlaskClient) -> SignedPost:
    """Build the signed_post helper for a given client (several apps may share a test)."""

    def signed_post(
        path: str,
        form: dict[str, str | list[str]] | None = None,
        *,
        method: str = "POST",
        token: str = TOKEN,
        nonce: str | None = None,
        url: str | None = None,
        signature_value: str | None = None,
        main_token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        """Send `form` to `path` signed as Plivo would; override any part to forge a failure."""
        form = form or {}
        params = {k: v if isinstance(v, list) else [v] for k, v in form.items()}
        nonce = nonce if nonce is not None else uuid.uuid4().hex
        signed_url = url if url is not None else BASE_URL + path
        if method == "GET":
            query = urlencode([(k, v) for k, vs in params.items() for v in vs])
            path = f"{path}{'&' if '?' in path else '?'}{query}" if query else path
            signed_url = url if url is not None else BASE_URL + path
            params = {}
        sent = signature.signed_headers(token, method, signed_url, params, nonce, main_token)
        if signature_value is not None:
            sent[signature.V3_HEADER] = signature_value
        sent.update(headers or {})
        if method == "GET":
            return client.get(path, headers=sent)
        return client.open(path, method=method, data=params, headers=sent)

    return signed_post


@pytest.fixture
def signed_post(client: FlaskClient) -> SignedPost:
    return make_signed_post(client)


def inbound(**fields: str) -> dict[str, str]:
    """A typical answer_url form for an inbound SIP call, with `fields` overriding."""
    form = {
        "CallUUID": str(uuid.uuid4()),
        "From": "sip:frontdesk@203.0.113.10",
        "To": "sip:12345678901234567890@app.plivo.com",
        "Direction": "inbound",
        "CallStatus": "ringing",
        "Event": "StartApp",
    }
    form.update(fields)
    return {k: v for k, v in form.items() if v is not None}


def free_port() -> int:
    """Return a loopback TCP port nothing listens on now (for real servers in tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric_total(exposition: str, name: str, **labels: str) -> float:
    """Sum the samples called `name` whose labels include `labels`, in Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture
def world(app: Flask, app_config: dict[str, str]) -> Any:
    """The app and an in-process sandbox playing Plivo for it (tests/sandbox_support.py)."""
    from tests.support.sandbox import make_world

    return make_world(app, app_config)


@pytest.fixture
def live(app_config: dict[str, str]) -> Iterator[Any]:
    """A sandbox served on loopback, and an app whose PLIVO_API_URL points at it.

    Yields the World; `live.url` is the sandbox's base URL. Callbacks still reach the app
    through its test client.
    """
    from tests.support.sandbox import make_world, serve

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    application = create_app({**app_config, "PLIVO_API_URL": url})
    found = make_world(application, app_config)
    with serve(found.sandbox, port):
        found.url = url
        yield found
    application.extensions["sipguard"].store.dispose()
