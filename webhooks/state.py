"""One signed callback's bookkeeping, shared by the views, `persist` and the error handlers.

The webhooks blueprint's before_request starts it (`begin`); everything after reaches it through
`callback_state()`. It lives on `flask.g` under one key, so nothing else in the request needs an
untyped attribute there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sipguard.calls.forms import Hangup
from sipguard.calls.signature import Verified
from sipguard.store import CallEvent
from webhooks.context import current_globals

_KEY = "sipguard_callback"


@dataclass(slots=True)
class CallbackState:
    """What this callback produced so far: committed, logged and counted at the end."""

    route: str
    started: float
    verified: Verified | None = None
    call_uuid: str = "-"
    outcome: tuple[str, str] = ("-", "-")  # (decision, reason) for the log line and metrics
    events: list[CallEvent] = field(default_factory=list)
    hangup: Hangup | None = None
    rejection: str | None = None  # why a signature or nonce was refused, counted in the store
    # (agent, sip_auth_failed / sip_auth_timeout, or None for a call it took), counted once the
    # nonce is spent, so a replayed Dial action never counts twice
    agent_results: list[tuple[str, str | None]] = field(default_factory=list)
    # A SIP call without SIPAuthType: counted in the metrics; alerted (naming this route and
    # rule, never the caller) when no rule took it on purpose.
    auth_not_running: bool = False
    alert_auth_not_running: str | None = None


def begin(route: str) -> CallbackState:
    """Start this request's state; the webhooks blueprint calls it before anything else."""
    state = CallbackState(route, time.perf_counter())
    setattr(current_globals(), _KEY, state)
    return state


def callback_state() -> CallbackState | None:
    """Return this request's callback state; None outside the webhooks blueprint."""
    state: CallbackState | None = current_globals().get(_KEY)
    return state
