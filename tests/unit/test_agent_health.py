"""Agent quarantine in the store, on SQLite and PostgreSQL: counting is one statement per result,
so two Stores (two instances) racing on one database agree on the count and on one start; a
process answers dials from its read of the quarantines for up to QUARANTINE_READ_FOR."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from sipguard.calls.agents import Quarantine
from sipguard.store import Store
from sipguard.store.agent_health import _RecentRead
from tests.support.databases import opened_stores
from tests.support.outbox import FakeClock

POLICY = Quarantine(after=3, cool_down=timedelta(minutes=15))
FAILED = "sip_auth_failed"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def short_reads(monkeypatch: pytest.MonkeyPatch) -> float:
    """Shared reads live 50 ms, so a test waits that long, not a second."""
    # By the module itself: the package's `agent_health` is the table of that name.
    monkeypatch.setattr(sys.modules[_RecentRead.__module__], "QUARANTINE_READ_FOR", 0.05)
    return 0.05


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[Store]:
    with opened_stores(database_url, clock) as opener:
        migrated = opener()
        migrated.upgrade()
        yield migrated


def _fail(store: Store, times: int, agent: str = "alice", cause: str = FAILED) -> None:
    for _ in range(times):
        store.agent_failed(agent, cause, POLICY)


def test_one_failure_short_of_the_threshold_does_not_quarantine(store: Store) -> None:
    _fail(store, POLICY.after - 1)
    assert store.quarantined_agents(["alice"]) == {}
    (row,) = store.agent_health()
    assert (row.failures, row.state(store.now())) == (POLICY.after - 1, "failing")


def test_the_threshold_quarantines_for_the_cool_down(store: Store, clock: FakeClock) -> None:
    _fail(store, POLICY.after - 1)
    failed = store.agent_failed("alice", "sip_auth_timeout", POLICY)
    assert failed.started
    found = store.quarantined_agents(["alice", "bob"])
    assert list(found) == ["alice"]
    health = found["alice"]
    assert health.last_cause == "sip_auth_timeout"
    assert health.quarantined_since == clock()
    assert health.quarantined_until == clock() + POLICY.cool_down


def test_only_the_agents_asked_about_come_back(store: Store) -> None:
    """The read takes every quarantined row; an agent of another group is not reported."""
    _fail(store, POLICY.after, agent="carol")
    _fail(store, POLICY.after, agent="alice")
    assert list(store.quarantined_agents(["alice", "bob"])) == ["alice"]
    assert store.quarantined_agents(["bob"]) == {}
    assert set(store.quarantined_agents({"alice", "carol"})) == {"alice", "carol"}


def test_a_success_in_between_resets_the_count(store: Store) -> None:
    _fail(store, POLICY.after - 1)
    assert store.agent_succeeded("alice") is False
    _fail(store, POLICY.after - 1)
    assert store.quarantined_agents(["alice"]) == {}
    assert store.agent_health()[0].failures == POLICY.after - 1


def test_a_failure_while_quarantined_extends_it_and_keeps_its_start(
    store: Store, clock: FakeClock
) -> None:
    _fail(store, POLICY.after)
    since = clock()
    clock.advance(timedelta(minutes=5))
    assert store.agent_failed("alice", FAILED, POLICY).started is False
    health = store.quarantined_agents(["alice"])["alice"]
    assert (health.quarantined_since, health.quarantined_until) == (
        since,
        clock() + POLICY.cool_down,
    )


def test_the_first_success_after_the_cool_down_ends_it(store: Store, clock: FakeClock) -> None:
    _fail(store, POLICY.after)
    clock.advance(POLICY.cool_down - timedelta(seconds=1))
    # A call rung before the quarantine began does not end it during the cool-down.
    assert store.agent_succeeded("alice") is False
    assert "alice" in store.quarantined_agents(["alice"])
    clock.advance(timedelta(seconds=1))
    assert store.quarantined_agents(["alice"]) == {}
    assert store.agent_health()[0].state(clock()) == "cooled_down"
    assert store.agent_succeeded("alice") is True
    assert store.agent_health()[0].state(clock()) == "healthy"
    assert store.agent_succeeded("alice") is False


def test_a_failure_after_the_cool_down_quarantines_again_at_once(
    store: Store, clock: FakeClock
) -> None:
    _fail(store, POLICY.after)
    clock.advance(POLICY.cool_down)
    assert store.agent_failed("alice", FAILED, POLICY).started is False  # the same quarantine
    assert "alice" in store.quarantined_agents(["alice"])


def test_release_ends_it_and_the_count(store: Store) -> None:
    assert store.release_agent("alice") is False
    _fail(store, POLICY.after)
    assert store.release_agent("alice") is True
    assert store.quarantined_agents(["alice"]) == {}
    assert store.agent_health()[0].state(store.now()) == "healthy"
    _fail(store, POLICY.after - 1)
    assert store.quarantined_agents(["alice"]) == {}
    assert store.agent_failed("alice", FAILED, POLICY).started


def test_after_one_quarantines_on_the_first_failure(store: Store) -> None:
    once = Quarantine(after=1, cool_down=timedelta(minutes=1))
    assert store.agent_failed("carol", FAILED, once).started
    assert "carol" in store.quarantined_agents(["carol"])


@contextmanager
def _two_instances(url: str, clock: FakeClock) -> Iterator[tuple[Store, Store]]:
    """Two Stores on one migrated database: two instances of the app."""
    with opened_stores(url, clock) as opener:
        first, second = opener(), opener()
        first.upgrade()
        yield first, second


@pytest.mark.postgres
def test_two_instances_on_postgresql_agree(
    postgres_url: str, clock: FakeClock, short_reads: float
) -> None:
    with _two_instances(postgres_url, clock) as (first, second):
        threads, each = 8, 5
        barrier = threading.Barrier(threads)
        started: list[bool] = []
        lock = threading.Lock()

        def run(index: int) -> None:
            store = first if index % 2 else second
            barrier.wait()
            for _ in range(each):
                failed = store.agent_failed("alice", FAILED, POLICY)
                with lock:
                    started.append(failed.started)

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert first.agent_health()[0].failures == threads * each
        assert started.count(True) == 1
        assert "alice" in second.quarantined_agents(["alice"])
        assert "alice" in first.quarantined_agents(["alice"])
        assert second.release_agent("alice") is True
        assert second.quarantined_agents(["alice"]) == {}  # its own release: at once
        time.sleep(short_reads)
        assert first.quarantined_agents(["alice"]) == {}  # the other's: within the read's life


def test_dials_share_one_read_until_this_process_changes_a_quarantine(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    real = store._run_cursor

    def counted(work: Any, **options: Any) -> Any:
        reads.append(1)
        return real(work, **options)

    monkeypatch.setattr(store, "_run_cursor", counted)
    for _ in range(5):
        assert store.quarantined_agents(["alice"]) == {}
    assert len(reads) == 1
    _fail(store, POLICY.after - 1)  # counted, but nobody is quarantined: the read stands
    assert store.agent_succeeded("bob") is False  # nothing to reset (its standing: one read)
    assert store.quarantined_agents(["alice"]) == {}
    assert len(reads) == 2
    _fail(store, 1)
    assert "alice" in store.quarantined_agents(["alice"])
    assert len(reads) == 3
    assert store.release_agent("alice")
    assert store.quarantined_agents(["alice"]) == {}
    assert len(reads) == 4


def test_a_read_taken_while_a_quarantine_commits_is_not_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared read goes once the change is committed: a read another thread takes while it
    is written cannot see it yet, and must not answer the dials after it."""
    _fail(store, POLICY.after - 1)
    real = store._run

    def racing(work: Any, **options: Any) -> Any:
        def write_then_read(conn: Any) -> Any:
            written = work(conn)
            assert store.quarantined_agents(["alice"]) == {}  # not committed yet
            return written

        return real(write_then_read, **options)

    monkeypatch.setattr(store, "_run", racing)
    assert store.agent_failed("alice", FAILED, POLICY).started
    monkeypatch.undo()
    assert "alice" in store.quarantined_agents(["alice"])


def test_another_instance_s_quarantine_reaches_dials_within_the_read_s_life(
    database_url: str, clock: FakeClock, short_reads: float
) -> None:
    with _two_instances(database_url, clock) as (first, second):
        assert first.quarantined_agents(["alice"]) == {}
        _fail(second, POLICY.after)
        time.sleep(short_reads)
        assert "alice" in first.quarantined_agents(["alice"])


def test_a_quarantine_ending_meanwhile_is_judged_by_its_own_end(
    store: Store, clock: FakeClock
) -> None:
    _fail(store, POLICY.after)
    assert "alice" in store.quarantined_agents(["alice"])
    clock.advance(POLICY.cool_down)
    assert store.quarantined_agents(["alice"]) == {}


def test_a_read_overtaken_by_a_change_is_not_kept() -> None:
    """A read that began before this process changed a quarantine may predate the change."""
    recent = _RecentRead()

    def overtaken() -> tuple[()]:
        recent.drop()  # another thread's change commits while this read runs
        return ()

    recent.rows(overtaken)
    again: list[int] = []

    def read() -> tuple[()]:
        again.append(1)
        return ()

    recent.rows(read)
    assert again == [1]
