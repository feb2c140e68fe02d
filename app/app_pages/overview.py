"""Overview: the on-call glance. Firing alerts on top, worst first; the fleet's health per
adapter, worst first, each row linking to its Adapter page; open incidents. Refreshes itself
every ``[dashboard] refresh_s``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lorawatch.app.common import coloured, context, page_link, ts
from lorawatch.db.types import utcnow

settings, db = context()
st.title("Overview")
from lorawatch.alerts.engine import list_alerts  # noqa: E402
from lorawatch.incidents.service import list_incidents  # noqa: E402
from lorawatch.monitors.series import fleet  # noqa: E402

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def overview() -> None:
    now = utcnow()
    firing = sorted(
        list_alerts(db, settings, state="firing", now=now),
        key=lambda a: (SEVERITY_ORDER.get(a["severity"], 3), a["fired_at"] or now),
    )
    incidents = list_incidents(db)
    table = fleet(db, settings, now)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Adapters", len(table))
    c2.metric("Firing alerts", len(firing))
    c3.metric("Critical", sum(a["severity"] == "critical" for a in firing))
    c4.metric("Open incidents", len(incidents))
    st.caption(
        f"As of {ts(now)}"
        + (f"; refreshes every {settings.dashboard.refresh_s:g} s." if settings.dashboard.refresh_s else ".")
    )

    st.subheader("Firing alerts")
    if firing:
        alerts = pd.DataFrame(
            [
                {
                    "severity": a["severity"],
                    "alert": page_link("alerts", alert=a["id"]),
                    "rule": a["rule"],
                    "adapter": page_link("adapter", adapter=a["labels"]["adapter"])
                    if a["labels"].get("adapter")
                    else None,
                    "version": a["labels"].get("version"),
                    "since": ts(a["fired_at"]),
                    "summary": a["annotations"].get("summary"),
                    "acked by": a["acked_by"] or "",
                    "muted": "silenced" if a["silenced_by"] else ("inhibited" if a["inhibited"] else ""),
                    "runbook": a["runbook_url"],
                }
                for a in firing
            ]
        )
        st.dataframe(
            coloured(alerts, ["severity"]),
            hide_index=True,
            width="stretch",
            column_config={
                "alert": st.column_config.LinkColumn("alert", display_text=r"alert=(\d+)"),
                "adapter": st.column_config.LinkColumn("adapter", display_text=r"adapter=(.+)$"),
                "runbook": st.column_config.LinkColumn("runbook", display_text="open"),
            },
        )
    else:
        st.success("No alert is firing.")

    st.subheader("Fleet")
    if table.empty:
        st.info("No adapter is registered yet: `lorawatch registry add ...`, or run `lorawatch demo`.")
    else:
        table = table.assign(adapter=[page_link("adapter", adapter=name) for name in table["adapter"]])
        st.dataframe(
            coloured(table, ["status"]),
            hide_index=True,
            width="stretch",
            column_config={
                "status": st.column_config.TextColumn("status", help="the most severe firing alert, else breaches"),
                "adapter": st.column_config.LinkColumn("adapter", display_text=r"adapter=(.+)$"),
                "logit_kl": st.column_config.NumberColumn("KL", format="%.3f"),
                "mmd_p": st.column_config.NumberColumn("MMD p", format="%.3f"),
                "toxicity_rate": st.column_config.NumberColumn("toxicity", format="percent"),
                "pii_leak_rate": st.column_config.NumberColumn("PII", format="percent"),
                "p99_ms_24h": st.column_config.NumberColumn("P99 24h (ms)", format="%.0f"),
                "requests_24h": st.column_config.NumberColumn("requests 24h", format="%d"),
                "kpi_change": st.column_config.NumberColumn("KPI change", format="percent"),
            },
        )
    if incidents:
        st.subheader("Open incidents")
        st.dataframe(
            coloured(
                pd.DataFrame(
                    [
                        {
                            "incident": page_link("incidents", incident=i["id"]),
                            "state": i["state"],
                            "severity": i["severity"],
                            "adapter": i["adapter"],
                            "opened": ts(i["opened_at"]),
                            "commander": i["commander"],
                            "title": i["title"],
                        }
                        for i in incidents
                    ]
                ),
                ["severity"],
            ),
            hide_index=True,
            width="stretch",
            column_config={"incident": st.column_config.LinkColumn("incident", display_text=r"incident=(\d+)")},
        )


if settings.dashboard.refresh_s:
    st.fragment(overview, run_every=settings.dashboard.refresh_s)()
else:
    overview()
