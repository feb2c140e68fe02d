"""Slack incoming webhooks: a Block Kit message with a header, one section of fields per alert
(up to 5), and buttons to the runbook and the dashboard. A receiver's ``template`` replaces the
header (title) and the alert sections (text); the buttons stay. Slack answers 429 with
Retry-After and allows about one message a second per webhook (the outbox paces it)."""

from __future__ import annotations

from typing import Any

from lorawatch.alerts.channels import Request, fmt_value, links, title, user_text
from lorawatch.settings import Settings, SlackReceiver

MAX_ALERTS = 5


def build(payload: dict[str, Any], receiver: SlackReceiver, settings: Settings) -> list[Request]:
    url = receiver.url.resolve()
    head = user_text(receiver, "title", payload) or title(payload)
    emoji = ":rotating_light:" if payload["status"] == "firing" else ":white_check_mark:"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{head}"[:150], "emoji": True}}
    ]
    text = user_text(receiver, "text", payload)
    if text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
    for alert in [] if text else payload["alerts"][:MAX_ALERTS]:
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
    if not text and len(payload["alerts"]) > MAX_ALERTS:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"and {len(payload['alerts']) - MAX_ALERTS} more alerts"}],
            }
        )
    buttons = [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": name},
            "url": link,
            "action_id": name.split()[0].lower(),
        }
        for name, link in links(payload)
    ]
    blocks.append({"type": "actions", "elements": buttons})
    return [Request(url=url, body={"text": head, "blocks": blocks})]
