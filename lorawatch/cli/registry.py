"""``lorawatch registry``: base models, adapters, versions, aliases, lifecycle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from lorawatch import inputs
from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.output import emit, json_option, parse_time, table
from lorawatch.db.models import AdapterVersion
from lorawatch.db.types import utcnow
from lorawatch.errors import InputError
from lorawatch.incidents.service import list_incidents
from lorawatch.registry import aliases as registry_aliases
from lorawatch.registry import bases as registry_bases
from lorawatch.registry import catalog, lifecycle
from lorawatch.registry import metadata as md
from lorawatch.registry import store as registry_store
from lorawatch.registry import versions as registry_versions


@click.group()
def registry() -> None:
    """The adapter registry: versions, lineage, aliases, promotion, rollback, lifecycle."""


def _pairs(values: tuple[str, ...], what: str, number: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"{what} {item!r} is not NAME=VALUE", fix=f"write {what} NAME=VALUE")
        if number:
            try:
                result[key] = float(raw)
            except ValueError:
                raise InputError(f"{what} {item!r}: {raw!r} is not a number", fix="give a numeric value") from None
        else:
            result[key] = raw
    return result


@registry.command("add-base")
@click.argument("name")
@click.option("--path", type=click.Path(path_type=Path), help="Model directory (safetensors) or weight file (GGUF).")
@click.option("--hub-id", help="Hugging Face id, looked up in the local cache when --path is not given.")
@click.option("--revision", help="Revision (commit or tag) of the base model.")
@json_option
@pass_app
def add_base(
    app: AppContext, name: str, path: Path | None, hub_id: str | None, revision: str | None, as_json: bool
) -> None:
    """Register a base model: hashes its weight files and records its architecture."""

    with app.database.session() as session:
        record = registry_bases.add_base(
            session, name=name, path=path, hub_id=hub_id, revision=revision, actor=app.actor, progress=not as_json
        )
        data = _base_view(record)
    emit(
        data,
        as_json,
        f"registered base {name} ({data['architecture'] or 'unknown architecture'}) sha256 {data['sha256'][:16]}",
    )


def _base_view(record) -> dict[str, Any]:
    return {
        "name": record.name,
        "path": record.path,
        "hub_id": record.hub_id,
        "revision": record.revision,
        "architecture": record.architecture,
        "sha256": record.sha256,
        "files": record.files,
        "created_at": record.created_at,
        "created_by": record.created_by,
    }


@registry.command("bases")
@json_option
@pass_app
def bases(app: AppContext, as_json: bool) -> None:
    """List the registered base models."""

    with app.database.session() as session:
        rows = [_base_view(b) for b in registry_bases.list_bases(session)]
    emit(rows, as_json, lambda: table(rows, ["name", "architecture", "hub_id", "path", "sha256"]))


FROM_JSON_KEYS = {
    "adapter",
    "path",
    "base",
    "version",
    "allow_pickle",
    "lineage",
    "performance",
    "risk",
    "ownership",
    "promote",
    "reason",
}


def _read_spec(path: Path) -> dict[str, Any]:
    where = str(path)
    spec = inputs.parse_json(inputs.read_text(path, what="--from-json file"), where=where)
    if not isinstance(spec, dict):
        raise InputError("not a JSON object", where=where, fix="write one object with adapter, path, base, ...")
    unknown = set(spec) - FROM_JSON_KEYS
    if unknown:
        raise InputError(
            f"unknown key(s) {', '.join(sorted(unknown))}",
            where=where,
            fix=f"use only: {', '.join(sorted(FROM_JSON_KEYS))}",
        )
    for key in ("adapter", "path", "base", "version", "reason"):
        if key in spec and spec[key] is not None and not isinstance(spec[key], str):
            raise InputError(f'"{key}" must be text, got {spec[key]!r}'[:200], where=where, fix=f'write "{key}": "..."')
    if "allow_pickle" in spec and not isinstance(spec["allow_pickle"], bool):
        raise InputError('"allow_pickle" must be true or false', where=where, fix='write "allow_pickle": false')
    promote = spec.get("promote")
    if promote is not None and not isinstance(promote, (str, dict)):
        raise InputError(
            '"promote" must be an alias name or {"alias": ..., "tenant": ..., "reason": ...}',
            where=where,
            fix='write "promote": "production"',
        )
    if isinstance(promote, dict) and not all(isinstance(v, str) for v in promote.values()):
        raise InputError('"promote" values must be text', where=where, fix='write "promote": {"alias": "production"}')
    return spec


@registry.command("add")
@click.argument("adapter", required=False)
@click.option("--path", type=click.Path(path_type=Path), help="Directory written by PEFT's save_pretrained.")
@click.option("--base", help="Registered base model the adapter was trained on.")
@click.option("--version", "version", help="Version id (default: v1, v2, ...). Versions are immutable.")
@click.option("--allow-pickle", is_flag=True, help="Accept pickled weights (adapter_model.bin); unpickling runs code.")
@click.option(
    "--from-json",
    "from_json",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Take everything from a JSON file (CI/CD): adapter, path, base, version, lineage, performance, risk, ownership, promote.",
)
@click.option("--base-model-version", help="Lineage: revision of the base it was trained on.")
@click.option("--dataset-hash", help="Lineage: hash of the training data set.")
@click.option("--commit-sha", help="Lineage: commit of the training code.")
@click.option("--training-run", help="Lineage: link to the training run.")
@click.option("--metric", multiple=True, help="Performance: offline metric NAME=VALUE (repeatable).")
@click.option("--human-eval", help="Performance: human evaluation summary.")
@click.option("--policy-check", multiple=True, help="Performance: policy check NAME=OUTCOME (repeatable).")
@click.option("--bias-assessment", help="Risk: bias assessment summary.")
@click.option("--safety-incident", multiple=True, help="Risk: a known safety incident (repeatable).")
@click.option(
    "--domain",
    "domain_segment",
    multiple=True,
    help="Risk: a canary segment the adapter is trained for, where drift is intended (repeatable).",
)
@click.option(
    "--data-expires", type=click.DateTime(["%Y-%m-%d"]), help="Risk: date the training data goes stale (YYYY-MM-DD)."
)
@click.option("--team", help="Ownership: responsible team.")
@click.option("--contact", multiple=True, help="Ownership: escalation contact, in order (repeatable).")
@click.option("--review-days", type=click.IntRange(min=1), help="Ownership: review cadence in days.")
@click.option(
    "--promote", "promote_alias", help="Also point this alias (production, canary, shadow) at the new version."
)
@click.option("--tenant", default="", help="Tenant of the --promote alias (default: every tenant).")
@click.option("--reason", help="Why; recorded in the audit log.")
@json_option
@pass_app
def add(
    app: AppContext,
    adapter,
    path,
    base,
    version,
    allow_pickle,
    from_json,
    base_model_version,
    dataset_hash,
    commit_sha,
    training_run,
    metric,
    human_eval,
    policy_check,
    bias_assessment,
    safety_incident,
    domain_segment,
    data_expires,
    team,
    contact,
    review_days,
    promote_alias,
    tenant,
    reason,
    as_json,
) -> None:
    """Register an adapter version (and optionally promote it) in one transaction.

    Reads adapter_config.json, checks the base, refuses pickles and broken safetensors,
    hashes every file and copies them into the store. Relative paths in --from-json are
    taken from the working directory; command-line options override the file.
    """

    spec: dict[str, Any] = _read_spec(from_json) if from_json else {}
    adapter = adapter or spec.get("adapter")
    path = path or (Path(spec["path"]) if spec.get("path") else None)
    base = base or spec.get("base")
    version = version or spec.get("version")
    allow_pickle = allow_pickle or bool(spec.get("allow_pickle"))
    reason = reason or spec.get("reason")
    for value, option in ((adapter, "ADAPTER"), (path, "--path"), (base, "--base")):
        if not value:
            raise InputError(f"{option} is required", fix=f"pass {option} (or set it in --from-json)")
    try:
        from_file = md.VersionMetadata.model_validate(
            {k: spec[k] for k in ("lineage", "performance", "risk", "ownership") if k in spec}
        )
        meta = md.merge(
            from_file,
            {
                "lineage": {
                    "base_model_version": base_model_version,
                    "dataset_hash": dataset_hash,
                    "commit_sha": commit_sha,
                    "training_run": training_run,
                },
                "performance": {
                    "offline_metrics": _pairs(metric, "--metric", True),
                    "human_eval": human_eval,
                    "policy_checks": _pairs(policy_check, "--policy-check", False),
                },
                "risk": {
                    "bias_assessment": bias_assessment,
                    "safety_incidents": list(safety_incident),
                    "domain_segments": list(domain_segment),
                    "data_expires_on": data_expires.date() if data_expires else None,
                },
                "ownership": {"team": team, "contacts": list(contact), "review_cadence_days": review_days},
            },
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = str(from_json) if from_json else "metadata"
        raise InputError(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}", where=where, fix="correct the metadata value"
        ) from None
    promote_spec = spec.get("promote") or {}
    if isinstance(promote_spec, str):
        promote_spec = {"alias": promote_spec}
    promote_alias = promote_alias or promote_spec.get("alias")
    tenant = tenant or promote_spec.get("tenant", "")
    store = registry_store.Store.from_settings(app.settings)
    with app.database.session() as session:  # bad input is refused before anything is copied
        registry_versions.check_registration(session, adapter=adapter, path=path, base=base, version=version)
    with app.database.session() as session:
        row = registry_versions.register_version(
            session,
            store,
            adapter=adapter,
            path=path,
            base=base,
            version=version,
            metadata=meta,
            allow_pickle=allow_pickle,
            actor=app.actor,
            reason=reason,
            progress=not as_json,
        )
        promoted = None
        if promote_alias:
            registry_aliases.promote(
                session,
                adapter=adapter,
                version=row.version,
                alias=promote_alias,
                tenant=tenant,
                actor=app.actor,
                reason=reason or promote_spec.get("reason"),
            )
            promoted = {"alias": promote_alias, "tenant": tenant or None}
        data = {
            "adapter": adapter,
            "version": row.version,
            "content_sha256": row.content_sha256,
            "files": len(row.files),
            "storage": row.storage,
            "path": row.path,
            "promoted": promoted,
        }
    text = f"registered {adapter}@{row.version} ({len(row.files)} files, sha256 {row.content_sha256[:16]})"
    if promoted:
        text += f"; {promote_alias}{' for ' + tenant if tenant else ''} -> {row.version}"
    emit(data, as_json, text)


@registry.command("list")
@click.option("--adapter", help="Only this adapter.")
@click.option("--base", help="Only adapters of this base model.")
@click.option("--team", help="Only versions owned by this team.")
@click.option("--alias", help="Only versions an alias of this name points at.")
@click.option("--state", type=click.Choice(["active", "archived"]), help="Only versions in this state.")
@click.option("--expired", is_flag=True, help="Only versions whose training data expired.")
@click.option("--review-overdue", is_flag=True, help="Only versions whose review is overdue.")
@json_option
@pass_app
def list_(app: AppContext, adapter, base, team, alias, state, expired, review_overdue, as_json) -> None:
    """List adapter versions with their aliases, owners and lifecycle status."""

    with app.database.session() as session:
        rows = catalog.list_versions(
            session,
            review_days=app.settings.registry.review_due_days,
            adapter=adapter,
            base=base,
            team=team,
            alias=alias,
            state=state,
            expired=expired,
            review_overdue=review_overdue,
        )
    for row in rows:
        row.pop("files")

    def text() -> str:
        flat = [
            {
                **r,
                "aliases": [a["alias"] + (f"/{a['tenant']}" if a["tenant"] else "") for a in r["aliases"]],
                "team": r["ownership"].get("team"),
                "sha256": r["content_sha256"][:12],
                "status": ",".join(
                    s for s in ("expired" if r["expired"] else "", "review-overdue" if r["review_overdue"] else "") if s
                )
                or "ok",
            }
            for r in rows
        ]
        return table(flat, ["adapter", "version", "base", "state", "aliases", "team", "rank", "sha256", "status"])

    emit(rows, as_json, text)


@registry.command("show")
@click.argument("adapter")
@click.option("--version", "version", help="Show one version in full.")
@click.option("--alias", help="Which version this alias serves (with --tenant and --at).")
@click.option("--tenant", default="", help="Tenant for --alias (falls back to the route default).")
@click.option("--at", "at", help="With --alias: the version served at this time (ISO 8601, UTC when no zone).")
@json_option
@pass_app
def show(app: AppContext, adapter, version, alias, tenant, at, as_json) -> None:
    """Show an adapter (versions, aliases, history), one version, or what an alias served when."""

    review_days = app.settings.registry.review_due_days
    with app.database.session() as session:
        if alias:
            when = parse_time(at, "--at")
            row = registry_aliases.resolve_alias(session, adapter, alias, tenant, when)
            data = {
                "adapter": adapter,
                "alias": alias,
                "tenant": tenant or None,
                "at": when or utcnow(),
                "version": row.version if row else None,
            }
            emit(
                data,
                as_json,
                f"{adapter} {alias}{'/' + tenant if tenant else ''} at {data['at'].isoformat()}: {data['version'] or '(none)'}",
            )
            return
        if version:
            data = catalog.version_view(
                session, registry_versions.get_version(session, adapter, version), utcnow(), review_days
            )
            emit(data, as_json, lambda: _version_text(data))
            return
        data = catalog.adapter_view(session, adapter, review_days)
    emit(data, as_json, lambda: _adapter_text(data))


def _version_text(v: dict[str, Any]) -> str:
    lines = [
        f"{v['adapter']}@{v['version']}  base {v['base']}  state {v['state']}",
        f"  rank {v['rank']}  alpha {v['alpha']}  targets {', '.join(v['target_modules'])}",
        f"  sha256 {v['content_sha256']}  storage {v['storage']}  {v['path']}",
        f"  registered {v['created_at']:%Y-%m-%d %H:%M}Z by {v['created_by']}",
        "  aliases "
        + (", ".join(a["alias"] + (f"/{a['tenant']}" if a["tenant"] else "") for a in v["aliases"]) or "-"),
    ]
    for section in ("lineage", "performance", "risk", "ownership"):
        values = {k: val for k, val in v[section].items() if val not in (None, [], {})}
        lines.append(f"  {section}: " + (", ".join(f"{k}={val}" for k, val in values.items()) or "-"))
    lines.append(
        f"  expired {v['expired']}  review due {v['review_due']:%Y-%m-%d}{' (overdue)' if v['review_overdue'] else ''}"
    )
    return "\n".join(lines)


def _adapter_text(data: dict[str, Any]) -> str:
    lines = [f"{data['adapter']}  base {data['base']}", ""]
    lines.append(
        table(
            [
                {
                    **v,
                    "aliases": [a["alias"] + (f"/{a['tenant']}" if a["tenant"] else "") for a in v["aliases"]],
                    "sha256": v["content_sha256"][:12],
                    "team": v["ownership"].get("team"),
                }
                for v in data["versions"]
            ],
            ["version", "state", "aliases", "team", "rank", "sha256", "created_at"],
        )
    )
    lines += [
        "",
        "history:",
        table(data["history"], ["ts", "alias", "tenant", "action", "from_version", "to_version", "actor", "reason"]),
    ]
    return "\n".join(lines)


@registry.command("history")
@click.argument("adapter")
@click.option("--alias", help="Only this alias.")
@click.option("--tenant", default=None, help="Only this tenant ('' for the route default).")
@json_option
@pass_app
def history(app: AppContext, adapter, alias, tenant, as_json) -> None:
    """Every promotion and rollback of an adapter's aliases, with actor, time and reason."""

    with app.database.session() as session:
        rows = registry_aliases.alias_history(session, adapter, alias, tenant)
    emit(
        rows,
        as_json,
        lambda: table(rows, ["ts", "alias", "tenant", "action", "from_version", "to_version", "actor", "reason"]),
    )


