"""Alert tables: alert instances and their state history, silences, notification groups, and
the notification outbox with its delivery attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lorawatch.db.models.base import Base
from lorawatch.db.types import utcnow


class Alert(Base):
    """One alert instance, identified by the fingerprint of its labels.

    ``state`` is inactive, pending, firing or resolved (Prometheus' states); a resolved alert
    that becomes active again goes back to pending with a new ``active_at``. Every change of
    state is also an ``AlertEvent``.
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(16), unique=True)
    rule_id: Mapped[str] = mapped_column(String(200))
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON)
    severity: Mapped[str] = mapped_column(String(20))
    runbook_url: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    active_at: Mapped[datetime | None]
    fired_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    last_true_at: Mapped[datetime | None]
    keep_firing_since: Mapped[datetime | None]
    last_eval_at: Mapped[datetime]
    acked_by: Mapped[str | None] = mapped_column(String(200))
    acked_at: Mapped[datetime | None]
    ack_comment: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_alerts_state", "state"),)


class AlertEvent(Base):
    """A change of an alert's state (or an acknowledgement), with the value at that moment."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    ts: Mapped[datetime]
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    value: Mapped[float | None] = mapped_column(Float)
    actor: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (Index("ix_alert_events_alert", "alert_id", "ts"),)


class Silence(Base):
    """Mutes the notifications of alerts whose labels match every matcher, from start to end."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matchers: Mapped[list[str]] = mapped_column(JSON)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_silences_ends_at", "ends_at"),)


class NotificationGroup(Base):
    """Alerts of one receiver that share the route's ``group_by`` labels: one notification stream.

    ``notified`` maps each alert fingerprint to the state last sent (firing or resolved), so a
    change is noticed and an unchanged group is only repeated after ``repeat_interval``.
    """

    __tablename__ = "notification_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    receiver: Mapped[str] = mapped_column(String(200))
    group_key: Mapped[str] = mapped_column(String(64))
    group_labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_seen_at: Mapped[datetime]
    last_notified_at: Mapped[datetime | None]
    notified: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (UniqueConstraint("receiver", "group_key"),)


class Notification(Base):
    """The transactional outbox: a message is stored with the state change that caused it and
    delivered later by ``notify flush``, with retries, until a receiver accepts it (``sent``) or
    it fails for good (``failed``: a permanent error, or too many attempts, or too old).

    A flush holds the messages it works on: ``claimed_by`` is its id and ``claimed_until`` its
    lease, renewed while it works; another flush takes only what nobody holds."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    receiver: Mapped[str] = mapped_column(String(200))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("notification_groups.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    retried_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt_at"),)


class DeliveryAttempt(Base):
    """One try at delivering a notification: the outcome, the HTTP status and any Retry-After."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    ts: Mapped[datetime]
    ok: Mapped[bool]
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    retry_after_s: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float)
    permanent: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("ix_delivery_attempts_notification", "notification_id"),)
