"""Time intervals in Alertmanager's format, for muting routes: "warnings not at night or at
weekends", in the team's own time zone.

An interval is a list of entries; it holds at an instant when any entry holds. An entry holds
when every field it gives holds (a field left out holds always), evaluated in its
``location``:

- ``times``: ``[{start_time = "22:00", end_time = "24:00"}]``, start included, end excluded;
  a range that ends before it starts (``22:00`` to ``07:00``) runs over midnight;
- ``weekdays``: ``["monday:friday", "sunday"]``;
- ``days_of_month``: ``["1:7", "-1"]`` (negative days count from the month's end);
- ``months``: ``["january:march", "12"]``;
- ``years``: ``["2026:2027"]``;
- ``location``: an IANA time zone such as ``"Europe/Berlin"`` (default ``UTC``).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = [m.lower() for m in calendar.month_name[1:]]
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


def _minutes(text: str) -> int:
    if not _TIME.match(text):
        raise ValueError(f"{text!r} is not a time of day; write HH:MM from 00:00 to 24:00")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _bound(text: str, names: list[str] | None, low: int, high: int, what: str) -> int:
    value = text.strip().lower()
    if names and value in names:
        return names.index(value) + low
    try:
        number = int(value)
    except ValueError:
        known = f" or a name ({', '.join(names)})" if names else ""
        raise ValueError(f"{text!r} is not a valid {what}; write a number from {low} to {high}{known}") from None
    if not (low <= number <= high or (what == "day of the month" and -31 <= number <= -1)):
        raise ValueError(f"{text!r} is out of range for a {what} ({low} to {high})")
    return number


def _ranges(items: list[str], names: list[str] | None, low: int, high: int, what: str) -> list[tuple[int, int]]:
    out = []
    for item in items:
        first, _, last = str(item).partition(":")
        start = _bound(first, names, low, high, what)
        end = _bound(last, names, low, high, what) if last else start
        out.append((start, end))
    return out


@dataclass(frozen=True)
class Entry:
    """One validated entry of a time interval."""

    times: tuple[tuple[int, int], ...]
    weekdays: tuple[tuple[int, int], ...]
    days_of_month: tuple[tuple[int, int], ...]
    months: tuple[tuple[int, int], ...]
    years: tuple[tuple[int, int], ...]
    zone: ZoneInfo

    def holds(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        if self.times and not any(
            (start <= minute < end) if start <= end else (minute >= start or minute < end) for start, end in self.times
        ):
            return False
        if self.weekdays and not any(a <= local.weekday() <= b for a, b in self.weekdays):
            return False
        if self.days_of_month:
            last = calendar.monthrange(local.year, local.month)[1]
            day = local.day

            def absolute(d: int) -> int:
                return d if d > 0 else last + 1 + d

            if not any(absolute(a) <= day <= absolute(b) for a, b in self.days_of_month):
                return False
        if self.months and not any(a <= local.month <= b for a, b in self.months):
            return False
        return not self.years or any(a <= local.year <= b for a, b in self.years)


def parse_entry(spec: dict[str, Any]) -> Entry:
    """Validate one entry; ValueError says what is wrong and what is accepted."""
    known = {"times", "weekdays", "days_of_month", "months", "years", "location"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}")
    times = []
    for item in spec.get("times", []):
        if not isinstance(item, dict) or set(item) != {"start_time", "end_time"}:
            raise ValueError('a time range is { start_time = "HH:MM", end_time = "HH:MM" }')
        times.append((_minutes(item["start_time"]), _minutes(item["end_time"])))
    location = spec.get("location", "UTC")
    try:
        zone = ZoneInfo(location)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"location {location!r} is not an IANA time zone such as Europe/Berlin") from None
    weekdays = [(a - 1, b - 1) for a, b in _ranges(spec.get("weekdays", []), WEEKDAYS, 1, 7, "weekday")]
    return Entry(
        times=tuple(times),
        weekdays=tuple(weekdays),
        days_of_month=tuple(_ranges(spec.get("days_of_month", []), None, 1, 31, "day of the month")),
        months=tuple(_ranges(spec.get("months", []), MONTHS, 1, 12, "month")),
        years=tuple(_ranges(spec.get("years", []), None, 1970, 9999, "year")),
        zone=zone,
    )


def holds(entries: list[Entry], at: datetime) -> bool:
    """Whether a time interval (a list of entries) holds at ``at``."""
    return any(entry.holds(at) for entry in entries)
