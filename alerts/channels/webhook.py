"""Generic webhooks: the Alertmanager v4 webhook payload, as Alertmanager itself sends it."""

from __future__ import annotations

from typing import Any

from lorawatch.alerts.channels import Request
from lorawatch.settings import Settings


def build(payload: dict[str, Any], receiver, settings: Settings) -> list[Request]:
    url = receiver.url.resolve()
    body = {k: v for k, v in payload.items() if k != "lorawatch"}
    if receiver.max_alerts and len(body["alerts"]) > receiver.max_alerts:
        body["truncatedAlerts"] = len(body["alerts"]) - receiver.max_alerts
        body["alerts"] = body["alerts"][: receiver.max_alerts]
    return [Request(url=url, body=body, secrets=[url])]
