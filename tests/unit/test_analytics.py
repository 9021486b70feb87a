"""analytics.report over a real Store on SQLite and PostgreSQL, with known answers.

Every row is written through Store.record / Store.count_rejection on a fake clock, the way the
webhooks write them, so the report reads exactly what the app stores.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Table, func, select

from sipguard.calls.forms import DialResult, Hangup
from sipguard.calls.routing import AUTH_NOT_RUNNING
from sipguard.monitoring import analytics
from sipguard.monitoring.lockout import Lockout, lockouts
from sipguard.store import CallEvent, Store, call_events, hangups, signature_rejections
from tests.support.queries import stored_events, stored_hangup

T0 = datetime(2024, 5, 1, 12, 0, 0)  # minute-aligned: `since` of most reports
HOUR = timedelta(hours=1)
TTL = timedelta(seconds=300)
IP_A = "203.0.113.10"
IP_B = "198.51.100.20"
IP_C = "192.0.2.30"
IPV6 = "2001:db8::7"
MISMATCH = "V3 signature does not match"
MISSING = "X-Plivo-Signature-V3-Nonce is missing"


def _s(seconds: float) -> datetime:
    """T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


class FakeClock:
    """A clock returning naive UTC datetimes; tests set `now` before each write."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Writer:
    """Write callbacks through the real Store API at chosen times."""

    def __init__(self, store: Store, clock: FakeClock) -> None:
        self.store = store
        self.clock = clock

    def _record(self, at: datetime, **kwargs: Any) -> None:
        self.clock.now = at
        self.store.record(nonce=uuid.uuid4().hex, nonce_ttl=TTL, **kwargs)

    def hangup(self, at: datetime, **fields: str) -> str:
        """Store a hangup callback whose form is a normal call's, overridden by `fields`."""
        form = {
            "CallUUID": str(uuid.uuid4()),
            "CallStatus": "completed",
            "Direction": "inbound",
            "From": "sip:caller@example.test",
            "To": "sip:12345678901234567890@app.plivo.com",
            "HangupCause": "NORMAL_CLEARING",
            "HangupCauseName": "Normal Hangup",
            "HangupCauseCode": "4000",
            "HangupSource": "Caller",
            "Duration": "0",
            "BillDuration": "0",
        }
        form.update(fields)
        record = Hangup.from_form({k: v for k, v in form.items() if v != ""})
        self._record(at, hangup=record)
        return record.call_uuid

    def inbound_failure(
        self, at: datetime, ip: str | None, user: str | None = None, **fields: str
    ) -> str:
        """A caller that failed Plivo's SIP auth: HangupCauseCode 4210."""
        values = {
            "HangupCause": "sip_auth_failed",
            "HangupCauseName": "sip_auth_failed",
            "HangupCauseCode": "4210",
            "HangupSource": "Plivo",
            "SIPSourceIP": ip or "",
            "SIPAuthUser": user or "",
            "SIPAuthType": "credential",
            **fields,
        }
        return self.hangup(at, **values)

    def dial_failure(self, at: datetime, cause: str, group: str = "support") -> None:
        """A Dial action whose agent leg ended with `cause` (DialHangupCause)."""
        result = DialResult.from_form(
            {"CallUUID": str(uuid.uuid4()), "DialStatus": "failed", "DialHangupCause": cause}
        )
        assert result.auth_failure is not None
        event = CallEvent(
            route="dial_action",
            call_uuid=result.call_uuid,
            decision=f"fallback:{group}",
            reason=result.auth_failure,
            group_name=group,
            attempt=0,
            dial_status=result.dial_status,
            dial_hangup_cause=result.dial_hangup_cause,
            auth_failure=result.auth_failure,
        )
        self._record(at, events=[event])

    def answer(self, at: datetime, reason: str | None, route: str = "answer") -> None:
        """An answer_url decision with `reason`."""
        event = CallEvent(
            route=route,
            call_uuid=str(uuid.uuid4()),
            decision="reject",
            rule="unauthenticated-sip",
            reason=reason,
            from_number="sip:caller@example.test",
            to_number="sip:+15551234567@app.plivo.com",
            sip_source_ip=IP_C,
        )
        self._record(at, events=[event])

    def rejection(self, at: datetime, reason: str, route: str = "answer", times: int = 1) -> None:
        """Count `times` refused callbacks at `at`."""
        self.clock.now = at
        for _ in range(times):
            self.store.count_rejection(route, reason)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[Store]:
    """A migrated Store on the parametrised backend, on the fake clock."""
    opened = Store(database_url, clock=clock, purge_every=timedelta(hours=1))
    opened.upgrade()
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def write(store: Store, clock: FakeClock) -> Writer:
    return Writer(store, clock)


