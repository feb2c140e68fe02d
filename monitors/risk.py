"""Content risk of canary outputs: toxicity and PII leaks of every base and adapted output,
reviewer annotations on the before/after samples, and ``risk score`` for any JSONL file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import CanaryResult, CanaryRun, RiskAnnotation
from lorawatch.errors import DatasetError, InputError, NotFoundError
from lorawatch.monitors.canary_read import results_with_base
from lorawatch.monitors.risk_scorers import RiskScorers
from lorawatch.registry.versions import get_version

VERDICTS = ("ok", "harmful", "false_positive", "needs_followup")


def leak_types(leaks: list[dict[str, Any]] | None) -> list[str]:
    """The entity type of each stored PII leak (``{"type", "text", "score"}``), for display."""
    return [str(leak.get("type", "?")) for leak in leaks or []]


def samples(
    db: Database, run_id: int, adapter: str | None = None, flagged_only: bool = False, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Before/after samples of a run: base and adapted output with their scores and annotations."""
    with db.session() as session:
        if session.get(CanaryRun, run_id) is None:
            raise NotFoundError(f"no canary run {run_id}", fix="list runs with `lorawatch canary list`")
        notes: dict[tuple[str, int], list[dict]] = {}
        for a in session.scalars(
            select(RiskAnnotation).where(RiskAnnotation.run_id == run_id).order_by(RiskAnnotation.ts)
        ):
            notes.setdefault((a.prompt_id, a.adapter_version_id), []).append(
                {"verdict": a.verdict, "note": a.note, "actor": a.actor, "ts": a.ts}
            )
        result = []
        for r, b in results_with_base(session, run_id, adapter=adapter or None):
            flagged = bool(r.pii_leaks) or (r.toxicity is not None and r.toxicity >= threshold)
            if flagged_only and not flagged:
                continue
            result.append(
                {
                    "prompt_id": r.prompt_id,
                    "segment": r.segment,
                    "adapter": r.adapter,
                    "version": r.version,
                    "output": r.output,
                    "toxicity": r.toxicity,
                    "pii_leaks": r.pii_leaks or [],
                    "base_output": b.output if b else None,
                    "base_toxicity": b.toxicity if b else None,
                    "base_pii_leaks": (b.pii_leaks or []) if b else [],
                    "flagged": flagged,
                    "kl_mean": r.kl_mean,
                    "annotations": notes.get((r.prompt_id, r.adapter_version_id), []),
                }
            )
        return result


def annotate(
    session, *, run_id: int, prompt_id: str, adapter: str, verdict: str, note: str | None, actor: str
) -> RiskAnnotation:
    """Record a reviewer's verdict on one sample (the dashboard calls this too)."""
    if verdict not in VERDICTS:
        raise InputError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}", fix="pick a listed verdict")
    run = session.get(CanaryRun, run_id)
    if run is None:
        raise NotFoundError(f"no canary run {run_id}", fix="list runs with `lorawatch canary list`")
    names = {a["adapter"]: a for a in run.adapters}
    if adapter not in names:
        raise NotFoundError(
            f'run {run_id} did not cover adapter "{adapter}"; it covered: {", ".join(sorted(names))}',
            fix="pick an adapter of the run",
        )
    version = get_version(session, adapter, names[adapter]["version"])
    exists = session.scalar(
        select(CanaryResult.id).where(
            CanaryResult.run_id == run_id,
            CanaryResult.prompt_id == prompt_id,
            CanaryResult.adapter_version_id == version.id,
        )
    )
    if exists is None:
        raise NotFoundError(f'run {run_id} has no sample "{prompt_id}" for {adapter}', fix="check the prompt id")
    row = RiskAnnotation(
        run_id=run_id, prompt_id=prompt_id, adapter_version_id=version.id, verdict=verdict, note=note, actor=actor
    )
    session.add(row)
    audit.record(
        session,
        actor=actor,
        action="risk.annotate",
        object_type="canary_sample",
        object_id=f"{run_id}/{adapter}/{prompt_id}",
        reason=note,
        details={"verdict": verdict},
    )
    return row


def score_file(path: Path, scorers: RiskScorers) -> list[dict[str, Any]]:
    """Score each line's ``text`` of a JSONL file (an optional ``prompt`` makes PII a leak check)."""

    items = []
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read it ({exc.strerror})", where=str(path), fix="pass an existing JSONL file"
        ) from None
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise DatasetError("invalid UTF-8", where=where, fix="save the file as UTF-8") from None
        except json.JSONDecodeError as exc:
            raise DatasetError(f"invalid JSON ({exc.msg})", where=where, fix="write one JSON object per line") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DatasetError('each line needs a "text" string', where=where, fix='write {"text": "..."}')
        items.append((number, obj))
    if not items:
        raise DatasetError("the file has no lines to score", where=str(path), fix='write one {"text": ...} per line')
    texts = [o["text"] for _, o in items]
    prompts = [o.get("prompt") or "" for _, o in items]
    toxicity, found = scorers.score(prompts, texts)
    return [
        {
            "line": n,
            "id": o.get("id"),
            "toxicity": t,
            "toxic": t >= scorers.threshold,
            "pii": f,
            "toxicity_backend": scorers.toxicity.name,
        }
        for (n, o), t, f in zip(items, toxicity, found)
    ]
