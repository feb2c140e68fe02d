"""The console: one readable block per notification on stdout."""

from __future__ import annotations

import sys
from typing import Any

from lorawatch.alerts.channels import fmt_value, links, title, user_text
from lorawatch.settings import ConsoleReceiver, Settings


def render(payload: dict[str, Any], receiver: ConsoleReceiver | None = None) -> str:
    head = user_text(receiver, "title", payload) or title(payload)
    text = user_text(receiver, "text", payload)
    if text:
        return "\n".join([head, text, *(f"  {name}: {link}" for name, link in links(payload))])
    lines = [head]
    for alert in payload["alerts"]:
        labels = alert["labels"]
        lines.append(
            f"  {alert['status']:<8} {labels.get('severity', ''):<8} {labels.get('adapter', '-')} "
            f"{labels.get('version', '')} value={fmt_value(alert.get('value'))}: {alert['annotations'].get('summary', '')}"
        )
        if alert["annotations"].get("runbook_url"):
            lines.append(f"           runbook: {alert['annotations']['runbook_url']}")
    return "\n".join(lines)


def deliver(payload: dict[str, Any], receiver: ConsoleReceiver, settings: Settings) -> None:
    sys.stdout.write(render(payload, receiver) + "\n")
    sys.stdout.flush()
