"""Real processes for the end-to-end and reliability suites: gunicorn instances of the app
(started with devtools.harness), a breakable link to PostgreSQL, and a small signing HTTP
client. Loopback only."""

from __future__ import annotations

import os
import select
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from devtools.harness import Server, free_port, request, start_gunicorn
from sipguard.calls import signature
from tests.support.config import CANARIES, DATA, SECRET_KEY, TOKEN

METRICS_TOKEN = "reliability-metrics-token-0123"


def start(database_url: str, log: Path, *, workers: int = 2, **extra: str) -> Server:
    """Start `gunicorn 'app:create_app()'` with the suites' settings and wait for /healthz.

    It runs in the log's directory with an environment built from scratch: neither a
    developer's shell nor a .env file changes what the tests see, but for WEB_THREADS.
    """
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PLIVO_AUTH_TOKEN": TOKEN,
        "SECRET_KEY": SECRET_KEY,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "VOICE_CONFIG": str(DATA / "voice.toml"),
        "DATABASE_URL": database_url,
        "METRICS_TOKEN": METRICS_TOKEN,
        **CANARIES,
        # The one setting taken from the shell: `WEB_THREADS=8 make reliability` runs the suite
        # on gthread workers, the configuration the README recommends for PostgreSQL.
        **({"WEB_THREADS": os.environ["WEB_THREADS"]} if os.environ.get("WEB_THREADS") else {}),
        **extra,
    }
    return start_gunicorn(log.stem, env=env, log=log, port=port, workers=workers)


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """GET `url` on loopback; return status and body."""
    reply = request("GET", url, headers=headers)
    return reply.status, reply.body


def post_signed(base: str, path: str, form: Mapping[str, str]) -> tuple[int, bytes, str]:
    """POST `form` to base+path signed as Plivo would, with a fresh nonce; return status, body,
    content type. Connection failures raise OSError (http.client's errors are OSErrors too)."""
    url = base + path
    params = {key: [value] for key, value in form.items()}
    headers = signature.signed_headers(TOKEN, "POST", url, params, uuid.uuid4().hex)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    reply = request("POST", url, body=urlencode(form), headers=headers, timeout=30)
    return reply.status, reply.body, reply.content_type


@dataclass
class Link:
    """A TCP forwarder to PostgreSQL that can be cut (every connection dropped, new ones refused
    at once) and restored: the database "becomes unreachable" without touching the server."""

    target: tuple[str, int] = ("127.0.0.1", 5432)
    port: int = field(default_factory=free_port)
    _up: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sockets: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._up.set()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        self._up.clear()
        with self._lock:
            for sock in list(self._sockets):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        """Let connections through again."""
        self._up.set()

    def close(self) -> None:
        """Stop forwarding for good."""
        self._stop.set()
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        pair = {a: b, b: a}
        try:
            while self._up.is_set():
                readable, _, _ = select.select(list(pair), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                for sock in (a, b):
                    self._sockets.discard(sock)
                    try:
                        sock.close()
                    except OSError:
                        pass
