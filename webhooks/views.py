"""Plivo's callbacks: answer, handoff, Dial action and hangup. Every route here is signed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Blueprint, Response, abort, request

from sipguard.calls import documents
from sipguard.calls.agents import AgentGroup
from sipguard.calls.causes import SIP_AUTH_FAILED, SIP_AUTH_TIMEOUT
from sipguard.calls.forms import DialResult, Hangup, InboundCall, check_urlencoded, whole_number
from sipguard.calls.handoff import HANDOFF_PARAM, TOKEN_PARAM
from sipguard.calls.routing import AUTH_NOT_RUNNING, Action, decide, stream_call_headers
from sipguard.errors import ValidationError
from sipguard.store import CallEvent
from webhooks import persist
from webhooks.context import public_url, runtime, signed_url
from webhooks.responses import xml_response
from webhooks.state import begin
from xml_builders import Element

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("sipguard.callbacks")

HANDOFF_URL_PARAM = "handoff_url"


@bp.before_request
def verify_signature() -> None:
    """Refuse any request to this blueprint that Plivo did not sign."""
    state = begin(request.endpoint.removeprefix("webhooks.") if request.endpoint else "-")
    rt = runtime()
    if request.endpoint == "webhooks.answer" and request.method not in rt.voice.answer_methods:
        abort(405)
    if request.method == "POST":
        _check_body()
    params = request.form.to_dict(flat=False) if request.method == "POST" else {}
    state.verified = rt.keyring.verify(request.headers, request.method, signed_url(), params)


bp.after_request(persist.commit)

FORM_TYPE = "application/x-www-form-urlencoded"


def _check_body() -> None:
    """Accept only what Plivo sends: a well-formed urlencoded form (or nothing)."""
    body = request.get_data(cache=True)  # the form is parsed from this cached copy
    if not body:
        return
    if request.mimetype != FORM_TYPE:
        abort(415, description=f"callbacks must be {FORM_TYPE}")
    check_urlencoded(body)


def _form() -> Mapping[str, str]:
    return request.form if request.method == "POST" else request.args


def _dial_action_url(group: AgentGroup, attempt: int) -> str:
    return public_url("webhooks.dial_action", group=group.name, attempt=attempt)


def _handoff_url(call_uuid: str, group: str) -> str:
    token = runtime().handoff.mint(call_uuid, group)
    return public_url("webhooks.handoff", group=group, **{TOKEN_PARAM: token})


def _with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    extra = urlencode({name: value})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def _perform(action: Action, call: InboundCall) -> Element:
    groups = runtime().voice.groups
    if action.kind == "dial":
        group = groups[str(action.group)]
        return documents.dial_group(group, 0, _dial_action_url(group, 0))
    if action.kind == "redirect":
        url = str(action.url)
        if action.handoff_group is not None:
            handoff = _handoff_url(call.call_uuid, action.handoff_group)
            url = _with_param(url, HANDOFF_URL_PARAM, handoff)
        return documents.redirect_to(url)
    if action.kind == "speak":
        return documents.speak_then_hangup(str(action.text), action.voice, action.language)
    if action.kind == "stream":
        return _stream(action, call)
    return documents.reject()


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
    """Route an inbound call by its SIP-auth result. No network I/O happens here."""
    call = InboundCall.from_form(_form())
    decision = decide(call, runtime().voice.policy)
    if decision.auth_not_running:
        log.warning("call=%s %s", call.call_uuid, AUTH_NOT_RUNNING)
    root = _perform(decision.action, call)
    persist.note(
        _call_event(
            "answer",
            call,
            decision.action.describe(),
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
    so a handoff id is only ever accepted for its own call and group.
    """
    call = InboundCall.from_form(request.form)
    target = runtime().voice.groups.get(group)
    if target is None:
        abort(404, description=f"no agent group named {group!r}")
    handoff_id = request.args.get(HANDOFF_PARAM) or None
    runtime().handoff.check(request.args.get(TOKEN_PARAM), call.call_uuid, group, handoff_id)
    root = documents.dial_group(target, 0, _dial_action_url(target, 0))
    persist.note(
        _call_event("handoff", call, f"dial:{group}", reason="handoff", group_name=group, attempt=0)
    )
    return xml_response(root)


def _attempt(group: AgentGroup) -> int:
    raw = request.args.get("attempt", "")
    attempt = whole_number(raw)
    if attempt is None or attempt >= group.attempts():
        raise ValidationError("attempt", f"must be 0-{group.attempts() - 1} for this group")
    return attempt


@bp.post("/dial-action")
def dial_action() -> Response:
    """Follow up a Dial: done when answered, else the next agent, else the group's fallback."""
    result = DialResult.from_form(request.form)
    group = runtime().voice.groups.get(request.args.get("group", ""))
    if group is None:
        raise ValidationError("group", "is not a configured agent group")
    attempt = _attempt(group)
    agents = ",".join(agent.name for agent in group.agents_for(attempt))
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
    if result.answered or result.dial_status == "cancel":
        decision, root = ("completed" if result.answered else "caller-hung-up"), documents.empty()
    elif attempt + 1 < group.attempts():
        decision = f"dial:{group.name}:{attempt + 1}"
        root = documents.dial_group(group, attempt + 1, _dial_action_url(group, attempt + 1))
    else:
        decision, root = f"fallback:{group.fallback.kind}", documents.fallback(group.fallback)
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
    return xml_response(root)


@bp.post("/hangup")
def hangup() -> Response:
    """Store the call's end idempotently; 503 (Plivo retries) when it cannot be stored."""
    record = Hangup.from_form(request.form)
    if record.auth_failure is not None:
        log.warning(
            "call=%s ended with %s (code %s)",
            record.call_uuid,
            record.auth_failure,
            record.hangup_cause_code if record.hangup_cause_code is not None else "-",
        )
    persist.note_hangup(record)
    return xml_response(documents.empty())
