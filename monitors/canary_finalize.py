"""Finishing a canary run: per-adapter monitor results (overall and per segment), drift tests
against each version's baseline, and pinning a baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import (
    AdapterVersion,
    BaseModelRecord,
    CanaryBaseline,
    CanaryBaseOutput,
    CanaryDatasetRecord,
    CanaryResult,
    CanaryRun,
    MonitorResult,
)
from lorawatch.db.types import utcnow
from lorawatch.errors import ConflictError, InputError
from lorawatch.monitors.canary_read import run_summary
from lorawatch.monitors.embeddings import from_bytes
from lorawatch.monitors.registry import all_monitors, check_configured_ids, threshold_for
from lorawatch.registry.versions import get_version
from lorawatch.settings import Settings

METRICS = ["kl_mean", "kl_max", "js_mean", "top1_agreement", "ref_logprob_base", "ref_logprob_adapted"]


def rows_of(session: Session, run_id: int, version_id: int, toxicity_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Per-prompt arrays (ordered by prompt id) of one version in one run, with the base's risk."""
    query = select(CanaryResult).where(CanaryResult.run_id == run_id, CanaryResult.adapter_version_id == version_id)
    rows = list(session.scalars(query.order_by(CanaryResult.prompt_id)))
    base = {b.prompt_id: b for b in session.scalars(select(CanaryBaseOutput).where(CanaryBaseOutput.run_id == run_id))}
    data = {m: np.array([getattr(r, m) for r in rows], dtype=np.float64) for m in METRICS}
    data["ref_logprob_delta"] = np.array([r.ref_logprob_delta for r in rows], dtype=np.float64)
    data["embedding_cosine_distance"] = np.array([r.embedding_cosine_distance for r in rows], dtype=np.float64)
    data["embedding"] = np.stack([from_bytes(r.embedding) for r in rows]) if rows else np.zeros((0, 1), np.float32)
    data["segments"] = np.array([r.segment for r in rows])
    scored = bool(rows) and all(r.toxicity is not None for r in rows)
    data["risk_scored"] = np.array(scored)
    if scored:
        data["toxicity"] = np.array([r.toxicity for r in rows], dtype=np.float64)
        data["base_toxicity"] = np.array([base[r.prompt_id].toxicity for r in rows], dtype=np.float64)
        data["toxicity_threshold"] = np.array(toxicity_threshold)
        data["pii_leaks"] = [r.pii_leaks or [] for r in rows]
        data["base_pii_leaks"] = [base[r.prompt_id].pii_leaks or [] for r in rows]
    return data


def _subset(data: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """The rows of ``data`` where ``mask`` holds (arrays and lists alike; scalars kept)."""
    result: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, list):
            result[key] = [v for v, keep in zip(value, mask) if keep]
        elif isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == len(mask):
            result[key] = value[mask]
        else:
            result[key] = value
    return result


