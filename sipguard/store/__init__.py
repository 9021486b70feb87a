"""The event store: call decisions, hangups and seen nonces, on SQLite or PostgreSQL.

Every signed callback ends in one transaction that claims its nonce and writes its rows, so a
nonce is spent exactly when the callback's effects are stored: a callback answered 503 can be
retried, and two instances sharing PostgreSQL cannot both accept the same nonce (the primary key
decides, not a read-then-write).
"""

from __future__ import annotations

import fcntl
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from sipguard.calls.forms import Hangup
from sipguard.errors import SignatureError, StoreUnavailable

log = logging.getLogger("sipguard.store")

Clock = Callable[[], datetime]
T = TypeVar("T")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 0x51_96_0A_17  # any constant; identifies this app's migration advisory lock


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime (the store's convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


metadata = MetaData()

nonces = Table(
    "nonces",
    metadata,
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", DateTime(), nullable=False, index=True),
)

call_events = Table(
    "call_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("received_at", DateTime(), nullable=False, index=True),
    Column("call_uuid", String(64), nullable=False, index=True),
    Column("route", String(32), nullable=False),
    Column("decision", Text(), nullable=False),
    Column("rule", Text()),
    Column("reason", Text()),
    Column("from_number", Text()),
    Column("to_number", Text()),
    Column("sip_auth_type", Text()),
    Column("sip_auth_user", Text()),
    Column("sip_source_ip", Text()),
    Column("group_name", Text()),
    Column("attempt", Integer()),
    Column("dial_status", Text()),
    Column("dial_hangup_cause", Text()),
    Column("auth_failure", Text()),
    Column("a_leg_uuid", Text()),
    Column("b_leg_uuid", Text()),
)

hangups = Table(
    "hangups",
    metadata,
    Column("call_uuid", String(64), primary_key=True),
    Column("received_at", DateTime(), nullable=False),
    Column("call_status", Text()),
    Column("direction", Text()),
    Column("from_number", Text()),
    Column("to_number", Text()),
    Column("hangup_cause", Text()),
    Column("hangup_cause_name", Text()),
    Column("hangup_cause_code", Integer()),
    Column("hangup_source", Text()),
    Column("duration", Integer()),
    Column("bill_duration", Integer()),
    Column("sip_auth_type", Text()),
    Column("sip_auth_user", Text()),
    Column("sip_source_ip", Text()),
    Column("auth_failure", Text()),
    Index("ix_hangups_received_at", "received_at"),
    Index("ix_hangups_auth_failure", "auth_failure", "received_at"),
    Index("ix_hangups_sip_source_ip", "sip_source_ip"),
)


# Refused callbacks are counted per minute, route and reason, never stored one row each: a flood
# of forged requests must not be able to fill the database.
signature_rejections = Table(
    "signature_rejections",
    metadata,
    Column("minute", DateTime(), nullable=False),
    Column("route", String(32), nullable=False),
    Column("reason", String(128), nullable=False),
    Column("count", Integer(), nullable=False),
    PrimaryKeyConstraint("minute", "route", "reason"),
    Index("ix_signature_rejections_minute", "minute"),
)


# Failed /monitor logins, shared by every worker and instance so the throttle is one limit.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
    Column("address", String(64), nullable=False),
    Column("at", DateTime(), nullable=False),
    Index("ix_login_failures_address_at", "address", "at"),
)


# Monitor logins, server-side: logging out (or expiry) ends a session even for a copied cookie.
admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", DateTime(), nullable=False, index=True),
)


@dataclass(frozen=True)
class CallEvent:
    """One routing decision (answer, handoff or dial action) for the event log."""

    route: str
    call_uuid: str
    decision: str
    rule: str | None = None
    reason: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    sip_auth_type: str | None = None
    sip_auth_user: str | None = None
    sip_source_ip: str | None = None
    group_name: str | None = None
    attempt: int | None = None
    dial_status: str | None = None
    dial_hangup_cause: str | None = None
    auth_failure: str | None = None
    a_leg_uuid: str | None = None
    b_leg_uuid: str | None = None


