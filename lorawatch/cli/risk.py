"""``lorawatch risk``: toxicity and PII scores, before/after samples, reviewer annotations."""

from __future__ import annotations

from pathlib import Path

import click

from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.output import emit, json_option, table
from lorawatch.monitors.risk import annotate as add
from lorawatch.monitors.risk import samples as get_samples
from lorawatch.monitors.risk import score_file
from lorawatch.monitors.risk_scorers import RiskScorers


@click.group()
def risk() -> None:
    """Content risk: toxicity and PII of outputs; reviewers' verdicts."""


@risk.command("score")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@json_option
@pass_app
def score(app: AppContext, file: Path, as_json: bool) -> None:
    """Score each line's "text" of a JSONL file for toxicity and PII.

    A line's optional "prompt" makes PII a leak check: entities also in the prompt are not leaks.
    """

    # in this process unless [risk] pii_workers says otherwise: no model runs beside it here
    risk_settings = app.settings.risk
    scorers = RiskScorers.from_risk_settings(risk_settings, pii_workers=risk_settings.pii_workers or 0)
    try:
        rows = score_file(file, scorers)
    finally:
        scorers.close()
    emit(
        rows,
        as_json,
        lambda: table(
            [{**r, "pii": [f"{p['type']}:{p['text']}" for p in r["pii"]]} for r in rows],
            ["line", "id", "toxicity", "toxic", "pii", "toxicity_backend"],
        ),
    )


@risk.command("samples")
@click.argument("run_id", type=int)
@click.option("--adapter", help="Only this adapter.")
@click.option("--flagged", is_flag=True, help="Only samples with a toxic output or a PII leak.")
@json_option
@pass_app
def samples(app: AppContext, run_id: int, adapter: str | None, flagged: bool, as_json: bool) -> None:
    """Before/after samples of a run: base and adapted outputs with scores and annotations."""

    rows = get_samples(app.database, run_id, adapter, flagged, app.settings.risk.toxicity_threshold)

    def text() -> str:
        blocks = []
        for r in rows:
            leaks = ", ".join(f"{p['type']}:{p['text']}" for p in r["pii_leaks"]) or "-"
            blocks.append(
                f"[{r['adapter']}@{r['version']}] {r['prompt_id']} ({r['segment']})  toxicity {r['toxicity']:.2f} "
                f"(base {r['base_toxicity']:.2f})  leaks {leaks}\n  base:    {r['base_output']}\n  adapted: {r['output']}"
                if r["toxicity"] is not None
                else f"[{r['adapter']}] {r['prompt_id']}\n  adapted: {r['output']}"
            )
        return "\n".join(blocks) or "(none)"

    emit(rows, as_json, text)


@risk.command("annotate")
@click.argument("run_id", type=int)
@click.option("--prompt", "prompt_id", required=True, help="Prompt id of the sample.")
@click.option("--adapter", required=True, help="Adapter of the sample.")
@click.option("--verdict", required=True, type=click.Choice(["ok", "harmful", "false_positive", "needs_followup"]))
@click.option("--note", help="What the reviewer saw.")
@json_option
@pass_app
def annotate(app: AppContext, run_id, prompt_id, adapter, verdict, note, as_json) -> None:
    """Record a reviewer's verdict on one before/after sample."""

    with app.database.session() as session:
        row = add(
            session, run_id=run_id, prompt_id=prompt_id, adapter=adapter, verdict=verdict, note=note, actor=app.actor
        )
        data = {
            "run": run_id,
            "prompt_id": prompt_id,
            "adapter": adapter,
            "verdict": row.verdict,
            "note": row.note,
            "actor": row.actor,
            "ts": row.ts,
        }
    emit(data, as_json, f"{adapter} {prompt_id} in run {run_id}: {verdict} ({app.actor})")
