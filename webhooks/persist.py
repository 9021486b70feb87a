"""Per-request bookkeeping: what a callback produced, committed with its nonce at the end.

Views call `note` / `note_hangup` / `note_outcome`, which fill this request's `CallbackState`
(and `handoff_step` for an API handoff's states and attempts); the blueprint's
after_request hook calls `commit`, which claims the nonce and stores the rows in one transaction.
A replayed nonce turns the answer into 403; a database failure turns a durable callback (hangup)
into 503 so Plivo retries, and is only logged for the others (a caller must still hear something
when the database is down).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from flask import Response

from sipguard.calls.causes import auth_failure_code
from sipguard.calls.forms import Hangup, dial_failure_code
from sipguard.errors import StoreUnavailable, UnknownHandoff
from sipguard.monitoring import alerting, metrics
from sipguard.store import CallEvent, Replayed, Store
from webhooks.context import runtime
from webhooks.responses import error_response
from webhooks.state import CallbackState, callback_state

log = logging.getLogger("sipguard.callbacks")
T = TypeVar("T")


def _current() -> CallbackState:
    state = callback_state()
    if state is None:
        raise RuntimeError("no callback state: only the webhooks blueprint's views record calls")
    return state


def note(event: CallEvent) -> None:
    """Queue a routing decision for this request's commit."""
    state = _current()
    state.events.append(event)
    state.call_uuid = event.call_uuid
    state.outcome = (event.decision, event.reason or "-")


def note_hangup(hangup: Hangup) -> None:
    """Queue the call's end; it must be stored before Plivo hears 200."""
    state = _current()
    state.hangup = hangup
    state.call_uuid = hangup.call_uuid
    state.outcome = ("stored", hangup.auth_failure or hangup.hangup_cause_name or "-")


def note_outcome(call_uuid: str, decision: str, reason: str) -> None:
    """Name what a callback that stores no call event did, for its log line and metrics."""
    state = _current()
    state.call_uuid = call_uuid
    state.outcome = (decision, reason)


def note_auth_not_running(alert_subject: str | None) -> None:
    """Note a SIP call without SIPAuthType; alert about `alert_subject` (a route) when set."""
    state = _current()
    state.auth_not_running = True
    state.alert_auth_not_running = alert_subject


def _alert(state: CallbackState) -> None:
    """Raise the alerts a stored callback calls for; a failure here is only logged."""
    if state.alert_auth_not_running is None and state.hangup is None:
        return
    store = runtime().store
    try:
        if state.alert_auth_not_running is not None:
            alerting.after_auth_not_running(store, state.alert_auth_not_running)
        if state.hangup is not None:
            alerting.after_hangup(store, state.hangup)
    except StoreUnavailable as exc:
        log.error("call=%s alert not raised: %s", state.call_uuid, exc.message)


def note_agent(agent: str, auth_failure: str | None) -> None:
    """Queue an agent's SIP-auth result (None: it took the call) for its quarantine count."""
    _current().agent_results.append((agent, auth_failure))


def _count_agents(results: list[tuple[str, str | None]]) -> None:
    """Count agents' results once their callback is stored; a failure here is only logged."""
    if not results:
        return
    rt = runtime()
    policy = rt.voice.quarantine
    for agent, cause in results:
        try:
            if cause is None:
                if rt.store.agent_succeeded(agent):
                    log.warning("agent=%s quarantine ended: it took a call", agent)
                continue
            failed = rt.store.agent_failed(agent, cause, policy)
        except StoreUnavailable as exc:
            log.error("agent=%s result not counted: %s", agent, exc.message)
            continue
        if failed.started:
            log.warning(
                "agent=%s quarantined until %s: %d %s in a row",
                agent,
                failed.health.quarantined_until,
                failed.health.failures,
                cause,
            )


def handoff_step(handoff_id: str, step: str, work: Callable[[Store], T]) -> T | None:
    """Run one piece of a handoff's bookkeeping against the store; None when it failed.

    A failure is logged by handoff id and step only, and never changes the answer: the caller
    must still get XML when the database is down (the hangup's own commit still answers 503).
    """
    try:
        return work(runtime().store)
    except StoreUnavailable as exc:
        log.error("handoff=%s %s not recorded: %s", handoff_id, step, exc.message)
    except UnknownHandoff:
        log.warning("handoff=%s %s not recorded: no such handoff", handoff_id, step)
    return None


def _caller_left(store: Store, call_uuid: str) -> None:
    """End the call's handoff that no agent took yet: its hangup's record saw one.

    StoreUnavailable goes on to `commit`, which answers 503: Plivo's retry stores nothing twice
    (the hangup row is kept once) and its record sees the handoff still waiting, so the end is
    never lost.
    """
    ended = store.end_for_call(call_uuid, "caller_hung_up", "handoff.caller_hung_up")
    if ended is not None:
        log.info("call=%s handoff=%s ended: the caller hung up", call_uuid, ended)


def commit(response: Response) -> Response:
    """Claim the nonce and store this request's rows; adjust the answer when that fails."""
    state = callback_state()
    if state is None:  # the blueprint's before_request never ran: nothing was verified
        return response
    verified = state.verified
    if verified is not None and response.status_code < 400:
        rt = runtime()
        hangup = state.hangup
        try:
            waiting = rt.store.record(
                nonce=verified.nonce,
                nonce_ttl=rt.settings.nonce_ttl,
                events=state.events,
                hangup=hangup,
            )
            _count_agents(state.agent_results)
            _alert(state)
            if waiting and hangup is not None:
                _caller_left(rt.store, hangup.call_uuid)
        except Replayed as exc:
            state.outcome = ("refused", exc.message)
            state.rejection = exc.message
            response = error_response(403, exc.message)
        except StoreUnavailable as exc:
            if hangup is not None:
                state.outcome = ("unavailable", exc.message)
                response = error_response(503, "cannot store the callback now; retry")
            else:
                log.error("call=%s not recorded: %s", state.call_uuid, exc.message)
    decision, reason = state.outcome
    level = logging.INFO if response.status_code < 400 else logging.WARNING
    log.log(
        level,
        "callback route=%s call=%s decision=%s reason=%s status=%s",
        state.route,
        state.call_uuid,
        decision,
        reason,
        response.status_code,
    )
    _observe(state, response.status_code)
    return response


def _observe(state: CallbackState, status: int) -> None:
    """Count the callback in the metrics, and a refused signature in the store too."""
    route, rejection = state.route, state.rejection
    failures: list[tuple[str, int]] = []
    if status < 400:
        hangup = state.hangup
        if hangup is not None and hangup.auth_failure is not None:
            code = auth_failure_code(
                hangup.auth_failure, hangup.hangup_cause_code, hangup.direction
            )
            failures.append((hangup.auth_failure, code))
        for event in state.events:
            if event.auth_failure is not None:
                code = dial_failure_code(event.auth_failure, event.dial_hangup_cause)
                failures.append((event.auth_failure, code))
    metrics.observe(
        route,
        state.outcome[0],
        status,
        time.perf_counter() - state.started,
        auth_failures=failures,
        rejection=rejection,
        auth_not_running=state.auth_not_running and status < 400,
    )
    if rejection is not None:
        store = runtime().store
        try:
            minute = store.count_rejection(route, rejection)
            alerting.after_refusal(store, minute, rejection)
        except StoreUnavailable:
            log.warning("could not count a refused callback: database unavailable")