def _counts(items: list[analytics.Count]) -> dict[str, tuple[int, datetime]]:
    return {item.key: (item.count, item.last) for item in items}


def _rows(store: Store, table: Table) -> int:
    return int(store.query(select(func.count().label("n")).select_from(table))[0]["n"])


# --- failures by source IP, SIP user and cause ---------------------------------------------


def _populate_failures(write: Writer) -> None:
    """A known mix of auth failures, other hangups and out-of-window rows (since T0, 1 h)."""
    # Inbound, HangupCauseCode 4210.
    write.inbound_failure(_s(100), IP_A, "alice")
    write.inbound_failure(_s(400), IP_A, "alice")
    write.inbound_failure(_s(700), IP_A, "mallory")
    write.inbound_failure(_s(200), IP_B, "bob")
    write.inbound_failure(_s(900), IPV6, "alice")
    # Inbound with only HangupCauseName=sip_auth_failed: the code is derived (4210).
    write.inbound_failure(
        _s(1000), IP_B, None, HangupCause="", HangupCauseCode="", Direction="inbound"
    )
    # Inbound with no source IP or user: counted by cause only.
    write.inbound_failure(_s(1100), None, None)
    # Outbound codes from hangups: 4240 and 4250, and a name-only sip_auth_failed (-> 4240).
    outbound = {"Direction": "outbound", "SIPSourceIP": IP_C, "SIPAuthUser": "agent1"}
    for at, name, code in ((300, "sip_auth_failed", "4240"), (500, "sip_auth_timeout", "4250")):
        write.hangup(
            _s(at), HangupCause=name, HangupCauseName=name, HangupCauseCode=code, **outbound
        )
    write.hangup(
        _s(600), HangupCause="", HangupCauseName="sip_auth_failed", HangupCauseCode="", **outbound
    )
    # Dial actions whose agent leg failed auth (a code, or a cause name).
    write.dial_failure(_s(800), "4240")
    write.dial_failure(_s(1200), "sip_auth_timeout")
    write.dial_failure(_s(1300), "sip_auth_failed", group="sales")
    # Not auth failures: never counted.
    write.hangup(_s(150), SIPSourceIP=IP_A, SIPAuthUser="alice")
    write.hangup(_s(160), Direction="outbound", SIPSourceIP=IP_C)
    # Outside [since, until): one second before, exactly at `until`, and after.
    write.inbound_failure(_s(-1), IP_A, "alice")
    write.inbound_failure(_s(-3000), IP_B, "bob")
    write.inbound_failure(_s(3600), IP_A, "alice")
    write.inbound_failure(_s(4000), IP_A, "alice")
    write.dial_failure(_s(-5), "4250")
    write.dial_failure(_s(3600), "4240")


@pytest.fixture
def populated(write: Writer) -> Writer:
    """The store filled by _populate_failures."""
    _populate_failures(write)
    return write


