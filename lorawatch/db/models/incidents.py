"""Incident tables: incidents, the alerts they hold, their timeline, approvals and action items."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lorawatch.db.models.base import Base
from lorawatch.db.types import utcnow


class Incident(Base):
    """An incident: triggered, acknowledged, mitigated, resolved; opened by alerts or by hand."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    adapter: Mapped[str | None] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), default="triggered")
    source: Mapped[str] = mapped_column(String(20))
    commander: Mapped[str | None] = mapped_column(String(200))
    opened_at: Mapped[datetime]
    opened_by: Mapped[str] = mapped_column(String(200))
    impact_started_at: Mapped[datetime | None]
    acked_at: Mapped[datetime | None]
    mitigated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    summary: Mapped[str | None] = mapped_column(Text)
    impact: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str | None] = mapped_column(Text)
    root_cause: Mapped[str | None] = mapped_column(Text)
    resolution: Mapped[str | None] = mapped_column(Text)
    went_well: Mapped[str | None] = mapped_column(Text)
    went_badly: Mapped[str | None] = mapped_column(Text)
    got_lucky: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_incidents_state_adapter", "state", "adapter"),)


class IncidentAlert(Base):
    """An alert grouped into an incident."""

    __tablename__ = "incident_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    linked_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("incident_id", "alert_id"),)


class IncidentEvent(Base):
    """One line of an incident's timeline, recorded as it happens: who, when, what."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    ts: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_incident_events_incident", "incident_id", "ts"),)


class IncidentApproval(Base):
    """A responder's approval of an action (a rollback) on an incident, used at most once."""

    __tablename__ = "incident_approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(40))
    approver: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    ts: Mapped[datetime]
    used_at: Mapped[datetime | None]


class ActionItem(Base):
    """A follow-up from the review: what, who owns it, by when."""

    __tablename__ = "action_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    description: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(200))
    due_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
