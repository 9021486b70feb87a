"""Where a timed run's CPU went: the server's processes, PostgreSQL's, and the whole machine.

Read from /proc before and after the run (Linux only; elsewhere nothing is printed). The
server is the gunicorn master and its workers; the database is every process named
`postgres` (the server's backends, its WAL writer and checkpointer: on this machine only the
bench uses it while it runs). The machine's figures are busy time across all CPUs, and steal,
the time the hypervisor gave the CPUs to other guests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class Sample:
    """Cumulative CPU seconds at one moment."""

    server: float
    database: float
    machine_busy: float
    machine_steal: float


@dataclass(frozen=True)
class Use:
    """A run's CPU, in milliseconds per answered request, and the machine's steal share."""

    server_ms: float
    database_ms: float
    machine_ms: float
    steal: float


def _tick() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def _process_seconds(pid: int) -> tuple[str, int, float] | None:
    """(name, parent pid, user + system seconds) of `pid`, or None when it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / _tick()


def sample(server_pid: int) -> Sample | None:
    """Read the counters now; None where /proc is not Linux's."""
    try:
        cpu = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(value) for value in cpu]
    idle, iowait, steal = ticks[3], ticks[4], ticks[7] if len(ticks) > 7 else 0
    busy = sum(ticks[:8]) - idle - iowait - steal
    server = database = 0.0
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        found = _process_seconds(int(entry.name))
        if found is None:
            continue
        name, parent, seconds = found
        if int(entry.name) == server_pid or parent == server_pid:
            server += seconds
        elif name == "postgres":
            database += seconds
    return Sample(server, database, busy / _tick(), steal / _tick())


def use(before: Sample | None, after: Sample | None, requests: int) -> Use | None:
    """The CPU spent between two samples, per request; None without both or any request.

    A worker that exited in between takes its seconds with it: gunicorn's workers live for the
    whole run here (no max_requests), so none does.
    """
    if before is None or after is None or requests <= 0:
        return None
    spent = after.machine_busy - before.machine_busy
    stolen = after.machine_steal - before.machine_steal
    return Use(
        server_ms=(after.server - before.server) / requests * 1e3,
        database_ms=(after.database - before.database) / requests * 1e3,
        machine_ms=spent / requests * 1e3,
        steal=stolen / (spent + stolen) if spent + stolen > 0 else 0.0,
    )
