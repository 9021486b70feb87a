"""An API handoff driven through the app as Plivo would drive it: the AI's POST, the Transfer
(mocked with `responses`), then each signed callback the Dial makes, and what it left behind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import select
from werkzeug.test import TestResponse

from sipguard.store import webhook_outbox
from sipguard.store.handoffs import Handoff
from tests.support.config import API, BASE_URL
from tests.support.signing import inbound, make_signed_post

CALL = "c0ffee00-0000-4000-8000-0000000000f1"
HOOK = "https://ai.example.test/hooks"


def local_path(url: str) -> str:
    """Return the path and query Plivo would request for one of the app's absolute URLs."""
    assert url.startswith(BASE_URL + "/"), url
    return url.removeprefix(BASE_URL)


@dataclass
class Dialled:
    """A callback's answer that is a Dial, read as Plivo would read it."""

    response: TestResponse
    dial: Any  # the <Dial> element

    @property
    def users(self) -> list[Any]:
        return list(self.dial.iter("User"))

    def headers(self, index: int) -> str | None:
        """Return the sipHeaders of the `index`th <User>."""
        value: str | None = self.users[index].get("sipHeaders")
        return value

    @property
    def action(self) -> str:
        return local_path(self.dial.get("action"))

    @property
    def callback(self) -> str:
        return local_path(self.dial.get("callbackUrl"))

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.action).query)


def parse_xml(response: TestResponse) -> Any:
    """Parse an XML answer; fail on anything else."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/xml"
    return etree.fromstring(response.data)


def as_dial(response: TestResponse) -> Dialled:
    """Read an answer that must be a Dial."""
    root = parse_xml(response)
    dial = root.find("Dial")
    assert dial is not None, response.get_data(as_text=True)
    return Dialled(response, dial)


class Flow:
    """One call handed over by the AI: create it, then play Plivo's callbacks one by one."""

    def __init__(
        self, app: Flask, client: FlaskClient, rsps: responses.RequestsMock, call: str = CALL
    ) -> None:
        self.app, self.client, self.rsps, self.call = app, client, rsps, call
        self.store = app.extensions["sipguard"].store
        self.post = make_signed_post(client)
        self.token = self.store.create_api_key(f"ai-{call[-4:]}", HOOK).token
        self.id = ""
        self.transfer_path = ""

    def create(self, **body: Any) -> str:
        """Ask for a handoff of the call to `support` (overridden by `body`); return its id."""
        self.rsps.post(
            API + f"Call/{self.call}/", json={"message": "call transferred", "api_id": "t-1"}
        )
        sent = self.client.post(
            "/api/v1/handoffs",
            json={"call_uuid": self.call, "group": "support", **body},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert sent.status_code == 202, sent.get_json()
        self.id = sent.get_json()["id"]
        transfer = self.rsps.calls[-1].request.body
        assert isinstance(transfer, (str, bytes))
        aleg_url = json.loads(transfer)["aleg_url"]
        self.transfer_path = local_path(aleg_url)
        return self.id

    def transferred(self) -> TestResponse:
        """Plivo fetches the Transfer's aleg_url for the call."""
        return self.post(self.transfer_path, inbound(CallUUID=self.call, CallStatus="in-progress"))

    def dial_action(self, dialled: Dialled, **form: str) -> TestResponse:
        """Plivo reports how a Dial ended to its action URL."""
        sent = {"CallUUID": self.call, "DialALegUUID": self.call, **form}
        return self.post(dialled.action, sent)

    def dial_event(self, dialled: Dialled, **form: str) -> TestResponse:
        """Plivo reports an agent leg's progress to the Dial's callbackUrl."""
        return self.post(dialled.callback, {"DialALegUUID": self.call, **form})

    def hangup(self, **form: str) -> TestResponse:
        """Plivo reports the call's end."""
        sent = {
            "CallUUID": self.call,
            "CallStatus": "completed",
            "Direction": "inbound",
            "HangupCauseName": "Normal Hangup",
            **form,
        }
        return self.post("/hangup", sent)

    def handoff(self) -> Handoff:
        found = self.store.get_handoff(self.id)
        assert found is not None
        return found

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Return the outbox's events for this handoff, oldest first: (type, data)."""
        rows = self.store.query(
            select(webhook_outbox)
            .where(webhook_outbox.c.handoff_id == self.id)
            .order_by(webhook_outbox.c.created_at)
        )
        found = []
        for row in rows:
            body = json.loads(row["body"])
            assert body["type"] == row["event_type"]
            found.append((row["event_type"], body["data"]))
        return found

    def event_types(self) -> list[str]:
        return [event_type for event_type, _ in self.events()]
