"""Aggregated reads for charts and tables, shared by the dashboard and the post-incident
reports: tidy pandas frames (``ts``, ``series``, ``value``) per adapter and time window."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from lorawatch.db.models import AdapterRecord, AdapterVersion, Alert, AliasEvent, KpiValue, MonitorResult, TrafficHour
from lorawatch.monitors.sketch import merge_many
from lorawatch.monitors.traffic import latency
from lorawatch.registry.aliases import aliased_versions
from lorawatch.settings import Settings


def monitor_frame(session: Session, adapter: str, monitors: list[str], start: datetime, end: datetime) -> pd.DataFrame:
    """Overall (not per segment) results of the given monitors for an adapter, one row per result."""
    rows = session.execute(
        select(MonitorResult.ts, MonitorResult.monitor, MonitorResult.value, MonitorResult.version)
        .where(
            MonitorResult.adapter == adapter,
            MonitorResult.monitor.in_(monitors),
            MonitorResult.segment.is_(None),
            MonitorResult.tenant.is_(None),
            MonitorResult.ts >= start,
            MonitorResult.ts <= end,
        )
        .order_by(MonitorResult.ts)
    ).all()
    return pd.DataFrame(
        [{"ts": r.ts, "series": r.monitor, "value": r.value, "version": r.version} for r in rows],
        columns=["ts", "series", "value", "version"],
    )


SEGMENT_MONITORS = ["logit_kl", "logit_js", "top1_agreement", "embedding_cosine", "toxicity_rate", "pii_leak_rate"]


def segment_frame(session: Session, adapter: str, version: str | None) -> pd.DataFrame:
    """Drift and risk per canary segment in the version's latest run: one row per segment, a
    column per monitor, ``breached`` listing what breached and ``scope`` (in-domain or
    off-domain where the adapter declares a domain)."""
    where = [MonitorResult.adapter == adapter, MonitorResult.run_id.is_not(None)]
    if version is not None:
        where.append(MonitorResult.version == version)
    run_id = session.scalar(select(func.max(MonitorResult.run_id)).where(*where))
    if run_id is None:
        return pd.DataFrame()
    rows = session.execute(
        select(MonitorResult.segment, MonitorResult.monitor, MonitorResult.value, MonitorResult.breached)
        .add_columns(MonitorResult.details, MonitorResult.version)
        .where(*where, MonitorResult.run_id == run_id, MonitorResult.monitor.in_(SEGMENT_MONITORS))
        .where(MonitorResult.tenant.is_(None))
    ).all()
    table: dict[str, dict] = {}
    for segment, monitor, value, breached, details, found_version in rows:
        name = segment if segment is not None else "(all prompts)"
        row = table.setdefault(
            name, {"segment": name, "run": run_id, "version": found_version, "scope": None, "breached": []}
        )
        row[monitor] = value
        row["scope"] = row["scope"] or (details or {}).get("scope")
        if breached:
            row["breached"].append(monitor)
    out = pd.DataFrame(sorted(table.values(), key=lambda r: (r["segment"] != "(all prompts)", r["segment"])))
    out["breached"] = [", ".join(sorted(b)) for b in out["breached"]]
    return out


def thresholds(session: Session, adapter: str, monitors: list[str]) -> dict[str, float]:
    """The latest threshold in force for each monitor."""
    out = {}
    for monitor in monitors:
        value = session.scalar(
            select(MonitorResult.threshold)
            .where(
                MonitorResult.adapter == adapter, MonitorResult.monitor == monitor, MonitorResult.threshold.is_not(None)
            )
            .order_by(MonitorResult.ts.desc())
            .limit(1)
        )
        if value is not None:
            out[monitor] = value
    return out


def alias_events_frame(session: Session, adapter: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Promotions and rollbacks of an adapter's aliases, as chart markers."""
    rows = session.execute(
        select(AliasEvent.ts, AliasEvent.action, AliasEvent.alias, AdapterVersion.version)
        .join(AdapterRecord, AdapterRecord.id == AliasEvent.adapter_id)
        .join(AdapterVersion, AdapterVersion.id == AliasEvent.to_version_id)
        .where(AdapterRecord.name == adapter, AliasEvent.ts >= start, AliasEvent.ts <= end)
        .order_by(AliasEvent.ts)
    ).all()
    return pd.DataFrame(
        [{"ts": r.ts, "label": f"{r.action} {r.alias} -> {r.version}"} for r in rows], columns=["ts", "label"]
    )


