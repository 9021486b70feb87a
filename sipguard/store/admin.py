"""Access to the /monitor dashboard: failed login attempts and server-side admin sessions.

Both live in the database, so every worker and instance shares one login throttle, and logging
out (or expiry) ends a session even for a copied cookie.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import Connection, delete, func, insert, select

from sipguard.store.database import Database
from sipguard.store.schema import admin_sessions, login_failures


class AdminAccess(Database):
    """Count failed monitor logins; open, check and close admin sessions."""

    def login_failures(self, address: str | None, within: timedelta) -> int:
        """Count failed monitor logins from `address` (or from anywhere) in the last `within`."""
        since = self._clock() - within
        query = select(func.count()).select_from(login_failures).where(login_failures.c.at >= since)
        if address is not None:
            query = query.where(login_failures.c.address == address[:64])
        return int(self._run(lambda conn: conn.execute(query).scalar_one(), write=False))

    def record_login_failure(self, address: str, keep: timedelta) -> None:
        """Remember a monitor login attempt as failed; forget those older than `keep`."""
        now = self._clock()

        def write(conn: Connection) -> None:
            conn.execute(delete(login_failures).where(login_failures.c.at < now - keep))
            conn.execute(insert(login_failures).values(address=address[:64], at=now))

        self._run(write)

    def forget_login_failures(self, address: str) -> None:
        """Clear `address`'s failed attempts after it logged in."""
        statement = delete(login_failures).where(login_failures.c.address == address[:64])
        self._run(lambda conn: conn.execute(statement))

    def open_admin_session(self, max_age: timedelta) -> str:
        """Start a monitor session; return its random id (expired ones are dropped)."""
        now = self._clock()
        session_id = secrets.token_urlsafe(32)

        def write(conn: Connection) -> None:
            conn.execute(delete(admin_sessions).where(admin_sessions.c.created_at < now - max_age))
            conn.execute(insert(admin_sessions).values(id=session_id, created_at=now))

        self._run(write)
        return session_id

    def admin_session_valid(self, session_id: str, max_age: timedelta) -> bool:
        """Tell whether a monitor session exists and is younger than `max_age`."""
        query = select(admin_sessions.c.id).where(
            admin_sessions.c.id == session_id[:64],
            admin_sessions.c.created_at >= self._clock() - max_age,
        )
        return self._run(lambda conn: conn.execute(query).first() is not None, write=False)

    def close_admin_session(self, session_id: str) -> None:
        """End a monitor session for good (a copied cookie stops working too)."""
        statement = delete(admin_sessions).where(admin_sessions.c.id == session_id[:64])
        self._run(lambda conn: conn.execute(statement))
