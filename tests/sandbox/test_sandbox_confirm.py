"""The sandbox honours a Dial's sipHeaders (X-PH-* on the agent's INVITE, Plivo's drops) and its
confirm prompt: confirmSound fetched and heard by each agent who answers, confirmKey pressed or
not (config `confirm`), confirmTimeout on the sandbox's simulated time.

Plivo's rules: https://www.plivo.com/docs/voice/xml/dial and .../dial/user (docs/plivo.md, XML).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sandbox.call import Call
from sandbox.config import Endpoint, SandboxConfig
from sandbox.engine import Sandbox
from sandbox.xml_player import CONFIRM_TIMEOUT, KEY_DELAY, sip_headers
from sipguard.calls import signature
from sipguard.errors import ValidationError
from tests.sandbox.test_sandbox_calls import (
    XML,
    Scripted,
    call_scripted,
    forms,
    legs,
    scripted,
    with_endpoints,
)
from tests.support.config import CANARIES, TOKEN
from tests.support.sandbox import START, load_config
from xml_builders import render_sip_headers

AMY = "sip:amy@desk.example.test"  # answers after 2 s
BEN = "sip:ben@desk.example.test"  # answers after 5 s
WHISPER = "Refund for order 4417, customer is calm"
WHISPER_XML = (
    f'<Response><Speak voice="WOMAN">{WHISPER}</Speak><Wait length="2"/>'
    "<GetDigits/><Play>https://media.example.test/beep.mp3</Play></Response>"
)


def world(amy: str = "accept", ben: str | None = None) -> SandboxConfig:
    """The suite's world plus amy (and ben) behind IP-authenticated desks, confirming as told."""
    desks = [Endpoint(AMY, answer_after=2, talk=20, confirm=amy)]
    if ben is not None:
        desks.append(Endpoint(BEN, answer_after=5, talk=20, confirm=ben))
    return with_endpoints(load_config(CANARIES), *desks)


def dial(attrs: str, *targets: str) -> str:
    return f'<Response><Dial action="{XML}/action"{attrs}>{"".join(targets)}</Dial></Response>'


def play(config: SandboxConfig, answer: str, **pages: str) -> tuple[Sandbox, Scripted, Call]:
    sandbox, http = scripted({"/answer": answer, **{f"/{k}": v for k, v in pages.items()}}, config)
    return sandbox, http, call_scripted(sandbox)


def events(call: Call, kind: str) -> list[dict[str, Any]]:
    return [{**e.data, "t": e.offset, "text": e.text} for e in call.events if e.kind == kind]


# -- sipHeaders ---------------------------------------------------------------------------------


def test_sip_headers_ride_on_the_agents_invite_and_show_in_its_leg() -> None:
    """sipHeaders on <Dial> and <User> become X-PH-<Name> (first letter upper, rest lower)."""
    answer = dial(
        ' sipHeaders="tIcKeT=4417,Queue=Main"',
        f'<User sipHeaders="queue=Vip,lang=EN">{AMY}</User>',
    )
    _, _, call = play(world(), answer)
    leg = legs(call)[AMY]
    assert leg["sip_headers"] == {"X-PH-Ticket": "4417", "X-PH-Queue": "Vip", "X-PH-Lang": "EN"}
    assert leg["dropped_headers"] == []
    assert "INVITE carried X-PH-Ticket: 4417, X-PH-Queue: Vip, X-PH-Lang: EN" in leg["text"]
    assert leg["outcome"] == "answered"


def test_each_leg_carries_its_own_users_headers() -> None:
    answer = dial(
        ' sipHeaders="Ticket=1"',
        f'<User sipHeaders="Desk=A">{AMY}</User>',
        f"<User>{BEN}</User>",
    )
    _, _, call = play(world(ben="accept"), answer)
    assert legs(call)[AMY]["sip_headers"] == {"X-PH-Ticket": "1", "X-PH-Desk": "A"}
    assert legs(call)[BEN]["sip_headers"] == {"X-PH-Ticket": "1"}


