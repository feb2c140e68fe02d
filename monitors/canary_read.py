"""Reading canary runs back: summaries, listings, and each result beside the base model's output
for the same prompt (exports, before/after samples, reports)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from lorawatch.db import Database
from lorawatch.db.models import (
    BaseModelRecord,
    CanaryBaseOutput,
    CanaryDatasetRecord,
    CanaryResult,
    CanaryRun,
    MonitorResult,
)
from lorawatch.errors import LoraWatchError, NotFoundError
from lorawatch.monitors.dataset import load_dataset


def results_with_base(
    session: Session,
    run_id: int,
    *,
    adapter: str | None = None,
    version: str | None = None,
    version_id: int | None = None,
    limit: int | None = None,
    offset: int = 0,
    embeddings: bool = True,
) -> list[tuple[CanaryResult, CanaryBaseOutput | None]]:
    """The run's results (by adapter, then prompt id, then row id), each beside the base
    model's output for the same prompt (None where the base row is missing). The one place
    they are joined. ``limit``/``offset``: one page; ``embeddings=False`` leaves the vectors unread."""
    query = select(CanaryResult, CanaryBaseOutput).outerjoin(
        CanaryBaseOutput,
        (CanaryBaseOutput.run_id == CanaryResult.run_id) & (CanaryBaseOutput.prompt_id == CanaryResult.prompt_id),
    )
    query = query.where(CanaryResult.run_id == run_id)
    if adapter is not None:
        query = query.where(CanaryResult.adapter == adapter)
    if version is not None:
        query = query.where(CanaryResult.version == version)
    if version_id is not None:
        query = query.where(CanaryResult.adapter_version_id == version_id)
    if not embeddings:
        query = query.options(defer(CanaryResult.embedding), defer(CanaryBaseOutput.embedding))
    query = query.order_by(CanaryResult.adapter, CanaryResult.prompt_id, CanaryResult.id).offset(offset)
    rows = session.execute(query.limit(limit) if limit is not None else query).all()
    return [(r, b) for r, b in rows]


def run_summary(db: Database, run_id: int) -> dict[str, Any]:
    """A run with its per-adapter monitor results."""
    with db.session() as session:
        run = session.get(CanaryRun, run_id)
        if run is None:
            raise NotFoundError(f"no canary run {run_id}", fix="list runs with `lorawatch canary list`")
        dataset = session.get(CanaryDatasetRecord, run.dataset_id)
        base = session.get(BaseModelRecord, run.base_model_id)
        assert dataset is not None and base is not None  # foreign keys
        results = list(
            session.scalars(
                select(MonitorResult)
                .where(MonitorResult.run_id == run_id, MonitorResult.segment.is_(None))
                .order_by(MonitorResult.adapter, MonitorResult.monitor)
            )
        )
        adapters = []
        for a in run.adapters:
            monitors = {
                r.monitor: {"value": r.value, "threshold": r.threshold, "breached": r.breached, "details": r.details}
                for r in results
                if r.adapter_version_id == a["version_id"]
            }
            adapters.append({"adapter": a["adapter"], "version": a["version"], "monitors": monitors})
        return {
            "base_findings": base_findings(results),
            "run": run.id,
            "status": run.status,
            "dataset": dataset.name,
            "dataset_sha256": dataset.sha256,
            "base": base.name,
            "device": run.device,
            "prompts": dataset.n_prompts,
            "prompts_done": run.prompts_done,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "heartbeat_at": run.heartbeat_at,
            "started_by": run.started_by,
            "config": run.config,
            "error": run.error,
            "stats": run.stats,
            "adapters": adapters,
        }


def base_findings(results) -> list[dict[str, Any]]:
    """The base model's own risk over the run's prompts where it is above a monitor's budget:
    "the base is unsafe", a finding about the base that fails no adapter's gate (every adapter of
    a run shares the base's outputs, so the first one's figures stand for all)."""
    found: dict[str, dict[str, Any]] = {}
    for r in results:
        details = r.details or {}
        if details.get("base_unsafe") and r.monitor not in found:
            found[r.monitor] = {
                "monitor": r.monitor,
                "base_value": details.get("base_rate"),
                "budget": details.get("budget"),
                "finding": f"the base model itself is above the {r.monitor} budget on these prompts "
                f"({details.get('base_rate'):.3g} > {details.get('budget'):.3g}); adapters are judged against it",
            }
    return list(found.values())


def list_runs(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs."""
    with db.session() as session:
        rows = session.execute(
            select(CanaryRun, CanaryDatasetRecord.name, BaseModelRecord.name)
            .join(CanaryDatasetRecord, CanaryRun.dataset_id == CanaryDatasetRecord.id)
            .join(BaseModelRecord, CanaryRun.base_model_id == BaseModelRecord.id)
            .order_by(CanaryRun.id.desc())
            .limit(limit)
        ).all()
        return [
            {
                "run": r.id,
                "status": r.status,
                "dataset": ds,
                "base": base,
                "adapters": len(r.adapters),
                "prompts_done": r.prompts_done,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "device": r.device,
            }
            for r, ds, base in rows
        ]