def _alias_options(func):
    func = click.option("--reason", required=True, help="Why; recorded with actor and time.")(func)
    func = click.option("--tenant", default="", help="Tenant (default: the route default for every tenant).")(func)
    func = click.option(
        "--alias", default="production", show_default=True, help="Alias: production, canary, shadow, ..."
    )(func)
    return func


@registry.command("promote")
@click.argument("adapter")
@click.option("--version", "version", required=True, help="Version to point the alias at.")
@_alias_options
@json_option
@pass_app
def promote(app: AppContext, adapter, version, alias, tenant, reason, as_json) -> None:
    """Point an alias (per tenant) at a version.

    Warns (on stderr, and under "warnings" with --json) when the version failed its latest
    promotion gate or the adapter has an open incident; the promotion itself goes ahead."""

    with app.database.session() as session:
        ev = registry_aliases.promote(
            session, adapter=adapter, version=version, alias=alias, tenant=tenant, actor=app.actor, reason=reason
        )
        data = _event(session, ev)
        verdict = catalog.latest_verdict(session, registry_versions.get_version(session, adapter, version).id)
    data["warnings"] = []
    if verdict is not None and not verdict["passed"]:
        data["warnings"].append(
            f"{adapter}@{version} failed its latest promotion gate (run {verdict['run']}: {', '.join(verdict['failed'])})"
        )
    for incident in list_incidents(app.database, adapter=adapter):
        data["warnings"].append(
            f"{adapter} has an open incident: #{incident['id']} {incident['title']} ({incident['severity']})"
        )
    for warning in data["warnings"]:
        click.echo(f"lorawatch: warning: {warning}", err=True)
    emit(
        data,
        as_json,
        f"{adapter} {alias}{'/' + tenant if tenant else ''}: {data['from_version'] or '-'} -> {data['to_version']}",
    )