def finalize_run(
    db: Database, settings: Settings, run_id: int, seconds: float | None = None, timings: dict[str, float] | None = None
) -> dict[str, Any]:
    """Store monitor results per adapter (overall and per segment) and drift tests; mark complete.

    ``timings``: seconds per stage of the last attempt (model loading, the model, embedding,
    risk scoring), kept in the run's stats."""
    check_configured_ids(settings)
    enabled = lambda spec: settings.monitors.get(spec.id) is None or settings.monitors[spec.id].enabled  # noqa: E731
    with db.session() as session:
        run = session.get(CanaryRun, run_id)
        base = session.get(BaseModelRecord, run.base_model_id)
        session.execute(delete(MonitorResult).where(MonitorResult.run_id == run_id))
        now = utcnow()
        tox_threshold = run.config.get("toxicity_threshold", settings.risk.toxicity_threshold)
        risk_options = {"risk_margin": settings.risk.max_increase_over_base, "risk_alpha": settings.risk.p_value}
        for a in run.adapters:
            current = rows_of(session, run_id, a["version_id"], toxicity_threshold=tox_threshold)
            common = dict(
                run_id=run_id,
                adapter_version_id=a["version_id"],
                adapter=a["adapter"],
                version=a["version"],
                base_model=base.name,
                ts=now,
            )
            # every segment's rows are a slice of the adapter's rows: read once, split in memory
            by_segment = {None: current}
            for segment in sorted(set(current["segments"].tolist())):
                by_segment[segment] = _subset(current, current["segments"] == segment)
            names = {k: run.config.get(k) for k in ("toxicity_backend", "pii_detector")}
            kinds = ["canary", "risk"] if bool(current["risk_scored"]) else ["canary"]
            version = session.get(AdapterVersion, a["version_id"])
            domain = sorted(set((version.risk or {}).get("domain_segments") or []) if version is not None else [])
            in_domain_rows = np.isin(current["segments"], domain)
            for spec in (spec for kind in kinds for spec in all_monitors(kind)):
                if not enabled(spec):
                    continue
                threshold = threshold_for(spec.id, settings)
                override = settings.monitors.get(spec.id)
                in_domain_threshold = override.in_domain_threshold if override is not None else None
                for segment, data in by_segment.items():
                    if spec.kind == "risk":  # judged against the base, with a test (builtin.excess_test)
                        data = {**data, "threshold": threshold, **risk_options}
                    scope = None
                    if spec.kind == "canary" and domain:
                        # drift on the adapter's own domain is intended: reported, judged only against
                        # in_domain_threshold; the adapter's overall drift is its drift elsewhere
                        in_domain = segment in domain if segment is not None else bool(in_domain_rows.all())
                        scope = "in-domain" if in_domain else "off-domain"
                        if segment is None and not in_domain:
                            data = _subset(current, ~in_domain_rows)
                    m = spec.compute(data)
                    breached = m.breached if m.breached is not None else spec.is_breached(m.value, threshold)
                    details = m.details
                    stored_threshold = m.threshold if m.threshold is not None else threshold
                    if scope is not None:
                        details = {**details, "scope": scope, "domain_segments": domain}
                        if segment is None and scope == "off-domain":
                            details["all_prompts"] = spec.compute(current).value
                        if scope == "in-domain":
                            stored_threshold = in_domain_threshold
                            breached = in_domain_threshold is not None and spec.is_breached(
                                m.value, in_domain_threshold
                            )
                    if spec.kind == "risk":
                        details = {**details, **names, "budget": threshold}
                        if details.get("base_rate") is not None and details["base_rate"] > threshold:
                            details["base_unsafe"] = True  # the base's own finding, never the adapter's breach
                    session.add(
                        MonitorResult(
                            monitor=spec.id,
                            segment=segment,
                            value=m.value,
                            threshold=stored_threshold,
                            breached=breached,
                            details=details,
                            **common,
                        )
                    )
            found = _drift_reference(session, run, a)
            if found is None:
                continue
            reference_run, reference_version, described = found
            reference = rows_of(session, reference_run, reference_version, toxicity_threshold=tox_threshold)
            for spec in all_monitors("drift"):
                if not enabled(spec):
                    continue
                override = settings.monitors.get(spec.id)
                threshold = (
                    override.threshold if override and override.threshold is not None else settings.canary.drift_p_value
                )
                m = spec.compute(reference, current, permutations=settings.canary.mmd_permutations)
                session.add(
                    MonitorResult(
                        monitor=spec.id,
                        value=m.value,
                        threshold=threshold,
                        breached=spec.is_breached(m.value, threshold),
                        details={**m.details, "baseline_run": reference_run, "baseline": described},
                        **common,
                    )
                )
        run.status = "complete"
        run.finished_at = now
        n_pairs = len(run.adapters) * session.get(CanaryDatasetRecord, run.dataset_id).n_prompts
        kept = {k: v for k, v in (run.stats or {}).items() if k == "truncated"}
        run.stats = {
            "pairs": n_pairs,
            "seconds_last_attempt": round(seconds, 3) if seconds is not None else None,
            **kept,
        }
        if timings:
            run.stats["timings"] = {k: round(v, 3) for k, v in timings.items()}
        audit.record(
            session, actor=run.started_by, action="canary.complete", object_type="canary_run", object_id=str(run_id)
        )
    return run_summary(db, run_id)


# What a run's outputs depend on besides the adapter: where the baseline run differs in one of
# these, the drift result names it (the drift may be the change's, not the adapter's).
_OUTPUT_CONFIG = ("max_new_tokens", "embedding_model")