_EVENT_FIELDS = tuple(CallEvent.__dataclass_fields__)


class Replayed(SignatureError):
    """The nonce was already accepted within its TTL."""

    def __init__(self) -> None:
        super().__init__("replayed")


def _hangup_row(hangup: Hangup, received_at: datetime) -> dict[str, Any]:
    return {
        "call_uuid": hangup.call_uuid,
        "received_at": received_at,
        "call_status": hangup.call_status,
        "direction": hangup.direction,
        "from_number": hangup.from_,
        "to_number": hangup.to,
        "hangup_cause": hangup.hangup_cause,
        "hangup_cause_name": hangup.hangup_cause_name,
        "hangup_cause_code": hangup.hangup_cause_code,
        "hangup_source": hangup.hangup_source,
        "duration": hangup.duration,
        "bill_duration": hangup.bill_duration,
        "sip_auth_type": hangup.sip_auth_type,
        "sip_auth_user": hangup.sip_auth_user,
        "sip_source_ip": hangup.sip_source_ip,
        "auth_failure": hangup.auth_failure,
    }


def _event_row(event: CallEvent) -> dict[str, Any]:
    # dataclasses.asdict deep-copies; the fields are flat, so a plain read is enough.
    return {name: getattr(event, name) for name in _EVENT_FIELDS}


@dataclass(frozen=True)
class _Statements:
    """The callback writes, built once: SQLAlchemy then only looks their compiled form up."""

    claim: Any
    event: Any
    hangup: Any

    @classmethod
    def build(cls, insert_: Any) -> _Statements:
        claim = insert_(nonces).values(nonce=bindparam("nonce"), expires_at=bindparam("expires_at"))
        claim = claim.on_conflict_do_update(
            index_elements=[nonces.c.nonce],
            set_={"expires_at": claim.excluded.expires_at},
            where=nonces.c.expires_at < bindparam("now"),
        ).returning(nonces.c.nonce)
        hangup = insert_(hangups).on_conflict_do_nothing(index_elements=[hangups.c.call_uuid])
        return cls(claim=claim, event=insert(call_events), hangup=hangup)


def normalise_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain PostgreSQL URLs (postgres://, postgresql://)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, hide_parameters=True, connect_args={"timeout": 5})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    # Short timeouts: /answer must still answer quickly when the database is unreachable.
    return create_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=2,
        connect_args={"connect_timeout": 2, "options": "-c statement_timeout=5000"},
    )


