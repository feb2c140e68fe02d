"""Adapter: drift, risk, latency and KPI trends with thresholds and promotion markers; versions."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from lorawatch.app.common import context, query_param, ts
from lorawatch.db.types import utcnow
from lorawatch.monitors import charts
from lorawatch.monitors import series as queries

settings, db = context()
st.title("Adapter")
with db.session() as session:
    from sqlalchemy import select

    from lorawatch.db.models import AdapterRecord

    names = [n for (n,) in session.execute(select(AdapterRecord.name).order_by(AdapterRecord.name))]
if not names:
    st.info("No adapter is registered yet.")
    st.stop()
wanted = query_param("adapter")
adapter = st.selectbox("Adapter", names, index=names.index(wanted) if wanted in names else 0)
days = st.select_slider("Window", options=[7, 14, 30, 90, 365], value=30, format_func=lambda d: f"{d} days")
end = utcnow()
start = end - timedelta(days=days)
with db.session() as session:
    events = queries.alias_events_frame(session, adapter, start, end)
    drift = queries.monitor_frame(session, adapter, ["logit_kl", "logit_js"], start, end)
    mmd = queries.monitor_frame(session, adapter, ["embedding_mmd", "logit_kl_ks"], start, end)
    risk = queries.monitor_frame(session, adapter, ["toxicity_rate", "pii_leak_rate"], start, end)
    latency = queries.latency_frame(session, adapter, max(start, end - timedelta(days=14)), end)
    kpis = queries.kpi_frame(session, adapter, start, end)
    limits = queries.thresholds(session, adapter, ["logit_kl", "toxicity_rate", "pii_leak_rate", "embedding_mmd"])
left, right = st.columns(2)
left.altair_chart(
    charts.drift_chart(drift, {"logit_kl": limits["logit_kl"]} if "logit_kl" in limits else None, events),
    width="stretch",
)
right.altair_chart(
    charts.series_chart(
        mmd,
        title="Drift tests against the baseline run",
        y_title="p-value",
        thresholds={"p": settings.canary.drift_p_value},
        events=events,
    ),
    width="stretch",
)
left.altair_chart(
    charts.risk_chart(risk, {k: v for k, v in limits.items() if k in ("toxicity_rate", "pii_leak_rate")}, events),
    width="stretch",
)
right.altair_chart(
    charts.latency_chart(latency, settings.slo.adapters.get(adapter, settings.slo.latency_ms), events), width="stretch"
)
left.altair_chart(charts.kpi_chart(kpis, events), width="stretch")

st.subheader("Versions")
from lorawatch.registry import catalog  # noqa: E402

with db.session() as session:
    view = catalog.adapter_view(session, adapter, settings.registry.review_due_days)
st.dataframe(
    [
        {
            "version": v["version"],
            "aliases": ", ".join(
                f"{a['alias']}{'/' + a['tenant'] if a.get('tenant') else ''}" for a in v.get("aliases", [])
            ),
            "state": v.get("state"),
            "team": (v.get("ownership") or {}).get("team"),
            "created": ts(v.get("created_at")),
            "data expires": v.get("data_expires_on"),
            "review overdue": v.get("review_overdue"),
            "gate": (v.get("gate") or {}).get("passed"),
            "lineage": v.get("lineage"),
        }
        for v in view["versions"]
    ],
    hide_index=True,
    width="stretch",
)
