"""Jobs: the scheduled jobs and the scheduler's run history."""

from __future__ import annotations

import streamlit as st

from lorawatch.app.common import context, ts

settings, db = context()
st.title("Jobs")
from lorawatch.jobs import history, list_jobs  # noqa: E402

jobs = list_jobs(db, settings)
st.dataframe(
    [{**j, "next_run": ts(j["next_run"]), "last_started": ts(j["last_started"])} for j in jobs],
    hide_index=True,
    width="stretch",
)
st.subheader("Run history")
runs = history(db, limit=200)
if runs:
    st.dataframe(
        [
            {
                "job": r["job"],
                "scheduled for": ts(r["scheduled_for"]),
                "attempt": r["attempt"],
                "trigger": r["trigger"],
                "status": r["status"],
                "started": ts(r["started_at"]),
                "ended": ts(r["ended_at"]),
                "seconds": r["duration_s"],
                "host": r["host"],
                "error": r["error"],
            }
            for r in runs
        ],
        hide_index=True,
        width="stretch",
    )
else:
    st.caption("No job has run yet: `lorawatch scheduler` or `lorawatch scheduler --once`.")
