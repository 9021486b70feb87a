"""The connection every part of the store shares: URL, engine, clock, and one failure type.

SQLite runs in WAL mode; PostgreSQL gets short timeouts so /answer still answers quickly when
the database is unreachable. Whatever goes wrong in the database surfaces as StoreUnavailable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError

from sipguard.errors import StoreUnavailable

UtcClock = Callable[[], datetime]
# A pooled PostgreSQL connection unused this long (seconds) is pinged before it is handed out.
_PING_AFTER = 1.0
_USED = "sipguard_used_at"
T = TypeVar("T")
# PEP 249's exception classes, most specific first: a failure is named by the first that fits,
# as SQLAlchemy names the errors it wraps (psycopg's StringDataRightTruncation is a DataError).
_DBAPI_ERRORS = (
    "IntegrityError",
    "DataError",
    "OperationalError",
    "ProgrammingError",
    "NotSupportedError",
    "InternalError",
    "InterfaceError",
    "DatabaseError",
    "Error",
)


def now_utc() -> datetime:
    """Return the current UTC time as a naive datetime (the store's convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


def normalise_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain PostgreSQL URLs (postgres://, postgresql://)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _engine(url: str, pool_size: int) -> Engine:
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
        pool_size=pool_size,
        max_overflow=5,
        pool_timeout=2,
        connect_args={"connect_timeout": 2, "options": "-c statement_timeout=5000"},
        pool_use_lifo=True,
    )


def insert_for(dialect: Any) -> Any:
    """Return `dialect`'s INSERT construct (the one with ON CONFLICT)."""
    return postgresql.insert if dialect.name == "postgresql" else sqlite.insert


class _Liveness:
    """When a pooled PostgreSQL connection is pinged at checkout: only when it may be dead.

    SQLAlchemy's pool_pre_ping pings on every checkout: a round trip per callback, half of what
    /answer costs PostgreSQL. A connection returned moments ago was alive then; one that sat
    unused for `_PING_AFTER` (a database restarted meanwhile, a server that closed it) is
    pinged, and so is every connection last used before one was found dead (a restart under
    load: the first statement to hit a dead connection fails, its callback fails as with the
    database down, and each other pooled connection is checked before its next use). A dead one
    is replaced (DisconnectionError makes the pool connect afresh). The pool is LIFO, so at a
    low rate the same few connections stay in use and unpinged.
    """

    def __init__(self) -> None:
        self._lost_at = float("-inf")  # monotonic time a connection was last found dead

    def lost(self) -> None:
        """Note that a connection was found dead: all used before now get pinged."""
        self._lost_at = time.monotonic()

    def watch(self, engine: Engine) -> None:
        """Track `engine`'s connections' last use and ping them at checkout when due."""
        dialect = engine.dialect

        def used(_dbapi_connection: Any, record: Any) -> None:
            record.info[_USED] = time.monotonic()

        event.listen(engine, "connect", used)
        event.listen(engine, "checkin", used)

        @event.listens_for(engine, "checkout")
        def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
            used_at = record.info.get(_USED, float("-inf"))
            if time.monotonic() - used_at < _PING_AFTER and used_at > self._lost_at:
                return
            try:
                alive = dialect.do_ping(dbapi_connection)
            except dialect.loaded_dbapi.Error:
                alive = False
            if not alive:
                self.lost()
                raise DisconnectionError("pooled connection is gone")


class Prepared:
    """A statement compiled once for one dialect: its SQL text and how its values are bound.

    The hot path hands this straight to the driver's cursor, skipping SQLAlchemy's per-execution
    work (compiled-cache look-up, execution context, result wrapping). The values still go
    through each column type's bind processor (SQLite's DateTime text format, for one), and the
    rows a SELECT or RETURNING gives back through each column's result processor.
    """

    def __init__(self, statement: Any, dialect: Any, keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        self.sql = str(compiled)
        self._positional = bool(compiled.positional)
        names = tuple(compiled.positiontup or ()) if self._positional else tuple(compiled.binds)
        self._binds = tuple(
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
        )
        columns = getattr(statement, "exported_columns", ())
        self.columns = tuple(columns.keys()) if columns else ()
        # No driver column type is passed: right for the store's columns (strings, integers,
        # DateTime), not for types whose processor needs it (Numeric, Enum, ARRAY).
        self._results = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
        self._converts = any(processor is not None for processor in self._results)

    def params(self, values: Mapping[str, Any]) -> Any:
        """Return `values` as the driver takes them for this statement (each bind needed)."""
        if self._positional:
            return tuple(
                [values[name] if bind is None else bind(values[name]) for name, bind in self._binds]
            )
        return {
            name: values[name] if bind is None else bind(values[name]) for name, bind in self._binds
        }

    def run(self, cursor: Any, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute on `cursor` with `values`; return the rows it gives back, by column name."""
        cursor.execute(self.sql, self.params(values))
        if not self.columns:
            return []
        rows = cursor.fetchall()
        if self._converts:
            rows = [
                tuple(
                    v if f is None or v is None else f(v)
                    for f, v in zip(self._results, row, strict=True)
                )
                for row in rows
            ]
        return [dict(zip(self.columns, row, strict=True)) for row in rows]


def _failure(exc: BaseException, dbapi: Any) -> str:
    for name in _DBAPI_ERRORS:
        kind = getattr(dbapi, name, None)
        if kind is not None and isinstance(exc, kind):
            return name
    return type(exc).__name__


def _discard(raw: Any, lost: bool) -> None:
    """End a failed transaction: roll back, or invalidate a connection that is gone."""
    if not lost:
        try:
            raw.rollback()
            return
        except Exception:  # noqa: BLE001 (a connection that cannot roll back is not reused)
            pass
    raw.invalidate()


class Database:
    """An engine on SQLite or PostgreSQL; every database failure surfaces as StoreUnavailable."""

    def __init__(self, url: str, *, clock: UtcClock = now_utc, threads: int = 1) -> None:
        """`threads`: how many threads share the store; the pool keeps a connection for each."""
        self.url = normalise_url(url)
        self.engine = _engine(self.url, pool_size=max(5, threads))
        self._clock = clock
        self._liveness = _Liveness()
        if self.dialect == "postgresql":
            self._liveness.watch(self.engine)
        self._compiled_for: dict[tuple[Callable[[Any], Any], Engine], Any] = {}

    @property
    def dialect(self) -> str:
        """Return the backend name (sqlite or postgresql)."""
        return self.engine.dialect.name

    def _compiled(self, build: Callable[[Any], T]) -> T:
        """Return `build(dialect)` (`Prepared` statements) for the store's engine, built on first
        use and kept for that engine (one swapped in, as the tests' outages do, gets its own)."""
        key = (build, self.engine)
        found = self._compiled_for.get(key)
        if found is None:
            found = self._compiled_for[key] = build(self.engine.dialect)
        return found

    def _insert(self) -> Any:
        """Return the dialect's INSERT construct (the one with ON CONFLICT)."""
        return insert_for(self.engine.dialect)

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

    def _run_cursor(self, work: Callable[[Any], T], *, one_statement: bool = False) -> T:
        """Run `work` on a driver cursor of a pooled connection, in one transaction.

        The fast path for `Prepared` statements: committed when `work` returns, rolled back when
        it raises (its exception goes on), and failures surface exactly as `_run`'s do. A
        connection that was lost (or cannot roll back) is invalidated rather than pooled again,
        and every other pooled connection is pinged before its next use (`_Liveness`): a
        restart costs the callback that found it, as with `_run`.

        `one_statement`: `work` runs a single statement, atomic by itself. On PostgreSQL it then
        runs in autocommit, without the BEGIN and COMMIT round trips around it (two of the
        three); SQLite has no round trips, and begins no transaction for a read.
        """
        engine = self.engine
        dbapi = engine.dialect.loaded_dbapi
        try:
            raw = engine.raw_connection()
        except (SQLAlchemyError, dbapi.Error) as exc:
            failure = _failure(exc, dbapi)
        else:
            driver: Any = raw.dbapi_connection
            alone = one_statement and self.dialect == "postgresql"
            try:
                if alone:
                    driver.autocommit = True
                cursor = raw.cursor()
                try:
                    result = work(cursor)
                finally:
                    cursor.close()
                if not alone:
                    raw.commit()
                return result
            except dbapi.Error as exc:
                failure = _failure(exc, dbapi)
                lost = engine.dialect.is_disconnect(exc, driver, None)
                if lost:
                    self._liveness.lost()
                _discard(raw, lost)
            except BaseException:
                _discard(raw, False)
                raise
            finally:
                if alone and not driver.closed:
                    driver.autocommit = False
                raw.close()
        raise StoreUnavailable(f"database error ({failure})")

    def query(self, statement: Any) -> list[dict[str, Any]]:
        """Run a read-only SELECT built on the store's tables; return rows as dicts."""
        return self._run(
            lambda conn: [dict(row._mapping) for row in conn.execute(statement)], write=False
        )

    def ping(self) -> bool:
        """Tell whether the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
