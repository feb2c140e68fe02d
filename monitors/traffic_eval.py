"""Traffic monitors: latency SLO burn rates, P99 against the objective, KPI drops, and the
daily cost roll-ups (hit rate, tokens, GPU hours) the dashboard and reports read.

Burn rates follow the SRE workbook's multi-window, multi-burn-rate alerts: the share of
requests slower than the objective, divided by the error budget (1 - objective), over a long
and a short window; the monitor's value is the smaller of the two, so it is breached only
when both windows burn faster than the factor (14.4 over 1h/5m, 6 over 6h/30m, 1 over 3d/6h).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select

from lorawatch.db import Database
from lorawatch.db.models import KpiValue, MonitorResult
from lorawatch.db.models.traffic import bucket_table
from lorawatch.db.types import utcnow
from lorawatch.monitors.registry import Measurement, get_monitor, monitor, threshold_for
from lorawatch.monitors.sketch import DDSketch, merge_many
from lorawatch.settings import Settings

BURN_WINDOWS = {
    "latency_slo_burn_fast": (timedelta(hours=1), timedelta(minutes=5), 14.4),
    "latency_slo_burn_medium": (timedelta(hours=6), timedelta(minutes=30), 6.0),
    "latency_slo_burn_slow": (timedelta(days=3), timedelta(hours=6), 1.0),
}


def _burn(inputs: dict[str, Any]) -> Measurement:
    budget = 1.0 - inputs["objective"]
    long_rate = inputs["slow_long"] / inputs["total_long"] / budget if inputs["total_long"] else 0.0
    short_rate = inputs["slow_short"] / inputs["total_short"] / budget if inputs["total_short"] else 0.0
    return Measurement(min(long_rate, short_rate), {"burn_long": long_rate, "burn_short": short_rate, **inputs})


@monitor("latency_slo_burn_fast", kind="traffic", threshold=14.4, breached_when="above", unit="x budget")
def latency_slo_burn_fast(inputs: dict[str, Any]) -> Measurement:
    """Error-budget burn rate of the latency SLO over 1h and 5m (the smaller of the two)."""
    return _burn(inputs)


@monitor("latency_slo_burn_medium", kind="traffic", threshold=6.0, breached_when="above", unit="x budget")
def latency_slo_burn_medium(inputs: dict[str, Any]) -> Measurement:
    """Error-budget burn rate of the latency SLO over 6h and 30m (the smaller of the two)."""
    return _burn(inputs)


@monitor("latency_slo_burn_slow", kind="traffic", threshold=1.0, breached_when="above", unit="x budget")
def latency_slo_burn_slow(inputs: dict[str, Any]) -> Measurement:
    """Error-budget burn rate of the latency SLO over 3d and 6h (the smaller of the two)."""
    return _burn(inputs)


@monitor("latency_p99", kind="traffic", threshold=1000.0, breached_when="above", unit="ms")
def latency_p99(inputs: dict[str, Any]) -> Measurement:
    """P99 latency over the last hour (the threshold in force is the adapter's SLO objective)."""
    sketch: DDSketch = inputs["sketch"]
    return Measurement(
        sketch.quantile(0.99), {"p50": sketch.quantile(0.5), "p95": sketch.quantile(0.95), "count": sketch.count}
    )


@monitor("kpi_drop", kind="traffic", threshold=0.05, breached_when="p_value_below", unit="p-value")
def kpi_drop(inputs: dict[str, Any]) -> Measurement:
    """Mann-Whitney U test that a KPI fell from the baseline window to the current one."""
    # Deferred: scipy takes ~0.3 s to import; only this statistical test needs it.
    from scipy.stats import mannwhitneyu

    baseline, current = np.asarray(inputs["baseline"]), np.asarray(inputs["current"])
    base_mean, cur_mean = float(baseline.mean()), float(current.mean())
    change = (cur_mean - base_mean) / abs(base_mean) if base_mean else 0.0
    p = float(mannwhitneyu(baseline, current, alternative="greater").pvalue) if len(baseline) and len(current) else 1.0
    return Measurement(
        p,
        {
            "kpi": inputs["kpi"],
            "baseline_mean": base_mean,
            "current_mean": cur_mean,
            "relative_change": change,
            "n_baseline": int(len(baseline)),
            "n_current": int(len(current)),
        },
    )


def _sketches(session, start: datetime, end: datetime) -> dict[str, DDSketch]:
    model, start = bucket_table(start, end)
    blobs: dict[str, list[bytes]] = {}
    for name, blob in session.execute(
        select(model.adapter, model.latency_sketch).where(model.minute >= start, model.minute < end)
    ):
        blobs.setdefault(name, []).append(blob)
    return {name: merge_many(items) for name, items in blobs.items()}


def evaluate_traffic(db: Database, settings: Settings, now: datetime | None = None) -> list[dict[str, Any]]:
    """Compute and store every traffic monitor per adapter at ``now``; returns what was stored."""

    now = now or utcnow()
    stored: list[dict[str, Any]] = []
    objective = settings.slo.objective
    with db.session() as session:
        windows: dict[timedelta, dict[str, DDSketch]] = {}
        for long, short, _ in BURN_WINDOWS.values():
            for span in (long, short):
                if span not in windows:
                    windows[span] = _sketches(session, now - span, now)
        hour = windows[timedelta(hours=1)]
        adapters = sorted(set().union(*[set(w) for w in windows.values()]))
        for adapter in adapters:
            slo_ms = settings.slo.adapters.get(adapter, settings.slo.latency_ms)
            for monitor_id, (long, short, factor) in BURN_WINDOWS.items():
                spec = get_monitor(monitor_id)
                lw, sw = windows[long].get(adapter), windows[short].get(adapter)
                inputs = {
                    "objective": objective,
                    "latency_ms": slo_ms,
                    "long_window": str(long),
                    "short_window": str(short),
                    "slow_long": lw.count_above(slo_ms) if lw else 0,
                    "total_long": lw.count if lw else 0,
                    "slow_short": sw.count_above(slo_ms) if sw else 0,
                    "total_short": sw.count if sw else 0,
                }
                m = spec.compute(inputs)
                threshold = threshold_for(monitor_id, settings) if monitor_id in settings.monitors else factor
                stored.append(_store(session, spec, m, threshold, adapter, now))
            if adapter in hour:
                spec = get_monitor("latency_p99")
                m = spec.compute({"sketch": hour[adapter]})
                stored.append(_store(session, spec, m, slo_ms, adapter, now))
        stored += _kpi_drops(session, settings, now)
    return stored


def _store(
    session, spec, m: Measurement, threshold: float, adapter: str, now: datetime, breached: bool | None = None
) -> dict[str, Any]:
    details = {k: v for k, v in m.details.items() if not isinstance(v, DDSketch)}
    if breached is None:
        breached = spec.is_breached(m.value, threshold)
    session.add(
        MonitorResult(
            monitor=spec.id,
            adapter=adapter,
            value=m.value,
            threshold=threshold,
            breached=breached,
            details=details,
            ts=now,
        )
    )
    return {
        "monitor": spec.id,
        "adapter": adapter,
        "value": m.value,
        "threshold": threshold,
        "breached": breached,
        "details": details,
    }


def _kpi_drops(session, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    cfg = settings.kpi
    current_start = now - timedelta(days=cfg.current_days)
    baseline_start = current_start - timedelta(days=cfg.baseline_days)
    rows = session.execute(
        select(KpiValue.adapter, KpiValue.kpi, KpiValue.ts, KpiValue.value).where(
            KpiValue.ts >= baseline_start, KpiValue.ts < now
        )
    ).all()
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for adapter, kpi, ts, value in rows:
        base, cur = groups.setdefault((adapter, kpi), ([], []))
        (cur if ts >= current_start else base).append(value)
    spec = get_monitor("kpi_drop")
    threshold = threshold_for("kpi_drop", settings) if "kpi_drop" in settings.monitors else cfg.p_value
    stored = []
    for (adapter, kpi), (base, cur) in sorted(groups.items()):
        if len(base) < 3 or len(cur) < 3:
            continue
        m = spec.compute({"kpi": kpi, "baseline": base, "current": cur})
        dropped = m.details["relative_change"] <= -cfg.min_relative_drop
        stored.append(_store(session, spec, m, threshold, adapter, now, breached=dropped and m.value <= threshold))
    return stored


def _day(db: Database, column):
    if db.is_sqlite:
        return func.strftime("%Y-%m-%d", column)
    return func.to_char(column, "YYYY-MM-DD")


def costs(db: Database, *, window: timedelta, end: datetime | None = None) -> dict[str, Any]:
    """Adapter hit rates (requests and tokens), GPU hours per adapter and tenant, and daily roll-ups
    (from hourly buckets for windows of 6 hours or more, see ``lorawatch.db.models.traffic.bucket_table``)."""

    end = end or utcnow()
    model, start = bucket_table(end - window, end)
    tokens = model.prompt_tokens + model.completion_tokens
    with db.session() as session:
        in_window = (model.minute >= start, model.minute < end)
        by_adapter = session.execute(
            select(model.adapter, func.sum(model.requests), func.sum(tokens), func.sum(model.gpu_seconds))
            .where(*in_window)
            .group_by(model.adapter)
            .order_by(model.adapter)
        ).all()
        by_tenant = session.execute(
            select(model.tenant, func.sum(model.requests), func.sum(tokens), func.sum(model.gpu_seconds))
            .where(*in_window)
            .group_by(model.tenant)
            .order_by(model.tenant)
        ).all()
        day = _day(db, model.minute)
        daily = session.execute(
            select(day, model.adapter, func.sum(model.requests), func.sum(tokens), func.sum(model.gpu_seconds))
            .where(*in_window)
            .group_by(day, model.adapter)
            .order_by(day, model.adapter)
        ).all()
    total_requests = sum(r[1] for r in by_adapter) or 1
    total_tokens = sum(r[2] or 0 for r in by_adapter) or 1
    return {
        "window_start": start,
        "window_end": end,
        "adapters": [
            {
                "adapter": a,
                "requests": int(n),
                "request_share": n / total_requests,
                "tokens": int(t or 0),
                "token_share": (t or 0) / total_tokens,
                "gpu_hours": (g or 0.0) / 3600,
            }
            for a, n, t, g in by_adapter
        ],
        "tenants": [
            {"tenant": tn or "(default)", "requests": int(n), "tokens": int(t or 0), "gpu_hours": (g or 0.0) / 3600}
            for tn, n, t, g in by_tenant
        ],
        "daily": [
            {"day": d, "adapter": a, "requests": int(n), "tokens": int(t or 0), "gpu_hours": (g or 0.0) / 3600}
            for d, a, n, t, g in daily
        ],
    }
