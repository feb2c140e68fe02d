"""Microsoft Teams Workflows webhooks: a message with one Adaptive Card (a title, a fact set per
alert, and actions that open the runbook and the dashboard)."""

from __future__ import annotations

from typing import Any

from lorawatch.alerts.channels import Request, fmt_value, links, title, user_text
from lorawatch.settings import Settings, TeamsReceiver


def build(payload: dict[str, Any], receiver: TeamsReceiver, settings: Settings) -> list[Request]:
    url = receiver.url.resolve()
    text = user_text(receiver, "text", payload)
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": user_text(receiver, "title", payload) or title(payload),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": "Attention" if payload["status"] == "firing" else "Good",
        }
    ]
    if text:
        body.append({"type": "TextBlock", "text": text, "wrap": True})
    for alert in [] if text else payload["alerts"][:10]:
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
    actions = [{"type": "Action.OpenUrl", "title": name, "url": link} for name, link in links(payload)]
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
    return [Request(url=url, body=message)]
