"""Registry: versions, aliases and their history, data expiry and review status."""

from __future__ import annotations

import streamlit as st

from lorawatch.app.common import context, ts

settings, db = context()
st.title("Registry")
from lorawatch.registry import catalog  # noqa: E402
from lorawatch.registry.aliases import alias_history  # noqa: E402

with db.session() as session:
    versions = catalog.list_versions(session, review_days=settings.registry.review_due_days)
if not versions:
    st.info("No adapter version is registered yet.")
    st.stop()
c1, c2, c3 = st.columns(3)
c1.metric("Versions", len(versions))
c2.metric("Data expired", sum(bool(v["expired"]) for v in versions))
c3.metric("Review overdue", sum(bool(v["review_overdue"]) for v in versions))
st.dataframe(
    [
        {
            "adapter": v["adapter"],
            "version": v["version"],
            "base": v["base"],
            "state": v["state"],
            "aliases": ", ".join(a["alias"] + (f"/{a['tenant']}" if a["tenant"] else "") for a in v["aliases"]),
            "team": (v["ownership"] or {}).get("team"),
            "rank": v["rank"],
            "created": ts(v["created_at"]),
            "data expires": v["data_expires_on"],
            "expired": v["expired"],
            "review due": ts(v["review_due"]),
            "review overdue": v["review_overdue"],
            "gate passed": (v["gate"] or {}).get("passed"),
        }
        for v in versions
    ],
    hide_index=True,
    width="stretch",
)
st.subheader("Alias history")
adapters = sorted({v["adapter"] for v in versions})
adapter = st.selectbox(
    "Adapter",
    adapters,
    index=adapters.index(st.query_params["adapter"]) if st.query_params.get("adapter") in adapters else 0,
)
with db.session() as session:
    history = alias_history(session, adapter)
st.dataframe([{k: ts(v) if k == "ts" else v for k, v in h.items()} for h in history], hide_index=True, width="stretch")
