"""Registry service: the functions the CLI, the dashboard and incidents call.

Every function takes an open session and leaves committing to the caller, so a command that
fails half-way writes nothing: no rows, no audit entry, and no files in the store (a
registration's copied files are removed when its transaction rolls back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.db.models import AdapterAlias, AdapterRecord, AdapterVersion, AliasEvent, BaseModelRecord
from lorawatch.db.types import utcnow
from lorawatch.errors import ConflictError, InputError, NotFoundError
from lorawatch.registry import files
from lorawatch.registry.metadata import VersionMetadata
from lorawatch.settings import Settings

ROUTE_ALIASES = ("production", "canary", "shadow")
DEFAULT_TENANT = ""


@dataclass(frozen=True)
class Store:
    """Where registered files live: ``<home>/store``; ``mode`` is copy or reference."""

    root: Path
    mode: str = "copy"

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The store named by the settings."""
        return cls(settings.home_dir / "store", settings.registry.store)

    def version_dir(self, adapter: str, version: str) -> Path:
        """The directory a copied version lives in."""
        return self.root / "adapters" / adapter / version

    def archive_file(self, adapter: str, version: str) -> Path:
        """The compressed archive of a version."""
        return self.root / "archive" / adapter / f"{version}.tar.gz"


# ---------------------------------------------------------------- base models


def add_base(
    session: Session,
    *,
    name: str,
    path: Path | None,
    hub_id: str | None = None,
    revision: str | None = None,
    actor: str,
    progress: bool = False,
) -> BaseModelRecord:
    """Register a base model from a local directory or file, or a hub id in the local cache."""
    files.check_name(name, "base model name")
    if session.scalar(select(BaseModelRecord).where(BaseModelRecord.name == name)):
        raise ConflictError(f'base model "{name}" is registered already', fix="choose another name")
    if path is None and hub_id:
        path = _cached_snapshot(hub_id, revision)
    if path is None:
        raise InputError("a base model needs --path or --hub-id", fix="pass --path DIR_OR_FILE")
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError("base model path does not exist", where=str(path), fix="pass an existing directory or file")
    if path.is_file():
        root, names = path.parent, [path.name]
    else:
        root = path
        names = [n for n in files.list_files(path) if n.endswith(files.WEIGHT_SUFFIXES)]
        if not names:
            raise InputError(
                "no weight files (*.safetensors, *.gguf, *.bin) in the base model directory",
                where=str(path),
                fix="point --path at the model directory or its weight file",
            )
    for name_ in names:
        if name_.endswith(".safetensors"):
            files.check_safetensors(root / name_)
    manifest = files.manifest(root, names, progress=progress)
    record = BaseModelRecord(
        name=name,
        path=str(path.resolve()),
        hub_id=hub_id,
        revision=revision,
        architecture=_architecture(path),
        sha256=files.content_digest(manifest),
        files=manifest,
        created_by=actor,
    )
    session.add(record)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="base.add",
        object_type="base_model",
        object_id=name,
        details={"path": record.path, "sha256": record.sha256},
    )
    return record


def _cached_snapshot(hub_id: str, revision: str | None) -> Path:
    try:
        # Deferred: only a download from the hub needs it.
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, revision=revision, local_files_only=True))
    except Exception:
        raise InputError(
            f"hub model {hub_id!r} is not in the local Hugging Face cache",
            fix="download it where there is internet access, or pass --path to a local copy",
        ) from None


def _architecture(path: Path) -> str | None:
    config = (path if path.is_dir() else path.parent) / "config.json"
    if path.is_file() and path.suffix == ".gguf":
        return "gguf"
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
        return architectures[0] if architectures else None
    except (OSError, ValueError, AttributeError):
        return None


def get_base(session: Session, name: str) -> BaseModelRecord:
    """A base model by name."""
    record = session.scalar(select(BaseModelRecord).where(BaseModelRecord.name == name))
    if record is None:
        known = ", ".join(session.scalars(select(BaseModelRecord.name).order_by(BaseModelRecord.name))) or "none"
        raise NotFoundError(
            f'no base model "{name}"; known: {known}', fix="register it with `lorawatch registry add-base`"
        )
    return record


