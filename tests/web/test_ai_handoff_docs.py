"""docs/ai-handoff.md's code says what the API does: the model's tool definition agrees with the
OpenAPI request schema, the Python snippet sends a request the API accepts, and the stdlib
webhook verifier accepts what the worker signs and refuses the rest."""

from __future__ import annotations

import json
import re
import sys
import time
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

from sipguard.handoffs.openapi import document
from sipguard.notify.signing import sign
from sipguard.store.handoffs import ON_FAILURE
from tests.support.config import API

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ai-handoff.md").read_text()
REQUEST = document("https://voice.example.test/api/v1")["components"]["schemas"]["HandoffRequest"]
ADDED_BY_THE_SERVER = {"call_uuid", "return_url", "callback_url"}
CALL = "c0ffee00-0000-4000-8000-00000000d0c5"


def _section(title: str) -> str:
    return DOC.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def _tool() -> dict[str, Any]:
    (block,) = _blocks(_section("## Tool definition for the model"), "json")
    tool: dict[str, Any] = json.loads(block)
    return tool


def _snippet(title: str, name: str, namespace: dict[str, Any]) -> Any:
    """Run the section's Python block defining `name`; return what it defined."""
    (block,) = [b for b in _blocks(_section(title), "python") if f"def {name}(" in b]
    exec(compile(block, f"docs/ai-handoff.md:{name}", "exec"), namespace)
    return namespace[name]


def test_the_tool_is_an_llm_function_with_a_valid_parameters_schema() -> None:
    tool = _tool()
    assert tool["type"] == "function"
    assert set(tool["function"]) == {"name", "description", "parameters"}
    assert tool["function"]["name"] == "transfer_to_human"
    parameters = tool["function"]["parameters"]
    Draft202012Validator.check_schema(parameters)
    assert parameters["type"] == "object" and parameters["additionalProperties"] is False
    assert set(parameters["required"]) <= set(parameters["properties"])


def test_the_tools_parameters_are_the_request_schemas() -> None:
    parameters = _tool()["function"]["parameters"]["properties"]
    request = REQUEST["properties"]
    # Every key the model fills is one the API reads; the rest are the server's to add.
    assert set(parameters) | ADDED_BY_THE_SERVER == set(request)
    for name, schema in parameters.items():
        assert schema["type"] in request[name]["type"], name
    assert set(parameters["on_failure"]["enum"]) == set(request["on_failure"]["enum"]) - {None}
    assert set(parameters["on_failure"]["enum"]) == set(ON_FAILURE)
    assert parameters["summary"]["maxLength"] == request["summary"]["maxLength"]
    fields = request["fields"]
    for key in ("maxProperties", "additionalProperties"):
        assert parameters["fields"][key] == fields[key], key
    assert parameters["fields"]["propertyNames"]["pattern"] == fields["propertyNames"]["pattern"]
    sample = tomllib.loads((ROOT / "config" / "voice.sample.toml").read_text())
    assert set(parameters["group"]["enum"]) <= set(sample["groups"])


@pytest.mark.parametrize(
    "arguments",
    [
        {"group": "support", "summary": "Wants a refund for order 4417"},
        {"group": "support", "summary": "Line one\nline two", "whisper": True},
        {"group": "support", "summary": "Ticket", "fields": {"Ticket": "4417", "Lang": "en"}},
        {"group": "support", "summary": "Back to me", "on_failure": "return"},
    ],
)
def test_the_snippet_turns_a_tool_call_into_an_accepted_handoff(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, arguments: dict[str, Any]
) -> None:
    tool = _tool()["function"]["parameters"]
    assert Draft202012Validator(tool).is_valid(arguments)
    token = app.extensions["sipguard"].store.create_api_key("ai").token
    monkeypatch.setenv("SIPGUARD_API_KEY", token)
    sent: list[dict[str, Any]] = []

    def post(url: str, *, json: Any, headers: dict[str, str], timeout: float) -> Any:
        path = url.removeprefix("https://voice.example.com")
        sent.append(json)
        answer = client.post(path, json=json, headers=headers)
        return types.SimpleNamespace(status_code=answer.status_code, json=answer.get_json)

    monkeypatch.setitem(sys.modules, "httpx", types.SimpleNamespace(post=post))
    transfer = _snippet("## Tool definition for the model", "transfer_to_human", {})
    with responses.RequestsMock() as mock:
        mock.post(API + f"Call/{CALL}/", json={"message": "call transferred", "api_id": "t-1"})
        told = transfer(CALL, "call_tool_1", json.dumps(arguments))
        again = transfer(CALL, "call_tool_1", json.dumps(arguments))
        assert len(mock.calls) == 1  # the tool call's id is the Idempotency-Key
    assert told["transferred"] is True and again == told
    assert Draft202012Validator(REQUEST).is_valid(sent[0])


def _verifier() -> Any:
    return _snippet("## Verifying the webhooks", "verify", {})


SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"type":"handoff.transferred","timestamp":"2026-12-02T08:00:00.000Z","data":{}}'


def _headers(timestamp: int, body: bytes = BODY, secret: str = SECRET) -> dict[str, str]:
    return {
        "webhook-id": "msg_0123456789abcdefghijklmnop",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "msg_0123456789abcdefghijklmnop", timestamp, body),
    }


def test_the_stdlib_verifier_accepts_what_the_worker_signs() -> None:
    verify = _verifier()
    now = int(time.time())
    assert verify(SECRET, _headers(now), BODY) == json.loads(BODY)
    # Several signatures (a secret being rotated): any valid one passes.
    headers = _headers(now)
    headers["webhook-signature"] = "v1,bm90LXRoZS1vbmU= " + headers["webhook-signature"]
    assert verify(SECRET, headers, BODY)["type"] == "handoff.transferred"


@pytest.mark.parametrize(
    "change",
    ["body", "secret", "old", "future", "version", "timestamp_text"],
)
def test_the_stdlib_verifier_refuses_the_rest(change: str) -> None:
    verify = _verifier()
    now = int(time.time())
    headers, body = _headers(now), BODY
    if change == "body":
        body = BODY.replace(b"transferred", b"failed")
    elif change == "secret":
        headers = _headers(now, secret="whsec_" + "A" * 32)
    elif change == "old":
        headers = _headers(now - 301)
    elif change == "future":
        headers = _headers(now + 301)
    elif change == "version":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    else:
        headers["webhook-timestamp"] = f"{now}.0"
    with pytest.raises(ValueError):
        verify(SECRET, headers, body)
