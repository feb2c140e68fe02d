"""Delivery of the notification outbox, with retries.

``flush`` first queues what is due (``lorawatch.alerts.dispatch``), then claims the pending
notifications (a lease in the database, so two flushes never send the same message at once)
and delivers them, one thread per receiver, in order per receiver. A failed attempt is
recorded and retried after an exponential backoff (0.5 s, x1.5 each time, +-50% jitter,
capped at 60 s) or after the receiver's 429 ``Retry-After``; when the next retry would pass
the flush's deadline, the message is left pending with its next attempt time and the next
flush picks it up. A receiver whose message is left pending gets nothing more in this flush,
so its messages stay in order. Slack webhooks are paced at about one message a second.

Delivery is at least once: a process killed after a receiver accepted a message, but before
that was recorded, sends it again (PagerDuty deduplicates by ``dedup_key``).
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, or_, select

from lorawatch.alerts.channels import Request, module_for
from lorawatch.alerts.dispatch import dispatch
from lorawatch.db import Database
from lorawatch.db.models import DeliveryAttempt, Notification
from lorawatch.db.types import utcnow
from lorawatch.errors import ConfigError
from lorawatch.settings import Settings

log = logging.getLogger(__name__)

LOCAL_CHANNELS = ("console", "file")


@dataclass
class Outcome:
    """The result of one delivery attempt."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None


def backoff_delay(
    attempt: int, *, initial: float, maximum: float, rng: random.Random, multiplier: float = 1.5, jitter: float = 0.5
) -> float:
    """The delay before retry number ``attempt`` (0-based): exponential, jittered, capped."""
    base = min(initial * multiplier**attempt, maximum)
    return min(base * rng.uniform(1 - jitter, 1 + jitter), maximum)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def _scrub(text: str, secrets: list[str]) -> str:
    """Remove secrets from a message; for a URL also its path and query, which servers echo."""

    parts: list[str] = []
    for secret in secrets:
        if not secret:
            continue
        parts.append(secret)
        if "://" in secret:
            url = urlsplit(secret)
            parts += [p for p in (url.path + (f"?{url.query}" if url.query else ""), url.path, url.query) if len(p) > 1]
    for part in sorted(set(parts), key=len, reverse=True):
        text = text.replace(part, "<redacted>")
    return text


class _Sender:
    """Sends one receiver's requests; paces Slack webhooks."""

    def __init__(self, receiver, settings: Settings) -> None:
        self.receiver, self.settings = receiver, settings
        self.last_sent: float | None = None

    def send(self, payload: dict[str, Any], sleep: Callable[[float], None]) -> Outcome:
        module = module_for(self.receiver.type)
        if self.receiver.type in LOCAL_CHANNELS:
            try:
                module.deliver(payload, self.receiver, self.settings)
            except OSError as exc:
                return Outcome(False, error=f"{type(exc).__name__}: {exc}")
            return Outcome(True)

        try:
            requests = module.build(payload, self.receiver, self.settings)
        except ConfigError as exc:
            return Outcome(False, error=exc.one_line())
        for request in requests:
            outcome = self._post(request, sleep)
            if not outcome.ok:
                return outcome
        return Outcome(True, status_code=outcome.status_code if requests else None)

    def _post(self, request: Request, sleep: Callable[[float], None]) -> Outcome:
        interval = getattr(self.receiver, "min_interval_s", 0.0)
        if interval and self.last_sent is not None:
            wait = self.last_sent + interval - time.monotonic()
            if wait > 0:
                sleep(wait)
        try:
            with httpx.Client(timeout=self.receiver.timeout_s, follow_redirects=False) as client:
                self.last_sent = time.monotonic()
                response = client.post(request.url, json=request.body, headers=request.headers)
        except httpx.HTTPError as exc:
            return Outcome(False, error=_scrub(f"{type(exc).__name__}: {exc}", request.secrets))
        if response.status_code in request.ok_statuses:
            return Outcome(True, status_code=response.status_code)
        retry_after = (
            parse_retry_after(response.headers.get("Retry-After")) if response.status_code in (429, 503) else None
        )
        body = _scrub(response.text[:300].strip(), request.secrets)
        return Outcome(
            False,
            status_code=response.status_code,
            error=f"HTTP {response.status_code}: {body}",
            retry_after_s=retry_after,
        )