@registry.command("rollback")
@click.argument("adapter")
@_alias_options
@json_option
@pass_app
def rollback(app: AppContext, adapter, alias, tenant, reason, as_json) -> None:
    """Point an alias back at the version it held before the current one."""

    with app.database.session() as session:
        ev = registry_aliases.rollback(
            session, adapter=adapter, alias=alias, tenant=tenant, actor=app.actor, reason=reason
        )
        data = _event(session, ev)
    emit(
        data,
        as_json,
        f"{adapter} {alias}{'/' + tenant if tenant else ''} rolled back: {data['from_version']} -> {data['to_version']}",
    )


def _event(session, ev) -> dict[str, Any]:
    def name(version_id):
        return session.get(AdapterVersion, version_id).version if version_id else None

    return {
        "adapter_id": ev.adapter_id,
        "alias": ev.alias,
        "tenant": ev.tenant or None,
        "action": ev.action,
        "from_version": name(ev.from_version_id),
        "to_version": name(ev.to_version_id),
        "ts": ev.ts,
        "actor": ev.actor,
        "reason": ev.reason,
    }


@registry.command("verify")
@click.argument("adapter")
@click.option("--version", "version", required=True)
@json_option
@pass_app
def verify(app: AppContext, adapter, version, as_json) -> None:
    """Re-check every file of a version against its recorded sha256."""

    with app.database.session() as session:
        directory = registry_versions.open_version(
            session, registry_store.Store.from_settings(app.settings), adapter, version
        )
    emit(
        {"adapter": adapter, "version": version, "ok": True, "path": str(directory)},
        as_json,
        f"{adapter}@{version}: every file matches its recorded sha256",
    )


