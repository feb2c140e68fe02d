"""Microsoft Teams Workflows webhooks: a message with one Adaptive Card (a title, a fact set per
alert, and actions that open the runbook and the dashboard)."""

from __future__ import annotations

from typing import Any

from lorawatch.alerts.channels import Request, fmt_value, runbook_of, title
from lorawatch.settings import Settings


def build(payload: dict[str, Any], receiver, settings: Settings) -> list[Request]:
    url = receiver.url.resolve()
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": title(payload),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": "Attention" if payload["status"] == "firing" else "Good",
        }
    ]
    for alert in payload["alerts"][:10]:
        labels = alert["labels"]
        body.append(
            {
                "type": "TextBlock",
                "text": alert["annotations"].get("summary", labels.get("alertname", "")),
                "wrap": True,
            }
        )
        facts = [
            ("Status", alert["status"]),
            ("Severity", labels.get("severity")),
            ("Adapter", labels.get("adapter")),
            ("Version", labels.get("version")),
            ("Value", fmt_value(alert.get("value"))),
        ]
        body.append({"type": "FactSet", "facts": [{"title": k, "value": str(v)} for k, v in facts if v]})
    actions = []
    runbook = runbook_of(payload)
    if runbook:
        actions.append({"type": "Action.OpenUrl", "title": "Runbook", "url": runbook})
    actions.append({"type": "Action.OpenUrl", "title": "Dashboard", "url": payload["externalURL"]})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": actions,
    }
    message = {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }
    return [Request(url=url, body=message, secrets=[url])]
