"""The delivery worker: claim due events from the outbox, deliver each, record the result.

Events are claimed in batches under a lease long enough for one delivery (connect and answer
timeouts, plus a margin), so a worker that dies mid-delivery holds its events only until the lease
runs out, and two workers never deliver one event at the same time. A batch is worked through
in order while each next event still fits in what is left of the lease; the rest come back when
it runs out. SIGTERM or SIGINT stops the loop after the event in hand.
"""

from __future__ import annotations

import logging
import os
import select
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType

from sipguard.errors import StoreUnavailable
from sipguard.notify.alerts import RECEIVERS, Receiver
from sipguard.notify.delivery import Delivery, Outcome, Verdict
from sipguard.notify.model import Outbox, OutboxEvent

log = logging.getLogger("sipguard.notify")

DEFAULT_BATCH = 10
DEFAULT_POLL_SECONDS = 1.0
# Time on top of a delivery's worst case (connect + answer timeouts) before its lease runs out:
# room for signing, recording the result, and a little clock skew between instances.
LEASE_MARGIN = timedelta(seconds=5)


def lease_for(timeout: float) -> timedelta:
    """Return how long a claimed event stays leased when a delivery may take `timeout` twice."""
    return _worst_case(timeout) + LEASE_MARGIN


def _worst_case(timeout: float) -> timedelta:
    return timedelta(seconds=2 * timeout)


class Worker:
    """Delivers the outbox's due events; `run_once` for one pass, `run` until stopped."""

    def __init__(
        self,
        outbox: Outbox,
        delivery: Delivery,
        secret_for: Callable[[str], str],
        *,
        batch: int = DEFAULT_BATCH,
        poll: float = DEFAULT_POLL_SECONDS,
        receivers: Mapping[str, Receiver] | None = None,
    ) -> None:
        self.outbox = outbox
        self.delivery = delivery
        self.secret_for = secret_for  # API key id -> its whsec_ secret
        # Alert receivers by owner id, from the settings: an alert's URL is never stored.
        self.receivers = dict(receivers or {})
        self.batch = batch
        self.poll = poll
        self.lease = lease_for(delivery.timeout)
        # A plain flag and a pipe, not a threading.Event: a signal handler runs between two
        # bytecodes of the loop, and Event.set would wait for a lock Event.wait may be holding.
        self._stopping = False
        self._wake: int | None = None  # the pipe's write end while `run` sleeps on it

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Ask the loop to stop after the event in hand (safe from a signal handler, any thread)."""
        self._stopping = True
        wake = self._wake
        if wake is not None:
            try:
                os.write(wake, b"\0")
            except OSError:  # full (already woken) or just closed (already stopping)
                pass

    def run_once(self) -> int:
        """Claim one batch of due events and deliver them; return how many were attempted."""
        # The store leases on the same clock, from this moment or a little later: counting from
        # here errs on the safe side.
        last_start = self.delivery.clock() + self.lease - _worst_case(self.delivery.timeout)
        try:
            events = self.outbox.claim_due(self.batch, self.lease)
        except StoreUnavailable as exc:
            log.warning("outbox not reachable: %s; trying again", exc.message)
            return 0
        attempted = 0
        for event in events:
            if self.stopping or self.delivery.clock() > last_start:
                break  # left leased: claimable again once the lease runs out
            self._attempt(event)
            attempted += 1
        return attempted

    def run(self) -> None:
        """Deliver until `stop`; sleep `poll` seconds whenever nothing is due."""
        log.info("webhook worker started: batch %d, lease %s", self.batch, self.lease)
        woken, wake = os.pipe()
        os.set_blocking(wake, False)  # stop() never blocks on a full pipe
        self._wake = wake
        try:
            while not self.stopping:
                if self.run_once() < self.batch and not self.stopping:
                    select.select([woken], [], [], self.poll)  # returns early on stop()
        finally:
            self._wake = None
            os.close(wake)
            os.close(woken)
        log.info("webhook worker stopped")

    @contextmanager
    def signals(self) -> Iterator[None]:
        """Let SIGTERM and SIGINT stop the loop (main thread only); restore the old handlers."""

        def handle(number: int, frame: FrameType | None) -> None:
            self.stop()

        previous = {number: signal.signal(number, handle) for number in _STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _attempt(self, event: OutboxEvent) -> None:
        try:
            outcome = self._deliver(event)
        except Exception as exc:  # a bug must not stop the loop: retried on the schedule
            log.exception("webhook=%s delivery failed: %s", event.id, type(exc).__name__)
            outcome = self._internal_error(event, exc)
        try:
            if outcome.verdict is Verdict.DELIVERED:
                assert outcome.status is not None
                self.outbox.mark_delivered(event.id, outcome.status)
            else:
                self.outbox.mark_failed(event.id, outcome.retry_at, outcome.status, outcome.error)
        except StoreUnavailable as exc:
            # Not recorded: the event is claimable again after its lease, and sent again.
            log.warning("webhook=%s result not recorded: %s", event.id, exc.message)
        level = logging.INFO if outcome.verdict is Verdict.DELIVERED else logging.WARNING
        log.log(
            level,
            "webhook=%s type=%s attempt=%d result=%s status=%s%s",
            event.id,
            event.event_type,
            event.attempts + 1,
            outcome.verdict.value,
            outcome.status if outcome.status is not None else "-",
            f" error={outcome.error!r}" if outcome.error else "",
        )

    def _deliver(self, event: OutboxEvent) -> Outcome:
        """Send a handoff webhook signed with its key's secret, an alert to its receiver."""
        if event.api_key_id not in RECEIVERS:
            return self.delivery.deliver(event, self.secret_for(event.api_key_id))
        receiver = self.receivers.get(event.api_key_id)
        if receiver is None:
            return Outcome(Verdict.GIVE_UP, None, "its alert receiver is no longer configured")
        return self.delivery.deliver(event, receiver.secret, receiver.url)

    def _internal_error(self, event: OutboxEvent, exc: Exception) -> Outcome:
        error = f"internal error ({type(exc).__name__})"
        schedule, now = self.delivery.schedule, self.delivery.clock()
        retry_at = schedule.next_attempt(event, now, self.delivery.random())
        if retry_at is None:
            return Outcome(Verdict.GIVE_UP, None, error)
        return Outcome(Verdict.RETRY, None, error, retry_at)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
