"""A webhook receiver on 127.0.0.1 for the delivery tests and `make demo`: it records every
request and answers what it is told (a status, headers such as Retry-After, slowly), and it can go
down (connection refused) and come back up on the same port. Loopback only."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

MAX_DELAY = 2.0  # seconds: a slow answer never holds a test longer than this


@dataclass(frozen=True)
class Answer:
    """What the receiver answers one request."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering; cut short when the receiver stops


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a slow handler is released by `stopping`, not waited for
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # HTTP/1.0: one request per connection, so `stop` refuses the next one

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.server.receiver._handle(self)

    do_GET = do_PUT = do_POST  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test reads `requests` instead


class Receiver:
    """Records requests; answers the queued answers first, then `default`."""

    def __init__(self, path: str = "/hooks") -> None:
        self.path = path
        self.default = Answer()
        self.requests: list[Received] = []
        self.delivered: list[Received] = []  # those answered with a 2xx (when not timed out)
        self.max_in_flight = 0  # the most requests for one webhook-id at the same moment
        self._answers: deque[Answer] = deque()
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def answer(self, *answers: Answer) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._answers.extend(answers)

    def start(self) -> Receiver:
        """Listen (again) on 127.0.0.1, on the port it had before if it had one."""
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.receiver = self
        self.port = int(server.server_address[1])
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until `start` again."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def ids(self) -> list[str]:
        """Return the webhook-id of every request, in arrival order."""
        with self._lock:
            return [request.webhook_id for request in self.requests]

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        received = Received(
            handler.command,
            handler.path,
            {name.lower(): value for name, value in handler.headers.items()},
            body,
        )
        with self._lock:
            self.requests.append(received)
            answer = self._answers.popleft() if self._answers else self.default
            self._in_flight[received.webhook_id] += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight[received.webhook_id])
        try:
            if answer.delay:
                self._stopping.wait(min(answer.delay, MAX_DELAY))
            if 200 <= answer.status < 300:
                with self._lock:  # before the answer leaves, so a client that has it sees this
                    self.delivered.append(received)
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")
        except OSError:
            pass  # the client gave up (a timeout test): nothing to answer
        finally:
            with self._lock:
                self._in_flight[received.webhook_id] -= 1
