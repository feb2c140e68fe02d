"""Seed the demo with weeks of serving traffic and KPI history, written as the files users
ingest (Parquet request logs and a KPI table) and loaded through the same ingestion.

The healthy adapter serves steadily; the drifted one's conversion sags; the risky one got
slower and its customer satisfaction fell after its release. Traffic runs up to the minute
the demo runs; running it again adds only what is new.
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
    """Write and ingest the demo's request logs up to now and its KPI table up to yesterday;
    returns what was ingested.

    Requests come in chunks, one file each, named by the span they cover: the first run writes
    the last ``days`` days, a later run only what happened since the newest chunk, so the
    latency windows of the alert rules (5 minutes to 3 days) always hold traffic and nothing is
    counted twice. A chunk written but not ingested (a run killed in between) is ingested on
    the next run; one ingested already is recognised by its digest and skipped.
    """

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = (now - timedelta(days=days)).replace(minute=0)
    chunks = sorted(folder.glob("requests-*-*.parquet"))
    spans = [_span(path) for path in chunks]
    covered = max((end for _, end in spans if end is not None), default=None)
    begin = max(start, covered) if covered is not None else start
    if begin < now:
        path = folder / f"requests-{begin:%Y%m%dT%H%M}-{now:%Y%m%dT%H%M}.parquet"
        _requests(begin, now).to_parquet(path, index=False)
        chunks.append(path)
    ingested = [ingest_requests(db, path, actor=actor) for path in chunks]
    requests = {"rows": sum(r.get("rows", 0) for r in ingested), "files": len(chunks)}
    end = now.replace(hour=0, minute=0)
    rng = np.random.default_rng(int(end.timestamp()) // 86400)
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
    return {"requests": requests, "kpis": ingest_kpis(db, kpi_path, actor=actor)}


def _span(path: Path) -> tuple[datetime | None, datetime | None]:
    try:
        _, first, last = path.stem.split("-")
        return (
            datetime.strptime(first, "%Y%m%dT%H%M").replace(tzinfo=UTC),
            datetime.strptime(last, "%Y%m%dT%H%M").replace(tzinfo=UTC),
        )
    except ValueError:
        return None, None


def _requests(begin: datetime, end: datetime) -> pd.DataFrame:
    """Request records from ``begin`` to ``end`` per the profiles: Poisson arrivals per minute,
    log-normal latencies, the risky adapter six times slower in the last two days."""
    rng = np.random.default_rng(int(begin.timestamp()) // 60)
    minutes = pd.date_range(begin, end, freq="min", inclusive="left")
    frames = []
    for adapter, (per_hour, median, spread, slowdown) in PROFILES.items():
        counts = rng.poisson(per_hour / 60, len(minutes))
        ts = np.repeat(minutes.tz_convert(None).to_numpy(), counts) + rng.integers(
            0, 60_000_000_000, counts.sum()
        ).astype("timedelta64[ns]")
        ts = pd.to_datetime(ts, utc=True)
        latency = rng.lognormal(np.log(median), spread, len(ts))
        latency[ts >= end - timedelta(days=2)] *= slowdown
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
    return pd.concat(frames).sort_values("ts")