def test_failures_are_counted_by_source_ip_user_and_cause(populated: Writer, store: Store) -> None:
    result = analytics.report(store, T0, T0 + HOUR)

    assert _counts(result.by_ip) == {
        IP_A: (3, _s(700)),
        IP_B: (2, _s(1000)),
        IPV6: (1, _s(900)),
    }
    assert [item.key for item in result.by_ip] == [IP_A, IP_B, IPV6]  # most first
    assert _counts(result.by_user) == {
        "alice": (3, _s(900)),
        "mallory": (1, _s(700)),
        "bob": (1, _s(200)),
    }
    assert _counts(result.by_cause) == {
        "sip_auth_failed 4210 (inbound)": (7, _s(1100)),
        "sip_auth_failed 4240 (outbound)": (4, _s(1300)),
        "sip_auth_timeout 4250 (outbound)": (2, _s(1200)),
    }
    assert len(result.failures) == 13
    assert [f.at for f in result.failures] == sorted(f.at for f in result.failures)
    assert all(T0 <= f.at < T0 + HOUR for f in result.failures)
    assert sorted(f.group for f in result.failures if f.group) == ["sales", "support", "support"]
    assert result.lockouts == []
    assert result.not_running == analytics.NotRunning(0, None)
    assert result.rejections == []
    assert not result.truncated
    assert result.warnings == [
        "2 agent leg(s) ended in sip_auth_timeout (4250): the agent PBX did not answer the "
        "digest exchange; check that it is reachable",
        "4 agent leg(s) ended in sip_auth_failed (4240): an agent PBX rejected the credentials "
        "in the voice config",
    ]


def test_a_narrower_window_counts_only_its_own_failures(populated: Writer, store: Store) -> None:
    result = analytics.report(store, _s(400), _s(900))  # [400, 900): 900 itself is out
    assert _counts(result.by_ip) == {IP_A: (2, _s(700))}
    assert _counts(result.by_cause) == {
        "sip_auth_failed 4210 (inbound)": (2, _s(700)),
        "sip_auth_failed 4240 (outbound)": (2, _s(800)),
        "sip_auth_timeout 4250 (outbound)": (1, _s(500)),
    }


def test_non_auth_hangups_alone_give_an_empty_report(write: Writer, store: Store) -> None:
    for i in range(12):
        write.hangup(_s(i), SIPSourceIP=IP_A, SIPAuthUser="alice")
    write.hangup(
        _s(20), HangupCause="USER_BUSY", HangupCauseName="Busy Line", HangupCauseCode="3010"
    )
    result = analytics.report(store, T0, T0 + HOUR)
    assert result.failures == []
    assert result.by_ip == result.by_user == result.by_cause == []
    assert result.lockouts == []
    assert result.warnings == []


# --- likely lockouts ----------------------------------------------------------------------


def test_lockouts_need_ten_inbound_failures_from_one_ip_within_60_seconds(
    write: Writer, store: Store
) -> None:
    for i in range(9):  # 9 within 8 s: no lockout
        write.inbound_failure(_s(100 + i), IP_A, "alice")
    for i in range(10):  # 10 with the 1st and 10th 61 s apart: no lockout
        write.inbound_failure(_s(130 + i * 61 / 9), IP_C, "carol")
    for i in range(10):  # 10 outbound failures in 9 s: agent legs never lock anyone out
        write.hangup(_s(150 + i), HangupCauseCode="4240", Direction="outbound", SIPSourceIP=IPV6)
    for i in range(10):  # 10 within 9 s: lockout from the 10th
        write.inbound_failure(_s(200 + i), IP_B, "bob")

    until = _s(240)  # the lockout [209, 269) is still in force at the end of the window
    result = analytics.report(store, T0, until)
    assert len(result.failures) == 39
    assert result.lockouts == [Lockout(IP_B, _s(209), _s(269), 10)]
    assert result.active_lockouts() == result.lockouts
    assert [w for w in result.warnings if IP_B in w] == [
        f"{IP_B} is probably locked out by Plivo until 2024-05-01T12:04:29Z "
        "(10 failed attempts within 60 s): all its calls get 403"
    ]
    assert not any(ip in w for w in result.warnings for ip in (IP_A, IP_C, IPV6))

    later = analytics.report(store, T0, T0 + HOUR)
    assert later.lockouts == [Lockout(IP_B, _s(209), _s(269), 10)]
    assert later.active_lockouts() == []  # lifted before the window ended
    assert not any(IP_B in w for w in later.warnings)


