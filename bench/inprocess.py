"""In-process cost per call: each route's WSGI app called directly, against the bare app.

No server and no socket: a werkzeug environ, built beforehand, goes straight into the app's
`wsgi_app` and the body is read to the end. Two figures per route:

- µs per call, best of a few timed batches (moves with whatever else the machine runs);
- instructions per call under `valgrind --tool=callgrind`, the steady figure. One valgrind run
  plays every route in turn; before each phase the child calls `sys.getswitchinterval`, a
  builtin nothing else on these paths calls, and callgrind dumps its counters on entering it
  (`--dump-before=sys_getswitchinterval`). Each phase's dump then holds exactly that phase's
  instructions: warm-up calls (caches, compiled statements, first connections) fall in their
  own phase and are thrown away, and start-up is never counted. Prepared requests are frozen
  out of the garbage collector's sight first (see `_settle`).

The app runs on SQLite in a temporary directory with the sample voice config, like (c). Plivo's
Transfer for `POST /api/v1/handoffs` is answered in-process by `responses`, so the figure
includes that mock's cost but no network.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.test import EnvironBuilder

from bench import workload
from sipguard import logs

# The phases, in the order the callgrind child plays them. "bare" is scenario (a)'s app.
ROUTES = ("bare", "answer", "dial-action", "hangup", "handoffs")
AUTH_ID = "MABENCHAUTHID0000001"
PLIVO_API_URL = "https://plivo-api.bench.example"
_MARKER = sys.getswitchinterval  # callgrind dumps before each call (see the docstring)
_MARKER_SYMBOL = "sys_getswitchinterval"
MONITOR_PASSWORD = "bench-monitor-password"
WSGI = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class RouteCost:
    """One route's in-process cost, and its ratio to the bare app's."""

    route: str
    us: float | None = None
    instructions: float | None = None


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    if not status.startswith("2"):
        raise RuntimeError(f"in-process request answered {status}")


def call(app: WSGI, environ: dict[str, Any]) -> None:
    """Run one request through `app` and read its whole body."""
    body = app(environ, _start_response)
    for _ in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()


def _environ(path: str, headers: dict[str, str], body: str | bytes) -> dict[str, Any]:
    builder = EnvironBuilder(
        path=path,
        method="POST",
        headers=list(headers.items()),
        data=body,
        base_url="http://127.0.0.1/",
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


class Workbench:
    """The apps and the requests each phase sends, in one temporary directory."""

    def __init__(self, workdir: Path, database_url: str | None = None) -> None:
        """Build the apps; the real one on `database_url` (default: a new SQLite file)."""
        from werkzeug.security import generate_password_hash

        from app import create_app
        from bench.bare_app import create_app as create_bare

        self.token = workload.new_token()
        self.bare = create_bare().wsgi_app
        self.flask_app = create_app(
            {
                "PLIVO_AUTH_TOKEN": self.token,
                "PLIVO_AUTH_ID": AUTH_ID,
                "PLIVO_API_URL": PLIVO_API_URL,
                "SECRET_KEY": "bench-" + self.token + self.token,
                "PUBLIC_BASE_URL": workload.PUBLIC_BASE_URL,
                "VOICE_CONFIG": str(workload.VOICE_CONFIG),
                "DATABASE_URL": database_url or f"sqlite:///{workdir / 'inprocess.db'}",
                "MONITOR_PASSWORD_HASH": generate_password_hash(MONITOR_PASSWORD),
                **workload.AGENT_PASSWORDS,
            }
        )
        self.app = self.flask_app.wsgi_app
        # The log line is formatted and written as under gunicorn (INFO), to a sink, not a tty.
        self._sink = open(os.devnull, "w")  # noqa: SIM115 (closed by close())
        self._streams = [
            (handler, handler.setStream(self._sink))
            for handler in logging.getLogger(logs.LOGGER).handlers
            if isinstance(handler, logging.StreamHandler)
        ]
        self.store = self.flask_app.extensions["sipguard"].store
        self.api_token = self.store.create_api_key(f"bench-ai-{secrets.token_hex(4)}").token
        self._serial = 0

    def close(self) -> None:
        """Give the log handlers their streams back; close the store's connections."""
        for handler, stream in self._streams:
            handler.setStream(stream)
        self._sink.close()
        self.store.dispose()

    def _tag(self, route: str) -> str:
        self._serial += 1
        return f"{route}-{self._serial:04d}"

    def requests(self, route: str, count: int) -> list[dict[str, Any]]:
        """Return `count` fresh environs for `route`, each good once."""
        tag = self._tag(route)
        if route in ("bare", "answer", "hangup"):
            path_route = "hangup" if route == "hangup" else "answer"
            signed = workload.generate(self.token, path_route, count, tag)
            return [_environ(r.path, r.headers(), r.body) for r in signed]
        if route == "dial-action":
            path = "/dial-action?group=support&attempt=0"
            return [
                _environ(r.path, r.headers(), r.body)
                for r in (
                    workload.sign(self.token, path, _dial_action_form(f"{tag}-{i}"), f"{tag}n{i}")
                    for i in range(count)
                )
            ]
        headers = {"Authorization": f"Bearer {self.api_token}", "Content-Type": "application/json"}
        return [
            _environ(
                "/api/v1/handoffs",
                headers,
                json.dumps({"call_uuid": f"{tag}-{i:06d}", "group": "support"}),
            )
            for i in range(count)
        ]

    def app_for(self, route: str) -> WSGI:
        """Return the WSGI callable `route`'s requests go to."""
        return self.bare if route == "bare" else self.app


