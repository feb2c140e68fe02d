"""Base models in the registry: adding (hashed, architecture read), finding, listing.

Every function takes an open session and leaves committing to the caller (docs/architecture.md),
so a command that fails half-way writes nothing: no rows, no audit entry, and no files in the
store (a registration's copied files are removed when its transaction rolls back).
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.db import insert_unique
from lorawatch.db.models import BaseModelRecord
from lorawatch.errors import ConflictError, InputError, NotFoundError, did_you_mean
from lorawatch.registry import files


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
    """Register a base model from a local directory or file, or a hub id in the local cache.

    The weight files are checked and hashed before the first statement of ``session``'s
    transaction: hashing a large model never holds the database's write lock."""
    files.check_name(name, "base model name")
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
    architecture = _architecture(path)
    if session.scalar(select(BaseModelRecord).where(BaseModelRecord.name == name)):
        raise ConflictError(f'base model "{name}" is registered already', fix="choose another name")
    record = BaseModelRecord(
        name=name,
        path=str(path.resolve()),
        hub_id=hub_id,
        revision=revision,
        architecture=architecture,
        sha256=files.content_digest(manifest),
        files=manifest,
        created_by=actor,
    )
    if not insert_unique(session, record):  # registered by another process a moment ago
        raise ConflictError(f'base model "{name}" is registered already', fix="choose another name")
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
        known = list(session.scalars(select(BaseModelRecord.name)))
        raise NotFoundError(
            f'no base model "{name}"' + did_you_mean(name, known), fix="register it with `lorawatch registry add-base`"
        )
    return record


def list_bases(session: Session) -> list[BaseModelRecord]:
    """Every registered base model."""
    return list(session.scalars(select(BaseModelRecord).order_by(BaseModelRecord.name)))
