"""PagerDuty Events API v2: one ``trigger`` or ``resolve`` event per alert, with the alert's
fingerprint as ``dedup_key`` (so a retried message never opens a second incident) and links
to the runbook and the dashboard."""

from __future__ import annotations

from typing import Any

from lorawatch.alerts.channels import Request
from lorawatch.settings import Settings

SEVERITIES = {"critical": "critical", "warning": "warning", "info": "info"}


def build(payload: dict[str, Any], receiver, settings: Settings) -> list[Request]:
    key = receiver.routing_key.resolve()
    out = []
    for alert in payload["alerts"]:
        labels = alert["labels"]
        links = [{"href": alert["generatorURL"], "text": "LoraWatch dashboard"}]
        if alert["annotations"].get("runbook_url"):
            links.insert(0, {"href": alert["annotations"]["runbook_url"], "text": "Runbook"})
        event: dict[str, Any] = {
            "routing_key": key,
            "dedup_key": alert["fingerprint"],
            "event_action": "trigger" if alert["status"] == "firing" else "resolve",
        }
        if alert["status"] == "firing":
            event.update(
                {
                    "payload": {
                        "summary": (alert["annotations"].get("summary") or labels.get("alertname", "alert"))[:1024],
                        "source": labels.get("adapter", "lorawatch"),
                        "severity": SEVERITIES.get(labels.get("severity"), "warning"),
                        "timestamp": alert["startsAt"],
                        "component": labels.get("adapter"),
                        "group": labels.get("base_model"),
                        "class": labels.get("alertname"),
                        "custom_details": {
                            "labels": labels,
                            "value": alert.get("value"),
                            "threshold": alert.get("threshold"),
                            "description": alert["annotations"].get("description"),
                        },
                    },
                    "links": links,
                    "client": "LoraWatch",
                    "client_url": payload["externalURL"],
                }
            )
        out.append(Request(url=receiver.events_url, body=event))
    return out