class Store:
    """Persist callbacks; every database failure surfaces as StoreUnavailable."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = utcnow,
        purge_every: timedelta = timedelta(seconds=60),
    ) -> None:
        self.url = normalise_url(url)
        self.engine = _engine(self.url)
        self._statements = _Statements.build(self._insert())
        self._clock = clock
        self._purge_every = purge_every
        self._next_purge = 0.0

    @property
    def dialect(self) -> str:
        """Return the backend name (sqlite or postgresql)."""
        return self.engine.dialect.name

    def _insert(self) -> Any:
        return postgresql.insert if self.dialect == "postgresql" else sqlite.insert

    def record(
        self,
        *,
        nonce: str | None,
        nonce_ttl: timedelta,
        events: Sequence[CallEvent] = (),
        hangup: Hangup | None = None,
    ) -> None:
        """Claim `nonce` and store `events` and `hangup` in one transaction.

        Raises Replayed when the nonce is live already (nothing is written), and
        StoreUnavailable when the database fails (nothing is written either).
        """
        now = self._clock()
        statements = self._statements

        def write(conn: Connection) -> None:
            if nonce is not None:
                claimed = conn.execute(
                    statements.claim,
                    {"nonce": nonce, "expires_at": now + nonce_ttl, "now": now},
                )
                # A row comes back only when the nonce was new or its TTL had passed.
                if claimed.first() is None:
                    raise Replayed()
            if events:
                rows = [{**_event_row(e), "received_at": now} for e in events]
                conn.execute(statements.event, rows)
            if hangup is not None:
                conn.execute(statements.hangup, _hangup_row(hangup, now))

        self._run(write)
        self._maybe_purge()

    def _run(self, work: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run `work` on a connection, in a transaction when it writes.

        A database failure becomes StoreUnavailable naming the error's type only, raised outside
        the handler so no driver error is chained to it: PostgreSQL's messages can quote a whole
        row (caller numbers) and would reach any log line that prints the chain.
        """
        try:
            with self.engine.begin() if write else self.engine.connect() as conn:
                return work(conn)
        except SQLAlchemyError as exc:
            failure = type(exc).__name__
        raise StoreUnavailable(f"database error ({failure})")

    def _maybe_purge(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self._purge_every.total_seconds()
        try:
            self.purge_nonces()
        except StoreUnavailable:
            log.warning("could not purge expired nonces; will retry")

    def purge_nonces(self) -> int:
        """Delete expired nonces; return how many went."""

        def purge(conn: Connection) -> int:
            return conn.execute(delete(nonces).where(nonces.c.expires_at < self._clock())).rowcount

        return self._run(purge)

    def count_rejection(self, route: str, reason: str) -> None:
        """Add one refused callback to its minute's count (raises StoreUnavailable)."""
        now = self._clock()
        minute = now.replace(second=0, microsecond=0)
        upsert = self._insert()(signature_rejections).values(
            minute=minute, route=route[:32], reason=reason[:128], count=1
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=["minute", "route", "reason"],
            set_={"count": signature_rejections.c["count"] + 1},
        )
        self._run(lambda conn: conn.execute(upsert))

    def purge_events(self, older_than: timedelta) -> dict[str, int]:
        """Delete call events, hangups and rejection counts older than `older_than`."""
        cutoff = self._clock() - older_than

        def purge(conn: Connection) -> dict[str, int]:
            return {
                "call_events": conn.execute(
                    delete(call_events).where(call_events.c.received_at < cutoff)
                ).rowcount,
                "hangups": conn.execute(
                    delete(hangups).where(hangups.c.received_at < cutoff)
                ).rowcount,
                # A minute's count goes only once the whole minute is past the cutoff.
                "signature_rejections": conn.execute(
                    delete(signature_rejections).where(
                        signature_rejections.c.minute <= cutoff - timedelta(minutes=1)
                    )
                ).rowcount,
            }

        return self._run(purge)

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

    def query(self, statement: Any) -> list[dict[str, Any]]:
        """Run a read-only SELECT built on this module's tables; return rows as dicts."""
        return self._rows(statement)

    def ping(self) -> bool:
        """Tell whether the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def hangup(self, call_uuid: str) -> dict[str, Any] | None:
        """Return the stored hangup row of a call, if any."""
        rows = self._rows(select(hangups).where(hangups.c.call_uuid == call_uuid))
        return rows[0] if rows else None

    def events(self, call_uuid: str | None = None) -> list[dict[str, Any]]:
        """Return stored call events in arrival order, for one call or all."""
        query = select(call_events).order_by(call_events.c.id)
        if call_uuid is not None:
            query = query.where(call_events.c.call_uuid == call_uuid)
        return self._rows(query)

    def _rows(self, query: Any) -> list[dict[str, Any]]:
        return self._run(
            lambda conn: [dict(row._mapping) for row in conn.execute(query)], write=False
        )

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision, one process at a time."""
        from alembic import command

        with self._migration_lock(), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Several instances may start together; the lock ends with the transaction.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def upgrade_if_reachable(self) -> None:
        """Upgrade at start-up; when the database is down, say so and serve anyway."""
        try:
            self.upgrade()
        except SQLAlchemyError as exc:
            log.error(
                "database unreachable at start-up (%s): answering calls without storing "
                "them until it is back; run `flask db upgrade` then",
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

    def schema_is_current(self) -> bool | None:
        """Tell whether the schema is at the newest revision; None when the database is down."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError:
            return None
        return current == head

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config