def _drift_reference(session: Session, run: CanaryRun, adapter: dict[str, Any]) -> tuple[int, int, dict] | None:
    """The rows a version's drift tests compare with, as (run, version, description), or None
    when there is nothing to compare with.

    A version that is not in production is compared with the version it would replace (the
    adapter's production alias) on the same prompts and base: in this run when the run covers it,
    else in its latest complete run on the same dataset and base. The version in production (or
    of an adapter without one) is compared with its own baseline run on this dataset (pinned, or
    its first), which answers "did anything change since"; what its outputs depend on and that
    differs from the baseline run (the base, generation settings, device) is named in the
    description, and with nothing changed a rerun is bit-identical (p = 1). A version's first
    run on a dataset becomes its baseline.
    """
    # Deferred: the registry's alias module imports the catalog; only this choice needs it.
    from lorawatch.registry.aliases import resolve_alias

    version_id = adapter["version_id"]
    baseline = session.scalar(
        select(CanaryBaseline).where(
            CanaryBaseline.adapter_version_id == version_id, CanaryBaseline.dataset_id == run.dataset_id
        )
    )
    if baseline is None:
        session.add(
            CanaryBaseline(
                adapter_version_id=version_id, dataset_id=run.dataset_id, run_id=run.id, set_by=run.started_by
            )
        )
    production = resolve_alias(session, adapter["adapter"], "production")
    if production is not None and production.id != version_id:
        described = {"kind": "production", "adapter": adapter["adapter"], "version": production.version}
        if production.id in {a["version_id"] for a in run.adapters}:
            return run.id, production.id, {**described, "run": run.id}
        latest = session.scalar(
            select(CanaryRun.id)
            .join(CanaryResult, CanaryResult.run_id == CanaryRun.id)
            .where(
                CanaryRun.status == "complete",
                CanaryRun.dataset_id == run.dataset_id,
                CanaryRun.base_model_id == run.base_model_id,
                CanaryResult.adapter_version_id == production.id,
                CanaryRun.id != run.id,
            )
            .order_by(CanaryRun.id.desc())
            .limit(1)
        )
        if latest is not None:
            return latest, production.id, {**described, "run": latest}
    if baseline is None or baseline.run_id == run.id:
        return None
    reference = session.get(CanaryRun, baseline.run_id)
    if reference is None:
        return None
    changed = [key for key in _OUTPUT_CONFIG if (reference.config or {}).get(key) != (run.config or {}).get(key)]
    if reference.base_model_id != run.base_model_id:
        changed.insert(0, "base")
    if reference.device != run.device:
        changed.append("device")
    kind = "pinned" if baseline.pinned else "history"
    return (
        baseline.run_id,
        version_id,
        {"kind": kind, "version": adapter["version"], "run": baseline.run_id, "changed": changed},
    )


def pin_baseline(session: Session, *, adapter: str, version: str, run_id: int, actor: str) -> CanaryBaseline:
    """Make ``run_id`` the baseline of a version on that run's dataset."""
    row = get_version(session, adapter, version)
    run = session.get(CanaryRun, run_id)
    if run is None or run.status != "complete":
        raise ConflictError(f"run {run_id} is not a complete run", fix="pick a complete run (lorawatch canary list)")
    if row.id not in {a["version_id"] for a in run.adapters}:
        raise InputError(f"run {run_id} did not cover {adapter}@{version}", fix="pick a run that covered it")
    baseline = session.scalar(
        select(CanaryBaseline).where(
            CanaryBaseline.adapter_version_id == row.id, CanaryBaseline.dataset_id == run.dataset_id
        )
    )
    if baseline is None:
        baseline = CanaryBaseline(adapter_version_id=row.id, dataset_id=run.dataset_id, run_id=run_id, set_by=actor)
        session.add(baseline)
    baseline.run_id, baseline.pinned, baseline.set_by, baseline.set_at = run_id, True, actor, utcnow()
    audit.record(
        session,
        actor=actor,
        action="canary.baseline",
        object_type="adapter_version",
        object_id=f"{adapter}@{version}",
        details={"run": run_id},
    )
    return baseline
