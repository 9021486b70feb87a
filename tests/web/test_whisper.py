"""The handoff's whisper: the Dial's confirmSound points at /whisper/<id>, which says the summary
to the agent who answers, and the summary goes nowhere else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import select, update

from app import create_app
from sipguard.calls.documents import WHISPER_GENERIC
from sipguard.calls.handoff import WHISPER
from sipguard.store import call_events, handoff_attempts, handoffs, hangups, webhook_outbox
from tests.support.config import DATA
from tests.support.handoffs import CALL, Dialled, Flow, as_dial, local_path, parse_xml

SUMMARY = "Canary-Whisper-c41f: Jane Roe wants a refund for order 4417"
METRICS_TOKEN = "metrics-token-whisper-0123456789"
# A group that asks the agent to press a key, with a confirm sound of its own.
DESK = """
[groups.desk]
strategy = "sequential"
agents = ["alice", "bob"]
confirm_key = "1"
confirm_sound = "https://media.example.test/confirm.xml"
[groups.desk.fallback]
action = "hangup"
text = "Nobody is available."
"""


@pytest.fixture
def app(app_config: dict[str, str], tmp_path: Path) -> Iterator[Flask]:
    voice = (
        (DATA / "voice.toml")
        .read_text()
        .replace('password_file = "carol.pw"', f'password_file = "{DATA / "carol.pw"}"')
    )
    config = tmp_path / "voice.toml"
    config.write_text(voice + DESK)
    application = create_app(
        {**app_config, "VOICE_CONFIG": str(config), "METRICS_TOKEN": METRICS_TOKEN}
    )
    yield application
    application.extensions["sipguard"].store.dispose()


def _whisper(flow: Flow, dialled: Dialled, **form: str) -> Any:
    return flow.post(local_path(dialled.dial.get("confirmSound")), form)


def test_the_dial_whispers_the_summary_to_the_agent(flow: Flow) -> None:
    handoff_id = flow.create(summary=SUMMARY, whisper=True)
    dialled = as_dial(flow.transferred())
    sound = local_path(dialled.dial.get("confirmSound"))
    assert sound.startswith(f"/whisper/{handoff_id}?token=")
    assert dialled.dial.get("confirmKey") is None
    answer = _whisper(flow, dialled, CallUUID="the-agent-leg")  # not the A leg's uuid
    assert etree.tostring(parse_xml(answer)) == (
        f"<Response><Speak>{SUMMARY}</Speak></Response>".encode()
    )
    assert answer.headers["Cache-Control"] == "no-store"
    # Plivo may post nothing at all for the called party.
    assert _whisper(flow, dialled).status_code == 200
    # The next attempt whispers too.
    second = as_dial(flow.dial_action(dialled, DialStatus="no-answer"))
    assert local_path(second.dial.get("confirmSound")).startswith(f"/whisper/{handoff_id}?")


def test_a_group_with_a_confirm_key_prompts_for_it_and_its_own_sound_gives_way(
    flow: Flow,
) -> None:
    flow.create(group="desk", summary="Line one\nline two", whisper=True)
    dialled = as_dial(flow.transferred())
    assert dialled.dial.get("confirmKey") == "1"
    assert dialled.dial.get("confirmSound") != "https://media.example.test/confirm.xml"
    root = parse_xml(_whisper(flow, dialled))
    assert [(child.tag, child.text) for child in root] == [
        ("Speak", "Line one line two"),
        ("Speak", "Press 1 to accept the call."),
    ]


def test_without_whisper_the_groups_own_confirm_sound_plays(flow: Flow) -> None:
    flow.create(group="desk", summary=SUMMARY)
    dialled = as_dial(flow.transferred())
    assert dialled.dial.get("confirmSound") == "https://media.example.test/confirm.xml"
    assert dialled.dial.get("confirmKey") == "1"


def test_with_a_confirm_key_the_handoff_connects_when_bridged_not_at_answer(flow: Flow) -> None:
    flow.create(group="desk", summary=SUMMARY, whisper=True)
    dialled = as_dial(flow.transferred())
    flow.dial_event(dialled, DialAction="answer")  # the agent has not pressed 1 yet
    assert flow.handoff().state == "ringing"
    flow.dial_event(dialled, DialAction="connected")
    assert flow.handoff().state == "connected"
    assert flow.event_types() == ["handoff.transferred", "handoff.agent_answered"]


def test_a_purged_summary_speaks_a_generic_line(flow: Flow) -> None:
    flow.create(summary=SUMMARY, whisper=True)
    dialled = as_dial(flow.transferred())
    with flow.store.engine.begin() as conn:
        conn.execute(update(handoffs).values(summary=None))
    root = parse_xml(_whisper(flow, dialled))
    assert [(child.tag, child.text) for child in root] == [("Speak", WHISPER_GENERIC)]
    with flow.store.engine.begin() as conn:
        conn.execute(handoff_attempts.delete())
        conn.execute(handoffs.delete())
    root = parse_xml(_whisper(flow, dialled))
    assert [(child.tag, child.text) for child in root] == [("Speak", WHISPER_GENERIC)]


def test_the_whisper_only_plays_speak_play_or_wait(flow: Flow) -> None:
    flow.create(group="desk", summary=SUMMARY, whisper=True)
    root = parse_xml(_whisper(flow, as_dial(flow.transferred())))
    assert {child.tag for child in root.iter()} <= {"Response", "Speak", "Play", "Wait"}


# -- refusals --------------------------------------------------------------------------------------


def _token_case(app: Flask, handoff_id: str, case: str) -> tuple[str, str]:
    signer = app.extensions["sipguard"].handoff
    if case == "missing":
        return f"/whisper/{handoff_id}", "handoff token is missing"
    if case == "tampered":
        token = signer.mint(CALL, "support", handoff_id, purpose=WHISPER)
        token = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        return f"/whisper/{handoff_id}?token={token}", "handoff token is invalid"
    if case == "another handoff":
        token = signer.mint(CALL, "support", "ho_someoneelse", purpose=WHISPER)
        return f"/whisper/{handoff_id}?token={token}", "handoff token is for another handoff"
    token = signer.mint(CALL, "support", handoff_id)  # the Transfer's own token
    return f"/whisper/{handoff_id}?token={token}", "handoff token is for another route"


@pytest.mark.parametrize("case", ["missing", "tampered", "another handoff", "transfer token"])
def test_a_bad_token_is_refused(flow: Flow, app: Flask, case: str) -> None:
    handoff_id = flow.create(summary=SUMMARY, whisper=True)
    path, message = _token_case(app, handoff_id, case)
    response = flow.post(path, {})
    assert response.status_code == 403
    assert response.get_json() == {"error": message}
    assert SUMMARY not in response.get_data(as_text=True)


def test_a_whisper_token_does_not_open_the_transfer_route(flow: Flow, app: Flask) -> None:
    handoff_id = flow.create(summary=SUMMARY, whisper=True)
    token = app.extensions["sipguard"].handoff.mint(CALL, "support", handoff_id, purpose=WHISPER)
    response = flow.post(f"/handoff/support?token={token}&handoff={handoff_id}", {"CallUUID": CALL})
    assert response.status_code == 403
    assert response.get_json() == {"error": "handoff token is for another route"}


def test_an_unsigned_whisper_request_is_refused(flow: Flow, client: FlaskClient) -> None:
    flow.create(summary=SUMMARY, whisper=True)
    sound = local_path(as_dial(flow.transferred()).dial.get("confirmSound"))
    response = client.post(sound)
    assert response.status_code == 403
    assert response.get_json() == {"error": "no Plivo signature header"}
    forged = flow.post(sound, {}, token="someone-elses-token")
    assert forged.status_code == 403 and SUMMARY not in forged.get_data(as_text=True)


# -- the canary ------------------------------------------------------------------------------------


def test_the_summary_appears_only_in_the_whisper(
    flow: Flow, client: FlaskClient, app_logs: pytest.LogCaptureFixture
) -> None:
    """Play a whole handoff with a unique summary, then look for it everywhere else."""
    flow.create(
        group="desk",
        summary=SUMMARY,
        whisper=True,
        fields={"Ticket": "4417"},
        on_failure="return",
        return_url="https://ai.example.test/plivo/return",
    )
    answers = []
    dialled = as_dial(flow.transferred())
    answers.append(dialled.response)
    whispers = [_whisper(flow, dialled)]
    answers.append(flow.dial_event(dialled, DialAction="answer"))
    answers.append(flow.dial_event(dialled, DialAction="hangup"))
    second = as_dial(flow.dial_action(dialled, DialStatus="failed", DialHangupCause="4240"))
    answers.append(second.response)
    whispers.append(_whisper(flow, second))
    answers.append(flow.dial_action(second, DialStatus="busy"))
    answers.append(flow.hangup())
    answers.append(client.get(f"/api/v1/handoffs/{flow.id}", headers=_auth(flow)))
    answers.append(client.get("/api/v1/groups/desk", headers=_auth(flow)))
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert metrics.status_code == 200
    answers.append(metrics)

    assert all(SUMMARY.encode() in w.data for w in whispers)
    for answer in answers:
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert SUMMARY not in answer.get_data(as_text=True)
        assert all(SUMMARY not in value for _, value in answer.headers.items())
    for record in app_logs.records:
        assert SUMMARY not in record.getMessage()
        assert SUMMARY not in str(record.args)
    rows: list[Any] = []
    for table in (call_events, hangups, webhook_outbox, handoff_attempts):
        rows.extend(flow.store.query(select(table)))
    assert rows and SUMMARY not in json.dumps(rows, default=str)
    bodies = [row["body"].decode() for row in flow.store.query(select(webhook_outbox))]
    assert [json.loads(body)["type"] for body in bodies] == [
        "handoff.transferred",
        "handoff.returned",
    ] and all(SUMMARY not in body for body in bodies)
    # Only the handoff's own row keeps it, until the retention purge.
    assert flow.store.query(select(handoffs.c.summary)) == [{"summary": SUMMARY}]


def _auth(flow: Flow) -> dict[str, str]:
    return {"Authorization": f"Bearer {flow.token}"}