def test_a_lockout_ending_exactly_at_until_is_not_active(write: Writer, store: Store) -> None:
    for i in range(10):
        write.inbound_failure(_s(i), IPV6, "alice")
    at_end = analytics.report(store, T0, _s(69))
    just_before = analytics.report(store, T0, _s(68))
    assert at_end.lockouts == just_before.lockouts == [Lockout(IPV6, _s(9), _s(69), 10)]
    assert at_end.active_lockouts() == []
    assert just_before.active_lockouts() == just_before.lockouts
    assert any(IPV6 in w for w in just_before.warnings)


def test_a_lockout_whose_failures_straddle_since_is_found(write: Writer, store: Store) -> None:
    for i in range(10):  # -20, -15, ..., +25: four before `since`
        write.inbound_failure(_s(-20 + 5 * i), IP_A, "alice")
    result = analytics.report(store, T0, _s(60))
    assert result.lockouts == [Lockout(IP_A, _s(25), _s(85), 10)]
    assert result.active_lockouts() == result.lockouts
    assert any(IP_A in w for w in result.warnings)
    # Only the failures inside the window are counted by IP.
    assert _counts(result.by_ip) == {IP_A: (6, _s(25))}


def test_a_lockout_that_ended_by_since_is_not_reported(write: Writer, store: Store) -> None:
    for _ in range(10):  # a burst at one instant, 60 s before T0: lockout [-60, 0)
        write.inbound_failure(_s(-60), IP_A, "alice")
    assert analytics.report(store, T0, _s(100)).lockouts == []
    overlapping = analytics.report(store, _s(-1), _s(100))
    assert overlapping.lockouts == [Lockout(IP_A, _s(-60), T0, 10)]
    assert overlapping.active_lockouts() == []


def test_a_lockout_still_in_force_at_since_is_found_when_it_began_earlier(
    write: Writer, store: Store
) -> None:
    for i in range(10):  # -95, -90, ..., -50: Plivo locks IP_A out for [-50, +10)
        write.inbound_failure(_s(-95 + 5 * i), IP_A, "alice")
    result = analytics.report(store, T0, _s(5))
    # lockout.lockouts over the whole history, kept when it overlaps the window:
    history = [(IP_A, _s(-95 + 5 * i)) for i in range(10)]
    assert [item for item in lockouts(history) if item.until > T0] == [
        Lockout(IP_A, _s(-50), _s(10), 10)
    ]
    assert result.lockouts == [Lockout(IP_A, _s(-50), _s(10), 10)]
    assert result.active_lockouts() == result.lockouts


def test_attempts_refused_by_an_earlier_lockout_do_not_invent_a_new_one(
    write: Writer, store: Store
) -> None:
    for i in range(10):  # -100 .. -91: lockout [-91, -31)
        write.inbound_failure(_s(-100 + i), IP_A, "alice")
    for i in range(5):  # -50 .. -46: refused by that lockout, they do not count
        write.inbound_failure(_s(-50 + i), IP_A, "alice")
    for i in range(5):  # -10 .. -6: only 5 countable failures since the lockout lifted
        write.inbound_failure(_s(-10 + i), IP_A, "alice")
    result = analytics.report(store, T0, _s(10))
    # lockout.lockouts over the whole history finds only the first lockout, over by T0:
    history = [(IP_A, at["received_at"]) for at in store.query(select(hangups.c.received_at))]
    assert lockouts(history) == [Lockout(IP_A, _s(-91), _s(-31), 10)]
    assert result.lockouts == []
    assert result.active_lockouts() == []


# --- auth not running ---------------------------------------------------------------------


def test_sip_calls_without_sip_auth_are_counted_with_a_warning(write: Writer, store: Store) -> None:
    write.answer(_s(10), AUTH_NOT_RUNNING)
    write.answer(_s(70), AUTH_NOT_RUNNING)
    write.answer(_s(1800), AUTH_NOT_RUNNING)
    write.answer(_s(50), "sip-auth passed")  # another reason
    write.answer(_s(-1), AUTH_NOT_RUNNING)  # before the window
    write.answer(_s(3600), AUTH_NOT_RUNNING)  # at `until`: outside

    result = analytics.report(store, T0, T0 + HOUR)
    assert result.not_running == analytics.NotRunning(3, _s(1800))
    assert result.not_running.hint == AUTH_NOT_RUNNING
    assert result.warnings == [f"3 SIP call(s) arrived without SIPAuthType. {AUTH_NOT_RUNNING}"]
    assert result.failures == []

    empty = analytics.report(store, _s(2000), _s(3000))
    assert empty.not_running == analytics.NotRunning(0, None)
    assert empty.warnings == []


