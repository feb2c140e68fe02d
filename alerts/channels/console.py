"""The console: one readable block per notification on stdout."""

from __future__ import annotations

import sys
from typing import Any

from lorawatch.alerts.channels import fmt_value, title
from lorawatch.settings import Settings


def render(payload: dict[str, Any]) -> str:
    lines = [title(payload)]
    for alert in payload["alerts"]:
        labels = alert["labels"]
        lines.append(
            f"  {alert['status']:<8} {labels.get('severity', ''):<8} {labels.get('adapter', '-')} "
            f"{labels.get('version', '')} value={fmt_value(alert.get('value'))}: {alert['annotations'].get('summary', '')}"
        )
        if alert["annotations"].get("runbook_url"):
            lines.append(f"           runbook: {alert['annotations']['runbook_url']}")
    return "\n".join(lines)


def deliver(payload: dict[str, Any], receiver, settings: Settings) -> None:
    sys.stdout.write(render(payload) + "\n")
    sys.stdout.flush()
