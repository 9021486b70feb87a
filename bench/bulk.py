"""Flat as data grows: fill the store like two busy months, then time the calls and the reads.

`python -m bench.bulk` loads 1,000,000 call events and 200,000 hangups (spread evenly over the
last 60 days, so the retention purge has 30 days of rows to delete) into a fresh SQLite file
and, when it answers, a fresh PostgreSQL database; SQLite by executemany in one transaction,
PostgreSQL by COPY. On each it prints, beside the same figures on an empty store: in-process µs
per call of the callback routes (bench.inprocess), then the time of `sipguard report
auth-failures --since 24h`, of GET /monitor (signed in), of GET /api/v1/groups, and of the
retention purge (`sipguard db purge-events`, 30 days). Goal: page and report under 1 s.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench import inprocess, servers
from sipguard.calls.causes import INBOUND_AUTH_FAILED_CODE, SIP_AUTH_FAILED, SIP_AUTH_TIMEOUT
from sipguard.store import Store, call_events, hangups, now_utc
from sipguard.store.database import Prepared

DATABASE_NAME = "sipguard_bench_bulk"
SPAN = timedelta(days=60)
RETENTION = timedelta(days=30)
# TEST-NET-3, addresses no network routes: https://www.rfc-editor.org/rfc/rfc5737
_SOURCES = [f"203.0.113.{n}" for n in range(1, 201)]
_USERS = [f"ext{n:03d}" for n in range(300)]
_EVENT_COLUMNS = tuple(c.key for c in call_events.columns if c.key != "id")
_HANGUP_COLUMNS = tuple(c.key for c in hangups.columns)


def _events(count: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """A contact centre's decisions: answers, Dial actions (1 % failing SIP auth), handoffs."""
    now = now_utc()
    step = SPAN / count
    for i in range(count):
        at = now - SPAN + step * i
        kind = i % 10
        call = f"bulk-{i:08d}"
        row: dict[str, Any] = dict.fromkeys(_EVENT_COLUMNS)
        row.update(received_at=at, call_uuid=call)
        if kind < 5:
            row.update(
                route="answer",
                decision="dial:support",
                rule="contact-centre-pbx",
                from_number=f"sip:{rng.choice(_USERS)}@pbx.example.com",
                to_number="sip:20372631212782780@app.plivo.com",
                sip_auth_type="ip_acl_and_credential",
                sip_auth_user=rng.choice(_USERS),
                sip_source_ip=rng.choice(_SOURCES),
                group_name="support",
            )
        elif kind < 9:
            failed = rng.random() < 0.01
            cause = rng.choice((SIP_AUTH_FAILED, SIP_AUTH_TIMEOUT)) if failed else None
            row.update(
                route="dial_action",
                decision="completed" if not failed else "fallback:voicemail",
                reason=cause or "completed",
                group_name="support",
                attempt=0,
                dial_status="completed" if not failed else "failed",
                dial_hangup_cause=("4240" if cause == SIP_AUTH_FAILED else "4250")
                if failed
                else "NORMAL_CLEARING",
                auth_failure=cause,
                a_leg_uuid=call,
                b_leg_uuid=call + "-b",
            )
        else:
            row.update(route="handoff", decision="dial:support", group_name="support", attempt=0)
        yield row


