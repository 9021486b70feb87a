"""The suites' fixtures, a pytest plugin: tests/conftest.py and reliability/conftest.py load it.

An app on a fresh database per test, its clients, real V3-signed Plivo requests, and a sandbox
playing Plivo for it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine

from app import create_app
from devtools.harness import free_port
from tests.support import config
from tests.support.databases import fresh_postgres
from tests.support.signing import SignedPost, make_signed_post


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config.clean_environment(monkeypatch)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """Create a fresh PostgreSQL database for one test and drop it afterwards."""
    with fresh_postgres() as url:
        yield url


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
    return config.app_config(sqlite_url)


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


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Plivo's REST API, mocked: a request nobody registered fails the test."""
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def flow(app: Flask, client: FlaskClient, rsps: responses.RequestsMock) -> Any:
    """One call handed over by the AI, driven as Plivo would (tests/support/handoffs.py)."""
    from tests.support.handoffs import Flow

    return Flow(app, client, rsps)


@pytest.fixture
def set_clock(app: Flask) -> Callable[[datetime], None]:
    """Return a function that fixes the moment the app reads business hours at."""

    def set_to(moment: datetime) -> None:
        runtime = app.extensions["sipguard"]
        app.extensions["sipguard"] = dataclasses.replace(runtime, clock=lambda: moment)

    return set_to


@pytest.fixture
def signed_post(client: FlaskClient) -> SignedPost:
    return make_signed_post(client)


@pytest.fixture
def world(app: Flask, app_config: dict[str, str]) -> Any:
    """The app and an in-process sandbox playing Plivo for it (tests/support/sandbox.py)."""
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
