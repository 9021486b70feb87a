"""lockout.lockouts: Plivo's 10-failures-in-60-s rule as a pure function, with known answers.

The rule is Plivo's (https://www.plivo.com/docs/voice/concepts/sip-authentication, "Rate
Limiting"; docs/plivo.md, SIP authentication). Where that page is silent the module chooses, and
its choices are what is tested (docs/plivo.md, Where Plivo is silent, "Lockout window"): the 1st
and 10th failure must be < 60 s apart; the lockout runs [10th failure, +60 s); attempts refused
during a lockout do not count, and the count starts afresh once it lifts. A brute-force
reference written from those rules is compared against the module on generated inputs.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from sipguard.monitoring import lockout
from sipguard.monitoring.lockout import DURATION, THRESHOLD, WINDOW, Lockout, lockouts

T0 = datetime(2024, 5, 1, 12, 0, 0)
IP = "203.0.113.7"
OTHER_IP = "198.51.100.23"
IPV6 = "2001:db8::1"


def _s(seconds: float) -> datetime:
    """T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def _failures(ip: str, seconds: list[float]) -> list[tuple[str, datetime]]:
    """(ip, time) pairs for failures at T0 + each of `seconds`."""
    return [(ip, _s(second)) for second in seconds]


def _spread(count: int, span: float, start: float = 0.0) -> list[float]:
    """`count` offsets from `start` to `start + span`, evenly spaced (first and last included)."""
    return [start + span * i / (count - 1) for i in range(count)]


# --- the constants the rule is built on ---------------------------------------------------


def test_the_rule_is_ten_failures_in_sixty_seconds_for_sixty_seconds() -> None:
    assert THRESHOLD == 10
    assert WINDOW == timedelta(seconds=60)
    assert DURATION == timedelta(seconds=60)


# --- the threshold -----------------------------------------------------------------------


def test_nine_failures_within_a_minute_are_no_lockout() -> None:
    assert lockouts(_failures(IP, list(range(9)))) == []


def test_no_failures_are_no_lockout() -> None:
    assert lockouts([]) == []


def test_ten_failures_lock_out_from_the_tenth_for_sixty_seconds() -> None:
    found = lockouts(_failures(IP, list(range(10))))
    assert found == [Lockout(IP, _s(9), _s(69), 10)]


def test_a_lockout_is_active_from_its_start_until_just_before_plus_sixty_seconds() -> None:
    (item,) = lockouts(_failures(IP, list(range(10))))
    started = item.started
    assert not item.active(started - timedelta(microseconds=1))
    assert item.active(started)
    assert item.active(started + timedelta(seconds=59))
    assert item.active(started + timedelta(seconds=60) - timedelta(microseconds=1))
    assert not item.active(started + timedelta(seconds=60))
    assert not item.active(started + timedelta(seconds=61))


# --- "within 60 seconds": the 1st and 10th failures must be less than 60 s apart --------------


def test_ten_failures_spanning_59_seconds_lock_out() -> None:
    found = lockouts(_failures(IP, _spread(10, 59)))
    assert found == [Lockout(IP, _s(59), _s(119), 10)]


def test_ten_failures_spanning_just_under_60_seconds_lock_out() -> None:
    seconds = [*range(9), 60 - 1e-6]
    assert [item.started for item in lockouts(_failures(IP, seconds))] == [_s(60 - 1e-6)]


def test_ten_failures_spanning_exactly_60_seconds_are_no_lockout() -> None:
    assert lockouts(_failures(IP, _spread(10, 60))) == []


def test_ten_failures_spanning_61_seconds_are_no_lockout() -> None:
    assert lockouts(_failures(IP, _spread(10, 61))) == []


def test_the_window_slides_an_eleventh_failure_can_complete_ten_within_60_seconds() -> None:
    # 0, 52..60 span exactly 60 s (no lockout); an 11th at 61 makes 52..61 (9 s): lockout.
    seconds = [0, *range(52, 61), 61]
    assert [item.started for item in lockouts(_failures(IP, seconds))] == [_s(61)]
    assert lockouts(_failures(IP, [0, *range(52, 61)])) == []


# --- per source IP -----------------------------------------------------------------------


def test_failures_from_different_ips_never_add_up() -> None:
    mixed = _failures(IP, list(range(9))) + _failures(OTHER_IP, [x + 0.5 for x in range(9)])
    assert lockouts(mixed) == []


def test_each_ip_is_locked_out_on_its_own_count() -> None:
    mixed = _failures(IP, list(range(10))) + _failures(OTHER_IP, [x + 0.5 for x in range(9)])
    assert lockouts(mixed) == [Lockout(IP, _s(9), _s(69), 10)]


def test_ipv6_sources_are_tracked_too() -> None:
    failures = _failures(IPV6, list(range(10))) + _failures("2001:db8::2", list(range(9)))
    assert lockouts(failures) == [Lockout(IPV6, _s(9), _s(69), 10)]


def test_lockouts_of_several_ips_come_oldest_first() -> None:
    failures = _failures(IP, [x + 5 for x in range(10)]) + _failures(IPV6, list(range(10)))
    assert [(item.ip, item.started) for item in lockouts(failures)] == [
        (IPV6, _s(9)),
        (IP, _s(14)),
    ]


# --- during and after a lockout ------------------------------------------------------------


def test_attempts_during_a_lockout_do_not_count_and_the_count_restarts_after_it() -> None:
    first = [float(i) for i in range(10)]  # lockout [9, 69)
    during = [10 + 0.5 * i for i in range(118)]  # 10 .. 68.5: refused by the lockout
    after_nine = [69.0 + i for i in range(9)]  # 69 .. 77: a fresh count of 9
    found = lockouts(_failures(IP, first + during + after_nine))
    assert found == [Lockout(IP, _s(9), _s(69), 10)]

    found = lockouts(_failures(IP, first + during + after_nine + [78]))
    assert found == [Lockout(IP, _s(9), _s(69), 10), Lockout(IP, _s(78), _s(138), 10)]