def _hangups(count: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Calls ending: 3 % refused by SIP auth (4210), from a few noisy sources."""
    now = now_utc()
    step = SPAN / count
    for i in range(count):
        failed = rng.random() < 0.03
        yield {
            "call_uuid": f"bulk-hangup-{i:08d}",
            "received_at": now - SPAN + step * i,
            "call_status": "completed",
            "direction": "inbound",
            "from_number": f"sip:{rng.choice(_USERS)}@pbx.example.com",
            "to_number": "sip:20372631212782780@app.plivo.com",
            "hangup_cause": "NORMAL_CLEARING" if not failed else "SIP_AUTH_FAILED",
            "hangup_cause_name": "Normal Hangup" if not failed else "SIP Auth Failed",
            "hangup_cause_code": 4000 if not failed else INBOUND_AUTH_FAILED_CODE,
            "hangup_source": "Caller",
            "duration": rng.randrange(5, 600),
            "bill_duration": 60,
            "sip_auth_type": "ip_acl_and_credential",
            "sip_auth_user": rng.choice(_USERS),
            "sip_source_ip": rng.choice(_SOURCES[:20] if failed else _SOURCES),
            "auth_failure": SIP_AUTH_FAILED if failed else None,
        }


def load(store: Store, events: int, hangup_count: int, rng_seed: int = 14) -> float:
    """Fill `store` (migrated, empty) in one transaction per table; return the seconds taken.

    The rows come from `random.Random(rng_seed)`: every run loads the same ones."""
    rng = random.Random(rng_seed)
    started = time.perf_counter()
    for table, columns, rows in (
        (call_events, _EVENT_COLUMNS, _events(events, rng)),
        (hangups, _HANGUP_COLUMNS, _hangups(hangup_count, rng)),
    ):
        raw = store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            if store.dialect == "postgresql":
                # The store's 5 s statement timeout is for callbacks, not for a bulk load.
                cursor.execute("SET LOCAL statement_timeout = 0")
                with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(tuple(row[c] for c in columns))
            else:
                prepared = Prepared(insert(table), store.engine.dialect, columns)
                while chunk := [prepared.params(row) for row in islice(rows, 50_000)]:
                    cursor.executemany(prepared.sql, chunk)
            raw.commit()
            if store.dialect == "postgresql":
                cursor.execute("SET LOCAL statement_timeout = 0")
                cursor.execute(f"ANALYZE {table.name}")
                raw.commit()
        finally:
            raw.close()
    return time.perf_counter() - started


def _seconds(work: Callable[[], Any], repeat: int = 3) -> float:
    """Return the best of `repeat` runs of `work`, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def time_reads(bench: inprocess.Workbench) -> dict[str, float]:
    """Time the report, the monitor page and the groups list on `bench`'s store."""
    app = bench.flask_app
    runner = app.test_cli_runner()

    def report() -> None:
        result = runner.invoke(args=["report", "auth-failures", "--since", "24h"])
        if result.exit_code != 0:
            raise RuntimeError(f"report failed: {result.output[-300:]}")

    client = app.test_client()
    page = client.get("/monitor/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    if csrf is None:
        raise RuntimeError("no CSRF field on the login page")
    signed_in = client.post(
        "/monitor/login", data={"csrf": csrf.group(1), "password": inprocess.MONITOR_PASSWORD}
    )
    if signed_in.status_code != 302:
        raise RuntimeError(f"monitor login answered {signed_in.status_code}")

    def monitor() -> None:
        if client.get("/monitor").status_code != 200:
            raise RuntimeError("GET /monitor failed")

    api = app.test_client()
    bearer = {"Authorization": f"Bearer {bench.api_token}"}

    def groups() -> None:
        if api.get("/api/v1/groups", headers=bearer).status_code != 200:
            raise RuntimeError("GET /api/v1/groups failed")

    return {
        "report auth-failures --since 24h": _seconds(report),
        "GET /monitor": _seconds(monitor),
        "GET /api/v1/groups": _seconds(groups),
    }


def run(
    name: str,
    url: str,
    events: int,
    hangup_count: int,
    calls: int,
    callgrind: bool,
    admin_url: str = servers.DEFAULT_ADMIN_URL,
) -> None:
    """Print the per-call and read figures on an empty store and on a filled one (`admin_url`:
    the PostgreSQL server that recreates the database between the two)."""
    workdir = Path(tempfile.mkdtemp(prefix="sipguard-bulk-"))
    try:
        figures: dict[str, dict[str, float]] = {}
        for phase in ("empty", "filled"):
            store = Store(url)
            store.upgrade()
            if phase == "filled":
                loaded = load(store, events, hangup_count)
                print(f"  {name}: {events:,} events + {hangup_count:,} hangups in {loaded:.1f} s")
            store.dispose()
            bench = inprocess.Workbench(workdir, url)
            try:
                us = inprocess.time_routes(bench, inprocess.ROUTES[1:], calls=calls, repeat=3)
                reads = time_reads(bench)
                purge = _seconds(partial(bench.store.purge_events, RETENTION), repeat=1)
            finally:
                bench.close()
            figures[phase] = {**{f"/{k} µs": v for k, v in us.items()}}
            if callgrind and inprocess.valgrind() is not None:
                counted = inprocess.count_instructions(
                    routes=("answer", "dial-action", "hangup"), database_url=url
                )
                figures[phase].update({f"/{k} instructions": v for k, v in counted.items()})
            figures[phase].update({f"{k} ms": v * 1000 for k, v in reads.items()})
            figures[phase]["purge-events (30 days) ms"] = purge * 1000
            _reset(name, url, admin_url)
        print(f"\n{name}: {'figure':<40} {'empty':>12} {'filled':>12} {'ratio':>7}")
        for key, empty in figures["empty"].items():
            filled = figures["filled"][key]
            ratio = f"{filled / empty:6.2f}x" if empty else "    n/a"
            print(f"  {key:<46} {empty:>12,.1f} {filled:>12,.1f} {ratio}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _reset(name: str, url: str, admin_url: str) -> None:
    """Start the next phase on an empty database."""
    if name == "SQLite":
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        servers.recreate_database(admin_url, DATABASE_NAME)


def main(argv: list[str]) -> int:
    """`python -m bench.bulk`: the figures on SQLite, then PostgreSQL when it answers."""
    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hangups", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=200, help="calls per timed batch")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--postgres-admin-url", default=servers.DEFAULT_ADMIN_URL)
    parser.add_argument(
        "--no-callgrind", action="store_true", help="µs only (noisy on a busy machine)"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sipguard-bulk-db-"))
    try:
        run(
            "SQLite",
            f"sqlite:///{workdir / 'bulk.db'}",
            args.events,
            args.hangups,
            args.calls,
            not args.no_callgrind,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    admin = args.postgres_admin_url
    if args.no_postgres or servers.postgres_reachable(admin) is not None:
        return 0
    servers.recreate_database(admin, DATABASE_NAME)
    try:
        url = servers.database_url(admin, DATABASE_NAME)
        run("PostgreSQL", url, args.events, args.hangups, args.calls, not args.no_callgrind, admin)
    finally:
        servers.drop_database(admin, DATABASE_NAME)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
