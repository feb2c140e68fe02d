"""Notification channels, one module each. An HTTP channel turns a group notification (the
Alertmanager v4 payload built by ``lorawatch.alerts.dispatch``) into the requests its service expects;
the outbox sends them, with retries. Local channels (console, file) deliver directly.

Secrets (webhook URLs, routing keys) are resolved from the environment only when a request is
built, and are listed in ``Request.secrets`` so that error messages can be scrubbed of them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    """One HTTP request a channel wants sent."""

    url: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    ok_statuses: tuple[int, ...] = (200, 201, 202, 204)
    # the exact bytes to send instead of ``body`` as JSON (a signed body must not be re-encoded)
    content: bytes | None = None


def module_for(receiver_type: str):
    """The channel module of a receiver type."""

    return importlib.import_module(f"lorawatch.alerts.channels.{receiver_type}")


def title(payload: dict[str, Any]) -> str:
    """``[FIRING:2] logit_drift support-bot`` (Alertmanager's default title)."""
    firing = sum(a["status"] == "firing" for a in payload["alerts"])
    status = f"FIRING:{firing}" if payload["status"] == "firing" else "RESOLVED"
    labels = " ".join(str(v) for v in payload["groupLabels"].values())
    return f"[{status}] {labels}".strip()


def runbook_of(payload: dict[str, Any]) -> str | None:
    """The runbook URL shared by the group's alerts, else the first one's."""
    common = payload.get("commonAnnotations", {}).get("runbook_url")
    if common:
        return common
    for alert in payload["alerts"]:
        if alert["annotations"].get("runbook_url"):
            return alert["annotations"]["runbook_url"]
    return None


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
