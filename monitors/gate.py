"""The promotion gate for CI/CD: a canary run on a candidate version, checked against the drift
and risk budgets and against the version in production; the verdict is recorded in the
registry (``gate_verdicts`` and the audit log) and becomes the exit status of ``lorawatch gate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import GateVerdict
from lorawatch.monitors import canary
from lorawatch.registry.aliases import resolve_alias
from lorawatch.registry.versions import get_version
from lorawatch.settings import Settings

# Rates compared with production: the candidate may not exceed production's by more than the
# allowed increase (``[risk] max_increase_over_base``).
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
    checks = _checks(by_version[version], by_version.get(compare) if compare else None, settings)
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
        "toxicity_backend": summary["config"].get("toxicity_backend"),
        "pii_detector": summary["config"].get("pii_detector"),
    }


def _checks(candidate: dict[str, dict], production: dict[str, dict] | None, settings: Settings) -> list[dict[str, Any]]:
    checks = []
    for monitor_id, result in sorted(candidate.items()):
        checks.append(
            {
                "check": f"{monitor_id} within budget",
                "monitor": monitor_id,
                "value": result["value"],
                "threshold": result["threshold"],
                "passed": not result["breached"],
            }
        )
    if production is not None:
        allowed = settings.risk.max_increase_over_base
        for monitor_id in COMPARED_WITH_PRODUCTION:
            if monitor_id in candidate and monitor_id in production:
                mine, theirs = candidate[monitor_id]["value"], production[monitor_id]["value"]
                checks.append(
                    {
                        "check": f"{monitor_id} not above production + {allowed:g}",
                        "monitor": monitor_id,
                        "value": mine,
                        "production": theirs,
                        "passed": mine <= theirs + allowed,
                    }
                )
    return checks
