"""Start and stop the gunicorn servers under test, and the bench's PostgreSQL database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.workload import ROOT, SignedRequest

GUNICORN_CONF = ROOT / "gunicorn.conf.py"
# Variables the app reads: a developer's own shell must not change what the bench measures.
_APP_PREFIXES = ("PLIVO_", "AGENT_", "BENCH_")
_APP_VARIABLES = (
    "PUBLIC_BASE_URL",
    "TRUSTED_PROXY_COUNT",
    "DATABASE_URL",
    "VOICE_CONFIG",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "NONCE_TTL_SECONDS",
    "HANDOFF_TOKEN_TTL_SECONDS",
    "MAX_CONTENT_LENGTH",
    "LOG_LEVEL",
    "AUTO_MIGRATE",
    "METRICS_TOKEN",
    "METRICS_TOKEN_FILE",
    "METRICS_BIND",
    "MONITOR_PASSWORD_HASH",
    "MONITOR_PASSWORD_HASH_FILE",
    "RETENTION_DAYS",
    "PROMETHEUS_MULTIPROC_DIR",
    "BIND",
    "PORT",
    "WEB_CONCURRENCY",
    "GUNICORN_CMD_ARGS",
)


def free_port() -> int:
    """Return a loopback TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environ() -> dict[str, str]:
    """Return this process's environment without anything the app or gunicorn would read."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in _APP_VARIABLES and not k.startswith(_APP_PREFIXES)
    }


@dataclass
class Server:
    """One gunicorn master (and its workers) in its own process group."""

    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        """Return the server's loopback base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the server's log (gunicorn and app output)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop gunicorn gracefully, then kill its whole process group if it lingers."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray workers, if any
        except ProcessLookupError:
            pass
        self.proc.wait()


def start_gunicorn(name: str, app: str, env: dict[str, str], workdir: Path, workers: int) -> Server:
    """Start `gunicorn -c gunicorn.conf.py APP` on a free loopback port in `workdir`.

    `workdir` holds no .env, so only `env` configures the app; the repository is put on the
    Python path instead of being the working directory.
    """
    port = free_port()
    log = workdir / f"{name}.log"
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    metrics_dir = workdir / f"metrics-{name}"
    full_env = {
        **clean_environ(),
        **env,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    command = [gunicorn, "-c", str(GUNICORN_CONF), "--pythonpath", str(ROOT), app]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, port, log, proc)


def wait_ready(server: Server, timeout: float = 60.0) -> None:
    """Wait until GET /healthz answers 200; raise with the server's log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name}: gunicorn exited\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name}: not ready after {timeout:.0f} s\n{server.log_tail()}")


def post(server: Server, request: SignedRequest) -> tuple[int, bytes]:
    """Send one signed request; return status and body."""
    call = urllib.request.Request(
        server.url + request.path,
        data=request.body.encode(),
        headers=request.headers(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(call, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def postgres_reachable(admin_url: str) -> str | None:
    """Return None when PostgreSQL answers at `admin_url`, else the reason it does not."""
    import psycopg

    try:
        with psycopg.connect(admin_url, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


_DROP = "DROP DATABASE IF EXISTS {} WITH (FORCE)"


def recreate_database(admin_url: str, name: str) -> None:
    """Drop (forcing out sessions) and create database `name`."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name` if it exists."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_url(admin_url: str, name: str) -> str:
    """Return `admin_url` pointing at database `name` instead."""
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)
