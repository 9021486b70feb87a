"""Business hours of an agent group: weekly windows in a time zone's wall-clock time, and closures.

A window such as ``"mon-fri 09:00-17:30"`` is open from its start up to, not including, its end;
one whose end is not after its start (``"fri 22:00-02:00"``) runs past midnight into the next
day. Times are local wall-clock times: on the day clocks go forward a window is open for the
wall times that exist, and on the day they go back an hour that happens twice is inside (or
outside) a window both times. A closed date closes the whole local calendar day, 00:00 to
24:00, including the part of a window that began the evening before.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY = 24 * 3600
WEEK = 7 * DAY
_WINDOW = re.compile(
    r"^(?P<days>[a-z,-]+) +(?P<start>[0-9]{2}:[0-9]{2})-(?P<end>[0-9]{2}:[0-9]{2})$"
)
# The years hours are read for: far from datetime's limits, which a week's search past a
# closed date, or a zone's offset, would otherwise cross (an OverflowError, not an answer).
YEARS = range(1970, 3000)
_SETTLED_DAYS = 8  # a week and a day past the last closure, the weekly pattern just repeats


@dataclass(frozen=True)
class Window:
    """Open on `day` (0 is Monday) from `start` up to `end`, in seconds after that day's 00:00.

    `end` is past 24 hours for a window that runs over midnight.
    """

    day: int
    start: int
    end: int

    def week_span(self) -> tuple[int, int]:
        """Return where the window lies in the week, in seconds after Monday 00:00."""
        return self.day * DAY + self.start, self.day * DAY + self.end


@dataclass(frozen=True)
class Status:
    """Open or closed now, and when that next changes (None: never), as an instant in UTC.

    UTC, not the zone: Python never finds the second 01:30 of a repeated hour equal to
    anything in another zone, so a local time would compare wrongly.
    """

    open: bool
    until: datetime | None


ALWAYS_OPEN = Status(open=True, until=None)


def iso_utc(moment: datetime) -> str:
    """Write an aware instant as ISO 8601 in UTC with a Z, as the API answers times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clock_time(text: str, *, end: bool) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if (hours, minutes) == (24, 0) and end:
        return DAY
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text} is not a time of day (00:00-23:59, or 24:00 as an end)")
    return hours * 3600 + minutes * 60


def _days(text: str) -> list[int]:
    days: list[int] = []
    for item in text.split(","):
        first, _, last = item.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"{item!r} is not a day or a range of days ({', '.join(DAYS)})")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.extend((a + n) % 7 for n in range((b - a) % 7 + 1))
    return days


def parse_window(text: str) -> tuple[Window, ...]:
    """Read ``"DAYS HH:MM-HH:MM"`` (DAYS like ``mon``, ``mon-fri``, ``sat,sun``): one per day."""
    found = _WINDOW.match(text.strip().lower())
    if found is None:
        raise ValueError(f'{text!r} is not like "mon-fri 09:00-17:30"')
    start = _clock_time(found["start"], end=False)
    end = _clock_time(found["end"], end=True)
    if start == end:
        raise ValueError(f"{text!r} is empty: it starts and ends at the same time")
    if end < start:
        end += DAY  # it runs past midnight
    return tuple(Window(day, start, end) for day in _days(found["days"]))


def overlap(a: Window, b: Window) -> bool:
    """Tell whether two windows share a moment of the week (Sunday night runs into Monday)."""
    a_start, a_end = a.week_span()
    b_start, b_end = b.week_span()
    return any(a_start < b_end + shift and b_start + shift < a_end for shift in (-WEEK, 0, WEEK))


@dataclass(frozen=True)
class Hours:
    """When a group takes calls: `windows` in `zone`, except on `closed_dates`."""

    zone: ZoneInfo
    windows: tuple[Window, ...]
    closed_dates: frozenset[date] = frozenset()
    written: tuple[str, ...] = ()  # the windows as the config wrote them, to show people

    def describe(self) -> str:
        """Say the hours in one line: zone, windows, closed dates."""
        text = f"{self.zone.key}: {', '.join(self.written)}"
        if self.closed_dates:
            text += f"; closed {', '.join(d.isoformat() for d in sorted(self.closed_dates))}"
        return text

    def open_at(self, moment: datetime) -> bool:
        """Tell whether the group is open at `moment` (an aware datetime)."""
        local = moment.astimezone(self.zone)
        if local.date() in self.closed_dates:
            return False
        second = local.weekday() * DAY + local.hour * 3600 + local.minute * 60 + local.second
        for window in self.windows:
            start, end = window.week_span()
            if start <= second < end or start <= second + WEEK < end:
                return True
        return False

    def status(self, now: datetime) -> Status:
        """Say whether the group is open at `now` (an aware datetime) and until when."""
        is_open = self.open_at(now)
        today = now.astimezone(self.zone).date()
        last = max([today, *self.closed_dates]) + timedelta(days=_SETTLED_DAYS)
        pending: list[datetime] = []  # a heap of the instants where the status might change
        day = today - timedelta(days=2)  # earlier days' windows all end before `now`
        while day <= last:
            for change in self._changes(day):
                heapq.heappush(pending, change)
            # Every later day's instants come after this day's start: those before it are final.
            settled = self._instant(datetime.combine(day, time()), 0)
            while pending and pending[0] <= settled:
                change = heapq.heappop(pending)
                if change > now and self.open_at(change) != is_open:
                    return Status(is_open, change)
            day += timedelta(days=1)
        return Status(is_open, None)

    def _changes(self, day: date) -> Iterator[datetime]:
        """Yield every instant where the status might change because of `day`: its midnight,
        its windows' starts and ends (both readings of a repeated wall time), its clock change.

        A closed day changes nothing after its midnight but where a window runs past it.
        """
        midnight = datetime.combine(day, time())
        closed = day in self.closed_dates
        walls = [midnight]
        for window in self.windows:
            if window.day == day.weekday():
                if not closed:
                    walls += [midnight + timedelta(seconds=window.start)]
                if not closed or window.end > DAY:
                    walls += [midnight + timedelta(seconds=window.end)]
        for wall in walls:
            yield self._instant(wall, 0)
            yield self._instant(wall, 1)
        # Where the clocks jump, a window may open or close without its wall time ever showing.
        low, high = self._instant(midnight, 0), self._instant(midnight + timedelta(days=1), 0)
        if (
            not closed
            and low.astimezone(self.zone).utcoffset() != high.astimezone(self.zone).utcoffset()
        ):
            yield _jump(self.zone, low, high)

    def _instant(self, wall: datetime, fold: int) -> datetime:
        return wall.replace(tzinfo=self.zone, fold=fold).astimezone(UTC)


def _jump(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """Find, to the second, the first instant after `low` whose UTC offset is `high`'s."""
    after = high.astimezone(zone).utcoffset()
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == after:
            hi = middle
        else:
            lo = middle
    return datetime.fromtimestamp(hi, UTC)
