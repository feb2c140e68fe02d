from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from lorawatch.db.models import KpiValue, TrafficMinute
from lorawatch.monitors.sketch import DDSketch, merge_many, merged, sketches_by_group
from tests.prometheus import start_prometheus

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def synthetic_requests(n: int = 6000, seed: int = 42, start: datetime = NOW - timedelta(hours=10)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "ts": [start + timedelta(seconds=float(s)) for s in rng.uniform(0, 36000, n)],
            "adapter_id": rng.choice(["support", "billing", "search"], n),
            "adapter_version": "v1",
            "tenant": rng.choice(["acme", "globex"], n),
            "base_model_id": "tiny",
            "latency_ms": rng.lognormal(5.5, 0.6, n),
            "ttft_ms": rng.lognormal(3.5, 0.4, n),
            "prompt_tokens": rng.integers(10, 500, n),
            "completion_tokens": rng.integers(10, 300, n),
            "gpu_seconds": rng.uniform(0.01, 0.5, n),
            "status": np.where(rng.uniform(size=n) < 0.02, 500, 200),
        }
    )


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".jsonl":
        out = frame.copy()
        out["ts"] = [t.isoformat() for t in out["ts"]]
        path.write_text("\n".join(json.dumps(r) for r in out.to_dict("records")) + "\n")
    elif path.suffix == ".csv":
        out = frame.copy()
        out["ts"] = [t.isoformat() for t in out["ts"]]
        out.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_sketch_quantiles_are_within_one_percent_also_after_merging(q):
    rng = np.random.default_rng(42)
    parts = [rng.lognormal(5 + i * 0.1, 0.8, 20_000) for i in range(6)]  # windows x tenants
    exact = np.quantile(np.concatenate(parts), q)
    whole = merged(DDSketch().add(p).to_bytes() for p in parts)
    assert whole.quantile(q) == pytest.approx(exact, rel=0.01)
    groups = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
    blobs = sketches_by_group(groups, np.concatenate(parts))
    assert merged(blobs).quantile(q) == pytest.approx(exact, rel=0.01)
    assert merge_many(blobs).quantile(q) == merged(blobs).quantile(q)
    assert merge_many(blobs).count == sum(len(p) for p in parts)
    assert DDSketch.from_bytes(blobs[2]).quantile(q) == pytest.approx(np.quantile(parts[2], q), rel=0.01)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_ingested_percentiles_match_exact_ones(cli, lw_env, db, tmp_path, suffix):
    frame = synthetic_requests()
    path = write(frame, tmp_path / f"requests{suffix}")
    result = cli("ingest", "requests", path, "--json")
    assert result.code == 0, result.err
    assert result.json()["rows"] == len(frame)
    from lorawatch.monitors.traffic import latency

    rows = {r["adapter"]: r for r in latency(db, window=timedelta(days=1), end=NOW)}
    for adapter, group in frame.groupby("adapter_id"):
        assert rows[adapter]["count"] == len(group)
        for q, key in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            assert rows[adapter][key] == pytest.approx(np.quantile(group["latency_ms"], q), rel=0.01)
        assert rows[adapter]["errors"] == int((group["status"] >= 400).sum())
    acme = {r["adapter"]: r for r in latency(db, window=timedelta(days=1), end=NOW, tenant="acme")}
    support = frame[(frame.adapter_id == "support") & (frame.tenant == "acme")]
    assert acme["support"]["p99_ms"] == pytest.approx(np.quantile(support["latency_ms"], 0.99), rel=0.01)


def test_the_same_file_twice_counts_nothing_twice_and_overlaps_merge(cli, lw_env, db, tmp_path):
    first = synthetic_requests(3000, seed=1)
    second = synthetic_requests(3000, seed=2)
    a = write(first, tmp_path / "a.parquet")
    b = write(second, tmp_path / "b.parquet")
    assert cli("ingest", "requests", a).code == 0
    again = cli("ingest", "requests", a, "--json")
    assert again.code == 0 and again.json()["skipped"] is True
    assert cli("ingest", "requests", b, "--json").json()["merged_into_existing"] > 0
    with db.session() as s:
        assert s.scalar(select(func.sum(TrafficMinute.requests))) == 6000
    from lorawatch.monitors.traffic import latency

    both = pd.concat([first, second])
    rows = {r["adapter"]: r for r in latency(db, window=timedelta(days=1), end=NOW)}
    exact = np.quantile(both[both.adapter_id == "billing"]["latency_ms"], 0.99)
    assert rows["billing"]["p99_ms"] == pytest.approx(exact, rel=0.01)


