"""Incidents react to alert evaluation: registered as an after-evaluation hook of
``lorawatch.alerts.hooks`` (``lorawatch.plugins`` loads it at every entry point)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from lorawatch.alerts.hooks import after_evaluation
from lorawatch.incidents.service import sync_with_alerts
from lorawatch.settings import Settings


@after_evaluation("incidents")
def open_incidents(
    session: Session, settings: Settings, now: datetime, transitions: list[dict[str, Any]], muted: set[str]
) -> dict[str, Any]:
    """Open incidents for new firing alerts; record alert changes on open incidents' timelines."""
    return {"incidents_opened": sync_with_alerts(session, settings, now, transitions, muted)}
