"""The seams of the call engine: the SIP edge decides alone, the XML player never ends a call.

The SIP edge needs an account and a clock and nothing else (no HTTP, no call): what a real SIP
front would use. The player returns how a call ends and leaves the hangup to the call core.
"""

from __future__ import annotations

from sandbox import digest
from sandbox.account import Account
from sandbox.call import Call, Ending
from sandbox.callbacks import Callbacks, Fetch, HttpAnswer
from sandbox.config import SandboxConfig
from sandbox.legs import Legs
from sandbox.sip_edge import Invite, SipEdge
from sandbox.timeline import SandboxClock
from sandbox.xml_player import Player
from tests.support.config import AUTH_ID, MAIN_TOKEN, TOKEN
from tests.support.sandbox import CALLER_PASSWORD, START

APP = "30000000000000000003"
URI = f"sip:{APP}@app.plivo.com"


def _edge() -> SipEdge:
    account = Account(AUTH_ID)
    credential = account.create_credential({"username": "desk", "password": CALLER_PASSWORD})
    account.create_application({"app_name": "a", "answer_url": "https://x.test/answer"}, APP)
    account.update_application(
        APP, {"sip_auth_type": "credential", "credential_uuid": credential.uuid}
    )
    return SipEdge(account, SandboxClock(START))


def test_the_edge_challenges_and_admits_without_a_call() -> None:
    """407 with a challenge, then 200 for the right answer: a verdict to record, no call yet."""
    edge = _edge()
    first = edge.admit(Invite("203.0.113.5", URI))
    assert (first.answer.status, first.app) == (407, None)
    challenge = digest.Challenge.parse(str(first.answer.challenge))
    answer = digest.answer(challenge, "desk", CALLER_PASSWORD, "INVITE", URI)
    verdict = edge.admit(Invite("203.0.113.5", URI, authorization=answer.header()))
    assert verdict.admitted and verdict.answer.call_uuid is None
    assert verdict.app is not None and verdict.app.app_id == APP
    assert (verdict.mode, verdict.username, verdict.source) == ("credential", "desk", "203.0.113.5")


def test_the_edge_refuses_and_counts_a_wrong_answer() -> None:
    """A wrong password is a 403 verdict for the application, counted towards the lockout."""
    edge = _edge()
    first = edge.admit(Invite("203.0.113.6", URI))
    challenge = digest.Challenge.parse(str(first.answer.challenge))
    answer = digest.answer(challenge, "desk", "Not-The-Passw0rd-1", "INVITE", URI)
    verdict = edge.admit(Invite("203.0.113.6", URI, authorization=answer.header()))
    assert (verdict.answer.status, verdict.counted, verdict.username) == (403, True, None)
    assert verdict.app is not None and not verdict.admitted


class _Pages:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def __call__(self, method: str, url: str, headers: object, body: bytes | None) -> HttpAnswer:
        return HttpAnswer(200, "application/xml", self.body)


def test_the_player_returns_the_ending_and_leaves_the_call_open() -> None:
    """<Hangup/> after <Speak> is 4000 by Answer XML; ending the call is the core's job."""
    account = Account(AUTH_ID)
    account.create_application({"app_name": "a", "answer_url": "https://x.test/answer"}, APP)
    app = account.application(APP)
    clock = SandboxClock(START)
    http = _Pages(b"<Response><Speak>hello</Speak><Hangup/></Response>")
    callbacks = Callbacks(AUTH_ID, http, TOKEN, MAIN_TOKEN)
    legs = Legs({}, clock, lambda: "leg")
    player = Player(SandboxConfig(), clock, callbacks, legs, lambda: "rec")
    call = Call("c-1", "inbound", "sip:a@b", URI, START, app)
    ending = player.play(call, Fetch(app.answer_url, "POST", "answer"))
    assert ending == Ending(4000, "completed", "Answer XML")
    assert call.state == "in-progress" and call.hangup is None
