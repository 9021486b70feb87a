"""The outbox loses nothing: real `sipguard worker` processes on SQLite and a real PostgreSQL,
delivering to a loopback receiver that goes down, fails, stalls; a worker SIGKILLed mid-delivery;
the app (gunicorn) restarted between enqueue and delivery; two workers at once.

Events are queued by the real store (`transition` writes the event with the state change) or by
the real HTTP API with Plivo's Transfer answered by a loopback stand-in. Every request the
receiver gets is checked with the `standardwebhooks` package. Retry pauses are shortened with
WEBHOOK_RETRY_SECONDS and the lease with WEBHOOK_TIMEOUT_SECONDS, both ordinary settings.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from app import create_app
from devtools.harness import Server, request, spawn
from devtools.receiver import Answer, Receiver
from sipguard.notify.model import webhook_secret
from sipguard.notify.worker import DEFAULT_BATCH, lease_for
from sipguard.store import HandoffRequest
from sipguard.store.handoffs import request_hash
from tests.support import config
from tests.support.servers import start

pytestmark = [pytest.mark.slow]

EVENTS = int(os.environ.get("RELIABILITY_WEBHOOKS", "200"))
SIPGUARD = str(Path(sys.executable).parent / "sipguard")
WAIT = 60.0  # seconds any one phase may take before the test fails
STOP_TIMEOUT = 10.0


# -- helpers ------------------------------------------------------------------------------------


class TimedReceiver(Receiver):
    """A receiver that also notes when each request arrived (naive UTC, like the store)."""

    def __init__(self, path: str = "/hooks") -> None:
        super().__init__(path)
        self.arrived: dict[int, datetime] = {}  # index in `requests` -> arrival

    def _handle(self, handler: Any) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        with self._lock:
            self.arrived[len(self.requests)] = now  # `requests` grows by this one next
        super()._handle(handler)


@dataclass
class WorkerProcess:
    """One `sipguard worker` in its own process group, its output in `log`."""

    server: Server

    @property
    def log(self) -> Path:
        return self.server.log

    def kill(self) -> None:
        """SIGKILL it at once: no chance to finish or record anything."""
        self.server.kill()

    def stop(self) -> None:
        """SIGTERM, at most STOP_TIMEOUT s to finish the event in hand, then SIGKILL."""
        self.server.stop(timeout=STOP_TIMEOUT)

    def delivered(self) -> int:
        """How many events this worker recorded as delivered (its log, one line each)."""
        return self.log.read_text(errors="replace").count("result=delivered")


def worker_env(database_url: str, timeout: int = 1) -> dict[str, str]:
    """The worker's whole environment: the suites' app settings, short timeouts and pauses."""
    return {
        "PATH": os.environ.get("PATH", ""),
        **config.app_config(database_url),
        "WEBHOOK_TIMEOUT_SECONDS": str(timeout),
        "WEBHOOK_POLL_SECONDS": "1",
        "WEBHOOK_RETRY_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }


def start_worker(stack: ExitStack, env: dict[str, str], log: Path) -> WorkerProcess:
    """Start `sipguard worker` in `log`'s directory; it is stopped when `stack` closes."""
    worker = WorkerProcess(spawn("worker", [SIPGUARD, "worker"], env=env, log=log))
    stack.callback(worker.stop)
    return worker


def wait_for(condition: Callable[[], bool], what: str, *logs: Path) -> float:
    """Poll `condition` until it holds; return the seconds it took, or fail naming `what`."""
    started = time.monotonic()
    while time.monotonic() - started < WAIT:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    tails = "\n".join(log.read_text(errors="replace")[-3000:] for log in logs if log.exists())
    pytest.fail(f"{what} did not happen within {WAIT:g} s\n{tails}")


