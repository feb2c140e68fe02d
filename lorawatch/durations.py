"""Durations as people write them in configs and on the command line: ``30s``, ``5m``, ``4h``,
``7d``, ``2w``, combinations such as ``1h30m``, and ``0s``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str | int | float) -> timedelta:
    """Parse a duration; raises ValueError with a message that says what is accepted."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"duration {text!r} is negative")
        return timedelta(seconds=text)
    value = str(text).strip()
    if value == "0":
        return timedelta(0)
    pos, total = 0, timedelta(0)
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        pos = match.end()
    if not value or pos != len(value):
        raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 5m, 4h, 7d, 2w or 1h30m")
    return total


def format_duration(delta: timedelta) -> str:
    """The shortest exact rendering: ``4h``, ``1h30m``, ``45s``, ``0s``."""
    seconds = delta.total_seconds()
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            count = int(seconds // size)
            parts.append(f"{count}{unit}")
            seconds -= count * size
    if seconds:
        parts.append(f"{seconds:g}s")
    return "".join(parts)


def _validate(value: object) -> object:
    """Text and numbers go through :func:`parse_duration`; a timedelta passes as it is."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"duration {format_duration(-value)} is negative")
        return value
    if isinstance(value, (str, int, float)):
        return parse_duration(value)
    raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 4h, 7d, 2w or 1h30m")


# A duration setting: written as text (``"5m"``), validated once when the settings load, held
# as a ``timedelta`` and shown again as text (``config show``, ``config default``).
Duration = Annotated[timedelta, BeforeValidator(_validate), PlainSerializer(format_duration, return_type=str)]
