"""The sandbox sends a Dial's callbackUrl events as Plivo does: `answer` when an agent's leg
answers, `connected` when it is bridged (after the confirm key if any), `hangup` when a B leg
ends, each signed, in sandbox-time order and before the Dial action; and the app's /dial-event
takes them, so an API handoff is connected before its Dial action arrives.

Plivo's rules: https://www.plivo.com/docs/voice/xml/dial (docs/plivo.md, Where Plivo is silent,
"Dial callbackUrl" and "Dial events in the sandbox").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import select

from app import create_app
from devtools.harness import free_port
from sandbox.call import Call
from sandbox.callbacks import HttpAnswer
from sandbox.config import SandboxConfig
from sandbox.engine import Sandbox, run_in_thread
from sandbox.xml_player import KEY_DELAY
from sipguard.calls import signature
from sipguard.store.schema import webhook_outbox
from tests.sandbox.test_sandbox_calls import (
    BOB,
    ERIN,
    ROTATED_ALICE,
    XML,
    Scripted,
    ai_first,
    assert_no_leaks,
    call_scripted,
    forms,
    legs,
    scripted,
    user,
)
from tests.sandbox.test_sandbox_confirm import AMY, BEN, WHISPER_XML, dial, play, world
from tests.support.config import CANARIES, TOKEN
from tests.support.sandbox import APP_ID, FlaskHttp, World, load_config, new_sandbox, serve

EVENTS = f"{XML}/events"
PROMPT = 7 / 2.5 + 2  # WHISPER_XML: seven words, then a 2 s Wait
CONFIRM = f' confirmSound="{XML}/whisper" confirmKey="5"'


def with_events(attrs: str = "", url: str = EVENTS) -> str:
    return f' callbackUrl="{url}"{attrs}'


def sent_events(sent: list[tuple[str, str, dict[str, str], bytes | None]]) -> list[dict[str, str]]:
    return forms(sent, "/events")


def actions(found: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Each event as (DialAction, the agent it is about)."""
    return [(form["DialAction"], form["DialBLegTo"]) for form in found]


def paths(http: Scripted) -> list[str]:
    """Every request the application received, in order, as path or path+DialAction."""
    shown = []
    for form, (_, url, _, _) in zip(forms_of(http), http.sent, strict=True):
        path = urlsplit(url).path
        shown.append(f"{path}:{form['DialAction']}" if path == "/events" else path)
    return shown


def forms_of(http: Scripted) -> list[dict[str, str]]:
    found = []
    for _, url, _, body in http.sent:
        params = parse_qs(urlsplit(url).query) if body is None else parse_qs(body.decode())
        found.append({key: values[-1] for key, values in params.items()})
    return found


def timeline(call: Call) -> list[tuple[float, str]]:
    """The dial events the timeline shows: (offset, callback name and status)."""
    return [
        (round(e.offset, 3), f"{e.data['callback']} {e.data['status']}")
        for e in call.events
        if e.kind == "callback" and e.data.get("callback", "").startswith("dial ")
    ]


# -- which events, in which order ---------------------------------------------------------------


def test_one_agent_answers_answer_connected_hangup_then_the_action() -> None:
    _, http, call = play(world(), dial(with_events(), f"<User>{AMY}</User>"))
    amy = legs(call)[AMY]
    answer, connected, hangup = sent_events(http.sent)
    assert actions([answer, connected, hangup]) == [
        ("answer", AMY),
        ("connected", AMY),
        ("hangup", AMY),
    ]
    assert paths(http) == ["/answer", "/events:answer", "/events:connected", "/events:hangup",
                           "/action", "/hangup"]  # fmt: skip
    for form in (answer, connected, hangup):
        assert form["DialALegUUID"] == form["CallUUID"] == call.uuid
        assert form["DialBLegUUID"] == amy["leg_uuid"]
        assert form["DialBLegStatus"] == form["DialAction"]
        assert form["DialBLegFrom"] == call.from_
    assert "Event" not in answer and "DialBLegDuration" not in connected
    assert hangup["Event"] == "DialHangup"
    assert (hangup["DialBLegHangupCauseName"], hangup["DialBLegHangupCauseCode"]) == (
        "Normal Hangup",
        "4000",
    )
    assert hangup["DialBLegHangupSource"] == "Callee"
    assert hangup["DialBLegDuration"] == hangup["DialBLegBillDuration"] == "20"  # amy talks 20 s
    assert timeline(call) == [
        (2.05, "dial answer 200"),
        (2.05, "dial connected 200"),
        (22.05, "dial hangup 200"),
    ]
    [action] = forms(http.sent, "/action")
    assert action["DialBLegUUID"] == amy["leg_uuid"]


