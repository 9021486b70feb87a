"""`make bench`: scenarios (a)-(e) side by side under one gunicorn configuration, then ratios.

Every server runs `gunicorn -c gunicorn.conf.py` with the same workers on a free loopback port;
scenarios run one after another, each with a warm-up then a timed run of pre-signed requests.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench import cpu, inprocess, loadgen, micro, servers, workload
from bench.loadgen import LoadResult

REPLAYABLE_POOL = 5000  # (a) and (b) do not track nonces: a pool this size is cycled
FALLBACK_RATE = 4000.0  # req/s assumed when sizing signed-request pools before (a) has run
# Steal above this share during a timed run (other guests running on the host's CPUs) makes its
# rate noise: seen here from 0 % to 46 % between two scenarios of one run.
STEAL_NOISE = 0.1
NO_WRITE_LABEL = "(c') app /answer, SQLite, no event write"
NO_WRITE_SWITCH = "not measured: the app has no switch to skip the event write"
NO_WRITE_WHY = (
    "(c') webhooks/persist.commit always calls Store.record, which claims the nonce and writes "
    "the event in one transaction; the bench does not patch the app"
)


@dataclass(frozen=True)
class Scenario:
    """One server configuration and the callbacks it is sent."""

    key: str
    title: str
    app: str
    route: str
    database: str | None = None  # "sqlite" or "postgresql" for the real app
    single_use: bool = True  # the server refuses a repeated nonce
    threaded: bool = False  # gthread workers with --pg-threads threads (WEB_THREADS)

    @property
    def base(self) -> str:
        """The bare-app scenario this one is compared with: the same worker configuration."""
        return "t" if self.threaded else "a"


SCENARIOS = (
    Scenario(
        "a",
        "bare Flask, constant Dial XML",
        "bench.bare_app:create_app()",
        "answer",
        single_use=False,
    ),
    Scenario(
        "b",
        "plivo SDK: validate_v3 + plivoxml",
        "bench.sdk_app:create_app()",
        "answer",
        single_use=False,
    ),
    Scenario("c", "app POST /answer, SQLite", "app:create_app()", "answer", "sqlite"),
    Scenario(
        "t",
        "bare Flask, gthread",
        "bench.bare_app:create_app()",
        "answer",
        single_use=False,
        threaded=True,
    ),
    Scenario(
        "d",
        "app POST /answer, PostgreSQL, gthread",
        "app:create_app()",
        "answer",
        "postgresql",
        threaded=True,
    ),
    Scenario(
        "e",
        "app POST /hangup, PostgreSQL, gthread",
        "app:create_app()",
        "hangup",
        "postgresql",
        threaded=True,
    ),
)
KEYS = "".join(s.key for s in SCENARIOS)


@dataclass
class Outcome:
    """What a scenario measured, and whether it can be trusted."""

    scenario: Scenario
    result: LoadResult | None = None
    problem: str | None = None
    same_xml: bool | None = None
    rows: int | None = None
    cpu: cpu.Use | None = None  # over the timed run


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per scenario")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (sync)")
    parser.add_argument("--scenarios", default=KEYS, help=f"subset of {KEYS}, in that order")
    parser.add_argument(
        "--pg-threads", type=int, default=8, help="threads per worker for (t), (d), (e)"
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--postgres-admin-url", default=servers.DEFAULT_ADMIN_URL)
    parser.add_argument("--database-name", default="sipguard_bench")
    parser.add_argument("--skip-micro", action="store_true", help="no in-process benchmarks")
    parser.add_argument(
        "--no-callgrind", action="store_true", help="in-process µs only, no instruction counts"
    )
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - {s.key for s in SCENARIOS}
    if unknown or not args.scenarios:
        parser.error(f"--scenarios takes letters from {KEYS}, got {args.scenarios!r}")
    return args


def _command(args: argparse.Namespace) -> str:
    options = [
        f"--duration {args.duration:g}",
        f"--warmup {args.warmup:g}",
        f"--connections {args.connections}",
        f"--threads {args.threads}",
        f"--workers {args.workers}",
        f"--scenarios {args.scenarios}",
        f"--pg-threads {args.pg_threads}",
        f"--loadgen {args.loadgen}",
    ]
    if args.postgres_admin_url != servers.DEFAULT_ADMIN_URL:
        options.append(f"--postgres-admin-url {shlex.quote(args.postgres_admin_url)}")
    if args.database_name != "sipguard_bench":
        options.append(f"--database-name {shlex.quote(args.database_name)}")
    if args.skip_micro:
        options.append("--skip-micro")
    if args.no_callgrind:
        options.append("--no-callgrind")
    root = shlex.quote(str(workload.ROOT))
    return f"cd {root} && .venv/bin/python -m bench.run {' '.join(options)}"


class Terminated(Exception):
    """SIGTERM arrived: unwind like Ctrl-C so every `finally` stops what it started."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def _cleanup(live: list[servers.Server], wrks: list[subprocess.Popen[str]]) -> Iterator[None]:
    """Stop every server and wrk this run started, whatever ends it (error, Ctrl-C, SIGTERM)."""
    try:
        yield
    finally:
        for proc in list(wrks):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for server in list(live):
            server.stop()


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def _pool_size(rate: float, seconds: float) -> int:
    """Signed requests to generate for `seconds` at up to `rate` req/s, with margin."""
    return math.ceil(rate * 1.3 * seconds) + 1000


