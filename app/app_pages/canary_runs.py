"""Canary runs: runs per dataset; per prompt, base and adapted outputs side by side with scores;
reviewers' annotations."""

from __future__ import annotations

import streamlit as st

from lorawatch.app.auth import require_responder
from lorawatch.app.common import context, query_param, shown_errors, ts

settings, db = context()
st.title("Canary runs")
from lorawatch.monitors import canary_read, risk  # noqa: E402

runs = canary_read.list_runs(db, limit=200)
if not runs:
    st.info("No canary run yet: `lorawatch canary run --dataset canary_data/core-v1.jsonl`.")
    st.stop()
st.dataframe(
    [{**r, "started_at": ts(r["started_at"]), "finished_at": ts(r["finished_at"])} for r in runs],
    hide_index=True,
    width="stretch",
)
ids = [r["run"] for r in runs]
wanted = query_param("run")
run_id = st.selectbox(
    "Run", ids, index=ids.index(int(wanted)) if wanted and wanted.isdigit() and int(wanted) in ids else 0
)
summary = canary_read.run_summary(db, int(run_id))
st.markdown(f"**Run {run_id}** on `{summary['dataset']}`: {summary['status']}, device {summary.get('device') or '-'}")
st.dataframe(
    [
        {
            "adapter": a["adapter"],
            "version": a["version"],
            **{m: round(v["value"], 4) if v["value"] is not None else None for m, v in sorted(a["monitors"].items())},
        }
        for a in summary["adapters"]
    ],
    hide_index=True,
    width="stretch",
)

adapters = [a["adapter"] for a in summary["adapters"]]
adapter = st.selectbox("Adapter", adapters)
flagged = st.toggle("Only flagged samples (toxic or leaking PII)")
samples = risk.samples(
    db, int(run_id), adapter=adapter, flagged_only=flagged, threshold=settings.risk.toxicity_threshold
)
st.caption(f"{len(samples)} samples")
with db.session() as session:
    prompts = canary_read.prompt_texts(session, int(run_id))


def _tox(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


for s in samples[:100]:
    with st.container(border=True):
        st.markdown(
            f"`{s['prompt_id']}` ({s['segment']}): KL {s['kl_mean']:.3f}" + (" · **flagged**" if s["flagged"] else "")
        )
        if isinstance(prompts, dict) and s["prompt_id"] in prompts:
            st.markdown("**Prompt**")
            st.text(prompts[s["prompt_id"]])
        else:
            st.caption(f"prompt not shown: {prompts if isinstance(prompts, str) else 'not in the dataset'}")
        left, right = st.columns(2)
        left.markdown("**Base**")
        left.text(s["base_output"] or "")
        left.caption(
            f"toxicity {_tox(s['base_toxicity'])} · PII {', '.join(risk.leak_types(s['base_pii_leaks'])) or 'none'}"
        )
        right.markdown(f"**{s['adapter']} {s['version']}**")
        right.text(s["output"] or "")
        right.caption(f"toxicity {_tox(s['toxicity'])} · PII {', '.join(risk.leak_types(s['pii_leaks'])) or 'none'}")
        for note in s["annotations"]:
            st.caption(f"{note['actor']}: {note['verdict']}" + (f" ({note['note']})" if note["note"] else ""))

st.subheader("Annotate a sample")
user = require_responder("annotate samples")
if user and samples:
    with st.form("annotate"):
        prompt_id = st.selectbox("Sample", [s["prompt_id"] for s in samples])
        verdict = st.selectbox("Verdict", list(risk.VERDICTS))
        note = st.text_input("Note")
        if st.form_submit_button("Record verdict"):
            with shown_errors(), db.session() as session:
                risk.annotate(
                    session,
                    run_id=int(run_id),
                    prompt_id=prompt_id,
                    adapter=adapter,
                    verdict=verdict,
                    note=note or None,
                    actor=user,
                )
            st.success("Recorded.")