@dataclass
class Outbox:
    """The app's store in this process: it queues events and reads the outbox's rows."""

    store: Any

    def count(self, where: str) -> int:
        with self.store.engine.connect() as conn:
            return int(
                conn.execute(text(f"SELECT count(*) FROM webhook_outbox WHERE {where}")).one()[0]
            )

    def undelivered(self) -> int:
        return self.count("delivered_at IS NULL")

    def leased(self) -> dict[str, datetime]:
        """The undelivered events under a lease, and when each lease runs out."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, lease_until FROM webhook_outbox "
                    "WHERE lease_until IS NOT NULL AND delivered_at IS NULL"
                )
            )
            return {row.id: _naive(row.lease_until) for row in rows}

    def queue(self, key_id: str, count: int, prefix: str) -> list[str]:
        """Create `count` handoffs and move each to `transferred`; return the webhook-ids."""
        ids = []
        for n in range(count):
            call_uuid = f"{prefix}-{n:04d}"
            created = self.store.create_handoff(
                HandoffRequest(key_id, call_uuid, "support", request_hash({"c": call_uuid}))
            )
            moved = self.store.transition(created.handoff.id, "transferred", "handoff.transferred")
            assert moved is not None and moved.event_id is not None
            ids.append(moved.event_id)
        return ids


def _naive(value: datetime | str) -> datetime:
    """A stored time as naive UTC (SQLite hands back text, PostgreSQL a datetime)."""
    found = datetime.fromisoformat(value) if isinstance(value, str) else value
    if found.tzinfo is not None:
        found = found.astimezone(UTC).replace(tzinfo=None)
    return found


@pytest.fixture
def outbox(database_url: str) -> Iterator[Outbox]:
    """The app's store on `database_url` (migrated), for queuing and reading events."""
    app = create_app(config.app_config(database_url))
    store = app.extensions["sipguard"].store
    yield Outbox(store)
    store.dispose()


def assert_no_secret(key_id: str, *logs: Path) -> None:
    """Neither SECRET_KEY nor the key's whsec_ secret is in any process's output."""
    for log in logs:
        output = log.read_text(errors="replace")
        for secret in (config.SECRET_KEY, webhook_secret(config.SECRET_KEY, key_id)):
            assert secret not in output, f"a secret leaked into {log.name}"


def check_deliveries(receiver: Receiver, key_id: str, ids: list[str]) -> dict[str, int]:
    """Every request verifies with standardwebhooks; one webhook-id is one body on every
    attempt; every queued event was accepted at least once and nothing else arrived."""
    hook = Webhook(webhook_secret(config.SECRET_KEY, key_id))
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for received in receiver.requests:
        hook.verify(received.body, received.headers)  # raises on a bad signature
        bodies[received.webhook_id].add(received.body)
    assert set(bodies) == set(ids)  # nothing unknown, nothing missing
    assert all(len(found) == 1 for found in bodies.values())  # the same event on every attempt
    accepted = Counter(received.webhook_id for received in receiver.delivered)
    assert set(accepted) == set(ids)
    attempts = Counter(received.webhook_id for received in receiver.requests)
    return {
        "events": len(ids),
        "requests": len(receiver.requests),
        "retried_events": sum(1 for n in attempts.values() if n > 1),
        "accepted_twice": sum(1 for n in accepted.values() if n > 1),
        "lost": len(set(ids) - set(accepted)),
        "signatures_verified": len(receiver.requests),
    }


# -- the faults -----------------------------------------------------------------------------------


