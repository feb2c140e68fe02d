"""Seed the demo with weeks of serving traffic and KPI history, written as the files users
ingest (Parquet request logs and a KPI table) and loaded through the same ingestion.

The healthy adapter serves steadily; the drifted one's conversion sags; the risky one got
slower and its customer satisfaction fell after its release. Files are anchored to the
current day, so running the demo again on the same day ingests nothing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lorawatch.db import Database
from lorawatch.monitors.traffic import ingest_kpis, ingest_requests

PROFILES = {
    # adapter: (requests per hour, median latency ms, latency spread, slowdown in the last 2 days)
    "support-healthy": (60, 180.0, 0.35, 1.0),
    "support-drifted": (25, 210.0, 0.40, 1.0),
    "support-risky": (40, 190.0, 0.45, 6.0),
}
KPIS = {
    # adapter: {kpi: (baseline mean, sd, relative change in the last 7 days)}
    "support-healthy": {"csat": (4.4, 0.15, 0.0), "conversion": (0.081, 0.006, 0.0)},
    "support-drifted": {"csat": (4.3, 0.15, -0.02), "conversion": (0.079, 0.006, -0.25)},
    "support-risky": {"csat": (4.4, 0.15, -0.30), "conversion": (0.080, 0.006, -0.05)},
}


def seed(db: Database, folder: Path, *, actor: str, days: int = 14, kpi_days: int = 35) -> dict[str, Any]:
    """Write and ingest the demo's request logs and KPI table; returns what was ingested."""

    folder.mkdir(parents=True, exist_ok=True)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rng = np.random.default_rng(int(end.timestamp()) // 86400)
    frames = []
    for adapter, (per_hour, median, spread, slowdown) in PROFILES.items():
        hours = pd.date_range(end - timedelta(days=days), end, freq="h", inclusive="left", tz="UTC")
        counts = rng.poisson(per_hour, len(hours))
        ts = np.repeat(hours.values, counts) + rng.integers(0, 3_600_000_000_000, counts.sum()).astype(
            "timedelta64[ns]"
        )
        ts = pd.to_datetime(ts, utc=True)
        latency = rng.lognormal(np.log(median), spread, len(ts))
        late = ts >= end - timedelta(days=2)
        latency[late] *= slowdown
        frames.append(
            pd.DataFrame(
                {
                    "ts": ts,
                    "adapter_id": adapter,
                    "adapter_version": "v1",
                    "base_model_id": "smollm2-135m-instruct",
                    "tenant": rng.choice(["acme", "globex", "initech"], len(ts), p=[0.5, 0.3, 0.2]),
                    "latency_ms": latency.round(2),
                    "ttft_ms": (latency * 0.2).round(2),
                    "prompt_tokens": rng.integers(30, 400, len(ts)),
                    "completion_tokens": rng.integers(20, 200, len(ts)),
                    "gpu_seconds": (latency / 1000 * 0.6).round(4),
                    "status": np.where(rng.random(len(ts)) < 0.004, "error", "ok"),
                }
            )
        )
    requests = pd.concat(frames).sort_values("ts")
    requests_path = folder / f"requests-{end:%Y%m%d}.parquet"
    requests.to_parquet(requests_path, index=False)
    rows = []
    for adapter, kpis in KPIS.items():
        for kpi, (mean, sd, change) in kpis.items():
            for day in range(kpi_days, 0, -1):
                ts = end - timedelta(days=day) + timedelta(hours=12)
                level = mean * (1 + change) if day <= 7 else mean
                for _ in range(8):
                    rows.append(
                        {
                            "ts": ts.isoformat(),
                            "adapter_id": adapter,
                            "kpi": kpi,
                            "value": round(float(rng.normal(level, sd)), 5),
                        }
                    )
    kpi_path = folder / f"kpis-{end:%Y%m%d}.csv"
    pd.DataFrame(rows).to_csv(kpi_path, index=False)
    return {"requests": ingest_requests(db, requests_path, actor=actor), "kpis": ingest_kpis(db, kpi_path, actor=actor)}