def test_sequential_the_first_fails_4240_then_the_second_answers() -> None:
    """Two Dials, one per agent, as a sequential group is played: erin's PBX refuses the
    credentials (a hangup of a leg that never answered), then amy answers."""
    erin = user(ERIN, "erin", CANARIES["AGENT_ERIN_PASSWORD"])
    first = dial(with_events(), erin).replace(f"{XML}/action", f"{XML}/next")
    second = dial(with_events(), f"<User>{AMY}</User>")
    config = world()
    sandbox, http = scripted({"/answer": first, "/next": second}, config)
    call = call_scripted(sandbox)
    assert paths(http) == ["/answer", "/events:hangup", "/next", "/events:answer",
                           "/events:connected", "/events:hangup", "/action", "/hangup"]  # fmt: skip
    failed = sent_events(http.sent)[0]
    assert failed["DialBLegTo"] == ERIN
    assert (failed["DialBLegHangupCauseName"], failed["DialBLegHangupCauseCode"]) == (
        "sip_auth_failed",
        "4240",
    )
    assert (failed["DialBLegHangupSource"], failed["DialBLegDuration"]) == ("Callee", "0")
    assert failed["DialBLegUUID"] == legs(call)[ERIN]["leg_uuid"]
    assert actions(sent_events(http.sent)[1:]) == [
        ("answer", AMY),
        ("connected", AMY),
        ("hangup", AMY),
    ]
    assert forms(http.sent, "/next")[0]["DialStatus"] == "failed"
    assert_no_leaks(sandbox, http.sent)


def test_simultaneous_the_first_to_answer_is_connected_and_the_other_cancelled() -> None:
    _, http, call = play(
        world(ben="accept"), dial(with_events(), f"<User>{AMY}</User>", f"<User>{BEN}</User>")
    )
    found = sent_events(http.sent)
    assert actions(found) == [("answer", AMY), ("connected", AMY), ("hangup", BEN),
                              ("hangup", AMY)]  # fmt: skip
    ben = found[2]
    assert (ben["DialBLegHangupCauseName"], ben["DialBLegHangupCauseCode"]) == ("Canceled", "1000")
    assert (ben["DialBLegHangupSource"], ben["DialBLegDuration"]) == ("Plivo", "0")
    assert ben["DialBLegUUID"] == legs(call)[BEN]["leg_uuid"]
    assert [t for t, _ in timeline(call)] == [2.05, 2.05, 2.05, 22.05]


def test_a_leg_that_fails_before_another_answers_sends_its_hangup_first() -> None:
    """erin's PBX refuses the credentials at 0.05 s, before amy answers at 2.05 s: the app hears
    erin's hangup before amy's answer, with her confirm prompt in between (sandbox time)."""
    erin = user(ERIN, "erin", CANARIES["AGENT_ERIN_PASSWORD"])
    answer = dial(with_events(f' confirmSound="{XML}/whisper"'), erin, f"<User>{AMY}</User>")
    _, http, call = play(world(), answer, whisper=WHISPER_XML)
    assert paths(http) == ["/answer", "/events:hangup", "/events:answer", "/whisper",
                           "/events:connected", "/events:hangup", "/action", "/hangup"]  # fmt: skip
    assert [f["DialBLegTo"] for f in sent_events(http.sent)] == [ERIN, AMY, AMY, AMY]
    connected = 2.05 + PROMPT  # no confirmKey: bridged once the prompt has played
    assert [t for t, _ in timeline(call)] == [
        0.05,
        2.05,
        round(connected, 3),
        round(connected + 20, 3),
    ]


