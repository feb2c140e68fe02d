"""Crontab lines as people write them (minute hour day month weekday, 0 or 7 = Sunday), turned
into APScheduler triggers in UTC.

APScheduler 3.x numbers weekdays from Monday = 0, so ``CronTrigger.from_crontab("0 2 * * 1")``
fires on Tuesdays; weekday numbers are therefore translated to names first.
"""

from __future__ import annotations

import re

from apscheduler.triggers.cron import CronTrigger

_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def weekday_field(field: str) -> str:
    """Standard crontab weekday numbers (not step values) as APScheduler's day names."""

    def name(match: re.Match) -> str:
        number = int(match.group(0))
        if number > 7:
            raise ValueError(f"weekday {number} is out of range 0-7")
        return _DAYS[number]

    return re.sub(r"(?<![/\d])\d+", name, field)


def crontab_trigger(expr: str) -> CronTrigger:
    """An APScheduler CronTrigger (UTC) for a standard five-field crontab line."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"Wrong number of fields; got {len(fields)}, expected 5 (minute hour day month weekday)")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=weekday_field(weekday), timezone="UTC"
    )
