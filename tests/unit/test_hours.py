"""Tests for sipguard.calls.hours: windows, closures, the boundary second, `until`, and DST.

Times are written as local wall-clock times with their UTC offset, so each case says which
side of a clock change it stands on.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipguard.calls.hours import Hours, Status, Window, overlap, parse_window

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")


def hours(*windows: str, zone: ZoneInfo = NEW_YORK, closed: tuple[date, ...] = ()) -> Hours:
    return Hours(zone, tuple(w for text in windows for w in parse_window(text)), frozenset(closed))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


OFFICE = hours("mon-fri 09:00-17:30")
# --- reading windows ------------------------------------------------------------------------


def test_a_range_of_days_gives_one_window_a_day() -> None:
    assert parse_window("mon-fri 09:00-17:30") == tuple(
        Window(day, 9 * 3600, 17 * 3600 + 1800) for day in range(5)
    )


def test_lists_wrapping_ranges_and_midnight_ends() -> None:
    assert [w.day for w in parse_window("sat,sun 10:00-14:00")] == [5, 6]
    assert [w.day for w in parse_window("fri-mon 10:00-14:00")] == [4, 5, 6, 0]
    assert parse_window("fri 22:00-02:00") == (Window(4, 22 * 3600, 26 * 3600),)
    assert parse_window("sun 20:00-24:00") == (Window(6, 20 * 3600, 24 * 3600),)
    assert parse_window("  Mon 00:00-24:00 ") == (Window(0, 0, 24 * 3600),)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("monday 09:00-17:00", "'monday' is not a day"),
        ("mon-xyz 09:00-17:00", "'mon-xyz' is not a day"),
        ("mon 9:00-17:00", "is not like"),
        ("mon 09:00 17:00", "is not like"),
        ("09:00-17:00", "is not like"),
        ("mon 24:00-02:00", "24:00 is not a time of day"),
        ("mon 09:60-17:00", "09:60 is not a time of day"),
        ("mon 09:00-25:00", "25:00 is not a time of day"),
        ("mon 09:00-09:00", "is empty"),
        ("mon 00:00-00:00", "is empty"),
    ],
)
def test_malformed_windows_are_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_window(text)


def test_overlap_includes_midnight_and_the_week_wrapping_round() -> None:
    (friday_night,) = parse_window("fri 22:00-02:00")
    (saturday,) = parse_window("sat 01:00-03:00")
    (saturday_later,) = parse_window("sat 02:00-03:00")
    (sunday_night,) = parse_window("sun 23:00-01:00")
    (monday,) = parse_window("mon 00:30-08:00")
    assert overlap(friday_night, saturday) and overlap(saturday, friday_night)
    assert not overlap(friday_night, saturday_later)  # one ends where the other starts
    assert overlap(sunday_night, monday) and overlap(monday, sunday_night)


# --- open or closed, and until when -----------------------------------------------------------


def test_the_boundary_second() -> None:
    # Wednesday 2026-12-02, New York (UTC-5).
    assert not OFFICE.open_at(at("2026-12-02T08:59:59-05:00"))
    assert OFFICE.open_at(at("2026-12-02T09:00:00-05:00"))
    assert OFFICE.open_at(at("2026-12-02T17:29:59-05:00"))
    assert not OFFICE.open_at(at("2026-12-02T17:30:00-05:00"))


def test_until_is_the_close_when_open_and_the_next_opening_when_closed() -> None:
    assert OFFICE.status(at("2026-12-02T09:00:00-05:00")) == Status(
        True, at("2026-12-02T17:30:00-05:00")
    )
    assert OFFICE.status(at("2026-12-02T17:30:00-05:00")) == Status(
        False, at("2026-12-03T09:00:00-05:00")
    )
    # Friday evening: next opening is Monday.
    friday = OFFICE.status(at("2026-12-04T18:00:00-05:00"))
    assert friday == Status(False, at("2026-12-07T09:00:00-05:00"))
    assert friday.until is not None and friday.until.tzinfo == UTC


def test_the_moment_is_read_in_the_groups_zone_whatever_its_own() -> None:
    assert OFFICE.status(at("2026-12-02T14:00:00+00:00")) == Status(
        True, at("2026-12-02T22:30:00+00:00")
    )


def test_a_window_past_midnight() -> None:
    night = hours("fri 22:00-02:00")
    assert not night.open_at(at("2026-12-04T21:59:59-05:00"))
    assert night.status(at("2026-12-04T22:00:00-05:00")) == Status(
        True, at("2026-12-05T02:00:00-05:00")
    )
    assert night.open_at(at("2026-12-05T01:59:00-05:00"))  # Saturday 01:59
    assert not night.open_at(at("2026-12-05T02:00:00-05:00"))  # Saturday 02:00
    assert night.status(at("2026-12-05T02:00:00-05:00")).until == at("2026-12-11T22:00:00-05:00")


def test_sunday_night_runs_into_monday() -> None:
    night = hours("sun 23:00-01:00")
    assert night.open_at(at("2026-12-07T00:30:00-05:00"))  # Monday
    assert night.status(at("2026-12-06T23:30:00-05:00")).until == at("2026-12-07T01:00:00-05:00")


def test_windows_that_touch_are_one_opening() -> None:
    split = hours("mon 09:00-12:00", "mon 12:00-17:00", "fri 22:00-24:00", "sat 00:00-02:00")
    assert split.status(at("2026-12-07T10:00:00-05:00")).until == at("2026-12-07T17:00:00-05:00")
    assert split.status(at("2026-12-04T23:00:00-05:00")).until == at("2026-12-05T02:00:00-05:00")


def test_always_open_never_changes() -> None:
    assert hours("mon-sun 00:00-24:00").status(at("2026-12-02T12:00:00+00:00")) == Status(
        True, None
    )


# --- closed dates -------------------------------------------------------------------------------


def test_a_closed_date_closes_the_whole_local_day() -> None:
    christmas = hours("mon-fri 09:00-17:30", closed=(date(2026, 12, 25),))
    assert not christmas.open_at(at("2026-12-25T10:00:00-05:00"))
    assert christmas.status(at("2026-12-24T10:00:00-05:00")).until == at(
        "2026-12-24T17:30:00-05:00"
    )
    # Closed from Thursday evening through the closed Friday and the weekend: Monday.
    assert christmas.status(at("2026-12-24T18:00:00-05:00")) == Status(
        False, at("2026-12-28T09:00:00-05:00")
    )
    # The date is the group's local one: 03:00 UTC on the 26th is still the 25th in New York.
    assert not christmas.open_at(at("2026-12-26T03:00:00+00:00"))


def test_the_calendar_day_governs_a_window_past_midnight() -> None:
    """Documented: a closed Saturday cuts Friday night's window at midnight; a closed Friday
    keeps its window shut until midnight and the part on Saturday opens."""
    night = "fri 22:00-02:00"
    saturday_closed = hours(night, closed=(date(2026, 12, 5),))
    assert saturday_closed.status(at("2026-12-04T23:00:00-05:00")).until == at(
        "2026-12-05T00:00:00-05:00"
    )
    assert not saturday_closed.open_at(at("2026-12-05T01:00:00-05:00"))
    friday_closed = hours(night, closed=(date(2026, 12, 4),))
    assert friday_closed.status(at("2026-12-04T23:00:00-05:00")) == Status(
        False, at("2026-12-05T00:00:00-05:00")
    )
    assert friday_closed.status(at("2026-12-05T00:00:00-05:00")).until == at(
        "2026-12-05T02:00:00-05:00"
    )


def test_closures_far_ahead_are_searched_past() -> None:
    closed = tuple(date(2027, 1, 1) + timedelta(days=n) for n in range(400))
    long_break = hours("mon-fri 09:00-17:30", closed=closed)
    assert long_break.status(at("2026-12-31T18:00:00-05:00")) == Status(
        False, at("2028-02-07T09:00:00-05:00")
    )


# --- clock changes ------------------------------------------------------------------------------


def test_spring_forward_new_york() -> None:
    """2026-03-08: 02:00 EST becomes 03:00 EDT; a window across the gap opens at the jump."""
    gap = hours("sun 01:30-02:30")
    assert gap.status(at("2026-03-08T01:30:00-05:00")) == Status(
        True, at("2026-03-08T03:00:00-04:00")
    )
    handed_over = hours("sun 01:30-02:30", "sun 02:45-04:00")  # one closes as the other opens
    assert handed_over.status(at("2026-03-08T01:30:00-05:00")).until == at(
        "2026-03-08T04:00:00-04:00"
    )
    # The wall clock never shows 02:45: the second window opens when the clocks jump past it.
    two = hours("sun 02:45-04:00")
    assert two.status(at("2026-03-08T01:59:59-05:00")) == Status(
        False, at("2026-03-08T03:00:00-04:00")
    )
    assert two.status(at("2026-03-08T03:00:00-04:00")) == Status(
        True, at("2026-03-08T04:00:00-04:00")
    )
    # An office day after the change keeps its wall-clock times (13:00 UTC, not 14:00).
    assert OFFICE.status(at("2026-03-09T08:00:00-04:00")).until == at("2026-03-09T09:00:00-04:00")


def test_a_window_wholly_in_the_gap_never_opens_that_day() -> None:
    lost = hours("sun 02:10-02:50")
    assert lost.status(at("2026-03-08T00:00:00-05:00")).until == at("2026-03-15T02:10:00-04:00")


def test_fall_back_new_york_repeats_the_hour() -> None:
    """2026-11-01: 02:00 EDT becomes 01:00 EST; 01:00-01:59 happens twice, open both times."""
    repeat = hours("sun 01:00-01:30")
    first = at("2026-11-01T01:00:00-04:00")
    assert repeat.status(first) == Status(True, at("2026-11-01T01:30:00-04:00"))
    assert repeat.status(at("2026-11-01T01:30:00-04:00")) == Status(
        False, at("2026-11-01T01:00:00-05:00")
    )
    assert repeat.status(at("2026-11-01T01:15:00-05:00")) == Status(
        True, at("2026-11-01T01:30:00-05:00")
    )
    # A window across the repeated hour runs its wall-clock length plus the hour.
    across = hours("sun 00:30-02:30")
    assert across.status(at("2026-11-01T00:30:00-04:00")).until == at("2026-11-01T02:30:00-05:00")


def test_a_window_closing_inside_the_repeated_hour_closes_and_opens_again() -> None:
    repeat = hours("sun 00:00-01:30")
    assert repeat.status(at("2026-11-01T01:29:00-04:00")).until == at("2026-11-01T01:30:00-04:00")
    assert repeat.status(at("2026-11-01T01:31:00-04:00")).until == at("2026-11-01T01:00:00-05:00")


def test_london_both_ways() -> None:
    """2026-03-29 01:00 GMT → 02:00 BST; 2026-10-25 02:00 BST → 01:00 GMT."""
    early = hours("sun 00:30-01:30", zone=LONDON)
    assert early.status(at("2026-03-29T00:45:00+00:00")) == Status(
        True, at("2026-03-29T02:00:00+01:00")
    )
    office = hours("mon-fri 09:00-17:30", zone=LONDON)
    assert office.status(at("2026-10-23T12:00:00+01:00")).until == at("2026-10-23T17:30:00+01:00")
    assert office.status(at("2026-10-23T17:30:00+01:00")).until == at("2026-10-26T09:00:00+00:00")
    late = hours("sun 01:15-01:45", zone=LONDON)
    assert late.status(at("2026-10-25T01:50:00+01:00")) == Status(
        False, at("2026-10-25T01:15:00+00:00")
    )


# --- until is the first change, checked minute by minute ---------------------------------------

_WINDOWS = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 23), st.sampled_from([0, 30]), st.integers(1, 20)),
    min_size=1,
    max_size=3,
)


def _generated(specs: list[tuple[int, int, int, int]]) -> list[str]:
    texts: list[str] = []
    chosen: list[Window] = []
    for day, hour, minute, half_hours in specs:
        start = hour * 60 + minute
        end = (start + 30 * half_hours) % (24 * 60)
        text = f"{('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun')[day]} "
        text += f"{start // 60:02}:{start % 60:02}-{end // 60:02}:{end % 60:02}"
        (window,) = parse_window(text)
        if not any(overlap(window, other) for other in chosen):
            chosen.append(window)
            texts.append(text)
    return texts


@settings(max_examples=40, deadline=None)
@given(
    specs=_WINDOWS,
    zone=st.sampled_from(["America/New_York", "Europe/London", "Australia/Lord_Howe"]),
    start=st.sampled_from(
        # Around each zone's changes, and an ordinary week.
        ["2026-03-07T12:00", "2026-03-28T12:00", "2026-10-03T12:00", "2026-10-31T12:00"]
    ),
    offset=st.integers(0, 36 * 60),
    closed=st.booleans(),
)
def test_until_is_the_first_minute_the_status_changes(
    specs: list[tuple[int, int, int, int]], zone: str, start: str, offset: int, closed: bool
) -> None:
    tz = ZoneInfo(zone)
    now = datetime.fromisoformat(start).replace(tzinfo=UTC) + timedelta(minutes=offset)
    local_day = now.astimezone(tz).date()
    closures = (local_day + timedelta(days=1),) if closed else ()
    subject = hours(*_generated(specs), zone=tz, closed=closures)
    status = subject.status(now)
    assert status.open == subject.open_at(now)
    moment = now
    for _ in range(9 * 24 * 60):  # past the closure and a whole week
        moment += timedelta(minutes=1)
        if subject.open_at(moment) != status.open:
            assert status.until == moment
            return
    assert status.until is None
