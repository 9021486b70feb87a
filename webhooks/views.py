"""Plivo's callbacks: answer, handoff, Dial action and events, whisper, hangup. All are signed.

An API handoff's id rides on every URL of its Dials (Plivo signs the whole URL it calls, so it
cannot be forged): each attempt, its outcome and the handoff's state are recorded as the
callbacks arrive, always after the caller's XML is settled and never failing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Blueprint, Request, Response, abort

from sipguard.calls import documents
from sipguard.calls.agents import Agent, AgentGroup, Closed, Fallback
from sipguard.calls.causes import SIP_AUTH_FAILED, SIP_AUTH_TIMEOUT
from sipguard.calls.forms import (
    DialEvent,
    DialResult,
    Hangup,
    InboundCall,
    whole_number,
)
from sipguard.calls.handoff import HANDOFF_PARAM, TOKEN_PARAM, WHISPER, handoff_sip_headers
from sipguard.calls.routing import (
    AUTH_NOT_RUNNING,
    UNAUTHENTICATED_SIP,
    Action,
    decide,
    stream_call_headers,
)
from sipguard.errors import StoreUnavailable, ValidationError
from sipguard.store import CallEvent
from sipguard.store.handoffs import WAITING_STATES, Handoff
from webhooks import persist
from webhooks.context import current_request, public_url, runtime, signed_url
from webhooks.responses import xml_response
from webhooks.state import begin
from xml_builders import Element

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("sipguard.callbacks")

HANDOFF_URL_PARAM = "handoff_url"


@bp.before_request
def verify_signature() -> None:
    """Refuse any request to this blueprint that Plivo did not sign."""
    req = current_request()
    endpoint, method = req.endpoint, req.method
    state = begin(endpoint.removeprefix("webhooks.") if endpoint else "-")
    rt = runtime()
    if endpoint == "webhooks.answer" and method not in rt.voice.answer_methods:
        abort(405)
    if method == "POST":
        _check_body(req)
    params = req.form.to_dict(flat=False) if method == "POST" else {}
    state.verified = rt.keyring.verify(req.headers, method, signed_url(), params)


bp.after_request(persist.commit)

FORM_TYPE = "application/x-www-form-urlencoded"


def _check_body(req: Request) -> None:
    """Accept only what Plivo sends: a urlencoded form (or nothing).

    The form itself is checked as it is parsed (webhooks.edge: broken encoding is a 400).
    """
    body = req.get_data(cache=True)  # the form is parsed from this cached copy
    if body and req.mimetype != FORM_TYPE:
        abort(415, description=f"callbacks must be {FORM_TYPE}")


def _form() -> Mapping[str, str]:
    req = current_request()
    return req.form if req.method == "POST" else req.args


# The one agent a plain Dial rang when the attempt's others were skipped as quarantined.
RANG_PARAM = "rang"


def _dial_action_url(
    group: AgentGroup,
    attempt: int,
    handoff_id: str | None = None,
    agents: Sequence[Agent] | None = None,
) -> str:
    """The Dial action for `attempt`. A plain Dial ringing one agent of several (the rest
    quarantined) names it, so its result can be counted: Plivo's Dial action names no leg,
    and only a handoff's Dial has callbackUrl events that do. Plivo signs the URL it calls,
    query included, so the name cannot be forged."""
    extra = {HANDOFF_PARAM: handoff_id} if handoff_id is not None else {}
    if handoff_id is None and agents is not None:
        if len(agents) == 1 < len(group.agents_for(attempt)):
            extra[RANG_PARAM] = agents[0].name
    return public_url("webhooks.dial_action", group=group.name, attempt=attempt, **extra)


def _handoff_url(call_uuid: str, group: str) -> str:
    token = runtime().handoff.mint(call_uuid, group)
    return public_url("webhooks.handoff", group=group, **{TOKEN_PARAM: token})


def _with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    extra = urlencode({name: value})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def _perform(action: Action, call: InboundCall) -> tuple[Element, str]:
    """Carry out a rule's action; say what was done, for the event store."""
    rt = runtime()
    if action.kind == "dial":
        group = rt.voice.groups[str(action.group)]
        if not group.open_at(rt.clock()):
            decision, root = _closed(group, None)
            return root, decision
        ring = _ringable(group, 0)
        if ring is None:  # every agent quarantined: the fallback, without ringing
            return documents.fallback(group.fallback), f"quarantined:{action.describe()}"
        attempt, agents = ring
        url = _dial_action_url(group, attempt, agents=agents)
        return documents.dial_group(group, attempt, url, agents=agents), action.describe()
    if action.kind == "redirect":
        url = str(action.url)
        if action.handoff_group is not None:
            handoff = _handoff_url(call.call_uuid, action.handoff_group)
            url = _with_param(url, HANDOFF_URL_PARAM, handoff)
        return documents.redirect_to(url), action.describe()
    if action.kind == "speak":
        text = str(action.text)
        return documents.speak_then_hangup(text, action.voice, action.language), action.describe()
    if action.kind == "stream":
        return _stream(action, call), action.describe()
    return documents.reject(), action.describe()