def _bad_logs(tmp_path: Path):
    good = synthetic_requests(10)
    lines = [json.dumps({**r, "ts": r["ts"].isoformat()}) for r in good.to_dict("records")]
    bad_ts = tmp_path / "bad-ts.jsonl"
    record = json.loads(lines[4])
    record["ts"] = "yesterday-ish"
    bad_ts.write_text("\n".join(lines[:4] + [json.dumps(record)] + lines[5:]) + "\n")
    negative = tmp_path / "negative.csv"
    frame = good.copy()
    frame.loc[6, "latency_ms"] = -3.0
    write(frame, negative)
    wrong_type = tmp_path / "wrong-type.jsonl"
    record = json.loads(lines[2])
    record["latency_ms"] = {"p50": 3}
    wrong_type.write_text("\n".join(lines[:2] + [json.dumps(record)] + lines[3:]) + "\n")
    unknown = tmp_path / "unknown.csv"
    frame = good.copy()
    frame["colour"] = "red"
    write(frame, unknown)
    parquet = tmp_path / "neg.parquet"
    frame = good.copy()
    frame.loc[3, "ttft_ms"] = -1.0
    write(frame, parquet)
    return [
        (bad_ts, f"{bad_ts}:5: bad timestamp"),
        (negative, f"{negative}:8: negative latency_ms -3"),
        (wrong_type, f"{wrong_type}:3: latency_ms"),
        (unknown, "unknown column(s) colour"),
        (parquet, f"{parquet}: row 4: negative ttft_ms"),
    ]


def test_a_malformed_log_exits_2_with_file_and_line_and_stores_nothing(cli, lw_env, db, tmp_path):
    from lorawatch.db.models import IngestedFile

    for path, expected in _bad_logs(tmp_path):
        result = cli("ingest", "requests", path)
        assert result.code == 2, (path, result.err)
        assert expected in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(TrafficMinute)) == 0
        assert s.scalar(select(func.count()).select_from(IngestedFile)) == 0


def test_a_kpi_drop_is_detected_with_mann_whitney_and_relative_change(cli, lw_env, db, tmp_path, settings_from_env):
    from lorawatch.monitors.traffic_eval import evaluate_traffic

    rng = np.random.default_rng(7)
    rows = []
    for day in range(35):
        ts = NOW - timedelta(days=35 - day)
        for adapter, drop in (("support", 0.0), ("billing", 0.2)):
            level = 0.10 * (1 - drop) if day >= 28 else 0.10
            for _ in range(6):
                rows.append(
                    {
                        "ts": ts.isoformat(),
                        "adapter_id": adapter,
                        "kpi": "conversion",
                        "value": rng.normal(level, 0.005),
                    }
                )
    path = tmp_path / "kpis.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert cli("ingest", "kpis", path).code == 0
    assert cli("ingest", "kpis", path, "--json").json()["skipped"] is True
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(KpiValue)) == len(rows)
    results = {r["adapter"]: r for r in evaluate_traffic(db, settings_from_env, now=NOW) if r["monitor"] == "kpi_drop"}
    assert results["billing"]["breached"] is True
    assert results["billing"]["details"]["relative_change"] == pytest.approx(-0.2, abs=0.03)
    assert results["support"]["breached"] is False


@pytest.fixture
def settings_from_env(lw_env):
    from lorawatch.settings import load_settings

    return load_settings()