# --- refused signatures -------------------------------------------------------------------


def test_signature_rejections_are_summed_per_reason_within_the_window(
    write: Writer, store: Store
) -> None:
    write.rejection(_s(5), MISMATCH, times=3)
    write.rejection(_s(50), MISMATCH, route="hangup", times=1)
    write.rejection(_s(65), MISMATCH, times=2)  # the next minute
    write.rejection(_s(130), MISSING, times=4)
    write.rejection(_s(170), MISSING, route="dial_action", times=1)
    write.rejection(_s(-30), MISMATCH, times=7)  # minute before `since`
    write.rejection(_s(3600), MISSING, times=9)  # the minute at `until`
    assert _rows(store, signature_rejections) == 7

    result = analytics.report(store, T0, T0 + HOUR)
    assert _counts(result.rejections) == {MISMATCH: (6, _s(60)), MISSING: (5, _s(120))}
    assert [item.key for item in result.rejections] == [MISMATCH, MISSING]
    assert [w for w in result.warnings if "signature" in w] == [
        "6 callback(s) had a signature that did not match: if Plivo sent them, "
        "PUBLIC_BASE_URL or PLIVO_AUTH_TOKEN does not match what Plivo signs with"
    ]

    first_minute = analytics.report(store, T0, _s(60))
    assert _counts(first_minute.rejections) == {MISMATCH: (4, T0)}


# --- the JSON form ------------------------------------------------------------------------


def test_as_dict_is_json_and_its_totals_match(populated: Writer, store: Store) -> None:
    write = populated
    for i in range(10):
        write.inbound_failure(_s(3000 + i), IP_C, "carol")
    write.answer(_s(20), AUTH_NOT_RUNNING)
    write.rejection(_s(30), MISMATCH, times=2)

    result = analytics.report(store, T0, _s(3030))
    data = json.loads(json.dumps(result.as_dict()))

    assert data["since"] == "2024-05-01T12:00:00Z"
    assert data["until"] == "2024-05-01T12:50:30Z"
    assert data["total_failures"] == len(result.failures) == 23
    assert sum(item["count"] for item in data["by_cause"]) == data["total_failures"]
    inbound_with_ip = sum(1 for f in result.failures if f.inbound and f.source_ip)
    assert sum(item["count"] for item in data["by_source_ip"]) == inbound_with_ip == 16
    assert data["by_source_ip"][0] == {"key": IP_C, "count": 10, "last": "2024-05-01T12:50:09Z"}
    assert data["lockouts"] == [
        {
            "ip": IP_C,
            "started": "2024-05-01T12:50:09Z",
            "until": "2024-05-01T12:51:09Z",
            "failures": 10,
            "active": True,
        }
    ]
    assert data["auth_not_running"] == {
        "count": 1,
        "last": "2024-05-01T12:00:20Z",
        "hint": AUTH_NOT_RUNNING,
    }
    assert data["signature_rejections"] == [
        {"key": MISMATCH, "count": 2, "last": "2024-05-01T12:00:00Z"}
    ]
    assert data["warnings"] == result.warnings and len(result.warnings) == 5
    assert data["truncated"] is False


# --- the timeline -------------------------------------------------------------------------


