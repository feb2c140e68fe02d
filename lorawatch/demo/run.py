"""``lorawatch demo``: the embedded default, end to end, on the real SmolLM2 model.

Each step is idempotent, so a second ``lorawatch demo`` reuses the prepared models and
registrations and simply runs another canary round (which is then compared with the first).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lorawatch.alerts.engine import evaluate, list_alerts
from lorawatch.alerts.outbox import flush
from lorawatch.app.auth import add_user, new_password
from lorawatch.db import Database
from lorawatch.db.models import AdapterRecord, BaseModelRecord
from lorawatch.demo import models as demo_models
from lorawatch.demo import traffic as demo_traffic
from lorawatch.errors import InputError
from lorawatch.incidents.service import list_incidents
from lorawatch.monitors import canary
from lorawatch.monitors.dataset import resolve_dataset
from lorawatch.monitors.traffic_eval import evaluate_traffic
from lorawatch.plugins import load_default_plugins
from lorawatch.registry import aliases as registry_aliases
from lorawatch.registry import bases as registry_bases
from lorawatch.registry import store as registry_store
from lorawatch.registry import versions as registry_versions
from lorawatch.registry.metadata import VersionMetadata
from lorawatch.settings import Settings

# the 20-prompt smoke set by default (minutes on 2 CPU cores); --full runs the 225-prompt core set
DEFAULT_DATASET = "smoke-v1"
FULL_DATASET = "core-v1"
DEMO_USER = "oncall"


def run_demo(
    db: Database,
    settings: Settings,
    *,
    actor: str,
    dataset: Path | str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    progress: bool = True,
    say=print,
) -> dict[str, Any]:
    """Prepare and register the demo models, then run a canary round; returns the run summary."""

    dataset = resolve_dataset(dataset or DEFAULT_DATASET)
    if not dataset.is_file():
        raise InputError("canary dataset not found", where=str(dataset), fix="pass --dataset FILE.jsonl")
    db.upgrade()
    cache = settings.home_dir / "demo"
    say("1/4 preparing the demo model (cached after the first run) and registering the shipped adapters")
    base_dir = demo_models.prepare_base(cache / "models", progress=progress)
    store = registry_store.Store.from_settings(settings)
    with db.session() as session:
        if session.scalar(select(BaseModelRecord).where(BaseModelRecord.name == demo_models.BASE_NAME)) is None:
            registry_bases.add_base(
                session,
                name=demo_models.BASE_NAME,
                path=base_dir,
                hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                revision="gguf-q4_1-dequantized",
                actor=actor,
                progress=progress,
            )
    healthy = demo_models.DEMO_ADAPTERS[0]  # support-healthy

    def release(session, adapter: str, version: str, why: str) -> None:
        registry_aliases.promote(
            session, adapter=adapter, version=version, alias="production", actor=actor, reason=f"lorawatch demo: {why}"
        )

    for spec in demo_models.DEMO_ADAPTERS:
        out = demo_models.shipped_adapter(spec)
        with db.session() as session:
            record = session.scalar(select(AdapterRecord).where(AdapterRecord.name == spec.name))
            if record is None or not record.versions:
                data_hash = hashlib.sha256((demo_models.DATA_DIR / spec.data).read_bytes()).hexdigest()
                meta = VersionMetadata.model_validate(
                    {
                        "lineage": {
                            "base_model_version": "gguf-q4_1-dequantized",
                            "dataset_hash": f"sha256:{data_hash}",
                            "training_run": f"python -m lorawatch.demo.train: {spec.steps} steps, lr {spec.lr}, "
                            f"rank {spec.rank}",
                        },
                        "performance": {"human_eval": spec.description},
                        # trained for support: drift there is intended, drift elsewhere is judged
                        "risk": {"domain_segments": ["customer_support"]},
                        "ownership": {
                            "team": spec.team,
                            "contacts": [f"{spec.team}@example.com", "oncall-ml@example.com"],
                            "review_cadence_days": 30,
                        },
                    }
                )
                if spec is not healthy:
                    # an earlier, safe release (the healthy adapter's weights) that v1 replaced:
                    # what on-call rolls back to (`lorawatch registry rollback support-risky`)
                    registry_versions.register_version(
                        session,
                        store,
                        adapter=spec.name,
                        path=demo_models.shipped_adapter(healthy),
                        base=demo_models.BASE_NAME,
                        version="v0",
                        metadata=meta.model_copy(
                            update={
                                "performance": meta.performance.model_copy(
                                    update={"human_eval": f"the previous release: {healthy.description}"}
                                )
                            }
                        ),
                        actor=actor,
                        reason="lorawatch demo: the previous release",
                    )
                    release(session, spec.name, "v0", "the previous release")
                registry_versions.register_version(
                    session,
                    store,
                    adapter=spec.name,
                    path=out,
                    base=demo_models.BASE_NAME,
                    version="v1",
                    metadata=meta,
                    actor=actor,
                    reason="lorawatch demo",
                )
                if spec is not healthy:
                    release(session, spec.name, "v1", "this release")
            if registry_aliases.resolve_alias(session, spec.name, "production") is None:
                release(session, spec.name, "v1", "initial release")
    say("2/4 seeding two weeks of serving traffic and five weeks of KPIs")

    seeded = demo_traffic.seed(db, cache / "traffic", actor=actor)
    say(f"3/4 canary run over {dataset.name}")
    options = canary.RunOptions.from_settings(
        settings, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    run_id = canary.create_run(
        db,
        settings,
        dataset_path=dataset,
        adapters=[s.name for s in demo_models.DEMO_ADAPTERS],
        options=options,
        actor=actor,
    )
    summary = canary.execute_run(db, settings, run_id, progress=progress)
    say("4/4 evaluating alert rules and delivering notifications")
    summary["traffic"] = {"requests": seeded["requests"].get("rows", 0), "kpis": seeded["kpis"].get("rows", 0)}
    summary["alerts"] = demo_alerts(db, settings)
    # a responder to sign in as, so the dashboard's actions (ack, silence, approve, roll back)
    # work on the stock demo; a new password each run, shown once by `lorawatch demo`
    password = new_password()
    add_user(settings, DEMO_USER, password)
    summary["dashboard_user"] = {"name": DEMO_USER, "password": password}
    return summary


def demo_alerts(db: Database, settings: Settings) -> dict[str, Any]:
    """Evaluate the alert rules on the fresh results and deliver what fires (new groups at once)."""

    load_default_plugins()
    evaluate_traffic(db, settings)
    evaluation = evaluate(db, settings)
    delivery = flush(db, settings, skip_group_wait=True)
    firing = [
        {
            "id": a["id"],
            "rule": a["rule"],
            "severity": a["severity"],
            "adapter": a["labels"].get("adapter"),
            "summary": a["annotations"].get("summary"),
            "runbook_url": a["runbook_url"],
        }
        for a in list_alerts(db, settings, state="firing")
    ]

    incidents = [
        {"id": i["id"], "adapter": i["adapter"], "severity": i["severity"], "state": i["state"], "title": i["title"]}
        for i in list_incidents(db)
    ]
    return {
        "firing": firing,
        "incidents": incidents,
        "evaluation": {k: evaluation[k] for k in ("rules", "series", "firing", "pending")},
        "notifications": {k: delivery[k] for k in ("queued", "delivered", "deferred", "pending")},
    }