def test_failures_before_a_lockout_do_not_carry_over_after_it() -> None:
    # 12 failures in 0..11: the lockout starts at the 10th (9); the 11th and 12th are refused.
    # From 69 on, 9 failures are no new lockout: nothing from before the lockout counts.
    seconds = [*range(12), *range(69, 78)]
    assert lockouts(_failures(IP, seconds)) == [Lockout(IP, _s(9), _s(69), 10)]


def test_an_attempt_at_exactly_the_end_of_a_lockout_counts_again() -> None:
    seconds = [*range(10), *[69.0] * 10]
    assert lockouts(_failures(IP, seconds)) == [
        Lockout(IP, _s(9), _s(69), 10),
        Lockout(IP, _s(69), _s(129), 10),
    ]


def test_a_lockout_of_one_ip_does_not_swallow_another_ips_attempts() -> None:
    failures = _failures(IP, list(range(10))) + _failures(OTHER_IP, [x + 10 for x in range(10)])
    assert lockouts(failures) == [
        Lockout(IP, _s(9), _s(69), 10),
        Lockout(OTHER_IP, _s(19), _s(79), 10),
    ]


def test_tracker_reports_locked_state_as_it_goes() -> None:
    tracker = lockout.Tracker(IP)
    results = [tracker.fail(_s(i)) for i in range(10)]
    assert results[:9] == [None] * 9
    assert results[9] == Lockout(IP, _s(9), _s(69), 10)
    assert tracker.locked(_s(68))
    assert not tracker.locked(_s(69))
    assert tracker.fail(_s(30)) is None  # refused during the lockout


# --- input order does not matter -----------------------------------------------------------


def test_unsorted_input_gives_the_same_lockouts() -> None:
    failures = (
        _failures(IP, [*range(10), *range(20, 30), *range(69, 79)])
        + _failures(IPV6, [x + 0.25 for x in range(40)])
        + _failures(OTHER_IP, _spread(10, 60))
    )
    expected = lockouts(failures)
    # IP: 0..9 locks [9, 69), 20..29 are refused, 69..78 lock again; IPv6: 10 of its 40 lock
    # [9.25, 69.25) and the rest are refused; OTHER_IP spans exactly 60 s: no lockout.
    assert expected == [
        Lockout(IP, _s(9), _s(69), 10),
        Lockout(IPV6, _s(9.25), _s(69.25), 10),
        Lockout(IP, _s(78), _s(138), 10),
    ]
    shuffler = random.Random(1234)
    for _ in range(20):
        shuffled = list(failures)
        shuffler.shuffle(shuffled)
        assert lockouts(shuffled) == expected


def _reference(failures: list[tuple[str, datetime]]) -> list[Lockout]:
    """The docstring's rules, brute force: per IP, scan failures in time order and, for each
    one not refused by a running lockout, count the countable failures in the 60 s before it.
    """
    found: list[Lockout] = []
    for ip in {ip for ip, _ in failures}:
        times = sorted(at for source, at in failures if source == ip)
        counted: list[datetime] = []  # failures that count, since the last lockout began
        current: Lockout | None = None
        for at in times:
            if current is not None and current.started <= at < current.until:
                continue  # refused by the lockout: not an authentication attempt
            counted.append(at)
            recent = [t for t in counted if at - t < timedelta(seconds=60)]
            if len(recent) >= 10:
                current = Lockout(ip, at, at + timedelta(seconds=60), len(recent))
                found.append(current)
                counted = []  # the count starts afresh
    return sorted(found, key=lambda item: (item.started, item.ip))


_IPS = st.sampled_from([IP, OTHER_IP, IPV6])
# Seconds on a coarse grid (ties and exact 60-s gaps are common) or a fine one.
_OFFSETS = st.one_of(
    st.integers(min_value=0, max_value=240).map(float),
    st.floats(min_value=0, max_value=240, allow_nan=False).map(lambda x: round(x, 3)),
)
_FAILURES = st.lists(st.tuples(_IPS, _OFFSETS.map(_s)), max_size=80)
_BURSTS = st.lists(
    st.tuples(_IPS, st.integers(0, 200), st.integers(8, 14), st.integers(1, 9)),
    max_size=5,
).map(
    lambda bursts: [
        (ip, _s(start + step * i)) for ip, start, count, step in bursts for i in range(count)
    ]
)


@settings(max_examples=300, deadline=None)
@given(failures=st.one_of(_FAILURES, _BURSTS), shuffle_seed=st.integers())
def test_lockouts_match_the_reference_in_any_input_order(
    failures: list[tuple[str, datetime]], shuffle_seed: int
) -> None:
    shuffled = list(failures)
    random.Random(shuffle_seed).shuffle(shuffled)
    expected = _reference(failures)
    key = lambda item: (item.started, item.ip)  # noqa: E731
    assert sorted(lockouts(failures), key=key) == expected
    assert sorted(lockouts(shuffled), key=key) == expected
    # Oldest first, and every lockout is exactly the threshold's worth of failures.
    assert [item.started for item in lockouts(shuffled)] == [item.started for item in expected]
    assert all(item.failures == THRESHOLD for item in expected)


def test_simultaneous_lockouts_of_two_ips_come_in_the_same_order_whatever_the_input() -> None:
    a_first = _failures(IP, list(range(10))) + _failures(OTHER_IP, list(range(10)))
    b_first = _failures(OTHER_IP, list(range(10))) + _failures(IP, list(range(10)))
    assert lockouts(a_first) == lockouts(b_first)
