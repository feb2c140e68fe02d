"""Latency benchmark: per-adapter percentiles from merged DDSketches vs exact pandas quantiles.

    python benchmarks/latency.py [--rows 10000000] [--adapters 100] [--days 7]

Writes synthetic request records (log-normal latencies, a different scale per adapter) to a
Parquet file, ingests it with `lorawatch ingest requests`' code into a fresh SQLite database,
then computes the 7-day P50/P95/P99 of every adapter two ways, side by side in one process:
merged per-minute sketches (what `lorawatch latency` does) and pandas' exact quantile over the
raw rows. Prints rows/s, both timings and the largest relative error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--adapters", type=int, default=100)
    parser.add_argument("--days", type=float, default=7)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    from lorawatch.db import Database
    from lorawatch.monitors.traffic import ingest_requests, latency

    end = datetime(2026, 11, 30, tzinfo=UTC)
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        adapter_idx = rng.integers(0, args.adapters, args.rows)
        scale = np.linspace(4.5, 6.5, args.adapters)[adapter_idx]
        seconds = rng.uniform(0, args.days * 86400, args.rows)
        frame = pd.DataFrame(
            {
                "ts": pd.Timestamp(end - timedelta(days=args.days)) + pd.to_timedelta(seconds, unit="s"),
                "adapter_id": pd.Categorical.from_codes(
                    adapter_idx, [f"adapter-{i:03d}" for i in range(args.adapters)]
                ),
                "tenant": pd.Categorical.from_codes(
                    rng.integers(0, 4, args.rows), ["acme", "globex", "initech", "umbrella"]
                ),
                "latency_ms": rng.lognormal(scale, 0.6),
                "completion_tokens": rng.integers(1, 400, args.rows),
            }
        )
        path = Path(tmp) / "requests.parquet"
        frame.to_parquet(path, index=False)
        print(
            f"generated {args.rows:,} records, {args.adapters} adapters, {args.days:g} days "
            f"in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e6:.0f} MB Parquet)"
        )

        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        db.upgrade()
        t0 = time.perf_counter()
        result = ingest_requests(db, path, actor="bench")
        ingest_s = time.perf_counter() - t0
        print(
            f"ingest: {ingest_s:.1f} s, {args.rows / ingest_s:,.0f} rows/s into {result['minutes']:,} adapter-tenant-minutes"
        )

        t0 = time.perf_counter()
        sketch_rows = {r["adapter"]: r for r in latency(db, window=timedelta(days=args.days), end=end)}
        sketch_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        exact = frame.groupby("adapter_id", observed=True)["latency_ms"].quantile([0.5, 0.95, 0.99]).unstack()
        exact_s = time.perf_counter() - t0

        errors = []
        for adapter, row in exact.iterrows():
            for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
                errors.append(abs(sketch_rows[adapter][key] / row[q] - 1))
        print(f"\n{'way':<42}{'seconds':>10}")
        print(f"{'merged sketches (lorawatch latency)':<42}{sketch_s:>10.2f}")
        print(f"{'pandas exact quantile on raw rows':<42}{exact_s:>10.2f}")
        print(
            f"\nrelative error vs exact over {len(errors)} percentiles: max {max(errors):.4%}, mean {np.mean(errors):.4%}"
        )
        sample = exact.index[0]
        print(
            f"{sample}: sketch P50/P95/P99 {sketch_rows[sample]['p50_ms']:.1f}/{sketch_rows[sample]['p95_ms']:.1f}/"
            f"{sketch_rows[sample]['p99_ms']:.1f} ms, exact {exact.loc[sample, 0.5]:.1f}/{exact.loc[sample, 0.95]:.1f}/"
            f"{exact.loc[sample, 0.99]:.1f} ms"
        )
        db.dispose()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
