"""Costs: adapter hit rate, GPU hours per tenant, tokens."""

from __future__ import annotations

from datetime import timedelta

import altair as alt
import pandas as pd
import streamlit as st

from lorawatch.app.common import context, window_days

settings, db = context()
st.title("Costs")
from lorawatch.monitors.traffic_eval import costs  # noqa: E402

days = window_days()
data = costs(db, window=timedelta(days=days))
if not data["adapters"]:
    st.info("No traffic ingested in this window: `lorawatch ingest requests FILE`.")
    st.stop()
adapters = pd.DataFrame(data["adapters"])
st.subheader("Per adapter")
st.dataframe(adapters, hide_index=True, width="stretch")
value = next((c for c in ("gpu_hours", "requests") if c in adapters.columns), adapters.columns[1])
st.altair_chart(
    alt.Chart(adapters)
    .mark_bar()
    .encode(x=alt.X(f"{value}:Q"), y=alt.Y("adapter:N", sort="-x"))
    .properties(title=f"{value} per adapter"),
    width="stretch",
)
st.subheader("Per tenant")
st.dataframe(pd.DataFrame(data["tenants"]), hide_index=True, width="stretch")
if data.get("daily"):
    st.subheader("Per day")
    st.dataframe(pd.DataFrame(data["daily"]), hide_index=True, width="stretch")