def test_a_receiver_down_then_failing_gets_every_event_once_it_is_back(
    database_url: str, outbox: Outbox, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Connection refused, then 500s, then 200: every event arrives, each accepted once."""
    started = time.monotonic()
    receiver = Receiver().start()
    receiver.stop()  # its port now refuses connections
    key = outbox.store.create_api_key("down", callback_url=receiver.url).key
    ids = outbox.queue(key.id, EVENTS, "down")
    with ExitStack() as stack:
        stack.callback(receiver.stop)
        worker = start_worker(stack, worker_env(database_url), tmp_path / "worker.log")
        wait_for(
            lambda: outbox.count("attempts >= 2 AND delivered_at IS NULL") == EVENTS,
            "two refused attempts for every event",
            worker.log,
        )
        receiver.default = Answer(500)
        receiver.start()  # the same port, answering 500
        wait_for(lambda: len(receiver.requests) >= EVENTS, "a 500 for as many requests", worker.log)
        receiver.default = Answer(200)
        back = time.monotonic()
        wait_for(lambda: outbox.undelivered() == 0, "every event delivered", worker.log)
        drained = time.monotonic() - back
    found = check_deliveries(receiver, key.id, ids)
    assert_no_secret(key.id, worker.log)
    assert found["accepted_twice"] == 0  # one worker, nothing killed: each accepted once
    # Every attempt is recorded: at least two refused ones per event, then each request.
    attempts = _sum_attempts(outbox)
    assert attempts >= 2 * EVENTS + found["requests"]
    figures.update(
        found,
        attempts_recorded=attempts,
        answered_500=len(receiver.requests) - len(receiver.delivered),
        drain_seconds=round(drained, 1),
        seconds=round(time.monotonic() - started, 1),
    )


def _sum_attempts(outbox: Outbox) -> int:
    with outbox.store.engine.connect() as conn:
        return int(conn.execute(text("SELECT sum(attempts) FROM webhook_outbox")).one()[0])


def test_a_worker_killed_mid_delivery_leaves_its_events_to_the_next_after_the_lease(
    database_url: str, outbox: Outbox, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """The receiver stalls on the first request; the worker is SIGKILLed while it waits. A new
    worker delivers the other events at once and the dead one's batch only once its lease has
    run out, each with the webhook-id it had."""
    started = time.monotonic()
    timeout = 3  # a lease of 2 * 3 + 5 = 11 s; the stall (2 s) is inside the timeout
    lease = lease_for(timeout)
    receiver = TimedReceiver()
    receiver.start()
    receiver.answer(Answer(200, delay=2.0))  # the first request stalls
    key = outbox.store.create_api_key("killed", callback_url=receiver.url).key
    ids = outbox.queue(key.id, EVENTS, "killed")
    with ExitStack() as stack:
        stack.callback(receiver.stop)
        env = worker_env(database_url, timeout)
        first = start_worker(stack, env, tmp_path / "first.log")
        wait_for(lambda: len(receiver.requests) >= 1, "the first delivery", first.log)
        first.kill()
        stalled = receiver.requests[0].webhook_id
        leased = outbox.leased()
        assert stalled in leased and len(leased) == min(DEFAULT_BATCH, EVENTS)
        assert first.delivered() == 0  # it died before recording anything
        second = start_worker(stack, env, tmp_path / "second.log")
        wait_for(lambda: outbox.undelivered() == 0, "every event delivered", second.log)
        assert second.delivered() == EVENTS
    found = check_deliveries(receiver, key.id, ids)
    assert_no_secret(key.id, first.log, second.log)
    attempts = Counter(received.webhook_id for received in receiver.requests)
    assert attempts[stalled] == 2  # the stalled attempt and the new worker's, one webhook-id
    assert all(attempts[event] == 1 for event in ids if event != stalled)
    # The dead worker's batch waited for its lease; nothing else did.
    early = []
    for index, received in enumerate(receiver.requests[1:], start=1):
        until = leased.get(received.webhook_id)
        if until is not None and receiver.arrived[index] < until - timedelta(milliseconds=500):
            early.append(received.webhook_id)
    assert early == []
    figures.update(
        found,
        leased_by_the_dead_worker=len(leased),
        lease_seconds=lease.total_seconds(),
        seconds=round(time.monotonic() - started, 1),
    )


def test_events_queued_before_the_app_restarts_are_all_delivered(
    database_url: str, outbox: Outbox, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Handoffs through the real HTTP API (Plivo's Transfer answered on loopback), gunicorn
    SIGKILLed and started again, more handoffs, then the worker: every 202 gets its webhook."""
    started = time.monotonic()
    plivo = Receiver("/").start()
    plivo.default = Answer(202)
    receiver = Receiver().start()
    created = outbox.store.create_api_key("restart", callback_url=receiver.url)
    plivo_url = f"http://127.0.0.1:{plivo.port}"
    accepted: list[str] = []
    with ExitStack() as stack:
        stack.callback(receiver.stop)
        stack.callback(plivo.stop)
        for round_ in ("before", "after"):
            log = tmp_path / f"app-{round_}.log"
            server = start(database_url, log, PLIVO_AUTH_ID=config.AUTH_ID, PLIVO_API_URL=plivo_url)
            try:
                accepted += _hand_off(server, created.token, EVENTS // 2, round_)
            finally:
                server.process.kill()  # the master, abruptly; stop() then ends its workers
                server.stop()
        assert outbox.undelivered() == len(accepted) == 2 * (EVENTS // 2)
        worker = start_worker(stack, worker_env(database_url), tmp_path / "worker.log")
        wait_for(lambda: outbox.undelivered() == 0, "every event delivered", worker.log)
    ids = [received.webhook_id for received in receiver.delivered]
    found = check_deliveries(receiver, created.key.id, sorted(set(ids)))
    assert_no_secret(created.key.id, worker.log, *tmp_path.glob("app-*.log"))
    handed = {json.loads(received.body)["data"]["handoff_id"] for received in receiver.delivered}
    assert handed == set(accepted)
    assert {json.loads(r.body)["type"] for r in receiver.requests} == {"handoff.transferred"}
    assert len(plivo.requests) == len(accepted)  # one Transfer per handoff
    figures.update(
        found,
        handoffs_accepted=len(accepted),
        app_restarts=1,
        seconds=round(time.monotonic() - started, 1),
    )


def _hand_off(server: Server, token: str, count: int, prefix: str) -> list[str]:
    """POST `count` handoffs, 4 at a time; return the ids of those answered 202."""

    def one(n: int) -> str:
        body = json.dumps({"call_uuid": f"{prefix}-{n}-{uuid.uuid4().hex[:8]}", "group": "support"})
        reply = request(
            "POST",
            f"{server.base}/api/v1/handoffs",
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert reply.status == 202, reply.body[:300]
        return str(json.loads(reply.body)["id"])

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.postgres
def test_two_workers_on_postgresql_never_hold_one_event_at_once(
    postgres_url: str, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Two workers share the outbox (FOR UPDATE SKIP LOCKED and leases): both deliver, no
    webhook-id is ever in flight twice, none is accepted twice, all arrive."""
    started = time.monotonic()
    app = create_app(config.app_config(postgres_url))
    store = app.extensions["sipguard"].store
    receiver = Receiver().start()
    receiver.default = Answer(200, delay=0.05)  # deliveries overlap in time
    try:
        key = store.create_api_key("pair", callback_url=receiver.url).key
        ids = Outbox(store).queue(key.id, EVENTS, "pair")
        with ExitStack() as stack:
            env = worker_env(postgres_url)
            pair = [start_worker(stack, env, tmp_path / f"worker-{n}.log") for n in (1, 2)]
            wait_for(
                lambda: Outbox(store).undelivered() == 0,
                "every event delivered",
                *(w.log for w in pair),
            )
            shares = [worker.delivered() for worker in pair]
    finally:
        receiver.stop()
        store.dispose()
    found = check_deliveries(receiver, key.id, ids)
    assert_no_secret(key.id, *(worker.log for worker in pair))
    assert receiver.max_in_flight == 1
    assert found["accepted_twice"] == 0 and found["requests"] == EVENTS
    assert sum(shares) == EVENTS and min(shares) > 0  # both took part
    figures.update(
        found,
        max_in_flight_per_webhook_id=receiver.max_in_flight,
        delivered_per_worker="/".join(map(str, shares)),
        seconds=round(time.monotonic() - started, 1),
    )
