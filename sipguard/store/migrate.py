"""Schema migrations: Alembic upgrades, run by one process at a time.

Several gunicorn workers or instances may start together and each upgrade at start-up:
PostgreSQL serialises them with an advisory lock, a SQLite file with a lock file beside it.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from sipguard.store.database import Database

log = logging.getLogger("sipguard.store")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x51_96_0A_17  # any constant; identifies this app's migration advisory lock


def alembic_config() -> Any:
    """Return an Alembic configuration for the store's migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


class Migrations(Database):
    """Bring the schema to the newest revision, or report at start-up that it cannot."""

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision, one process at a time."""
        from alembic import command

        with self._migration_lock(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Several instances may start together; the lock ends with the transaction.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def upgrade_if_reachable(self) -> None:
        """Upgrade at start-up; when the database is down, say so and serve anyway."""
        try:
            self.upgrade()
        except SQLAlchemyError as exc:
            log.error(
                "database unreachable at start-up (%s): answering calls without storing "
                "them until it is back; run `sipguard db upgrade` then",
                type(exc).__name__,
            )

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """Serialise migrations of a SQLite file across processes (gunicorn workers)."""
        database = make_url(self.url).database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
