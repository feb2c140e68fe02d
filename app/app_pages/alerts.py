"""Alerts: firing, pending and silenced; acknowledge and silence (signed in); deliveries that
failed for good, sent again on request; runbooks inline."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from lorawatch.app.auth import require_responder
from lorawatch.app.common import context, query_param, shown_errors, ts
from lorawatch.db.types import utcnow

settings, db = context()
st.title("Alerts")
from lorawatch.alerts.engine import RULE_FAILED, acknowledge, list_alerts  # noqa: E402
from lorawatch.alerts.outbox import list_notifications, retry  # noqa: E402
from lorawatch.alerts.rules import load_rules, runbook_path  # noqa: E402
from lorawatch.alerts.silences import add_silence, expire_silence, list_silences  # noqa: E402

now = utcnow()


def rows(items):
    return [
        {
            "id": a["id"],
            "state": a["state"],
            "severity": a["severity"],
            "rule": a["rule"],
            "adapter": a["labels"].get("adapter"),
            "version": a["labels"].get("version"),
            "value": None if a["value"] is None else f"{a['value']:.4g}",
            "threshold": None if a["threshold"] is None else f"{a['threshold']:.4g}",
            "since": ts(a["fired_at"] or a["active_at"]),
            "acked by": a["acked_by"] or "",
            "summary": a["annotations"].get("summary"),
        }
        for a in items
    ]


everything = list_alerts(db, settings, state="all", now=now)  # one read; the tabs filter it
open_alerts = [a for a in everything if a["state"] in ("pending", "firing")]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


# a deep link from chat (?alert=ID, the notifications' Dashboard button) opens on that alert
focus_id = query_param("alert")
focus = next((a for a in everything if str(a["id"]) == focus_id), None) if focus_id else None
if focus_id and focus is None:
    st.warning(f"No alert {focus_id} here: it was purged, or the link comes from another LoraWatch.")
elif focus is not None:
    say = st.error if focus["severity"] == "critical" and focus["state"] == "firing" else st.warning
    if focus["state"] not in ("firing", "pending"):
        say = st.info
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(focus["labels"].items()) if k not in ("severity",))
    say(
        f"**Alert {focus['id']}: {focus['rule']}** ({focus['severity']}, {focus['state']} since "
        f"{ts(focus['fired_at'] or focus['active_at'])})\n\n{focus['annotations'].get('summary', '')}\n\n"
        f"value {_num(focus['value'])} against threshold {_num(focus['threshold'])}; labels {labels}"
        + (f"; acknowledged by {focus['acked_by']}" if focus["acked_by"] else "")
    )
views = [
    ("Firing", [a for a in everything if a["state"] == "firing"], st.success, "No alert is firing."),
    ("Pending", [a for a in everything if a["state"] == "pending"], st.caption, "None pending."),
    (
        "Silenced",
        [a for a in open_alerts if a["silenced_by"] or a["inhibited"]],
        st.caption,
        "None silenced or inhibited.",
    ),
    ("Resolved", [a for a in everything if a["state"] == "resolved"][-50:], st.caption, "None resolved yet."),
]
failed = list_notifications(db, status="failed", limit=200)
tabs = st.tabs([name for name, *_ in views] + ["Silences", "Rules", f"Delivery ({len(failed)} failed)"])
for tab, (_, items, say, empty) in zip(tabs, views):
    with tab:
        if items:
            st.dataframe(rows(items), hide_index=True, width="stretch")
        else:
            say(empty)
with tabs[4]:
    silences = list_silences(db, now=now)
    if silences:
        st.dataframe(
            [
                {
                    **s,
                    "matchers": ", ".join(s["matchers"]),
                    "starts_at": ts(s["starts_at"]),
                    "ends_at": ts(s["ends_at"]),
                }
                for s in silences
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.caption("No silence in force.")
with tabs[5]:
    st.dataframe([r.describe() for r in load_rules(settings)], hide_index=True, width="stretch")
with tabs[6]:
    pending = list_notifications(db, status="pending", limit=1000)
    st.caption(f"{len(pending)} notifications waiting in the outbox; failed ones below are not retried by themselves.")
    if failed:
        st.dataframe(
            [
                {
                    "id": n["id"],
                    "receiver": n["receiver"],
                    "alerts": n["alerts"],
                    "attempts": n["attempts"],
                    "queued": ts(n["created_at"]),
                    "failed": ts(n["failed_at"]),
                    "last error": n["last_error"],
                }
                for n in failed
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.success("No notification failed.")

st.subheader("Act")
left, right = st.columns(2)
with left:
    st.markdown("**Acknowledge**")
    user = require_responder("acknowledge alerts")
    if user and open_alerts:
        with st.form("ack"):
            choice = st.selectbox(
                "Alert",
                [a["id"] for a in open_alerts],
                format_func=lambda i: next(
                    f"{a['id']} {a['rule']} {a['labels'].get('adapter', '')}" for a in open_alerts if a["id"] == i
                ),
            )
            comment = st.text_input("Comment")
            if st.form_submit_button("Acknowledge"):
                with shown_errors():
                    acknowledge(db, str(choice), actor=user, comment=comment or None)
                    st.success(f"Alert {choice} acknowledged.")
with right:
    st.markdown("**Silence**")
    user = require_responder("silence alerts")
    if user:
        with st.form("silence"):
            matchers = st.text_input(
                "Matchers (comma-separated)", placeholder='adapter="support-bot", alertname="logit_drift"'
            )
            hours = st.number_input("Hours", min_value=0.25, max_value=24 * 14.0, value=2.0, step=0.25)
            comment = st.text_input("Why")
            if st.form_submit_button("Silence"):
                with shown_errors():
                    made = add_silence(
                        db,
                        matchers=[m.strip() for m in matchers.split(",") if m.strip()],
                        duration=timedelta(hours=hours),
                        comment=comment,
                        actor=user,
                    )
                    st.success(f"Silence {made['id']} until {ts(made['ends_at'])}.")
        if silences:
            with st.form("expire"):
                sid = st.selectbox("End silence", [s["id"] for s in silences])
                if st.form_submit_button("End now"):
                    with shown_errors():
                        expire_silence(db, int(sid), actor=user)
                        st.success(f"Silence {sid} ended.")

if failed:
    st.markdown("**Send a failed notification again**")
    user = require_responder("send failed notifications again")
    if user:
        with st.form("retry"):
            note = st.selectbox(
                "Notification",
                [n["id"] for n in failed],
                format_func=lambda i: next(f"{n['id']} to {n['receiver']}" for n in failed if n["id"] == i),
            )
            if st.form_submit_button("Send again"):
                with shown_errors():
                    retry(db, int(note), actor=user)
                    st.success(f"Notification {note} is pending again; the next flush sends it.")

st.subheader("Runbook")
rule_ids = sorted({r.id for r in load_rules(settings)} | {RULE_FAILED})
wanted = (
    query_param("runbook") or (focus["rule"] if focus else None) or (open_alerts[0]["rule"] if open_alerts else None)
)
rule = st.selectbox("Rule", rule_ids, index=rule_ids.index(wanted) if wanted in rule_ids else 0)
path = runbook_path(rule)
if path.is_file():
    import re

    st.markdown(
        re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", path.read_text(encoding="utf-8"), flags=re.M)
    )
else:
    st.warning(f"No runbook for {rule} at {path}.")