def test_unanswered_legs_each_send_their_hangup_in_the_order_they_ended() -> None:
    """A busy number (0.55 s) and a ringing-out one (the Dial's 10 s) end in time order."""
    answer = dial(
        with_events(' timeout="10"'),
        "<Number>+14155550124</Number>",
        "<Number>+14155550123</Number>",
    )
    _, http, call = play(world(), answer)
    found = sent_events(http.sent)
    assert [(f["DialBLegTo"], f["DialBLegHangupCauseName"]) for f in found] == [
        ("+14155550123", "Busy Line"),
        ("+14155550124", "No Answer"),
    ]
    assert "DialBLegHangupCauseCode" not in found[1]  # Plivo's table has no code for it
    assert [f["DialBLegHangupSource"] for f in found] == ["Callee", "Plivo"]
    assert [t for t, _ in timeline(call)] == [0.55, 10.05]
    assert forms(http.sent, "/action")[0]["DialStatus"] == "no-answer"


# -- confirmKey ---------------------------------------------------------------------------------


def test_confirm_key_answer_before_the_prompt_then_connected_once_pressed() -> None:
    answer = dial(with_events(CONFIRM), f"<User>{AMY}</User>")
    _, http, call = play(world(), answer, whisper=WHISPER_XML)
    assert paths(http) == ["/answer", "/events:answer", "/whisper", "/events:connected",
                           "/events:hangup", "/action", "/hangup"]  # fmt: skip
    pressed = 2.05 + PROMPT + KEY_DELAY
    assert timeline(call) == [
        (2.05, "dial answer 200"),
        (round(pressed, 3), "dial connected 200"),
        (round(pressed + 20, 3), "dial hangup 200"),
    ]
    hangup = sent_events(http.sent)[-1]
    assert hangup["DialBLegDuration"] == str(int(PROMPT + KEY_DELAY + 20))  # from the answer


def test_confirm_key_two_agents_interleave_with_their_prompts() -> None:
    """amy and ben both press; amy, first to answer, presses first: ben, still listening, is
    cancelled at the bridge, after hearing the prompt for 7.85 - 5.05 s."""
    answer = dial(with_events(CONFIRM), f"<User>{AMY}</User>", f"<User>{BEN}</User>")
    _, http, _ = play(world(ben="accept"), answer, whisper=WHISPER_XML)
    assert paths(http) == ["/answer", "/events:answer", "/whisper", "/events:answer", "/whisper",
                           "/events:connected", "/events:hangup", "/events:hangup", "/action",
                           "/hangup"]  # fmt: skip
    found = sent_events(http.sent)
    assert actions(found) == [("answer", AMY), ("answer", BEN), ("connected", AMY),
                              ("hangup", BEN), ("hangup", AMY)]  # fmt: skip
    assert (found[3]["DialBLegHangupCauseName"], found[3]["DialBLegDuration"]) == ("Canceled", "2")


def test_a_leg_ringing_out_while_an_agent_hears_the_prompt_ends_before_the_bridge() -> None:
    """amy answers at 2.05 s and presses at 7.85 s; the number rings out at the Dial's 5 s in
    between, so its hangup comes before amy's connected."""
    answer = dial(with_events(CONFIRM + ' timeout="5"'), f"<User>{AMY}</User>",
                  "<Number>+14155550124</Number>")  # fmt: skip
    _, http, call = play(world(), answer, whisper=WHISPER_XML)
    assert actions(sent_events(http.sent)) == [("answer", AMY), ("hangup", "+14155550124"),
                                               ("connected", AMY), ("hangup", AMY)]  # fmt: skip
    pressed = 2.05 + PROMPT + KEY_DELAY
    assert [t for t, _ in timeline(call)] == [2.05, 5.05, round(pressed, 3), round(pressed + 20, 3)]


def test_confirm_key_never_pressed_answer_then_hangup_and_no_connected() -> None:
    answer = dial(with_events(CONFIRM + ' confirmTimeout="10"'), f"<User>{AMY}</User>")
    _, http, call = play(world("ignore"), answer, whisper=WHISPER_XML)
    found = sent_events(http.sent)
    assert actions(found) == [("answer", AMY), ("hangup", AMY)]
    dropped = found[1]
    assert (dropped["DialBLegHangupCauseName"], dropped["DialBLegHangupSource"]) == (
        "No Answer",
        "Plivo",
    )
    assert dropped["DialBLegDuration"] == "10"  # dropped when confirmTimeout ran out
    assert [t for t, _ in timeline(call)] == [2.05, 12.05]


