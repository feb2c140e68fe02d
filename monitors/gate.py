"""The promotion gate for CI/CD: a canary run on a candidate version, checked against the drift
and risk budgets and against the version in production; the verdict is recorded in the
registry (``gate_verdicts`` and the audit log) and becomes the exit status of ``lorawatch gate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import CanaryRun, GateVerdict
from lorawatch.monitors import canary
from lorawatch.registry.aliases import resolve_alias
from lorawatch.registry.versions import get_version
from lorawatch.settings import Settings

# Rates compared with production on the same prompts: the candidate may not exceed production's
# by more than the allowed increase (``[risk] max_increase_over_base``) with the paired test
# agreeing (``[risk] p_value``), as each adapter is held against the base.
COMPARED_WITH_PRODUCTION = ("toxicity_rate", "pii_leak_rate")


def run_gate(
    db: Database,
    settings: Settings,
    *,
    adapter: str,
    version: str,
    dataset_path: Path,
    options: canary.RunOptions,
    actor: str,
    embedder=None,
    risk=None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the candidate (and production, when it differs) and decide; returns the verdict."""
    with db.session() as session:
        candidate = get_version(session, adapter, version)
        production = resolve_alias(session, adapter, "production")
        compare = production.version if production is not None and production.id != candidate.id else None
    specs = [f"{adapter}@{version}"] + ([f"{adapter}@{compare}"] if compare else [])
    run_id = canary.create_run(db, settings, dataset_path=dataset_path, adapters=specs, options=options, actor=actor)
    # one candidate (and production): this process, whatever canary.backend says
    summary = canary.execute_run(db, settings, run_id, progress=progress, embedder=embedder, risk=risk, backend="local")
    by_version = {a["version"]: a["monitors"] for a in summary["adapters"]}
    checks = _checks(by_version[version], settings)
    if summary["prompts"] < settings.risk.min_prompts:
        checks.append(
            {
                "check": f"at least {settings.risk.min_prompts} canary prompts ([risk] min_prompts)",
                "value": summary["prompts"],
                "threshold": settings.risk.min_prompts,
                "passed": False,
                "why": "too few prompts to tell an increase over the base from chance; use a larger canary set",
            }
        )
    if compare:
        checks += _production_checks(db, settings, run_id, adapter, version, compare)
    passed = all(c["passed"] for c in checks)
    with db.session() as session:
        row = get_version(session, adapter, version)
        session.add(
            GateVerdict(
                adapter_version_id=row.id,
                run_id=run_id,
                passed=passed,
                checks=checks,
                compared_with=f"{adapter}@{compare}" if compare else None,
                actor=actor,
            )
        )
        audit.record(
            session,
            actor=actor,
            action="gate.pass" if passed else "gate.fail",
            object_type="adapter_version",
            object_id=f"{adapter}@{version}",
            details={"run": run_id, "failed": [c["check"] for c in checks if not c["passed"]]},
        )
    return {
        "adapter": adapter,
        "version": version,
        "passed": passed,
        "run": run_id,
        "compared_with": f"{adapter}@{compare}" if compare else None,
        "checks": checks,
        "findings": summary["base_findings"],
        "toxicity_backend": summary["config"].get("toxicity_backend"),
        "pii_detector": summary["config"].get("pii_detector"),
    }


def _checks(candidate: dict[str, dict], settings: Settings) -> list[dict[str, Any]]:
    checks = []
    for monitor_id, result in sorted(candidate.items()):
        details = result.get("details") or {}
        check = {
            "check": f"{monitor_id} within budget",
            "monitor": monitor_id,
            "value": result["value"],
            "threshold": result["threshold"],
            "passed": not result["breached"],
        }
        if "test" in details:  # content risk: judged against the base's on the same prompts
            check["check"] = (
                f"{monitor_id} not above the base's + {settings.risk.max_increase_over_base:g} "
                f"(one-sided p <= {settings.risk.p_value:g})"
            )
            check.update(base=details.get("base_rate"), p_value=details["test"]["p_value"])
        checks.append(check)
    return checks


def _production_checks(
    db: Database, settings: Settings, run_id: int, adapter: str, version: str, compare: str
) -> list[dict[str, Any]]:
    """The candidate's risk rates against production's, prompt by prompt, in the gate's run."""
    # Deferred: the finalizer's row reader imports the database models; only this check needs it.
    from lorawatch.monitors.builtin import excess_test, flagged
    from lorawatch.monitors.canary_finalize import rows_of

    with db.session() as session:
        candidate_id, production_id = (get_version(session, adapter, v).id for v in (version, compare))
        run = session.get(CanaryRun, run_id)
        threshold = (run.config or {}).get("toxicity_threshold", settings.risk.toxicity_threshold)
        mine = rows_of(session, run_id, candidate_id, toxicity_threshold=threshold)
        theirs = rows_of(session, run_id, production_id, toxicity_threshold=threshold)
    if not bool(mine["risk_scored"]) or not bool(theirs["risk_scored"]):
        return []
    allowed, alpha = settings.risk.max_increase_over_base, settings.risk.p_value
    checks = []
    for monitor_id in COMPARED_WITH_PRODUCTION:
        here, there = flagged(mine, monitor_id), flagged(theirs, monitor_id)
        test = excess_test(here, there, margin=allowed, alpha=alpha)
        checks.append(
            {
                "check": f"{monitor_id} not above production's + {allowed:g} (one-sided p <= {alpha:g})",
                "monitor": monitor_id,
                "value": float(sum(here)) / len(here) if len(here) else 0.0,
                "production": float(sum(there)) / len(there) if len(there) else 0.0,
                "p_value": test["p_value"],
                "passed": not test["significant"],
            }
        )
    return checks
