"""Overview: firing alerts on top, then the fleet's health per adapter."""

from __future__ import annotations

import streamlit as st

from lorawatch.app.common import context, ts
from lorawatch.db.types import utcnow

settings, db = context()
st.title("Overview")
from lorawatch.alerts.engine import list_alerts  # noqa: E402
from lorawatch.incidents.service import list_incidents  # noqa: E402
from lorawatch.monitors.series import fleet  # noqa: E402

now = utcnow()
firing = list_alerts(db, settings, state="firing", now=now)
incidents = list_incidents(db)
table = fleet(db, settings, now)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Adapters", len(table))
c2.metric("Firing alerts", len(firing))
c3.metric("Critical", sum(a["severity"] == "critical" for a in firing))
c4.metric("Open incidents", len(incidents))

st.subheader("Firing alerts")
if firing:
    st.dataframe(
        [
            {
                "severity": a["severity"],
                "rule": a["rule"],
                "adapter": a["labels"].get("adapter"),
                "version": a["labels"].get("version"),
                "since": ts(a["fired_at"]),
                "summary": a["annotations"].get("summary"),
                "acked by": a["acked_by"] or "",
                "muted": "silenced" if a["silenced_by"] else ("inhibited" if a["inhibited"] else ""),
                "runbook": a["runbook_url"],
            }
            for a in firing
        ],
        hide_index=True,
        width="stretch",
        column_config={"runbook": st.column_config.LinkColumn("runbook", display_text="open")},
    )
else:
    st.success("No alert is firing.")

st.subheader("Fleet")
if table.empty:
    st.info("No adapter is registered yet: `lorawatch registry add ...`, or run `lorawatch demo`.")
else:
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "logit_kl": st.column_config.NumberColumn("KL", format="%.3f"),
            "mmd_p": st.column_config.NumberColumn("MMD p", format="%.3f"),
            "toxicity_rate": st.column_config.NumberColumn("toxicity", format="percent"),
            "pii_leak_rate": st.column_config.NumberColumn("PII", format="percent"),
            "p99_ms_24h": st.column_config.NumberColumn("P99 24h (ms)", format="%.0f"),
            "kpi_change": st.column_config.NumberColumn("KPI change", format="percent"),
        },
    )
if incidents:
    st.subheader("Open incidents")
    st.dataframe(
        [
            {
                "id": i["id"],
                "state": i["state"],
                "severity": i["severity"],
                "adapter": i["adapter"],
                "opened": ts(i["opened_at"]),
                "commander": i["commander"],
                "title": i["title"],
            }
            for i in incidents
        ],
        hide_index=True,
        width="stretch",
    )