# -- no callbackUrl, method, failures -----------------------------------------------------------


def test_no_callback_url_sends_no_event() -> None:
    _, http, call = play(
        world(ben="accept"), dial("", f"<User>{AMY}</User>", f"<User>{BEN}</User>")
    )
    assert [urlsplit(url).path for _, url, _, _ in http.sent] == ["/answer", "/action", "/hangup"]
    assert timeline(call) == []
    assert "callbackUrl" not in call.text()


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_events_are_signed_and_sent_with_the_callback_method(method: str) -> None:
    answer = dial(with_events(f' callbackMethod="{method}"'), f"<User>{AMY}</User>")
    _, http, _ = play(world(), answer)
    sent = [s for s in http.sent if urlsplit(s[1]).path == "/events"]
    assert len(sent) == 3
    for sent_method, url, headers, body in sent:
        assert sent_method == method
        if method == "GET":
            assert body is None
            assert "DialAction=" in urlsplit(url).query
            params: dict[str, list[str]] = {}
        else:
            params = parse_qs((body or b"").decode(), keep_blank_values=True)
        assert signature.Keyring([TOKEN]).verify(headers, method, url, params).scheme == "v3"


def test_the_default_callback_method_is_post() -> None:
    _, http, _ = play(world(), dial(with_events(), f"<User>{AMY}</User>"))
    assert {m for m, url, _, _ in http.sent if urlsplit(url).path == "/events"} == {"POST"}


class Failing(Scripted):
    """The scripted application, whose /events answers 500."""

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpAnswer:
        answer = super().__call__(method, url, headers, body)
        return HttpAnswer(500, "text/plain", b"down") if "/events" in url else answer


def _scripted_with(http: Scripted, config: SandboxConfig) -> Sandbox:
    """`scripted`, with another stand-in application."""
    sandbox = new_sandbox(http, config)
    sandbox.account.update_application(
        APP_ID, {"answer_url": f"{XML}/answer", "hangup_url": f"{XML}/hangup"}
    )
    return sandbox


@pytest.mark.parametrize("where", ["unreachable", "500"])
def test_a_failing_callback_url_is_noted_and_changes_nothing(where: str) -> None:
    agents = (f"<User>{AMY}</User>", f"<User>{BEN}</User>")
    pages = {"/answer": dial(with_events(), *agents)}
    calm_sandbox, calm = scripted({"/answer": dial("", *agents)}, world(ben="accept"))
    calm_call = call_scripted(calm_sandbox)
    if where == "500":
        http: Scripted = Failing(pages)
        sandbox = _scripted_with(http, world(ben="accept"))
    else:
        pages["/answer"] = pages["/answer"].replace(EVENTS, "https://down.example.test/events")
        sandbox, http = scripted(pages, world(ben="accept"))
    call = call_scripted(sandbox)
    shown = call.text()
    assert shown.count("callbackUrl failed on") == 4
    assert "callbackUrl failed on connected; the Dial goes on unchanged" in shown
    status = "500" if where == "500" else "unreachable"
    assert "dial answer: POST" in shown and f"-> {status}" in shown
    skip = ("CallUUID", "DialALegUUID", "DialBLegUUID", "SessionStart")
    ours, theirs = forms(http.sent, "/action")[0], forms(calm.sent, "/action")[0]
    assert {k: v for k, v in ours.items() if k not in skip} == {
        k: v for k, v in theirs.items() if k not in skip
    }
    assert call.hangup == calm_call.hangup
    assert [(e["outcome"], e["t"]) for e in legs(call).values()] == [
        (e["outcome"], e["t"]) for e in legs(calm_call).values()
    ]


@pytest.mark.parametrize(
    "attrs", [' callbackUrl="ftp://xml.example.test/e"', with_events(' callbackMethod="PUT"')]
)
def test_a_callback_url_or_method_plivo_would_refuse_makes_the_xml_invalid(attrs: str) -> None:
    _, http, call = play(world(), dial(attrs, f"<User>{AMY}</User>"))
    assert call.hangup is not None and call.hangup["HangupCauseCode"] == "8011"
    assert sent_events(http.sent) == []


