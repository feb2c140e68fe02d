"""How fast the dashboard's pages render on a large fleet: 500 adapters, a year of weekly canary
runs (their monitor results overall and per segment; the latest run's 225 per-prompt outputs
for one adapter), 30 days of hourly traffic per adapter, a year of daily KPIs, firing alerts,
incidents and 10,000 job runs. Each page is rendered with Streamlit's AppTest (the server-side
script run, which is what a page costs) a few times; the median is printed.

    python benchmarks/dashboard.py [--adapters 500] [--weeks 52] [--traffic-days 30] [--db PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PAGES = ["overview", "adapter", "alerts", "incidents", "canary_runs", "registry", "costs", "jobs"]


def build(url: str, adapters: int, weeks: int, traffic_days: int) -> dict[str, int]:
    import numpy as np
    from sqlalchemy import insert

    from lorawatch.db import Database
    from lorawatch.db.models import (
        AdapterAlias,
        AdapterRecord,
        AdapterVersion,
        Alert,
        BaseModelRecord,
        CanaryBaseOutput,
        CanaryDatasetRecord,
        CanaryResult,
        CanaryRun,
        Incident,
        JobRun,
        KpiValue,
        MonitorResult,
        TrafficHour,
    )
    from lorawatch.db.types import utcnow
    from lorawatch.monitors.sketch import DDSketch

    db = Database(url)
    db.upgrade()
    now = utcnow()
    rng = np.random.default_rng(0)
    counts = {}
    with db.session() as s:
        base = BaseModelRecord(name="base-1b", sha256="0" * 64, files={}, created_by="bench")
        s.add(base)
        s.flush()
        s.execute(
            insert(AdapterRecord),
            [
                {
                    "id": i + 1,
                    "name": f"adapter-{i:03d}",
                    "base_model_id": base.id,
                    "created_by": "bench",
                    "created_at": now,
                }
                for i in range(adapters)
            ],
        )
        s.execute(
            insert(AdapterVersion),
            [
                {
                    "id": i + 1,
                    "adapter_id": i + 1,
                    "version": "v1",
                    "peft_type": "LORA",
                    "rank": 16,
                    "alpha": 32,
                    "target_modules": ["q_proj"],
                    "files": {},
                    "content_sha256": "0" * 64,
                    "storage": "reference",
                    "path": "/dev/null",
                    "created_by": "bench",
                    "created_at": now,
                    "last_used_at": now,
                    "lineage": {},
                    "performance": {},
                    "risk": {},
                    "ownership": {"team": f"team-{i % 20}"},
                    "owner_team": f"team-{i % 20}",
                }
                for i in range(adapters)
            ],
        )
        s.execute(
            insert(AdapterAlias),
            [
                {"adapter_id": i + 1, "alias": "production", "tenant": "", "version_id": i + 1, "updated_at": now}
                for i in range(adapters)
            ],
        )
        dataset = CanaryDatasetRecord(
            sha256="1" * 64, name="core-v1", path="canary_data/core-v1.jsonl", n_prompts=225, segments={}
        )
        s.add(dataset)
        s.flush()
        run_ids = []
        for w in range(weeks):
            run = CanaryRun(
                dataset_id=dataset.id,
                base_model_id=base.id,
                status="complete",
                config={},
                device="cuda:0",
                adapters=[
                    {"key": f"a{i}", "adapter": f"adapter-{i:03d}", "version": "v1", "version_id": i + 1}
                    for i in range(adapters)
                ],
                started_at=now - timedelta(weeks=weeks - w),
                heartbeat_at=now,
                finished_at=now - timedelta(weeks=weeks - w),
                prompts_done=225,
                started_by="scheduler",
            )
            s.add(run)
            s.flush()
            run_ids.append(run.id)
        emb = bytes(384 * 2)
        s.execute(
            insert(CanaryBaseOutput),
            [
                {
                    "run_id": run_ids[-1],
                    "prompt_id": f"p{k:03d}",
                    "segment": "support",
                    "output": "base output " * 8,
                    "new_tokens": 48,
                    "latency_ms": 10.0,
                    "embedding": emb,
                }
                for k in range(225)
            ],
        )
        s.execute(
            insert(CanaryResult),
            [
                {
                    "run_id": run_ids[-1],
                    "prompt_id": f"p{k:03d}",
                    "segment": "support",
                    "adapter_version_id": 1,
                    "adapter": "adapter-000",
                    "version": "v1",
                    "scored_tokens": 40,
                    "scored_on": "reference",
                    "kl_mean": 0.3,
                    "kl_max": 1.0,
                    "js_mean": 0.05,
                    "top1_agreement": 0.8,
                    "ref_logprob_base": -2.0,
                    "ref_logprob_adapted": -1.9,
                    "ref_logprob_delta": 0.1,
                    "output": "adapted output " * 8,
                    "new_tokens": 48,
                    "latency_ms": 10.0,
                    "tokens_per_s": 4800.0,
                    "embedding_cosine_distance": 0.2,
                    "embedding": emb,
                    "toxicity": 0.01,
                    "pii_leaks": [],
                }
                for k in range(225)
            ],
        )
        monitors = [
            ("logit_kl", 1.0),
            ("logit_js", 0.2),
            ("embedding_mmd", 0.05),
            ("toxicity_rate", 0.05),
            ("pii_leak_rate", 0.02),
            ("top1_agreement", 0.5),
        ]
        rows = []
        for w in range(weeks):
            ts = now - timedelta(weeks=weeks - w)
            for i in range(adapters):
                for m, th in monitors:
                    value = float(rng.gamma(2, th / 4))
                    rows.append(
                        {
                            "ts": ts,
                            "monitor": m,
                            "adapter": f"adapter-{i:03d}",
                            "version": "v1",
                            "value": value,
                            "threshold": th,
                            "breached": value > th,
                            "run_id": run_ids[w],
                            "adapter_version_id": i + 1,
                        }
                    )
                for seg in ("finance", "healthcare", "media", "redteam", "support"):
                    rows.append(
                        {
                            "ts": ts,
                            "monitor": "logit_kl",
                            "adapter": f"adapter-{i:03d}",
                            "version": "v1",
                            "segment": seg,
                            "value": float(rng.gamma(2, 0.25)),
                            "threshold": 1.0,
                            "breached": False,
                            "run_id": run_ids[w],
                            "adapter_version_id": i + 1,
                        }
                    )
            if len(rows) > 50_000:
                s.execute(insert(MonitorResult), rows)
                counts["monitor_results"] = counts.get("monitor_results", 0) + len(rows)
                rows = []
        if rows:
            s.execute(insert(MonitorResult), rows)
            counts["monitor_results"] = counts.get("monitor_results", 0) + len(rows)
        sketch = DDSketch()
        for v in rng.lognormal(5.3, 0.4, 200):
            sketch.add(float(v))
        blob = sketch.to_bytes()
        hour0 = now.replace(minute=0, second=0, microsecond=0)
        rows = []
        for h in range(traffic_days * 24):
            minute = hour0 - timedelta(hours=traffic_days * 24 - h)
            rows += [
                {
                    "minute": minute,
                    "adapter": f"adapter-{i:03d}",
                    "version": "v1",
                    "tenant": "",
                    "base_model": "base-1b",
                    "requests": 200,
                    "errors": 0,
                    "prompt_tokens": 20000,
                    "completion_tokens": 30000,
                    "gpu_seconds": 20.0,
                    "latency_sketch": blob,
                    "ttft_sketch": None,
                }
                for i in range(adapters)
            ]
            if len(rows) > 50_000:
                s.execute(insert(TrafficHour), rows)
                counts["traffic_hours"] = counts.get("traffic_hours", 0) + len(rows)
                rows = []
        if rows:
            s.execute(insert(TrafficHour), rows)
            counts["traffic_hours"] = counts.get("traffic_hours", 0) + len(rows)
        s.execute(
            insert(KpiValue),
            [
                {
                    "ts": now - timedelta(days=d),
                    "adapter": f"adapter-{i:03d}",
                    "tenant": "",
                    "kpi": "csat",
                    "value": float(rng.normal(4.3, 0.2)),
                }
                for d in range(365)
                for i in range(adapters)
            ],
        )
        counts["kpi_values"] = 365 * adapters
        s.execute(
            insert(Alert),
            [
                {
                    "fingerprint": f"{i:016x}",
                    "rule_id": "logit_drift",
                    "labels": {
                        "alertname": "logit_drift",
                        "adapter": f"adapter-{i:03d}",
                        "version": "v1",
                        "severity": "warning",
                    },
                    "annotations": {"summary": f"adapter-{i:03d} drifts"},
                    "severity": "warning",
                    "state": "firing",
                    "value": 1.5,
                    "threshold": 1.0,
                    "active_at": now,
                    "fired_at": now,
                    "last_eval_at": now,
                }
                for i in range(0, adapters, 10)
            ],
        )
        s.execute(
            insert(Incident),
            [
                {
                    "title": f"incident {i}",
                    "adapter": f"adapter-{i:03d}",
                    "severity": "critical",
                    "state": "resolved" if i % 3 else "triggered",
                    "source": "alert",
                    "opened_at": now,
                    "opened_by": "lorawatch",
                }
                for i in range(0, adapters, 25)
            ],
        )
        s.execute(
            insert(JobRun),
            [
                {
                    "job": "alerts",
                    "kind": "alerts",
                    "scheduled_for": now - timedelta(minutes=k),
                    "attempt": 1,
                    "trigger": "schedule",
                    "status": "success",
                    "started_at": now - timedelta(minutes=k),
                    "heartbeat_at": now,
                    "ended_at": now,
                    "duration_s": 0.8,
                    "host": "bench",
                    "pid": 1,
                }
                for k in range(10_000)
            ],
        )
    db.dispose()
    return counts


def render_times(repeats: int) -> dict[str, list[float]]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    times: dict[str, list[float]] = {p: [] for p in PAGES}
    st.cache_resource.clear()
    for _ in range(repeats):
        for page in PAGES:
            at = AppTest.from_file(str(ROOT / "app" / "dashboard.py"), default_timeout=600)
            at.run()
            start = time.perf_counter()
            if page == "overview":
                at.run()
            else:
                at.switch_page(f"app_pages/{page}.py").run()
            times[page].append(time.perf_counter() - start)
            assert not at.exception, (page, [e.value for e in at.exception])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=500)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--traffic-days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", type=Path, default=None, help="Reuse or create this SQLite file.")
    args = parser.parse_args()
    path = args.db or Path(tempfile.mkdtemp(prefix="lw-dash-bench-")) / "bench.db"
    url = f"sqlite:///{path}"
    if not path.exists():
        start = time.perf_counter()
        counts = build(url, args.adapters, args.weeks, args.traffic_days)
        print(f"built {path} in {time.perf_counter() - start:.1f} s: {counts}")
    os.environ["LORAWATCH_DATABASE_URL"] = url
    os.environ.setdefault("LORAWATCH_HOME", str(path.parent))
    times = render_times(args.repeats)
    print(
        f"\n{'page':<12} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.adapters} adapters, {args.weeks} weeks, "
        f"{args.traffic_days} days of hourly traffic, {args.repeats} renders each)"
    )
    for page, values in times.items():
        print(f"{page:<12} {statistics.median(values):>9.3f} {min(values):>7.3f} {max(values):>7.3f}")


if __name__ == "__main__":
    main()
