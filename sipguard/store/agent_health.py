"""Agent health: each agent's run of SIP-auth failures towards its PBX, and its quarantine.

Every worker and instance counts through the same row, each result in one statement: a failure
is one INSERT ... ON CONFLICT DO UPDATE ... RETURNING, so two instances on PostgreSQL never lose
a count or both start one quarantine. `after` consecutive failures (sip_auth_failed 4240,
sip_auth_timeout 4250) quarantine the agent until `cool_down` has passed; a failure while the
count is already there extends it. A success resets the count; the first success once the
cool-down is over, or `release_agent`, ends the quarantine. Rows hold agent names only. A
quarantine starting or ending raises its alert in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import Connection, DateTime, bindparam, case, func, literal, select, update

from sipguard.calls.agents import Quarantine
from sipguard.notify import alerts
from sipguard.store.alerts import AlertsStore
from sipguard.store.database import Prepared, UtcClock, now_utc
from sipguard.store.schema import agent_health

AgentState = Literal["healthy", "failing", "quarantined", "cooled_down"]
T = TypeVar("T")


@dataclass(frozen=True)
class AgentHealth:
    """One agent's row: its consecutive failures and, when quarantined, since and until when."""

    agent: str
    failures: int
    last_cause: str | None
    quarantined_since: datetime | None
    quarantined_until: datetime | None
    updated_at: datetime

    def quarantined(self, now: datetime) -> bool:
        """Tell whether the agent is skipped at `now`."""
        return self.quarantined_until is not None and now < self.quarantined_until

    def state(self, now: datetime) -> AgentState:
        """Name the agent's state: cooled_down is rung again, its next success ends it."""
        if self.quarantined(now):
            return "quarantined"
        if self.quarantined_since is not None:
            return "cooled_down"
        return "failing" if self.failures else "healthy"


@dataclass(frozen=True)
class Failed:
    """What one failure did: the row after it, and whether it started the quarantine."""

    health: AgentHealth
    started: bool


def _health(row: Any) -> AgentHealth:
    return AgentHealth(**row._mapping)  # the columns are the fields, by name


_CLEARED = {"failures": 0, "quarantined_since": None, "quarantined_until": None}


@dataclass(frozen=True)
class _Reads:
    """The quarantined agents (read at most once a second per process) and the answered agent's
    standing (read by every answered Dial), compiled once for the dialect."""

    quarantined: Prepared  # every agent quarantined now (a handful of rows at most)
    standing: Prepared  # one agent's count and quarantine start, to skip a no-op reset

    @classmethod
    def build(cls, dialect: Any) -> _Reads:
        return cls(
            quarantined=Prepared(
                select(agent_health).where(agent_health.c.quarantined_until > bindparam("now")),
                dialect,
            ),
            standing=Prepared(
                select(agent_health.c.failures, agent_health.c.quarantined_since).where(
                    agent_health.c.agent == bindparam("agent")
                ),
                dialect,
            ),
        )


# How long a process answers "who is quarantined?" from its last read of the quarantined rows.
# Its own quarantines and releases drop that read at once; another worker's or instance's reach
# its dials within this time (the agent rung meanwhile fails SIP auth once more, and the Dial
# moves on). A dial costs no database round trip for it while the read is fresh.
QUARANTINE_READ_FOR = 1.0  # seconds


class _RecentRead:
    """The quarantined rows as last read, and when (monotonic): shared by a process's threads."""

    def __init__(self) -> None:
        self._read: tuple[float, int, tuple[AgentHealth, ...]] | None = None
        self._changes = 0  # this process's quarantine changes so far

    def rows(self, read: Callable[[], tuple[AgentHealth, ...]]) -> tuple[AgentHealth, ...]:
        """Return the last read while fresh, else `read()`, kept for the next callers.

        A read is kept with the count of changes seen before it ran: one that a change of this
        process's overtook (it may predate the change) is never answered from.
        """
        last, changes, moment = self._read, self._changes, time.monotonic()
        if last is not None and last[1] == changes and moment - last[0] < QUARANTINE_READ_FOR:
            return last[2]
        rows = read()
        self._read = (moment, changes, rows)  # one assignment: threads see old or new
        return rows

    def drop(self) -> None:
        """Forget the last read: this process just changed a quarantine (committed, or maybe)."""
        self._changes += 1


