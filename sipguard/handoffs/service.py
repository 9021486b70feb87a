"""Carry out a handoff: store it, ask Plivo to transfer the call, record what Plivo said.

The order is what makes a retry safe. The handoff is stored first (the store decides
idempotency and the one-live-handoff-per-call rule with its unique indexes), so a database that
is down stops the request before Plivo hears of it, and a replay finds the first handoff and
never transfers again. Each outcome moves the handoff and queues its webhook in one transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sipguard.calls.hours import iso_utc
from sipguard.errors import AppError, PlivoAPIError, StoreUnavailable, UnknownGroup
from sipguard.plivo.outbound import Outbound
from sipguard.store import Handoff, HandoffRequest, Store

log = logging.getLogger("sipguard.handoffs")


class TransferRefused(AppError):
    """Plivo refused (or never answered) the Transfer; the handoff is stored as failed."""

    status = 502

    def __init__(self, handoff: Handoff, error: PlivoAPIError) -> None:
        super().__init__("Plivo refused the transfer")
        self.handoff = handoff
        self.error = error

    def plivo(self) -> dict[str, Any]:
        """Return what Plivo answered: its HTTP status, api_id and message."""
        return {
            "status": self.error.status,
            "api_id": self.error.api_id,
            "message": self.error.error,
        }


class GroupClosed(AppError):
    """The group is outside its business hours at the moment of the request."""

    status = 409

    def __init__(self, group: str, until: datetime | None) -> None:
        when = f" until {iso_utc(until)}" if until is not None else ""
        super().__init__(f"group {group!r} is closed{when}")
        self.group = group
        self.until = until


def request_handoff(
    store: Store, outbound: Outbound, request: HandoffRequest, *, now: datetime
) -> tuple[Handoff, bool]:
    """Hand `request.call_uuid` to its group; return the handoff and whether it is a replay.

    Raises UnknownGroup (404), GroupClosed (409: outside the group's hours at `now`, unless
    the request replays one stored while it was open; nothing is stored) and the store's
    HandoffConflict (409), IdempotencyMismatch (422) and StoreUnavailable (503) before anything
    is sent to Plivo; TransferRefused (502) when Plivo refuses, the handoff then being `failed`
    with a handoff.failed webhook queued.
    """
    group = outbound.groups.get(request.group_name)
    if group is None:
        raise UnknownGroup(f"no agent group named {request.group_name!r}")
    status = group.status(now)
    if not status.open:
        # A retry of a handoff made while the group was open answers what the first one got.
        first = store.replayed_handoff(request)
        if first is None:
            raise GroupClosed(group.name, status.until)
        return _replayed(first)
    created = store.create_handoff(request)
    handoff = created.handoff
    if created.replayed:
        return _replayed(handoff)
    try:
        answer = outbound.transfer_to_group(handoff.call_uuid, handoff.group_name, handoff.id)
    except PlivoAPIError as exc:
        log.warning(
            "handoff=%s call=%s Plivo refused the transfer: HTTP %s api_id %s",
            handoff.id,
            handoff.call_uuid,
            exc.status if exc.status is not None else "-",
            exc.api_id or "-",
        )
        refused = TransferRefused(handoff, exc)
        moved = store.transition(
            handoff.id,
            "failed",
            "handoff.failed",
            {"reason": "transfer_refused", "plivo": refused.plivo()},
            from_states=("requested",),
            plivo_api_id=exc.api_id,
            error=exc.error[:500],
        )
        if moved is not None:
            refused.handoff = moved.handoff
        raise refused from None
    api_id = answer.get("api_id")
    api_id = api_id if isinstance(api_id, str) else None
    current: Handoff | None = None
    try:
        moved = store.transition(
            handoff.id,
            "transferred",
            "handoff.transferred",
            {"plivo_api_id": api_id},
            from_states=("requested",),
            plivo_api_id=api_id,
        )
        if moved is None:  # Plivo called back first and moved it on: keep Plivo's api_id
            current = store.note_plivo_api_id(handoff.id, api_id)
    except StoreUnavailable:
        # Plivo has the call now: answering 503 would invite a retry of a transfer that
        # happened. The handoff stays `requested` until the database answers again.
        log.warning(
            "handoff=%s call=%s transferred, but not recorded", handoff.id, handoff.call_uuid
        )
        return handoff, False
    log.info(
        "handoff=%s call=%s transferred to %s", handoff.id, handoff.call_uuid, handoff.group_name
    )
    return (moved.handoff if moved is not None else current or handoff), False


def _replayed(handoff: Handoff) -> tuple[Handoff, bool]:
    log.info("handoff=%s call=%s replayed (%s)", handoff.id, handoff.call_uuid, handoff.state)
    return handoff, True