def test_timeline_counts_add_up_to_the_inbound_failures(populated: Writer, store: Store) -> None:
    since, until = T0, T0 + HOUR
    result = analytics.report(store, since, until)
    width, slices = analytics.timeline(result.failures, since, until)

    assert width == timedelta(minutes=1)
    assert len(slices) == 60
    inbound = [f for f in result.failures if f.inbound]
    assert sum(n for bucket in slices for n in bucket.values()) == len(inbound) == 7
    per_ip: dict[str, int] = {}
    for bucket in slices:
        for ip, n in bucket.items():
            per_ip[ip] = per_ip.get(ip, 0) + n
    assert per_ip == {IP_A: 3, IP_B: 2, IPV6: 1, "unknown": 1}
    assert {item.key: item.count for item in result.by_ip} == {
        ip: n for ip, n in per_ip.items() if ip != "unknown"
    }
    # 100 s, 200 s and 400 s fall in minutes 1, 3 and 6.
    assert slices[1] == {IP_A: 1}
    assert slices[3] == {IP_B: 1}
    assert slices[6] == {IP_A: 1}


def test_timeline_of_a_short_window_uses_one_second_buckets(write: Writer, store: Store) -> None:
    for i in range(12):
        write.inbound_failure(_s(i * 2.5), IP_A, "alice")
    since, until = T0, _s(30)
    result = analytics.report(store, since, until)
    width, slices = analytics.timeline(result.failures, since, until, buckets=60)
    assert width == timedelta(seconds=1)
    assert sum(n for bucket in slices for n in bucket.values()) == 12
    assert slices[0] == slices[2] == slices[27] == {IP_A: 1}
    assert all(bucket == {} for bucket in slices[30:])


# --- retention ----------------------------------------------------------------------------


def test_purge_events_deletes_old_rows_and_keeps_newer_ones(
    write: Writer, store: Store, clock: FakeClock
) -> None:
    old, new = _s(0), _s(2 * 3600)
    write.answer(old, AUTH_NOT_RUNNING)
    write.dial_failure(old + timedelta(seconds=1), "4240")
    write.inbound_failure(old, IP_A, "alice")
    write.inbound_failure(old + timedelta(seconds=2), IP_B, "bob")
    write.hangup(old + timedelta(seconds=3))
    write.rejection(old, MISMATCH, times=3)
    write.rejection(old + timedelta(seconds=61), MISSING)

    keep_uuid = write.inbound_failure(new, IP_A, "alice")
    write.answer(new, AUTH_NOT_RUNNING)
    write.dial_failure(new, "sip_auth_timeout")
    write.rejection(new, MISMATCH, times=2)

    clock.now = new + timedelta(minutes=30)
    purged = store.purge_events(older_than=HOUR)  # cutoff: new - 30 min
    assert purged == {
        "call_events": 2,
        "hangups": 3,
        "signature_rejections": 2,
        "alerts": 0,
        "handoff_attempts": 0,
        "handoffs": 0,
        "webhook_outbox": 0,
    }

    assert _rows(store, call_events) == 2
    assert _rows(store, hangups) == 1
    assert _rows(store, signature_rejections) == 1
    assert stored_hangup(store, keep_uuid) is not None
    assert {e["received_at"] for e in stored_events(store)} == {new}

    everything = analytics.report(store, T0 - HOUR, new + HOUR)
    assert _counts(everything.by_ip) == {IP_A: (1, new)}
    assert everything.not_running == analytics.NotRunning(1, new)
    assert _counts(everything.rejections) == {MISMATCH: (2, new)}

    assert store.purge_events(older_than=HOUR) == {
        "call_events": 0,
        "hangups": 0,
        "signature_rejections": 0,
        "alerts": 0,
        "handoff_attempts": 0,
        "handoffs": 0,
        "webhook_outbox": 0,
    }


def test_a_truncated_report_keeps_the_newest_failures(
    write: Writer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a flood, what is happening now matters: the oldest rows are the ones dropped."""
    monkeypatch.setattr(analytics, "MAX_ROWS", 3)
    for i in range(5):
        write.hangup(
            _s(i * 10),
            HangupCauseName="sip_auth_failed",
            HangupCauseCode="4210",
            SIPSourceIP=IP_A,
        )
    result = analytics.report(store, T0, T0 + HOUR)
    assert result.truncated
    assert [f.at for f in result.failures] == [_s(20), _s(30), _s(40)]
    assert any("narrow it" in w for w in result.warnings)