def _requests(
    token: str, scenario: Scenario, count: int, phase: str
) -> list[workload.SignedRequest]:
    """Sign the requests of one run; servers that accept replays get a small pool to cycle."""
    if not scenario.single_use:
        count = min(count, REPLAYABLE_POOL)
    return workload.generate(token, scenario.route, count, f"{scenario.key}{phase}")


def _drive(
    args: argparse.Namespace,
    wrk: str | None,
    server: servers.Server,
    requests: list[workload.SignedRequest],
    path: Path,
    seconds: float,
    wrks: list[subprocess.Popen[str]],
) -> LoadResult:
    if wrk is None:
        return loadgen.run_python(
            server.port, requests, seconds=seconds, connections=args.connections
        )
    workload.write(requests, path)
    return loadgen.run_wrk(
        wrk,
        server.base,
        path,
        seconds=seconds,
        connections=args.connections,
        threads=args.threads,
        track=wrks,
    )


def _check(result: LoadResult, scenario: Scenario, phase: str) -> str | None:
    """Return why a run cannot be trusted, or None."""
    if result.non2xx:
        return f"{phase}: {result.non2xx} non-2xx responses (last status {result.last_bad_status})"
    if result.reused and scenario.single_use:
        return f"{phase}: ran out of signed requests (nonces repeated); raise the pool margin"
    if result.socket_errors:
        return f"{phase}: {result.socket_errors} socket errors/timeouts"
    if result.requests == 0:
        return f"{phase}: no request completed"
    return None


