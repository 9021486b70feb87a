"""Auth-failure analytics over the event store, the same on SQLite and PostgreSQL.

Answers what Plivo's SIP-authentication page tells users to watch ("Monitor auth failures",
https://www.plivo.com/docs/voice/concepts/sip-authentication): sip_auth_failed /
sip_auth_timeout by source IP, SIP user and cause (4210 inbound; 4240 / 4250 towards an agent),
likely Plivo lockouts (lockout.py), SIP calls that arrived with no SIPAuthType (auth not
running), and refused signatures by reason.
Rows are read once per report and aggregated here; `MAX_ROWS` bounds a report's memory.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from sipguard.calls.causes import (
    INBOUND_AUTH_FAILED_CODE,
    OUTBOUND_AUTH_FAILED_CODE,
    OUTBOUND_AUTH_TIMEOUT_CODE,
    auth_failure_code,
)
from sipguard.calls.forms import dial_failure_code
from sipguard.calls.routing import AUTH_NOT_RUNNING
from sipguard.errors import ValidationError
from sipguard.monitoring import lockout
from sipguard.store import Store, call_events, hangups, signature_rejections

MAX_ROWS = 200_000
LOCKOUT_HISTORY = timedelta(hours=1)
MAX_SPAN = timedelta(days=366)
_SPAN = re.compile(r"(\d{1,6})([smhd])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_span(text: str) -> timedelta:
    """Parse a look-back like ``90s``, ``15m``, ``1h`` or ``7d``."""
    match = _SPAN.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValidationError("since", "must be a positive number with s, m, h or d (e.g. 1h)")
    span = timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})
    if span > MAX_SPAN:
        raise ValidationError("since", f"must be at most {MAX_SPAN.days} days")
    return span


@dataclass(frozen=True)
class Failure:
    """One SIP-auth failure, from a hangup (the call's) or a Dial action (an agent leg's)."""

    at: datetime
    call_uuid: str
    cause: str  # sip_auth_failed | sip_auth_timeout
    code: int  # 4210 inbound, 4240 / 4250 outbound
    source_ip: str | None = None
    sip_user: str | None = None
    group: str | None = None

    @property
    def label(self) -> str:
        """Cause and code, e.g. ``sip_auth_failed 4210 (inbound)``."""
        return f"{self.cause} {self.code} ({'inbound' if self.inbound else 'outbound'})"

    @property
    def inbound(self) -> bool:
        """Tell whether a caller failed Plivo's check (as opposed to an agent's PBX)."""
        return self.code == INBOUND_AUTH_FAILED_CODE


@dataclass(frozen=True)
class Count:
    """How many of something, and when the last one was."""

    key: str
    count: int
    last: datetime


@dataclass(frozen=True)
class NotRunning:
    """SIP calls whose answer_url request carried no SIPAuthType."""

    count: int
    last: datetime | None
    hint: str = AUTH_NOT_RUNNING


@dataclass
class Report:
    """Everything the report command, the page and the tests look at."""

    since: datetime
    until: datetime
    failures: list[Failure]
    by_ip: list[Count]
    by_user: list[Count]
    by_cause: list[Count]
    lockouts: list[lockout.Lockout]
    not_running: NotRunning
    rejections: list[Count]
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings other than lockouts

    def active_lockouts(self) -> list[lockout.Lockout]:
        """Return the lockouts still in force at the end of the window."""
        return [item for item in self.lockouts if item.active(self.until)]

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (times in ISO 8601, UTC)."""

        def counts(items: Sequence[Count]) -> list[dict[str, Any]]:
            return [{"key": c.key, "count": c.count, "last": _iso(c.last)} for c in items]

        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "total_failures": len(self.failures),
            "by_source_ip": counts(self.by_ip),
            "by_sip_user": counts(self.by_user),
            "by_cause": counts(self.by_cause),
            "lockouts": [
                {
                    "ip": item.ip,
                    "started": _iso(item.started),
                    "until": _iso(item.until),
                    "failures": item.failures,
                    "active": item.active(self.until),
                }
                for item in self.lockouts
            ],
            "auth_not_running": {
                "count": self.not_running.count,
                "last": _iso(self.not_running.last),
                "hint": self.not_running.hint,
            },
            "signature_rejections": counts(self.rejections),
            "warnings": self.warnings,
            "truncated": self.truncated,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def load_failures(store: Store, since: datetime, until: datetime) -> tuple[list[Failure], bool]:
    """Read auth failures from hangups and Dial actions in [since, until); say if truncated."""
    from_hangups = store.query(
        select(
            hangups.c.received_at,
            hangups.c.call_uuid,
            hangups.c.auth_failure,
            hangups.c.hangup_cause_code,
            hangups.c.direction,
            hangups.c.sip_source_ip,
            hangups.c.sip_auth_user,
        )
        .where(hangups.c.auth_failure.is_not(None))
        .where(hangups.c.received_at >= since, hangups.c.received_at < until)
        .order_by(hangups.c.received_at.desc())  # when there are too many, keep the newest
        .limit(MAX_ROWS + 1)
    )
    from_dials = store.query(
        select(
            call_events.c.received_at,
            call_events.c.call_uuid,
            call_events.c.auth_failure,
            call_events.c.dial_hangup_cause,
            call_events.c.group_name,
        )
        .where(call_events.c.auth_failure.is_not(None))
        .where(call_events.c.received_at >= since, call_events.c.received_at < until)
        .order_by(call_events.c.received_at.desc())
        .limit(MAX_ROWS + 1)
    )
    failures = [
        Failure(
            at=row["received_at"],
            call_uuid=row["call_uuid"],
            cause=row["auth_failure"],
            code=auth_failure_code(row["auth_failure"], row["hangup_cause_code"], row["direction"]),
            source_ip=row["sip_source_ip"],
            sip_user=row["sip_auth_user"],
        )
        for row in from_hangups
    ]
    for row in from_dials:
        code = dial_failure_code(row["auth_failure"], row["dial_hangup_cause"])
        failures.append(
            Failure(
                at=row["received_at"],
                call_uuid=row["call_uuid"],
                cause=row["auth_failure"],
                code=code,
                group=row["group_name"],
            )
        )
    truncated = len(from_hangups) > MAX_ROWS or len(from_dials) > MAX_ROWS
    failures.sort(key=lambda item: item.at)
    if truncated:
        failures = failures[-MAX_ROWS:]
    return failures, truncated