EXPORT_COLUMNS = [
    "run_id",
    "prompt_id",
    "segment",
    "adapter_id",
    "adapter_version",
    "scored_on",
    "scored_tokens",
    "kl_mean",
    "kl_max",
    "js_mean",
    "top1_agreement",
    "ref_logprob_base",
    "ref_logprob_adapted",
    "ref_logprob_delta",
    "embedding_cosine_distance",
    "output",
    "base_output",
    "new_tokens",
    "latency_ms",
    "tokens_per_s",
    "base_latency_ms",
    "toxicity",
    "base_toxicity",
    "pii_leaks",
    "base_pii_leaks",
]


def export_rows(db: Database, run_id: int) -> list[dict[str, Any]]:
    """One row per (prompt, adapter) of a run, with the base output beside the adapted one."""
    with db.session() as session:
        if session.get(CanaryRun, run_id) is None:
            raise NotFoundError(f"no canary run {run_id}", fix="list runs with `lorawatch canary list`")
        return [export_row(run_id, r, b) for r, b in results_with_base(session, run_id)]


def export_row(run_id: int, r: CanaryResult, b: CanaryBaseOutput | None) -> dict[str, Any]:
    """One exported row (``EXPORT_COLUMNS``): the adapted result beside the base's output."""
    return {
        "run_id": run_id,
        "prompt_id": r.prompt_id,
        "segment": r.segment,
        "adapter_id": r.adapter,
        "adapter_version": r.version,
        "scored_on": r.scored_on,
        "scored_tokens": r.scored_tokens,
        "kl_mean": r.kl_mean,
        "kl_max": r.kl_max,
        "js_mean": r.js_mean,
        "top1_agreement": r.top1_agreement,
        "ref_logprob_base": r.ref_logprob_base,
        "ref_logprob_adapted": r.ref_logprob_adapted,
        "ref_logprob_delta": r.ref_logprob_delta,
        "embedding_cosine_distance": r.embedding_cosine_distance,
        "output": r.output,
        "base_output": b.output if b else None,
        "new_tokens": r.new_tokens,
        "latency_ms": r.latency_ms,
        "tokens_per_s": r.tokens_per_s,
        "base_latency_ms": b.latency_ms if b else None,
        "toxicity": r.toxicity,
        "base_toxicity": b.toxicity if b else None,
        "pii_leaks": r.pii_leaks,
        "base_pii_leaks": b.pii_leaks if b else None,
    }


def prompt_texts(
    session: Session, run_id: int, cache: dict[int, dict[str, str] | str] | None = None
) -> dict[str, str] | str:
    """The prompts of a run's canary dataset by id (each prompt's last user message), or why they
    cannot be shown: the database keeps the dataset's path and sha256, not its text."""
    cache = {} if cache is None else cache
    if run_id in cache:
        return cache[run_id]
    run = session.get(CanaryRun, run_id)
    record = session.get(CanaryDatasetRecord, run.dataset_id) if run is not None else None
    found: dict[str, str] | str
    if record is None:
        found = "the run's dataset is not recorded"
    else:
        try:
            dataset = load_dataset(record.path)
        except LoraWatchError:
            found = f"the dataset file {record.path} cannot be read"
        else:
            if dataset.sha256 != record.sha256:
                found = f"the dataset file {record.path} changed since the run"
            else:
                found = {p.id: p.text() for p in dataset.prompts}
    cache[run_id] = found
    return found
