"""Slack incoming webhooks: a Block Kit message with a header, one section of fields per alert
(up to 5), and buttons to the runbook and the dashboard. Slack answers 429 with Retry-After
and allows about one message a second per webhook (the outbox paces it)."""

from __future__ import annotations

from typing import Any

from lorawatch.alerts.channels import Request, fmt_value, runbook_of, title
from lorawatch.settings import Settings

MAX_ALERTS = 5


def build(payload: dict[str, Any], receiver, settings: Settings) -> list[Request]:
    url = receiver.url.resolve()
    head = title(payload)
    emoji = ":rotating_light:" if payload["status"] == "firing" else ":white_check_mark:"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{head}"[:150], "emoji": True}}
    ]
    for alert in payload["alerts"][:MAX_ALERTS]:
        labels = alert["labels"]
        summary = alert["annotations"].get("summary") or labels.get("alertname", "")
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{emoji} *{alert['status'].upper()}* {summary}"[:3000]},
            }
        )
        fields = [
            ("Rule", labels.get("alertname")),
            ("Severity", labels.get("severity")),
            ("Adapter", labels.get("adapter")),
            ("Version", labels.get("version")),
            ("Value", fmt_value(alert.get("value"))),
            ("Threshold", fmt_value(alert.get("threshold"))),
        ]
        blocks.append(
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields if v]}
        )
    if len(payload["alerts"]) > MAX_ALERTS:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"and {len(payload['alerts']) - MAX_ALERTS} more alerts"}],
            }
        )
    buttons = []
    runbook = runbook_of(payload)
    if runbook:
        buttons.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Runbook"},
                "url": runbook,
                "action_id": "runbook",
            }
        )
    buttons.append(
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Dashboard"},
            "url": payload["externalURL"],
            "action_id": "dashboard",
        }
    )
    blocks.append({"type": "actions", "elements": buttons})
    return [Request(url=url, body={"text": head, "blocks": blocks}, secrets=[url])]
