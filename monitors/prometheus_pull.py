"""Pull per-adapter latency percentiles from a Prometheus server's HTTP API.

For each quantile it asks ``histogram_quantile(q, sum by (le, adapter_id) (rate(<metric>_bucket[w])))``
and stores one monitor result per adapter (``latency_p50``/``latency_p95``/``latency_p99`` with
``source: prometheus``), so the alerts and the dashboard see serving latency even where no
request log is shipped.
"""

from __future__ import annotations

from typing import Any

import httpx

from lorawatch.db import Database
from lorawatch.db.models import MonitorResult
from lorawatch.db.types import utcnow
from lorawatch.errors import DependencyError, InputError

QUANTILES = {"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}


def query(url: str, promql: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Run an instant query; returns Prometheus' result vector."""

    try:
        response = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise DependencyError(
            f"Prometheus at {url} is unreachable ({type(exc).__name__})", fix="check the URL and that the server is up"
        ) from None
    if response.status_code == 400:
        raise InputError(
            f"Prometheus refused the query: {response.json().get('error', response.text)[:200]}",
            fix="check the metric name and window",
        )
    response.raise_for_status()
    body = response.json()
    if body.get("status") != "success":
        raise DependencyError(f"Prometheus answered {body.get('status')}: {body.get('error')}", fix="check the server")
    return body["data"]["result"]


def pull_latency(
    db: Database, url: str, *, metric: str = "lorawatch_request_latency_seconds", window: str = "5m"
) -> list[dict[str, Any]]:
    """Store P50/P95/P99 (ms) per adapter as Prometheus computes them; returns the rows stored."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for monitor_id, q in QUANTILES.items():
        promql = f"histogram_quantile({q}, sum by (le, adapter_id) (rate({metric}_bucket[{window}])))"
        for item in query(url, promql):
            adapter = item["metric"].get("adapter_id")
            value = float(item["value"][1])
            if adapter is None or value != value:  # NaN: no traffic in the window
                continue
            rows.append(
                {
                    "monitor": monitor_id,
                    "adapter": adapter,
                    "value": value * 1000.0,
                    "details": {"source": "prometheus", "query": promql, "url": url},
                }
            )
    with db.session() as session:
        for r in rows:
            session.add(
                MonitorResult(
                    monitor=r["monitor"],
                    adapter=r["adapter"],
                    value=r["value"],
                    ts=now,
                    details=r["details"],
                    breached=False,
                )
            )
    return rows
