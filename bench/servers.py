"""The bench's gunicorn servers (through devtools.harness), requests, and PostgreSQL database."""

from __future__ import annotations

import os
from pathlib import Path

from bench.workload import SignedRequest
from devtools import harness
from devtools.harness import ROOT, Server, start_gunicorn
from sipguard.settings import environ_names

# Variables no table can list: the agent passwords a voice config names (password_env) and the
# bench's own.
_NAMED_BY_CONFIG = ("AGENT_", "BENCH_")
# The local PostgreSQL the bench creates its databases on (trust auth); --postgres-admin-url
# names another.
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def clean_environ() -> dict[str, str]:
    """Return this process's environment without anything the app or gunicorn would read.

    A developer's own shell must not change what the bench measures.
    """
    read = set(environ_names())
    return {
        k: v for k, v in os.environ.items() if k not in read and not k.startswith(_NAMED_BY_CONFIG)
    }


def start(name: str, app: str, env: dict[str, str], workdir: Path, workers: int) -> Server:
    """Start `gunicorn -c gunicorn.conf.py APP` on a free loopback port; wait for /healthz.

    Its log and metrics directory are in `workdir`. The real app runs there too (it holds no
    .env, so only `env` configures the app); the bench's own apps (`bench.*`) are modules of
    the repository, not of the installed project, so they run from its root, like the tests.
    """
    return start_gunicorn(
        name,
        env={**clean_environ(), **env},
        log=workdir / f"{name}.log",
        app=app,
        workers=workers,
        cwd=ROOT if app.startswith("bench.") else workdir,
        timeout=60.0,
    )


def post(server: Server, request: SignedRequest) -> tuple[int, bytes]:
    """Send one signed request; return status and body."""
    reply = harness.request(
        "POST", server.base + request.path, body=request.body, headers=request.headers()
    )
    return reply.status, reply.body


def postgres_reachable(admin_url: str) -> str | None:
    """Return None when PostgreSQL answers at `admin_url`, else the reason it does not."""
    import psycopg

    try:
        with psycopg.connect(admin_url, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


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