def _dial_action_form(call_uuid: str) -> dict[str, str]:
    return {
        "CallUUID": call_uuid,
        "DialALegUUID": call_uuid,
        "DialBLegUUID": call_uuid + "-b",
        "DialStatus": "completed",
        "DialHangupCause": "NORMAL_CLEARING",
        "DialAction": "hangup",
    }


@contextmanager
def plivo_transfer() -> Iterator[None]:
    """Answer every Transfer (POST …/Call/<uuid>/) in-process, as Plivo would."""
    import responses

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(
            re.compile(re.escape(f"{PLIVO_API_URL}/v1/Account/{AUTH_ID}/Call/") + r".+"),
            json={"message": "call transferred", "api_id": "bench-transfer"},
        )
        yield


def _settle() -> None:
    """Keep what was built beforehand out of the garbage collector's later full passes.

    A full collection walks every tracked object: without this, whichever phase happens to
    trigger one pays for the thousands of prepared requests (and the app), not for its calls.
    The collector stays on: the objects a call allocates are still collected, as in a server.
    """
    gc.collect()
    gc.freeze()


def _run(app: WSGI, environs: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for environ in environs:
        call(app, environ)
    return time.perf_counter() - started


def time_routes(
    bench: Workbench, routes: Iterable[str], *, calls: int = 300, repeat: int = 5
) -> dict[str, float]:
    """Return µs per call for each route: best of `repeat` batches of `calls`, after a warm-up."""
    found: dict[str, float] = {}
    with plivo_transfer():
        for route in routes:
            app = bench.app_for(route)
            _run(app, bench.requests(route, 50))
            batches = [bench.requests(route, calls) for _ in range(repeat)]
            _settle()
            found[route] = min(_run(app, batch) for batch in batches) / calls * 1e6
    return found


def _child(warmup: int, calls: int, routes: tuple[str, ...], database_url: str | None) -> None:
    """Under callgrind: per route, a warm-up phase then a measured phase, each marked."""
    workdir = Path(tempfile.mkdtemp(prefix="sipguard-callgrind-"))
    try:
        bench = Workbench(workdir, database_url)
        # Every request is built before the first mark, so no phase counts building one.
        phases = [(r, bench.requests(r, warmup), bench.requests(r, calls)) for r in routes]
        _settle()
        with plivo_transfer():
            for route, warm, measured in phases:
                app = bench.app_for(route)
                _MARKER()  # dump: what came before (set-up, the previous route's calls)
                for environ in warm:
                    call(app, environ)
                _MARKER()  # dump: this route's warm-up
                for environ in measured:
                    call(app, environ)
        _MARKER()  # dump: the last route's measured phase
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def valgrind() -> str | None:
    """Return valgrind's path, or None when it is not installed."""
    return shutil.which("valgrind")


def count_instructions(
    *,
    warmup: int = 20,
    calls: int = 100,
    routes: tuple[str, ...] = ROUTES,
    database_url: str | None = None,
) -> dict[str, float]:
    """Run the child under callgrind; return instructions per call for each route."""
    tool = valgrind()
    if tool is None:
        return {}
    outdir = Path(tempfile.mkdtemp(prefix="sipguard-callgrind-out-"))
    try:
        out = outdir / "callgrind.out"
        subprocess.run(
            [
                tool,
                "--tool=callgrind",
                f"--dump-before={_MARKER_SYMBOL}",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.inprocess",
                "--callgrind-child",
                f"--warmup={warmup}",
                f"--calls={calls}",
                f"--routes={','.join(routes)}",
                *([f"--database-url={database_url}"] if database_url else []),
            ],
            cwd=workload.ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=1800,
        )
        # Dump 1 is set-up; then, per route, its warm-up and its measured phase.
        parts = {int(p.suffix[1:]): _summary(p) for p in outdir.glob("callgrind.out.*")}
        return {
            route: parts[2 * i + 3] / calls for i, route in enumerate(routes) if 2 * i + 3 in parts
        }
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def _summary(path: Path) -> int:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"{path.name} has no summary line")