KEPT = {
    "A" * 24: "x",  # a name of 24 characters
    "Ticket": "v" * 120,  # a value of 120 characters
    "Pct": "50%25off",
    "Phone2": "1",  # "ph" alone is no reserved prefix; "ph-" is
    "Fsx": "1",
}
DROPPED = {
    "A" * 25: "x",  # name over 24
    "Bad-Name": "x",  # not letters and digits
    "Ticket": "v" * 121,  # value over 120
    "Dot": "a.b",  # not letters, digits and %
    "Space": "a b",
    "Empty": "",
    "PlivoTrace": "1",  # reserved prefixes and name, whatever the case
    "sipauthUser": "1",
    "TWILIOSid": "1",
    "ZT-x": "1",
    "PH-x": "1",
    "ClientRegion": "eu",
}


@pytest.mark.parametrize(("name", "value"), list(KEPT.items()))
def test_headers_within_plivos_rules_are_sent(name: str, value: str) -> None:
    sent, dropped = sip_headers(f"{name}={value}")
    assert sent == {f"X-PH-{name[0].upper()}{name[1:].lower()}": value}
    assert dropped == ()
    render_sip_headers("fields", {name: value})  # the app would send it too


@pytest.mark.parametrize(("name", "value"), list(DROPPED.items()))
def test_headers_breaking_plivos_rules_are_silently_dropped(name: str, value: str) -> None:
    sent, dropped = sip_headers(f"Keep=1,{name}={value}")
    assert sent == {"X-PH-Keep": "1"}
    assert len(dropped) == 1
    with pytest.raises(ValidationError):  # the app refuses it before Plivo could drop it
        render_sip_headers("fields", {name: value})


def test_a_header_without_a_value_is_dropped() -> None:
    assert sip_headers("NoEquals,Ok=1") == ({"X-PH-Ok": "1"}, ("NoEquals",))


def test_dropped_headers_are_not_on_the_invite_and_the_call_goes_on() -> None:
    answer = dial("", f'<User sipHeaders="Ticket=4417,PlivoX=1,Bad-Name=2">{AMY}</User>')
    _, http, call = play(world(), answer)
    leg = legs(call)[AMY]
    assert leg["sip_headers"] == {"X-PH-Ticket": "4417"}
    assert leg["dropped_headers"] == ["PlivoX", "Bad-Name"]
    assert leg["outcome"] == "answered"
    [action] = forms(http.sent, "/action")
    assert action["DialStatus"] == "completed"


# -- confirmSound -------------------------------------------------------------------------------


def test_the_agent_hears_the_confirm_sound_and_the_timeline_says_what() -> None:
    answer = dial(f' confirmSound="{XML}/whisper" sipHeaders="Ticket=4417"', f"<User>{AMY}</User>")
    _, http, call = play(world(), answer, whisper=WHISPER_XML)
    [heard] = [e for e in events(call, "confirm") if "heard" in e]
    leg = legs(call)[AMY]
    assert heard["heard"] == [WHISPER, "[audio https://media.example.test/beep.mp3]"]
    assert f"{AMY} heard: {WHISPER}" in heard["text"]
    assert heard["leg_uuid"] == leg["leg_uuid"] and heard["t"] == leg["t"]
    assert "<GetDigits> in confirmSound is ignored" in call.text()
    # Without confirmKey, the agent is bridged once the prompt has played: 7 words at 2.5 a
    # second, then a 2 s Wait; the talk (20 s) starts then.
    [bridged] = [e for e in events(call, "confirm") if "took the call" in e["text"]]
    assert bridged["t"] == pytest.approx(leg["t"] + 7 / 2.5 + 2)
    [action] = forms(http.sent, "/action")
    assert (action["DialStatus"], action["DialBLegUUID"]) == ("completed", leg["leg_uuid"])


