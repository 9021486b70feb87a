"""One way to run a real server: a free port, gunicorn with the project's gunicorn.conf.py, a
wait for its health URL, and a bounded stop of its whole process group. Loopback only."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
APP = "app:create_app()"
STOP_TIMEOUT = 15.0  # seconds a server gets to stop after SIGTERM, before SIGKILL


def free_port() -> int:
    """Return a loopback TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gunicorn_command(app: str = APP) -> list[str]:
    """Return the command that serves `app` (a gunicorn app spec) with gunicorn.conf.py."""
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    return [gunicorn, "-c", str(GUNICORN_CONF), app]


@dataclass(frozen=True)
class Reply:
    """What a loopback server answered."""

    status: int
    body: bytes
    content_type: str


def request(
    method: str,
    url: str,
    *,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """Send one HTTP request to a loopback `url`; connection failures raise OSError."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    try:
        connection.request(method, target, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, response.read(), response.getheader("Content-Type") or "")
    except http.client.HTTPException as exc:
        raise ConnectionError(type(exc).__name__) from None
    finally:
        connection.close()


def health(url: str, timeout: float = 2.0) -> int:
    """GET `url` on loopback and return the status; connection failures raise OSError."""
    return request("GET", url, timeout=timeout).status


@dataclass
class Server:
    """A server process in its own process group, its port and its log file."""

    name: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    metrics_dir: Path | None = None  # gunicorn's PROMETHEUS_MULTIPROC_DIR

    @property
    def base(self) -> str:
        """Return the server's loopback base URL."""
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        """Return the pids of the process's live children (gunicorn's workers)."""
        pid = self.process.pid
        try:
            return [
                int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            ]
        except OSError:
            return []

    def log_tail(self, characters: int = 4000) -> str:
        """Return the end of the server's log."""
        try:
            return self.log.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL the whole process group at once: no chance to finish anything."""
        _signal_group(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass  # not reaped yet; SIGKILL cannot be ignored, so it is gone all the same

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the whole process group: SIGTERM, at most `timeout` s, then SIGKILL."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while a member lingers (a stray worker): none survives this.
        self.kill()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pid: int, number: signal.Signals) -> None:
    try:
        os.killpg(pid, number)
    except ProcessLookupError:
        pass


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None = None,
    port: int = 0,
    metrics_dir: Path | None = None,
) -> Server:
    """Start `argv` in a new process group, output to `log`, without waiting for it.

    For a process with no HTTP port to wait on (`sipguard worker`: `port` stays 0), and the
    first half of `start`. It runs in `cwd` (default: the log's directory) with exactly `env`.
    """
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd or log.parent,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, port, log, process, metrics_dir)


def start(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    port: int,
    health_path: str = "/healthz",
    cwd: Path | None = None,
    timeout: float = 30.0,
    ready: Callable[[Server], bool] | None = None,
    metrics_dir: Path | None = None,
) -> Server:
    """Start `argv` in a new process group, output to `log`, and wait until it is ready.

    Ready means GET health_path on `port` answers 200 (and `ready(server)` holds, if given).
    It runs in `cwd` (default: the log's directory) with exactly `env`. If it exits or is not
    ready within `timeout` seconds it is stopped, and RuntimeError carries the log's end.
    """
    server = spawn(name, argv, env=env, log=log, cwd=cwd, port=port, metrics_dir=metrics_dir)
    process = server.process
    url = server.base + health_path
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if health(url) == 200 and (ready is None or ready(server)):
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} was not ready within {timeout:g} s:\n{server.log_tail()}")


def start_gunicorn(
    name: str,
    *,
    env: Mapping[str, str],
    log: Path,
    app: str = APP,
    port: int | None = None,
    workers: int = 2,
    cwd: Path | None = None,
    timeout: float = 30.0,
) -> Server:
    """Start `gunicorn -c gunicorn.conf.py APP` on 127.0.0.1 and wait for /healthz.

    `env` is the whole environment (add PATH yourself); the harness adds BIND, WEB_CONCURRENCY
    and, unless `env` has one, a PROMETHEUS_MULTIPROC_DIR beside the log. The project is
    installed, so `app` imports from any directory. Ready means /healthz answers 200 and all
    `workers` have booted.
    """
    port = port or free_port()
    metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or log.with_suffix(".metrics"))
    full_env = {
        **env,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    return start(
        name,
        gunicorn_command(app),
        env=full_env,
        log=log,
        port=port,
        cwd=cwd,
        timeout=timeout,
        ready=lambda server: len(server.workers()) == workers,
        metrics_dir=metrics_dir,
    )