def _count_rows(database_url: str, route: str) -> int:
    from sqlalchemy import create_engine, func, select

    from sipguard.store import call_events, hangups, normalise_url

    table = hangups if route == "hangup" else call_events
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def _run_scenario(
    args: argparse.Namespace,
    scenario: Scenario,
    wrk: str | None,
    workdir: Path,
    token: str,
    rate_cap: float,
    live: list[servers.Server],
    wrks: list[subprocess.Popen[str]],
) -> Outcome:
    outcome = Outcome(scenario)
    env = {"BENCH_AUTH_TOKEN": token}
    database_url = None
    if scenario.database == "sqlite":
        database_url = f"sqlite:///{workdir / f'{scenario.key}.db'}"
    elif scenario.database == "postgresql":
        servers.recreate_database(args.postgres_admin_url, args.database_name)
        database_url = servers.database_url(args.postgres_admin_url, args.database_name)
    if database_url is not None:
        env = {
            "PLIVO_AUTH_TOKEN": token,
            "SECRET_KEY": "bench-" + token + token,
            "PUBLIC_BASE_URL": workload.PUBLIC_BASE_URL,
            "VOICE_CONFIG": str(workload.VOICE_CONFIG),
            "DATABASE_URL": database_url,
            **workload.AGENT_PASSWORDS,
        }
    if scenario.threaded:
        env["WEB_THREADS"] = str(args.pg_threads)
    server = servers.start(scenario.key, scenario.app, env, workdir, args.workers)
    live.append(server)
    try:
        probe = workload.generate(token, scenario.route, 1, f"{scenario.key}probe")[0]
        status, body = servers.post(server, probe)
        if status != 200:
            outcome.problem = f"probe request answered {status}: {body[:200]!r}"
            return outcome
        if scenario.route == "answer":
            outcome.same_xml = micro.tree(body) == micro.tree(micro.our_dial())
        warm = _requests(token, scenario, _pool_size(rate_cap, args.warmup), "w")
        print(
            f"  ({scenario.key}) {scenario.title}: warm-up {args.warmup:g} s, "
            f"timed {args.duration:g} s ...",
            flush=True,
        )
        warmed = _drive(args, wrk, server, warm, workdir / "warm.txt", args.warmup, wrks)
        outcome.problem = _check(warmed, scenario, "warm-up")
        # Sized from this server's own warm-up rate (twice it), never above the (a)-based cap.
        needed = math.ceil(max(warmed.rate, 1.0) * 2 * args.duration) + 2000
        timed = _requests(token, scenario, min(needed, _pool_size(rate_cap, args.duration)), "m")
        before = cpu.sample(server.process.pid)
        result = _drive(args, wrk, server, timed, workdir / "timed.txt", args.duration, wrks)
        outcome.cpu = cpu.use(before, cpu.sample(server.process.pid), result.requests)
        outcome.result = result
        outcome.problem = outcome.problem or _check(result, scenario, "timed run")
    finally:
        server.stop()
        live.remove(server)
    if database_url is not None and outcome.result is not None:
        outcome.rows = _count_rows(database_url, scenario.route)
        answered = 1 + warmed.requests + outcome.result.requests
        if outcome.rows < answered and outcome.problem is None:
            outcome.problem = f"only {outcome.rows} rows stored for {answered} answered requests"
    return outcome