@registry.command("archive")
@click.option(
    "--older-than",
    "older_than",
    type=click.IntRange(min=1),
    default=None,
    help="Days unused (default: registry.archive_after_days).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be archived.")
@json_option
@pass_app
def archive(app: AppContext, older_than, dry_run, as_json) -> None:
    """Compress and remove versions unused for N days; never one an alias points at."""

    days = older_than or app.settings.registry.archive_after_days
    with app.database.session() as session:
        rows = lifecycle.archive(
            session,
            registry_store.Store.from_settings(app.settings),
            older_than_days=days,
            actor=app.actor,
            dry_run=dry_run,
        )
    emit(rows, as_json, lambda: table(rows, ["version", "archived", "skipped", "last_used_at"]))


@registry.command("restore")
@click.argument("adapter")
@click.option("--version", "version", required=True)
@json_option
@pass_app
def restore(app: AppContext, adapter, version, as_json) -> None:
    """Restore an archived version, byte-identical (every hash re-checked)."""

    with app.database.session() as session:
        row = lifecycle.restore(
            session, registry_store.Store.from_settings(app.settings), adapter=adapter, version=version, actor=app.actor
        )
        data = {"adapter": adapter, "version": version, "state": row.state, "path": row.path}
    emit(data, as_json, f"restored {adapter}@{version} to {row.path}")


@registry.command("review")
@click.argument("adapter")
@click.option("--version", "version", required=True)
@click.option("--note", help="What the review found.")
@json_option
@pass_app
def review(app: AppContext, adapter, version, note, as_json) -> None:
    """Record that a version was reviewed (restarts its review cadence)."""

    with app.database.session() as session:
        row = lifecycle.mark_reviewed(session, adapter=adapter, version=version, actor=app.actor, note=note)
        data = {"adapter": adapter, "version": version, "last_reviewed_at": row.last_reviewed_at}
    emit(data, as_json, f"{adapter}@{version} reviewed at {data['last_reviewed_at']:%Y-%m-%d %H:%M}Z")