# -- the app's /dial-event ----------------------------------------------------------------------


def test_the_apps_dial_event_takes_every_event_of_a_handoff(app_config: dict[str, str]) -> None:
    """A handoff by the AI's API (Transfer through the served sandbox): alice's PBX refuses the
    app's credentials (4240), bob answers; the app answers 200 to each event and the handoff is
    connected, naming bob, before the Dial action of bob's attempt arrives."""
    port = free_port()
    application = create_app({**app_config, "PLIVO_API_URL": f"http://127.0.0.1:{port}"})
    config = load_config({**app_config, "AGENT_ALICE_PASSWORD": ROTATED_ALICE})
    store = application.extensions["sipguard"].store
    deliver = Watching(application, store)
    sandbox = new_sandbox(deliver, config, run=run_in_thread)
    try:
        with serve(sandbox, port):
            call = _handed_off(World(application, sandbox, deliver, sandbox.clock), application)
        _check_handoff(sandbox, call, deliver, store)
    finally:
        store.dispose()


class Watching(FlaskHttp):
    """Deliver to the app, noting the handoff's state as each Dial action is about to arrive."""

    def __init__(self, app: Flask, store: Any) -> None:
        super().__init__(app.test_client())
        self.store = store
        self.seen: list[tuple[str, str | None]] = []

    def __call__(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> HttpAnswer:
        parts = urlsplit(url)
        if parts.path == "/dial-action":
            found = self.store.get_handoff(_handoff_id(url))
            state = found.state if found is not None else None
            self.seen.append((parse_qs(parts.query)["attempt"][0], state))
        return super().__call__(method, url, headers, body)


def _check_handoff(sandbox: Sandbox, call: Call, deliver: Watching, store: Any) -> None:
    # The sandbox may fetch /handoff before the API has recorded that Plivo accepted the
    # Transfer: whichever side writes first, the first Dial leaves the handoff `ringing`.
    assert [attempt for attempt, _ in deliver.seen] == ["0", "1"]
    assert deliver.seen[0][1] == "ringing"
    assert deliver.seen[1][1] == "connected"
    events = [s for s in deliver.sent if urlsplit(s[1]).path == "/dial-event"]
    assert len(events) == 4  # alice's hangup; bob's answer, connected and hangup
    assert timeline(call) == [(t, text) for t, text in timeline(call) if text.endswith(" 200")]
    assert [text.split()[1] for _, text in timeline(call)] == [
        "hangup", "answer", "connected", "hangup"
    ]  # fmt: skip
    found = store.get_handoff(_handoff_id(events[0][1]))
    assert found is not None and found.state == "connected"
    assert found.plivo_api_id  # whichever side wrote first, Plivo's api_id is kept
    rows = store.query(select(webhook_outbox).order_by(webhook_outbox.c.created_at))
    assert [row["event_type"] for row in rows] == ["handoff.transferred", "handoff.agent_answered"]
    assert legs(call)[BOB]["outcome"] == "answered"
    assert_no_leaks(sandbox, deliver.sent)


def _handoff_id(url: str) -> str:
    [handoff_id] = parse_qs(urlsplit(url).query)["handoff"]
    return handoff_id


def _handed_off(world_: World, application: Flask) -> Call:
    """Park a call at the AI agent, ask the app's API to hand it to `support`, and wait for the
    sandbox to play the handoff to its end."""
    call = ai_first(world_)
    key = application.extensions["sipguard"].store.create_api_key("ai", "https://ai.example.test/h")
    sent = application.test_client().post(
        "/api/v1/handoffs",
        json={"call_uuid": call.uuid, "group": "support"},
        headers={"Authorization": f"Bearer {key.token}"},
    )
    assert sent.status_code == 202, sent.get_json()
    ended = world_.sandbox.wait(call.uuid, 20)
    for _ in range(200):  # the call thread may still be sending the hangup callback
        if ended.state == "ended" and ended.hangup is not None:
            break
        ended = world_.sandbox.wait(call.uuid, 0.1)
    assert ended.state == "ended", ended.text()
    return ended
