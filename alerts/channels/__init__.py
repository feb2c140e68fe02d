"""Notification channels, one module each. An HTTP channel turns a group notification (the
Alertmanager v4 payload built by ``lorawatch.alerts.dispatch``) into the requests its service
expects (``build``); the outbox sends them, with retries. Other channels send by themselves
(``send``, e.g. e-mail), raising ``DeliveryError`` that says whether a retry can help; local
channels (console, file) deliver directly (``deliver``).

Secrets (webhook URLs, routing keys) are resolved from the environment only when a request is
built; resolving registers them with ``lorawatch.secrets``, which scrubs every error message.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A channel that sends by itself (``send``) failed; ``permanent`` when no retry can help."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.permanent, self.retry_after_s = permanent, retry_after_s


@dataclass
class Request:
    """One HTTP request a channel wants sent."""

    url: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    ok_statuses: tuple[int, ...] = (200, 201, 202, 204)
    # the exact bytes to send instead of ``body`` as JSON (a signed body must not be re-encoded)
    content: bytes | None = None


def module_for(receiver_type: str):
    """The channel module of a receiver type."""

    return importlib.import_module(f"lorawatch.alerts.channels.{receiver_type}")


def title(payload: dict[str, Any]) -> str:
    """``[FIRING:2] CRITICAL logit_drift support-bot``: Alertmanager's default title, with the
    group's severity (the highest among its alerts) so a glance at the header says how urgent."""
    firing = sum(a["status"] == "firing" for a in payload["alerts"])
    status = f"FIRING:{firing}" if payload["status"] == "firing" else "RESOLVED"
    labels = " ".join(str(v) for v in payload["groupLabels"].values())
    severity = _highest(a["labels"].get("severity") for a in payload["alerts"])
    return " ".join(part for part in (f"[{status}]", severity.upper() if severity else "", labels) if part)


_SEVERITIES = ["info", "warning", "critical"]


def _highest(values: Any) -> str | None:
    known = [v for v in values if v in _SEVERITIES]
    return max(known, key=_SEVERITIES.index) if known else None


def runbook_of(payload: dict[str, Any]) -> str | None:
    """The runbook URL shared by the group's alerts, else the first one's."""
    common = payload.get("commonAnnotations", {}).get("runbook_url")
    if common:
        return common
    for alert in payload["alerts"]:
        if alert["annotations"].get("runbook_url"):
            return alert["annotations"]["runbook_url"]
    return None


_env = SandboxedEnvironment(autoescape=False)


def user_text(receiver: Any, key: str, payload: dict[str, Any]) -> str | None:
    """The receiver's own ``title`` or ``text`` rendered over the payload; None when it has none,
    or when it fails on this payload (logged, scrubbed; the built-in wording is used instead)."""
    template = getattr(receiver, "template", None)
    source = getattr(template, key, None) if template is not None else None
    if not source:
        return None
    try:
        return _env.from_string(source).render(**payload).strip() or None
    except Exception as exc:
        log.warning("the receiver's %s template failed on this notification (%s); using the default", key, exc)
        return None


def links(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """The links every message carries, whatever its template: the runbook, the dashboard's
    Alerts page opened on the group's first alert (a deep link, not the front page), and the
    incident the alerts belong to, when one is open."""
    runbook = runbook_of(payload)
    found = [("Runbook", runbook)] if runbook else []
    alerts = payload.get("alerts") or []
    target = alerts[0].get("generatorURL") if alerts else None
    incidents = (payload.get("lorawatch") or {}).get("incidents") or []
    opened = [(f"Incident {incidents[0]['id']}", incidents[0]["url"])] if incidents else []
    return [*found, ("Dashboard", target or payload["externalURL"]), *opened]


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
