"""Prometheus Alertmanager API v2: ``POST /api/v2/alerts`` with the group's alerts.

Alertmanager expires an alert at ``endsAt``; firing alerts are sent with ``endsAt`` two repeat
intervals ahead (the group is re-sent every repeat interval while it fires), resolved ones
with their resolution time, so Alertmanager's own routing, grouping and silences take over.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from lorawatch.alerts.channels import Request
from lorawatch.settings import Settings


def build(payload: dict[str, Any], receiver, settings: Settings) -> list[Request]:
    base = receiver.url.resolve().rstrip("/")
    sent = datetime.strptime(payload["lorawatch"]["sentAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
    horizon = timedelta(seconds=2 * payload["lorawatch"]["repeatIntervalSeconds"])
    alerts = []
    for alert in payload["alerts"]:
        ends = alert["endsAt"] if alert["status"] == "resolved" else (sent + horizon).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        annotations = {k: str(v) for k, v in alert["annotations"].items()}
        if alert.get("value") is not None:
            annotations["value"] = f"{alert['value']:.6g}"
        alerts.append(
            {
                "labels": alert["labels"],
                "annotations": annotations,
                "startsAt": alert["startsAt"],
                "endsAt": ends,
                "generatorURL": alert["generatorURL"],
            }
        )
    return [Request(url=f"{base}/api/v2/alerts", body=alerts)]
