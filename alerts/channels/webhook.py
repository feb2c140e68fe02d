"""Generic webhooks: the Alertmanager v4 webhook payload, as Alertmanager itself sends it, plus
``notificationId`` (the same for every retry of one message, so a receiver can drop repeats).

With ``signing_secret`` the body is signed (HMAC-SHA256, like Stripe's and Slack's webhooks):
``X-LoraWatch-Timestamp`` holds the Unix time of sending and ``X-LoraWatch-Signature`` holds
``v1=`` and the hex HMAC-SHA256 of ``<timestamp>.<body bytes>`` under the secret. A receiver
recomputes it over the raw body, compares in constant time, and rejects old timestamps
(docs/alerts.md has the recipe).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from lorawatch.alerts.channels import Request
from lorawatch.settings import Settings, WebhookReceiver


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=<hex>``: the HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def build(payload: dict[str, Any], receiver: WebhookReceiver, settings: Settings) -> list[Request]:
    url = receiver.url.resolve()
    body = {k: v for k, v in payload.items() if k != "lorawatch"}
    body["notificationId"] = payload.get("lorawatch", {}).get("notificationId")
    if receiver.max_alerts and len(body["alerts"]) > receiver.max_alerts:
        body["truncatedAlerts"] = len(body["alerts"]) - receiver.max_alerts
        body["alerts"] = body["alerts"][: receiver.max_alerts]
    content = json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()
    headers = {"Content-Type": "application/json"}
    if receiver.signing_secret is not None:
        secret = receiver.signing_secret.resolve()
        timestamp = str(int(time.time()))
        headers["X-LoraWatch-Timestamp"] = timestamp
        headers["X-LoraWatch-Signature"] = signature(secret, timestamp, content)
    return [Request(url=url, body=body, content=content, headers=headers)]
