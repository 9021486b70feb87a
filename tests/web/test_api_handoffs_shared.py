"""The handoff API across instances and into the outbox: two apps on one PostgreSQL racing
duplicate requests, and the worker delivering the real store's outcome webhooks."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from click.testing import CliRunner
from flask import Flask
from standardwebhooks import Webhook

from app import create_app
from devtools.receiver import Receiver
from sipguard.commands import main
from sipguard.commands.context import Standalone
from sipguard.notify.model import webhook_secret
from tests.support.config import API, SECRET_KEY, app_config

CALL = "c0ffee00-0000-4000-8000-00000000race"
RACERS = 8


@pytest.fixture
def two_apps(postgres_url: str) -> Iterator[tuple[Flask, Flask]]:
    apps = (create_app(app_config(postgres_url)), create_app(app_config(postgres_url)))
    yield apps
    for app in apps:
        app.extensions["sipguard"].store.dispose()


def _race(
    apps: tuple[Flask, Flask], token: str, bodies: list[dict[str, Any]], **headers: str
) -> list[Any]:
    """POST every body at once, alternating between the two apps; return the answers."""
    barrier = threading.Barrier(len(bodies))
    answers: list[Any] = [None] * len(bodies)

    def post(n: int) -> None:
        client = apps[n % 2].test_client()
        barrier.wait()
        answers[n] = client.post(
            "/api/v1/handoffs",
            json=bodies[n],
            headers={"Authorization": f"Bearer {token}", **headers},
        )

    threads = [threading.Thread(target=post, args=(n,)) for n in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return answers


@pytest.mark.postgres
def test_concurrent_replays_on_two_instances_transfer_once(two_apps: tuple[Flask, Flask]) -> None:
    token = two_apps[0].extensions["sipguard"].store.create_api_key("ai").token
    body = {"call_uuid": CALL, "group": "support"}
    with responses.RequestsMock() as rsps:
        rsps.post(API + f"Call/{CALL}/", json={"api_id": "t-1"}, status=202)
        answers = _race(two_apps, token, [body] * RACERS, **{"Idempotency-Key": "same"})
        assert len(rsps.calls) == 1
    assert [a.status_code for a in answers] == [202] * RACERS
    assert len({a.get_json()["id"] for a in answers}) == 1
    replayed = Counter(a.headers.get("Idempotent-Replayed") for a in answers)
    assert replayed == {None: 1, "true": RACERS - 1}


@pytest.mark.postgres
def test_concurrent_handoffs_for_one_call_on_two_instances_are_one_202_and_409s(
    two_apps: tuple[Flask, Flask],
) -> None:
    token = two_apps[0].extensions["sipguard"].store.create_api_key("ai").token
    bodies = [{"call_uuid": CALL, "group": "support" if n % 2 else "oncall"} for n in range(RACERS)]
    with responses.RequestsMock() as rsps:
        rsps.post(API + f"Call/{CALL}/", json={"api_id": "t-1"}, status=202)
        answers = _race(two_apps, token, bodies)
        assert len(rsps.calls) == 1
    assert sorted(a.status_code for a in answers) == [202] + [409] * (RACERS - 1)


def test_the_worker_delivers_the_handoffs_webhook_end_to_end(app_config: dict[str, str]) -> None:
    info = Standalone(app_config)
    app = info.load_app()
    store = app.extensions["sipguard"].store
    with Receiver() as receiver:
        try:
            new = store.create_api_key("ai", callback_url=receiver.url)
            with responses.RequestsMock() as rsps:
                rsps.post(API + f"Call/{CALL}/", json={"api_id": "t-1"}, status=202)
                created = app.test_client().post(
                    "/api/v1/handoffs",
                    json={"call_uuid": CALL, "group": "support", "summary": "Canary-Summary-e2e"},
                    headers={"Authorization": f"Bearer {new.token}"},
                )
            assert created.status_code == 202
            result = CliRunner().invoke(main.cli, ["worker", "--once"], obj=info)
            assert result.exit_code == 0, result.output
            assert len(receiver.requests) == 1
            request = receiver.requests[0]
            event = Webhook(webhook_secret(SECRET_KEY, new.key.id)).verify(
                request.body, request.headers
            )
            assert event["type"] == "handoff.transferred"
            assert event["data"]["handoff_id"] == created.get_json()["id"]
            assert event["data"]["state"] == "transferred"
            assert b"Canary-Summary" not in request.body
        finally:
            store.dispose()