def _counts(pairs: Iterable[tuple[str | None, datetime]]) -> list[Count]:
    totals: Counter[str] = Counter()
    last: dict[str, datetime] = {}
    for key, at in pairs:
        if key is None:
            continue
        totals[key] += 1
        last[key] = max(at, last.get(key, at))
    return [Count(key, n, last[key]) for key, n in totals.most_common()]


def report(store: Store, since: datetime, until: datetime) -> Report:
    """Build the auth-failure report for [since, until) (naive UTC, the store's convention)."""
    # A lockout in force at `since` depends on earlier failures (and on earlier lockouts, whose
    # refused attempts do not count): replay the rule from LOCKOUT_HISTORY before the window.
    # Exact whenever an IP paused for 2 minutes within that hour, as any IP but a relentless
    # attacker does.
    failures, truncated = load_failures(store, since - LOCKOUT_HISTORY, until)
    inbound = [f for f in failures if f.inbound and f.source_ip]
    lockouts = [
        item
        for item in lockout.lockouts((f.source_ip or "", f.at) for f in inbound)
        if item.until > since
    ]
    failures = [f for f in failures if f.at >= since]
    not_running = store.query(
        select(func.count().label("n"), func.max(call_events.c.received_at).label("last"))
        .where(call_events.c.route == "answer", call_events.c.reason == AUTH_NOT_RUNNING)
        .where(call_events.c.received_at >= since, call_events.c.received_at < until)
    )[0]
    rejected = store.query(
        select(
            signature_rejections.c.reason,
            func.sum(signature_rejections.c["count"]).label("n"),
            func.max(signature_rejections.c.minute).label("last"),
        )
        # Counts are per minute: the minute `since` falls in is included whole.
        .where(
            signature_rejections.c.minute >= since.replace(second=0, microsecond=0),
            signature_rejections.c.minute < until,
        )
        .group_by(signature_rejections.c.reason)
        .order_by(func.sum(signature_rejections.c["count"]).desc())
    )
    result = Report(
        since=since,
        until=until,
        failures=failures,
        by_ip=_counts((f.source_ip, f.at) for f in failures if f.inbound),
        by_user=_counts((f.sip_user, f.at) for f in failures if f.inbound),
        by_cause=_counts((f.label, f.at) for f in failures),
        lockouts=lockouts,
        not_running=NotRunning(int(not_running["n"] or 0), not_running["last"]),
        rejections=[Count(r["reason"], int(r["n"]), r["last"]) for r in rejected],
        truncated=truncated,
    )
    result.warnings = warnings(result)
    result.notes = notes(result)
    return result


