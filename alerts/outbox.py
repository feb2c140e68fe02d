"""Delivery of the notification outbox, with retries.

``flush`` first queues what is due (``lorawatch.alerts.dispatch``), then claims the pending
notifications nobody holds and delivers them, one thread per receiver, in order per receiver.

- **Held, not shared.** A flush claims its messages under its own id with a lease that a
  heartbeat renews while it works; another flush takes only messages nobody holds, and a flush
  checks that it still holds a message right before each attempt. Two live flushes never send
  the same message.
- **Deadline.** The deadline is checked before every attempt and every retry wait; what is
  left is released for the next flush. A request in flight may overrun it by the receiver's
  ``timeout_s``.
- **Retries.** A retryable failure (network errors, 408, 425, 429, 5xx) is retried after an
  exponential backoff (0.5 s, x1.5 each time, +-50% jitter, capped at 60 s) or the receiver's
  ``Retry-After``; a message left pending keeps its place, so that receiver's later messages wait
  for it (order is kept).
- **Failures end.** A permanent failure (another 4xx, a 3xx, an invalid URL) or too many
  attempts (``max_attempts``) or too old (``max_age``) ends the message as ``failed``: it no
  longer blocks the receiver's later messages, ``notify list --status failed`` and the dashboard
  list it, the ``notification_failed`` rule alerts the fallback receiver, and ``notify retry``
  sends it again.
- **Idempotency.** Every request carries the notification's id (``Idempotency-Key:
  lorawatch-<id>`` and ``X-LoraWatch-Notification-Id``; webhooks also get ``notificationId`` in
  the body; PagerDuty deduplicates by ``dedup_key``). Only a flush killed after a receiver took
  a message, but before that was recorded, sends that one message again (at least once).

Errors are scrubbed of every secret before they are stored or logged (``lorawatch.secrets``).
Slack webhooks are paced at about one message a second.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, or_, select, update

from lorawatch import audit, secrets
from lorawatch.alerts.channels import DeliveryError, Request, module_for
from lorawatch.alerts.dispatch import dispatch
from lorawatch.db import Database
from lorawatch.db.models import DeliveryAttempt, Notification
from lorawatch.db.types import utcnow
from lorawatch.errors import ConfigError, ConflictError, NotFoundError
from lorawatch.settings import Receiver, Settings

log = logging.getLogger(__name__)

LOCAL_CHANNELS = ("console", "file")
# 4xx answers that say "try again later" rather than "this will never work"
RETRYABLE_STATUSES = frozenset({408, 425, 429})
# httpx errors that no retry can cure: the URL or the request itself is wrong
PERMANENT_ERRORS = (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError)


@dataclass
class Outcome:
    """The result of one delivery attempt."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    permanent: bool = False


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


def is_permanent_status(status: int) -> bool:
    """Whether an HTTP answer means no retry will ever succeed (4xx but 408/425/429, and 3xx)."""
    return 300 <= status < 500 and status not in RETRYABLE_STATUSES


def check_url(url: str) -> httpx.URL:
    """A receiver URL parsed, or ValueError saying what is wrong (never echoing the URL)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ValueError(f"the receiver URL is not a valid URL ({type(exc).__name__})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("the receiver URL must be http:// or https:// with a host")
    return parsed


class _Sender:
    """Sends one receiver's requests; paces Slack webhooks."""

    def __init__(self, receiver: Receiver, settings: Settings) -> None:
        self.receiver, self.settings = receiver, settings
        self.last_sent: float | None = None

    def send(self, payload: dict[str, Any], note_id: int, sleep: Callable[[float], None]) -> Outcome:
        module = module_for(self.receiver.type)
        payload = {**payload, "lorawatch": {**payload.get("lorawatch", {}), "notificationId": str(note_id)}}
        if hasattr(module, "send"):  # a channel that sends by itself (e-mail)
            try:
                module.send(payload, self.receiver, self.settings)
            except DeliveryError as exc:
                return Outcome(
                    False, error=secrets.scrub(str(exc)), permanent=exc.permanent, retry_after_s=exc.retry_after_s
                )
            except ConfigError as exc:  # an unset secret: the operator can fix it, so retry
                return Outcome(False, error=exc.one_line())
            return Outcome(True)
        if self.receiver.type in LOCAL_CHANNELS:
            try:
                module.deliver(payload, self.receiver, self.settings)
            except OSError as exc:
                return Outcome(False, error=f"{type(exc).__name__}: {exc}")
            return Outcome(True)
        try:
            requests = module.build(payload, self.receiver, self.settings)
        except ConfigError as exc:  # an unset secret: the operator can fix it, so retry
            return Outcome(False, error=exc.one_line())
        for request in requests:  # their secrets were registered when the channel resolved them
            request.headers.setdefault("Idempotency-Key", f"lorawatch-{note_id}")
            request.headers.setdefault("X-LoraWatch-Notification-Id", str(note_id))
            outcome = self._post(request, sleep)
            if not outcome.ok:
                return outcome
        return Outcome(True, status_code=outcome.status_code if requests else None)

    def _post(self, request: Request, sleep: Callable[[float], None]) -> Outcome:
        try:
            url = check_url(request.url)
        except ValueError as exc:
            return Outcome(False, error=str(exc), permanent=True)
        interval = getattr(self.receiver, "min_interval_s", 0.0)
        if interval and self.last_sent is not None:
            wait = self.last_sent + interval - time.monotonic()
            if wait > 0:
                sleep(wait)
        try:
            with httpx.Client(timeout=self.receiver.timeout_s, follow_redirects=False) as client:
                self.last_sent = time.monotonic()
                if request.content is not None:
                    response = client.post(url, content=request.content, headers=request.headers)
                else:
                    response = client.post(url, json=request.body, headers=request.headers)
        except PERMANENT_ERRORS as exc:
            return Outcome(False, error=secrets.scrub(f"{type(exc).__name__}: {exc}"), permanent=True)
        except httpx.HTTPError as exc:
            return Outcome(False, error=secrets.scrub(f"{type(exc).__name__}: {exc}"))
        if response.status_code in request.ok_statuses:
            return Outcome(True, status_code=response.status_code)
        retry_after = (
            parse_retry_after(response.headers.get("Retry-After")) if response.status_code in (429, 503) else None
        )
        body = secrets.scrub(response.text[:300].strip())
        return Outcome(
            False,
            status_code=response.status_code,
            error=f"HTTP {response.status_code}: {body}",
            retry_after_s=retry_after,
            permanent=is_permanent_status(response.status_code),
        )


