"""Databases for the suites: a fresh PostgreSQL database per test, or a skip (a failure when
REQUIRE_POSTGRES=1) when no PostgreSQL answers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

from sipguard.store import Store, UtcClock

PG_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def postgres_or_skip() -> None:
    """Skip the test when PostgreSQL is unreachable; fail it instead under REQUIRE_POSTGRES=1."""
    try:
        with create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3}).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """Create a PostgreSQL database, yield its URL, and drop it afterwards."""
    postgres_or_skip()
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


@contextmanager
def opened_stores(url: str, clock: UtcClock) -> Iterator[Callable[[], Store]]:
    """Yield a way to open Stores on `url` and `clock` (two are two instances); dispose of
    them all afterwards."""
    opened: list[Store] = []

    def _open() -> Store:
        store = Store(url, clock=clock)
        opened.append(store)
        return store

    try:
        yield _open
    finally:
        for store in opened:
            store.dispose()