def test_the_confirm_sound_request_is_a_signed_post_of_the_b_leg() -> None:
    answer = dial(
        f' confirmSound="{XML}/whisper" callerId="+14155550100"',
        f'<User sipHeaders="Ticket=4417">{AMY}</User>',
    )
    _, http, call = play(world(), answer, whisper=WHISPER_XML)
    [(method, url, headers, body)] = [s for s in http.sent if urlsplit(s[1]).path == "/whisper"]
    params = parse_qs((body or b"").decode(), keep_blank_values=True)
    assert method == "POST"
    assert signature.Keyring([TOKEN]).verify(headers, method, url, params).scheme == "v3"
    form = {key: value for key, [value] in params.items()}
    assert form["CallUUID"] == legs(call)[AMY]["leg_uuid"] != call.uuid
    assert form["ALegUUID"] == call.uuid
    assert (form["From"], form["To"], form["Direction"]) == ("+14155550100", AMY, "outbound")
    assert form["X-PH-Ticket"] == "4417"  # on every request Plivo makes for the dialled leg


def test_an_unreachable_confirm_sound_is_heard_as_nothing_and_the_bridge_happens() -> None:
    answer = dial(' confirmSound="https://down.example.test/w"', f"<User>{AMY}</User>")
    _, http, call = play(world(), answer)
    assert f"{AMY} heard nothing (no confirmSound XML)" in call.text()
    assert "confirmSound: POST https://down.example.test/w -> unreachable" in call.text()
    [action] = forms(http.sent, "/action")
    assert action["DialStatus"] == "completed"


def test_a_confirm_sound_that_is_not_xml_is_heard_as_nothing() -> None:
    answer = dial(f' confirmSound="{XML}/whisper"', f"<User>{AMY}</User>")
    _, http, call = play(world(), answer, whisper="hello")
    assert f"{AMY} heard nothing" in call.text()
    assert forms(http.sent, "/action")[0]["DialStatus"] == "completed"


# -- confirmKey ---------------------------------------------------------------------------------

CONFIRM = f' confirmSound="{XML}/whisper" confirmKey="5"'


def test_an_agent_who_presses_the_key_is_bridged() -> None:
    _, http, call = play(world("accept"), dial(CONFIRM, f"<User>{AMY}</User>"), whisper=WHISPER_XML)
    leg = legs(call)[AMY]
    assert leg["outcome"] == "answered"
    assert "pressed 5" in leg["text"]
    [action] = forms(http.sent, "/action")
    assert (action["DialStatus"], action["DialBLegUUID"]) == ("completed", leg["leg_uuid"])
    [bridged] = [e for e in events(call, "confirm") if "took the call" in e["text"]]
    assert bridged["t"] == pytest.approx(leg["t"] + 7 / 2.5 + 2 + KEY_DELAY)


def test_an_agent_who_ignores_the_key_is_dropped_after_confirm_timeout() -> None:
    """The B leg drops when confirmTimeout (120 s by default) runs out, on simulated time, and
    the Dial reports that agent as not answering."""
    sandbox, http, call = play(
        world("ignore"), dial(CONFIRM, f"<User>{AMY}</User>"), whisper=WHISPER_XML
    )
    leg = legs(call)[AMY]
    assert (leg["outcome"], leg["cause"], leg["code"]) == ("no-answer", "No Answer", None)
    assert "never pressed 5; dropped after confirmTimeout 120 s" in leg["text"]
    assert "heard the confirmSound" in leg["text"]
    answered = leg["t"] - CONFIRM_TIMEOUT
    assert answered == pytest.approx(0.05 + 2)  # SIP set-up, then 2 s of ringing
    [action] = forms(http.sent, "/action")
    assert (action["DialStatus"], action["DialHangupCause"]) == ("no-answer", "No Answer")
    assert action["DialBLegUUID"] == ""
    assert sandbox.clock.now() == START  # simulated time: the sandbox's clock did not move


def test_confirm_timeout_is_honoured() -> None:
    answer = dial(CONFIRM + ' confirmTimeout="10"', f"<User>{AMY}</User>")
    _, _, call = play(world("ignore"), answer, whisper=WHISPER_XML)
    assert legs(call)[AMY]["t"] == pytest.approx(2.05 + 10)