def _stream(action: Action, call: InboundCall) -> Element:
    """Answer into the AI's WebSocket, with what Plivo's `start` event lacks in extraHeaders."""
    headers, dropped = documents.stream_headers(
        action.stream_fixed_headers(), stream_call_headers(call)
    )
    if dropped:  # by name only: the values are the caller's numbers and addresses
        log.warning(
            "call=%s stream extraHeaders left out to stay within 512 bytes: %s",
            call.call_uuid,
            ", ".join(dropped),
        )
    return documents.stream_to_ai(
        str(action.url),
        headers,
        content_type=action.content_type,
        bidirectional=action.bidirectional,
        keep_call_alive=action.keep_call_alive,
    )


def _call_event(route: str, call: InboundCall, decision: str, **fields: object) -> CallEvent:
    return CallEvent(
        route=route,
        call_uuid=call.call_uuid,
        decision=decision,
        from_number=call.from_,
        to_number=call.to,
        sip_auth_type=call.sip_auth_type,
        sip_auth_user=call.sip_auth_user,
        sip_source_ip=call.sip_source_ip_raw,
        **fields,  # type: ignore[arg-type]
    )


@bp.route("/answer", methods=["GET", "POST"])
def answer() -> Response:
    """Route an inbound call by its SIP-auth result. Nothing but the store is asked: one read
    of the group's quarantines when the rule dials (a store that cannot answer skips nobody)."""
    call = InboundCall.from_form(_form())
    decision = decide(call, runtime().voice.policy)
    if decision.auth_not_running:
        log.warning("call=%s %s", call.call_uuid, AUTH_NOT_RUNNING)
        # A rule that takes such calls on purpose ("none") is counted, not alerted.
        on_purpose = decision.rule != UNAUTHENTICATED_SIP
        persist.note_auth_not_running(None if on_purpose else f"/answer ({decision.rule})")
    root, done = _perform(decision.action, call)
    persist.note(
        _call_event(
            "answer",
            call,
            done,
            rule=decision.rule,
            reason=decision.reason,
            group_name=decision.action.group or decision.action.handoff_group,
        )
    )
    return xml_response(root)


@bp.post("/handoff/<group>")
def handoff(group: str) -> Response:
    """Dial a group for a call the AI agent hands over; needs the call's handoff token.

    An API handoff's Transfer URL also carries its id (`handoff`), signed into the token with
    the call and the group it was created for: an id the token was not minted with is refused,
    so a handoff id is only ever accepted for its own call and group. That handoff's fields
    ride on the agent legs as sipHeaders, its whisper plays to the agent who answers, and its
    attempts are recorded.
    """
    req = current_request()
    call = InboundCall.from_form(req.form)
    target = runtime().voice.groups.get(group)
    if target is None:
        abort(404, description=f"no agent group named {group!r}")
    handoff_id = req.args.get(HANDOFF_PARAM) or None
    runtime().handoff.check(req.args.get(TOKEN_PARAM), call.call_uuid, group, handoff_id)
    decision = f"dial:{group}"
    if not target.open_at(runtime().clock()):  # Plivo fetched this URL after the group closed
        decision, root = _closed(target, handoff_id)
        reason = "closed"
    elif (ring := _ringable(target, 0)) is None:
        reason, root = _last_attempt_failed(target, -1, handoff_id, QUARANTINED)
    else:
        root, reason = _dial(target, ring, handoff_id)
    persist.note(_call_event("handoff", call, decision, reason=reason, group_name=group, attempt=0))
    return _no_store(xml_response(root)) if handoff_id else xml_response(root)