def warnings(result: Report) -> list[str]:
    """Say in words what the numbers suggest is misconfigured or under attack."""
    return lockout_warnings(result) + notes(result)


def lockout_warnings(result: Report) -> list[str]:
    """One warning per source IP Plivo has probably locked out now."""
    return [
        f"{item.ip} is probably locked out by Plivo until {_iso(item.until)} "
        f"({item.failures} failed attempts within 60 s): all its calls get 403"
        for item in result.active_lockouts()
    ]


def notes(result: Report) -> list[str]:
    """The warnings other than lockouts (for views that list lockouts on their own)."""
    found = []
    if result.not_running.count:
        count = result.not_running.count
        found.append(f"{count} SIP call(s) arrived without SIPAuthType. {AUTH_NOT_RUNNING}")
    timeouts = sum(1 for f in result.failures if f.code == OUTBOUND_AUTH_TIMEOUT_CODE)
    if timeouts:
        found.append(
            f"{timeouts} agent leg(s) ended in sip_auth_timeout (4250): the agent PBX did not "
            "answer the digest exchange; check that it is reachable"
        )
    outbound = sum(1 for f in result.failures if f.code == OUTBOUND_AUTH_FAILED_CODE)
    if outbound:
        found.append(
            f"{outbound} agent leg(s) ended in sip_auth_failed (4240): an agent PBX rejected "
            "the credentials in the voice config"
        )
    mismatches = sum(c.count for c in result.rejections if "does not match" in c.key)
    if mismatches:
        found.append(
            f"{mismatches} callback(s) had a signature that did not match: if Plivo sent them, "
            "PUBLIC_BASE_URL or PLIVO_AUTH_TOKEN does not match what Plivo signs with"
        )
    if result.truncated:
        found.append(f"more than {MAX_ROWS} failures in the window: narrow it to see them all")
    return found


def timeline(
    failures: Sequence[Failure], since: datetime, until: datetime, buckets: int = 60
) -> tuple[timedelta, list[dict[str, int]]]:
    """Count inbound failures per source IP in `buckets` equal slices of [since, until)."""
    width = max((until - since) / buckets, timedelta(seconds=1))
    slices: list[dict[str, int]] = [{} for _ in range(buckets)]
    for failure in failures:
        if not failure.inbound or failure.at < since or failure.at >= until:
            continue
        index = min(int((failure.at - since) / width), buckets - 1)
        ip = failure.source_ip or "unknown"
        slices[index][ip] = slices[index].get(ip, 0) + 1
    return width, slices


def recent_calls(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """Return the latest routing decisions, newest first."""
    return store.query(select(call_events).order_by(call_events.c.id.desc()).limit(limit))


def recent_hangups(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """Return the latest call ends, newest first (inbound auth failures exist only here)."""
    query = select(hangups).order_by(hangups.c.received_at.desc(), hangups.c.call_uuid)
    return store.query(query.limit(limit))
