"""Output conventions shared by every command: ``--json`` prints one JSON document."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from lorawatch.durations import parse_duration
from lorawatch.errors import InputError
from lorawatch.secrets import scrub_known


def json_option(func: Callable) -> Callable:
    """Add ``--json`` to a command."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of text.")(
        func
    )


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def to_json(data: Any) -> str:
    """Serialise for ``--json`` output (datetimes as ISO 8601 UTC)."""
    return json.dumps(data, default=_default, indent=2, sort_keys=False)


def emit(data: Any, as_json: bool, text: str | Callable[[], str] | None = None) -> None:
    """Print ``data`` as JSON, or ``text`` (or a rendering of ``data``) for people."""
    if as_json:
        sys.stdout.write(scrub_known(to_json(data)) + "\n")
        return
    if callable(text):
        text = text()
    if text is None:
        text = to_json(data)
    if text:
        click.echo(scrub_known(text))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table for people; empty string when there are no rows."""
    if not rows:
        return "(none)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value)
    return str(value)


def parse_time(value: str | None, what: str) -> datetime | None:
    """An ISO 8601 time given on the command line; a time without a zone is taken as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{what} {value!r} is not a time", fix="use ISO 8601, e.g. 2026-11-30T14:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_duration_option(value: str) -> timedelta:
    """A duration given on the command line (``30m``, ``2h``, ``1d``, ``1h30m``)."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InputError(str(exc), fix="write e.g. 30m, 2h or 1d") from None