def _closed(group: AgentGroup, handoff_id: str | None) -> tuple[str, Element]:
    """Play a closed group's `closed` action instead of ringing it (a `return` needs a handoff
    with a return_url; any other call gets the group's fallback)."""
    closed = group.closed or Closed(plan=group.fallback)
    decision, root = _end_handoff(
        closed.plan, handoff_id, {"attempts": 0, "outcome": "closed"}, lambda _: closed.return_to_ai
    )
    return f"closed:{decision}", root


def _no_store(response: Response) -> Response:
    # A handoff's Dial carries its id and a whisper token: nothing between Plivo and us keeps it.
    response.headers["Cache-Control"] = "no-store"
    return response


Ring = tuple[int, tuple[Agent, ...]]
# A handoff's outcome when its group had nobody to ring: every agent is quarantined.
QUARANTINED = "quarantined"


def _ringable(group: AgentGroup, attempt: int) -> Ring | None:
    """Return the first attempt from `attempt` on with agents not quarantined, and those agents.

    None when every remaining agent is quarantined. The quarantines come from the worker's
    shared read (at most one a second); a store that cannot answer skips nobody (a healthy
    agent is never skipped).
    """
    try:
        skipped = runtime().store.quarantined_agents({agent.name for agent in group.agents})
    except StoreUnavailable as exc:
        log.error("group=%s quarantines not read, nobody skipped: %s", group.name, exc.message)
        skipped = {}
    for number in range(attempt, group.attempts()):
        agents = tuple(agent for agent in group.agents_for(number) if agent.name not in skipped)
        if agents:
            return number, agents
    log.warning(
        "group=%s every agent left to ring is quarantined (%s): not ringing",
        group.name,
        ", ".join(sorted(skipped)),
    )
    return None


def _dial(group: AgentGroup, ring: Ring, handoff_id: str | None) -> tuple[Element, str]:
    """Dial `ring` (an attempt of `group` and its agents), for the API handoff `handoff_id` if
    any; say how.

    A handoff the database cannot load now is dialled with its id alone (its bookkeeping goes on
    when the database is back); an unknown or finished one is dialled plainly, without it.
    """
    attempt, agents = ring
    url = _dial_action_url(group, attempt, agents=agents)
    plain = documents.dial_group(group, attempt, url, agents=agents)
    if handoff_id is None:
        return plain, "handoff"
    try:
        found = runtime().store.get_handoff(handoff_id)
    except StoreUnavailable as exc:
        log.error("handoff=%s not loaded, dialled by its id only: %s", handoff_id, exc.message)
        return _handoff_dial(group, ring, handoff_id, {}, None), "handoff-unavailable"
    if found is None or not found.live:
        log.warning(
            "handoff=%s is %s: group %s dialled without it",
            handoff_id,
            "unknown" if found is None else f"already {found.state}",
            group.name,
        )
        return plain, "handoff-gone"
    names = [agent.name for agent in agents]
    persist.handoff_step(
        handoff_id,
        f"attempt {attempt}",
        lambda store: store.start_attempt(handoff_id, attempt, names, ringing=True),
    )
    return _handoff_dial(group, ring, handoff_id, found.fields, _whisper_url(found)), "handoff"


