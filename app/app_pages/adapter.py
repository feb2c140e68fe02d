"""Adapter: drift, risk, latency and KPI trends with thresholds and promotion markers, drift and
risk per canary segment, versions. Opens on the worst adapter unless a link names one."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from lorawatch.app.common import context, query_param, status_badge, ts, window_days
from lorawatch.db.types import utcnow
from lorawatch.monitors import charts
from lorawatch.monitors import series as queries

settings, db = context()
st.title("Adapter")
now = utcnow()
fleet = queries.fleet(db, settings, now)  # worst first: the page opens where on-call should look
names = list(fleet["adapter"]) if not fleet.empty else []
if not names:
    st.info("No adapter is registered yet.")
    st.stop()
wanted = query_param("adapter")
if wanted and wanted not in names:
    st.warning(f'No adapter "{wanted}" here; showing the worst one instead.')
adapter = st.selectbox("Adapter", names, index=names.index(wanted) if wanted in names else 0)
row = fleet[fleet["adapter"] == adapter].iloc[0]
production = row["production"] if isinstance(row["production"], str) else None
st.markdown(
    f"**{adapter}** {status_badge(row['status'])} · production **{production or '-'}** · team {row['team'] or '-'}"
    f" · {row['health']}"
    f" · [alerts](./alerts) · [incidents](./incidents) · [registry](./registry?adapter={adapter})"
)
days = window_days()
end = now
start = end - timedelta(days=days)
window = (start, end + (end - start) / 40)  # a margin after now: the latest run is not drawn on the edge
with db.session() as session:
    events = queries.alias_events_frame(session, adapter, start, end)
    drift = queries.monitor_frame(session, adapter, ["logit_kl", "logit_js"], start, end)
    mmd = queries.monitor_frame(session, adapter, ["embedding_mmd", "logit_kl_ks"], start, end)
    risk = queries.monitor_frame(session, adapter, ["toxicity_rate", "pii_leak_rate"], start, end)
    latency = queries.latency_frame(session, adapter, max(start, end - timedelta(days=14)), end)
    kpis = queries.kpi_frame(session, adapter, start, end)
    limits = queries.thresholds(session, adapter, ["logit_kl", "toxicity_rate", "pii_leak_rate", "embedding_mmd"])
    segments = queries.segment_frame(session, adapter, production)
left, right = st.columns(2)
left.altair_chart(
    charts.drift_chart(
        drift, {"logit_kl": limits["logit_kl"]} if "logit_kl" in limits else None, events, window=window
    ),
    width="stretch",
)
right.altair_chart(
    charts.series_chart(
        mmd,
        title="Drift tests against the baseline run",
        y_title="p-value",
        thresholds={"p": settings.canary.drift_p_value},
        events=events,
        window=window,
    ),
    width="stretch",
)
left.altair_chart(
    charts.risk_chart(
        risk, {k: v for k, v in limits.items() if k in ("toxicity_rate", "pii_leak_rate")}, events, window=window
    ),
    width="stretch",
)
right.altair_chart(
    charts.latency_chart(
        latency,
        settings.slo.adapters.get(adapter, settings.slo.latency_ms),
        events,
        window=(max(start, end - timedelta(days=14)), end + (end - max(start, end - timedelta(days=14))) / 40),
    ),
    width="stretch",
)
left.altair_chart(charts.kpi_chart(kpis, events, window=window), width="stretch")

st.subheader("Drift and risk per segment")
if segments.empty:
    st.info(f"{production or 'This adapter'} has no canary run yet: not yet verified.")
else:
    st.caption(
        f"Run {segments['run'].iloc[0]}, version {segments['version'].iloc[0]}. Drift on the adapter's own domain "
        "(scope in-domain) is intended and breaches only against its in_domain_threshold."
    )
    st.dataframe(
        segments.drop(columns=["run", "version"]),
        hide_index=True,
        width="stretch",
        column_config={
            "logit_kl": st.column_config.NumberColumn("KL", format="%.3f"),
            "logit_js": st.column_config.NumberColumn("JS", format="%.3f"),
            "top1_agreement": st.column_config.NumberColumn("top-1", format="%.3f"),
            "embedding_cosine": st.column_config.NumberColumn("cosine dist", format="%.3f"),
            "toxicity_rate": st.column_config.NumberColumn("toxicity", format="percent"),
            "pii_leak_rate": st.column_config.NumberColumn("PII", format="percent"),
        },
    )

st.subheader("Versions")
from lorawatch.registry import catalog  # noqa: E402

with db.session() as session:
    view = catalog.adapter_view(session, adapter, settings.registry.review_due_days)


def _lineage(value: object) -> str:
    if not isinstance(value, dict):
        return "" if value in (None, "") else str(value)
    return "; ".join(
        f"{k}: {_lineage(v) if isinstance(v, dict) else v}" for k, v in value.items() if v not in (None, "")
    )


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
            "gate": {True: "passed", False: "failed"}.get((v.get("gate") or {}).get("passed"), "-"),
            "lineage": _lineage(v.get("lineage")),
        }
        for v in view["versions"]
    ],
    hide_index=True,
    width="stretch",
)