class AgentHealthStore(AlertsStore):
    """Count agents' SIP-auth results and say which agents are quarantined."""

    def __init__(self, url: str, *, clock: UtcClock = now_utc, threads: int = 1) -> None:
        super().__init__(url, clock=clock, threads=threads)
        self._quarantined = _RecentRead()

    def agent_failed(self, agent: str, cause: str, policy: Quarantine) -> Failed:
        """Count one sip_auth_failed / sip_auth_timeout towards `agent`, atomically."""
        now = self._clock()
        until = now + policy.cool_down
        insert_ = self._insert()(agent_health)
        first = insert_.values(
            agent=agent[:64],
            failures=1,
            last_cause=cause[:24],
            quarantined_since=now if policy.after <= 1 else None,
            quarantined_until=until if policy.after <= 1 else None,
            updated_at=now,
        )
        counted = agent_health.c.failures + 1
        reached = counted >= policy.after
        at = literal(now, DateTime())
        statement = first.on_conflict_do_update(
            index_elements=[agent_health.c.agent],
            set_={
                "failures": counted,
                "last_cause": first.excluded.last_cause,
                # An extension keeps the quarantine's start; a new run starts afresh.
                "quarantined_since": case(
                    (reached, func.coalesce(agent_health.c.quarantined_since, at)),
                    else_=agent_health.c.quarantined_since,
                ),
                "quarantined_until": case(
                    (reached, literal(until, DateTime())), else_=agent_health.c.quarantined_until
                ),
                "updated_at": now,
            },
        ).returning(*agent_health.c)

        def write(conn: Connection) -> Failed:
            health = _health(conn.execute(statement).one())
            started = health.failures == policy.after
            if started and health.quarantined_until is not None:
                alert = alerts.quarantined(agent, cause, health.failures, health.quarantined_until)
                self._queue_alert(conn, now, alert)
            return Failed(health, started)

        failed = self._changing(write)
        if failed.health.quarantined_until is not None:  # started or extended
            self._quarantined.drop()
        return failed

    def agent_succeeded(self, agent: str) -> bool:
        """Reset `agent`'s count after a call it took; True when that ended its quarantine.

        A success during the cool-down (a call rung before the quarantine began) leaves the
        quarantine in place: only one after it ends it.
        """
        name = agent[:64]
        standing = self._run_cursor(
            lambda cursor: self._compiled(_Reads.build).standing.run(cursor, {"agent": name}),
            one_statement=True,
        )
        if not standing or (
            standing[0]["failures"] == 0 and standing[0]["quarantined_since"] is None
        ):
            return False  # nothing to reset: an agent in good health costs one read, no write
        now = self._clock()
        release = (
            update(agent_health)
            .where(
                agent_health.c.agent == name,
                agent_health.c.quarantined_since.is_not(None),
                agent_health.c.quarantined_until <= now,
            )
            .values(**_CLEARED, updated_at=now)
            .returning(agent_health.c.agent)
        )
        reset = (
            update(agent_health)
            .where(
                agent_health.c.agent == name,
                agent_health.c.failures > 0,
                agent_health.c.quarantined_since.is_(None),
            )
            .values(failures=0, updated_at=now)
        )

        def write(conn: Connection) -> bool:
            if conn.execute(release).first() is not None:
                self._queue_alert(conn, now, alerts.released(name, "it took a call"))
                return True
            conn.execute(reset)
            return False

        released = self._changing(write)
        if released:
            self._quarantined.drop()
        return released

    def release_agent(self, agent: str) -> bool:
        """End `agent`'s quarantine (and its count) now; False when it was not quarantined."""
        now = self._clock()
        statement = (
            update(agent_health)
            .where(
                agent_health.c.agent == agent[:64], agent_health.c.quarantined_since.is_not(None)
            )
            .values(**_CLEARED, updated_at=now)
            .returning(agent_health.c.agent)
        )

        def write(conn: Connection) -> bool:
            if conn.execute(statement).first() is None:
                return False
            how = "released by sipguard agents release"
            self._queue_alert(conn, now, alerts.released(agent[:64], how))
            return True

        released = self._changing(write)
        if released:
            self._quarantined.drop()
        return released

    def _changing(self, write: Callable[[Connection], T]) -> T:
        """Run `write`, which may change a quarantine; the shared read goes when it failed,
        since a failed commit may still have landed. The caller drops it after a change."""
        try:
            return self._run(write)
        except BaseException:
            self._quarantined.drop()
            raise

    def quarantined_agents(self, agents: Collection[str]) -> dict[str, AgentHealth]:
        """Return those of `agents` quarantined now, by name.

        From one read of the quarantined rows, kept for `QUARANTINE_READ_FOR`: a quarantine
        that ends meanwhile is judged by its own `quarantined_until`, against the store's clock.
        """
        if not agents:
            return {}
        now = self._clock()

        def read() -> tuple[AgentHealth, ...]:
            rows = self._run_cursor(
                lambda cursor: self._compiled(_Reads.build).quarantined.run(cursor, {"now": now}),
                one_statement=True,
            )
            return tuple(AgentHealth(**row) for row in rows)

        return {
            health.agent: health
            for health in self._quarantined.rows(read)
            if health.agent in agents and health.quarantined(now)
        }

    def agent_health(self) -> list[AgentHealth]:
        """Return every agent's row, by name."""
        statement = select(agent_health).order_by(agent_health.c.agent)
        rows = self._run(lambda conn: conn.execute(statement).all(), write=False)
        return [_health(row) for row in rows]

    def now(self) -> datetime:
        """Return the store's time (naive UTC), the one quarantines are judged against."""
        return self._clock()