class _Heartbeat:
    """Renews a flush's lease on the messages it holds until stopped."""

    def __init__(self, db: Database, token: str, lease: timedelta, clock: Callable[[], datetime]) -> None:
        self.db, self.token, self.lease, self.clock = db, token, lease, clock
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lorawatch-flush-heartbeat", daemon=True)

    def _run(self) -> None:
        interval = max(min(self.lease.total_seconds() / 3, 10.0), 0.05)
        while not self.stop.wait(interval):
            try:
                with self.db.session() as session:
                    session.execute(
                        update(Notification)
                        .where(
                            Notification.claimed_by == self.token,
                            Notification.status == "pending",
                            Notification.claimed_until.is_not(None),
                        )
                        .values(claimed_until=self.clock() + self.lease)
                    )
            except Exception:  # a busy database: the lease has slack; try again next beat
                log.warning("could not renew the flush's lease; retrying", exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


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
    token = uuid.uuid4().hex
    queued = 0
    if dispatch_first:
        with db.session() as session:
            queued = len(dispatch(session, settings, start_wall, skip_group_wait=skip_group_wait))
    configured = settings.alerts.all_receivers
    lease = max(settings.alerts.flush_lease, timedelta(seconds=max(r.timeout_s for r in configured.values()) + 1))
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
            note.claimed_until, note.claimed_by = start_wall + lease, token
            claimed.setdefault(note.receiver, []).append(note.id)
    results: dict[str, dict[str, int]] = {}
    lock = threading.Lock()
    job = _Flush(db, settings, token, end, clock, sleep, rng)

    def run_receiver(name: str, ids: list[int]) -> None:
        counts = {"delivered": 0, "deferred": 0, "failed": 0, "attempts": 0, "taken": 0}
        receiver = configured.get(name)
        if receiver is None:  # removed from the settings: nothing can deliver these; say so and end them
            job.fail(ids, error=f"receiver {name!r} is not configured (any more)")
            counts["failed"] = len(ids)
        else:
            sender = _Sender(receiver, settings)
            for position, note_id in enumerate(ids):
                state, attempts = job.deliver(note_id, sender, receiver)
                counts["attempts"] += attempts
                if state == "deferred":  # the rest keep their order behind it
                    counts["deferred"] += len(ids) - position
                    job.release(ids[position + 1 :])
                    break
                counts[{"sent": "delivered", "failed": "failed", "taken": "taken"}[state]] += 1
        with lock:
            results[name] = counts

    if claimed:
        with _Heartbeat(db, token, lease, clock), ThreadPoolExecutor(max_workers=min(8, len(claimed))) as pool:
            list(pool.map(lambda item: run_receiver(*item), claimed.items()))
    keys = ("delivered", "deferred", "failed", "attempts", "taken")
    total = {k: sum(r[k] for r in results.values()) for k in keys}
    with db.session() as session:
        pending = session.scalar(select(func.count()).select_from(Notification).where(Notification.status == "pending"))
    return {
        "queued": queued,
        **total,
        "pending": pending,
        "receivers": results,
        "seconds": round(time.monotonic() - start_mono, 3),
    }


@dataclass
class _Flush:
    """One flush's delivery state: who it is, until when it may work, and its clocks."""

    db: Database
    settings: Settings
    token: str
    end: float
    clock: Callable[[], datetime]
    sleep: Callable[[float], None]
    rng: random.Random

    def deliver(self, note_id: int, sender: _Sender, receiver: Receiver) -> tuple[str, int]:
        """Try one notification until it is sent, fails for good, or must wait for a later
        flush. Returns the end state (sent, failed, deferred, taken) and the attempts made."""
        attempts = 0
        while True:
            if time.monotonic() >= self.end:
                self.release([note_id])
                return "deferred", attempts
            with self.db.session() as session:
                note = session.get(Notification, note_id)
                if note is None or note.claimed_by != self.token or note.status != "pending":
                    return "taken", attempts  # our lease lapsed and another flush holds it now
                payload = note.payload
            started = time.monotonic()
            outcome = sender.send(payload, note_id, self.sleep)
            duration_ms = (time.monotonic() - started) * 1000
            attempts += 1
            state, delay = self._record(note_id, outcome, duration_ms, receiver)
            if state != "retry":
                return state, attempts
            self.sleep(delay)

    def _record(self, note_id: int, outcome: Outcome, duration_ms: float, receiver: Receiver) -> tuple[str, float]:
        """Store one attempt and decide what comes next: sent, failed, deferred, or retry."""
        ts = self.clock()
        error = secrets.scrub(outcome.error) if outcome.error else None
        with self.db.session() as session:
            note = session.get(Notification, note_id)
            assert note is not None
            note.attempts += 1
            session.add(
                DeliveryAttempt(
                    notification_id=note_id,
                    ts=ts,
                    ok=outcome.ok,
                    status_code=outcome.status_code,
                    error=error,
                    retry_after_s=outcome.retry_after_s,
                    duration_ms=duration_ms,
                    permanent=outcome.permanent,
                )
            )
            if outcome.ok:
                note.status, note.delivered_at, note.last_error = "sent", ts, None
                note.claimed_until = note.claimed_by = None
                return "sent", 0.0
            note.last_error = error
            age = ts - max(note.created_at, note.retried_at or note.created_at)
            why = None
            if outcome.permanent:
                why = "a permanent error"
            elif note.attempts >= receiver.max_attempts:
                why = f"{note.attempts} attempts (max_attempts)"
            elif age >= receiver.max_age:
                why = f"{age} in the outbox (max_age)"
            if why:
                note.status, note.failed_at = "failed", ts
                note.claimed_until = note.claimed_by = None
                log.warning("notification %s to %s failed after %s: %s", note_id, note.receiver, why, error)
                return "failed", 0.0
            delay = (
                outcome.retry_after_s
                if outcome.retry_after_s is not None
                else backoff_delay(
                    note.attempts - 1,
                    initial=self.settings.alerts.retry_initial_s,
                    maximum=self.settings.alerts.retry_max_s,
                    rng=self.rng,
                )
            )
            if time.monotonic() + delay > self.end:
                note.next_attempt_at = ts + timedelta(seconds=delay)
                note.claimed_until = note.claimed_by = None
                log.warning(
                    "notification %s to %s deferred after %s attempts: %s", note_id, note.receiver, note.attempts, error
                )
                return "deferred", delay
            return "retry", delay

    def fail(self, ids: list[int], *, error: str) -> None:
        """End this flush's claimed notifications as failed (``notify retry`` sends them again)."""
        ts = self.clock()
        with self.db.session() as session:
            for note in session.scalars(
                select(Notification).where(Notification.id.in_(ids), Notification.claimed_by == self.token)
            ):
                note.status, note.failed_at, note.last_error = "failed", ts, error
                note.claimed_until = note.claimed_by = None
        log.warning("%d notification(s) failed: %s", len(ids), error)

    def release(self, ids: list[int], *, error: str | None = None) -> None:
        """Give this flush's claimed notifications back to the next flush (recording why)."""
        if not ids:
            return
        with self.db.session() as session:
            for note in session.scalars(
                select(Notification).where(Notification.id.in_(ids), Notification.claimed_by == self.token)
            ):
                note.claimed_until = note.claimed_by = None
                if error is not None:
                    note.last_error = error


def retry(db: Database, note_id: int, *, actor: str, now: datetime | None = None) -> dict[str, Any]:
    """Send a failed notification again: it is pending from now, with a fresh attempt budget."""
    now = now or utcnow()
    with db.session() as session:
        note = session.get(Notification, note_id)
        if note is None:
            raise NotFoundError(f"no notification {note_id}", fix="list them with `lorawatch notify list`")
        if note.status != "failed":
            raise ConflictError(
                f"notification {note_id} is {note.status}, not failed", fix="only failed notifications are retried"
            )
        note.status, note.failed_at, note.retried_at, note.next_attempt_at = "pending", None, now, now
        note.attempts = 0
        audit.record(
            session,
            actor=actor,
            action="notification.retry",
            object_type="notification",
            object_id=str(note_id),
            details={"receiver": note.receiver},
        )
        return {"id": note_id, "receiver": note.receiver, "status": note.status}


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
                "failed_at": n.failed_at,
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
                "permanent": a.permanent,
            }
            for a in rows
        ]