def flush(
    db: Database,
    settings: Settings,
    *,
    now: datetime | None = None,
    deadline_s: float | None = None,
    receivers: list[str] | None = None,
    dispatch_first: bool = True,
    skip_group_wait: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Queue what is due, then deliver pending notifications until done or the deadline passes.

    ``now`` is the flush's start on the alerts' clock (tests drive it); times recorded during
    the flush advance from it by the real elapsed time.
    """
    start_wall = now or utcnow()
    start_mono = time.monotonic()
    clock = lambda: start_wall + timedelta(seconds=time.monotonic() - start_mono)  # noqa: E731
    deadline_s = deadline_s if deadline_s is not None else settings.alerts.flush_deadline.total_seconds()
    end = start_mono + deadline_s
    rng = rng or random.Random()
    queued = 0
    if dispatch_first:
        with db.session() as session:
            queued = len(dispatch(session, settings, start_wall, skip_group_wait=skip_group_wait))
    configured = settings.alerts.all_receivers
    lease = timedelta(seconds=deadline_s + max((r.timeout_s for r in configured.values()), default=10) + 30)
    with db.session() as session:
        query = (
            select(Notification)
            .where(
                Notification.status == "pending",
                Notification.next_attempt_at <= start_wall,
                or_(Notification.claimed_until.is_(None), Notification.claimed_until < start_wall),
            )
            .order_by(Notification.id)
        )
        if receivers:
            query = query.where(Notification.receiver.in_(receivers))
        claimed: dict[str, list[int]] = {}
        for note in session.scalars(query.with_for_update(skip_locked=True)):
            note.claimed_until = start_wall + lease
            claimed.setdefault(note.receiver, []).append(note.id)
    results: dict[str, dict[str, int]] = {}
    lock = threading.Lock()

    def run_receiver(name: str, ids: list[int]) -> None:
        counts = {"delivered": 0, "deferred": 0, "attempts": 0}
        receiver = configured.get(name)
        if receiver is None:
            _release(db, ids, error=f"receiver {name!r} is not configured")
            counts["deferred"] = len(ids)
        else:
            sender = _Sender(receiver, settings)
            for position, note_id in enumerate(ids):
                ok, attempts = _deliver(db, note_id, sender, settings, end, clock, sleep, rng)
                counts["attempts"] += attempts
                if ok:
                    counts["delivered"] += 1
                else:
                    counts["deferred"] += len(ids) - position
                    _release(db, ids[position + 1 :])
                    break
        with lock:
            results[name] = counts

    if claimed:
        with ThreadPoolExecutor(max_workers=min(8, len(claimed))) as pool:
            list(pool.map(lambda item: run_receiver(*item), claimed.items()))
    total = {k: sum(r[k] for r in results.values()) for k in ("delivered", "deferred", "attempts")}
    with db.session() as session:
        pending = session.scalar(select(func.count()).select_from(Notification).where(Notification.status == "pending"))
    return {
        "queued": queued,
        **total,
        "pending": pending,
        "receivers": results,
        "seconds": round(time.monotonic() - start_mono, 3),
    }


def _deliver(
    db: Database, note_id: int, sender: _Sender, settings: Settings, end: float, clock, sleep, rng
) -> tuple[bool, int]:
    """Try one notification until it is delivered or the next retry would pass ``end``."""
    with db.session() as session:
        payload = session.get(Notification, note_id).payload
    attempt = 0
    while True:
        started = time.monotonic()
        outcome = sender.send(payload, sleep)
        duration_ms = (time.monotonic() - started) * 1000
        attempt += 1
        ts = clock()
        with db.session() as session:
            note = session.get(Notification, note_id)
            note.attempts += 1
            session.add(
                DeliveryAttempt(
                    notification_id=note_id,
                    ts=ts,
                    ok=outcome.ok,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    retry_after_s=outcome.retry_after_s,
                    duration_ms=duration_ms,
                )
            )
            if outcome.ok:
                note.status, note.delivered_at, note.claimed_until, note.last_error = "sent", ts, None, None
                return True, attempt
            note.last_error = outcome.error
            delay = (
                outcome.retry_after_s
                if outcome.retry_after_s is not None
                else backoff_delay(
                    note.attempts - 1,
                    initial=settings.alerts.retry_initial_s,
                    maximum=settings.alerts.retry_max_s,
                    rng=rng,
                )
            )
            if time.monotonic() + delay > end:
                note.next_attempt_at, note.claimed_until = ts + timedelta(seconds=delay), None
                log.warning(
                    "notification %s to %s deferred after %s attempts: %s",
                    note_id,
                    note.receiver,
                    note.attempts,
                    outcome.error,
                )
                return False, attempt
        sleep(delay)


def _release(db: Database, ids: list[int], *, error: str | None = None) -> None:
    """Give claimed notifications back to the next flush (recording why, when there is a reason)."""
    if not ids:
        return
    with db.session() as session:
        for note in session.scalars(select(Notification).where(Notification.id.in_(ids))):
            note.claimed_until = None
            if error is not None:
                note.last_error = error


def list_notifications(db: Database, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest notifications (the notification log), optionally by status."""
    with db.session() as session:
        query = select(Notification).order_by(Notification.id.desc()).limit(limit)
        if status:
            query = query.where(Notification.status == status)
        return [
            {
                "id": n.id,
                "receiver": n.receiver,
                "status": n.status,
                "payload_status": n.payload.get("status"),
                "alerts": len(n.payload.get("alerts", [])),
                "group": n.payload.get("groupLabels"),
                "created_at": n.created_at,
                "attempts": n.attempts,
                "next_attempt_at": n.next_attempt_at if n.status == "pending" else None,
                "delivered_at": n.delivered_at,
                "last_error": n.last_error,
            }
            for n in session.scalars(query)
        ]


def attempts_of(db: Database, note_id: int) -> list[dict[str, Any]]:
    """Every delivery attempt of one notification, oldest first."""
    with db.session() as session:
        rows = session.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.notification_id == note_id).order_by(DeliveryAttempt.id)
        )
        return [
            {
                "ts": a.ts,
                "ok": a.ok,
                "status_code": a.status_code,
                "error": a.error,
                "retry_after_s": a.retry_after_s,
                "duration_ms": a.duration_ms,
            }
            for a in rows
        ]
