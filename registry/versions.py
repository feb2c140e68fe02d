"""Adapters and their versions: registration (config checked, files hashed and stored), lookup.

Every function takes an open session and leaves committing to the caller (docs/architecture.md),
so a command that fails half-way writes nothing: no rows, no audit entry, and no files in the
store (a registration's copied files are removed when its transaction rolls back).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from lorawatch import audit, inputs
from lorawatch.db import insert_unique
from lorawatch.db.models import AdapterRecord, AdapterVersion, BaseModelRecord
from lorawatch.db.types import utcnow
from lorawatch.errors import ConflictError, InputError, NotFoundError, did_you_mean
from lorawatch.registry import files
from lorawatch.registry.bases import get_base
from lorawatch.registry.metadata import VersionMetadata
from lorawatch.registry.store import Store

MAX_RANK = 65536


def read_adapter_config(directory: Path) -> dict[str, Any]:
    """Read and check ``adapter_config.json``: every field LoraWatch uses has the type and range
    PEFT writes; errors name the file, the key and the fix."""
    path = directory / "adapter_config.json"
    if not path.is_file():
        raise InputError(
            "no adapter_config.json in the adapter directory",
            where=str(directory),
            fix="point --path at a directory written by PEFT's save_pretrained",
        )
    text = inputs.read_text(path, what="adapter_config.json")
    config = inputs.parse_json(text, where=str(path))
    if not isinstance(config, dict):
        raise InputError("not a JSON object", where=str(path), fix="write the PEFT config object")
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str) or peft_type.upper() != "LORA":
        raise InputError(
            f"peft_type is {peft_type!r}, LoraWatch watches LoRA adapters",
            where=str(path),
            fix='export a LoRA adapter ("peft_type": "LORA")',
        )
    for key in ("r", "lora_alpha", "target_modules"):
        if config.get(key) in (None, "", []):
            raise InputError(f'"{key}" is missing', where=str(path), fix=f'add "{key}" to the config')
    rank = config["r"]
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 < rank <= MAX_RANK:
        raise InputError(
            f'"r" must be an integer from 1 to {MAX_RANK}, got {rank!r}', where=str(path), fix="set the LoRA rank"
        )
    if not inputs.finite_number(config["lora_alpha"]) or config["lora_alpha"] <= 0:
        raise InputError(
            f'"lora_alpha" must be a positive finite number, got {config["lora_alpha"]!r}',
            where=str(path),
            fix="set lora_alpha as PEFT writes it (e.g. 16)",
        )
    modules = config["target_modules"]
    if not (isinstance(modules, str) or (isinstance(modules, list) and all(isinstance(m, str) for m in modules))):
        raise InputError(
            f'"target_modules" must be a module name or a list of names, got {modules!r}'[:300],
            where=str(path),
            fix='write e.g. ["q_proj", "v_proj"]',
        )
    declared = config.get("base_model_name_or_path")
    if declared is not None and not isinstance(declared, str):
        raise InputError(
            f'"base_model_name_or_path" must be text, got {declared!r}'[:300],
            where=str(path),
            fix="write the base model's hub id or path",
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
    """Register an immutable adapter version: check, hash and (by default) copy its files.

    The long work (reading, hashing, copying into a private staging directory of the store)
    happens before the first statement of ``session``'s transaction, so the transaction is
    short. The database row is the commit point: the staged files move into place inside the
    transaction, after the row is written (which no other registration of the same version can
    do then), and leave again if it rolls back. A registration that loses a race to another of
    the same version raises ConflictError and removes only its own staging directory.
    """
    directory, config = _source(adapter, version, path)
    names = files.list_files(directory)
    _weights(directory, names, allow_pickle)
    staging = None
    if store.mode == "copy":
        staging, manifest = files.stage_copy(directory, names, store.root, progress=progress)
    else:
        manifest = files.manifest(directory, names, progress=progress)
    try:
        return _record_version(
            session,
            store,
            adapter=adapter,
            version=version,
            base=base,
            config=config,
            directory=directory,
            manifest=manifest,
            staging=staging,
            metadata=metadata,
            allow_pickle=allow_pickle,
            actor=actor,
            reason=reason,
        )
    finally:
        if staging is not None and staging.exists():  # not moved into place: this registration failed
            files.remove_tree(staging)


def _source(adapter: str, version: str | None, path: Path) -> tuple[Path, dict[str, Any]]:
    """The names checked, and the adapter directory with its checked config."""
    files.check_name(adapter, "adapter name")
    if version is not None:
        files.check_name(version, "version")
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise InputError(
            "adapter directory does not exist", where=str(directory), fix="pass --path to the directory PEFT saved"
        )
    return directory, read_adapter_config(directory)


def check_registration(session: Session, *, adapter: str, path: Path, base: str, version: str | None) -> None:
    """The quick checks of a registration (names, config, base, version free), for a short
    transaction before the long work: bad input is refused before anything is copied. The
    registration itself checks again inside its own transaction."""
    directory, config = _source(adapter, version, path)
    _check_against_registry(session, adapter=adapter, base=base, version=version, config=config, directory=directory)


def _check_against_registry(
    session: Session, *, adapter: str, base: str, version: str | None, config: dict[str, Any], directory: Path
) -> tuple[BaseModelRecord, AdapterRecord | None]:
    base_record = get_base(session, base)
    declared_base = config.get("base_model_name_or_path")
    if not _base_matches(base_record, declared_base):
        raise InputError(
            f'adapter was trained on {declared_base!r}, not on base "{base}" '
            f"({base_record.hub_id or base_record.path})",
            where=str(directory / "adapter_config.json"),
            fix="register it against the base it was trained on (--base), or register that base first",
        )
    record = session.scalar(select(AdapterRecord).where(AdapterRecord.name == adapter))
    if record is not None and record.base_model_id != base_record.id:
        raise InputError(
            f'adapter "{adapter}" is registered on base "{record.base_model.name}", not "{base}"',
            fix="use the adapter's own base, or a new adapter name for the other base",
        )
    if record is not None and version is not None:
        existing = session.scalar(
            select(AdapterVersion).where(AdapterVersion.adapter_id == record.id, AdapterVersion.version == version)
        )
        if existing is not None:
            raise _already(adapter, version)
    return base_record, record


def _record_version(
    session: Session,
    store: Store,
    *,
    adapter: str,
    version: str | None,
    base: str,
    config: dict[str, Any],
    directory: Path,
    manifest: dict[str, dict],
    staging: Path | None,
    metadata: VersionMetadata | None,
    allow_pickle: bool,
    actor: str,
    reason: str | None,
) -> AdapterVersion:
    """The short, transactional part of a registration."""
    base_record, record = _check_against_registry(
        session, adapter=adapter, base=base, version=version, config=config, directory=directory
    )
    declared_base = config.get("base_model_name_or_path")
    if record is None:
        record = AdapterRecord(name=adapter, base_model_id=base_record.id, created_by=actor)
        if not insert_unique(session, record):  # registered by another process a moment ago
            record = session.scalar(select(AdapterRecord).where(AdapterRecord.name == adapter))
            assert record is not None
    if version is None:
        count = session.scalar(
            select(func.count()).select_from(AdapterVersion).where(AdapterVersion.adapter_id == record.id)
        )
        version = f"v{(count or 0) + 1}"
    existing = session.scalar(
        select(AdapterVersion).where(AdapterVersion.adapter_id == record.id, AdapterVersion.version == version)
    )
    if existing is not None:
        raise _already(adapter, version)

    metadata = metadata or VersionMetadata()
    stored_at = store.version_dir(adapter, version) if staging is not None else directory.resolve()
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
    if not insert_unique(session, row):  # another registration of this version committed first
        raise _already(adapter, version)
    if staging is not None:
        # This transaction now owns (adapter, version): a directory already at its place was
        # left by a registration that died before committing, and is garbage.
        if stored_at.exists():
            files.remove_tree(stored_at)
        stored_at.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, stored_at)
        _remove_on_rollback(session, stored_at)
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


def _already(adapter: str, version: str) -> ConflictError:
    return ConflictError(
        f'{adapter} version "{version}" is registered already; versions are immutable',
        fix="register the new content under a new --version",
    )


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
        known = list(session.scalars(select(AdapterRecord.name)))
        raise NotFoundError(
            f'no adapter "{name}"' + did_you_mean(name, known), fix="check the name with `lorawatch registry list`"
        )
    return record


def get_version(session: Session, adapter: str, version: str) -> AdapterVersion:
    """One version of an adapter."""
    record = get_adapter(session, adapter)
    row = session.scalar(
        select(AdapterVersion).where(AdapterVersion.adapter_id == record.id, AdapterVersion.version == version)
    )
    if row is None:
        raise NotFoundError(
            f'adapter "{adapter}" has no version "{version}"'
            + did_you_mean(version, [v.version for v in record.versions]),
            fix="pick a registered version",
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