def measure(
    *, callgrind: bool = True, calls: int = 300, database_url: str | None = None
) -> list[RouteCost]:
    """Time every route in-process and (with valgrind) count its instructions."""
    workdir = Path(tempfile.mkdtemp(prefix="sipguard-inprocess-"))
    try:
        bench = Workbench(workdir, database_url)
        try:
            us = time_routes(bench, ROUTES, calls=calls)
        finally:
            bench.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    instructions = count_instructions(database_url=database_url) if callgrind else {}
    return [RouteCost(route, us.get(route), instructions.get(route)) for route in ROUTES]


def print_costs(costs: list[RouteCost]) -> None:
    """Print µs and instructions per call with their ratios to the bare app."""
    base = next(c for c in costs if c.route == "bare")
    print(
        f"{'in-process, per call':<24} {'µs':>8} {'vs bare':>8} {'instructions':>13} {'vs bare':>8}"
    )
    for c in costs:
        us = f"{c.us:8.1f}" if c.us is not None else f"{'n/a':>8}"
        us_ratio = f"{c.us / base.us:7.1f}x" if c.us and base.us else f"{'n/a':>8}"
        ins = f"{c.instructions:13,.0f}" if c.instructions else f"{'n/a':>13}"
        ins_ratio = (
            f"{c.instructions / base.instructions:7.1f}x"
            if c.instructions and base.instructions
            else f"{'n/a':>8}"
        )
        label = "bare app (a) /answer" if c.route == "bare" else f"/{c.route}"
        if c.route == "handoffs":
            label = "POST /api/v1/handoffs"
        print(f"{label:<24} {us} {us_ratio} {ins} {ins_ratio}")


def main(argv: list[str]) -> int:
    """`python -m bench.inprocess`: print the in-process table (or be the callgrind child)."""
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="calls per timed batch")
    parser.add_argument("--no-callgrind", action="store_true", help="µs only")
    parser.add_argument("--callgrind-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--routes", default=",".join(ROUTES), help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help="the store to run on (default: a new SQLite file)")
    args = parser.parse_args(argv)
    if args.callgrind_child:
        _child(args.warmup, args.calls, tuple(args.routes.split(",")), args.database_url)
        return 0
    costs = measure(
        callgrind=not args.no_callgrind, calls=args.calls, database_url=args.database_url
    )
    print_costs(costs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
