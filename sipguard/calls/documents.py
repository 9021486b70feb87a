"""Whole Plivo XML documents for the app's answers, assembled from the element builders."""

from __future__ import annotations

from sipguard.calls.agents import Agent, AgentGroup, Fallback
from sipguard.errors import ValidationError
from xml_builders.elements import Element, dial, hangup, record, redirect, response, speak, user


def agent_user(agent: Agent) -> Element:
    """Return the ``<User>`` that rings `agent`, with its digest credentials if it has any."""
    return user(
        agent.uri,
        sip_auth_username=agent.username,
        sip_auth_password=agent.password.reveal() if agent.password is not None else None,
        send_digits=agent.send_digits,
        sip_headers=agent.sip_headers or None,
    )


def dial_group(group: AgentGroup, attempt: int, action_url: str) -> Element:
    """Ring the group's agents for `attempt`; Plivo reports the result to `action_url`."""
    return response(
        dial(
            [agent_user(agent) for agent in group.agents_for(attempt)],
            action=action_url,
            method="POST",
            timeout=group.timeout,
            time_limit=group.time_limit,
            caller_id=group.caller_id,
            caller_name=group.caller_name,
            dial_music=group.dial_music,
            confirm_sound=group.confirm_sound,
            confirm_key=group.confirm_key,
            redirect=True,
        )
    )


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
