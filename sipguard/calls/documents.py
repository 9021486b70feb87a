"""Whole Plivo XML documents for the app's answers, assembled from the element builders."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from sipguard.calls.agents import Agent, AgentGroup, Fallback
from sipguard.errors import ValidationError
from xml_builders.elements import (
    STREAM_EXTRA_HEADERS_MAX,
    Element,
    dial,
    hangup,
    record,
    redirect,
    response,
    speak,
    stream,
    user,
)

STREAM_CONTENT_TYPE = "audio/x-mulaw;rate=8000"  # Plivo's pages disagree on the default: say it
_PLAIN = re.compile(r"[A-Za-z0-9]+")


def agent_user(agent: Agent, extra_headers: Mapping[str, str] | None = None) -> Element:
    """Return the ``<User>`` that rings `agent`, with its digest credentials if it has any.

    `extra_headers` (a handoff's) join the agent's own sipHeaders; on a name both have (Plivo
    compares names case-insensitively) the agent's configured header wins. Without them the
    element is built and checked once per agent (the voice config does so at start-up) and
    each call gets a copy.
    """
    if extra_headers:
        return _build_user(agent, extra_headers)
    return deepcopy(_USERS.get(agent, (), lambda: _build_user(agent, None)))


def _build_user(agent: Agent, extra_headers: Mapping[str, str] | None) -> Element:
    headers = dict(agent.sip_headers)
    if extra_headers:
        own = {name.lower() for name in headers}
        headers.update({k: v for k, v in extra_headers.items() if k.lower() not in own})
    return user(
        agent.uri,
        sip_auth_username=agent.username,
        sip_auth_password=agent.password.reveal() if agent.password is not None else None,
        send_digits=agent.send_digits,
        sip_headers=headers or None,
    )


class _Built:
    """Elements built once per configured object (an agent, a group's Dial), by identity: an
    Agent or AgentGroup is not hashable (its sipHeaders are a dict), so each entry holds its
    object, whose id cannot be reused meanwhile. Callers get the original: copy it."""

    _LIMIT = 4096  # objects of every config loaded in this process; past it, start again

    def __init__(self) -> None:
        self._built: dict[tuple[Any, ...], tuple[object, Element]] = {}
        self._lock = threading.Lock()

    def get(self, owner: object, extra: tuple[Any, ...], build: Callable[[], Element]) -> Element:
        key = (id(owner), *extra)
        found = self._built.get(key)
        if found is not None and found[0] is owner:
            return found[1]
        element = build()  # raises ValidationError: nothing is kept then
        with self._lock:
            if len(self._built) >= self._LIMIT:
                self._built.clear()
            self._built[key] = (owner, element)
        return element


_USERS = _Built()
_DIALS = _Built()


def dial_group(
    group: AgentGroup,
    attempt: int,
    action_url: str,
    *,
    sip_headers: Mapping[str, str] | None = None,
    callback_url: str | None = None,
    confirm_sound: str | None = None,
    agents: Sequence[Agent] | None = None,
) -> Element:
    """Ring the group's agents for `attempt`; Plivo reports the result to `action_url`.

    `agents` rings only those of the attempt's agents (the quarantined ones left out). A
    handoff's Dial adds `sip_headers` to every agent leg, asks Plivo to report the agent
    answering to `callback_url`, and plays its whisper (`confirm_sound`) instead of the group's.
    A group's plain Dial (none of those) is the same document every time: it is built and
    checked once per group, action URL and agents rung, and each call gets a copy.
    """
    ringing = tuple(agents) if agents is not None else group.agents_for(attempt)

    def build() -> Element:
        return response(
            dial(
                [agent_user(agent, sip_headers) for agent in ringing],
                action=action_url,
                method="POST",
                timeout=group.timeout,
                time_limit=group.time_limit,
                caller_id=group.caller_id,
                caller_name=group.caller_name,
                dial_music=group.dial_music,
                confirm_sound=confirm_sound or group.confirm_sound,
                confirm_key=group.confirm_key,
                callback_url=callback_url,
                callback_method="POST" if callback_url else None,
                redirect=True,
            )
        )

    if sip_headers is None and callback_url is None and confirm_sound is None:
        names = tuple(agent.name for agent in ringing)
        return deepcopy(_DIALS.get(group, (action_url, names), build))
    return build()


WHISPER_GENERIC = "A call handed over by the AI assistant."
_SPOKEN_KEYS = {"*": "star", "#": "hash"}


def whisper(summary: str | None, confirm_key: str | None) -> Element:
    """Say the handoff's summary to the agent (a confirmSound: only Speak, Play and Wait).

    A missing (purged) summary gives a generic line; with `confirm_key` the agent is told
    which key takes the call.
    """
    text = " ".join(summary.split()) if summary else ""  # Speak refuses the newlines it may hold
    spoken = [speak(text or WHISPER_GENERIC)]
    if confirm_key is not None:
        key = _SPOKEN_KEYS.get(confirm_key, confirm_key)
        spoken.append(speak(f"Press {key} to accept the call."))
    return response(*spoken)


def return_to_ai(url: str, handoff_id: str, outcome: str, call_uuid: str) -> Element:
    """Give a call whose handoff failed back to the AI at its `return_url`.

    An https URL gets a Redirect with ``handoff_id``, ``outcome`` and ``call_uuid`` added to its
    query; a wss URL a Stream with ``handoffid`` and ``outcome`` as extraHeaders, encoded by
    `stream_header_value` (the stream's start message names the call itself).
    """
    if url.startswith("wss://"):
        headers, _ = stream_headers({}, {"handoffid": handoff_id, "outcome": outcome})
        return stream_to_ai(url, headers)
    parts = urlsplit(url)
    extra = urlencode({"handoff_id": handoff_id, "outcome": outcome, "call_uuid": call_uuid})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return redirect_to(urlunsplit(parts._replace(query=query)))


def fallback(plan: Fallback) -> Element:
    """Run a group's fallback: voicemail, a message then hang up, or a redirect."""
    if plan.kind == "redirect":
        if plan.url is None:
            raise ValidationError("fallback.url", "a redirect fallback needs url")
        return response(redirect(plan.url))
    spoken = [speak(plan.text, voice=plan.voice, language=plan.language)] if plan.text else []
    if plan.kind == "voicemail":
        return response(
            *spoken,
            record(
                max_length=plan.max_length,
                finish_on_key="#",
                play_beep=True,
                callback_url=plan.recording_callback_url,
                callback_method="POST" if plan.recording_callback_url else None,
            ),
            hangup(),
        )
    return response(*spoken, hangup())


def reject() -> Element:
    """Refuse the call (Plivo records it as rejected)."""
    return response(hangup(reason="rejected"))


def speak_then_hangup(text: str, voice: str | None = None, language: str | None = None) -> Element:
    """Say `text`, then end the call."""
    return response(speak(text, voice=voice, language=language), hangup())


def redirect_to(url: str) -> Element:
    """Hand control of the call to the XML at `url` (e.g. the AI agent)."""
    return response(redirect(url))


def empty() -> Element:
    """Return ``<Response/>``: an acknowledgement, or the end of a finished call."""
    return response()


def stream_header_value(value: str) -> str:
    """Fit any text into ``extraHeaders``' letters and digits, reversibly.

    A value of letters and digits not starting with ``x`` is sent as it is; any other is ``x``
    and its UTF-8 bytes in hex (``+1415`` becomes ``x2b31343135``), so a reader decodes a value
    starting with ``x`` with ``bytes.fromhex(value[1:]).decode()`` and takes the rest as they are.
    """
    if _PLAIN.fullmatch(value) and not value.startswith("x"):
        return value
    return "x" + value.encode().hex()


def stream_headers(
    fixed: Mapping[str, str], per_call: Mapping[str, str | None]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Return the ``extraHeaders`` for a stream, and the names left out to stay in 512 bytes.

    `fixed` (checked when the config loads) always goes first; each `per_call` value is encoded
    by `stream_header_value` and added in order while the rendered ``k=v,...`` still fits. None
    values are skipped.
    """
    headers = dict(fixed)
    used = len(",".join(f"{k}={v}" for k, v in headers.items()).encode())
    dropped = []
    for name, value in per_call.items():
        if value is None or value == "":
            continue
        encoded = stream_header_value(value)
        cost = len(name) + 1 + len(encoded) + (1 if headers else 0)
        if used + cost > STREAM_EXTRA_HEADERS_MAX:
            dropped.append(name)
            continue
        headers[name] = encoded
        used += cost
    return headers, tuple(dropped)


def stream_to_ai(
    url: str,
    extra_headers: Mapping[str, str],
    *,
    content_type: str = STREAM_CONTENT_TYPE,
    bidirectional: bool = True,
    keep_call_alive: bool = True,
) -> Element:
    """Connect the caller to the AI's WebSocket at `url`, which talks back (bidirectional)."""
    return response(
        stream(
            url,
            bidirectional=bidirectional,
            keep_call_alive=keep_call_alive,
            content_type=content_type,
            audio_track="inbound" if bidirectional else None,
            extra_headers=extra_headers or None,
        )
    )
