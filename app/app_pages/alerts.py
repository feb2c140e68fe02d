"""Alerts: firing, pending and silenced; acknowledge and silence (signed in); deliveries that
failed for good, sent again on request; runbooks inline."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from lorawatch.app.auth import require_responder
from lorawatch.app.common import context, flash, query_param, show_flash, shown_errors, ts
from lorawatch.db.types import utcnow

settings, db = context()
st.title("Alerts")
show_flash()
from lorawatch.alerts.engine import RULE_FAILED, acknowledge, list_alerts  # noqa: E402
from lorawatch.alerts.outbox import list_notifications, retry  # noqa: E402
from lorawatch.alerts.rules import format_p_value, load_rules, runbook_path  # noqa: E402
from lorawatch.alerts.silences import (  # noqa: E402
    add_silence,
    expire_silence,
    list_silences,
    matchers_for,
    silence_preview,
)
from lorawatch.errors import LoraWatchError  # noqa: E402
from lorawatch.monitors.registry import get_monitor  # noqa: E402

now = utcnow()


# rules whose value is a p-value (kpi_drop, embedding_drift) show it as one: "p < 0.0001"
def _is_p_value(monitor: str | None) -> bool:
    try:
        return monitor is not None and get_monitor(monitor).breached_when == "p_value_below"
    except LoraWatchError:  # a rule over a monitor no plugin provides here
        return False


P_VALUE_RULES = {r.id for r in load_rules(settings) if _is_p_value(r.monitor)}


def _value(a, key: str) -> str | None:
    if a[key] is None:
        return None
    return format_p_value(a[key]) if a["rule"] in P_VALUE_RULES else f"{a[key]:.4g}"


def rows(items):
    return [
        {
            "id": a["id"],
            "state": a["state"],
            "severity": a["severity"],
            "rule": a["rule"],
            "adapter": a["labels"].get("adapter"),
            "version": a["labels"].get("version") or "-",
            "value": _value(a, "value"),
            "threshold": _value(a, "threshold"),
            "since": ts(a["fired_at"] or a["active_at"]),
            "acked by": a["acked_by"] or "",
            "summary": a["annotations"].get("summary"),
        }
        for a in items
    ]


everything = list_alerts(db, settings, state="all", now=now)  # one read; the tabs filter it
open_alerts = [a for a in everything if a["state"] in ("pending", "firing")]


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
        f"value {_value(focus, 'value') or '-'} against threshold {_value(focus, 'threshold') or '-'}; labels {labels}"
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
                    flash(f"Alert {choice} acknowledged.")
with right:
    st.markdown("**Silence**")
    user = require_responder("silence alerts")
    if user:
        # "silence this alert": matchers filled in from the alert in focus (or the one chosen),
        # and a preview of every open alert they would mute before anything is stored
        choices = [None] + [a["id"] for a in open_alerts]
        chosen = st.selectbox(
            "Silence this alert",
            choices,
            index=choices.index(focus["id"]) if focus is not None and focus["id"] in choices else 0,
            format_func=lambda i: (
                "(write matchers)"
                if i is None
                else next(
                    f"{a['id']} {a['rule']} {a['labels'].get('adapter', '')}" for a in open_alerts if a["id"] == i
                )
            ),
        )
        source = next((a for a in open_alerts if a["id"] == chosen), None)
        prefilled = "\n".join(matchers_for(source["labels"])) if source else ""
        text = st.text_area(
            "Matchers, one per line",
            value=prefilled,
            key=f"silence-matchers-{chosen}",
            placeholder='adapter="support-bot"\nalertname="logit_drift"',
        )
        matchers = [line.strip() for line in text.splitlines() if line.strip()]
        try:
            muted = silence_preview(matchers, open_alerts)
        except LoraWatchError as exc:
            muted = []
            st.error(exc.one_line())
        else:
            if matchers:
                st.caption(f"Would mute {len(muted)} of {len(open_alerts)} open alerts:")
                if muted:
                    st.dataframe(rows(muted), hide_index=True, width="stretch")
        hours = st.number_input("Hours", min_value=0.25, max_value=24 * 14.0, value=2.0, step=0.25)
        comment = st.text_input("Why", key="silence-why")
        if st.button("Silence", disabled=not matchers):
            with shown_errors():
                made = add_silence(db, matchers=matchers, duration=timedelta(hours=hours), comment=comment, actor=user)
                flash(
                    f"Silence {made['id']} until {ts(made['ends_at'])}: "
                    f"{len(muted)} alert{'' if len(muted) == 1 else 's'} muted."
                )
        if silences:
            with st.form("expire"):
                sid = st.selectbox("End silence", [s["id"] for s in silences])
                if st.form_submit_button("End now"):
                    with shown_errors():
                        expire_silence(db, int(sid), actor=user)
                        flash(f"Silence {sid} ended.")

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
                    flash(f"Notification {note} is pending again; the next flush sends it.")

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