def _print_table(outcomes: list[Outcome], no_write_note: bool) -> None:
    bases = {o.scenario.key: o for o in outcomes if o.scenario.key in "at" and o.result}
    header = (
        f"{'scenario':<42} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs base':>7} "
        f"{'requests':>9} {'non-2xx':>8} {'errors':>7}"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        label = f"({o.scenario.key}) {o.scenario.title}"
        r = o.result
        if r is None:
            print(f"{label:<42} {'failed: ' + (o.problem or '?')}")
            continue
        base = bases.get(o.scenario.base)
        ratio = f"{r.rate / base.result.rate:.2f}" if base and base.result else "n/a"
        print(
            f"{label:<42} {r.rate:>8.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {ratio:>7} "
            f"{r.requests:>9} {r.non2xx:>8} {r.socket_errors:>7}"
        )
        if o.scenario.key == "c" and no_write_note:
            print(f"{NO_WRITE_LABEL:<42} {NO_WRITE_SWITCH}")


def _print_cpu(outcomes: list[Outcome]) -> None:
    """Where each timed run's CPU went, per answered request (bench/cpu.py)."""
    if all(o.cpu is None for o in outcomes):
        return
    print(
        f"\nCPU per answered request, ms (from /proc over each timed run; database: every "
        f"process named postgres; with {os.cpu_count()} CPUs no rate above CPUs × 1000 / machine "
        "ms req/s can be reached; steal: the share of the CPUs' non-idle time the hypervisor "
        "gave other guests):"
    )
    header = f"{'scenario':<42} {'server':>8} {'database':>9} {'machine':>8} {'steal':>6}"
    print(header)
    print("-" * len(header))
    for o in outcomes:
        use = o.cpu
        if use is None:
            continue
        database = f"{use.database_ms:.3f}" if o.scenario.database == "postgresql" else "-"
        print(
            f"{'(' + o.scenario.key + ') ' + o.scenario.title:<42} {use.server_ms:>8.3f} "
            f"{database:>9} {use.machine_ms:>8.3f} {use.steal:>6.0%}"
        )
    stolen = [o.scenario.key for o in outcomes if o.cpu is not None and o.cpu.steal > STEAL_NOISE]
    if stolen:
        print(
            f"WARNING: steal passed {STEAL_NOISE:.0%} during ({'), ('.join(stolen)}): their "
            "rates, and the ratios with them, are noise; run again"
        )


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value >= target else "MISS"


def main(argv: list[str]) -> int:
    """Run the whole benchmark; return 0, 1 when its numbers cannot be trusted, 130 if stopped."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    except (KeyboardInterrupt, Terminated):
        print("\ninterrupted: the servers and wrk this run started are stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
    args = _arguments(argv)
    command = _command(args)
    print(f"reproduce with: {command}\n(or `make bench` for the defaults)\n", flush=True)
    wanted = [s for s in SCENARIOS if s.key in args.scenarios]
    wrk: str | None = None
    if args.loadgen != "python":
        wrk = loadgen.ensure_wrk()
        if wrk is None and args.loadgen == "wrk":
            print("wrk is not available and --loadgen wrk was asked for")
            return 1
    print(
        f"load generator: {wrk or 'Python closed-loop fallback (wrk not available)'}; "
        f"{args.connections} connections, {args.threads} threads; gunicorn -c gunicorn.conf.py, "
        f"{args.workers} workers (sync; (t), (d), (e): gthread, {args.pg_threads} threads each), "
        "127.0.0.1 only; base: (a) for sync, (t) for gthread",
        flush=True,
    )
    print(f"before: {_load()}\n", flush=True)
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print("WARNING: other processes are busy on this machine; the numbers will be noisy\n")
    if any(s.database == "postgresql" for s in wanted):
        reason = servers.postgres_reachable(args.postgres_admin_url)
        if reason is not None:
            print(
                f"PostgreSQL is unreachable at {args.postgres_admin_url} ({reason}): start it, "
                "pass --postgres-admin-url, or leave out d and e with --scenarios abc"
            )
            return 1

    xml_results = verify_result = None
    costs: list[inprocess.RouteCost] = []
    same_micro_xml = None
    if not args.skip_micro:
        print("micro-benchmarks (in-process, best of 5) ...", flush=True)
        xml_compact, xml_pretty, xml_ceiling, same_micro_xml = micro.xml()
        verify_result = micro.verify()
        xml_app = micro.app_dial()
        xml_results = (xml_compact, xml_pretty, xml_ceiling)
        print(
            "in-process cost per call (SQLite; instructions under callgrind, "
            f"{'skipped' if args.no_callgrind else 'about a minute'}) ...",
            flush=True,
        )
        costs = inprocess.measure(callgrind=not args.no_callgrind)

    workdir = Path(tempfile.mkdtemp(prefix="sipguard-bench-"))
    token = workload.new_token()
    outcomes: list[Outcome] = []
    live: list[servers.Server] = []
    wrks: list[subprocess.Popen[str]] = []
    started = time.monotonic()
    try:
        with _cleanup(live, wrks):
            rate_cap = FALLBACK_RATE
            bare_rates: list[float] = []
            for scenario in wanted:
                outcome = _run_scenario(args, scenario, wrk, workdir, token, rate_cap, live, wrks)
                outcomes.append(outcome)
                if scenario.key in "at" and outcome.result is not None:
                    # Nothing is faster than the bare app: size later pools from it.
                    bare_rates.append(outcome.result.rate)
                    rate_cap = max(max(bare_rates) * 1.2, 500.0)
            store_us: dict[str, float] = {}
            if not args.skip_micro:
                store_us["SQLite"] = micro.store_record_us(f"sqlite:///{workdir / 'micro.db'}")
                if any(s.database == "postgresql" for s in wanted):
                    servers.recreate_database(args.postgres_admin_url, args.database_name)
                    store_us["PostgreSQL"] = micro.store_record_us(
                        servers.database_url(args.postgres_admin_url, args.database_name)
                    )
    finally:
        if any(s.database == "postgresql" for s in wanted):
            servers.drop_database(args.postgres_admin_url, args.database_name)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nresults ({time.monotonic() - started:.0f} s of servers; after: {_load()}):\n")
    _print_table(outcomes, no_write_note="c" in args.scenarios)
    _print_cpu(outcomes)
    for o in outcomes:
        notes = []
        if o.same_xml is not None:
            notes.append("answered the bench's Dial XML" if o.same_xml else "XML DIFFERS from (a)")
        if o.rows is not None:
            notes.append(f"{o.rows} rows stored")
        if notes:
            print(f"  ({o.scenario.key}) " + "; ".join(notes))
        if o.scenario.key == "c":
            print(f"  {NO_WRITE_WHY}")

    by_key = {o.scenario.key: o for o in outcomes if o.result is not None}
    ratio_c = None
    if "a" in by_key and "c" in by_key:
        a, c = by_key["a"].result, by_key["c"].result
        assert a is not None and c is not None
        ratio_c = c.rate / a.rate
    print()
    _row("target", "measured", "target", "result")
    _row(
        "(c)/(a) req/s, answer-event write included",
        _fmt(ratio_c),
        ">= 0.6",
        _verdict(ratio_c, 0.6),
    )
    for key in "de":
        if "t" in by_key and key in by_key:
            t, x = by_key["t"].result, by_key[key].result
            assert t is not None and x is not None
            share = x.rate / t.rate
            _row(
                f"({key})/(t) req/s, PostgreSQL, gthread",
                _fmt(share),
                ">= 0.5",
                _verdict(share, 0.5),
            )
    _row(
        "(c')/(a) req/s, answer-event write excluded",
        "n/a",
        ">= 0.85",
        "n/a: the app has no way to exclude the write",
    )
    if xml_results is not None and verify_result is not None:
        compact, pretty, ceiling = xml_results
        _row(
            "XML: xml_builders+to_bytes vs plivoxml",
            _fmt(compact.speedup, "x"),
            ">= 3x",
            _verdict(compact.speedup, 3.0),
        )
        _row(
            "V3 verify: Keyring.verify vs validate_v3",
            _fmt(verify_result.speedup, "x"),
            ">= 2x",
            _verdict(verify_result.speedup, 2.0),
        )
        print("\nmicro-benchmarks (µs per call, in-process):")
        _row(
            "XML: the app's dial_group vs plivoxml",
            _fmt(xml_app.speedup, "x"),
            ">= 3x",
            _verdict(xml_app.speedup, 3.0),
        )
        for item in (compact, pretty, ceiling, xml_app, verify_result):
            print(
                f"  {item.name:<30} ours {item.ours_us:7.1f}   SDK {item.sdk_us:7.1f}   "
                f"SDK/ours {item.speedup:.2f}x"
            )
        print(f"  same XML from every builder: {'yes' if same_micro_xml else 'NO'}")
        print(
            "  (the ceiling is lxml building the same tree with no checks: the most any lxml "
            "builder can reach)"
        )
        for name, us in store_us.items():
            print(f"  Store.record (nonce + one answer event), {name}: {us:.0f} µs")
    if costs:
        print()
        inprocess.print_costs(costs)
        answer = next(c for c in costs if c.route == "answer")
        bare = next(c for c in costs if c.route == "bare")
        if answer.us and bare.us:
            timed = answer.us / bare.us
            _row("/answer in-process, µs vs bare", _fmt(timed, "x"), "<= 7x", _at_most(timed, 7.0))
        if answer.instructions and bare.instructions:
            ratio = answer.instructions / bare.instructions
            _row(
                "/answer in-process, instructions vs bare",
                _fmt(ratio, "x"),
                "<= 7x",
                _at_most(ratio, 7.0),
            )

    print(f"\nreproduce with: {command}")
    failed = [o for o in outcomes if o.problem is not None]
    if failed:
        print("\nBENCHMARK FAILED: these numbers cannot be trusted:", file=sys.stderr)
        for o in failed:
            print(f"  ({o.scenario.key}) {o.problem}", file=sys.stderr)
        return 1
    return 0


def _at_most(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


def _fmt(value: float | None, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:.2f}{suffix}"


def _row(label: str, measured: str, target: str, result: str) -> None:
    print(f"{label:<44} {measured:>9} {target:>8}  {result}")