def latency_frame(session: Session, adapter: str, start: datetime, end: datetime) -> pd.DataFrame:
    """P50, P95 and P99 per hour, merged over versions and tenants from the hourly sketches."""

    rows = session.execute(
        select(TrafficHour.minute, TrafficHour.latency_sketch).where(
            TrafficHour.adapter == adapter, TrafficHour.minute >= start, TrafficHour.minute <= end
        )
    ).all()
    by_hour: dict[datetime, list[bytes]] = {}
    for hour, blob in rows:
        by_hour.setdefault(hour, []).append(blob)
    out = []
    for hour in sorted(by_hour):
        sketch = merge_many(by_hour[hour])
        for q, name in ((0.5, "P50"), (0.95, "P95"), (0.99, "P99")):
            out.append({"ts": hour, "series": name, "value": sketch.quantile(q)})
    return pd.DataFrame(out, columns=["ts", "series", "value"])


def kpi_frame(session: Session, adapter: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The daily mean of each KPI of an adapter."""
    rows = session.execute(
        select(KpiValue.ts, KpiValue.kpi, KpiValue.value).where(
            KpiValue.adapter == adapter, KpiValue.ts >= start, KpiValue.ts <= end
        )
    ).all()
    if not rows:
        return pd.DataFrame(columns=["ts", "series", "value"])
    frame = pd.DataFrame(rows, columns=["ts", "series", "value"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.floor("D")
    return frame.groupby(["ts", "series"], as_index=False)["value"].mean()


# the latency SLO burn monitors are what the latency alert rules read: the fleet's "latency"
# breach is theirs, so the Overview and the alerts never disagree on it
LATENCY_BURN_MONITORS = ["latency_slo_burn_fast", "latency_slo_burn_medium", "latency_slo_burn_slow"]
FLEET_MONITORS = ["logit_kl", "embedding_mmd", "toxicity_rate", "pii_leak_rate", "kpi_drop", *LATENCY_BURN_MONITORS]
# worst first: an adapter's status is the most severe of its firing alerts, then its breaches
STATUS_ORDER = ["critical", "warning", "not verified", "info", "ok"]
# measured per version by canary runs: the fleet shows the production version's, never another's
CANARY_FLEET_MONITORS = ["logit_kl", "embedding_mmd", "toxicity_rate", "pii_leak_rate"]


def latest_results(session: Session, monitors: list[str]) -> dict[tuple[str, str], MonitorResult]:
    """The newest overall result per (adapter, monitor), in one grouped query."""
    return {(a, m): r for (a, _, m), r in _latest(session, monitors, per_version=False).items()}


def latest_results_by_version(session: Session, monitors: list[str]) -> dict[tuple[str, str, str], MonitorResult]:
    """The newest overall result per (adapter, version, monitor): what a given version showed."""
    return _latest(session, monitors, per_version=True)


def _latest(session: Session, monitors: list[str], *, per_version: bool) -> dict[tuple[str, str, str], MonitorResult]:
    keys = [MonitorResult.adapter, MonitorResult.monitor] + ([MonitorResult.version] if per_version else [])
    latest = (
        select(*keys, func.max(MonitorResult.ts).label("ts"))
        .where(MonitorResult.monitor.in_(monitors), MonitorResult.segment.is_(None), MonitorResult.tenant.is_(None))
        .group_by(*keys)
        .subquery()
    )
    joined = [
        MonitorResult.adapter == latest.c.adapter,
        MonitorResult.monitor == latest.c.monitor,
        MonitorResult.ts == latest.c.ts,
    ]
    if per_version:
        joined.append(MonitorResult.version == latest.c.version)
    rows = session.scalars(
        select(MonitorResult)
        .join(latest, and_(*joined))
        .where(MonitorResult.segment.is_(None), MonitorResult.tenant.is_(None))
    )
    out: dict[tuple[str, str, str], MonitorResult] = {}
    for r in rows:  # several rows share the latest time when a monitor has a label (each KPI): keep the worst
        key = (r.adapter, r.version if per_version else "", r.monitor)
        if key not in out or _worse(r, out[key]):
            out[key] = r
    return out


def _worse(a: MonitorResult, b: MonitorResult) -> bool:
    if a.breached != b.breached:
        return a.breached
    return (a.details or {}).get("relative_change", 0) < (b.details or {}).get("relative_change", 0)


def fleet(db, settings: Settings, now: datetime) -> pd.DataFrame:
    """One row per adapter, worst first: status (the most severe firing alert, else warning on a
    breach, else ``not verified``, else ok), production version, owner, the production version's
    latest drift and risk (``not yet verified`` when it has no canary result: a rollback does not
    look healthy by absence of data), the latency SLO burn monitors the alert rules read, P99
    over 24 h, KPI trend, firing alerts. ``settings`` is kept for the callers' signature."""

    p99 = {r["adapter"]: r for r in latency(db, window=timedelta(hours=24), end=now)}
    with db.session() as session:
        results = latest_results(session, FLEET_MONITORS)
        by_version = latest_results_by_version(session, CANARY_FLEET_MONITORS)
        production = {v.adapter.name: (v.version, v.owner_team) for v in aliased_versions(session, "production")}
        names = [n for (n,) in session.execute(select(AdapterRecord.name).order_by(AdapterRecord.name))]
        open_alerts: dict[str, int] = {}
        worst_alert: dict[str, str] = {}
        for labels, severity in session.execute(select(Alert.labels, Alert.severity).where(Alert.state == "firing")):
            name = labels.get("adapter")
            if not name:
                continue
            open_alerts[name] = open_alerts.get(name, 0) + 1
            # an alert about a version no longer in production (rolled back, until the next
            # evaluation resolves it) does not colour the version that serves now
            current = labels.get("version") in (None, "", production.get(name, (None, None))[0])
            if current and _rank(severity) < _rank(worst_alert.get(name, "ok")):
                worst_alert[name] = severity
    rows: list[dict] = []
    order: list[tuple] = []
    for name in sorted(set(names) | {a for a, _ in results}):
        version, team = production.get(name, (None, None))

        def value(monitor: str, name: str = name, version: str | None = version):
            if version is not None and monitor in CANARY_FLEET_MONITORS:
                r = by_version.get((name, version, monitor))
            else:
                r = results.get((name, monitor))
            return (r.value, r.breached) if r else (None, False)

        kl, kl_b = value("logit_kl")
        mmd, mmd_b = value("embedding_mmd")
        tox, tox_b = value("toxicity_rate")
        pii, pii_b = value("pii_leak_rate")
        kpi = results.get((name, "kpi_drop"))
        verified = version is None or any((name, version, m) in by_version for m in CANARY_FLEET_MONITORS)
        p = p99.get(name)
        burning = [m for m in LATENCY_BURN_MONITORS if (r := results.get((name, m))) is not None and r.breached]
        breaches = [
            m
            for m, b in (
                ("KL", kl_b),
                ("MMD", mmd_b),
                ("toxicity", tox_b),
                ("PII", pii_b),
                ("latency SLO", bool(burning)),
                ("KPI", bool(kpi and kpi.breached)),
            )
            if b
        ]
        status = worst_alert.get(name) or ("warning" if breaches else "not verified" if not verified else "ok")
        if status not in STATUS_ORDER:
            status = "info"
        rows.append(
            {
                "status": status,
                "adapter": name,
                "production": version,
                "team": team,
                "health": _health(breaches, verified, version),
                "logit_kl": kl,
                "mmd_p": mmd,
                "toxicity_rate": tox,
                "pii_leak_rate": pii,
                "p99_ms_24h": p["p99_ms"] if p else None,
                "requests_24h": p["count"] if p else 0,
                "kpi_change": (kpi.details or {}).get("relative_change") if kpi else None,
                "firing_alerts": open_alerts.get(name, 0),
            }
        )
        order.append((_rank(status), -len(breaches), -open_alerts.get(name, 0), name))
    return pd.DataFrame([row for _, row in sorted(zip(order, rows), key=lambda pair: pair[0])])


def _rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else STATUS_ORDER.index("info")


def _health(breaches: list[str], verified: bool, version: str | None) -> str:
    parts = ["breached: " + ", ".join(breaches)] if breaches else []
    if not verified:
        parts.append(f"not yet verified ({version} has no canary run)")
    return "; ".join(parts) or "ok"