def _whisper_url(found: Handoff) -> str | None:
    if not found.whisper:
        return None
    token = runtime().handoff.mint(found.call_uuid, found.group_name, found.id, purpose=WHISPER)
    return public_url("webhooks.whisper", handoff_id=found.id, **{TOKEN_PARAM: token})


def _handoff_dial(
    group: AgentGroup,
    ring: Ring,
    handoff_id: str,
    fields: Mapping[str, str],
    whisper_url: str | None,
) -> Element:
    attempt, agents = ring
    events = public_url(
        "webhooks.dial_event", group=group.name, attempt=attempt, **{HANDOFF_PARAM: handoff_id}
    )
    return documents.dial_group(
        group,
        attempt,
        _dial_action_url(group, attempt, handoff_id),
        sip_headers=handoff_sip_headers(fields, handoff_id),
        callback_url=events,
        confirm_sound=whisper_url,
        agents=agents,
    )


def _attempt(group: AgentGroup) -> int:
    raw = current_request().args.get("attempt", "")
    attempt = whole_number(raw)
    if attempt is None or attempt >= group.attempts():
        raise ValidationError("attempt", f"must be 0-{group.attempts() - 1} for this group")
    return attempt


@bp.post("/dial-action")
def dial_action() -> Response:
    """Follow up a Dial: done when answered, else the next agent, else the group's fallback.

    For an API handoff the attempt's outcome is recorded; an answer moves it to `connected`
    (unless the Dial callback did already), the caller leaving to `caller_hung_up`, the last
    attempt failing to `returned` (the caller goes back to the AI) or `failed` (the fallback).
    """
    req = current_request()
    result = DialResult.from_form(req.form)
    group = runtime().voice.groups.get(req.args.get("group", ""))
    if group is None:
        raise ValidationError("group", "is not a configured agent group")
    attempt = _attempt(group)
    handoff_id = req.args.get(HANDOFF_PARAM) or None
    rung = _rung(group, attempt)
    agents = ",".join(agent.name for agent in rung)
    cause = result.auth_failure
    if cause == SIP_AUTH_FAILED:
        log.warning(
            "call=%s group=%s agent=%s the agent PBX rejected our SIP credentials "
            "(sip_auth_failed 4240): check the agent's username/password_env",
            result.call_uuid,
            group.name,
            agents,
        )
    elif cause == SIP_AUTH_TIMEOUT:
        log.warning(
            "call=%s group=%s agent=%s the agent PBX never answered the digest challenge "
            "(sip_auth_timeout 4250): check that the PBX is reachable",
            result.call_uuid,
            group.name,
            agents,
        )
    _note_agent_result(rung, result)
    if handoff_id is not None:
        _end_attempt(handoff_id, attempt, result)
    if result.answered or result.dial_status == "cancel":
        decision, root = ("completed" if result.answered else "caller-hung-up"), documents.empty()
        if handoff_id is not None and result.answered:
            _connected(handoff_id, group, attempt, None)
        elif handoff_id is not None:
            # The caller leaving is its own outcome: only the count of attempts is reported.
            data = {"attempts": attempt + 1}
            _move(handoff_id, "caller_hung_up", "handoff.caller_hung_up", data)
    elif attempt + 1 < group.attempts() and (ring := _ringable(group, attempt + 1)) is not None:
        decision = f"dial:{group.name}:{ring[0]}"
        root, _ = _dial(group, ring, handoff_id)
    else:
        decision, root = _last_attempt_failed(group, attempt, handoff_id, result.outcome)
    persist.note(
        CallEvent(
            route="dial_action",
            call_uuid=result.call_uuid,
            decision=decision,
            reason=cause or result.dial_status,
            group_name=group.name,
            attempt=attempt,
            dial_status=result.dial_status,
            dial_hangup_cause=result.dial_hangup_cause,
            auth_failure=cause,
            a_leg_uuid=result.a_leg_uuid,
            b_leg_uuid=result.b_leg_uuid,
        )
    )
    response = xml_response(root)
    return _no_store(response) if handoff_id is not None else response


