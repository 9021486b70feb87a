"""schemathesis against the AI's API on real gunicorn and PostgreSQL, from its own OpenAPI document.

Requests are generated from /api/v1/openapi.json, valid ones and ones the document says are
invalid, and sent with a real API key. Plivo's Transfer is a loopback stand-in that accepts most
calls and refuses a fixed share (404), so POST /handoffs gets both of its Plivo answers (202 and
502) as well as 409 and every refusal. Every answer must be documented: no 5xx, a documented
status, its content type, body schema and headers; and a request the document calls invalid
must be refused. A failure is reported with the curl command that replays it.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.harness import Server
from sipguard.store import Store
from tests.support.config import AUTH_ID
from tests.support.servers import start

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx but the documented 502: Plivo refused the Transfer (its body is checked too)."""
    if response.status_code >= 500:
        plivo_refused = response.status_code == 502 and case.operation.label == "POST /handoffs"
        assert plivo_refused, f"server error {response.status_code} from {case.operation.label}"


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Examples per (operation, mode). GET /groups and the document take no input: one request each.
EXAMPLES: dict[tuple[str, str], dict[GenerationMode, int]] = {
    ("POST", "/handoffs"): {GenerationMode.POSITIVE: 900, GenerationMode.NEGATIVE: 700},
    ("GET", "/handoffs/{handoff_id}"): {GenerationMode.POSITIVE: 200, GenerationMode.NEGATIVE: 100},
    ("GET", "/groups/{name}"): {GenerationMode.POSITIVE: 200, GenerationMode.NEGATIVE: 100},
    ("GET", "/groups"): {GenerationMode.POSITIVE: 5},
    ("GET", "/openapi.json"): {GenerationMode.POSITIVE: 5},
}
MIN_REQUESTS = 2000
UNKEYED = 25
REFUSED_SHARE = 5  # one call in REFUSED_SHARE is unknown to the Plivo stand-in (404)
_TRANSFER = re.compile(r"^/v1/Account/([^/]+)/Call/([^/]+)/$")


class _Plivo(BaseHTTPRequestHandler):
    """Plivo's Transfer (POST Call/{uuid}/): 202 for most calls, 404 for a fixed share."""

    server: _PlivoServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        found = _TRANSFER.match(self.path)
        if found is None or found.group(1) != AUTH_ID or body.get("legs") != "aleg":
            self._answer(400, {"error": "not a Transfer", "api_id": str(uuid.uuid4())})
        elif zlib.crc32(found.group(2).encode()) % REFUSED_SHARE == 0:
            self._answer(404, {"error": "call not found", "api_id": str(uuid.uuid4())})
        else:
            self._answer(202, {"message": "call transferred", "api_id": str(uuid.uuid4())})
        with self.server.lock:
            self.server.answered[found.group(2) if found else "-"] += 1

    def _answer(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _PlivoServer(ThreadingHTTPServer):
    daemon_threads = True
    lock: threading.Lock
    answered: Counter[str]


@pytest.fixture
def plivo() -> Iterator[_PlivoServer]:
    server = _PlivoServer(("127.0.0.1", 0), _Plivo)
    server.lock = threading.Lock()
    server.answered = Counter()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def api(postgres_url: str, tmp_path: Path, plivo: _PlivoServer) -> Iterator[Server]:
    plivo_url = f"http://127.0.0.1:{plivo.server_address[1]}"
    with start(
        postgres_url, tmp_path / "api.log", PLIVO_AUTH_ID=AUTH_ID, PLIVO_API_URL=plivo_url
    ) as server:
        yield server


def _schema(base: str, auth: dict[str, str]) -> Any:
    """Load the served document, its group names narrowed to the configured ones.

    The document rightly takes any group name (an unknown one is 404); narrowed, generated
    requests reach Plivo's Transfer instead of stopping at the group look-up. Only the request
    side changes: the answers are checked against the document as served.
    """
    document = requests.get(base + "/api/v1/openapi.json", timeout=10).json()
    listed = requests.get(base + "/api/v1/groups", headers=auth, timeout=10).json()
    groups = [group["name"] for group in listed["groups"]]
    body = document["components"]["schemas"]["HandoffRequest"]["properties"]
    body["group"]["enum"] = groups
    assert document["servers"] == [{"url": base + "/api/v1"}]  # PUBLIC_BASE_URL + /api/v1
    return schemathesis.openapi.from_dict(document)


class _Run:
    """Sends cases with the API key (all but one in UNKEYED) and tallies what came back."""

    def __init__(self, base: str, auth: dict[str, str]) -> None:
        self.base = base + "/api/v1"
        self.auth = auth
        self.session = requests.Session()
        self.statuses: Counter[int] = Counter()
        self.per_operation: Counter[str] = Counter()
        self.failures: list[str] = []
        self.created: list[str] = []  # handoff ids the answers named

    def send(self, case: Any, label: str) -> None:
        # One request in UNKEYED goes without the key: its 401 must be documented too.
        keyed = sum(self.per_operation.values()) % UNKEYED != 0
        self.per_operation[label] += 1
        try:
            response = case.call_and_validate(
                base_url=self.base,
                session=self.session,
                headers=self.auth if keyed else {},
                checks=CHECKS,
                timeout=30,
            )
        except (AssertionError, FailureGroup) as exc:
            self.statuses[-1] += 1
            self.failures.append(f"{label}: {str(exc)[:600]}")
            return
        self.statuses[response.status_code] += 1
        if case.operation.label == "POST /handoffs" and response.status_code in (202, 502):
            self.created.append(response.json()["id"])


def _fuzz(operation: Any, mode: GenerationMode, examples: int, run: _Run, label: str) -> None:
    """Send `examples` cases of `operation` generated in `mode` (fewer when no more exist)."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        run.send(case, label)

    fuzz()


def test_generated_requests_get_documented_answers(
    api: Server, postgres_url: str, plivo: _PlivoServer, figures: dict[str, Any]
) -> None:
    store = Store(postgres_url)
    key = store.create_api_key("schemathesis", "http://127.0.0.1:9/hooks")
    auth = {"Authorization": f"Bearer {key.token}"}
    schema = _schema(api.base, auth)
    run = _Run(api.base, auth)
    for (method, path), modes in EXAMPLES.items():
        operation = schema[path][method]
        for mode, examples in modes.items():
            _fuzz(operation, mode, examples, run, f"{method} {path} ({mode.value})")
    # Then each handoff the generated requests created, some with the attempts a Dial records.
    read = schema["/handoffs/{handoff_id}"]["GET"]
    for index, handoff_id in enumerate(dict.fromkeys(run.created)):
        if index % 3 == 0:
            store.start_attempt(handoff_id, 0, ["alice"])
            store.end_attempt(handoff_id, 0, "sip_auth_failed", 4240)
            store.start_attempt(handoff_id, 1, ["bob"])
        case = read.Case(path_parameters={"handoff_id": handoff_id})
        run.send(case, "GET /handoffs/{handoff_id} (created)")

    total = sum(run.per_operation.values())
    figures.update(
        requests=total,
        failures=len(run.failures),
        statuses=dict(sorted(run.statuses.items())),
        transfers=sum(plivo.answered.values()),
    )
    figures.update(dict(sorted(run.per_operation.items())))
    assert run.failures == [], "\n\n".join(run.failures[:10])
    assert total >= MIN_REQUESTS
    # Every answer the routes document but 413 and 503 (tests/web/test_openapi.py has those).
    assert {200, 202, 400, 401, 404, 409, 422, 502} <= set(run.statuses), run.statuses
    assert api.process.poll() is None, api.log_tail()
