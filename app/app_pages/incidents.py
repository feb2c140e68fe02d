"""Incidents: list, timeline, actions (acknowledge, note, approve, roll back, resolve), reports."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from lorawatch.app.auth import require_responder
from lorawatch.app.common import context, flash, query_param, show_flash, shown_errors, ts

settings, db = context()
st.title("Incidents")
show_flash()
from lorawatch.incidents import service  # noqa: E402

show_all = st.toggle("Include resolved", value=False)
items = service.list_incidents(db, include_resolved=show_all)
if not items:
    st.success("No open incident." if not show_all else "No incident yet.")
    st.stop()
st.dataframe(
    [
        {
            "id": i["id"],
            "state": i["state"],
            "severity": i["severity"],
            "adapter": i["adapter"],
            "opened": ts(i["opened_at"]),
            "commander": i["commander"],
            "TTR (min)": i["time_to_recover_min"],
            "title": i["title"],
        }
        for i in items
    ],
    hide_index=True,
    width="stretch",
)
ids = [i["id"] for i in items]
wanted = query_param("incident")
chosen = st.selectbox(
    "Incident", ids, index=ids.index(int(wanted)) if wanted and wanted.isdigit() and int(wanted) in ids else 0
)
incident = service.show(db, int(chosen))
st.subheader(f"{incident['id']}: {incident['title']}")
c1, c2, c3, c4 = st.columns(4)
c1.metric("State", incident["state"])
c2.metric(
    "Time to detect", f"{incident['time_to_detect_min']} min" if incident["time_to_detect_min"] is not None else "-"
)
c3.metric(
    "Time to acknowledge",
    f"{incident['time_to_acknowledge_min']} min" if incident["time_to_acknowledge_min"] is not None else "-",
)
c4.metric(
    "Time to recover", f"{incident['time_to_recover_min']} min" if incident["time_to_recover_min"] is not None else "-"
)

st.markdown("**Timeline (UTC)**")
st.dataframe(
    [
        {"time": ts(e["ts"]), "who": e["actor"], "what": e["kind"], "message": e["message"]}
        for e in incident["timeline"]
    ],
    hide_index=True,
    width="stretch",
)
if incident["alerts"]:
    st.markdown("**Alerts**")
    st.dataframe(
        [
            {
                "id": a["id"],
                "rule": a["rule"],
                "state": a["state"],
                "version": a["labels"].get("version"),
                "value": a["value"],
                "summary": a["summary"],
            }
            for a in incident["alerts"]
        ],
        hide_index=True,
        width="stretch",
    )
if incident["action_items"]:
    st.markdown("**Action items**")
    st.dataframe(incident["action_items"], hide_index=True, width="stretch")


def _rolled_back(done: dict, adapter: str | None, alias: str) -> str:
    """The rollback's own timeline line: which version the alias left and which it serves now."""
    moves = [e for e in done.get("timeline", []) if e["kind"] == "rollback"]
    return moves[-1]["message"][:1].upper() + moves[-1]["message"][1:] if moves else f"Rolled back {adapter} {alias}."


st.markdown("**Act**")
user = require_responder("acknowledge, roll back, approve or resolve")
if user and incident["state"] != "resolved":
    a1, a2, a3, a4 = st.columns(4)
    with shown_errors():
        if incident["state"] == "triggered" and a1.button("Acknowledge"):
            service.acknowledge(db, incident["id"], actor=user)
            flash(f"Incident {incident['id']} acknowledged by {user}.")
        if a2.button("Approve rollback"):
            service.approve(db, settings, incident["id"], actor=user, reason="approved on the dashboard")
            flash(f"Rollback of {incident['adapter']} approved by {user}.")
        if a4.button("Resolve"):
            service.resolve(db, settings, incident["id"], actor=user, note="resolved on the dashboard")
            flash(f"Incident {incident['id']} resolved by {user}.")
    with st.form("rollback"):
        reason = st.text_input("Rollback reason")
        alias = st.text_input("Alias", value="production")
        if st.form_submit_button(f"Roll back {incident['adapter'] or ''}", disabled=not incident["adapter"]):
            with shown_errors():
                done = service.rollback(db, settings, incident["id"], actor=user, reason=reason, alias=alias)
                flash(_rolled_back(done, incident["adapter"], alias))
    with st.form("note"):
        text = st.text_area("Note")
        if st.form_submit_button("Add note"):
            with shown_errors():
                service.add_note(db, incident["id"], text, actor=user)
                flash("Note added.")

st.markdown("**Post-incident report**")
fmt = st.radio(
    "Format",
    ["html", "pdf", "md"],
    horizontal=True,
    help="html is one file with its charts inlined; md references its charts, which this download leaves out.",
)
if st.button("Prepare report"):
    from lorawatch.incidents.report import export

    with shown_errors(), tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"incident-{incident['id']}.{fmt}"
        export(db, settings, incident["id"], fmt=fmt, out=out)
        st.download_button(
            f"Download {out.name}",
            out.read_bytes(),
            file_name=out.name,
            mime={"md": "text/markdown", "html": "text/html", "pdf": "application/pdf"}[fmt],
        )