def _rung(group: AgentGroup, attempt: int) -> tuple[Agent, ...]:
    """The agents the attempt rang: the one the action URL names (of that attempt), else all."""
    named = current_request().args.get(RANG_PARAM)
    agents = group.agents_for(attempt)
    return tuple(agent for agent in agents if agent.name == named) or agents


def _note_agent_result(rung: Sequence[Agent], result: DialResult) -> None:
    """Count the attempt's SIP-auth result for its agent, when Plivo's report names one.

    The Dial action names no leg: only an attempt that rang one agent is attributed (a
    sequential group's, or a simultaneous one's whose others were quarantined; a handoff's
    simultaneous legs are counted from its Dial events). Busy, no answer and the caller
    leaving say nothing about our credentials.
    """
    if len(rung) != 1:
        return
    if result.answered:
        persist.note_agent(rung[0].name, None)
    elif result.auth_failure is not None:
        persist.note_agent(rung[0].name, result.auth_failure)


def _end_attempt(handoff_id: str, attempt: int, result: DialResult) -> None:
    persist.handoff_step(
        handoff_id,
        f"attempt {attempt} outcome",
        lambda store: store.end_attempt(handoff_id, attempt, result.outcome, result.outcome_code),
    )


def _move(handoff_id: str, state: str, event_type: str, data: Mapping[str, object]) -> None:
    """Move a waiting handoff to `state`, queueing `event_type` with `data`.

    Every caller answers a Plivo callback about the transferred call, so Plivo has taken the
    Transfer: the store records that first when the API has not yet (`transferred`).
    """
    persist.handoff_step(
        handoff_id,
        state,
        lambda store: store.transition(
            handoff_id, state, event_type, data, from_states=WAITING_STATES, transferred=True
        ),
    )


def _connected(handoff_id: str, group: AgentGroup, attempt: int, b_leg_to: str | None) -> None:
    """Move a waiting handoff to `connected`; whichever signal comes second changes nothing."""
    data = {"attempt": attempt, "agents": _answering(group, attempt, b_leg_to)}
    _move(handoff_id, "connected", "handoff.agent_answered", data)


def _answering(group: AgentGroup, attempt: int, b_leg_to: str | None) -> list[str]:
    """Name the agent who answered when the leg's To is one of the attempt's URIs, else all."""
    agents = group.agents_for(attempt)
    if b_leg_to:
        wanted = _bare_uri(b_leg_to)
        matched = [agent.name for agent in agents if _bare_uri(agent.uri) == wanted]
        if matched:
            return matched[:1]
    return [agent.name for agent in agents]


def _bare_uri(uri: str) -> str:
    # Plivo may report a SIP leg's To with or without its scheme, and with URI parameters.
    lowered = uri.strip().lower().split(";", 1)[0]
    for scheme in ("sips:", "sip:"):
        lowered = lowered.removeprefix(scheme)
    return lowered


def _last_attempt_failed(
    group: AgentGroup, attempt: int, handoff_id: str | None, outcome: str
) -> tuple[str, Element]:
    """Return the caller to the AI (a handoff with on_failure "return"), else run the fallback.

    `attempt` is the last one made (-1: none, every agent being quarantined).
    """
    data = {"attempts": attempt + 1, "outcome": outcome}
    return _end_handoff(
        group.fallback, handoff_id, data, lambda found: found.on_failure == "return"
    )


def _end_handoff(
    plan: Fallback,
    handoff_id: str | None,
    data: Mapping[str, object],
    returns: Callable[[Handoff], bool],
) -> tuple[str, Element]:
    """End the API handoff `handoff_id`, if any, without an agent: back to the AI at its
    return_url when `returns` says so (`returned`), else `failed` and `plan` runs."""
    fallback = f"fallback:{plan.kind}", documents.fallback(plan)
    if handoff_id is None:
        return fallback
    try:
        found = runtime().store.get_handoff(handoff_id)
    except StoreUnavailable as exc:
        log.error("handoff=%s not loaded, %s runs: %s", handoff_id, plan.kind, exc.message)
        return fallback
    if found is None:
        log.warning("handoff=%s is unknown: %s runs", handoff_id, plan.kind)
        return fallback
    if returns(found) and found.return_url is not None:
        _move(handoff_id, "returned", "handoff.returned", data)
        outcome = str(data["outcome"])
        root = documents.return_to_ai(found.return_url, found.id, outcome, found.call_uuid)
        return "return", root
    _move(handoff_id, "failed", "handoff.failed", data)
    return fallback