def test_a_prompt_longer_than_confirm_timeout_leaves_no_time_to_press() -> None:
    answer = dial(CONFIRM + ' confirmTimeout="3"', f"<User>{AMY}</User>")
    _, http, _ = play(world("accept"), answer, whisper=WHISPER_XML)  # the prompt lasts 4.8 s
    assert forms(http.sent, "/action")[0]["DialStatus"] == "no-answer"


def test_of_two_agents_the_one_who_presses_is_bridged_and_the_other_dropped() -> None:
    """amy answers first but never presses; ben answers later and presses: ben is bridged and
    amy, still listening, is cancelled."""
    answer = dial(CONFIRM, f"<User>{AMY}</User>", f"<User>{BEN}</User>")
    _, http, call = play(world("ignore", ben="accept"), answer, whisper=WHISPER_XML)
    amy, ben = legs(call)[AMY], legs(call)[BEN]
    assert ben["outcome"] == "answered" and "pressed 5" in ben["text"]
    assert (amy["outcome"], amy["code"]) == ("cancelled", 1000)
    assert "another agent pressed the key first" in amy["text"]
    assert "never pressed" not in amy["text"]  # her confirmTimeout had not run out
    assert amy["t"] == pytest.approx(ben["t"] + 7 / 2.5 + 2 + KEY_DELAY)  # dropped at the press
    assert len([e for e in events(call, "confirm") if "heard" in e]) == 2  # both heard it
    [action] = forms(http.sent, "/action")
    assert (action["DialStatus"], action["DialBLegUUID"]) == ("completed", ben["leg_uuid"])


def test_of_two_agents_who_both_press_the_first_to_press_wins() -> None:
    answer = dial(CONFIRM, f"<User>{AMY}</User>", f"<User>{BEN}</User>")
    _, http, call = play(world("accept", ben="accept"), answer, whisper=WHISPER_XML)
    amy, ben = legs(call)[AMY], legs(call)[BEN]
    assert amy["outcome"] == "answered"
    assert ben["outcome"] == "cancelled"
    [action] = forms(http.sent, "/action")
    assert action["DialBLegUUID"] == amy["leg_uuid"]


def test_an_agent_who_answers_after_the_bridge_is_cancelled_unprompted() -> None:
    """amy presses at 2.05 + 4.8 + 1 s, before ben answers at 5.05 + 2 s: ben never hears it."""
    short = "<Response><Speak>Take it</Speak></Response>"  # 1 s
    answer = dial(CONFIRM, f"<User>{AMY}</User>", f"<User>{BEN}</User>")
    _, http, call = play(world("accept", ben="accept"), answer, whisper=short)
    assert legs(call)[BEN]["outcome"] == "cancelled"
    assert len([s for s in http.sent if urlsplit(s[1]).path == "/whisper"]) == 1


def test_of_two_agents_who_both_ignore_the_dial_is_no_answer() -> None:
    answer = dial(CONFIRM + ' confirmTimeout="20"', f"<User>{AMY}</User>", f"<User>{BEN}</User>")
    _, http, call = play(world("ignore", ben="ignore"), answer, whisper=WHISPER_XML)
    assert {legs(call)[a]["outcome"] for a in (AMY, BEN)} == {"no-answer"}
    [action] = forms(http.sent, "/action")
    assert (action["DialStatus"], action["DialBLegUUID"]) == ("no-answer", "")


def test_confirm_key_without_confirm_sound_asks_for_no_key() -> None:
    """Plivo: confirmSound is required for confirmKey to work."""
    _, http, call = play(world("ignore"), dial(' confirmKey="5"', f"<User>{AMY}</User>"))
    assert "confirmKey without confirmSound: no key is asked for" in call.text()
    assert forms(http.sent, "/action")[0]["DialStatus"] == "completed"


@pytest.mark.parametrize("key", ["55", "a", ""])
def test_a_confirm_key_plivo_would_refuse_makes_the_xml_invalid(key: str) -> None:
    answer = dial(CONFIRM.replace('"5"', f'"{key}"'), f"<User>{AMY}</User>")
    _, http, call = play(world(), answer)
    assert call.hangup is not None and call.hangup["HangupCauseCode"] == "8011"
    assert not forms(http.sent, "/whisper")