def list_bases(session: Session) -> list[BaseModelRecord]:
    """Every registered base model."""
    return list(session.scalars(select(BaseModelRecord).order_by(BaseModelRecord.name)))


# ---------------------------------------------------------------- adapters and versions


def read_adapter_config(directory: Path) -> dict[str, Any]:
    """Read and check ``adapter_config.json``; errors name the file and line."""
    path = directory / "adapter_config.json"
    if not path.is_file():
        raise InputError(
            "no adapter_config.json in the adapter directory",
            where=str(directory),
            fix="point --path at a directory written by PEFT's save_pretrained",
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", where=str(path), fix="save it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", where=f"{path}:{exc.lineno}", fix="correct the JSON") from None
    if not isinstance(config, dict):
        raise InputError("not a JSON object", where=str(path), fix="write the PEFT config object")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in {"LORA"}:
        raise InputError(
            f"peft_type is {config.get('peft_type')!r}, LoraWatch watches LoRA adapters",
            where=str(path),
            fix='export a LoRA adapter ("peft_type": "LORA")',
        )
    for key in ("r", "lora_alpha", "target_modules"):
        if config.get(key) in (None, "", []):
            raise InputError(f'"{key}" is missing', where=str(path), fix=f'add "{key}" to the config')
    if not isinstance(config["r"], int) or config["r"] <= 0:
        raise InputError(
            f'"r" must be a positive integer, got {config["r"]!r}', where=str(path), fix="set the LoRA rank"
        )
    return config


def _base_matches(base: BaseModelRecord, declared: str | None) -> bool:
    if not declared:
        return True
    candidates = {base.name, base.hub_id, base.path}
    if base.path:
        candidates.add(str(Path(base.path).parent) if Path(base.path).is_file() else base.path)
    try:
        declared_resolved = str(Path(declared).expanduser().resolve()) if Path(declared).expanduser().exists() else None
    except OSError:
        declared_resolved = None
    return declared in candidates or (declared_resolved is not None and declared_resolved in candidates)


def _weights(directory: Path, names: list[str], allow_pickle: bool) -> None:
    weights = [n for n in names if n.endswith(files.WEIGHT_SUFFIXES)]
    if not weights:
        raise InputError(
            "no adapter weights (adapter_model.safetensors) in the adapter directory",
            where=str(directory),
            fix="save the adapter with PEFT's save_pretrained",
        )
    for name in weights:
        if name.endswith(files.PICKLE_SUFFIXES) and not allow_pickle:
            raise InputError(
                f"{name} is a pickle file; loading it can run arbitrary code",
                where=str(directory / name),
                fix="re-save with safe_serialization=True (safetensors), or pass --allow-pickle if you trust its source",
            )
        if name.endswith(".safetensors"):
            files.check_safetensors(directory / name)


def register_version(
    session: Session,
    store: Store,
    *,
    adapter: str,
    path: Path,
    base: str,
    version: str | None = None,
    metadata: VersionMetadata | None = None,
    allow_pickle: bool = False,
    actor: str,
    reason: str | None = None,
    progress: bool = False,
) -> AdapterVersion:
    """Register an immutable adapter version: check, hash and (by default) copy its files."""
    files.check_name(adapter, "adapter name")
    if version is not None:
        files.check_name(version, "version")
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise InputError(
            "adapter directory does not exist", where=str(directory), fix="pass --path to the directory PEFT saved"
        )
    config = read_adapter_config(directory)
    base_record = get_base(session, base)
    declared_base = config.get("base_model_name_or_path")
    if not _base_matches(base_record, declared_base):
        raise InputError(
            f'adapter was trained on {declared_base!r}, not on base "{base}" '
            f"({base_record.hub_id or base_record.path})",
            where=str(directory / "adapter_config.json"),
            fix="register it against the base it was trained on (--base), or register that base first",
        )
    names = files.list_files(directory)
    _weights(directory, names, allow_pickle)

    record = session.scalar(select(AdapterRecord).where(AdapterRecord.name == adapter))
    if record is None:
        record = AdapterRecord(name=adapter, base_model_id=base_record.id, created_by=actor)
        session.add(record)
        session.flush()
    elif record.base_model_id != base_record.id:
        raise InputError(
            f'adapter "{adapter}" is registered on base "{record.base_model.name}", not "{base}"',
            fix="use the adapter's own base, or a new adapter name for the other base",
        )
    if version is None:
        count = session.scalar(
            select(func.count()).select_from(AdapterVersion).where(AdapterVersion.adapter_id == record.id)
        )
        version = f"v{(count or 0) + 1}"
    existing = session.scalar(
        select(AdapterVersion).where(AdapterVersion.adapter_id == record.id, AdapterVersion.version == version)
    )
    if existing is not None:
        raise ConflictError(
            f'{adapter} version "{version}" is registered already; versions are immutable',
            fix="register the new content under a new --version",
        )

    manifest = files.manifest(directory, names, progress=progress)
    metadata = metadata or VersionMetadata()
    stored_at = directory.resolve()
    if store.mode == "copy":
        stored_at = store.version_dir(adapter, version)
        if stored_at.exists():  # left by a registration that died before committing
            files.remove_tree(stored_at)
        files.copy_into_store(directory, names, stored_at)
        files.verify_files(stored_at, manifest, f"{adapter}@{version}")
        _remove_on_rollback(session, stored_at)

    target_modules = config["target_modules"]
    row = AdapterVersion(
        adapter_id=record.id,
        version=version,
        peft_type="LORA",
        rank=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        target_modules=sorted(target_modules) if isinstance(target_modules, list) else [str(target_modules)],
        base_model_name_or_path=declared_base,
        files=manifest,
        content_sha256=files.content_digest(manifest),
        storage=store.mode,
        path=str(stored_at),
        allow_pickle=allow_pickle,
        created_by=actor,
        **_metadata_columns(metadata),
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="version.register",
        object_type="adapter_version",
        object_id=f"{adapter}@{version}",
        reason=reason,
        details={"content_sha256": row.content_sha256, "base": base, "storage": store.mode},
    )
    return row


def _metadata_columns(metadata: VersionMetadata) -> dict[str, Any]:
    return {
        "lineage": metadata.lineage.model_dump(mode="json"),
        "performance": metadata.performance.model_dump(mode="json"),
        "risk": metadata.risk.model_dump(mode="json"),
        "ownership": metadata.ownership.model_dump(mode="json"),
        "owner_team": metadata.ownership.team,
        "data_expires_on": metadata.risk.data_expires_on,
        "review_cadence_days": metadata.ownership.review_cadence_days,
    }


def _remove_on_rollback(session: Session, directory: Path) -> None:
    def cleanup(_session) -> None:
        files.remove_tree(directory)

    event.listen(session, "after_rollback", cleanup, once=True)

    def forget(_session) -> None:
        if event.contains(session, "after_rollback", cleanup):
            event.remove(session, "after_rollback", cleanup)

    event.listen(session, "after_commit", forget, once=True)


def get_adapter(session: Session, name: str) -> AdapterRecord:
    """An adapter by name."""
    record = session.scalar(select(AdapterRecord).where(AdapterRecord.name == name))
    if record is None:
        known = ", ".join(session.scalars(select(AdapterRecord.name).order_by(AdapterRecord.name).limit(20))) or "none"
        raise NotFoundError(f'no adapter "{name}"; known: {known}', fix="check the name with `lorawatch registry list`")
    return record


def get_version(session: Session, adapter: str, version: str) -> AdapterVersion:
    """One version of an adapter."""
    record = get_adapter(session, adapter)
    row = session.scalar(
        select(AdapterVersion).where(AdapterVersion.adapter_id == record.id, AdapterVersion.version == version)
    )
    if row is None:
        known = ", ".join(v.version for v in record.versions) or "none"
        raise NotFoundError(
            f'adapter "{adapter}" has no version "{version}"; known: {known}', fix="pick a registered version"
        )
    return row


def open_version(session: Session, store: Store, adapter: str, version: str) -> Path:
    """The directory of a version's files, after re-checking every hash.

    A file changed on disk since registration is refused (IntegrityError); an archived
    version must be restored first.
    """
    row = get_version(session, adapter, version)
    if row.state == "archived":
        raise ConflictError(
            f"{adapter}@{version} is archived",
            fix=f"run `lorawatch registry restore {adapter} --version {version}`",
        )
    directory = Path(row.path)
    files.verify_files(directory, row.files, f"{adapter}@{version}")
    row.last_used_at = utcnow()
    return directory


# ---------------------------------------------------------------- aliases


def check_alias(alias: str) -> str:
    """Aliases are route names (production, canary, shadow) or names of the same shape."""
    return files.check_name(alias, "alias")


def promote(
    session: Session,
    *,
    adapter: str,
    version: str,
    alias: str = "production",
    tenant: str = DEFAULT_TENANT,
    actor: str,
    reason: str | None = None,
    at: datetime | None = None,
) -> AliasEvent:
    """Point ``alias`` (for ``tenant``) at ``version``, recording who, when and why."""
    check_alias(alias)
    if tenant:
        files.check_name(tenant, "tenant")
    row = get_version(session, adapter, version)
    if row.state == "archived":
        raise ConflictError(f"{adapter}@{version} is archived", fix="restore it before promoting it")
    return _move_alias(session, row.adapter, alias, tenant, row, "promote", actor, reason, at)


def rollback(
    session: Session,
    *,
    adapter: str,
    alias: str = "production",
    tenant: str = DEFAULT_TENANT,
    actor: str,
    reason: str | None = None,
    at: datetime | None = None,
) -> AliasEvent:
    """Point ``alias`` back at the version it held before the current one was promoted."""
    record = get_adapter(session, adapter)
    stack = _alias_stack(session, record.id, alias, tenant)
    if not stack:
        raise NotFoundError(
            f'adapter "{adapter}" has no alias "{alias}"' + (f" for tenant {tenant}" if tenant else ""),
            fix="check `lorawatch registry show " + adapter + "`",
        )
    if len(stack) < 2:
        raise ConflictError(
            f'alias "{alias}" of {adapter} has no earlier version to roll back to',
            fix="promote the version you want instead",
        )
    target = session.get(AdapterVersion, stack[-2])
    if target.state == "archived":
        raise ConflictError(f"{adapter}@{target.version} is archived", fix="restore it first")
    return _move_alias(session, record, alias, tenant, target, "rollback", actor, reason, at)


def _alias_stack(session: Session, adapter_id: int, alias: str, tenant: str) -> list[int]:
    """Replay the alias's history: a promotion pushes a version, a rollback pops one."""
    stack: list[int] = []
    for ev in session.scalars(
        select(AliasEvent)
        .where(AliasEvent.adapter_id == adapter_id, AliasEvent.alias == alias, AliasEvent.tenant == tenant)
        .order_by(AliasEvent.ts, AliasEvent.id)
    ):
        if ev.action == "rollback" and stack:
            stack.pop()
        else:
            stack.append(ev.to_version_id)
    return stack


def _move_alias(session, record, alias, tenant, target, action, actor, reason, at) -> AliasEvent:
    now = at or utcnow()
    current = session.scalar(
        select(AdapterAlias).where(
            AdapterAlias.adapter_id == record.id, AdapterAlias.alias == alias, AdapterAlias.tenant == tenant
        )
    )
    previous_id = current.version_id if current else None
    if previous_id == target.id and action == "promote":
        raise ConflictError(
            f'alias "{alias}" of {record.name} already points at {target.version}',
            fix="promote a different version",
        )
    if current is None:
        current = AdapterAlias(adapter_id=record.id, alias=alias, tenant=tenant, version_id=target.id, updated_at=now)
        session.add(current)
    else:
        current.version_id = target.id
        current.updated_at = now
    ev = AliasEvent(
        adapter_id=record.id,
        alias=alias,
        tenant=tenant,
        action=action,
        from_version_id=previous_id,
        to_version_id=target.id,
        ts=now,
        actor=actor,
        reason=reason,
    )
    session.add(ev)
    target.last_used_at = now
    if previous_id is not None:
        session.get(AdapterVersion, previous_id).last_used_at = now
    session.flush()
    previous = session.get(AdapterVersion, previous_id).version if previous_id else None
    audit.record(
        session,
        actor=actor,
        action=f"alias.{action}",
        object_type="adapter",
        object_id=record.name,
        reason=reason,
        ts=now,
        details={"alias": alias, "tenant": tenant, "from": previous, "to": target.version},
    )
    return ev


def aliased_versions(
    session: Session, alias: str = "production", tenant: str | None = DEFAULT_TENANT
) -> list[AdapterVersion]:
    """Every version ``alias`` points at now, in adapter order: the route's default
    (``tenant`` empty), one tenant's own aliases, or (``tenant=None``) every tenant's."""
    query = select(AdapterVersion).join(AdapterAlias, AdapterAlias.version_id == AdapterVersion.id)
    query = query.where(AdapterAlias.alias == alias)
    if tenant is not None:
        query = query.where(AdapterAlias.tenant == tenant)
    return list(session.scalars(query.order_by(AdapterVersion.adapter_id, AdapterVersion.id)))


def resolve_alias(
    session: Session, adapter: str, alias: str = "production", tenant: str = DEFAULT_TENANT, at: datetime | None = None
) -> AdapterVersion | None:
    """The version ``alias`` served to ``tenant`` at time ``at`` (now when not given).

    A tenant without an alias of its own follows the route's default.
    """
    record = get_adapter(session, adapter)
    for who in [tenant, DEFAULT_TENANT] if tenant else [DEFAULT_TENANT]:
        if at is None:
            current = session.scalar(
                select(AdapterAlias).where(
                    AdapterAlias.adapter_id == record.id, AdapterAlias.alias == alias, AdapterAlias.tenant == who
                )
            )
            if current is not None:
                return session.get(AdapterVersion, current.version_id)
            continue
        ev = session.scalar(
            select(AliasEvent)
            .where(
                AliasEvent.adapter_id == record.id,
                AliasEvent.alias == alias,
                AliasEvent.tenant == who,
                AliasEvent.ts <= at,
            )
            .order_by(AliasEvent.ts.desc(), AliasEvent.id.desc())
            .limit(1)
        )
        if ev is not None:
            return session.get(AdapterVersion, ev.to_version_id)
    return None


def alias_history(
    session: Session, adapter: str, alias: str | None = None, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Every promotion and rollback of the adapter's aliases, oldest first."""
    record = get_adapter(session, adapter)
    query = select(AliasEvent).where(AliasEvent.adapter_id == record.id).order_by(AliasEvent.ts, AliasEvent.id)
    if alias:
        query = query.where(AliasEvent.alias == alias)
    if tenant is not None:
        query = query.where(AliasEvent.tenant == tenant)
    versions = {v.id: v.version for v in record.versions}
    return [
        {
            "ts": ev.ts,
            "alias": ev.alias,
            "tenant": ev.tenant or None,
            "action": ev.action,
            "from_version": versions.get(ev.from_version_id),
            "to_version": versions[ev.to_version_id],
            "actor": ev.actor,
            "reason": ev.reason,
        }
        for ev in session.scalars(query)
    ]


def aliases_of(session: Session, version: AdapterVersion) -> list[dict[str, str | None]]:
    """The aliases that point at a version now."""
    rows = session.scalars(
        select(AdapterAlias).where(AdapterAlias.version_id == version.id).order_by(AdapterAlias.alias)
    )
    return [{"alias": a.alias, "tenant": a.tenant or None} for a in rows]