@bp.post("/dial-event")
def dial_event() -> Response:
    """Take a handoff Dial's callbackUrl request: an agent answering connects the handoff.

    With a confirmKey the agent has taken the call only once bridged (`connected`); without
    one, on `answer`. Answers an empty document at once (Plivo expects no XML here).
    """
    req = current_request()
    event = DialEvent.from_form(req.form)
    group = runtime().voice.groups.get(req.args.get("group", ""))
    if group is None:
        raise ValidationError("group", "is not a configured agent group")
    attempt = _attempt(group)
    handoff_id = req.args.get(HANDOFF_PARAM) or ""
    if not handoff_id:
        raise ValidationError(HANDOFF_PARAM, "is required")
    taken = "connected" if group.confirm_key is not None else "answer"
    _note_leg_result(group, attempt, event, taken)
    if event.action in (taken, "connected"):
        _connected(handoff_id, group, attempt, event.b_leg_to)
        decision = "connected"
    else:
        decision = "noted"
    persist.note_outcome(event.a_leg_uuid or "-", decision, event.action or "-")
    return xml_response(documents.empty())


def _note_leg_result(group: AgentGroup, attempt: int, event: DialEvent, taken: str) -> None:
    """Count one leg's SIP-auth result when the attempt rang several agents and the leg's To
    names one of them (a one-agent attempt is counted from its Dial action instead)."""
    agents = group.agents_for(attempt)
    if len(agents) < 2 or not event.b_leg_to:
        return
    wanted = _bare_uri(event.b_leg_to)
    named = [agent.name for agent in agents if _bare_uri(agent.uri) == wanted]
    if len(named) != 1:
        return
    if event.action == taken:
        persist.note_agent(named[0], None)
    elif event.auth_failure is not None:
        persist.note_agent(named[0], event.auth_failure)


@bp.post("/whisper/<handoff_id>")
def whisper(handoff_id: str) -> Response:
    """Say a handoff's summary to the agent who answers (the Dial's confirmSound).

    The token binds the handoff; the request's own CallUUID is not compared, since Plivo does
    not document what it posts for the called party. The summary goes nowhere but this answer.
    """
    call_uuid, group_name = runtime().handoff.check_for_handoff(
        current_request().args.get(TOKEN_PARAM), handoff_id, WHISPER
    )
    group = runtime().voice.groups.get(group_name)
    try:
        found = runtime().store.get_handoff(handoff_id)
    except StoreUnavailable as exc:
        log.error("handoff=%s not loaded, the whisper is generic: %s", handoff_id, exc.message)
        found = None
    summary = found.summary if found is not None else None
    root = documents.whisper(summary, group.confirm_key if group is not None else None)
    persist.note_outcome(call_uuid, "whisper", "summary" if summary else "generic")
    return _no_store(xml_response(root))


@bp.post("/hangup")
def hangup() -> Response:
    """Store the call's end idempotently; 503 (Plivo retries) when it cannot be stored.

    A live handoff of the call that no agent has taken yet ends as `caller_hung_up`, once the
    hangup is stored: the record looks it up in the same statement (webhooks.persist.commit),
    and a call without one costs nothing more.
    """
    record = Hangup.from_form(current_request().form)
    if record.auth_failure is not None:
        log.warning(
            "call=%s ended with %s (code %s)",
            record.call_uuid,
            record.auth_failure,
            record.hangup_cause_code if record.hangup_cause_code is not None else "-",
        )
    persist.note_hangup(record)
    return xml_response(documents.empty())