def test_slo_burn_rates_use_both_windows(cli, lw_env, db, tmp_path, settings_from_env):
    from lorawatch.monitors.traffic_eval import evaluate_traffic

    rng = np.random.default_rng(3)
    n = 4000
    # the last 10 minutes: half the requests of "slow" take 3 s against a 1 s objective
    ts = [NOW - timedelta(seconds=float(s)) for s in rng.uniform(1, 600, n)]
    latency = np.where((np.arange(n) % 2 == 0), 3000.0, 200.0)
    frame = pd.DataFrame(
        {
            "ts": ts,
            "adapter_id": np.where(np.arange(n) < n // 2, "slow", "fast"),
            "latency_ms": np.where(np.arange(n) < n // 2, latency, 200.0),
        }
    )
    write(frame, tmp_path / "r.parquet")
    assert cli("ingest", "requests", tmp_path / "r.parquet").code == 0
    results = {(r["monitor"], r["adapter"]): r for r in evaluate_traffic(db, settings_from_env, now=NOW)}
    fast_burn = results[("latency_slo_burn_fast", "slow")]
    assert fast_burn["details"]["burn_long"] == pytest.approx(50.0, rel=0.05)  # 50% slow / 1% budget
    assert fast_burn["breached"] is True
    assert results[("latency_slo_burn_fast", "fast")]["breached"] is False
    # ten minutes of it also burns the 6h/30m and 3d/6h budgets (every window saw only those minutes)
    for monitor_id in ("latency_slo_burn_medium", "latency_slo_burn_slow"):
        assert results[(monitor_id, "slow")]["breached"] is True
        assert results[(monitor_id, "fast")]["breached"] is False
    assert results[("latency_p99", "slow")]["breached"] is True
    assert results[("latency_p99", "fast")]["breached"] is False


def test_costs_give_hit_rates_and_gpu_hours(cli, lw_env, db, tmp_path):
    from lorawatch.monitors.traffic_eval import costs

    frame = synthetic_requests(3000)
    write(frame, tmp_path / "r.parquet")
    cli("ingest", "requests", tmp_path / "r.parquet")
    data = costs(db, window=timedelta(days=2), end=NOW)
    by = {a["adapter"]: a for a in data["adapters"]}
    for adapter, group in frame.groupby("adapter_id"):
        assert by[adapter]["request_share"] == pytest.approx(len(group) / len(frame))
        assert by[adapter]["gpu_hours"] == pytest.approx(group["gpu_seconds"].sum() / 3600)
        tokens = (group["prompt_tokens"] + group["completion_tokens"]).sum()
        assert by[adapter]["tokens"] == tokens
    assert {t["tenant"] for t in data["tenants"]} == {"acme", "globex"}
    assert sum(d["requests"] for d in data["daily"]) == len(frame)
    assert cli("costs", "--json").code == 0


def test_the_instrumentation_helper_labels_by_adapter_and_counts_tokens():
    from prometheus_client import CollectorRegistry, generate_latest

    from lorawatch.serving.metrics import AdapterMetrics

    registry = CollectorRegistry()
    metrics = AdapterMetrics(registry=registry)
    with metrics.track("support", "tiny", tenant="acme") as request:
        request.first_token()
        request.tokens(prompt=100, completion=20)
    with pytest.raises(RuntimeError), metrics.track("support", "tiny", tenant="acme"):
        raise RuntimeError("model crashed")
    text = generate_latest(registry).decode()
    assert (
        'lorawatch_request_latency_seconds_count{adapter_id="support",base_model_id="tiny",tenant="acme"} 2.0' in text
    )
    assert 'lorawatch_tokens_total{adapter_id="support",base_model_id="tiny",kind="prompt",tenant="acme"} 100.0' in text
    assert 'status="error"' in text and 'status="ok"' in text


def test_the_asgi_middleware_times_requests_by_header():
    from prometheus_client import CollectorRegistry, generate_latest

    from lorawatch.serving.metrics import AdapterMetrics, AdapterMetricsMiddleware

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    registry = CollectorRegistry()
    wrapped = AdapterMetricsMiddleware(app, AdapterMetrics(registry=registry), default_base_model="tiny")
    scope = {"type": "http", "headers": [(b"x-adapter-id", b"billing"), (b"x-tenant", b"globex")]}

    async def noop(*_):
        return None

    asyncio.run(wrapped(scope, noop, noop))
    assert (
        'lorawatch_requests_total{adapter_id="billing",base_model_id="tiny",status="ok",tenant="globex"} 1.0'
        in generate_latest(registry).decode()
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.environ.get("LORAWATCH_REQUIRE_PROMETHEUS"),
    reason="the prometheus server is not installed (CI installs it and requires this test)",
)
def test_a_real_prometheus_scrapes_the_helper_and_we_pull_percentiles(lw_env, db, tmp_path):
    from prometheus_client import CollectorRegistry, start_http_server

    from lorawatch.monitors.prometheus_pull import pull_latency, query
    from lorawatch.serving.metrics import AdapterMetrics

    registry = CollectorRegistry()
    metrics = AdapterMetrics(registry=registry)
    exporter_port = _free_port()
    server, thread = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    prom_port = _free_port()
    proc = start_prometheus(tmp_path, "serving", f"127.0.0.1:{exporter_port}", prom_port)
    url = f"http://127.0.0.1:{prom_port}"
    try:
        rng = np.random.default_rng(0)
        deadline = time.time() + 60
        rows = []
        while time.time() < deadline:
            for seconds in rng.uniform(0.05, 0.3, 50):  # support: 50-300 ms
                metrics.observe("support", "tiny", "acme", seconds=float(seconds), prompt_tokens=10)
            for seconds in rng.uniform(1.2, 1.8, 50):  # billing: 1.2-1.8 s
                metrics.observe("billing", "tiny", "acme", seconds=float(seconds))
            time.sleep(1)
            try:
                rows = pull_latency(db, url, window="1m")
            except Exception:
                rows = []
            if {r["adapter"] for r in rows if r["monitor"] == "latency_p99"} == {"support", "billing"}:
                break
        p99 = {r["adapter"]: r["value"] for r in rows if r["monitor"] == "latency_p99"}
        assert set(p99) == {"support", "billing"}, rows
        # histogram_quantile interpolates inside the bucket that holds the P99
        assert 250 < p99["support"] <= 500 and 1500 < p99["billing"] <= 2000
        tokens = query(url, 'sum by (adapter_id) (lorawatch_tokens_total{kind="prompt"})')
        assert tokens and tokens[0]["metric"]["adapter_id"] == "support"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        server.shutdown()


def test_a_hundred_concurrent_requests_load_a_cold_adapter_once_within_budget(
    tiny_base, trained_adapter, second_adapter, zero_adapter
):
    import torch
    from prometheus_client import CollectorRegistry
    from transformers import AutoModelForCausalLM

    from lorawatch.serving.pool import AdapterPool, adapter_bytes

    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    dirs = {"a": trained_adapter, "b": second_adapter, "c": zero_adapter}
    size = adapter_bytes(trained_adapter)
    loads: list[str] = []
    observed: list[int] = []

    def loader(name):
        loads.append(name)
        return dirs[name]

    pool = AdapterPool(model, loader, memory_budget_bytes=int(size * 2.5), registry=CollectorRegistry())
    original = pool._attach

    def attach(model, name, directory):
        time.sleep(0.05)  # a slow load makes the requests overlap
        observed.append(pool.used)
        return original(model, name, directory)

    pool._attach = attach

    async def cold_rush():
        await asyncio.gather(*(pool.acquire("a") for _ in range(100)))

    asyncio.run(cold_rush())
    assert loads == ["a"]
    assert pool.m_misses.labels("a")._value.get() == 1 and pool.m_hits.labels("a")._value.get() == 99

    async def churn():
        await pool.warm(["b"])  # pinned: never evicted
        for name in ["c", "a", "c", "a"]:
            await pool.acquire(name)

    asyncio.run(churn())
    assert loads == ["a", "b", "c", "a", "c", "a"]  # room for two: every switch evicts the other unpinned one
    assert list(pool.loaded) == ["b", "a"]
    assert max(observed) <= pool.budget and pool.peak <= pool.budget
    assert pool.m_evictions.labels("a")._value.get() == 2 and pool.m_evictions.labels("c")._value.get() == 2
    assert set(pool.model.peft_config) == {"a", "b"}


def test_a_bad_kpi_value_exits_2_with_its_line_and_negative_values_are_kept(cli, lw_env, db, tmp_path):
    bad = tmp_path / "k.jsonl"
    bad.write_text(
        '{"ts": "2026-11-01T00:00:00Z", "adapter_id": "a", "kpi": "profit", "value": -2.5}\n'
        '{"ts": "2026-11-01T00:01:00Z", "adapter_id": "a", "kpi": "profit", "value": "lots"}\n'
    )
    result = cli("ingest", "kpis", bad)
    assert result.code == 2 and f"{bad}:2: value 'lots' is not a number" in result.err
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(KpiValue)) == 0
    good = tmp_path / "g.jsonl"
    good.write_text('{"ts": "2026-11-01T00:00:00Z", "adapter_id": "a", "kpi": "profit", "value": -2.5}\n')
    assert cli("ingest", "kpis", good).code == 0
    with db.session() as s:
        assert s.scalar(select(KpiValue.value)) == -2.5


@pytest.mark.parametrize(
    "text,expected",
    [
        ("30m", timedelta(minutes=30)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_windows_use_the_one_duration_grammar(text, expected):
    from lorawatch.monitors.traffic import parse_window

    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["0s", "soon", "7", "-1h", ""])
def test_a_window_that_is_not_a_positive_duration_is_refused_with_the_fix(text):
    from lorawatch.errors import InputError
    from lorawatch.monitors.traffic import parse_window

    with pytest.raises(InputError, match="longer than zero; fix: write e.g. 30m"):
        parse_window(text)
